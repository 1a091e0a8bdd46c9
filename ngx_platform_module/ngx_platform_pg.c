
/*
 * Asynchronous PostgreSQL pool.
 *
 * Each worker keeps pool_size connections per platform_pg block.  Sockets
 * are wrapped in nginx connections and driven by the event loop; libpq is
 * used only through its non-blocking calls (PQconnectPoll, PQsend*,
 * PQconsumeInput, PQisBusy/PQgetResult when not busy, PQflush).
 *
 * Connections run in pipeline mode: a query is sent as [Parse] + Bind/
 * Execute + Sync, so each query is its own implicit transaction and several
 * queries (of different requests) may be in flight on one connection.
 * Statements are prepared on first use per connection and reused.
 */


#include "ngx_platform_pg.h"
#include <arpa/inet.h>


#define NGX_PLATFORM_PG_DOWN        0
#define NGX_PLATFORM_PG_CONNECTING  1
#define NGX_PLATFORM_PG_READY       2

/* how long past query_timeout we wait for the server's own cancel */
#define NGX_PLATFORM_PG_GRACE       1000


typedef struct ngx_platform_pg_conn_s  ngx_platform_pg_conn_t;


typedef struct {
    ngx_queue_t                 queue;
    ngx_platform_pg_query_t    *query;       /* NULL once the caller left */
    PGresult                   *res;
    PGresult                   *error;
    ngx_uint_t                  statement;
    ngx_uint_t                  phase;       /* 0 prepare, 1 execute */
} ngx_platform_pg_job_t;


struct ngx_platform_pg_conn_s {
    ngx_platform_pg_pool_t     *pool;
    PGconn                     *pg;
    ngx_connection_t           *c;
    ngx_event_t                 timer;
    ngx_uint_t                  state;
    ngx_queue_t                 jobs;
    ngx_uint_t                  njobs;
    u_char                     *prepared;
    ngx_msec_t                  backoff;
    ngx_msec_t                  last_attempt;
};


struct ngx_platform_pg_pool_s {
    ngx_platform_pg_upstream_t *up;
    ngx_platform_pg_conn_t     *conns;
    ngx_uint_t                  nstatements;
    ngx_str_t                  *statements;
    ngx_queue_t                 waiters;
    ngx_uint_t                  nwaiting;
    ngx_queue_t                 free_jobs;
    ngx_log_t                  *log;
    ngx_platform_pg_stats_t    *stats;
    ngx_platform_pg_query_t     listen;      /* LISTEN, on conns[0] */
    unsigned                    attempted:1;
};


