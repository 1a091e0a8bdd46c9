
/*
 * Secrets sealed at rest: the database keeps third-party keys (a channel's
 * API key, its webhook secret) only as libsodium secretboxes under a
 * server key that PostgreSQL never sees.
 *
 *   platform_secretbox_key FILE;            (http) 32 raw bytes or 64 hex
 *
 *   platform_seal FIELD ...;                (location) before the query
 *       runs, each top-level string FIELD of the JSON body is replaced by
 *       {"sealed": "<base64>", "last4": "<its last 4 characters>"}; the
 *       value must be 1 to 1024 printable ASCII characters (400 naming
 *       the field otherwise).  So the plaintext never reaches SQL.
 *
 *   platform_webhook_sealed_signature schema.function ARG ...
 *                                     [header=X-Channel-Signature]
 *                                     [tolerance=300s];
 *       (location) an inbound webhook whose secret is sealed in the
 *       database: schema.function(ARG::text, ...) (through the location's
 *       pool) returns the sealed secret, or NULL (404); it is opened here
 *       and the header "t=<unix time>,v1=<hex>" must carry HMAC-SHA256 of
 *       "<t>.<raw body>" under it, t within the tolerance; otherwise 401
 *       and the location's query does not run.
 *
 * A sealed value is base64 of nonce (24 bytes) || crypto_secretbox_easy()
 * (MAC 16 bytes || ciphertext).  The jobs runner opens "sealed:<base64>"
 * in the headers of webhook and call jobs when it sends them
 * (ngx_platform_seal_open_text()), so an API key is in clear only in the
 * worker's memory while the request is made.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"
#include <sodium.h>


#define NGX_PLATFORM_SEAL_VALUE_MAX  1024
#define NGX_PLATFORM_SEAL_OVERHEAD                                            \
    (crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)


typedef struct {
    ngx_str_t                    key;         /* 32 bytes, or empty */
} ngx_platform_seal_main_conf_t;


typedef struct {
    ngx_array_t                 *fields;      /* ngx_str_t */
    ngx_uint_t                   statement;   /* NGX_CONF_UNSET_UINT: off */
    ngx_array_t                 *args;        /* ngx_http_complex_value_t */
    ngx_str_t                    header;
    time_t                       tolerance;
    ngx_uint_t                   here;        /* set in this block */
} ngx_platform_seal_loc_conf_t;


typedef struct {
    ngx_http_request_t          *request;
    ngx_platform_pg_query_t      query;
    ngx_str_t                   *body;
    ngx_platform_signature_t     sig;
    unsigned                     running:1;
} ngx_platform_seal_ctx_t;


