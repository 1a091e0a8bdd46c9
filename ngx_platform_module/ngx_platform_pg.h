
/*
 * Asynchronous PostgreSQL pool: one per platform_pg block and worker.
 */


#ifndef _NGX_PLATFORM_PG_H_INCLUDED_
#define _NGX_PLATFORM_PG_H_INCLUDED_


#include "ngx_platform_module.h"
#include <libpq-fe.h>


#define NGX_PLATFORM_PG_BUCKETS        14
#define NGX_PLATFORM_PG_ERROR_CLASSES  18


typedef struct ngx_platform_pg_pool_s   ngx_platform_pg_pool_t;
typedef struct ngx_platform_pg_query_s  ngx_platform_pg_query_t;
typedef void (*ngx_platform_pg_handler_pt)(ngx_platform_pg_query_t *q);

/* LISTEN on the pool: a notification, and "listening (again) now" */
typedef void (*ngx_platform_pg_notify_pt)(void *data, const char *channel,
    const char *payload);
typedef void (*ngx_platform_pg_listening_pt)(void *data);


struct ngx_platform_pg_upstream_s {
    ngx_str_t                   name;
    ngx_str_t                   conninfo;
    const char                **keywords;    /* for PQconnectStartParams */
    const char                **values;

    ngx_uint_t                  pool_size;
    ngx_uint_t                  pipeline_depth;
    ngx_uint_t                  queue_size;
    ngx_msec_t                  queue_timeout;
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  query_timeout;
    ngx_msec_t                  backoff_min;
    ngx_msec_t                  backoff_max;

    ngx_uint_t                  index;
    ngx_platform_pg_pool_t     *pool;        /* this worker's, or NULL */

    /* one LISTEN per upstream (ngx_platform_pg_listen()), on conns[0] */
    ngx_uint_t                  listen;      /* statement + 1, or 0 */
    ngx_platform_pg_notify_pt   notify;
    ngx_platform_pg_listening_pt listening;
    void                       *notify_data;
};


/* one slot per worker and upstream in the shared statistics zone */
struct ngx_platform_pg_stats_s {
    /* gauges */
    uint64_t                    idle;
    uint64_t                    busy;
    uint64_t                    connecting;
    uint64_t                    down;
    uint64_t                    queued;

    /* counters */
    uint64_t                    queries;
    uint64_t                    rejected_full;
    uint64_t                    rejected_timeout;
    uint64_t                    rejected_down;
    uint64_t                    timeouts;
    uint64_t                    connects;
    uint64_t                    connect_failures;
    uint64_t                    errors[NGX_PLATFORM_PG_ERROR_CLASSES];
    uint64_t                    buckets[NGX_PLATFORM_PG_BUCKETS + 1];
    uint64_t                    duration_ms;
};


/*
 * A query as the caller sees it: lives in the caller's memory (a request
 * pool).  Unless ngx_platform_pg_query() answers NGX_ERROR (status set) or
 * the query is aborted, the handler is called exactly once, never from
 * within ngx_platform_pg_query(); it owns res and must PQclear() it.
 */
struct ngx_platform_pg_query_s {
    ngx_platform_pg_upstream_t *upstream;
    ngx_uint_t                  statement;
    int                         nparams;
    const char                **values;
    int                        *lengths;

    ngx_platform_pg_handler_pt  handler;
    void                       *data;
    ngx_log_t                  *log;

    /* outcome: res is a result (also an error result) or NULL, then status */
    PGresult                   *res;
    ngx_uint_t                  status;
    const char                 *reason;

    /* the pool's own */
    ngx_queue_t                 queue;
    ngx_event_t                 wait;
    void                       *job;
    ngx_msec_t                  start;
    unsigned                    queued:1;
};


ngx_int_t ngx_platform_pg_init_process(ngx_cycle_t *cycle,
    ngx_platform_pg_upstream_t *up, ngx_uint_t nstatements,
    ngx_str_t *statements, ngx_platform_pg_stats_t *stats);
void ngx_platform_pg_exit_process(ngx_platform_pg_upstream_t *up);

ngx_int_t ngx_platform_pg_query(ngx_platform_pg_query_t *q);
void ngx_platform_pg_abort(ngx_platform_pg_query_t *q);

ngx_int_t ngx_platform_pg_listen(ngx_conf_t *cf,
    ngx_platform_pg_upstream_t *up, ngx_str_t *channel,
    ngx_platform_pg_notify_pt notify, ngx_platform_pg_listening_pt listening,
    void *data);

ngx_int_t ngx_platform_send_pg_error(ngx_http_request_t *r, PGresult *res);

char *ngx_platform_pg_conf_entry(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf);
char *ngx_platform_pg_conf_done(ngx_conf_t *cf,
    ngx_platform_pg_upstream_t *up);


extern const ngx_msec_t  ngx_platform_pg_bucket_bounds[NGX_PLATFORM_PG_BUCKETS];


#endif /* _NGX_PLATFORM_PG_H_INCLUDED_ */
