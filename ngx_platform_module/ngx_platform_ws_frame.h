
/*
 * WebSocket frames (RFC 6455 section 5): an incremental parser and the
 * header encoder.
 *
 * Pure C with no nginx event code, so it is fuzzed on its own
 * (t/fuzz/ws_frame_fuzz.c): bytes go in, whatever split, and come out as
 * pieces of message payload, whole control frames or an error that names
 * the close code to fail the connection with.
 */


#ifndef _NGX_PLATFORM_WS_FRAME_H_INCLUDED_
#define _NGX_PLATFORM_WS_FRAME_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>


/* opcodes */
#define NGX_PLATFORM_WS_CONTINUATION     0x0
#define NGX_PLATFORM_WS_TEXT             0x1
#define NGX_PLATFORM_WS_BINARY           0x2
#define NGX_PLATFORM_WS_CLOSE            0x8
#define NGX_PLATFORM_WS_PING             0x9
#define NGX_PLATFORM_WS_PONG             0xa

/* close codes (section 7.4.1) */
#define NGX_PLATFORM_WS_NORMAL           1000
#define NGX_PLATFORM_WS_GOING_AWAY       1001
#define NGX_PLATFORM_WS_PROTOCOL_ERROR   1002
#define NGX_PLATFORM_WS_UNACCEPTABLE     1003
#define NGX_PLATFORM_WS_NO_STATUS        1005     /* never sent */
#define NGX_PLATFORM_WS_ABNORMAL         1006     /* never sent */
#define NGX_PLATFORM_WS_INVALID_DATA     1007
#define NGX_PLATFORM_WS_POLICY           1008
#define NGX_PLATFORM_WS_TOO_BIG          1009
#define NGX_PLATFORM_WS_INTERNAL_ERROR   1011

#define NGX_PLATFORM_WS_MAX_CONTROL      125
#define NGX_PLATFORM_WS_MAX_HEADER       14

/* what ngx_platform_ws_parse() returns */
#define NGX_PLATFORM_WS_AGAIN            0        /* input used up */
#define NGX_PLATFORM_WS_DATA             1        /* message payload */
#define NGX_PLATFORM_WS_CONTROL          2        /* a whole control frame */
#define NGX_PLATFORM_WS_ERROR            3        /* fail the connection */


typedef struct {
    /* set by the caller before the first call */
    uint64_t                max_message;  /* 0: no limit */
    unsigned                server:1;     /* frames must be masked */

    /*
     * The event returned.  DATA: data/len is payload of the message being
     * received (unmasked in place in the caller's buffer), opcode is the
     * message's (text or binary), last is set on its final piece (which
     * may be empty).  CONTROL: opcode is the frame's, data/len its payload
     * (in the parser); for a close frame, code is its status code (0 when
     * the payload is empty) and reason/reason_len its text.  ERROR: code
     * is the close code to send (1002, 1007 or 1009) and error says why.
     */
    u_char                 *data;
    size_t                  len;
    unsigned                opcode:4;
    unsigned                last:1;
    unsigned                code:16;
    u_char                 *reason;
    size_t                  reason_len;
    const char             *error;

    /* state */
    unsigned                state:2;
    unsigned                frame_opcode:4;
    unsigned                fin:1;
    unsigned                masked:1;
    unsigned                in_message:1;
    unsigned                message_opcode:4;
    unsigned                mask_pos:2;
    size_t                  header_len;   /* bytes of header collected */
    size_t                  header_need;  /* header size once known */
    u_char                  header[NGX_PLATFORM_WS_MAX_HEADER];
    u_char                  mask[4];
    uint64_t                remaining;    /* payload bytes of the frame */
    uint64_t                message_len;  /* payload of the message so far */
    uint32_t                utf8;         /* validator of a text message */
    size_t                  control_len;
    u_char                  control[NGX_PLATFORM_WS_MAX_CONTROL];
} ngx_platform_ws_parser_t;


void ngx_platform_ws_parser_init(ngx_platform_ws_parser_t *p,
    uint64_t max_message, unsigned server);
int ngx_platform_ws_parse(ngx_platform_ws_parser_t *p, u_char **pos,
    u_char *last);

size_t ngx_platform_ws_header(u_char *buf, unsigned fin, unsigned opcode,
    uint64_t len, const u_char *mask);
void ngx_platform_ws_mask(u_char *p, size_t n, const u_char mask[4],
    unsigned *pos);

/* UTF-8, incrementally: 0 valid so far, -1 invalid; complete: state 0 */
int ngx_platform_ws_utf8(uint32_t *state, const u_char *p, size_t n);
int ngx_platform_ws_close_code_valid(unsigned code);


#endif /* _NGX_PLATFORM_WS_FRAME_H_INCLUDED_ */