static ngx_int_t ngx_platform_seal_fields(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_platform_seal_refuse(ngx_http_request_t *r,
    const char *reason, const char *message);
static void ngx_platform_seal_lookup_done(ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_seal_verify(ngx_platform_seal_ctx_t *ctx,
    PGresult *res);
static void ngx_platform_seal_cleanup(void *data);
static u_char *ngx_platform_seal_string_end(u_char *p, u_char *last);
static u_char *ngx_platform_seal_skip_value(u_char *p, u_char *last);
static void *ngx_platform_seal_create_main_conf(ngx_conf_t *cf);
static void *ngx_platform_seal_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_seal_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_secretbox_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_sealed_signature(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_platform_seal_fields_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_platform_seal_commands[] = {

    { ngx_string("platform_secretbox_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_platform_secretbox_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_seal"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_seal_fields_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_webhook_sealed_signature"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_sealed_signature,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_seal_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_platform_seal_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_seal_create_loc_conf,     /* create location configuration */
    ngx_platform_seal_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_platform_seal_module = {
    NGX_MODULE_V1,
    &ngx_platform_seal_module_ctx,         /* module context */
    ngx_platform_seal_commands,            /* module directives */
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


/*
 * Called by platform_query with the whole body, after
 * platform_webhook_signature.  NGX_DECLINED: the query may run (sealed
 * fields replaced in body); NGX_AGAIN: the secret is being looked up,
 * ngx_platform_query_continue() follows; else: answered, finalize with it.
 */

ngx_int_t
ngx_platform_seal_request(ngx_http_request_t *r, ngx_str_t *body)
{
    ngx_int_t                      rc;
    ngx_uint_t                     n;
    ngx_pool_cleanup_t            *cln;
    ngx_platform_seal_ctx_t       *ctx;
    ngx_platform_pg_query_t       *q;
    ngx_platform_seal_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_platform_seal_module);

    if (slcf->statement == NGX_CONF_UNSET_UINT
        || r->method != NGX_HTTP_POST)
    {
        return ngx_platform_seal_fields(r, body);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_seal_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->body = body;

    /* the header first: a request without one costs no query */

    rc = ngx_platform_signature_parse(r, &slcf->header, &ctx->sig);

    if (rc == NGX_DECLINED) {
        return ngx_platform_seal_refuse(r, "no signature header",
                   "The webhook signature header is missing.");
    }

    if (rc != NGX_OK) {
        return ngx_platform_seal_refuse(r, "garbled signature header",
                   "The webhook signature header is not valid.");
    }

    /* the sealed secret, through the location's pool */

    q = &ctx->query;
    n = slcf->args->nelts;

    q->upstream = ngx_platform_query_upstream(r);
    q->statement = slcf->statement;
    q->nparams = n;
    q->handler = ngx_platform_seal_lookup_done;
    q->data = ctx;
    q->log = r->connection->log;

    q->values = ngx_pcalloc(r->pool, (n + 1) * sizeof(char *));
    if (q->values == NULL || q->upstream == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_platform_query_values(r, slcf->args, q->values);
    if (rc != NGX_OK) {
        return rc;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_platform_seal_cleanup;
    cln->data = ctx;

    ctx->running = 1;

    if (ngx_platform_pg_query(q) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    ctx->running = 0;

    return ngx_platform_send_error(r, q->status ? q->status
                                   : NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "unavailable", NULL);

}


static void
ngx_platform_seal_lookup_done(ngx_platform_pg_query_t *q)
{
    ngx_int_t                 rc;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_platform_seal_ctx_t  *ctx;

    ctx = q->data;
    r = ctx->request;
    c = r->connection;

    ctx->running = 0;

    if (q->res == NULL) {
        rc = ngx_platform_send_error(r, q->status ? q->status
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "unavailable", NULL);

    } else {
        rc = ngx_platform_seal_verify(ctx, q->res);
        PQclear(q->res);
        q->res = NULL;

        if (rc == NGX_DECLINED) {
            rc = ngx_platform_seal_fields(r, ctx->body);
        }

        if (rc == NGX_DECLINED) {
            rc = ngx_platform_query_continue(r);
        }
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_platform_seal_verify(ngx_platform_seal_ctx_t *ctx, PGresult *res)
{
    ngx_int_t                       rc;
    ngx_str_t                       sealed, secret;
    ngx_http_request_t             *r;
    ngx_platform_seal_loc_conf_t   *slcf;

    r = ctx->request;
    slcf = ngx_http_get_module_loc_conf(r, ngx_platform_seal_module);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_platform_send_pg_error(r, res);
    }

    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                       "No such channel.");
    }

    sealed.data = (u_char *) PQgetvalue(res, 0, 0);
    sealed.len = PQgetlength(res, 0, 0);

    if (ngx_platform_seal_open(r->pool, &sealed, &secret) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_webhook_sealed_signature: the secret "
                      "cannot be opened (platform_secretbox_key changed?)");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_platform_signature_match(&ctx->sig, &secret, ctx->body);

    sodium_memzero(secret.data, secret.len);

    if (rc != NGX_OK) {
        return ngx_platform_seal_refuse(r, "no signature matches",
                   "The webhook signature is not valid.");
    }

    if (ngx_platform_signature_fresh(&ctx->sig, slcf->tolerance) != NGX_OK) {
        return ngx_platform_seal_refuse(r,
                   "the timestamp is outside the tolerance",
                   "The webhook signature is too old (or from the future).");
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_platform_seal_refuse(ngx_http_request_t *r, const char *reason,
    const char *message)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "platform_webhook_sealed_signature: request refused: %s",
                  reason);

    return ngx_platform_send_error(r, NGX_HTTP_UNAUTHORIZED, "signature",
                                   message);
}


static void
ngx_platform_seal_cleanup(void *data)
{
    ngx_platform_seal_ctx_t  *ctx = data;

    if (ctx->running) {
        ngx_platform_pg_abort(&ctx->query);
    }
}


/* sealing and opening */


static ngx_platform_seal_main_conf_t *
ngx_platform_seal_conf(void)
{
    if (ngx_cycle->conf_ctx == NULL
        || ngx_cycle->conf_ctx[ngx_http_module.index] == NULL)
    {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_platform_seal_module);
}


static ngx_int_t
ngx_platform_seal(ngx_pool_t *pool, u_char *data, size_t len, ngx_str_t *out)
{
    u_char                         *box;
    ngx_str_t                       raw;
    ngx_platform_seal_main_conf_t  *smcf;

    smcf = ngx_platform_seal_conf();

    if (smcf == NULL || smcf->key.len != crypto_secretbox_KEYBYTES) {
        return NGX_DECLINED;
    }

    box = ngx_pnalloc(pool, NGX_PLATFORM_SEAL_OVERHEAD + len);
    if (box == NULL) {
        return NGX_ERROR;
    }

    randombytes_buf(box, crypto_secretbox_NONCEBYTES);

    if (crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, data, len,
                              box, smcf->key.data)
        != 0)
    {
        return NGX_ERROR;
    }

    raw.data = box;
    raw.len = NGX_PLATFORM_SEAL_OVERHEAD + len;

    out->data = ngx_pnalloc(pool, ngx_base64_encoded_length(raw.len));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(out, &raw);

    return NGX_OK;
}


/* base64 text to plaintext (in pool, NUL-terminated); NGX_DECLINED: no key */

ngx_int_t
ngx_platform_seal_open(ngx_pool_t *pool, ngx_str_t *sealed, ngx_str_t *out)
{
    u_char                         *plain;
    ngx_str_t                       raw;
    ngx_platform_seal_main_conf_t  *smcf;

    smcf = ngx_platform_seal_conf();

    if (smcf == NULL || smcf->key.len != crypto_secretbox_KEYBYTES) {
        return NGX_DECLINED;
    }

    raw.data = ngx_pnalloc(pool, ngx_base64_decoded_length(sealed->len));
    if (raw.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64(&raw, sealed) != NGX_OK
        || raw.len <= NGX_PLATFORM_SEAL_OVERHEAD)
    {
        return NGX_ERROR;
    }

    plain = ngx_pnalloc(pool, raw.len - NGX_PLATFORM_SEAL_OVERHEAD + 1);
    if (plain == NULL) {
        return NGX_ERROR;
    }

    if (crypto_secretbox_open_easy(plain,
                                   raw.data + crypto_secretbox_NONCEBYTES,
                                   raw.len - crypto_secretbox_NONCEBYTES,
                                   raw.data, smcf->key.data)
        != 0)
    {
        return NGX_ERROR;
    }

    out->data = plain;
    out->len = raw.len - NGX_PLATFORM_SEAL_OVERHEAD;
    plain[out->len] = '\0';

    return NGX_OK;
}


/*
 * For the jobs runner: each "sealed:<base64>" in text (header lines) is
 * replaced by its plaintext, which must be printable ASCII (no header can
 * be injected).  The new text is allocated in pool; *text is left alone
 * when there is nothing sealed.  NGX_ERROR with *error set otherwise.
 */

ngx_int_t
ngx_platform_seal_open_text(ngx_pool_t *pool, u_char **text,
    const char **error)
{
    u_char     *p, *s, *e, *out, *o;
    size_t      len;
    ngx_int_t   rc;
    ngx_str_t   sealed, plain;

    if (ngx_strstr(*text, "sealed:") == NULL) {
        return NGX_OK;
    }

    /* the plaintext is shorter than its base64 */

    len = ngx_strlen(*text);

    out = ngx_pnalloc(pool, len + 1);
    if (out == NULL) {
        *error = "out of memory";
        return NGX_ERROR;
    }

    o = out;
    p = *text;

    while ((s = (u_char *) ngx_strstr(p, "sealed:")) != NULL) {
        o = ngx_cpymem(o, p, s - p);

        for (e = s + 7;
             (*e >= 'A' && *e <= 'Z') || (*e >= 'a' && *e <= 'z')
             || (*e >= '0' && *e <= '9') || *e == '+' || *e == '/'
             || *e == '=';
             e++)
        { /* void */ }

        sealed.data = s + 7;
        sealed.len = e - sealed.data;

        rc = ngx_platform_seal_open(pool, &sealed, &plain);

        if (rc == NGX_DECLINED) {
            *error = "a header is sealed but there is no "
                     "platform_secretbox_key";
            return NGX_ERROR;
        }

        if (rc != NGX_OK) {
            *error = "a sealed header cannot be opened "
                     "(platform_secretbox_key changed?)";
            return NGX_ERROR;
        }

        for (s = plain.data; s < plain.data + plain.len; s++) {
            if (*s < 0x20 || *s > 0x7e) {
                sodium_memzero(plain.data, plain.len);
                *error = "a sealed header is not printable ASCII";
                return NGX_ERROR;
            }
        }

        o = ngx_cpymem(o, plain.data, plain.len);
        sodium_memzero(plain.data, plain.len);

        p = e;
    }

    o = ngx_cpymem(o, p, ngx_strlen(p));
    *o = '\0';

    *text = out;

    return NGX_OK;
}


/*
 * platform_seal: the body is a JSON object; each named top-level member
 * whose value is a string becomes {"sealed": ..., "last4": ...}.  A body
 * that is not an object is left to SQL only when no field is named in it
 * (nothing could be in clear): otherwise 400.
 */

static ngx_int_t
ngx_platform_seal_fields(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char                        *p, *last, *k, *ke, *v, *ve, *c, *out, *o;
    size_t                         len;
    ngx_int_t                      rc;
    ngx_str_t                     *field, sealed;
    ngx_uint_t                     i, nrep;
    ngx_platform_seal_loc_conf_t  *slcf;
    u_char                        *rep_from[8], *rep_to[8];
    ngx_str_t                      rep[8];
    u_char                         msg[160];

    slcf = ngx_http_get_module_loc_conf(r, ngx_platform_seal_module);

    if (slcf->fields == NULL || body->len == 0) {
        return NGX_DECLINED;
    }

    field = slcf->fields->elts;
    nrep = 0;

    p = body->data;
    last = p + body->len;

#define ws()  while (p < last && (*p == ' ' || *p == '\t' || *p == '\n'       \
                                  || *p == '\r')) { p++; }

    ws();

    if (p == last || *p != '{') {
        goto invalid;
    }

    p++;
    ws();

    if (p < last && *p == '}') {
        return NGX_DECLINED;
    }

    for ( ;; ) {
        ws();

        if (p == last || *p != '"') {
            goto invalid;
        }

        k = p + 1;
        ke = ngx_platform_seal_string_end(p, last);

        if (ke == NULL) {
            goto invalid;
        }

        p = ke + 1;
        ws();

        if (p == last || *p != ':') {
            goto invalid;
        }

        p++;
        ws();

        v = p;
        ve = ngx_platform_seal_skip_value(p, last);

        if (ve == NULL) {
            goto invalid;
        }

        p = ve;

        for (i = 0; i < slcf->fields->nelts; i++) {
            if ((size_t) (ke - k) == field[i].len
                && ngx_strncmp(k, field[i].data, field[i].len) == 0)
            {
                break;
            }
        }

        if (i < slcf->fields->nelts) {

            /* "..." of printable ASCII without escapes */

            len = ve - v;

            if (*v != '"' || len < 3
                || len - 2 > NGX_PLATFORM_SEAL_VALUE_MAX
                || nrep == 8)
            {
                goto bad_field;
            }

            for (c = v + 1; c < ve - 1; c++) {
                if (*c < 0x20 || *c > 0x7e || *c == '\\' || *c == '"') {
                    goto bad_field;
                }
            }

            rc = ngx_platform_seal(r->pool, v + 1, len - 2, &sealed);

            if (rc == NGX_DECLINED) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "platform_seal needs platform_secretbox_key");
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (rc != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            rep[nrep].data = ngx_pnalloc(r->pool, sealed.len + 40);
            if (rep[nrep].data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            c = (len - 2 > 4) ? ve - 5 : v + 1;

            rep[nrep].len = ngx_sprintf(rep[nrep].data,
                                        "{\"sealed\":\"%V\","
                                        "\"last4\":\"%*s\"}",
                                        &sealed, (size_t) (ve - 1 - c), c)
                            - rep[nrep].data;
            rep_from[nrep] = v;
            rep_to[nrep] = ve;
            nrep++;
        }

        ws();

        if (p < last && *p == ',') {
            p++;
            continue;
        }

        if (p < last && *p == '}') {
            break;
        }

        goto invalid;
    }

#undef ws

    if (nrep == 0) {
        return NGX_DECLINED;
    }

    len = body->len;

    for (i = 0; i < nrep; i++) {
        len += rep[i].len;
    }

    out = ngx_pnalloc(r->pool, len + 1);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o = out;
    p = body->data;

    for (i = 0; i < nrep; i++) {
        o = ngx_cpymem(o, p, rep_from[i] - p);
        o = ngx_cpymem(o, rep[i].data, rep[i].len);
        p = rep_to[i];
    }

    o = ngx_cpymem(o, p, body->data + body->len - p);
    *o = '\0';

    /* no copy of the plaintext stays in the request's memory */

    sodium_memzero(body->data, body->len);

    body->data = out;
    body->len = o - out;

    return NGX_DECLINED;

invalid:

    return ngx_platform_send_error(r, NGX_HTTP_BAD_REQUEST, "22P02",
                                   "The body is not a valid JSON object.");

bad_field:

    ngx_sprintf(msg, "%*s must be a string of 1 to %d printable ASCII "
                "characters.%Z", (size_t) ngx_min(ke - k, 64), k,
                NGX_PLATFORM_SEAL_VALUE_MAX);

    return ngx_platform_send_error(r, NGX_HTTP_BAD_REQUEST, "22023",
                                   (const char *) msg);
}


/* p at the opening quote: the closing quote, or NULL */

static u_char *
ngx_platform_seal_string_end(u_char *p, u_char *last)
{
    for (p++; p < last; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }

        if (*p == '"') {
            return p;
        }
    }

    return NULL;
}


/* one JSON value from p: the first byte after it, or NULL */

static u_char *
ngx_platform_seal_skip_value(u_char *p, u_char *last)
{
    ngx_uint_t  depth;

    depth = 0;

    while (p < last) {
        switch (*p) {

        case '"':
            p = ngx_platform_seal_string_end(p, last);
            if (p == NULL) {
                return NULL;
            }

            p++;

            if (depth == 0) {
                return p;
            }

            continue;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            if (depth == 0) {
                return p;
            }

            if (--depth == 0) {
                return p + 1;
            }

            break;

        case ',':
            if (depth == 0) {
                return p;
            }

            break;
        }

        p++;
    }

    return depth ? NULL : p;
}


/* configuration */


static void *
ngx_platform_seal_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_platform_seal_main_conf_t));
}


static void *
ngx_platform_seal_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_seal_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_seal_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->args = NULL;
     *     conf->header = { 0, NULL };
     *     conf->here = 0;
     */

    conf->fields = NGX_CONF_UNSET_PTR;
    conf->statement = NGX_CONF_UNSET_UINT;
    conf->tolerance = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_platform_seal_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_seal_loc_conf_t  *prev = parent;
    ngx_platform_seal_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t       *clcf;
    ngx_platform_seal_main_conf_t  *smcf;

    ngx_conf_merge_ptr_value(conf->fields, prev->fields, NULL);

    if (conf->statement == NGX_CONF_UNSET_UINT) {
        conf->statement = prev->statement;
        conf->args = prev->args;
        conf->header = prev->header;
        conf->tolerance = prev->tolerance;
    }

    ngx_conf_merge_sec_value(conf->tolerance, prev->tolerance, 300);
    ngx_conf_merge_str_value(conf->header, prev->header,
                             "X-Channel-Signature");

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_seal_module);

    /* only platform_query runs them: elsewhere they would do nothing */

    if (conf->here) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->handler == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "platform_seal and "
                          "platform_webhook_sealed_signature need "
                          "platform_query in the same location");
            return NGX_CONF_ERROR;
        }
    }

    if ((conf->fields || conf->statement != NGX_CONF_UNSET_UINT)
        && smcf->key.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "platform_seal and platform_webhook_sealed_signature "
                      "need \"platform_secretbox_key\" (in http)");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* platform_secretbox_key FILE: 32 raw bytes or 64 hex digits */