static void ngx_platform_pg_connect(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_connect_step(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_ready(ngx_platform_pg_conn_t *pc);
static ngx_int_t ngx_platform_pg_wrap(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_events(ngx_platform_pg_conn_t *pc,
    ngx_uint_t rd, ngx_uint_t wr);
static void ngx_platform_pg_release(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_close(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_fail(ngx_platform_pg_conn_t *pc,
    ngx_uint_t status, const char *reason);
static void ngx_platform_pg_read_handler(ngx_event_t *ev);
static void ngx_platform_pg_write_handler(ngx_event_t *ev);
static void ngx_platform_pg_timer_handler(ngx_event_t *ev);
static void ngx_platform_pg_wait_handler(ngx_event_t *ev);
static void ngx_platform_pg_process(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_listen_send(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_listened(ngx_platform_pg_query_t *q);
static void ngx_platform_pg_notifications(ngx_platform_pg_conn_t *pc);
static void ngx_platform_pg_complete(ngx_platform_pg_conn_t *pc,
    ngx_platform_pg_job_t *job);
static ngx_int_t ngx_platform_pg_send(ngx_platform_pg_conn_t *pc,
    ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_pg_flush(ngx_platform_pg_conn_t *pc);
static ngx_platform_pg_conn_t *ngx_platform_pg_pick(
    ngx_platform_pg_pool_t *pool);
static ngx_uint_t ngx_platform_pg_alive(ngx_platform_pg_pool_t *pool);
static void ngx_platform_pg_dispatch(ngx_platform_pg_pool_t *pool);
static void ngx_platform_pg_reject_waiters(ngx_platform_pg_pool_t *pool);
static void ngx_platform_pg_unqueue(ngx_platform_pg_pool_t *pool,
    ngx_platform_pg_query_t *q);
static void ngx_platform_pg_finish(ngx_platform_pg_pool_t *pool,
    ngx_platform_pg_query_t *q);
static void ngx_platform_pg_reject(ngx_platform_pg_pool_t *pool,
    ngx_platform_pg_query_t *q, const char *reason);
static void ngx_platform_pg_gauges(ngx_platform_pg_pool_t *pool);
static void ngx_platform_pg_notice(void *arg, const char *message);
static void ngx_platform_pg_statement_name(u_char *buf, ngx_uint_t n);
static char *ngx_platform_pg_strdup(ngx_pool_t *pool, const char *s);


const ngx_msec_t  ngx_platform_pg_bucket_bounds[NGX_PLATFORM_PG_BUCKETS] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000
};


ngx_int_t
ngx_platform_pg_init_process(ngx_cycle_t *cycle,
    ngx_platform_pg_upstream_t *up, ngx_uint_t nstatements,
    ngx_str_t *statements, ngx_platform_pg_stats_t *stats)
{
    u_char                  *bits;
    ngx_uint_t               i;
    ngx_platform_pg_conn_t  *pc;
    ngx_platform_pg_pool_t  *pool;

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_platform_pg_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    pool->conns = ngx_pcalloc(cycle->pool,
                              up->pool_size * sizeof(ngx_platform_pg_conn_t));
    bits = ngx_pcalloc(cycle->pool, up->pool_size * (nstatements + 1));

    if (pool->conns == NULL || bits == NULL) {
        return NGX_ERROR;
    }

    pool->up = up;
    pool->nstatements = nstatements;
    pool->statements = statements;
    pool->log = cycle->log;
    pool->stats = stats;
    ngx_queue_init(&pool->waiters);
    ngx_queue_init(&pool->free_jobs);

    up->pool = pool;

    for (i = 0; i < up->pool_size; i++) {
        pc = &pool->conns[i];

        pc->pool = pool;
        pc->prepared = bits + i * (nstatements + 1);
        pc->backoff = up->backoff_min;
        pc->state = NGX_PLATFORM_PG_DOWN;
        ngx_queue_init(&pc->jobs);

        pc->timer.handler = ngx_platform_pg_timer_handler;
        pc->timer.data = pc;
        pc->timer.log = cycle->log;
    }

    for (i = 0; i < up->pool_size; i++) {
        ngx_platform_pg_connect(&pool->conns[i]);
    }

    return NGX_OK;
}


void
ngx_platform_pg_exit_process(ngx_platform_pg_upstream_t *up)
{
    ngx_uint_t               i;
    ngx_queue_t             *q;
    ngx_platform_pg_job_t   *job;
    ngx_platform_pg_conn_t  *pc;
    ngx_platform_pg_pool_t  *pool;

    pool = up->pool;

    if (pool == NULL) {
        return;
    }

    for (i = 0; i < up->pool_size; i++) {
        pc = &pool->conns[i];

        if (pc->timer.timer_set) {
            ngx_del_timer(&pc->timer);
        }

        while (!ngx_queue_empty(&pc->jobs)) {
            q = ngx_queue_head(&pc->jobs);
            ngx_queue_remove(q);
            job = ngx_queue_data(q, ngx_platform_pg_job_t, queue);
            PQclear(job->res);
            PQclear(job->error);
            ngx_free(job);
        }

        ngx_platform_pg_close(pc);
    }

    while (!ngx_queue_empty(&pool->free_jobs)) {
        q = ngx_queue_head(&pool->free_jobs);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_platform_pg_job_t, queue));
    }

    /* a worker that is gone has no connections */

    pool->nwaiting = 0;
    pool->stats->idle = 0;
    pool->stats->busy = 0;
    pool->stats->connecting = 0;
    pool->stats->down = 0;
    pool->stats->queued = 0;

    up->pool = NULL;
}


/* connection life cycle */


static void
ngx_platform_pg_connect(ngx_platform_pg_conn_t *pc)
{
    ngx_platform_pg_pool_t      *pool;
    ngx_platform_pg_upstream_t  *up;

    pool = pc->pool;
    up = pool->up;

    pc->last_attempt = ngx_current_msec;
    pool->attempted = 1;

    pc->pg = PQconnectStartParams(up->keywords, up->values, 0);

    if (pc->pg == NULL) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "platform_pg \"%V\": PQconnectStartParams() failed",
                      &up->name);
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
        return;
    }

    PQsetNoticeProcessor(pc->pg, ngx_platform_pg_notice, pc);

    pc->state = NGX_PLATFORM_PG_CONNECTING;

    if (PQstatus(pc->pg) == CONNECTION_BAD
        || ngx_platform_pg_wrap(pc) != NGX_OK)
    {
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "could not connect");
        return;
    }

    pc->timer.cancelable = 0;
    ngx_add_timer(&pc->timer, up->connect_timeout);

    /* before the first PQconnectPoll() libpq waits for writability */
    ngx_platform_pg_events(pc, 0, 1);
    ngx_platform_pg_gauges(pool);
}


static void
ngx_platform_pg_connect_step(ngx_platform_pg_conn_t *pc)
{
    PostgresPollingStatusType  rc;

    /* the socket may change while libpq connects: register anew each step */
    ngx_platform_pg_events(pc, 0, 0);

    rc = PQconnectPoll(pc->pg);

    if (rc == PGRES_POLLING_FAILED) {
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "could not connect");
        return;
    }

    if (pc->c == NULL || pc->c->fd != PQsocket(pc->pg)) {
        ngx_platform_pg_release(pc);

        if (ngx_platform_pg_wrap(pc) != NGX_OK) {
            ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "could not connect");
            return;
        }
    }

    switch (rc) {

    case PGRES_POLLING_OK:
        ngx_platform_pg_ready(pc);
        return;

    case PGRES_POLLING_READING:
        ngx_platform_pg_events(pc, 1, 0);
        return;

    default: /* PGRES_POLLING_WRITING */
        ngx_platform_pg_events(pc, 0, 1);
        return;
    }
}


static void
ngx_platform_pg_ready(ngx_platform_pg_conn_t *pc)
{
    ngx_platform_pg_pool_t  *pool;

    pool = pc->pool;

    if (PQsetnonblocking(pc->pg, 1) != 0
        || PQenterPipelineMode(pc->pg) != 1)
    {
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "could not enter pipeline mode");
        return;
    }

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    ngx_memzero(pc->prepared, pool->nstatements + 1);

    pc->state = NGX_PLATFORM_PG_READY;
    pc->backoff = pool->up->backoff_min;

    /*
     * Not c->idle: a graceful shutdown must not close the pool while the
     * worker still has work that needs it (requests in flight, the chat's
     * last batches); the connections go in exit_process.  Only queries in
     * flight hold the worker (their timer), an unused pool does not.
     */

    pool->stats->connects++;

    ngx_log_error(NGX_LOG_INFO, pool->log, 0,
                  "platform_pg \"%V\": connected, server pid %d",
                  &pool->up->name, PQbackendPID(pc->pg));

    ngx_platform_pg_events(pc, 1, 0);

    if (pool->up->listen && pc == &pool->conns[0]) {
        ngx_platform_pg_listen_send(pc);

        if (pc->state != NGX_PLATFORM_PG_READY) {
            return;
        }
    }

    ngx_platform_pg_gauges(pool);
    ngx_platform_pg_dispatch(pool);
}


