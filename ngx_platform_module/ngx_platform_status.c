
/*
 * platform_status: the pools' figures in the Prometheus text format,
 * summed over the workers' slots of the statistics zone.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"
#include "ngx_platform_ws.h"
#include "ngx_platform_chat.h"


#define NGX_PLATFORM_STATUS_POOL_SIZE  8192
#define NGX_PLATFORM_STATUS_JOBS_SIZE  4096
#define NGX_PLATFORM_STATUS_WS_SIZE    2048


static ngx_int_t ngx_platform_status_handler(ngx_http_request_t *r);
static u_char *ngx_platform_status_pool(u_char *p,
    ngx_platform_pg_upstream_t *up, ngx_platform_pg_stats_t *st);
static void ngx_platform_status_sum(ngx_platform_main_conf_t *pmcf,
    ngx_uint_t index, ngx_platform_pg_stats_t *sum);
static char *ngx_platform_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_platform_status_commands[] = {

    { ngx_string("platform_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_platform_status,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_status_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_platform_status_module = {
    NGX_MODULE_V1,
    &ngx_platform_status_module_ctx,       /* module context */
    ngx_platform_status_commands,          /* module directives */
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
ngx_platform_status_handler(ngx_http_request_t *r)
{
    u_char                       *p;
    size_t                        len;
    ngx_int_t                     rc;
    ngx_buf_t                    *b;
    ngx_uint_t                    i;
    ngx_platform_pg_stats_t       sum;
    ngx_platform_main_conf_t     *pmcf;
    ngx_platform_pg_upstream_t  **upp;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_platform_module);
    upp = pmcf->upstreams.elts;

    /* the pool's name is written in each of about 40 lines */

    len = 64 + NGX_PLATFORM_STATUS_JOBS_SIZE + NGX_PLATFORM_STATUS_WS_SIZE
          + ngx_platform_chat_status_size(r);

    for (i = 0; i < pmcf->upstreams.nelts; i++) {
        len += NGX_PLATFORM_STATUS_POOL_SIZE + 64 * upp[i]->name.len;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    for (i = 0; i < pmcf->upstreams.nelts; i++) {
        ngx_platform_status_sum(pmcf, i, &sum);
        p = ngx_platform_status_pool(p, upp[i], &sum);
    }

    p = ngx_platform_jobs_status(r, p, b->end);
    p = ngx_platform_ws_status(r, p, b->end);
    p = ngx_platform_chat_status(r, p, b->end);

    b->last = p;

    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    return ngx_platform_send_body(r, NGX_HTTP_OK, b);
}


static void
ngx_platform_status_sum(ngx_platform_main_conf_t *pmcf, ngx_uint_t index,
    ngx_platform_pg_stats_t *sum)
{
    uint64_t                 *d, *s;
    ngx_uint_t                w, k, n;
    ngx_platform_pg_stats_t  *st;

    ngx_memzero(sum, sizeof(ngx_platform_pg_stats_t));

    if (pmcf->stats == NULL) {
        return;
    }

    n = sizeof(ngx_platform_pg_stats_t) / sizeof(uint64_t);

    for (w = 0; w < NGX_PLATFORM_STATS_WORKERS; w++) {
        st = pmcf->stats + w * pmcf->upstreams.nelts + index;

        d = (uint64_t *) sum;
        s = (uint64_t *) st;

        for (k = 0; k < n; k++) {
            d[k] += s[k];
        }
    }
}