static char *
ngx_platform_secretbox_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_seal_main_conf_t  *smcf = conf;

    u_char      buf[80];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_str_t  *value, name;

    if (smcf->key.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"platform_secretbox_key\": cannot open \"%V\"",
                           &name);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));
    ngx_close_file(fd);

    while (n > 32 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }

    smcf->key.data = ngx_pnalloc(cf->pool, crypto_secretbox_KEYBYTES);
    if (smcf->key.data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (n == crypto_secretbox_KEYBYTES) {
        ngx_memcpy(smcf->key.data, buf, n);

    } else if (n != 2 * crypto_secretbox_KEYBYTES
               || sodium_hex2bin(smcf->key.data, crypto_secretbox_KEYBYTES,
                                 (char *) buf, n, NULL, NULL, NULL)
                  != 0)
    {
        sodium_memzero(buf, sizeof(buf));
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_secretbox_key\": \"%V\" must hold "
                           "32 random bytes (or 64 hex digits); make one "
                           "with: head -c 32 /dev/urandom > FILE", &name);
        return NGX_CONF_ERROR;
    }

    sodium_memzero(buf, sizeof(buf));
    smcf->key.len = crypto_secretbox_KEYBYTES;

    return NGX_CONF_OK;
}


/* platform_seal FIELD ... */

