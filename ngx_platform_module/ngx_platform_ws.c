
/*
 * WebSocket (RFC 6455): the handshake, the connection after 101, and
 * "platform_websocket NAME;".
 *
 * After 101 the connection is taken over the way ngx_http_upstream.c does
 * for upgraded connections (keepalive off, the request held with
 * r->main->count++ and finalized at the end), but with our own handlers on
 * c->read and c->write, so that nginx's graceful shutdown reaches us: an
 * open connection is marked c->idle, ngx_close_idle_connections() then
 * calls the read handler with c->close set, and the connection is closed
 * with 1001 (worker_shutdown_timeout's c->close + c->error drops it).
 *
 * Reading: the bytes are read into a buffer on the stack and parsed at
 * once (ngx_platform_ws_frame.c); a message that arrives whole in one read
 * is handed to the handler where it lies, a message in pieces is gathered
 * in a buffer that grows up to the message size limit and is freed after.
 * A connection that sends without pause yields after NGX_PLATFORM_WS_READS
 * reads.
 *
 * Writing: frames are queued as a chain of malloc()ed buffers and written
 * with c->send_chain() (writev) when the event loop comes round, so the
 * frames queued in one pass go out in one call.  A pong for the latest
 * ping goes ahead of frames not yet started.  The bytes queued and not yet
 * written are bounded by platform_websocket_send_buffer: a frame that
 * would pass it closes the connection with 1008 (the frames not started
 * are dropped first, so the close frame goes out after the one being
 * written).
 *
 * States: OPEN; CLOSING, our close frame is queued and the client's is
 * awaited (platform_websocket_close_timeout, or _shutdown_timeout on
 * shutdown); FINISHING, nothing more is read: the close frame is written
 * and the TCP connection closed (after a client's close frame, and when
 * the connection is failed for a protocol error or a slow client).
 */


#include "ngx_platform_module.h"
#include "ngx_platform_ws.h"
#include <ngx_sha1.h>


#define NGX_PLATFORM_WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#define NGX_PLATFORM_WS_READ_SIZE  16384
#define NGX_PLATFORM_WS_READS      16

#define NGX_PLATFORM_WS_OPEN       0
#define NGX_PLATFORM_WS_CLOSING    1
#define NGX_PLATFORM_WS_FINISHING  2

/* why a connection stopped being open (platform_websocket_closed_total) */
#define NGX_PLATFORM_WS_END_NORMAL    0     /* a close frame, either side */
#define NGX_PLATFORM_WS_END_SHUTDOWN  1     /* nginx -s quit, reload */
#define NGX_PLATFORM_WS_END_PROTOCOL  2     /* 1002, 1007 */
#define NGX_PLATFORM_WS_END_TOO_BIG   3     /* 1009 */
#define NGX_PLATFORM_WS_END_SLOW      4     /* 1008: send buffer full */
#define NGX_PLATFORM_WS_END_IDLE      5     /* 1001: idle timeout */
#define NGX_PLATFORM_WS_END_ERROR     6     /* 1011: handler or memory */
#define NGX_PLATFORM_WS_END_ABNORMAL  7     /* dropped with no close frame */
#define NGX_PLATFORM_WS_ENDS          8


typedef struct {
    ngx_atomic_t                open;
    ngx_atomic_t                accepted;
    ngx_atomic_t                refused;
    ngx_atomic_t                messages_in;
    ngx_atomic_t                messages_out;
    ngx_atomic_t                closed[NGX_PLATFORM_WS_ENDS];
} ngx_platform_ws_shctx_t;


typedef struct {
    ngx_shm_zone_t             *zone;
    ngx_platform_ws_shctx_t    *sh;
} ngx_platform_ws_main_conf_t;


typedef struct {
    ngx_platform_ws_handler_t  *handler;
    size_t                      max_message_size;
    size_t                      send_buffer;
    ngx_msec_t                  ping_interval;
    ngx_msec_t                  idle_timeout;
    ngx_msec_t                  close_timeout;
    ngx_msec_t                  shutdown_timeout;
} ngx_platform_ws_loc_conf_t;


/*
 * a queued frame: one allocation, the chain link first, the bytes after;
 * or, for ngx_platform_ws_send_shared(), the link and the buf alone, the
 * buf pointing into a reference-counted shared buffer
 */
typedef struct {
    ngx_chain_t                 cl;
    ngx_buf_t                   buf;
    ngx_platform_ws_shared_t   *shared;
} ngx_platform_ws_out_t;


typedef struct {
    ngx_platform_ws_t           ws;           /* first: what handlers see */

    ngx_platform_ws_loc_conf_t *conf;
    ngx_platform_ws_shctx_t    *sh;

    ngx_platform_ws_parser_t    parser;

    u_char                     *message;      /* fragments, ngx_alloc() */
    size_t                      message_len;
    size_t                      message_size;

    ngx_chain_t                *out;          /* ngx_platform_ws_out_t */
    ngx_chain_t               **last_out;
    size_t                      queued;       /* bytes not written yet */

    ngx_event_t                 timer;        /* pings, idle, closing */
    ngx_msec_t                  last_recv;
    ngx_msec_t                  last_ping;

    ngx_uint_t                  state;
    ngx_uint_t                  code;         /* for handler->close() */

    size_t                      pong_len;
    u_char                      pong[NGX_PLATFORM_WS_MAX_CONTROL];

    unsigned                    pong_pending:1;
    unsigned                    aborted:1;    /* drop without a close */
    unsigned                    notified:1;   /* handler->close() ran */
    unsigned                    released:1;
} ngx_platform_ws_conn_t;


static ngx_int_t ngx_platform_ws_content_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_ws_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message,
    const char *header, const char *value);
static ngx_table_elt_t *ngx_platform_ws_find_header(ngx_http_request_t *r,
    const char *name, ngx_uint_t *count);
static ngx_uint_t ngx_platform_ws_has_token(ngx_http_request_t *r,
    const char *name, const char *token);
static ngx_int_t ngx_platform_ws_accept(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *accept);

