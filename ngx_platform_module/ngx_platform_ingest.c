
/*
 * Lift telemetry ingest: platform_ingest.
 *
 * A lift POSTs readings (MessagePack or JSON, ngx_platform_reading.c) with
 * "Authorization: Bearer <device token>".  The token's MAC is checked here
 * with the platform_device_key (no database round trip); its generation is
 * checked by lifts.ingest() in the statement that stores the readings.
 *
 * Batching: each worker keeps a FIFO of requests whose readings are
 * decoded.  While fewer than platform_ingest_flights statements are in
 * flight, the waiting requests are sent at once, as many whole requests as
 * fit in platform_ingest_batch readings, in one call of lifts.ingest() with
 * one array per column.  Under load the queue fills while statements run,
 * so batches grow by themselves; at low load a reading waits for nothing.
 * A request is answered when the statement holding its readings has
 * committed (the call is one implicit transaction), or with 503 when the
 * outcome is unknown (the lift resends; duplicates are counted, not
 * stored).  More than platform_ingest_queue readings waiting or in flight:
 * 503 + Retry-After at once.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"
#include "ngx_platform_reading.h"

#include <sodium.h>


#define NGX_PLATFORM_INGEST_NCOLS   16
#define NGX_PLATFORM_TOKEN_PREFIX   "lt1."
#define NGX_PLATFORM_TOKEN_BYTES    (12 + crypto_auth_hmacsha256_BYTES)
#define NGX_PLATFORM_INGEST_ERRORS  50

#define NGX_PLATFORM_INGEST_SQL                                               \
    "SELECT lifts.ingest($1::bigint[], $2::int[], $3::bigint[], "            \
    "$4::bigint[], $5::text[], $6::int[], $7::int[], $8::text[], "           \
    "$9::int[], $10::real[], $11::text[], $12::bigint[], $13::bigint[], "    \
    "$14::bigint[], $15::bigint[], $16::bigint[])"


typedef struct ngx_platform_ingest_batcher_s  ngx_platform_ingest_batcher_t;


typedef struct {
    ngx_str_t                        key;          /* 32 bytes */
    ngx_str_t                        key_hex;
} ngx_platform_ingest_main_conf_t;


typedef struct {
    ngx_flag_t                       enable;
    ngx_str_t                        pg_name;
    ngx_platform_pg_upstream_t      *upstream;
    ngx_uint_t                       statement;
    size_t                           body_max_size;
    ngx_uint_t                       max_readings;
    ngx_uint_t                       batch;
    ngx_uint_t                       queue;
    ngx_uint_t                       flights;
    ngx_msec_t                       past;
    ngx_msec_t                       future;
    ngx_platform_ingest_batcher_t   *batcher;      /* this worker's */
} ngx_platform_ingest_loc_conf_t;


struct ngx_platform_ingest_batcher_s {
    ngx_queue_t                      waiting;
    ngx_uint_t                       nwaiting;     /* readings */
    ngx_uint_t                       ninflight;    /* readings */
    ngx_uint_t                       flights;
    ngx_platform_ingest_loc_conf_t  *conf;
};


typedef struct {
    ngx_http_request_t              *request;
    ngx_platform_ingest_batcher_t   *batcher;
    int64_t                          lift;
    uint32_t                         generation;
    ngx_platform_readings_t          readings;
    ngx_uint_t                       nsend;        /* valid readings */
    ngx_queue_t                      queue;
    void                           **slot;         /* in its flight */
    ngx_uint_t                       accepted;
    ngx_uint_t                       duplicates;
    unsigned                         waiting:1;
    unsigned                         in_flight:1;
    unsigned                         revoked:1;
} ngx_platform_ingest_ctx_t;


typedef struct {
    ngx_pool_t                      *pool;
    ngx_platform_ingest_batcher_t   *batcher;
    ngx_platform_pg_query_t          query;
    ngx_platform_ingest_ctx_t      **ctxs;
    ngx_uint_t                       nctxs;
    ngx_uint_t                       nreadings;
} ngx_platform_ingest_flight_t;