static char *
ngx_platform_seal_fields_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_seal_loc_conf_t *slcf = conf;

    ngx_str_t   *value, *field;
    ngx_uint_t   i;

    if (slcf->fields != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts > 9) {
        return "takes at most 8 fields";
    }

    slcf->here = 1;

    slcf->fields = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                    sizeof(ngx_str_t));
    if (slcf->fields == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        field = ngx_array_push(slcf->fields);
        if (field == NULL) {
            return NGX_CONF_ERROR;
        }

        *field = value[i];
    }

    return NGX_CONF_OK;
}


/*
 * platform_webhook_sealed_signature schema.function ARG ...
 *                                   [header=NAME] [tolerance=TIME]
 */

static char *
ngx_platform_sealed_signature(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_seal_loc_conf_t *slcf = conf;

    u_char                            *p, *dot;
    ngx_int_t                          st;
    ngx_str_t                         *value, s, sql;
    ngx_uint_t                         i, nargs;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    if (slcf->statement != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* schema.function: letters, digits, _ and one dot */

    dot = NULL;

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (*p == '.' && dot == NULL && p > value[1].data) {
            dot = p;
            continue;
        }

        if (!((*p >= 'a' && *p <= 'z') || *p == '_'
              || (p > value[1].data && *p >= '0' && *p <= '9')))
        {
            dot = NULL;
            break;
        }
    }

    if (dot == NULL || dot == value[1].data + value[1].len - 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_webhook_sealed_signature\" needs "
                           "schema.function, not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    slcf->here = 1;

    slcf->args = ngx_array_create(cf->pool, 2,
                                  sizeof(ngx_http_complex_value_t));
    if (slcf->args == NULL) {
        return NGX_CONF_ERROR;
    }

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

            if (slcf->header.len == 0) {
                goto invalid;
            }

            for (p = slcf->header.data;
                 p < slcf->header.data + slcf->header.len;
                 p++)
            {
                if (*p <= ' ' || *p >= 0x7f || *p == ':') {
                    goto invalid;
                }
            }

            continue;
        }

        cv = ngx_array_push(slcf->args);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    nargs = slcf->args->nelts;

    if (nargs == 0 || nargs > 9) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_webhook_sealed_signature\" takes 1 "
                           "to 9 arguments for the function");
        return NGX_CONF_ERROR;
    }

    /* SELECT schema.function($1::text, ...)::text */

    sql.len = sizeof("SELECT ()::text") - 1 + value[1].len
              + nargs * sizeof("$1::text, ") - 1;
    sql.data = ngx_pnalloc(cf->pool, sql.len);
    if (sql.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_sprintf(sql.data, "SELECT %V(", &value[1]);

    for (i = 0; i < nargs; i++) {
        p = ngx_sprintf(p, "%s$%ui::text", i ? ", " : "", i + 1);
    }

    p = ngx_cpymem(p, ")::text", 7);
    sql.len = p - sql.data;

    st = ngx_platform_statement_add(cf, &sql);
    if (st == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    slcf->statement = st;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in "
                       "\"platform_webhook_sealed_signature\"", &value[i]);
    return NGX_CONF_ERROR;
}
