
/*
 * SQL-backed endpoints: platform_query METHOD schema.function(args...);
 *
 * The directive is turned into one statement at configuration time:
 *
 *   SELECT r.b::text, current_setting('response.status', true),
 *          current_setting('response.headers', true),
 *          current_setting('response.session', true)
 *     FROM schema.function($1, name => $2::type) AS r(b)
 *
 * prepared once per connection.  Arguments are nginx complex values sent as
 * bound parameters, so request data never becomes SQL text.  The function
 * scan runs before the projection, so the settings read are those the
 * function made.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"


#define NGX_PLATFORM_QUERY_SELECT                                             \
    "SELECT r.b::text, current_setting('response.status', true), "           \
    "current_setting('response.headers', true), "                            \
    "current_setting('response.session', true) FROM "

#define ngx_platform_alpha(c)                                                 \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || (c) == '_')
#define ngx_platform_alnum(c)                                                 \
    (ngx_platform_alpha(c) || ((c) >= '0' && (c) <= '9'))


typedef struct {
    ngx_uint_t                   method;
    ngx_str_t                    method_name;
    ngx_uint_t                   statement;
    ngx_array_t                 *args;       /* ngx_http_complex_value_t */
} ngx_platform_query_call_t;


typedef struct {
    ngx_array_t                 *calls;      /* ngx_platform_query_call_t */
    ngx_str_t                    pg_name;
    ngx_platform_pg_upstream_t  *upstream;
    size_t                       body_max_size;
    ngx_array_t                 *body_types; /* ngx_str_t */
    u_char                      *file;       /* of platform_query */
    ngx_uint_t                   line;
    u_char                      *pg_file;    /* of platform_pg_pass */
    ngx_uint_t                   pg_line;
} ngx_platform_query_loc_conf_t;


typedef struct {
    ngx_http_request_t          *request;
    ngx_platform_query_call_t   *call;
    ngx_platform_pg_query_t      query;
    ngx_str_t                    body;
    unsigned                     body_read:1;
    unsigned                     upload:1;
} ngx_platform_query_ctx_t;


static ngx_int_t ngx_platform_query_handler(ngx_http_request_t *r);
static void ngx_platform_query_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_query_start(ngx_http_request_t *r,
    ngx_platform_query_ctx_t *ctx);
static ngx_int_t ngx_platform_query_gather_body(ngx_http_request_t *r,
    ngx_platform_query_ctx_t *ctx, ngx_platform_query_loc_conf_t *qlcf);
static ngx_int_t ngx_platform_query_type_allowed(ngx_http_request_t *r,
    ngx_platform_query_loc_conf_t *qlcf);
static ngx_int_t ngx_platform_query_not_allowed(ngx_http_request_t *r,
    ngx_platform_query_loc_conf_t *qlcf);