static ngx_int_t
ngx_platform_pg_wrap(ngx_platform_pg_conn_t *pc)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pg);

    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, pc->pool->log);

    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->read->handler = ngx_platform_pg_read_handler;
    c->write->handler = ngx_platform_pg_write_handler;
    c->read->log = pc->pool->log;
    c->write->log = pc->pool->log;

    pc->c = c;

    return NGX_OK;
}


static void
ngx_platform_pg_events(ngx_platform_pg_conn_t *pc, ngx_uint_t rd,
    ngx_uint_t wr)
{
    if (pc->c) {
        ngx_platform_socket_events(pc->c, rd, wr);
    }
}


/* forget the nginx connection; libpq owns and closes the socket itself */

static void
ngx_platform_pg_release(ngx_platform_pg_conn_t *pc)
{
    if (pc->c) {
        ngx_platform_socket_release(pc->c, 1);
        pc->c = NULL;
    }
}


/* the connection ends: socket, libpq's state and its timer */

static void
ngx_platform_pg_close(ngx_platform_pg_conn_t *pc)
{
    ngx_platform_pg_release(pc);

    if (pc->pg) {
        PQfinish(pc->pg);
        pc->pg = NULL;
    }

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    pc->state = NGX_PLATFORM_PG_DOWN;
}


static void
ngx_platform_pg_fail(ngx_platform_pg_conn_t *pc, ngx_uint_t status,
    const char *reason)
{
    ngx_uint_t                   connecting;
    ngx_queue_t                  jobs, *q;
    ngx_platform_pg_job_t       *job;
    ngx_platform_pg_pool_t      *pool;
    ngx_platform_pg_query_t     *query;
    ngx_platform_pg_upstream_t  *up;

    pool = pc->pool;
    up = pool->up;
    connecting = (pc->state == NGX_PLATFORM_PG_CONNECTING);

    if (reason) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "platform_pg \"%V\": %s: %s", &up->name, reason,
                      pc->pg ? PQerrorMessage(pc->pg) : "");
    }

    if (connecting) {
        pool->stats->connect_failures++;
    }

    pc->state = NGX_PLATFORM_PG_DOWN;

    ngx_queue_init(&jobs);

    if (!ngx_queue_empty(&pc->jobs)) {
        jobs = pc->jobs;
        jobs.next->prev = &jobs;
        jobs.prev->next = &jobs;
        ngx_queue_init(&pc->jobs);
    }

    pc->njobs = 0;

    ngx_platform_pg_close(pc);

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        pc->timer.cancelable = 1;
        ngx_add_timer(&pc->timer, pc->backoff);

        pc->backoff *= 2;
        if (pc->backoff > up->backoff_max) {
            pc->backoff = up->backoff_max;
        }
    }

    ngx_platform_pg_gauges(pool);

    /* the outcome of queries in flight is unknown: tell their callers */

    while (!ngx_queue_empty(&jobs)) {
        q = ngx_queue_head(&jobs);
        ngx_queue_remove(q);
        job = ngx_queue_data(q, ngx_platform_pg_job_t, queue);

        PQclear(job->res);
        PQclear(job->error);

        query = job->query;
        ngx_queue_insert_tail(&pool->free_jobs, &job->queue);

        if (query) {
            query->job = NULL;
            query->status = status;
            query->reason = (status == NGX_HTTP_GATEWAY_TIME_OUT)
                            ? "query timed out" : "database connection lost";
            ngx_platform_pg_finish(pool, query);
        }
    }

    if (ngx_platform_pg_alive(pool) == 0) {
        ngx_platform_pg_reject_waiters(pool);
    }
}


/* event handlers */


static void
ngx_platform_pg_read_handler(ngx_event_t *ev)
{
    ngx_connection_t        *c;
    ngx_platform_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (pc->state == NGX_PLATFORM_PG_CONNECTING) {
        ngx_platform_pg_connect_step(pc);
        return;
    }

    if (PQconsumeInput(pc->pg) == 0) {
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "connection lost");
        return;
    }

    ngx_platform_pg_process(pc);

    if (pc->state == NGX_PLATFORM_PG_READY && pc->pool->up->listen) {
        ngx_platform_pg_notifications(pc);
    }
}


static void
ngx_platform_pg_write_handler(ngx_event_t *ev)
{
    ngx_connection_t        *c;
    ngx_platform_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (pc->state == NGX_PLATFORM_PG_CONNECTING) {
        ngx_platform_pg_connect_step(pc);
        return;
    }

    if (ngx_platform_pg_flush(pc) != NGX_OK) {
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "could not send");
    }
}


static void
ngx_platform_pg_timer_handler(ngx_event_t *ev)
{
    ngx_platform_pg_conn_t  *pc;

    pc = ev->data;

    switch (pc->state) {

    case NGX_PLATFORM_PG_DOWN:
        if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
            ngx_platform_pg_connect(pc);
        }
        return;

    case NGX_PLATFORM_PG_CONNECTING:
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "connect timed out");
        return;

    default:
        pc->pool->stats->timeouts++;
        ngx_platform_pg_fail(pc, NGX_HTTP_GATEWAY_TIME_OUT,
                             "server did not answer within query_timeout");
        return;
    }
}


