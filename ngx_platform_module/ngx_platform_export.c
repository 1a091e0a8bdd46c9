
/*
 * platform_csv_export: a CSV file streamed page by page from PostgreSQL
 * (docs/analytics.md).
 *
 *   location ~ ^/api/events/(\d+)/participants\.csv$ {
 *       platform_auth organiser;
 *       platform_csv_export api.participants_csv($platform_user, $1)
 *                           rows=1000 filename=participants.csv;
 *   }
 *
 * The function is called as
 *
 *   SELECT chunk, next FROM fn(arg..., <after>, <rows>)
 *
 * through the pool, once per page: chunk is the CSV text of up to <rows>
 * rows (the first page starts with the header), next is the key to pass
 * as <after> for the following page, NULL after the last one.  A page is
 * asked for only when the previous one has been written to the client
 * (nginx's output chain is empty), so a worker holds one page per download
 * whatever the size of the file, and a slow client slows the reading
 * rather than filling memory.  An error on the first page is the usual
 * JSON error; one later (the status is sent) closes the connection without
 * the final chunk, so the client sees an incomplete file.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"


#define NGX_PLATFORM_EXPORT_BUF  (64 * 1024)


typedef struct {
    ngx_array_t                 *args;       /* ngx_http_complex_value_t */
    ngx_uint_t                   statement;
    ngx_uint_t                   rows;
    ngx_str_t                    filename;
    ngx_platform_pg_upstream_t  *upstream;
    ngx_str_t                    pg_name;
} ngx_platform_export_loc_conf_t;


typedef struct {
    ngx_http_request_t          *request;
    ngx_platform_pg_query_t      query;
    const char                 **values;
    ngx_uint_t                   nargs;
    u_char                       after[NGX_INT64_LEN + 1];
    u_char                       rows[NGX_INT_T_LEN + 1];
    ngx_chain_t                 *free;
    ngx_chain_t                 *busy;
    ngx_uint_t                   pages;
    unsigned                     header_sent:1;
    unsigned                     last:1;
} ngx_platform_export_ctx_t;


static ngx_int_t ngx_platform_export_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_export_page(ngx_http_request_t *r,
    ngx_platform_export_ctx_t *ctx);