static void ngx_platform_ws_read_handler(ngx_event_t *rev);
static void ngx_platform_ws_write_handler(ngx_event_t *wev);
static void ngx_platform_ws_timer_handler(ngx_event_t *ev);
static void ngx_platform_ws_read(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_input(ngx_platform_ws_conn_t *wc, u_char *pos,
    u_char *last);
static void ngx_platform_ws_data(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_deliver(ngx_platform_ws_conn_t *wc,
    ngx_uint_t opcode, u_char *data, size_t len);
static void ngx_platform_ws_control(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_finish(ngx_platform_ws_conn_t *wc);
static ngx_int_t ngx_platform_ws_flush(ngx_platform_ws_conn_t *wc);
static ngx_int_t ngx_platform_ws_queue(ngx_platform_ws_conn_t *wc,
    ngx_uint_t opcode, u_char *data, size_t len, ngx_uint_t first);
static void ngx_platform_ws_discard(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_free_out(ngx_chain_t *cl);
static void ngx_platform_ws_shut(ngx_platform_ws_conn_t *wc, ngx_uint_t code,
    u_char *reason, size_t len, ngx_uint_t end, ngx_uint_t state);
static void ngx_platform_ws_abort(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_notify(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_arm(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_post(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_drop(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_release(ngx_platform_ws_conn_t *wc);
static void ngx_platform_ws_cleanup(void *data);

static ngx_int_t ngx_platform_ws_echo_message(ngx_platform_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len);

static ngx_int_t ngx_platform_ws_init_zone(ngx_shm_zone_t *zone, void *data);
static void *ngx_platform_ws_create_main_conf(ngx_conf_t *cf);
static void *ngx_platform_ws_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_ws_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_ws(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


#define ngx_platform_ws_count(wc, field, n)                                   \
    if ((wc)->sh) {                                                           \
        (void) ngx_atomic_fetch_add(&(wc)->sh->field, n);                     \
    }


static ngx_platform_ws_handler_t  ngx_platform_ws_echo_handler = {
    ngx_string("echo"),
    NULL,
    ngx_platform_ws_echo_message,
    NULL
};


/* the handlers "platform_websocket NAME;" can name */
static ngx_platform_ws_handler_t  *ngx_platform_ws_handlers[] = {
    &ngx_platform_ws_echo_handler,
    NULL
};


static const char  *ngx_platform_ws_ends[] = {
    "normal", "shutdown", "protocol_error", "too_big", "slow_consumer",
    "idle", "internal_error", "abnormal"
};


static ngx_command_t  ngx_platform_ws_commands[] = {

    { ngx_string("platform_websocket"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_platform_ws,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_websocket_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ws_loc_conf_t, max_message_size),
      NULL },

    { ngx_string("platform_websocket_send_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ws_loc_conf_t, send_buffer),
      NULL },

    { ngx_string("platform_websocket_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ws_loc_conf_t, ping_interval),
      NULL },

    { ngx_string("platform_websocket_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ws_loc_conf_t, idle_timeout),
      NULL },

    { ngx_string("platform_websocket_close_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ws_loc_conf_t, close_timeout),
      NULL },

    { ngx_string("platform_websocket_shutdown_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_ws_loc_conf_t, shutdown_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_ws_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_platform_ws_create_main_conf,      /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_ws_create_loc_conf,       /* create location configuration */
    ngx_platform_ws_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_platform_ws_module = {
    NGX_MODULE_V1,
    &ngx_platform_ws_module_ctx,           /* module context */
    ngx_platform_ws_commands,              /* module directives */
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


/* the handshake */


static ngx_int_t
ngx_platform_ws_content_handler(ngx_http_request_t *r)
{
    ngx_platform_ws_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_platform_ws_module);

    return ngx_platform_ws_upgrade(r, wlcf->handler, NULL);
}


ngx_int_t
ngx_platform_ws_upgrade(ngx_http_request_t *r,
    ngx_platform_ws_handler_t *handler, void *data)
{
    ngx_int_t                     rc;
    ngx_str_t                     key, accept, decoded;
    ngx_uint_t                    n;
    ngx_table_elt_t              *h;
    ngx_connection_t             *c;
    ngx_pool_cleanup_t           *cln;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_platform_ws_conn_t       *wc;
    ngx_platform_ws_loc_conf_t   *wlcf;
    ngx_platform_ws_main_conf_t  *wmcf;
    u_char                        buf[20];

    c = r->connection;
    wlcf = ngx_http_get_module_loc_conf(r, ngx_platform_ws_module);
    wmcf = ngx_http_get_module_main_conf(r, ngx_platform_ws_module);

    if (r != r->main) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "WebSocket handshake in a subrequest");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->method != NGX_HTTP_GET) {
        return ngx_platform_ws_refuse(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed",
                                      "a WebSocket handshake is a GET",
                                      "Allow", "GET");
    }

    if (r->http_version != NGX_HTTP_VERSION_11) {
        return ngx_platform_ws_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                      "WebSocket needs HTTP/1.1", NULL, NULL);
    }

    if (!ngx_platform_ws_has_token(r, "Upgrade", "websocket")
        || !ngx_platform_ws_has_token(r, "Connection", "upgrade"))
    {
        return ngx_platform_ws_refuse(r, 426, "upgrade_required",
                                      "this is a WebSocket endpoint",
                                      "Upgrade", "websocket");
    }

    h = ngx_platform_ws_find_header(r, "Sec-WebSocket-Version", &n);

    if (h == NULL || n != 1 || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        return ngx_platform_ws_refuse(r, 426, "upgrade_required",
                                      "WebSocket version 13 is supported",
                                      "Sec-WebSocket-Version", "13");
    }

    /* the key: base64 of 16 bytes, 24 characters ending with "==" */

    h = ngx_platform_ws_find_header(r, "Sec-WebSocket-Key", &n);

    if (h == NULL || n != 1 || h->value.len != 24
        || h->value.data[22] != '=' || h->value.data[23] != '=')
    {
        goto bad_key;
    }

    key = h->value;

    decoded.data = buf;

    if (ngx_decode_base64(&decoded, &key) != NGX_OK || decoded.len != 16) {
        goto bad_key;
    }

    /* data after the handshake would be read as frames */

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return ngx_platform_ws_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                      "a WebSocket handshake has no body",
                                      NULL, NULL);
    }

    /* browsers send Origin; only they can be made to connect for a page */

    if (ngx_platform_ws_find_header(r, "Origin", &n) != NULL
        && ngx_platform_session_origin(r) != NGX_OK)
    {
        return ngx_platform_ws_refuse(r, NGX_HTTP_FORBIDDEN, "origin",
                                      "the page is not from an allowed "
                                      "origin", NULL, NULL);
    }

    if (ngx_exiting || ngx_terminate) {
        return ngx_platform_ws_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "unavailable", "the server is "
                                      "restarting, try again", NULL, NULL);
    }

    if (handler == NULL) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "no WebSocket handler");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_platform_ws_accept(r, &key, &accept) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    wc = ngx_pcalloc(r->pool, sizeof(ngx_platform_ws_conn_t));
    if (wc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     wc->message = NULL;
     *     wc->out = NULL;
     *     wc->queued = 0;
     *     wc->state = NGX_PLATFORM_WS_OPEN;
     *     wc->pong_pending = 0;
     */

    wc->ws.request = r;
    wc->ws.connection = c;
    wc->ws.handler = handler;
    wc->ws.data = data;
    wc->conf = wlcf;
    wc->sh = wmcf->sh;
    wc->last_out = &wc->out;
    wc->last_recv = ngx_current_msec;
    wc->last_ping = wc->last_recv;

    ngx_platform_ws_parser_init(&wc->parser, wlcf->max_message_size, 1);

    wc->timer.handler = ngx_platform_ws_timer_handler;
    wc->timer.data = wc;
    wc->timer.log = c->log;

    /* the response (there is no request body: refused above) */

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->headers_out.content_length_n = -1;
    r->keepalive = 0;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Accept");
    h->value = accept;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* from here the connection is ours until ngx_platform_ws_drop() */

    cln->handler = ngx_platform_ws_cleanup;
    cln->data = wc;

    ngx_http_set_ctx(r, wc, ngx_platform_ws_module);

    if (wmcf->sh) {
        (void) ngx_atomic_fetch_add(&wmcf->sh->accepted, 1);
        (void) ngx_atomic_fetch_add(&wmcf->sh->open, 1);
    }

    c->log->action = "in a WebSocket connection";

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->tcp_nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        return NGX_ERROR;
    }

    r->main->count++;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    c->read->handler = ngx_platform_ws_read_handler;
    c->write->handler = ngx_platform_ws_write_handler;

    /* graceful shutdown closes idle connections: an open one with 1001 */
    c->idle = 1;

    ngx_platform_ws_arm(wc);

    if (handler->open && handler->open(&wc->ws) == NGX_ERROR) {
        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_INTERNAL_ERROR, NULL, 0,
                             NGX_PLATFORM_WS_END_ERROR,
                             NGX_PLATFORM_WS_FINISHING);
    }

    /*
     * What the client sent after the handshake (in r->header_in) and what
     * open() queued are dealt with from the event loop, never from here:
     * the connection must not end inside the content handler.
     */

    ngx_post_event(c->read, &ngx_posted_events);

    return NGX_DONE;

bad_key:

    return ngx_platform_ws_refuse(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "Sec-WebSocket-Key must be 16 bytes in "
                                  "base64", NULL, NULL);
}


static ngx_int_t
ngx_platform_ws_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *header,
    const char *value)
{
    ngx_int_t                     rc;
    ngx_table_elt_t              *h;
    ngx_platform_ws_main_conf_t  *wmcf;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "WebSocket handshake refused: %s", message);

    wmcf = ngx_http_get_module_main_conf(r, ngx_platform_ws_module);

    if (wmcf->sh) {
        (void) ngx_atomic_fetch_add(&wmcf->sh->refused, 1);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (header) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        h->key.data = (u_char *) header;
        h->key.len = ngx_strlen(header);
        h->value.data = (u_char *) value;
        h->value.len = ngx_strlen(value);
    }

    return ngx_platform_send_error(r, status, code, message);
}


/* the first request header of that name, and how many there are */

static ngx_table_elt_t *
ngx_platform_ws_find_header(ngx_http_request_t *r, const char *name,
    ngx_uint_t *count)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    len = ngx_strlen(name);
    found = NULL;
    *count = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            if (found == NULL) {
                found = &h[i];
            }

            (*count)++;
        }
    }

    return found;
}


/* a comma-separated token in any header of that name, case-insensitive */

static ngx_uint_t
ngx_platform_ws_has_token(ngx_http_request_t *r, const char *name,
    const char *token)
{
    u_char           *p, *last, *start, *end;
    size_t            len, tlen;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    tlen = ngx_strlen(token);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != len
            || ngx_strncasecmp(h[i].key.data, (u_char *) name, len) != 0)
        {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (p < last) {
            end = ngx_strlchr(p, last, ',');
            if (end == NULL) {
                end = last;
            }

            start = p;
            p = end + 1;

            while (start < end && (*start == ' ' || *start == '\t')) {
                start++;
            }

            while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
                end--;
            }

            if ((size_t) (end - start) == tlen
                && ngx_strncasecmp(start, (u_char *) token, tlen) == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/* Sec-WebSocket-Accept: base64(SHA-1(key GUID)) */

static ngx_int_t
ngx_platform_ws_accept(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *accept)
{
    u_char      hash[20];
    ngx_str_t   src;
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->data, key->len);
    ngx_sha1_update(&sha1, NGX_PLATFORM_WS_GUID,
                    sizeof(NGX_PLATFORM_WS_GUID) - 1);
    ngx_sha1_final(hash, &sha1);

    src.data = hash;
    src.len = sizeof(hash);

    accept->data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(src.len));
    if (accept->data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(accept, &src);

    return NGX_OK;
}


/* events */


static void
ngx_platform_ws_read_handler(ngx_event_t *rev)
{
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_platform_ws_conn_t  *wc;

    c = rev->data;
    r = c->data;
    wc = ngx_http_get_module_ctx(r, ngx_platform_ws_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "websocket read, state:%ui", wc->state);

    if (c->close) {
        c->close = 0;

        if (c->error) {
            /* worker_shutdown_timeout: no more time */
            ngx_platform_ws_abort(wc);

        } else {
            /* graceful shutdown (ngx_close_idle_connections()) */
            ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_GOING_AWAY,
                                 (u_char *) "server shutting down",
                                 sizeof("server shutting down") - 1,
                                 NGX_PLATFORM_WS_END_SHUTDOWN,
                                 NGX_PLATFORM_WS_CLOSING);
        }
    }

    ngx_platform_ws_read(wc);
    ngx_platform_ws_finish(wc);
}


static void
ngx_platform_ws_write_handler(ngx_event_t *wev)
{
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_platform_ws_conn_t  *wc;

    c = wev->data;
    r = c->data;
    wc = ngx_http_get_module_ctx(r, ngx_platform_ws_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "websocket write, state:%ui", wc->state);

    ngx_platform_ws_finish(wc);
}


static void
ngx_platform_ws_timer_handler(ngx_event_t *ev)
{
    ngx_msec_t               now;
    ngx_connection_t        *c;
    ngx_platform_ws_conn_t  *wc;

    wc = ev->data;
    c = wc->ws.connection;

    if (wc->state != NGX_PLATFORM_WS_OPEN) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "WebSocket closing handshake timed out");
        ngx_platform_ws_abort(wc);
        ngx_platform_ws_finish(wc);
        return;
    }

    now = ngx_current_msec;

    if (wc->conf->idle_timeout
        && (ngx_msec_int_t) (now - wc->last_recv)
           >= (ngx_msec_int_t) wc->conf->idle_timeout)
    {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "WebSocket client silent for %M ms",
                      now - wc->last_recv);

        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_GOING_AWAY,
                             (u_char *) "idle timeout",
                             sizeof("idle timeout") - 1,
                             NGX_PLATFORM_WS_END_IDLE,
                             NGX_PLATFORM_WS_CLOSING);

        ngx_platform_ws_finish(wc);
        return;
    }

    if (wc->conf->ping_interval
        && (ngx_msec_int_t) (now - wc->last_recv)
           >= (ngx_msec_int_t) wc->conf->ping_interval
        && (ngx_msec_int_t) (now - wc->last_ping)
           >= (ngx_msec_int_t) wc->conf->ping_interval)
    {
        wc->last_ping = now;

        if (ngx_platform_ws_queue(wc, NGX_PLATFORM_WS_PING, NULL, 0, 1)
            != NGX_OK)
        {
            ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_INTERNAL_ERROR, NULL, 0,
                                 NGX_PLATFORM_WS_END_ERROR,
                                 NGX_PLATFORM_WS_FINISHING);
        }
    }

    ngx_platform_ws_arm(wc);
    ngx_platform_ws_finish(wc);
}