static void
ngx_platform_pg_wait_handler(ngx_event_t *ev)
{
    ngx_platform_pg_pool_t   *pool;
    ngx_platform_pg_query_t  *q;

    q = ev->data;
    pool = q->upstream->pool;

    ngx_platform_pg_unqueue(pool, q);
    pool->stats->rejected_timeout++;

    ngx_platform_pg_reject(pool, q,
                           "timed out waiting for a database connection");
}


/* results */


static void
ngx_platform_pg_process(ngx_platform_pg_conn_t *pc)
{
    PGresult               *res;
    ngx_uint_t              nulls;
    ngx_platform_pg_job_t  *job;

    nulls = 0;

    while (pc->state == NGX_PLATFORM_PG_READY
           && !ngx_queue_empty(&pc->jobs))
    {
        if (PQisBusy(pc->pg)) {
            break;
        }

        job = ngx_queue_data(ngx_queue_head(&pc->jobs),
                             ngx_platform_pg_job_t, queue);

        res = PQgetResult(pc->pg);

        if (res == NULL) {
            /* end of one command's results */
            if (++nulls > 2) {
                ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "pipeline out of step");
                return;
            }

            job->phase++;
            continue;
        }

        nulls = 0;

        switch (PQresultStatus(res)) {

        case PGRES_PIPELINE_SYNC:
            PQclear(res);
            ngx_platform_pg_complete(pc, job);
            continue;

        case PGRES_FATAL_ERROR:
            if (job->phase == 0) {
                pc->prepared[job->statement] = 0;
            }

            if (job->error == NULL) {
                job->error = res;
                continue;
            }

            break;

        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
            if (job->phase > 0 && job->res == NULL) {
                job->res = res;
                continue;
            }

            break;

        default: /* PGRES_PIPELINE_ABORTED and the unexpected */
            break;
        }

        PQclear(res);
    }

    if (pc->state == NGX_PLATFORM_PG_READY
        && PQstatus(pc->pg) == CONNECTION_BAD)
    {
        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "connection lost");
    }
}


static void
ngx_platform_pg_complete(ngx_platform_pg_conn_t *pc,
    ngx_platform_pg_job_t *job)
{
    ngx_platform_pg_pool_t   *pool;
    ngx_platform_pg_query_t  *q;

    pool = pc->pool;

    ngx_queue_remove(&job->queue);
    pc->njobs--;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    if (pc->njobs) {
        /* the next query in the pipeline starts now */
        pc->timer.cancelable = 0;
        ngx_add_timer(&pc->timer,
                      pool->up->query_timeout + NGX_PLATFORM_PG_GRACE);

    }

    q = job->query;

    if (q) {
        q->job = NULL;

        if (job->error) {
            q->res = job->error;
            PQclear(job->res);

        } else if (job->res) {
            q->res = job->res;

        } else {
            q->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
            q->reason = "no result";
        }

    } else {
        PQclear(job->res);
        PQclear(job->error);
    }

    ngx_queue_insert_tail(&pool->free_jobs, &job->queue);

    ngx_platform_pg_gauges(pool);

    if (q) {
        ngx_platform_pg_finish(pool, q);
    }

    if (pc->state != NGX_PLATFORM_PG_READY) {
        return;
    }

    ngx_platform_pg_dispatch(pool);
}


/*
 * LISTEN: conns[0] of every worker's pool listens once connected, in the
 * same pipeline as its queries.  Notifications are read whenever that
 * socket is readable.  After a reconnect the channel is listened to anew
 * and the owner hears "listening" to catch up on what it may have missed.
 */

static void
ngx_platform_pg_listen_send(ngx_platform_pg_conn_t *pc)
{
    ngx_platform_pg_pool_t   *pool;
    ngx_platform_pg_query_t  *q;

    pool = pc->pool;
    q = &pool->listen;

    if (q->job) {
        /* still in flight on a connection that failed: never here */
        return;
    }

    ngx_memzero(q, sizeof(ngx_platform_pg_query_t));
    q->upstream = pool->up;
    q->statement = pool->up->listen - 1;
    q->handler = ngx_platform_pg_listened;
    q->data = pool;
    q->log = pool->log;
    q->start = ngx_current_msec;

    (void) ngx_platform_pg_send(pc, q);
}


static void
ngx_platform_pg_listened(ngx_platform_pg_query_t *q)
{
    ngx_platform_pg_pool_t      *pool;
    ngx_platform_pg_upstream_t  *up;

    pool = q->data;
    up = pool->up;

    if (q->res == NULL || PQresultStatus(q->res) != PGRES_COMMAND_OK) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "platform_pg \"%V\": LISTEN failed: %s", &up->name,
                      q->res ? PQresultErrorMessage(q->res)
                             : (q->reason ? q->reason : "no result"));
        PQclear(q->res);
        q->res = NULL;
        return;
    }

    PQclear(q->res);
    q->res = NULL;

    if (up->listening) {
        up->listening(up->notify_data);
    }
}


static void
ngx_platform_pg_notifications(ngx_platform_pg_conn_t *pc)
{
    PGnotify                    *n;
    ngx_platform_pg_upstream_t  *up;

    up = pc->pool->up;

    /* libpq parses notifications that arrive between results here */
    (void) PQisBusy(pc->pg);

    while (pc->state == NGX_PLATFORM_PG_READY
           && (n = PQnotifies(pc->pg)) != NULL)
    {
        up->notify(up->notify_data, n->relname, n->extra);
        PQfreemem(n);
    }
}