static ngx_int_t ngx_platform_ingest_handler(ngx_http_request_t *r);
static void ngx_platform_ingest_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_ingest_token(ngx_http_request_t *r,
    ngx_platform_ingest_ctx_t *ctx);
static void ngx_platform_ingest_flush(ngx_platform_ingest_batcher_t *b,
    ngx_log_t *log);
static void ngx_platform_ingest_done(ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_ingest_respond(ngx_http_request_t *r,
    ngx_platform_ingest_ctx_t *ctx);
static void ngx_platform_ingest_cleanup(void *data);
static void *ngx_platform_ingest_alloc(void *data, size_t size);

static ngx_int_t ngx_platform_ingest_key_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_platform_ingest_add_variables(ngx_conf_t *cf);
static void *ngx_platform_ingest_create_main_conf(ngx_conf_t *cf);
static void *ngx_platform_ingest_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_ingest_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_ingest(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_device_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_ingest_window(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_platform_ingest_commands[] = {

    { ngx_string("platform_device_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_platform_device_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_ingest"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_platform_ingest,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_ingest_body_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ingest_loc_conf_t, body_max_size),
      NULL },

    { ngx_string("platform_ingest_max_readings"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ingest_loc_conf_t, max_readings),
      NULL },

    { ngx_string("platform_ingest_batch"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ingest_loc_conf_t, batch),
      NULL },

    { ngx_string("platform_ingest_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ingest_loc_conf_t, queue),
      NULL },

    { ngx_string("platform_ingest_flights"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ingest_loc_conf_t, flights),
      NULL },

    { ngx_string("platform_ingest_window"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_platform_ingest_window,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_ingest_module_ctx = {
    ngx_platform_ingest_add_variables,     /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_platform_ingest_create_main_conf,  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_ingest_create_loc_conf,   /* create location configuration */
    ngx_platform_ingest_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_platform_ingest_module = {
    NGX_MODULE_V1,
    &ngx_platform_ingest_module_ctx,       /* module context */
    ngx_platform_ingest_commands,          /* module directives */
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


static ngx_http_variable_t  ngx_platform_ingest_vars[] = {

    { ngx_string("platform_device_key"), NULL,
      ngx_platform_ingest_key_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_platform_ingest_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                       *type;
    ngx_pool_cleanup_t              *cln;
    ngx_platform_ingest_ctx_t       *ctx;
    ngx_platform_ingest_loc_conf_t  *ilcf;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_platform_ingest_module);

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return ngx_platform_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed", NULL);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_ingest_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;

    if (ngx_platform_ingest_token(r, ctx) != NGX_OK) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return ngx_platform_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "invalid_token",
                                       "a valid device token is needed");
    }

    type = r->headers_in.content_type ? &r->headers_in.content_type->value
                                      : NULL;

    if (type == NULL
        || !((type->len >= 19
              && ngx_strncasecmp(type->data, (u_char *) "application/msgpack",
                                 19) == 0
              && (type->len == 19 || type->data[19] == ';'))
             || (type->len >= 16
                 && ngx_strncasecmp(type->data, (u_char *) "application/json",
                                    16) == 0
                 && (type->len == 16 || type->data[16] == ';'))))
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return ngx_platform_send_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                  "unsupported_media_type",
                  "send application/msgpack or application/json");
    }

    if (r->headers_in.content_length_n > (off_t) ilcf->body_max_size) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return ngx_platform_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body_too_large", NULL);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_platform_ingest_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_platform_ingest_module);

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_platform_ingest_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* "Bearer lt1.<base64url of lift, generation, MAC>" */
static ngx_int_t
ngx_platform_ingest_token(ngx_http_request_t *r, ngx_platform_ingest_ctx_t *ctx)
{
    u_char                           *p;
    ngx_str_t                         v, src, dst;
    ngx_uint_t                        i;
    crypto_auth_hmacsha256_state      st;
    ngx_platform_ingest_main_conf_t  *imcf;
    u_char                            raw[NGX_PLATFORM_TOKEN_BYTES + 4];
    u_char                            mac[crypto_auth_hmacsha256_BYTES];

    imcf = ngx_http_get_module_main_conf(r, ngx_platform_ingest_module);

    if (r->headers_in.authorization == NULL || imcf->key.len == 0) {
        return NGX_DECLINED;
    }

    v = r->headers_in.authorization->value;

    if (v.len < 7 || ngx_strncasecmp(v.data, (u_char *) "Bearer ", 7) != 0) {
        return NGX_DECLINED;
    }

    src.data = v.data + 7;
    src.len = v.len - 7;

    if (src.len < sizeof(NGX_PLATFORM_TOKEN_PREFIX) - 1
        || ngx_strncmp(src.data, NGX_PLATFORM_TOKEN_PREFIX,
                       sizeof(NGX_PLATFORM_TOKEN_PREFIX) - 1) != 0
        || ngx_base64_decoded_length(src.len - 4) > sizeof(raw))
    {
        return NGX_DECLINED;
    }

    src.data += 4;
    src.len -= 4;
    dst.data = raw;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK
        || dst.len != NGX_PLATFORM_TOKEN_BYTES)
    {
        return NGX_DECLINED;
    }

    crypto_auth_hmacsha256_init(&st, imcf->key.data, imcf->key.len);
    crypto_auth_hmacsha256_update(&st, (u_char *) "lift-token-v1", 13);
    crypto_auth_hmacsha256_update(&st, raw, 12);
    crypto_auth_hmacsha256_final(&st, mac);

    if (crypto_verify_32(mac, raw + 12) != 0) {
        return NGX_DECLINED;
    }

    ctx->lift = 0;
    p = raw;

    for (i = 0; i < 8; i++) {
        ctx->lift = (int64_t) (((uint64_t) ctx->lift << 8) | *p++);
    }

    ctx->generation = ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
                      | ((uint32_t) p[2] << 8) | p[3];

    return (ctx->lift > 0) ? NGX_OK : NGX_DECLINED;
}


static void
ngx_platform_ingest_body_handler(ngx_http_request_t *r)
{
    int                              rc, json;
    size_t                           len;
    u_char                          *data, *p;
    ngx_buf_t                       *buf;
    ngx_chain_t                     *cl;
    ngx_time_t                      *tp;
    ngx_platform_ingest_ctx_t       *ctx;
    ngx_platform_reading_limits_t    limits;
    ngx_platform_ingest_batcher_t   *b;
    ngx_platform_ingest_loc_conf_t  *ilcf;

    ctx = ngx_http_get_module_ctx(r, ngx_platform_ingest_module);
    ilcf = ngx_http_get_module_loc_conf(r, ngx_platform_ingest_module);

    /* the body into one buffer (memory or nginx's temporary file) */

    len = 0;

    if (r->request_body && r->request_body->bufs) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            buf = cl->buf;
            len += buf->in_file ? (size_t) (buf->file_last - buf->file_pos)
                                : (size_t) (buf->last - buf->pos);
        }
    }

    if (len > ilcf->body_max_size) {
        ngx_http_finalize_request(r,
            ngx_platform_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "body_too_large", NULL));
        return;
    }

    data = ngx_pnalloc(r->pool, len + 1);
    if (data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = data;

    if (len) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            buf = cl->buf;

            if (buf->in_file) {
                ssize_t  n;

                n = ngx_read_file(buf->file, p, buf->file_last - buf->file_pos,
                                  buf->file_pos);
                if (n != buf->file_last - buf->file_pos) {
                    ngx_http_finalize_request(r,
                                              NGX_HTTP_INTERNAL_SERVER_ERROR);
                    return;
                }
                p += n;

            } else {
                p = ngx_cpymem(p, buf->pos, buf->last - buf->pos);
            }
        }
    }

    json = (r->headers_in.content_type->value.len >= 16
            && ngx_strncasecmp(r->headers_in.content_type->value.data,
                               (u_char *) "application/json", 16) == 0);

    tp = ngx_timeofday();

    limits.max_readings = ilcf->max_readings;
    limits.max_depth = 4;
    limits.now_ms = (int64_t) tp->sec * 1000 + tp->msec;
    limits.max_past_ms = ilcf->past;
    limits.max_future_ms = ilcf->future;

    /* readings: as many as the body holds, allocated by the decoder */

    ctx->readings.readings = NULL;
    ctx->readings.alloc = ngx_platform_ingest_alloc;
    ctx->readings.alloc_data = r->pool;
    ctx->readings.errors = ngx_palloc(r->pool, NGX_PLATFORM_INGEST_ERRORS
                                      * sizeof(ngx_platform_reading_error_t));
    ctx->readings.max_errors = NGX_PLATFORM_INGEST_ERRORS;

    if (ctx->readings.errors == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_platform_readings_decode(data, len, json, &limits,
                                      &ctx->readings);

    switch (rc) {

    case NGX_PLATFORM_READINGS_OK:
        break;

    case NGX_PLATFORM_READINGS_TOO_MANY:
        ngx_http_finalize_request(r,
            ngx_platform_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "too_many_readings",
                                    "too many readings in one request "
                                    "(platform_ingest_max_readings)"));
        return;

    case NGX_PLATFORM_READINGS_MALFORMED:
        ngx_http_finalize_request(r,
            ngx_platform_send_error(r, NGX_HTTP_BAD_REQUEST, "malformed",
                                    ctx->readings.reason));
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->nsend = ctx->readings.nvalid;

    if (ctx->nsend == 0) {
        ngx_http_finalize_request(r, ngx_platform_ingest_respond(r, ctx));
        return;
    }

    b = ilcf->batcher;

    if (b == NULL) {
        b = ngx_pcalloc(ngx_cycle->pool, sizeof(ngx_platform_ingest_batcher_t));
        if (b == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_queue_init(&b->waiting);
        b->conf = ilcf;
        ilcf->batcher = b;
    }

    if (b->nwaiting + b->ninflight + ctx->nsend > ilcf->queue) {
        ngx_http_finalize_request(r,
            ngx_platform_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "overloaded",
                                    "too many readings waiting, "
                                    "try again shortly"));
        return;
    }

    ctx->batcher = b;
    ctx->waiting = 1;
    ngx_queue_insert_tail(&b->waiting, &ctx->queue);
    b->nwaiting += ctx->nsend;

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    r->main->count++;

    ngx_http_finalize_request(r, NGX_DONE);

    if (b->flights < ilcf->flights) {
        ngx_platform_ingest_flush(b, r->connection->log);
    }
}


/* appends one array element; NULL when absent */
#define ngx_platform_ingest_elt(p, first, present, fmt, value)                \
    do {                                                                      \
        if (!(first)) {                                                       \
            *(p)++ = ',';                                                     \
        }                                                                     \
        if (present) {                                                        \
            (p) = ngx_sprintf((p), fmt, value);                               \
        } else {                                                              \
            (p) = ngx_cpymem((p), "NULL", 4);                                 \
        }                                                                     \
    } while (0)


static void
ngx_platform_ingest_flush(ngx_platform_ingest_batcher_t *b, ngx_log_t *log)
{
    u_char                         *col[NGX_PLATFORM_INGEST_NCOLS];
    size_t                          n, i, j, k, first;
    ngx_pool_t                     *pool;
    ngx_queue_t                    *qe;
    ngx_platform_reading_t         *rd;
    ngx_platform_pg_query_t        *q;
    ngx_platform_ingest_ctx_t      *ctx;
    ngx_platform_ingest_flight_t   *f;

    if (ngx_queue_empty(&b->waiting)) {
        return;
    }

    /* whole requests, up to platform_ingest_batch readings (at least one) */

    n = 0;
    k = 0;

    for (qe = ngx_queue_head(&b->waiting);
         qe != ngx_queue_sentinel(&b->waiting);
         qe = ngx_queue_next(qe))
    {
        ctx = ngx_queue_data(qe, ngx_platform_ingest_ctx_t, queue);

        if (k && n + ctx->nsend > b->conf->batch) {
            break;
        }

        n += ctx->nsend;
        k++;
    }

    pool = ngx_create_pool(4096 + n * 200, log);
    if (pool == NULL) {
        return;
    }

    f = ngx_pcalloc(pool, sizeof(ngx_platform_ingest_flight_t));
    if (f == NULL) {
        goto failed;
    }

    f->pool = pool;
    f->batcher = b;
    f->nreadings = n;
    f->ctxs = ngx_palloc(pool, k * sizeof(ngx_platform_ingest_ctx_t *));

    for (i = 0; i < NGX_PLATFORM_INGEST_NCOLS; i++) {
        /* the widest element: 20 digits, or 32 characters quoted, a comma */
        col[i] = ngx_pnalloc(pool, 3 + n * (NGX_PLATFORM_FAULT_CODE_MAX + 4));
        if (col[i] == NULL) {
            goto failed;
        }
    }

    if (f->ctxs == NULL) {
        goto failed;
    }

    q = &f->query;
    q->values = ngx_pcalloc(pool, NGX_PLATFORM_INGEST_NCOLS * sizeof(char *));
    if (q->values == NULL) {
        goto failed;
    }

    for (i = 0; i < NGX_PLATFORM_INGEST_NCOLS; i++) {
        q->values[i] = (char *) col[i];
        *col[i]++ = '{';
    }

    first = 1;

    while (f->nctxs < k) {
        qe = ngx_queue_head(&b->waiting);
        ngx_queue_remove(qe);

        ctx = ngx_queue_data(qe, ngx_platform_ingest_ctx_t, queue);
        ctx->waiting = 0;
        ctx->in_flight = 1;
        b->nwaiting -= ctx->nsend;

        ctx->slot = (void **) &f->ctxs[f->nctxs];
        f->ctxs[f->nctxs++] = ctx;

        for (i = 0; i < ctx->readings.nreadings; i++) {
            rd = &ctx->readings.readings[i];

            if (!rd->valid) {
                continue;
            }

            ngx_platform_ingest_elt(col[0], first, 1, "%L", ctx->lift);
            ngx_platform_ingest_elt(col[1], first, 1, "%uD", ctx->generation);
            ngx_platform_ingest_elt(col[2], first, 1, "%L", rd->seq);
            ngx_platform_ingest_elt(col[3], first, 1, "%L", rd->ts_ms);
            ngx_platform_ingest_elt(col[4], first, 1, "%s",
                                ngx_platform_reading_kind_name(rd->kind));
            ngx_platform_ingest_elt(col[5], first,
                                rd->present & NGX_PLATFORM_R_FLOOR_FROM,
                                "%D", rd->floor_from);
            ngx_platform_ingest_elt(col[6], first,
                                rd->present & NGX_PLATFORM_R_FLOOR_TO,
                                "%D", rd->floor_to);
            ngx_platform_ingest_elt(col[7], first,
                                rd->present & NGX_PLATFORM_R_DIRECTION,
                                "%s",
                                ngx_platform_reading_direction_name(
                                    rd->direction));
            ngx_platform_ingest_elt(col[8], first,
                                rd->present & NGX_PLATFORM_R_LOAD,
                                "%D", rd->load);
            ngx_platform_ingest_elt(col[9], first,
                                rd->present & NGX_PLATFORM_R_TEMPERATURE,
                                "%.3f", rd->temperature);
            /* fault codes hold only [A-Za-z0-9_.:-]: no quoting needed,
             * but "NULL" itself must be quoted */
            if (!first) {
                *col[10]++ = ',';
            }
            if (rd->present & NGX_PLATFORM_R_FAULT_CODE) {
                *col[10]++ = '"';
                col[10] = ngx_cpymem(col[10], rd->fault_code,
                                     rd->fault_code_len);
                *col[10]++ = '"';
            } else {
                col[10] = ngx_cpymem(col[10], "NULL", 4);
            }

            for (j = 0; j < NGX_PLATFORM_COUNTERS; j++) {
                ngx_platform_ingest_elt(col[11 + j], first,
                                        rd->present
                                        & (NGX_PLATFORM_R_TRIPS << j),
                                        "%L", rd->counters[j]);
            }

            first = 0;
        }
    }

    for (i = 0; i < NGX_PLATFORM_INGEST_NCOLS; i++) {
        *col[i]++ = '}';
        *col[i] = '\0';
    }

    f->nreadings = 0;
    for (i = 0; i < f->nctxs; i++) {
        f->nreadings += f->ctxs[i]->nsend;
    }

    b->ninflight += f->nreadings;
    b->flights++;

    q->upstream = b->conf->upstream;
    q->statement = b->conf->statement;
    q->nparams = NGX_PLATFORM_INGEST_NCOLS;
    q->handler = ngx_platform_ingest_done;
    q->data = f;
    q->log = ngx_cycle->log;

    if (ngx_platform_pg_query(q) == NGX_AGAIN) {
        return;
    }

    /* refused at once (pool down or full): q->status */

    q->res = NULL;
    ngx_platform_ingest_done(q);
    return;

failed:

    ngx_destroy_pool(pool);
}


static void
ngx_platform_ingest_done(ngx_platform_pg_query_t *q)
{
    char                            *s;
    size_t                           len, pos, i, j;
    ngx_int_t                        rc;
    ngx_uint_t                       status;
    ngx_connection_t                *c;
    ngx_http_request_t              *r;
    ngx_platform_ingest_ctx_t       *ctx;
    ngx_platform_ingest_flight_t    *f;
    ngx_platform_ingest_batcher_t   *b;

    f = q->data;
    b = f->batcher;

    b->flights--;
    b->ninflight -= f->nreadings;

    s = NULL;
    len = 0;
    status = 0;

    if (q->res && PQresultStatus(q->res) == PGRES_TUPLES_OK
        && PQntuples(q->res) == 1)
    {
        s = PQgetvalue(q->res, 0, 0);
        len = ngx_strlen(s);

        if (len != f->nreadings) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "platform_ingest: %uz outcomes for %uz readings",
                          len, f->nreadings);
            s = NULL;
            status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (q->res) {
        s = PQresultErrorField(q->res, PG_DIAG_SQLSTATE);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "platform_ingest: %s", PQresultErrorMessage(q->res));
        status = s ? ngx_platform_sqlstate_status(s)
                   : NGX_HTTP_INTERNAL_SERVER_ERROR;
        s = NULL;

    } else {
        status = q->status ? q->status : NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    pos = 0;

    for (i = 0; i < f->nctxs; i++) {
        ctx = f->ctxs[i];

        if (ctx == NULL) {
            /* the client went away; its readings were sent all the same */
            continue;
        }

        if (s) {
            for (j = 0; j < ctx->nsend; j++) {
                switch (s[pos + j]) {
                case 'a': ctx->accepted++; break;
                case 'd': ctx->duplicates++; break;
                default: ctx->revoked = 1;
                }
            }
        }

        pos += ctx->nsend;

        ctx->in_flight = 0;
        r = ctx->request;
        c = r->connection;

        if (s == NULL) {
            /*
             * The database away, busy or too slow, or a deadlock with
             * another batch holding the same reading (409): the lift sends
             * again.  Anything else is our bug (logged above): 500, which
             * a lift also retries later.
             */
            if (status == NGX_HTTP_SERVICE_UNAVAILABLE
                || status == NGX_HTTP_GATEWAY_TIME_OUT
                || status == NGX_HTTP_CONFLICT)
            {
                rc = ngx_platform_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                         "unavailable",
                         "the readings may not be stored, send them again");

            } else {
                rc = ngx_platform_send_error(r,
                                             NGX_HTTP_INTERNAL_SERVER_ERROR,
                                             "internal", NULL);
            }

        } else {
            rc = ngx_platform_ingest_respond(r, ctx);
        }

        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }

    if (q->res) {
        PQclear(q->res);
    }

    ngx_destroy_pool(f->pool);

    if (b->flights < b->conf->flights) {
        ngx_platform_ingest_flush(b, ngx_cycle->log);
    }
}


static ngx_int_t
ngx_platform_ingest_respond(ngx_http_request_t *r,
    ngx_platform_ingest_ctx_t *ctx)
{
    u_char                        *p;
    size_t                         len, i;
    ngx_buf_t                     *b;
    ngx_uint_t                     status;
    ngx_platform_reading_error_t  *e;

    if (ctx->revoked) {
        return ngx_platform_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "invalid_token",
                                       "the device token was revoked");
    }

    len = sizeof("{\"accepted\":,\"duplicates\":,\"invalid\":,\"errors\":[]}")
          + 3 * NGX_INT_T_LEN;

    for (i = 0; i < ctx->readings.nerrors; i++) {
        e = &ctx->readings.errors[i];
        len += sizeof("{\"index\":,\"field\":\"\",\"reason\":\"\"},")
               + NGX_SIZE_T_LEN + ngx_strlen(e->field)
               + 2 * ngx_strlen(e->reason);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(b->last, "{\"accepted\":%ui,\"duplicates\":%ui,"
                    "\"invalid\":%uz,\"errors\":[",
                    ctx->accepted, ctx->duplicates, ctx->readings.ninvalid);

    for (i = 0; i < ctx->readings.nerrors; i++) {
        e = &ctx->readings.errors[i];
        p = ngx_sprintf(p, "%s{\"index\":%uz,\"field\":\"%s\",\"reason\":\"",
                        i ? "," : "", e->index, e->field);
        p = (u_char *) ngx_escape_json(p, (u_char *) e->reason,
                                       ngx_strlen(e->reason));
        p = ngx_cpymem(p, "\"}", 2);
    }

    b->last = ngx_cpymem(p, "]}", 2);

    status = (ctx->readings.nvalid == 0) ? NGX_HTTP_BAD_REQUEST : NGX_HTTP_OK;

    return ngx_platform_send_body(r, status, b);
}


static void *
ngx_platform_ingest_alloc(void *data, size_t size)
{
    return ngx_palloc(data, size);
}


static void
ngx_platform_ingest_cleanup(void *data)
{
    ngx_platform_ingest_ctx_t  *ctx = data;

    if (ctx->waiting) {
        ngx_queue_remove(&ctx->queue);
        ctx->batcher->nwaiting -= ctx->nsend;
        ctx->waiting = 0;
        return;
    }

    if (ctx->in_flight) {
        /* the flight answers the others; the readings are stored anyway */
        *ctx->slot = NULL;
        ctx->in_flight = 0;
    }
}


/* $platform_device_key: the key in hex, for api.device_token() */
static ngx_int_t
ngx_platform_ingest_key_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_platform_ingest_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_platform_ingest_module);

    if (imcf->key_hex.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = imcf->key_hex.data;
    v->len = imcf->key_hex.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_ingest_add_variables(ngx_conf_t *cf)
{
    return ngx_platform_add_variables(cf, ngx_platform_ingest_vars);
}


static void *
ngx_platform_ingest_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_platform_ingest_main_conf_t));
}