/* reading */


static void
ngx_platform_ws_read(ngx_platform_ws_conn_t *wc)
{
    ssize_t              n;
    ngx_uint_t           i;
    ngx_buf_t           *b;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    u_char               buf[NGX_PLATFORM_WS_READ_SIZE];

    r = wc->ws.request;
    c = wc->ws.connection;

    /* frames the client sent right behind its handshake */

    b = r->header_in;

    if (b->pos < b->last) {
        wc->last_recv = ngx_current_msec;
        ngx_platform_ws_input(wc, b->pos, b->last);
        b->pos = b->last;
    }

    for (i = 0; i < NGX_PLATFORM_WS_READS; i++) {

        if (wc->state == NGX_PLATFORM_WS_FINISHING || wc->aborted) {
            return;
        }

        n = c->recv(c, buf, NGX_PLATFORM_WS_READ_SIZE);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "websocket recv: %z", n);

        if (n == NGX_AGAIN) {
            return;
        }

        if (n == 0 || n == NGX_ERROR) {

            if (wc->state == NGX_PLATFORM_WS_OPEN) {
                ngx_log_error(NGX_LOG_INFO, c->log, 0,
                              "WebSocket client closed the connection "
                              "without a close frame");
            }

            ngx_platform_ws_abort(wc);
            return;
        }

        wc->last_recv = ngx_current_msec;

        ngx_platform_ws_input(wc, buf, buf + n);
    }

    /* a client that keeps sending: give the others their turn */

    ngx_post_event(c->read, &ngx_posted_next_events);
}