ngx_int_t
ngx_platform_pg_listen(ngx_conf_t *cf, ngx_platform_pg_upstream_t *up,
    ngx_str_t *channel, ngx_platform_pg_notify_pt notify,
    ngx_platform_pg_listening_pt listening, void *data)
{
    u_char     *p;
    ngx_int_t   n;
    ngx_str_t   sql;
    ngx_uint_t  i;

    if (up->listen) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_pg \"%V\" already has a listener",
                           &up->name);
        return NGX_ERROR;
    }

    if (channel->len == 0 || channel->len > 63) {
        goto invalid;
    }

    for (i = 0; i < channel->len; i++) {
        if (!(channel->data[i] == '_'
              || (channel->data[i] >= 'a' && channel->data[i] <= 'z')
              || (i && channel->data[i] >= '0' && channel->data[i] <= '9')))
        {
            goto invalid;
        }
    }

    sql.len = sizeof("LISTEN ") - 1 + channel->len;
    sql.data = ngx_pnalloc(cf->pool, sql.len);
    if (sql.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(sql.data, "LISTEN ", sizeof("LISTEN ") - 1);
    ngx_memcpy(p, channel->data, channel->len);

    n = ngx_platform_statement_add(cf, &sql);
    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    up->listen = n + 1;
    up->notify = notify;
    up->listening = listening;
    up->notify_data = data;

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid channel \"%V\": lowercase letters, digits "
                       "and \"_\", at most 63", channel);
    return NGX_ERROR;
}


/* report a query's outcome to its caller, counting it */

static void
ngx_platform_pg_finish(ngx_platform_pg_pool_t *pool,
    ngx_platform_pg_query_t *q)
{
    char                     *state;
    ngx_uint_t                cls;
    ngx_uint_t                i;
    ngx_msec_t                ms;
    ngx_platform_pg_stats_t  *st;

    st = pool->stats;
    ms = ngx_current_msec - q->start;

    st->queries++;
    st->duration_ms += ms;

    for (i = 0; i < NGX_PLATFORM_PG_BUCKETS; i++) {
        if (ms <= ngx_platform_pg_bucket_bounds[i]) {
            break;
        }
    }

    st->buckets[i]++;

    if (q->res && PQresultStatus(q->res) == PGRES_FATAL_ERROR) {
        state = PQresultErrorField(q->res, PG_DIAG_SQLSTATE);
        cls = ngx_platform_error_class(state ? state : "XX000");
        st->errors[cls]++;
    }

    /* the handler owns q->res; q itself may be gone when it returns */

    q->handler(q);
}


/* sending */


ngx_int_t
ngx_platform_pg_query(ngx_platform_pg_query_t *q)
{
    ngx_uint_t                   i;
    ngx_platform_pg_conn_t      *pc;
    ngx_platform_pg_pool_t      *pool;
    ngx_platform_pg_upstream_t  *up;

    up = q->upstream;
    pool = up->pool;

    q->res = NULL;
    q->status = 0;
    q->reason = NULL;
    q->job = NULL;
    q->queued = 0;
    q->start = ngx_current_msec;

    if (pool == NULL) {
        q->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        q->reason = "database pool is not running";
        return NGX_ERROR;
    }

    if (ngx_queue_empty(&pool->waiters)) {
        for ( ;; ) {
            pc = ngx_platform_pg_pick(pool);

            if (pc == NULL) {
                break;
            }

            if (ngx_platform_pg_send(pc, q) == NGX_OK) {
                return NGX_AGAIN;
            }
        }
    }

    if (ngx_platform_pg_alive(pool) == 0 && !ngx_exiting) {

        /* all down: try one now, unless one was tried a moment ago */

        for (i = 0; i < up->pool_size; i++) {
            pc = &pool->conns[i];

            if (pc->state == NGX_PLATFORM_PG_DOWN
                && ngx_current_msec - pc->last_attempt >= up->backoff_min)
            {
                if (pc->timer.timer_set) {
                    ngx_del_timer(&pc->timer);
                }

                ngx_platform_pg_connect(pc);
                break;
            }
        }
    }

    if (ngx_platform_pg_alive(pool) == 0) {
        pool->stats->rejected_down++;
        q->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        q->reason = "database unavailable";
        return NGX_ERROR;
    }

    if (pool->nwaiting >= up->queue_size) {
        pool->stats->rejected_full++;
        q->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        q->reason = "too many requests waiting for the database";
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&pool->waiters, &q->queue);
    q->queued = 1;
    pool->nwaiting++;

    ngx_memzero(&q->wait, sizeof(ngx_event_t));
    q->wait.handler = ngx_platform_pg_wait_handler;
    q->wait.data = q;
    q->wait.log = q->log;
    ngx_add_timer(&q->wait, up->queue_timeout);

    ngx_platform_pg_gauges(pool);

    return NGX_AGAIN;
}


void
ngx_platform_pg_abort(ngx_platform_pg_query_t *q)
{
    ngx_platform_pg_pool_t  *pool;

    /* also called for a query that was never started */

    if (q->queued) {
        pool = q->upstream->pool;

        ngx_platform_pg_unqueue(pool, q);

        if (pool) {
            ngx_platform_pg_gauges(pool);
        }
    }

    if (q->job) {
        ((ngx_platform_pg_job_t *) q->job)->query = NULL;
        q->job = NULL;
    }
}