static void *
ngx_platform_ingest_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_ingest_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_ingest_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->body_max_size = NGX_CONF_UNSET_SIZE;
    conf->max_readings = NGX_CONF_UNSET_UINT;
    conf->batch = NGX_CONF_UNSET_UINT;
    conf->queue = NGX_CONF_UNSET_UINT;
    conf->flights = NGX_CONF_UNSET_UINT;
    conf->past = NGX_CONF_UNSET_MSEC;
    conf->future = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_platform_ingest_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_ingest_loc_conf_t  *prev = parent;
    ngx_platform_ingest_loc_conf_t  *conf = child;

    ngx_platform_ingest_main_conf_t  *imcf;

    ngx_conf_merge_size_value(conf->body_max_size, prev->body_max_size,
                              1024 * 1024);
    ngx_conf_merge_uint_value(conf->max_readings, prev->max_readings, 1000);
    ngx_conf_merge_uint_value(conf->batch, prev->batch, 2000);
    ngx_conf_merge_uint_value(conf->queue, prev->queue, 20000);
    ngx_conf_merge_uint_value(conf->flights, prev->flights, 2);
    ngx_conf_merge_msec_value(conf->past, prev->past,
                              (ngx_msec_t) 30 * 86400 * 1000);
    ngx_conf_merge_msec_value(conf->future, prev->future, 300 * 1000);

    if (conf->max_readings == 0 || conf->batch == 0 || conf->flights == 0
        || conf->queue < conf->max_readings)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_ingest_max_readings, _batch and "
                           "_flights must be positive and "
                           "platform_ingest_queue at least "
                           "platform_ingest_max_readings");
        return NGX_CONF_ERROR;
    }

    if (conf->enable) {
        imcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_platform_ingest_module);
        if (imcf->key.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"platform_ingest\" needs "
                               "\"platform_device_key\" in the http block "
                               "(before the server blocks)");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* platform_ingest PG_NAME */