static void
ngx_platform_ws_input(ngx_platform_ws_conn_t *wc, u_char *pos, u_char *last)
{
    ngx_uint_t                 end;
    ngx_platform_ws_parser_t  *p;

    p = &wc->parser;

    while (wc->state != NGX_PLATFORM_WS_FINISHING && !wc->aborted) {

        switch (ngx_platform_ws_parse(p, &pos, last)) {

        case NGX_PLATFORM_WS_AGAIN:
            return;

        case NGX_PLATFORM_WS_DATA:
            if (wc->state == NGX_PLATFORM_WS_OPEN) {
                ngx_platform_ws_data(wc);
            }

            break;

        case NGX_PLATFORM_WS_CONTROL:
            ngx_platform_ws_control(wc);
            break;

        default: /* NGX_PLATFORM_WS_ERROR */

            ngx_log_error(NGX_LOG_INFO, wc->ws.connection->log, 0,
                          "WebSocket client error: %s, closing with %ui",
                          p->error, (ngx_uint_t) p->code);

            if (wc->state != NGX_PLATFORM_WS_OPEN) {
                /* our close frame is queued already */
                wc->state = NGX_PLATFORM_WS_FINISHING;
                return;
            }

            end = (p->code == NGX_PLATFORM_WS_TOO_BIG)
                  ? NGX_PLATFORM_WS_END_TOO_BIG
                  : NGX_PLATFORM_WS_END_PROTOCOL;

            ngx_platform_ws_shut(wc, p->code, (u_char *) p->error,
                                 ngx_strlen(p->error), end,
                                 NGX_PLATFORM_WS_FINISHING);
            return;
        }
    }
}


static void
ngx_platform_ws_data(ngx_platform_ws_conn_t *wc)
{
    u_char                    *m;
    size_t                     need, size;
    ngx_platform_ws_parser_t  *p;

    p = &wc->parser;

    if (p->last && wc->message_len == 0) {
        /* the whole message in one piece: no copy */
        ngx_platform_ws_deliver(wc, p->opcode, p->data, p->len);
        return;
    }

    need = wc->message_len + p->len;

    if (need > wc->message_size) {

        /* the parser keeps messages within max_message_size */

        size = ngx_max(wc->message_size * 2, 4096);
        size = ngx_min(size, wc->conf->max_message_size);
        size = ngx_max(size, need);

        m = ngx_alloc(size, wc->ws.connection->log);
        if (m == NULL) {
            ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_INTERNAL_ERROR, NULL, 0,
                                 NGX_PLATFORM_WS_END_ERROR,
                                 NGX_PLATFORM_WS_FINISHING);
            return;
        }

        if (wc->message) {
            ngx_memcpy(m, wc->message, wc->message_len);
            ngx_free(wc->message);
        }

        wc->message = m;
        wc->message_size = size;
    }

    if (p->len) {
        ngx_memcpy(wc->message + wc->message_len, p->data, p->len);
        wc->message_len += p->len;
    }

    if (!p->last) {
        return;
    }

    ngx_platform_ws_deliver(wc, p->opcode, wc->message, wc->message_len);

    /* a buffer for each fragmented message: idle connections hold none */

    ngx_free(wc->message);
    wc->message = NULL;
    wc->message_len = 0;
    wc->message_size = 0;
}