static ngx_int_t
ngx_platform_pg_send(ngx_platform_pg_conn_t *pc, ngx_platform_pg_query_t *q)
{
    u_char                  name[32];
    ngx_str_t              *sql;
    ngx_queue_t            *lq;
    ngx_platform_pg_job_t  *job;
    ngx_platform_pg_pool_t *pool;

    pool = pc->pool;

    if (!ngx_queue_empty(&pool->free_jobs)) {
        lq = ngx_queue_head(&pool->free_jobs);
        ngx_queue_remove(lq);
        job = ngx_queue_data(lq, ngx_platform_pg_job_t, queue);

    } else {
        job = ngx_alloc(sizeof(ngx_platform_pg_job_t), pool->log);
        if (job == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_memzero(job, sizeof(ngx_platform_pg_job_t));
    job->statement = q->statement;
    job->phase = 1;

    ngx_platform_pg_statement_name(name, q->statement);

    if (!pc->prepared[q->statement]) {
        sql = &pool->statements[q->statement];

        if (PQsendPrepare(pc->pg, (char *) name, (char *) sql->data, 0, NULL)
            != 1)
        {
            goto failed;
        }

        /* later queries in this pipeline may use it right away */
        pc->prepared[q->statement] = 1;
        job->phase = 0;
    }

    if (PQsendQueryPrepared(pc->pg, (char *) name, q->nparams, q->values,
                            NULL, NULL, 0)
        != 1
        || PQpipelineSync(pc->pg) != 1)
    {
        goto failed;
    }

    job->query = q;
    q->job = job;

    ngx_queue_insert_tail(&pc->jobs, &job->queue);

    if (pc->njobs++ == 0) {
        pc->timer.cancelable = 0;
        ngx_add_timer(&pc->timer,
                      pool->up->query_timeout + NGX_PLATFORM_PG_GRACE);
    }

    if (ngx_platform_pg_flush(pc) != NGX_OK) {
        /* the caller hears of this query from our return value */
        job->query = NULL;
        q->job = NULL;

        ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "could not send");
        return NGX_DECLINED;
    }

    ngx_platform_pg_gauges(pool);

    return NGX_OK;

failed:

    ngx_queue_insert_tail(&pool->free_jobs, &job->queue);

    ngx_platform_pg_fail(pc, NGX_HTTP_SERVICE_UNAVAILABLE, "could not send");

    return NGX_DECLINED;
}


static ngx_int_t
ngx_platform_pg_flush(ngx_platform_pg_conn_t *pc)
{
    switch (PQflush(pc->pg)) {

    case 0:
        ngx_platform_pg_events(pc, 1, 0);
        return NGX_OK;

    case 1:
        ngx_platform_pg_events(pc, 1, 1);
        return NGX_OK;

    default:
        return NGX_ERROR;
    }
}


/* the ready connection with the fewest queries in flight and room for more */

static ngx_platform_pg_conn_t *
ngx_platform_pg_pick(ngx_platform_pg_pool_t *pool)
{
    ngx_uint_t               i;
    ngx_platform_pg_conn_t  *pc, *best;

    best = NULL;

    for (i = 0; i < pool->up->pool_size; i++) {
        pc = &pool->conns[i];

        if (pc->state != NGX_PLATFORM_PG_READY
            || pc->njobs >= pool->up->pipeline_depth)
        {
            continue;
        }

        if (pc->njobs == 0) {
            return pc;
        }

        if (best == NULL || pc->njobs < best->njobs) {
            best = pc;
        }
    }

    return best;
}


static ngx_uint_t
ngx_platform_pg_alive(ngx_platform_pg_pool_t *pool)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < pool->up->pool_size; i++) {
        if (pool->conns[i].state != NGX_PLATFORM_PG_DOWN) {
            n++;
        }
    }

    return n;
}


static void
ngx_platform_pg_dispatch(ngx_platform_pg_pool_t *pool)
{
    ngx_queue_t              *lq;
    ngx_platform_pg_conn_t   *pc;
    ngx_platform_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiters)) {

        pc = ngx_platform_pg_pick(pool);

        if (pc == NULL) {
            break;
        }

        lq = ngx_queue_head(&pool->waiters);
        q = ngx_queue_data(lq, ngx_platform_pg_query_t, queue);

        ngx_platform_pg_unqueue(pool, q);

        if (ngx_platform_pg_send(pc, q) != NGX_OK) {

            if (ngx_platform_pg_alive(pool) == 0) {
                ngx_platform_pg_reject(pool, q, "database unavailable");
                continue;
            }

            /* that connection failed; the query keeps its place */
            ngx_queue_insert_head(&pool->waiters, &q->queue);
            q->queued = 1;
            pool->nwaiting++;
            ngx_add_timer(&q->wait, pool->up->queue_timeout);
        }
    }

    ngx_platform_pg_gauges(pool);
}


static void
ngx_platform_pg_reject_waiters(ngx_platform_pg_pool_t *pool)
{
    ngx_queue_t              *lq;
    ngx_platform_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiters)) {
        lq = ngx_queue_head(&pool->waiters);
        q = ngx_queue_data(lq, ngx_platform_pg_query_t, queue);

        ngx_platform_pg_unqueue(pool, q);
        pool->stats->rejected_down++;

        ngx_platform_pg_reject(pool, q, "database unavailable");
    }
}


/* a query that waited and gets no connection: 503 */

static void
ngx_platform_pg_reject(ngx_platform_pg_pool_t *pool,
    ngx_platform_pg_query_t *q, const char *reason)
{
    q->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    q->reason = reason;

    ngx_platform_pg_gauges(pool);
    ngx_platform_pg_finish(pool, q);
}


/* take a query off the wait queue; pool is NULL after the worker's exit */