static u_char *
ngx_platform_status_pool(u_char *p, ngx_platform_pg_upstream_t *up,
    ngx_platform_pg_stats_t *st)
{
    uint64_t    cum;
    ngx_str_t  *name;
    ngx_uint_t  i;

    name = &up->name;

    p = ngx_sprintf(p,
        "# HELP platform_pg_connections Connections to PostgreSQL by state.\n"
        "# TYPE platform_pg_connections gauge\n"
        "platform_pg_connections{pool=\"%V\",state=\"idle\"} %uL\n"
        "platform_pg_connections{pool=\"%V\",state=\"busy\"} %uL\n"
        "platform_pg_connections{pool=\"%V\",state=\"connecting\"} %uL\n"
        "platform_pg_connections{pool=\"%V\",state=\"down\"} %uL\n"
        "# HELP platform_pg_queue_length Requests waiting for a connection.\n"
        "# TYPE platform_pg_queue_length gauge\n"
        "platform_pg_queue_length{pool=\"%V\"} %uL\n"
        "# HELP platform_pg_queries_total Queries finished, "
        "successful or not.\n"
        "# TYPE platform_pg_queries_total counter\n"
        "platform_pg_queries_total{pool=\"%V\"} %uL\n",
        name, st->idle, name, st->busy, name, st->connecting,
        name, st->down, name, st->queued, name, st->queries);

    p = ngx_sprintf(p,
        "# HELP platform_pg_errors_total Queries that failed, "
        "by SQLSTATE class.\n"
        "# TYPE platform_pg_errors_total counter\n");

    for (i = 0; i < NGX_PLATFORM_PG_ERROR_CLASSES; i++) {
        p = ngx_sprintf(p,
                        "platform_pg_errors_total{pool=\"%V\",class=\"%s\"}"
                        " %uL\n", name, ngx_platform_error_classes[i],
                        st->errors[i]);
    }

    p = ngx_sprintf(p,
        "# HELP platform_pg_rejected_total Requests answered 503 without "
        "a query.\n"
        "# TYPE platform_pg_rejected_total counter\n"
        "platform_pg_rejected_total{pool=\"%V\",reason=\"queue_full\"} %uL\n"
        "platform_pg_rejected_total{pool=\"%V\",reason=\"queue_timeout\"}"
        " %uL\n"
        "platform_pg_rejected_total{pool=\"%V\",reason=\"unavailable\"} %uL\n"
        "# HELP platform_pg_timeouts_total Queries the server did not "
        "answer in time.\n"
        "# TYPE platform_pg_timeouts_total counter\n"
        "platform_pg_timeouts_total{pool=\"%V\"} %uL\n"
        "# HELP platform_pg_connects_total Connections established.\n"
        "# TYPE platform_pg_connects_total counter\n"
        "platform_pg_connects_total{pool=\"%V\"} %uL\n"
        "# HELP platform_pg_connect_failures_total Connection attempts "
        "that failed.\n"
        "# TYPE platform_pg_connect_failures_total counter\n"
        "platform_pg_connect_failures_total{pool=\"%V\"} %uL\n",
        name, st->rejected_full, name, st->rejected_timeout,
        name, st->rejected_down, name, st->timeouts, name, st->connects,
        name, st->connect_failures);

    p = ngx_sprintf(p,
        "# HELP platform_pg_query_duration_seconds Time from asking the "
        "pool to the answer, waiting included.\n"
        "# TYPE platform_pg_query_duration_seconds histogram\n");

    cum = 0;

    for (i = 0; i < NGX_PLATFORM_PG_BUCKETS; i++) {
        cum += st->buckets[i];

        p = ngx_sprintf(p,
                        "platform_pg_query_duration_seconds_bucket"
                        "{pool=\"%V\",le=\"%M.%03M\"} %uL\n", name,
                        ngx_platform_pg_bucket_bounds[i] / 1000,
                        ngx_platform_pg_bucket_bounds[i] % 1000, cum);
    }

    cum += st->buckets[NGX_PLATFORM_PG_BUCKETS];

    p = ngx_sprintf(p,
        "platform_pg_query_duration_seconds_bucket{pool=\"%V\",le=\"+Inf\"}"
        " %uL\n"
        "platform_pg_query_duration_seconds_sum{pool=\"%V\"} %uL.%03uL\n"
        "platform_pg_query_duration_seconds_count{pool=\"%V\"} %uL\n",
        name, cum, name, st->duration_ms / 1000, st->duration_ms % 1000,
        name, cum);

    return p;
}


static char *
ngx_platform_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_platform_status_handler;

    return NGX_CONF_OK;
}