static void
ngx_platform_ws_deliver(ngx_platform_ws_conn_t *wc, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    ngx_platform_ws_count(wc, messages_in, 1);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, wc->ws.connection->log, 0,
                   "websocket message: opcode:%ui len:%uz", opcode, len);

    if (wc->ws.handler->message == NULL) {
        return;
    }

    if (wc->ws.handler->message(&wc->ws, opcode, data, len) == NGX_ERROR) {
        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_INTERNAL_ERROR, NULL, 0,
                             NGX_PLATFORM_WS_END_ERROR,
                             NGX_PLATFORM_WS_FINISHING);
    }
}


static void
ngx_platform_ws_control(ngx_platform_ws_conn_t *wc)
{
    ngx_platform_ws_parser_t  *p;

    p = &wc->parser;

    switch (p->opcode) {

    case NGX_PLATFORM_WS_PING:

        if (wc->state == NGX_PLATFORM_WS_OPEN) {
            /* one pong, for the latest ping */
            ngx_memcpy(wc->pong, p->data, p->len);
            wc->pong_len = p->len;
            wc->pong_pending = 1;
        }

        return;

    case NGX_PLATFORM_WS_PONG:
        /* last_recv is updated already: that is all a pong is for */
        return;

    default: /* NGX_PLATFORM_WS_CLOSE */

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, wc->ws.connection->log, 0,
                       "websocket close from the client: %ui, state:%ui",
                       (ngx_uint_t) p->code, wc->state);

        if (wc->state != NGX_PLATFORM_WS_OPEN) {
            /* the answer to ours: the closing handshake is complete */
            wc->state = NGX_PLATFORM_WS_FINISHING;
            return;
        }

        /* echo the status code (none if none came) and finish */

        ngx_platform_ws_shut(wc, p->code ? p->code : NGX_PLATFORM_WS_NO_STATUS,
                             NULL, 0, NGX_PLATFORM_WS_END_NORMAL,
                             NGX_PLATFORM_WS_FINISHING);
        return;
    }
}


/* the end of every event: write, tell the handler, finish or wait */

static void
ngx_platform_ws_finish(ngx_platform_ws_conn_t *wc)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = wc->ws.connection;

    rc = ngx_platform_ws_flush(wc);

    ngx_platform_ws_notify(wc);

    if (wc->aborted || rc == NGX_ERROR) {
        ngx_platform_ws_drop(wc);
        return;
    }

    if (wc->state == NGX_PLATFORM_WS_FINISHING && rc == NGX_OK) {
        ngx_platform_ws_drop(wc);
        return;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_platform_ws_abort(wc);
        ngx_platform_ws_drop(wc);
        return;
    }

    if (wc->state == NGX_PLATFORM_WS_FINISHING) {

        /* nothing more is read; level-triggered events would spin */

        if ((ngx_event_flags & NGX_USE_LEVEL_EVENT) && c->read->active) {
            if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
                ngx_platform_ws_abort(wc);
                ngx_platform_ws_drop(wc);
            }
        }

        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_platform_ws_abort(wc);
        ngx_platform_ws_drop(wc);
    }
}


/* writing */


static ngx_int_t
ngx_platform_ws_flush(ngx_platform_ws_conn_t *wc)
{
    off_t                sent;
    ngx_chain_t         *cl, *next;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = wc->ws.request;
    c = wc->ws.connection;

    if (wc->aborted) {
        return NGX_ERROR;
    }

    if (wc->pong_pending) {
        wc->pong_pending = 0;

        if (ngx_platform_ws_queue(wc, NGX_PLATFORM_WS_PONG, wc->pong,
                                  wc->pong_len, 1)
            != NGX_OK)
        {
            ngx_platform_ws_abort(wc);
            return NGX_ERROR;
        }
    }

    /* the 101 response first, if the socket did not take it at once */

    if (r->out) {
        if (ngx_http_output_filter(r, NULL) == NGX_ERROR) {
            ngx_platform_ws_abort(wc);
            return NGX_ERROR;
        }

        if (r->out) {
            return NGX_AGAIN;
        }
    }

    if (wc->out == NULL) {
        return NGX_OK;
    }

    if (!c->write->ready) {
        return NGX_AGAIN;
    }

    sent = c->sent;

    cl = c->send_chain(c, wc->out, 0);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "websocket sent %O of %uz", c->sent - sent, wc->queued);

    if (cl == NGX_CHAIN_ERROR) {
        c->error = 1;
        ngx_platform_ws_abort(wc);
        return NGX_ERROR;
    }

    wc->queued -= (size_t) (c->sent - sent);

    for (next = wc->out; next != cl; next = wc->out) {
        wc->out = next->next;
        ngx_platform_ws_free_out(next);
    }

    if (wc->out == NULL) {
        wc->last_out = &wc->out;
        return NGX_OK;
    }

    return NGX_AGAIN;
}


/*
 * A frame at the end of the queue, or (first) ahead of every frame not
 * started yet; not bounded by the send buffer (control frames).
 */

static ngx_int_t
ngx_platform_ws_queue(ngx_platform_ws_conn_t *wc, ngx_uint_t opcode,
    u_char *data, size_t len, ngx_uint_t first)
{
    u_char                 *p;
    size_t                  n;
    ngx_buf_t              *b;
    ngx_chain_t           **prev;
    ngx_platform_ws_out_t  *out;

    out = ngx_alloc(sizeof(ngx_platform_ws_out_t)
                    + NGX_PLATFORM_WS_MAX_HEADER + len,
                    wc->ws.connection->log);
    if (out == NULL) {
        return NGX_ERROR;
    }

    p = (u_char *) (out + 1);

    n = ngx_platform_ws_header(p, 1, opcode, len, NULL);

    if (len) {
        ngx_memcpy(p + n, data, len);
        n += len;
    }

    out->shared = NULL;

    b = &out->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->temporary = 1;
    b->start = p;
    b->pos = p;
    b->last = p + n;
    b->end = p + n;

    out->cl.buf = b;
    out->cl.next = NULL;

    if (first) {
        prev = &wc->out;

        if (wc->out && wc->out->buf->pos != wc->out->buf->start) {
            /* a frame half written stays first */
            prev = &wc->out->next;
        }

        out->cl.next = *prev;
        *prev = &out->cl;

        if (out->cl.next == NULL) {
            wc->last_out = &out->cl.next;
        }

    } else {
        *wc->last_out = &out->cl;
        wc->last_out = &out->cl.next;
    }

    wc->queued += n;

    ngx_platform_ws_post(wc);

    return NGX_OK;
}


/* frames not started are dropped; a frame half written must complete */