static void
ngx_platform_pg_unqueue(ngx_platform_pg_pool_t *pool,
    ngx_platform_pg_query_t *q)
{
    ngx_queue_remove(&q->queue);
    q->queued = 0;

    if (q->wait.timer_set) {
        ngx_del_timer(&q->wait);
    }

    if (pool) {
        pool->nwaiting--;
    }
}


static void
ngx_platform_pg_gauges(ngx_platform_pg_pool_t *pool)
{
    ngx_uint_t                i;
    ngx_platform_pg_conn_t   *pc;
    ngx_platform_pg_stats_t  *st;

    st = pool->stats;

    st->idle = 0;
    st->busy = 0;
    st->connecting = 0;
    st->down = 0;

    for (i = 0; i < pool->up->pool_size; i++) {
        pc = &pool->conns[i];

        switch (pc->state) {

        case NGX_PLATFORM_PG_READY:
            if (pc->njobs) {
                st->busy++;

            } else {
                st->idle++;
            }

            break;

        case NGX_PLATFORM_PG_CONNECTING:
            st->connecting++;
            break;

        default:
            st->down++;
        }
    }

    st->queued = pool->nwaiting;
}


static void
ngx_platform_pg_notice(void *arg, const char *message)
{
    ngx_platform_pg_conn_t  *pc = arg;

    size_t  len;

    len = ngx_strlen(message);

    while (len && (message[len - 1] == '\n' || message[len - 1] == ' ')) {
        len--;
    }

    ngx_log_error(NGX_LOG_NOTICE, pc->pool->log, 0,
                  "platform_pg \"%V\": %*s", &pc->pool->up->name,
                  len, message);
}


static void
ngx_platform_pg_statement_name(u_char *buf, ngx_uint_t n)
{
    *ngx_sprintf(buf, "ngx_platform_%ui", n) = '\0';
}


/* configuration: the entries of a platform_pg { ... } block */


char *
ngx_platform_pg_conf_entry(ngx_conf_t *cf, ngx_command_t *dummy, void *conf)
{
    ngx_platform_pg_upstream_t  *up = conf;

    ngx_int_t   n;
    ngx_str_t  *value, *name, s;
    ngx_msec_t  ms, *msp;

    value = cf->args->elts;
    name = &value[0];

#define ngx_platform_pg_args(n)                                              \
    if (cf->args->nelts != (n) + 1) {                                        \
        goto nargs;                                                          \
    }

    if (ngx_strcmp(name->data, "server") == 0) {
        ngx_platform_pg_args(1);

        if (up->conninfo.data) {
            goto duplicate;
        }

        up->conninfo = value[1];
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(name->data, "pool_size") == 0
        || ngx_strcmp(name->data, "pipeline_depth") == 0)
    {
        ngx_platform_pg_args(1);

        n = ngx_atoi(value[1].data, value[1].len);

        if (n < 1 || n > 1024) {
            goto invalid;
        }

        if (name->data[1] == 'o') {
            if (up->pool_size != NGX_CONF_UNSET_UINT) {
                goto duplicate;
            }

            up->pool_size = n;

        } else {
            if (up->pipeline_depth != NGX_CONF_UNSET_UINT) {
                goto duplicate;
            }

            up->pipeline_depth = n;
        }

        return NGX_CONF_OK;
    }

    if (ngx_strcmp(name->data, "queue") == 0) {
        if (cf->args->nelts != 2 && cf->args->nelts != 3) {
            goto nargs;
        }

        if (up->queue_size != NGX_CONF_UNSET_UINT) {
            goto duplicate;
        }

        n = ngx_atoi(value[1].data, value[1].len);

        if (n < 0 || n > 1000000) {
            goto invalid;
        }

        up->queue_size = n;

        if (cf->args->nelts == 3) {
            if (ngx_strncmp(value[2].data, "timeout=", 8) != 0) {
                s = value[2];
                goto invalid_value;
            }

            s.data = value[2].data + 8;
            s.len = value[2].len - 8;

            ms = ngx_parse_time(&s, 0);

            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                s = value[2];
                goto invalid_value;
            }

            up->queue_timeout = ms;
        }

        return NGX_CONF_OK;
    }

    msp = NULL;

    if (ngx_strcmp(name->data, "connect_timeout") == 0) {
        msp = &up->connect_timeout;

    } else if (ngx_strcmp(name->data, "query_timeout") == 0) {
        msp = &up->query_timeout;
    }

    if (msp) {
        ngx_platform_pg_args(1);

        if (*msp != NGX_CONF_UNSET_MSEC) {
            goto duplicate;
        }

        ms = ngx_parse_time(&value[1], 0);

        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            goto invalid;
        }

        *msp = ms;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(name->data, "reconnect_backoff") == 0) {
        ngx_platform_pg_args(2);

        if (up->backoff_min != NGX_CONF_UNSET_MSEC) {
            goto duplicate;
        }

        up->backoff_min = ngx_parse_time(&value[1], 0);
        up->backoff_max = ngx_parse_time(&value[2], 0);

        if (up->backoff_min == (ngx_msec_t) NGX_ERROR || up->backoff_min == 0
            || up->backoff_max == (ngx_msec_t) NGX_ERROR
            || up->backoff_max < up->backoff_min)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"reconnect_backoff\" in "
                               "platform_pg \"%V\": need 0 < min <= max",
                               &up->name);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

#undef ngx_platform_pg_args

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown directive \"%V\" in platform_pg \"%V\"",
                       name, &up->name);
    return NGX_CONF_ERROR;

