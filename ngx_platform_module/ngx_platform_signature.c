
/*
 * Signed webhooks: platform_webhook_signature checks an inbound webhook's
 * signature over the raw body before the location's platform_query runs.
 *
 *   platform_webhook_signature stripe FILE [FILE] [tolerance=300s]
 *                              [header=Stripe-Signature];
 *
 * Stripe's scheme: the header holds t=<unix time>,v1=<hex>[,v1=<hex>...]
 * (other schemes, v0 among them, are ignored; the items may come in any
 * order); a v1 is HMAC-SHA256 of "<t>." followed by the body's bytes, keyed
 * with the endpoint's secret (the text of FILE, e.g. "whsec_...").  The
 * request is accepted when a v1 matches under one of the secrets (two
 * while a secret is rolled) and t is within the tolerance of our clock;
 * otherwise it is answered 400 and the query is not run.  The verified t
 * is $platform_signature_time.
 *
 * Only POST carries a webhook: other methods are not checked.
 */


#include "ngx_platform_module.h"
#include <sodium.h>


typedef struct {
    ngx_array_t                 *secrets;     /* ngx_str_t; NULL: off */
    time_t                       tolerance;   /* 0: not checked */
    ngx_str_t                    header;
    u_char                      *file;        /* of the directive */
    ngx_uint_t                   line;
} ngx_platform_signature_loc_conf_t;


typedef struct {
    ngx_str_t                    time;        /* the verified t */
} ngx_platform_signature_ctx_t;


static ngx_int_t ngx_platform_signature_refuse(ngx_http_request_t *r,
    const char *reason, const char *message);