static void
ngx_platform_ws_discard(ngx_platform_ws_conn_t *wc)
{
    ngx_chain_t  *cl, *next, *keep;

    keep = NULL;
    cl = wc->out;

    if (cl && cl->buf->pos != cl->buf->start) {
        keep = cl;
        cl = cl->next;
        keep->next = NULL;
    }

    while (cl) {
        next = cl->next;
        wc->queued -= ngx_buf_size(cl->buf);
        ngx_platform_ws_free_out(cl);
        cl = next;
    }

    wc->out = keep;
    wc->last_out = keep ? &keep->next : &wc->out;
}


ngx_int_t
ngx_platform_ws_send(ngx_platform_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    ngx_platform_ws_conn_t  *wc = (ngx_platform_ws_conn_t *) ws;

    if (wc->state != NGX_PLATFORM_WS_OPEN || wc->aborted) {
        return NGX_DECLINED;
    }

    if (opcode != NGX_PLATFORM_WS_TEXT && opcode != NGX_PLATFORM_WS_BINARY
        && ((opcode != NGX_PLATFORM_WS_PING && opcode != NGX_PLATFORM_WS_PONG)
            || len > NGX_PLATFORM_WS_MAX_CONTROL))
    {
        ngx_log_error(NGX_LOG_ALERT, ws->connection->log, 0,
                      "WebSocket handler sent opcode %ui of %uz bytes",
                      opcode, len);
        return NGX_ERROR;
    }

    if (wc->queued + NGX_PLATFORM_WS_MAX_HEADER + len
        > wc->conf->send_buffer)
    {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "WebSocket client too slow: %uz bytes not written, "
                      "closing with 1008", wc->queued);

        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_POLICY,
                             (u_char *) "too slow", sizeof("too slow") - 1,
                             NGX_PLATFORM_WS_END_SLOW,
                             NGX_PLATFORM_WS_FINISHING);
        return NGX_DECLINED;
    }

    if (ngx_platform_ws_queue(wc, opcode, data, len, 0) != NGX_OK) {
        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_INTERNAL_ERROR, NULL, 0,
                             NGX_PLATFORM_WS_END_ERROR,
                             NGX_PLATFORM_WS_FINISHING);
        return NGX_ERROR;
    }

    if (opcode == NGX_PLATFORM_WS_TEXT || opcode == NGX_PLATFORM_WS_BINARY) {
        ngx_platform_ws_count(wc, messages_out, 1);
    }

    return NGX_OK;
}



static void
ngx_platform_ws_free_out(ngx_chain_t *cl)
{
    ngx_platform_ws_out_t  *out = (ngx_platform_ws_out_t *) cl;

    if (out->shared) {
        ngx_platform_ws_shared_release(out->shared);
    }

    ngx_free(out);
}


ngx_platform_ws_shared_t *
ngx_platform_ws_shared_create(size_t size, ngx_log_t *log)
{
    ngx_platform_ws_shared_t  *sb;

    sb = ngx_alloc(sizeof(ngx_platform_ws_shared_t) + size, log);
    if (sb == NULL) {
        return NULL;
    }

    sb->refs = 1;
    sb->start = (u_char *) (sb + 1);
    sb->last = sb->start;
    sb->end = sb->start + size;

    return sb;
}


u_char *
ngx_platform_ws_shared_add(ngx_platform_ws_shared_t *sb, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    u_char  *p;

    if ((size_t) (sb->end - sb->last) < NGX_PLATFORM_WS_MAX_HEADER + len) {
        return NULL;
    }

    p = sb->last;

    sb->last += ngx_platform_ws_header(sb->last, 1, opcode, len, NULL);
    sb->last = ngx_cpymem(sb->last, data, len);

    return p;
}


void
ngx_platform_ws_shared_release(ngx_platform_ws_shared_t *sb)
{
    if (--sb->refs == 0) {
        ngx_free(sb);
    }
}


ngx_int_t
ngx_platform_ws_send_shared(ngx_platform_ws_t *ws,
    ngx_platform_ws_shared_t *sb, u_char *pos, u_char *last,
    ngx_uint_t messages)
{
    size_t                   len;
    ngx_buf_t               *b;
    ngx_platform_ws_out_t   *out;
    ngx_platform_ws_conn_t  *wc = (ngx_platform_ws_conn_t *) ws;

    if (wc->state != NGX_PLATFORM_WS_OPEN || wc->aborted) {
        return NGX_DECLINED;
    }

    len = last - pos;

    if (len == 0) {
        return NGX_OK;
    }

    if (wc->queued + len > wc->conf->send_buffer) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "WebSocket client too slow: %uz bytes not written, "
                      "closing with 1008", wc->queued);

        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_POLICY,
                             (u_char *) "too slow", sizeof("too slow") - 1,
                             NGX_PLATFORM_WS_END_SLOW,
                             NGX_PLATFORM_WS_FINISHING);
        return NGX_DECLINED;
    }

    out = ngx_alloc(sizeof(ngx_platform_ws_out_t), ws->connection->log);
    if (out == NULL) {
        ngx_platform_ws_shut(wc, NGX_PLATFORM_WS_INTERNAL_ERROR, NULL, 0,
                             NGX_PLATFORM_WS_END_ERROR,
                             NGX_PLATFORM_WS_FINISHING);
        return NGX_ERROR;
    }

    sb->refs++;
    out->shared = sb;

    b = &out->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    /* read only: start marks where this piece begins (half written test) */
    b->memory = 1;
    b->start = pos;
    b->pos = pos;
    b->last = last;
    b->end = last;

    out->cl.buf = b;
    out->cl.next = NULL;

    *wc->last_out = &out->cl;
    wc->last_out = &out->cl.next;

    wc->queued += len;

    ngx_platform_ws_post(wc);

    ngx_platform_ws_count(wc, messages_out, messages);

    return NGX_OK;
}


void
ngx_platform_ws_close(ngx_platform_ws_t *ws, ngx_uint_t code,
    ngx_str_t *reason)
{
    size_t                   len;
    u_char                  *text;
    ngx_platform_ws_conn_t  *wc = (ngx_platform_ws_conn_t *) ws;

    if (!ngx_platform_ws_close_code_valid(code)) {
        ngx_log_error(NGX_LOG_ALERT, ws->connection->log, 0,
                      "WebSocket handler closed with code %ui", code);
        code = NGX_PLATFORM_WS_INTERNAL_ERROR;
    }

    text = NULL;
    len = 0;

    if (reason) {
        text = reason->data;
        len = reason->len;

        if (len > NGX_PLATFORM_WS_MAX_CONTROL - 2) {
            len = NGX_PLATFORM_WS_MAX_CONTROL - 2;

            /* not inside a character: the client checks the UTF-8 */

            while (len && (text[len] & 0xc0) == 0x80) {
                len--;
            }
        }
    }

    ngx_platform_ws_shut(wc, code, text, len, NGX_PLATFORM_WS_END_NORMAL,
                         NGX_PLATFORM_WS_CLOSING);
}