nargs:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid number of arguments in \"%V\" "
                       "in platform_pg \"%V\"", name, &up->name);
    return NGX_CONF_ERROR;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" is duplicate in platform_pg \"%V\"",
                       name, &up->name);
    return NGX_CONF_ERROR;

invalid:

    s = value[1];

invalid_value:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\" of platform_pg \"%V\"",
                       &s, name, &up->name);
    return NGX_CONF_ERROR;
}


/* defaults, and the conninfo checked and turned into keyword arrays */

char *
ngx_platform_pg_conf_done(ngx_conf_t *cf, ngx_platform_pg_upstream_t *up)
{
    char               *err, *p, *host, *end;
    u_char             *conninfo, *options, one[64];
    size_t              len;
    ngx_uint_t          n, i, has_hostaddr, has_appname, has_encoding;
    const char         *opt_options;
    struct in6_addr     addr6;
    struct in_addr      addr;
    PQconninfoOption   *opts, *o;

    if (up->conninfo.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_pg \"%V\" has no \"server\"", &up->name);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(up->pool_size, 4);
    ngx_conf_init_uint_value(up->pipeline_depth, 8);
    ngx_conf_init_uint_value(up->queue_size, 256);
    ngx_conf_init_msec_value(up->queue_timeout, 5000);
    ngx_conf_init_msec_value(up->connect_timeout, 5000);
    ngx_conf_init_msec_value(up->query_timeout, 30000);

    if (up->backoff_min == NGX_CONF_UNSET_MSEC) {
        up->backoff_min = 100;
        up->backoff_max = 10000;
    }

    conninfo = ngx_pnalloc(cf->pool, up->conninfo.len + 1);
    if (conninfo == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_cpymem(conninfo, up->conninfo.data, up->conninfo.len) = '\0';

    err = NULL;
    opts = PQconninfoParse((char *) conninfo, &err);

    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"server\" in platform_pg \"%V\": %s",
                           &up->name, err ? err : "out of memory");
        if (err) {
            PQfreemem(err);
        }

        return NGX_CONF_ERROR;
    }

    n = 0;
    host = NULL;
    has_hostaddr = 0;
    has_appname = 0;
    has_encoding = 0;
    opt_options = NULL;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        n++;

        if (ngx_strcmp(o->keyword, "service") == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "platform_pg \"%V\": \"service\" is not "
                               "supported, write the parameters in "
                               "\"server\"", &up->name);
            goto failed;
        }

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            has_hostaddr = (o->val[0] != '\0');

        } else if (ngx_strcmp(o->keyword, "application_name") == 0) {
            has_appname = 1;

        } else if (ngx_strcmp(o->keyword, "client_encoding") == 0) {
            has_encoding = 1;

        } else if (ngx_strcmp(o->keyword, "options") == 0) {
            opt_options = o->val;
        }
    }

    /* a worker never resolves names: sockets or numeric addresses only */

    if (host && !has_hostaddr) {
        p = host;

        while (*p) {
            end = p;
            while (*end && *end != ',') {
                end++;
            }

            len = end - p;

            if (len && *p != '/' && *p != '@') {
                if (len >= sizeof(one)) {
                    goto dns;
                }

                ngx_memcpy(one, p, len);
                one[len] = '\0';

                if (inet_pton(AF_INET, (char *) one, &addr) != 1
                    && inet_pton(AF_INET6, (char *) one, &addr6) != 1)
                {
                    goto dns;
                }
            }

            p = *end ? end + 1 : end;
        }
    }

    up->keywords = ngx_pcalloc(cf->pool, (n + 4) * sizeof(char *));
    up->values = ngx_pcalloc(cf->pool, (n + 4) * sizeof(char *));

    if (up->keywords == NULL || up->values == NULL) {
        goto failed;
    }

    /* statement_timeout makes the server cancel a query that runs too long */

    len = sizeof("-c statement_timeout=") - 1 + NGX_INT_T_LEN + 1
          + (opt_options ? ngx_strlen(opt_options) : 0) + 1;

    options = ngx_pnalloc(cf->pool, len);
    if (options == NULL) {
        goto failed;
    }

    *ngx_sprintf(options, "-c statement_timeout=%M%s%s", up->query_timeout,
                 opt_options ? " " : "", opt_options ? opt_options : "")
        = '\0';

    i = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || ngx_strcmp(o->keyword, "options") == 0) {
            continue;
        }

        up->keywords[i] = ngx_platform_pg_strdup(cf->pool, o->keyword);
        up->values[i] = ngx_platform_pg_strdup(cf->pool, o->val);

        if (up->keywords[i] == NULL || up->values[i] == NULL) {
            goto failed;
        }

        i++;
    }

    up->keywords[i] = "options";
    up->values[i++] = (char *) options;

    if (!has_appname) {
        up->keywords[i] = "application_name";
        up->values[i++] = "nginx-platform";
    }

    if (!has_encoding) {
        up->keywords[i] = "client_encoding";
        up->values[i++] = "UTF8";
    }

    up->keywords[i] = NULL;
    up->values[i] = NULL;

    PQconninfoFree(opts);

    return NGX_CONF_OK;

dns:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"server\" in platform_pg \"%V\": host "
                       "\"%s\" is a name; use a socket directory or a numeric "
                       "address (or hostaddr=) so that workers never resolve "
                       "names",
                       &up->name, host);

failed:

    PQconninfoFree(opts);

    return NGX_CONF_ERROR;
}


static char *
ngx_platform_pg_strdup(ngx_pool_t *pool, const char *s)
{
    size_t   len;
    u_char  *p;

    len = ngx_strlen(s);

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len + 1);

    return (char *) p;
}