static ngx_int_t ngx_platform_signature_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_platform_signature_add_variables(ngx_conf_t *cf);
static void *ngx_platform_signature_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_signature_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_platform_webhook_signature(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_platform_signature_commands[] = {

    { ngx_string("platform_webhook_signature"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_webhook_signature,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_signature_module_ctx = {
    ngx_platform_signature_add_variables,  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_signature_create_loc_conf, /* create location configuration */
    ngx_platform_signature_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_platform_signature_module = {
    NGX_MODULE_V1,
    &ngx_platform_signature_module_ctx,    /* module context */
    ngx_platform_signature_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_platform_signature_vars[] = {

    { ngx_string("platform_signature_time"), NULL,
      ngx_platform_signature_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * Called by platform_query with the whole body, before the query is sent.
 * NGX_DECLINED: no check here, or the signature is valid, the query may
 * run; anything else: the request was refused (400), finalize with it.
 */

ngx_int_t
ngx_platform_signature_check(ngx_http_request_t *r, ngx_str_t *body)
{
    ngx_int_t                            rc;
    ngx_str_t                           *secret;
    ngx_uint_t                           i;
    ngx_platform_signature_t             sig;
    ngx_platform_signature_ctx_t        *ctx;
    ngx_platform_signature_loc_conf_t   *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_platform_signature_module);

    if (slcf->secrets == NULL || r->method != NGX_HTTP_POST) {
        return NGX_DECLINED;
    }

    rc = ngx_platform_signature_parse(r, &slcf->header, &sig);

    if (rc == NGX_DECLINED) {
        return ngx_platform_signature_refuse(r, "no signature header",
                   "The webhook signature header is missing.");
    }

    if (rc != NGX_OK) {
        return ngx_platform_signature_refuse(r, "garbled signature header",
                   "The webhook signature header is not valid.");
    }

    /* under each secret: two while a secret is rolled */

    secret = slcf->secrets->elts;

    for (i = 0; i < slcf->secrets->nelts; i++) {
        if (ngx_platform_signature_match(&sig, &secret[i], body) == NGX_OK) {
            break;
        }
    }

    if (i == slcf->secrets->nelts) {
        return ngx_platform_signature_refuse(r, "no signature matches",
                   "The webhook signature is not valid.");
    }

    if (ngx_platform_signature_fresh(&sig, slcf->tolerance) != NGX_OK) {
        return ngx_platform_signature_refuse(r,
                   "the timestamp is outside the tolerance",
                   "The webhook signature is too old (or from the future).");
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_signature_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->time = sig.time;

    ngx_http_set_ctx(r, ctx, ngx_platform_signature_module);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_platform_signature_refuse(ngx_http_request_t *r, const char *reason,
    const char *message)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "platform_webhook_signature: request refused: %s", reason);

    return ngx_platform_send_error(r, NGX_HTTP_BAD_REQUEST, "signature",
                                   message);
}


/*
 * The header NAME as Stripe writes it: t=<unix time>,v1=<hex>[,v1=<hex>],
 * items in any order, spaces around them ignored, other schemes (v0) and
 * v1 values that are not 32 bytes in hex skipped (they could not match).
 * Garbled: an item without "=", no t or two, a t that is not 1-12 digits,
 * no usable v1.
 */

ngx_int_t
ngx_platform_signature_parse(ngx_http_request_t *r, ngx_str_t *name,
    ngx_platform_signature_t *sig)
{
    u_char           *p, *last, *item, *end, *eq;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_DECLINED;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0)
        {
            break;
        }
    }

    ngx_str_null(&sig->time);
    sig->n = 0;

    p = h[i].value.data;
    last = p + h[i].value.len;

    while (p < last) {
        end = ngx_strlchr(p, last, ',');
        if (end == NULL) {
            end = last;
        }

        for (item = p; item < end && *item == ' '; item++) { /* void */ }

        p = end + 1;

        while (end > item && end[-1] == ' ') {
            end--;
        }

        eq = ngx_strlchr(item, end, '=');

        if (eq == NULL) {
            return NGX_ERROR;
        }

        if (eq - item == 1 && *item == 't') {
            if (sig->time.data || end - eq - 1 < 1 || end - eq - 1 > 12) {
                return NGX_ERROR;
            }

            sig->time.data = eq + 1;
            sig->time.len = end - eq - 1;

            for (item = sig->time.data; item < end; item++) {
                if (*item < '0' || *item > '9') {
                    return NGX_ERROR;
                }
            }

            continue;
        }

        if (eq - item == 2 && item[0] == 'v' && item[1] == '1'
            && end - eq - 1 == 2 * crypto_auth_hmacsha256_BYTES
            && sig->n < NGX_PLATFORM_SIGNATURE_MAX
            && sodium_hex2bin(sig->v1[sig->n], crypto_auth_hmacsha256_BYTES,
                              (char *) eq + 1, end - eq - 1, NULL, NULL,
                              NULL)
               == 0)
        {
            sig->n++;
        }
    }

    if (sig->time.data == NULL || sig->n == 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_platform_signature_match(ngx_platform_signature_t *sig,
    ngx_str_t *secret, ngx_str_t *body)
{
    ngx_int_t                     rc;
    ngx_uint_t                    k;
    crypto_auth_hmacsha256_state  st;
    u_char                        mac[crypto_auth_hmacsha256_BYTES];

    crypto_auth_hmacsha256_init(&st, secret->data, secret->len);
    crypto_auth_hmacsha256_update(&st, sig->time.data, sig->time.len);
    crypto_auth_hmacsha256_update(&st, (u_char *) ".", 1);

    if (body->len) {
        crypto_auth_hmacsha256_update(&st, body->data, body->len);
    }

    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));

    rc = NGX_DECLINED;

    for (k = 0; k < sig->n; k++) {
        if (sodium_memcmp(mac, sig->v1[k], sizeof(mac)) == 0) {
            rc = NGX_OK;
        }
    }

    return rc;
}


ngx_int_t
ngx_platform_signature_fresh(ngx_platform_signature_t *sig, time_t tolerance)
{
    time_t  t;

    if (tolerance == 0) {
        return NGX_OK;
    }

    t = ngx_atotm(sig->time.data, sig->time.len);

    if (t == NGX_ERROR
        || t < ngx_time() - tolerance
        || t > ngx_time() + tolerance)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* $platform_signature_time */

static ngx_int_t
ngx_platform_signature_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_platform_signature_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_platform_signature_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ctx->time.data;
    v->len = ctx->time.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_signature_add_variables(ngx_conf_t *cf)
{
    return ngx_platform_add_variables(cf, ngx_platform_signature_vars);
}


/* configuration */


static void *
ngx_platform_signature_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_signature_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_signature_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->header = { 0, NULL };
     *     conf->file = NULL;
     *     conf->line = 0;
     */

    conf->secrets = NGX_CONF_UNSET_PTR;
    conf->tolerance = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_platform_signature_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_platform_signature_loc_conf_t  *prev = parent;
    ngx_platform_signature_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_ptr_value(conf->secrets, prev->secrets, NULL);
    ngx_conf_merge_sec_value(conf->tolerance, prev->tolerance, 300);
    ngx_conf_merge_str_value(conf->header, prev->header, "Stripe-Signature");

    /* only platform_query checks it: elsewhere it would protect nothing */

    if (conf->file && conf->secrets) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->handler == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "platform_webhook_signature needs platform_query "
                          "in the same location in %s:%ui",
                          conf->file, conf->line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * platform_webhook_signature stripe FILE [FILE] [tolerance=TIME]
 *                            [header=NAME] | off
 */

static char *
ngx_platform_webhook_signature(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_platform_signature_loc_conf_t *slcf = conf;

    u_char      *p;
    ngx_str_t   *value, *secret, s;
    ngx_uint_t   i;

    if (slcf->secrets != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2
        && ngx_strcmp(value[1].data, "off") == 0)
    {
        slcf->secrets = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "stripe") != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unsupported scheme \"%V\" in "
                           "\"platform_webhook_signature\", expected "
                           "\"stripe\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    slcf->secrets = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (slcf->secrets == NULL) {
        return NGX_CONF_ERROR;
    }

    slcf->file = cf->conf_file->file.name.data;
    slcf->line = cf->conf_file->line;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "tolerance=", 10) == 0) {
            s.data = value[i].data + 10;
            s.len = value[i].len - 10;

            slcf->tolerance = ngx_parse_time(&s, 1);

            if (slcf->tolerance == (time_t) NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "header=", 7) == 0) {
            slcf->header.data = value[i].data + 7;
            slcf->header.len = value[i].len - 7;

            for (p = slcf->header.data;
                 p < slcf->header.data + slcf->header.len;
                 p++)
            {
                if (*p <= ' ' || *p >= 0x7f || *p == ':') {
                    goto invalid;
                }
            }

            if (slcf->header.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')
            || slcf->secrets->nelts == 2)
        {
            goto invalid;
        }

        secret = ngx_array_push(slcf->secrets);
        if (secret == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_platform_read_secret(cf, &value[i], secret) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (slcf->secrets->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_webhook_signature\" needs the file "
                           "of the endpoint's secret");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in "
                       "\"platform_webhook_signature\"", &value[i]);
    return NGX_CONF_ERROR;
}