static void ngx_platform_export_done(ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_export_send(ngx_http_request_t *r,
    ngx_platform_export_ctx_t *ctx, PGresult *res);
static ngx_int_t ngx_platform_export_headers(ngx_http_request_t *r);
static void ngx_platform_export_write(ngx_http_request_t *r);
static void ngx_platform_export_next(ngx_http_request_t *r,
    ngx_platform_export_ctx_t *ctx);
static void ngx_platform_export_cleanup(void *data);

static void *ngx_platform_export_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_export_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_csv_export(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_platform_export_commands[] = {

    { ngx_string("platform_csv_export"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_csv_export,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_export_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_export_create_loc_conf,   /* create location configuration */
    ngx_platform_export_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_platform_export_module = {
    NGX_MODULE_V1,
    &ngx_platform_export_module_ctx,       /* module context */
    ngx_platform_export_commands,          /* module directives */
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


static ngx_int_t
ngx_platform_export_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_uint_t                       n;
    ngx_pool_cleanup_t              *cln;
    ngx_platform_export_ctx_t       *ctx;
    ngx_platform_export_loc_conf_t  *elcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_platform_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    elcf = ngx_http_get_module_loc_conf(r, ngx_platform_export_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_export_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;

    n = elcf->args->nelts;

    ctx->nargs = n;
    ctx->values = ngx_pcalloc(r->pool, (n + 3) * sizeof(char *));
    if (ctx->values == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_platform_query_values(r, elcf->args, ctx->values);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_sprintf(ctx->after, "0%Z");
    ngx_sprintf(ctx->rows, "%ui%Z", elcf->rows);
    ctx->values[n] = (char *) ctx->after;
    ctx->values[n + 1] = (char *) ctx->rows;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_platform_export_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_platform_export_module);

    r->main->count++;

    rc = ngx_platform_export_page(r, ctx);

    if (rc == NGX_DONE) {
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_platform_export_page(ngx_http_request_t *r,
    ngx_platform_export_ctx_t *ctx)
{
    ngx_platform_pg_query_t         *q;
    ngx_platform_export_loc_conf_t  *elcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_platform_export_module);

    q = &ctx->query;
    ngx_memzero(q, sizeof(ngx_platform_pg_query_t));

    q->upstream = elcf->upstream;
    q->statement = elcf->statement;
    q->nparams = ctx->nargs + 2;
    q->values = ctx->values;
    q->handler = ngx_platform_export_done;
    q->data = ctx;
    q->log = r->connection->log;

    /* notice a client that goes away while the page is read */
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (ngx_platform_pg_query(q) == NGX_AGAIN) {
        return NGX_DONE;
    }

    /* refused at once (pool down or full): q->status */

    if (ctx->header_sent) {
        return NGX_ERROR;
    }

    return ngx_platform_send_error(r, q->status ? q->status
                                   : NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "unavailable", NULL);
}


static void
ngx_platform_export_done(ngx_platform_pg_query_t *q)
{
    ngx_int_t                   rc;
    PGresult                   *res;
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_platform_export_ctx_t  *ctx;

    ctx = q->data;
    r = ctx->request;
    c = r->connection;
    res = q->res;
    q->res = NULL;

    if (res == NULL
        || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQnfields(res) != 2
        || PQntuples(res) > 1)
    {
        if (ctx->header_sent) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "platform_csv_export: page %ui failed: %s",
                          ctx->pages + 1,
                          res ? PQresultErrorMessage(res)
                              : (q->reason ? q->reason : "no result"));
            rc = NGX_ERROR;

        } else if (res) {
            rc = ngx_platform_send_pg_error(r, res);

        } else {
            rc = ngx_platform_send_error(r, q->status ? q->status
                                         : NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "unavailable", NULL);
        }

        if (res) {
            PQclear(res);
        }

        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
        return;
    }

    rc = ngx_platform_export_send(r, ctx, res);
    PQclear(res);

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ngx_http_finalize_request(r, rc);

    } else if (ctx->last) {
        ngx_http_finalize_request(r, rc);

    } else if (rc == NGX_AGAIN || ctx->busy || c->buffered) {
        /* wait until the client has taken what was written */
        r->write_event_handler = ngx_platform_export_write;

        if (!c->write->ready) {
            clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
            ngx_add_timer(c->write, clcf->send_timeout);
        }

        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

    } else {
        ngx_platform_export_next(r, ctx);
    }

    ngx_http_run_posted_requests(c);
}


/* the page's chunk into the output chain (headers first, once) */

static ngx_int_t
ngx_platform_export_send(ngx_http_request_t *r,
    ngx_platform_export_ctx_t *ctx, PGresult *res)
{
    size_t        len, size;
    char         *next;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll, *ln, *out;

    if (!ctx->header_sent) {
        rc = ngx_platform_export_headers(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }

        ctx->header_sent = 1;
    }

    ctx->pages++;

    len = 0;
    next = NULL;

    if (PQntuples(res) == 1) {
        len = PQgetlength(res, 0, 0);

        if (!PQgetisnull(res, 0, 1)) {
            next = PQgetvalue(res, 0, 1);
        }
    }

    if (next == NULL || (size_t) PQgetlength(res, 0, 1) > NGX_INT64_LEN) {
        ctx->last = 1;

    } else {
        ngx_sprintf(ctx->after, "%s%Z", next);
    }

    out = NULL;

    if (len) {
        /* reuse a buffer the client has taken, if one is large enough */

        b = NULL;

        for (cl = ctx->free; cl; cl = cl->next) {
            if ((size_t) (cl->buf->end - cl->buf->start) >= len) {
                b = cl->buf;
                break;
            }
        }

        if (b == NULL) {
            size = ngx_max(len, NGX_PLATFORM_EXPORT_BUF);

            b = ngx_create_temp_buf(r->pool, size);
            if (b == NULL) {
                return NGX_ERROR;
            }

            b->tag = (ngx_buf_tag_t) &ngx_platform_export_module;
        }

        b->pos = b->start;
        b->last = ngx_cpymem(b->start, PQgetvalue(res, 0, 0), len);
        b->memory = 1;
        b->temporary = 1;
        b->flush = 1;
        b->last_buf = ctx->last;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;
        out = cl;

        /* the buffer is in use again: off the free list */

        for (ll = &ctx->free; *ll; ll = &(*ll)->next) {
            if ((*ll)->buf == b) {
                ln = *ll;
                *ll = ln->next;
                ngx_free_chain(r->pool, ln);
                break;
            }
        }

    } else if (ctx->last) {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last_buf = 1;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;
        out = cl;

    } else {
        return NGX_OK;
    }

    rc = ngx_http_output_filter(r, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_platform_export_module);

    return rc;
}


static ngx_int_t
ngx_platform_export_headers(ngx_http_request_t *r)
{
    u_char                          *p;
    size_t                           len;
    ngx_table_elt_t                 *h;
    ngx_platform_export_loc_conf_t  *elcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_platform_export_module);

    r->headers_out.status = NGX_HTTP_OK;
    ngx_str_set(&r->headers_out.content_type, "text/csv; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/csv") - 1;
    r->headers_out.content_length_n = -1;

    len = sizeof("attachment; filename=\"\"") - 1 + elcf->filename.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Content-Disposition");
    h->value.data = p;
    h->value.len = ngx_sprintf(p, "attachment; filename=\"%V\"",
                               &elcf->filename) - p;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    return ngx_http_send_header(r);
}


/* the client is ready for more: flush, then read the next page */

static void
ngx_platform_export_write(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_event_t                *wev;
    ngx_connection_t           *c;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_platform_export_ctx_t  *ctx;

    c = r->connection;
    wev = c->write;
    ctx = ngx_http_get_module_ctx(r, ngx_platform_export_module);

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    rc = ngx_http_output_filter(r, NULL);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, NULL,
                            (ngx_buf_tag_t) &ngx_platform_export_module);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    if (ctx->busy || c->buffered) {
        if (!wev->delayed) {
            clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
            ngx_add_timer(wev, clcf->send_timeout);
        }

        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    ngx_platform_export_next(r, ctx);
}


static void
ngx_platform_export_next(ngx_http_request_t *r,
    ngx_platform_export_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_platform_export_page(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static void
ngx_platform_export_cleanup(void *data)
{
    ngx_platform_export_ctx_t  *ctx = data;

    ngx_platform_pg_abort(&ctx->query);

    if (ctx->query.res) {
        PQclear(ctx->query.res);
        ctx->query.res = NULL;
    }
}


static void *
ngx_platform_export_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_export_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_export_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->args = NULL;
     *     conf->filename = { 0, NULL };
     *     conf->upstream = NULL;
     *     conf->pg_name = { 0, NULL };
     */

    conf->rows = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_platform_export_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_export_loc_conf_t  *conf = child;

    if (conf->args == NULL) {
        return NGX_CONF_OK;
    }

    conf->upstream = ngx_platform_pg_upstream_find(cf,
                         conf->pg_name.len ? &conf->pg_name : NULL);

    if (conf->upstream == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "platform_csv_export needs a platform_pg block%s%V",
                      conf->pg_name.len ? " named " : "", &conf->pg_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * platform_csv_export schema.function(arg, ...) [rows=N] [filename=NAME]
 *                     [pg=NAME];
 *
 * The arguments are nginx variables or constants, each one word without
 * spaces or commas; the function takes them, then "after" (bigint) and
 * "rows" (int).
 */

static char *
ngx_platform_csv_export(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_export_loc_conf_t  *elcf = conf;

    u_char                            *p, *last, *start;
    ngx_int_t                          n, st;
    ngx_str_t                         *value, text, fn, arg, sql;
    ngx_uint_t                         i, nargs;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    if (elcf->args) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the call may be split at spaces; the options come last */

    text.len = 0;
    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "rows=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n < 1 || n > 100000) {
                return "has an invalid \"rows\" (1 to 100000)";
            }
            elcf->rows = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "filename=", 9) == 0) {
            elcf->filename.data = value[i].data + 9;
            elcf->filename.len = value[i].len - 9;

            for (p = elcf->filename.data;
                 p < elcf->filename.data + elcf->filename.len;
                 p++)
            {
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                      || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'
                      || *p == '_'))
                {
                    return "has an invalid \"filename\" (letters, digits, "
                           "\".\", \"-\", \"_\")";
                }
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "pg=", 3) == 0) {
            elcf->pg_name.data = value[i].data + 3;
            elcf->pg_name.len = value[i].len - 3;
            continue;
        }

        text.len += value[i].len;
    }

    text.data = ngx_pnalloc(cf->pool, text.len);
    if (text.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = text.data;
    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "rows=", 5) != 0
            && ngx_strncmp(value[i].data, "filename=", 9) != 0
            && ngx_strncmp(value[i].data, "pg=", 3) != 0)
        {
            p = ngx_cpymem(p, value[i].data, value[i].len);
        }
    }

    last = text.data + text.len;

    /* schema.function */

    for (p = text.data; p < last && *p != '('; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_' || *p == '.'))
        {
            return "has an invalid function name";
        }
    }

    if (p == text.data || p == last || last[-1] != ')') {
        return "needs a call: schema.function(arg, ...)";
    }

    fn.data = text.data;
    fn.len = p - text.data;

    elcf->args = ngx_array_create(cf->pool, 4,
                                  sizeof(ngx_http_complex_value_t));
    if (elcf->args == NULL) {
        return NGX_CONF_ERROR;
    }

    start = p + 1;
    last--;                                  /* the ")" */

    while (start < last) {
        for (p = start; p < last && *p != ','; p++) { /* void */ }

        arg.data = start;
        arg.len = p - start;

        if (arg.len == 0) {
            return "has an empty argument";
        }

        cv = ngx_array_push(elcf->args);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &arg;
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        start = p + 1;
    }

    nargs = elcf->args->nelts;

    /* SELECT chunk, next FROM fn($1, ..., $n, $n+1::bigint, $n+2::int) */

    sql.len = sizeof("SELECT x.chunk, x.next::text FROM () AS x") - 1
              + fn.len + 1 + (nargs + 2) * (NGX_INT_T_LEN + 10);
    sql.data = ngx_pnalloc(cf->pool, sql.len);
    if (sql.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_sprintf(sql.data, "SELECT x.chunk, x.next::text FROM %V(", &fn);

    for (i = 0; i < nargs; i++) {
        p = ngx_sprintf(p, "$%ui, ", i + 1);
    }

    p = ngx_sprintf(p, "$%ui::bigint, $%ui::int) AS x", nargs + 1,
                    nargs + 2);
    sql.len = p - sql.data;

    st = ngx_platform_statement_add(cf, &sql);
    if (st == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    elcf->statement = st;

    if (elcf->rows == NGX_CONF_UNSET_UINT) {
        elcf->rows = 1000;
    }

    if (elcf->filename.len == 0) {
        ngx_str_set(&elcf->filename, "export.csv");
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_platform_export_handler;

    return NGX_CONF_OK;
}