static char *
ngx_platform_ingest(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_ingest_loc_conf_t  *ilcf = conf;

    ngx_int_t                  stmt;
    ngx_str_t                 *value, sql;
    ngx_http_core_loc_conf_t  *clcf;

    if (ilcf->enable) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ilcf->upstream = ngx_platform_pg_upstream_find(cf, &value[1]);
    if (ilcf->upstream == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_ingest: no platform_pg block named "
                           "\"%V\" (it must come first)", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&sql, NGX_PLATFORM_INGEST_SQL);

    stmt = ngx_platform_statement_add(cf, &sql);
    if (stmt == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    ilcf->statement = stmt;
    ilcf->pg_name = value[1];
    ilcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_platform_ingest_handler;

    return NGX_CONF_OK;
}


/* platform_device_key FILE: 32 raw bytes or 64 hex digits */
static char *
ngx_platform_device_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_ingest_main_conf_t  *imcf = conf;

    u_char       buf[130];
    ssize_t      n;
    ngx_str_t   *value, secret;
    ngx_file_t   file;

    if (imcf->key.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = value[1];
    file.log = cf->log;
    file.fd = ngx_open_file(value[1].data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &value[1]);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, buf, sizeof(buf), 0);

    ngx_close_file(file.fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    /* a hex key may end in a newline */

    while (n > 32 && (buf[n - 1] == LF || buf[n - 1] == CR)) {
        n--;
    }

    secret.data = buf;
    secret.len = n;

    imcf->key.data = ngx_pnalloc(cf->pool, 32);
    imcf->key_hex.data = ngx_pnalloc(cf->pool, 64);
    if (imcf->key.data == NULL || imcf->key_hex.data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (secret.len == 32) {
        ngx_memcpy(imcf->key.data, secret.data, 32);

    } else if (secret.len == 64
               && sodium_hex2bin(imcf->key.data, 32, (char *) secret.data, 64,
                                 NULL, NULL, NULL) == 0)
    {
        /* hex */

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_device_key\": \"%V\" must hold 32 "
                           "bytes or 64 hex digits", &value[1]);
        return NGX_CONF_ERROR;
    }

    imcf->key.len = 32;
    ngx_hex_dump(imcf->key_hex.data, imcf->key.data, 32);
    imcf->key_hex.len = 64;

    return NGX_CONF_OK;
}


/* platform_ingest_window PAST FUTURE: how old and how far ahead ts may be */
static char *
ngx_platform_ingest_window(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_ingest_loc_conf_t  *ilcf = conf;

    ngx_str_t  *value;

    if (ilcf->past != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ilcf->past = ngx_parse_time(&value[1], 0);
    ilcf->future = ngx_parse_time(&value[2], 0);

    if (ilcf->past == (ngx_msec_t) NGX_ERROR
        || ilcf->future == (ngx_msec_t) NGX_ERROR)
    {
        return "has an invalid time";
    }

    return NGX_CONF_OK;
}
