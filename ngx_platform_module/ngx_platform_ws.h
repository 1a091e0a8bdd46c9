
/*
 * WebSocket connections (RFC 6455) for the module's handlers.
 *
 * A handler is a set of callbacks.  ngx_platform_ws.c does the handshake,
 * takes the connection over after 101, parses and validates frames,
 * answers pings, keeps the connection alive, bounds what is queued for a
 * slow client and runs the closing handshake; the handler sees whole
 * messages only:
 *
 *   open(ws)      after 101 was queued; may send.  NGX_ERROR closes the
 *                 connection with 1011.
 *   message(ws, opcode, data, len)
 *                 a complete text (valid UTF-8) or binary message of at
 *                 most platform_websocket_max_message_size bytes; data is
 *                 only valid during the call.  NGX_ERROR closes with 1011.
 *   close(ws, code)
 *                 once, when the connection stops being open (the close
 *                 code received or sent, 1006 when it was dropped).  After
 *                 it ws must be forgotten: the memory goes away with the
 *                 request.  It never runs inside ngx_platform_ws_send() or
 *                 ngx_platform_ws_close(), so a handler may send in a loop
 *                 over its connections without them vanishing under it.
 *
 * Any callback may be NULL.  The request stays alive for the whole
 * connection: ws->request's variables ($platform_user and the other
 * identity variables set by platform_auth, $arg_*, captures) can be read
 * in every callback.  ws->data is the handler's.
 *
 * A handler is named in ngx_platform_ws_handlers[] (ngx_platform_ws.c) and
 * chosen with "platform_websocket NAME;", or a content handler of its own
 * calls ngx_platform_ws_upgrade().
 */


#ifndef _NGX_PLATFORM_WS_H_INCLUDED_
#define _NGX_PLATFORM_WS_H_INCLUDED_


#include "ngx_platform_module.h"
#include "ngx_platform_ws_frame.h"


typedef struct ngx_platform_ws_s  ngx_platform_ws_t;


typedef struct {
    ngx_str_t                   name;
    ngx_int_t                 (*open)(ngx_platform_ws_t *ws);
    ngx_int_t                 (*message)(ngx_platform_ws_t *ws,
                                         ngx_uint_t opcode, u_char *data,
                                         size_t len);
    void                      (*close)(ngx_platform_ws_t *ws,
                                       ngx_uint_t code);
} ngx_platform_ws_handler_t;


/* the part a handler may use; the rest is private to ngx_platform_ws.c */
struct ngx_platform_ws_s {
    ngx_http_request_t         *request;
    ngx_connection_t           *connection;
    ngx_platform_ws_handler_t  *handler;
    void                       *data;
};


/*
 * From a content handler: checks the handshake and answers it (an error
 * response, or 101 and the connection taken over).  The content handler
 * returns what this returns.  data becomes ws->data before open().
 */
ngx_int_t ngx_platform_ws_upgrade(ngx_http_request_t *r,
    ngx_platform_ws_handler_t *handler, void *data);

/*
 * Queues a text, binary, ping or pong frame (unfragmented, unmasked); the
 * queue is written on the next pass of the event loop, several frames in
 * one writev.  NGX_OK: queued; NGX_DECLINED: not sent because the
 * connection is closing, or because the queue would pass
 * platform_websocket_send_buffer (the connection is then closed with
 * 1008); NGX_ERROR: no memory (the connection is then failed).
 */
ngx_int_t ngx_platform_ws_send(ngx_platform_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len);

/*
 * Shared frames for fan-out: a buffer of frames built once (header and
 * payload, ngx_platform_ws_shared_add()) and queued to many connections
 * without copying.  The creator holds one reference, each queued piece
 * another; the buffer is freed with the last.  ngx_platform_ws_shared_add()
 * needs NGX_PLATFORM_WS_MAX_HEADER + len bytes free and returns where the
 * frame starts, or NULL.  ngx_platform_ws_send_shared() queues the bytes
 * pos..last of the buffer (whole frames, "messages" of them, for the
 * statistics): the same answers as ngx_platform_ws_send().
 */
typedef struct {
    ngx_uint_t                  refs;
    u_char                     *start;
    u_char                     *last;
    u_char                     *end;
} ngx_platform_ws_shared_t;

ngx_platform_ws_shared_t *ngx_platform_ws_shared_create(size_t size,
    ngx_log_t *log);
u_char *ngx_platform_ws_shared_add(ngx_platform_ws_shared_t *sb,
    ngx_uint_t opcode, u_char *data, size_t len);
void ngx_platform_ws_shared_release(ngx_platform_ws_shared_t *sb);
ngx_int_t ngx_platform_ws_send_shared(ngx_platform_ws_t *ws,
    ngx_platform_ws_shared_t *sb, u_char *pos, u_char *last,
    ngx_uint_t messages);

/*
 * Starts the closing handshake: frames already queued go first, then a
 * close frame with code (1000-1003, 1007-1011, 3000-4999) and reason
 * (UTF-8, cut at 123 bytes); the connection ends when the client answers or
 * after platform_websocket_close_timeout.
 */
void ngx_platform_ws_close(ngx_platform_ws_t *ws, ngx_uint_t code,
    ngx_str_t *reason);

/* from a directive that sets a WebSocket handler: the statistics zone */
ngx_int_t ngx_platform_ws_enable(ngx_conf_t *cf);

/* platform_status lines */
u_char *ngx_platform_ws_status(ngx_http_request_t *r, u_char *p,
    u_char *last);


extern ngx_module_t  ngx_platform_ws_module;


#endif /* _NGX_PLATFORM_WS_H_INCLUDED_ */