/*
 * The connection stops being open: a close frame is queued behind what is
 * queued already (for a slow client, behind the frame being written: the
 * others are dropped) and the state changes.  FINISHING (a protocol error,
 * a slow client, an answer to the client's close) reads nothing more;
 * CLOSING reads until the client's close.  Either way the timer now
 * bounds the rest, and it holds a worker that is shutting down.
 */

static void
ngx_platform_ws_shut(ngx_platform_ws_conn_t *wc, ngx_uint_t code,
    u_char *reason, size_t len, ngx_uint_t end, ngx_uint_t state)
{
    u_char       payload[NGX_PLATFORM_WS_MAX_CONTROL];
    size_t       n;
    ngx_msec_t   timeout;

    if (wc->state != NGX_PLATFORM_WS_OPEN || wc->aborted) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, wc->ws.connection->log, 0,
                   "websocket shut: %ui, state:%ui", code, state);

    wc->state = state;
    wc->code = code;
    wc->pong_pending = 0;
    wc->ws.connection->idle = 0;

    ngx_platform_ws_count(wc, closed[end], 1);

    if (end == NGX_PLATFORM_WS_END_SLOW) {
        ngx_platform_ws_discard(wc);
    }

    /* 1005 is "no code": the client's close frame was empty, so is ours */

    n = 0;

    if (code != NGX_PLATFORM_WS_NO_STATUS) {
        payload[0] = (u_char) (code >> 8);
        payload[1] = (u_char) (code & 0xff);
        n = 2;

        len = ngx_min(len, NGX_PLATFORM_WS_MAX_CONTROL - 2);

        if (len) {
            ngx_memcpy(payload + 2, reason, len);
            n += len;
        }
    }

    if (ngx_platform_ws_queue(wc, NGX_PLATFORM_WS_CLOSE, payload, n, 0)
        != NGX_OK)
    {
        ngx_platform_ws_abort(wc);
        return;
    }

    timeout = (end == NGX_PLATFORM_WS_END_SHUTDOWN)
              ? wc->conf->shutdown_timeout : wc->conf->close_timeout;

    if (wc->timer.timer_set) {
        ngx_del_timer(&wc->timer);
    }

    wc->timer.cancelable = 0;
    ngx_add_timer(&wc->timer, timeout);
}


/* the connection is dropped with no (more) close frame */

static void
ngx_platform_ws_abort(ngx_platform_ws_conn_t *wc)
{
    if (wc->state == NGX_PLATFORM_WS_OPEN) {
        wc->code = NGX_PLATFORM_WS_ABNORMAL;
        ngx_platform_ws_count(wc, closed[NGX_PLATFORM_WS_END_ABNORMAL], 1);
    }

    wc->state = NGX_PLATFORM_WS_FINISHING;
    wc->aborted = 1;
    wc->ws.connection->idle = 0;
}


static void
ngx_platform_ws_notify(ngx_platform_ws_conn_t *wc)
{
    if (wc->notified || wc->state == NGX_PLATFORM_WS_OPEN) {
        return;
    }

    wc->notified = 1;

    if (wc->ws.handler->close) {
        wc->ws.handler->close(&wc->ws, wc->code);
    }
}


/* while open: the next ping or the idle deadline, whichever comes first */

static void
ngx_platform_ws_arm(ngx_platform_ws_conn_t *wc)
{
    ngx_msec_t       base;
    ngx_msec_int_t   t, next;

    if (wc->state != NGX_PLATFORM_WS_OPEN
        || (wc->conf->idle_timeout == 0 && wc->conf->ping_interval == 0))
    {
        return;
    }

    next = NGX_MAX_INT_T_VALUE;

    if (wc->conf->idle_timeout) {
        next = (ngx_msec_int_t) (wc->last_recv + wc->conf->idle_timeout
                                 - ngx_current_msec);
    }

    if (wc->conf->ping_interval) {
        base = ((ngx_msec_int_t) (wc->last_recv - wc->last_ping) > 0)
               ? wc->last_recv : wc->last_ping;

        t = (ngx_msec_int_t) (base + wc->conf->ping_interval
                              - ngx_current_msec);

        next = ngx_min(next, t);
    }

    next = ngx_max(next, 1);

    /* an open connection does not hold up a worker that is exiting */
    wc->timer.cancelable = 1;

    ngx_add_timer(&wc->timer, (ngx_msec_t) next);
}


static void
ngx_platform_ws_post(ngx_platform_ws_conn_t *wc)
{
    ngx_event_t  *wev;

    wev = wc->ws.connection->write;

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* the end: the request is finalized, which closes the connection */

static void
ngx_platform_ws_drop(ngx_platform_ws_conn_t *wc)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = wc->ws.request;
    c = wc->ws.connection;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "websocket drop, code:%ui aborted:%ui",
                   wc->code, (ngx_uint_t) wc->aborted);

    ngx_platform_ws_release(wc);

    c->idle = 0;

    if (wc->aborted) {
        c->error = 1;
        ngx_http_finalize_request(r, NGX_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }

    /*
     * After a clean close nginx's lingering close shuts our side down
     * first (the server closes the TCP connection, section 7.1.1) and
     * reads what the client still sends until it closes too, so that no
     * reset can destroy our close frame on its way.
     */

    if (!c->read->eof) {
        r->lingering_close = 1;
    }

    ngx_http_finalize_request(r, NGX_DONE);
}


/* what the connection holds, given back once it is no WebSocket any more */

static void
ngx_platform_ws_release(ngx_platform_ws_conn_t *wc)
{
    ngx_chain_t  *cl, *next;

    if (wc->released) {
        return;
    }

    wc->released = 1;

    if (wc->state == NGX_PLATFORM_WS_OPEN) {
        ngx_platform_ws_abort(wc);
    }

    ngx_platform_ws_notify(wc);

    if (wc->timer.timer_set) {
        ngx_del_timer(&wc->timer);
    }

    if (wc->timer.posted) {
        ngx_delete_posted_event(&wc->timer);
    }

    for (cl = wc->out; cl; cl = next) {
        next = cl->next;
        ngx_platform_ws_free_out(cl);
    }

    wc->out = NULL;

    if (wc->message) {
        ngx_free(wc->message);
        wc->message = NULL;
    }

    ngx_platform_ws_count(wc, open, -1);
}


/* the request went away some other way */