static void ngx_platform_query_done(ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_query_respond(ngx_http_request_t *r,
    ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_query_headers(ngx_http_request_t *r,
    u_char *p, size_t len);
static void ngx_platform_query_cleanup(void *data);
static void ngx_platform_query_free_result(void *data);

static ngx_int_t ngx_platform_query_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_platform_query_body_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_platform_query_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_query_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_query(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_query_parse(ngx_conf_t *cf,
    ngx_platform_query_call_t *call, ngx_str_t *text);
static char *ngx_platform_pg_pass(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_body_types(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static u_char *ngx_platform_query_ident(u_char *p, u_char *last);


typedef struct {
    ngx_str_t                    name;
    ngx_uint_t                   method;
} ngx_platform_query_method_t;


static ngx_platform_query_method_t  ngx_platform_query_methods[] = {
    { ngx_string("GET"),    NGX_HTTP_GET },
    { ngx_string("POST"),   NGX_HTTP_POST },
    { ngx_string("PUT"),    NGX_HTTP_PUT },
    { ngx_string("PATCH"),  NGX_HTTP_PATCH },
    { ngx_string("DELETE"), NGX_HTTP_DELETE },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_platform_query_commands[] = {

    { ngx_string("platform_query"),
      NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_platform_query,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_pg_pass"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_platform_pg_pass,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_body_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_query_loc_conf_t, body_max_size),
      NULL },

    { ngx_string("platform_body_types"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_body_types,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_query_module_ctx = {
    ngx_platform_query_add_variables,      /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_query_create_loc_conf,    /* create location configuration */
    ngx_platform_query_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_platform_query_module = {
    NGX_MODULE_V1,
    &ngx_platform_query_module_ctx,        /* module context */
    ngx_platform_query_commands,           /* module directives */
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


static ngx_http_variable_t  ngx_platform_query_vars[] = {

    { ngx_string("platform_body"), NULL,
      ngx_platform_query_body_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* request handling */


static ngx_int_t
ngx_platform_query_handler(ngx_http_request_t *r)
{
    off_t                           max_size;
    ngx_int_t                       rc, upload;
    ngx_uint_t                      i, method;
    ngx_pool_cleanup_t             *cln;
    ngx_platform_query_ctx_t       *ctx;
    ngx_platform_query_call_t      *call;
    ngx_platform_query_loc_conf_t  *qlcf;

    qlcf = ngx_http_get_module_loc_conf(r, ngx_platform_query_module);

    method = (r->method == NGX_HTTP_HEAD) ? NGX_HTTP_GET : r->method;

    call = qlcf->calls->elts;

    for (i = 0; i < qlcf->calls->nelts; i++) {
        if (call[i].method == method) {
            break;
        }
    }

    if (i == qlcf->calls->nelts) {
        return ngx_platform_query_not_allowed(r, qlcf);
    }

    /* platform_upload: an image, sniffed later, not a typed body */

    upload = ngx_platform_upload_init(r, &max_size);

    if (upload == NGX_DECLINED) {
        max_size = (off_t) qlcf->body_max_size;
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {

        if (upload == NGX_DECLINED
            && ngx_platform_query_type_allowed(r, qlcf) != NGX_OK)
        {
            rc = ngx_http_discard_request_body(r);
            if (rc != NGX_OK) {
                return rc;
            }

            return ngx_platform_send_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                           "unsupported_media_type", NULL);
        }

        if (r->headers_in.content_length_n > max_size) {
            rc = ngx_http_discard_request_body(r);
            if (rc != NGX_OK) {
                return rc;
            }

            return ngx_platform_send_error(r,
                                           NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                           "body_too_large", NULL);
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_query_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->call = &call[i];
    ctx->upload = (upload == NGX_OK);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_platform_query_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_platform_query_module);

    rc = ngx_http_read_client_request_body(r,
                                           ngx_platform_query_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_platform_query_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_platform_query_ctx_t       *ctx;
    ngx_platform_query_loc_conf_t  *qlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_platform_query_module);
    qlcf = ngx_http_get_module_loc_conf(r, ngx_platform_query_module);

    if (ctx->upload) {
        /* platform_upload: stored, or answered (413, 415) */

        rc = ngx_platform_upload_store(r);

        if (rc != NGX_DECLINED) {
            ngx_http_finalize_request(r, rc);
            return;
        }

        ctx->body_read = 1;
        rc = NGX_OK;

    } else {
        rc = ngx_platform_query_gather_body(r, ctx, qlcf);
    }

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        rc = ngx_platform_send_error(r, rc, "body_too_large", NULL);

    } else if (rc == NGX_OK) {
        rc = ngx_platform_query_start(r, ctx);

        if (rc == NGX_DONE) {
            /* notice a client that goes away while the query runs */
            r->read_event_handler = ngx_http_test_reading;
            r->write_event_handler = ngx_http_request_empty_handler;
            return;
        }
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_platform_query_start(ngx_http_request_t *r, ngx_platform_query_ctx_t *ctx)
{
    ngx_int_t  rc;

    /* platform_webhook_signature, over the body as received */

    rc = ngx_platform_signature_check(r, &ctx->body);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* platform_webhook_sealed_signature (may look its secret up), then
     * platform_seal */

    rc = ngx_platform_seal_request(r, &ctx->body);

    if (rc == NGX_AGAIN) {
        return NGX_DONE;
    }

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_platform_query_continue(r);
}


ngx_platform_pg_upstream_t *
ngx_platform_query_upstream(ngx_http_request_t *r)
{
    ngx_platform_query_loc_conf_t  *qlcf;

    qlcf = ngx_http_get_module_loc_conf(r, ngx_platform_query_module);

    return qlcf->upstream;
}


ngx_int_t
ngx_platform_query_continue(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_uint_t                      n;
    ngx_platform_pg_query_t        *q;
    ngx_platform_query_ctx_t       *ctx;
    ngx_platform_query_loc_conf_t  *qlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_platform_query_module);
    qlcf = ngx_http_get_module_loc_conf(r, ngx_platform_query_module);

    q = &ctx->query;
    n = ctx->call->args->nelts;

    q->upstream = qlcf->upstream;
    q->statement = ctx->call->statement;
    q->nparams = n;
    q->handler = ngx_platform_query_done;
    q->data = ctx;
    q->log = r->connection->log;

    q->values = ngx_pcalloc(r->pool, (n + 1) * sizeof(char *));
    if (q->values == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_platform_query_values(r, ctx->call->args, q->values);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_platform_pg_query(q) == NGX_AGAIN) {
        return NGX_DONE;
    }

    return ngx_platform_query_respond(r, q);
}


ngx_int_t
ngx_platform_query_values(ngx_http_request_t *r, ngx_array_t *args,
    const char **values)
{
    u_char                    *p;
    ngx_str_t                  val;
    ngx_uint_t                 i;
    ngx_http_complex_value_t  *cv;

    cv = args->elts;

    for (i = 0; i < args->nelts; i++) {
        if (ngx_http_complex_value(r, &cv[i], &val) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* an empty value is NULL: absent query arguments and headers */

        if (val.len == 0) {
            values[i] = NULL;
            continue;
        }

        if (ngx_strlchr(val.data, val.data + val.len, '\0')) {
            return ngx_platform_send_error(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_parameter",
                                           "a value contains a NUL byte");
        }

        p = ngx_pnalloc(r->pool, val.len + 1);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *ngx_cpymem(p, val.data, val.len) = '\0';
        values[i] = (char *) p;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_platform_query_gather_body(ngx_http_request_t *r,
    ngx_platform_query_ctx_t *ctx, ngx_platform_query_loc_conf_t *qlcf)
{
    u_char       *p;
    off_t         len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ctx->body_read = 1;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len > (off_t) qlcf->body_max_size) {
        /* a chunked body: its size was not known before it was read */
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body.data = p;

    /* nginx may have kept the body, or part of it, in a temporary file */

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "platform_query: could not read the body "
                              "from \"%V\"", &b->file->name);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    *p = '\0';
    ctx->body.len = p - ctx->body.data;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_query_type_allowed(ngx_http_request_t *r,
    ngx_platform_query_loc_conf_t *qlcf)
{
    u_char     *p, *last;
    size_t      len;
    ngx_str_t  *type;
    ngx_uint_t  i;

    if (r->headers_in.content_type == NULL) {
        return NGX_DECLINED;
    }

    p = r->headers_in.content_type->value.data;
    last = p + r->headers_in.content_type->value.len;

    while (p < last && *p == ' ') {
        p++;
    }

    len = 0;

    while (p + len < last && p[len] != ';' && p[len] != ' ') {
        len++;
    }

    type = qlcf->body_types->elts;

    for (i = 0; i < qlcf->body_types->nelts; i++) {
        if ((type[i].len == 1 && type[i].data[0] == '*')
            || (type[i].len == len
                && ngx_strncasecmp(type[i].data, p, len) == 0))
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_platform_query_not_allowed(ngx_http_request_t *r,
    ngx_platform_query_loc_conf_t *qlcf)
{
    u_char                     *p;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    ngx_table_elt_t            *h;
    ngx_platform_query_call_t  *call;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    call = qlcf->calls->elts;
    len = sizeof(", HEAD") - 1;

    for (i = 0; i < qlcf->calls->nelts; i++) {
        len += call[i].method_name.len + 2;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = p;

    for (i = 0; i < qlcf->calls->nelts; i++) {
        if (i) {
            *p++ = ',';
            *p++ = ' ';
        }

        p = ngx_cpymem(p, call[i].method_name.data, call[i].method_name.len);

        if (call[i].method == NGX_HTTP_GET) {
            p = ngx_cpymem(p, ", HEAD", 6);
        }
    }

    h->value.len = p - h->value.data;

    return ngx_platform_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                   "method_not_allowed", NULL);
}


static void
ngx_platform_query_done(ngx_platform_pg_query_t *q)
{
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_pool_cleanup_t        *cln;
    ngx_http_request_t        *r;
    ngx_platform_query_ctx_t  *ctx;

    ctx = q->data;
    r = ctx->request;
    c = r->connection;

    /* the result lives as long as the request: the body is sent from it */

    if (q->res) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            PQclear(q->res);
            q->res = NULL;
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            ngx_http_run_posted_requests(c);
            return;
        }

        cln->handler = ngx_platform_query_free_result;
        cln->data = q->res;
    }

    rc = ngx_platform_query_respond(r, q);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_platform_query_respond(ngx_http_request_t *r, ngx_platform_pg_query_t *q)
{
    char                *value;
    PGresult            *res;
    ngx_int_t            status;
    ngx_buf_t           *b;
    const char          *code;

    res = q->res;

    if (res == NULL) {
        switch (q->status) {
        case NGX_HTTP_SERVICE_UNAVAILABLE:
            code = "unavailable";
            break;
        case NGX_HTTP_GATEWAY_TIME_OUT:
            code = "timeout";
            break;
        default:
            code = "internal";
        }

        if (q->status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "platform_query: %s", q->reason);
        }

        return ngx_platform_send_error(r, q->status, code, q->reason);
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_platform_send_pg_error(r, res);
    }

    if (PQntuples(res) != 1 || PQnfields(res) != 4) {
        if (PQntuples(res) == 0) {
            return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND,
                                           "not_found", NULL);
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_query: the function returned %d rows, "
                      "expected one value", PQntuples(res));

        return ngx_platform_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal", NULL);
    }

    status = NGX_HTTP_OK;

    if (!PQgetisnull(res, 0, 1) && PQgetlength(res, 0, 1) > 0) {
        value = PQgetvalue(res, 0, 1);
        status = ngx_atoi((u_char *) value, PQgetlength(res, 0, 1));

        if (status < 100 || status > 599) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "platform_query: invalid response.status \"%s\"",
                          value);
            return ngx_platform_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "internal", NULL);
        }
    }

    if (!PQgetisnull(res, 0, 2) && PQgetlength(res, 0, 2) > 0) {
        if (ngx_platform_query_headers(r, (u_char *) PQgetvalue(res, 0, 2),
                                       PQgetlength(res, 0, 2))
            != NGX_OK)
        {
            return ngx_platform_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "internal", NULL);
        }
    }

    if (!PQgetisnull(res, 0, 3) && PQgetlength(res, 0, 3) > 0) {
        if (ngx_platform_session_respond(r, (u_char *) PQgetvalue(res, 0, 3),
                                         PQgetlength(res, 0, 3))
            != NGX_OK)
        {
            return ngx_platform_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "internal", NULL);
        }
    }

    if (PQgetisnull(res, 0, 0) && status == NGX_HTTP_OK) {
        return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                       NULL);
    }

    /* the body is sent from the result itself, freed with the request */

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = (u_char *) PQgetvalue(res, 0, 0);
    b->last = b->pos + PQgetlength(res, 0, 0);
    b->memory = 1;

    if (status == NGX_HTTP_NO_CONTENT) {
        r->header_only = 1;
        b->last = b->pos;
    }

    return ngx_platform_send_body(r, status, b);
}


/* "Name: value" lines written by platform.set_header() */

static ngx_int_t
ngx_platform_query_headers(ngx_http_request_t *r, u_char *p, size_t len)
{
    u_char           *last, *eol, *colon, *v, *s;
    ngx_table_elt_t  *h;

    last = p + len;

    for ( /* void */ ; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        if (eol == p) {
            continue;
        }

        colon = ngx_strlchr(p, eol, ':');
        if (colon == NULL || colon == p) {
            goto invalid;
        }

        for (s = p; s < colon; s++) {
            if (*s <= ' ' || *s >= 0x7f) {
                goto invalid;
            }
        }

        for (v = colon + 1; v < eol && *v == ' '; v++) { /* void */ }

        for (s = v; s < eol; s++) {
            if (*s == '\r' || *s == '\0') {
                goto invalid;
            }
        }

        if ((size_t) (colon - p) == sizeof("Content-Type") - 1
            && ngx_strncasecmp(p, (u_char *) "Content-Type", colon - p) == 0)
        {
            r->headers_out.content_type.data = ngx_pnalloc(r->pool, eol - v);
            if (r->headers_out.content_type.data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(r->headers_out.content_type.data, v, eol - v);
            r->headers_out.content_type.len = eol - v;
            r->headers_out.content_type_len = eol - v;
            r->headers_out.content_type_lowcase = NULL;
            continue;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        h->key.len = colon - p;
        h->key.data = ngx_pnalloc(r->pool, (colon - p) + (eol - v));
        if (h->key.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(h->key.data, p, colon - p);
        h->value.len = eol - v;
        h->value.data = h->key.data + h->key.len;
        ngx_memcpy(h->value.data, v, eol - v);
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "platform_query: invalid response.headers line \"%*s\"",
                  eol - p, p);

    return NGX_ERROR;
}


static void
ngx_platform_query_cleanup(void *data)
{
    ngx_platform_query_ctx_t  *ctx = data;

    ngx_platform_pg_abort(&ctx->query);
}


static void
ngx_platform_query_free_result(void *data)
{
    PQclear(data);
}


/* $platform_body */


static ngx_int_t
ngx_platform_query_add_variables(ngx_conf_t *cf)
{
    return ngx_platform_add_variables(cf, ngx_platform_query_vars);
}


static ngx_int_t
ngx_platform_query_body_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_platform_query_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_platform_query_module);

    if (ctx == NULL || !ctx->body_read) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ctx->body.data;
    v->len = ctx->body.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* configuration */


static void *
ngx_platform_query_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_query_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_query_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->calls = NULL;
     *     conf->pg_name = { 0, NULL };
     *     conf->upstream = NULL;
     */

    conf->body_max_size = NGX_CONF_UNSET_SIZE;
    conf->body_types = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_platform_query_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_query_loc_conf_t  *prev = parent;
    ngx_platform_query_loc_conf_t  *conf = child;

    ngx_str_t  *type;

    ngx_conf_merge_size_value(conf->body_max_size, prev->body_max_size,
                              1024 * 1024);

    if (conf->body_types == NGX_CONF_UNSET_PTR) {
        if (prev->body_types == NGX_CONF_UNSET_PTR) {
            prev->body_types = ngx_array_create(cf->pool, 1,
                                                sizeof(ngx_str_t));
            if (prev->body_types == NULL) {
                return NGX_CONF_ERROR;
            }

            type = ngx_array_push(prev->body_types);
            if (type == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_str_set(type, "application/json");
        }

        conf->body_types = prev->body_types;
    }

    if (conf->pg_name.data == NULL) {
        conf->pg_name = prev->pg_name;
        conf->pg_file = prev->pg_file;
        conf->pg_line = prev->pg_line;
    }

    if (conf->pg_name.data) {
        conf->upstream = ngx_platform_pg_upstream_find(cf, &conf->pg_name);

        if (conf->upstream == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "platform_pg_pass: no platform_pg block named "
                          "\"%V\" in %s:%ui", &conf->pg_name,
                          conf->pg_file, conf->pg_line);
            return NGX_CONF_ERROR;
        }
    }

    if (conf->calls && conf->upstream == NULL) {
        conf->upstream = ngx_platform_pg_upstream_find(cf, NULL);

        if (conf->upstream == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "platform_query needs a platform_pg block "
                          "in %s:%ui", conf->file, conf->line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_platform_pg_pass(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_query_loc_conf_t  *qlcf = conf;

    ngx_str_t  *value;

    if (qlcf->pg_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    qlcf->pg_name = value[1];
    qlcf->pg_file = cf->conf_file->file.name.data;
    qlcf->pg_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_platform_body_types(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_query_loc_conf_t  *qlcf = conf;

    ngx_str_t   *value, *type;
    ngx_uint_t   i;

    if (qlcf->body_types != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    qlcf->body_types = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                        sizeof(ngx_str_t));
    if (qlcf->body_types == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strlchr(value[i].data, value[i].data + value[i].len, ';')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid type \"%V\" in "
                               "\"platform_body_types\": write it without "
                               "parameters", &value[i]);
            return NGX_CONF_ERROR;
        }

        type = ngx_array_push(qlcf->body_types);
        if (type == NULL) {
            return NGX_CONF_ERROR;
        }

        *type = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_platform_query(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_query_loc_conf_t  *qlcf = conf;

    u_char                       *p;
    size_t                        len;
    ngx_str_t                    *value, text;
    ngx_uint_t                    i;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_platform_query_call_t    *call;
    ngx_platform_query_method_t  *m;

    value = cf->args->elts;

    for (m = ngx_platform_query_methods; m->name.len; m++) {
        if (m->name.len == value[1].len
            && ngx_strncmp(m->name.data, value[1].data, value[1].len) == 0)
        {
            break;
        }
    }

    if (m->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid method \"%V\" in \"platform_query\", "
                           "expected GET, POST, PUT, PATCH or DELETE",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (qlcf->calls == NULL) {
        qlcf->calls = ngx_array_create(cf->pool, 2,
                                       sizeof(ngx_platform_query_call_t));
        if (qlcf->calls == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    call = qlcf->calls->elts;

    for (i = 0; i < qlcf->calls->nelts; i++) {
        if (call[i].method == m->method) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate method \"%V\" in \"platform_query\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    call = ngx_array_push(qlcf->calls);
    if (call == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(call, sizeof(ngx_platform_query_call_t));
    call->method = m->method;
    call->method_name = m->name;

    /* the call may have been split into several words at its spaces */

    len = 0;
    for (i = 2; i < cf->args->nelts; i++) {
        len += value[i].len + 1;
    }

    text.data = ngx_pnalloc(cf->pool, len);
    if (text.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = text.data;

    for (i = 2; i < cf->args->nelts; i++) {
        if (i > 2) {
            *p++ = ' ';
        }

        p = ngx_cpymem(p, value[i].data, value[i].len);
    }

    text.len = p - text.data;

    if (ngx_platform_query_parse(cf, call, &text) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (qlcf->file == NULL) {
        qlcf->file = cf->conf_file->file.name.data;
        qlcf->line = cf->conf_file->line;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_platform_query_handler;

    return NGX_CONF_OK;
}


/*
 * function(arg, name => arg::type, ...): identifiers and types are checked
 * against strict patterns, so the statement holds only what the
 * configuration wrote; values become $n parameters.
 */

static char *
ngx_platform_query_parse(ngx_conf_t *cf, ngx_platform_query_call_t *call,
    ngx_str_t *text)
{
    u_char                            *p, *last, *fn, *fn_end, *open, *close;
    u_char                            *a, *a_end, *comma, *arrow, *cast, *s;
    u_char                            *sql, *q;
    size_t                             max;
    ngx_int_t                          stmt;
    ngx_str_t                          value, name, type, sqls;
    ngx_uint_t                         n;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    p = text->data;
    last = p + text->len;

    fn = p;
    fn_end = ngx_platform_query_ident(p, last);

    if (fn_end == fn) {
        goto invalid;
    }

    if (fn_end < last && *fn_end == '.') {
        s = ngx_platform_query_ident(fn_end + 1, last);

        if (s == fn_end + 1) {
            goto invalid;
        }

        fn_end = s;
    }

    for (open = fn_end; open < last && *open == ' '; open++) { /* void */ }

    for (close = last; close > open && close[-1] == ' '; close--) {
        /* void */
    }

    if (open == last || *open != '(' || close[-1] != ')' || close - 1 < open)
    {
        goto invalid;
    }

    close--;

    call->args = ngx_array_create(cf->pool, 4,
                                  sizeof(ngx_http_complex_value_t));
    if (call->args == NULL) {
        return NGX_CONF_ERROR;
    }

    max = sizeof(NGX_PLATFORM_QUERY_SELECT) - 1
          + (fn_end - fn) + (close - open) * 2 + 64 + sizeof(") AS r(b)");

    sql = ngx_pnalloc(cf->pool, max);
    if (sql == NULL) {
        return NGX_CONF_ERROR;
    }

    q = ngx_cpymem(sql, NGX_PLATFORM_QUERY_SELECT,
                   sizeof(NGX_PLATFORM_QUERY_SELECT) - 1);
    q = ngx_cpymem(q, fn, fn_end - fn);
    *q++ = '(';

    n = 0;
    a = open + 1;

    while (a < close) {
        comma = ngx_strlchr(a, close, ',');
        a_end = comma ? comma : close;

        while (a < a_end && *a == ' ') {
            a++;
        }

        while (a_end > a && a_end[-1] == ' ') {
            a_end--;
        }

        if (a == a_end) {
            if (comma == NULL && n == 0) {
                break;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty argument in \"platform_query\"");
            return NGX_CONF_ERROR;
        }

        /* name => */

        name.len = 0;
        arrow = ngx_strlcasestrn(a, a_end, (u_char *) "=>", 2 - 1);

        if (arrow) {
            s = ngx_platform_query_ident(a, arrow);
            name.data = a;
            name.len = s - a;

            while (s < arrow && *s == ' ') {
                s++;
            }

            if (name.len == 0 || s != arrow) {
                goto invalid_arg;
            }

            for (a = arrow + 2; a < a_end && *a == ' '; a++) { /* void */ }
        }

        /* ::type */

        type.len = 0;
        cast = NULL;

        for (s = a_end - 1; s > a; s--) {
            if (s[0] == ':' && s[-1] == ':') {
                cast = s - 1;
                break;
            }
        }

        value.data = a;
        value.len = a_end - a;

        if (cast) {
            type.data = cast + 2;
            type.len = a_end - type.data;
            value.len = cast - a;

            while (value.len && value.data[value.len - 1] == ' ') {
                value.len--;
            }

            while (type.len && type.data[0] == ' ') {
                type.data++;
                type.len--;
            }

            if (type.len == 0
                || !ngx_platform_alpha(type.data[0]))
            {
                goto invalid_arg;
            }

            for (s = type.data; s < type.data + type.len; s++) {
                if (!(ngx_platform_alnum(*s) || *s == ' ' || *s == '.'
                      || *s == '[' || *s == ']'))
                {
                    goto invalid_arg;
                }
            }
        }

        if (value.len == 0) {
            goto invalid_arg;
        }

        cv = ngx_array_push(call->args);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value;
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        n++;

        if (n > 1) {
            *q++ = ',';
            *q++ = ' ';
        }

        if (name.len) {
            q = ngx_cpymem(q, name.data, name.len);
            q = ngx_cpymem(q, " => ", 4);
        }

        q = ngx_sprintf(q, "$%ui", n);

        if (type.len) {
            q = ngx_cpymem(q, "::", 2);
            q = ngx_cpymem(q, type.data, type.len);
        }

        if (comma == NULL) {
            break;
        }

        a = comma + 1;

        if (a >= close) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty argument in \"platform_query\"");
            return NGX_CONF_ERROR;
        }
    }

    q = ngx_cpymem(q, ") AS r(b)", sizeof(") AS r(b)") - 1);

    sqls.data = sql;
    sqls.len = q - sql;

    stmt = ngx_platform_statement_add(cf, &sqls);
    if (stmt == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    call->statement = stmt;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid function call \"%V\" in \"platform_query\", "
                       "expected schema.function(argument, ...)", text);
    return NGX_CONF_ERROR;

invalid_arg:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid argument \"%*s\" in \"platform_query\", "
                       "expected [name =>] value[::type]", a_end - a, a);
    return NGX_CONF_ERROR;
}


static u_char *
ngx_platform_query_ident(u_char *p, u_char *last)
{
    if (p == last || !ngx_platform_alpha(*p)) {
        return p;
    }

    while (p < last && ngx_platform_alnum(*p)) {
        p++;
    }

    return p;
}