static void
ngx_platform_ws_cleanup(void *data)
{
    ngx_platform_ws_conn_t *wc = data;

    ngx_platform_ws_release(wc);
}


/* platform_websocket echo: every message back as it came */

static ngx_int_t
ngx_platform_ws_echo_message(ngx_platform_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    if (ngx_platform_ws_send(ws, opcode, data, len) == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* statistics */


u_char *
ngx_platform_ws_status(ngx_http_request_t *r, u_char *p, u_char *last)
{
    ngx_uint_t                    i;
    ngx_platform_ws_shctx_t      *sh;
    ngx_platform_ws_main_conf_t  *wmcf;

    wmcf = ngx_http_get_module_main_conf(r, ngx_platform_ws_module);

    if (wmcf == NULL || wmcf->sh == NULL) {
        return p;
    }

    sh = wmcf->sh;

    p = ngx_slprintf(p, last,
        "# HELP platform_websocket_connections Open WebSocket "
        "connections.\n"
        "# TYPE platform_websocket_connections gauge\n"
        "platform_websocket_connections %uA\n"
        "# HELP platform_websocket_handshakes_total WebSocket handshakes "
        "answered, by result.\n"
        "# TYPE platform_websocket_handshakes_total counter\n"
        "platform_websocket_handshakes_total{result=\"accepted\"} %uA\n"
        "platform_websocket_handshakes_total{result=\"refused\"} %uA\n"
        "# HELP platform_websocket_messages_total Whole messages received "
        "from clients and queued to them.\n"
        "# TYPE platform_websocket_messages_total counter\n"
        "platform_websocket_messages_total{direction=\"in\"} %uA\n"
        "platform_websocket_messages_total{direction=\"out\"} %uA\n"
        "# HELP platform_websocket_closed_total Connections that stopped "
        "being open, by reason.\n"
        "# TYPE platform_websocket_closed_total counter\n",
        sh->open, sh->accepted, sh->refused, sh->messages_in,
        sh->messages_out);

    for (i = 0; i < NGX_PLATFORM_WS_ENDS; i++) {
        p = ngx_slprintf(p, last,
                         "platform_websocket_closed_total{reason=\"%s\"} "
                         "%uA\n", ngx_platform_ws_ends[i], sh->closed[i]);
    }

    return p;
}


static ngx_int_t
ngx_platform_ws_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_platform_ws_main_conf_t *owmcf = data;

    ngx_slab_pool_t              *shpool;
    ngx_platform_ws_main_conf_t  *wmcf;

    wmcf = zone->data;

    /* the figures survive a reload (old workers still count theirs) */

    if (owmcf) {
        wmcf->sh = owmcf->sh;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        wmcf->sh = shpool->data;
        return NGX_OK;
    }

    wmcf->sh = ngx_slab_calloc(shpool, sizeof(ngx_platform_ws_shctx_t));
    if (wmcf->sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = wmcf->sh;

    return NGX_OK;
}


ngx_int_t
ngx_platform_ws_enable(ngx_conf_t *cf)
{
    ngx_str_t                     name = ngx_string("platform_websocket");
    ngx_platform_ws_main_conf_t  *wmcf;

    wmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_ws_module);

    if (wmcf->zone) {
        return NGX_OK;
    }

    wmcf->zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                       &ngx_platform_ws_module);
    if (wmcf->zone == NULL) {
        return NGX_ERROR;
    }

    wmcf->zone->init = ngx_platform_ws_init_zone;
    wmcf->zone->data = wmcf;

    return NGX_OK;
}


/* configuration */


static void *
ngx_platform_ws_create_main_conf(ngx_conf_t *cf)
{
    ngx_platform_ws_main_conf_t  *wmcf;

    wmcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_ws_main_conf_t));
    if (wmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     wmcf->zone = NULL;
     *     wmcf->sh = NULL;
     */

    return wmcf;
}


static void *
ngx_platform_ws_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_ws_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_ws_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->handler = NULL;
     */

    conf->max_message_size = NGX_CONF_UNSET_SIZE;
    conf->send_buffer = NGX_CONF_UNSET_SIZE;
    conf->ping_interval = NGX_CONF_UNSET_MSEC;
    conf->idle_timeout = NGX_CONF_UNSET_MSEC;
    conf->close_timeout = NGX_CONF_UNSET_MSEC;
    conf->shutdown_timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_platform_ws_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_ws_loc_conf_t  *prev = parent;
    ngx_platform_ws_loc_conf_t  *conf = child;

    ngx_conf_merge_size_value(conf->max_message_size, prev->max_message_size,
                              64 * 1024);
    ngx_conf_merge_size_value(conf->send_buffer, prev->send_buffer,
                              256 * 1024);
    ngx_conf_merge_msec_value(conf->ping_interval, prev->ping_interval,
                              30000);
    ngx_conf_merge_msec_value(conf->idle_timeout, prev->idle_timeout, 75000);
    ngx_conf_merge_msec_value(conf->close_timeout, prev->close_timeout, 5000);
    ngx_conf_merge_msec_value(conf->shutdown_timeout, prev->shutdown_timeout,
                              5000);

    if (conf->max_message_size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_websocket_max_message_size\" must "
                           "not be 0");
        return NGX_CONF_ERROR;
    }

    if (conf->send_buffer < conf->max_message_size
                            + NGX_PLATFORM_WS_MAX_HEADER)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_websocket_send_buffer\" must hold a "
                           "message of \"platform_websocket_max_message_"
                           "size\" (%uz bytes) and its header",
                           conf->max_message_size);
        return NGX_CONF_ERROR;
    }

    if (conf->close_timeout == 0 || conf->shutdown_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_websocket_close_timeout\" and "
                           "\"platform_websocket_shutdown_timeout\" must "
                           "not be 0");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* platform_websocket NAME; */

static char *
ngx_platform_ws(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_ws_loc_conf_t *wlcf = conf;

    ngx_str_t                   *value;
    ngx_uint_t                   i;
    ngx_http_core_loc_conf_t    *clcf;

    if (wlcf->handler) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; ngx_platform_ws_handlers[i]; i++) {
        if (ngx_platform_ws_handlers[i]->name.len == value[1].len
            && ngx_strncmp(ngx_platform_ws_handlers[i]->name.data,
                           value[1].data, value[1].len) == 0)
        {
            wlcf->handler = ngx_platform_ws_handlers[i];
            break;
        }
    }

    if (wlcf->handler == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown WebSocket handler \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_platform_ws_enable(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_platform_ws_content_handler;

    return NGX_CONF_OK;
}
