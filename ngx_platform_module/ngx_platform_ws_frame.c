
/*
 * WebSocket frames: the incremental parser, the header encoder, masking
 * and UTF-8 validation.  No nginx headers: this file builds on its own for
 * the fuzzer (t/fuzz/ws_frame_fuzz.c).
 *
 * Every rule is checked as soon as the byte that breaks it arrives
 * ("fail fast"): reserved bits, opcodes and the fragmentation rules at the
 * first byte of a frame, masking and the length of control frames at the
 * second, the 64-bit length and the message size limit when the length is
 * complete (before any payload is read), UTF-8 at the offending byte.
 *
 * Lengths need not use the fewest bytes: RFC 6455 section 5.2 asks the
 * sender to use the minimal encoding but gives the receiver no rule, and a
 * longer encoding is no risk (the value is checked against the limit all
 * the same), so such frames are accepted.
 */


#include "ngx_platform_ws_frame.h"

#include <string.h>


#define NGX_PLATFORM_WS_ST_HEADER   0
#define NGX_PLATFORM_WS_ST_PAYLOAD  1
#define NGX_PLATFORM_WS_ST_ERROR    2


static int ngx_platform_ws_first_byte(ngx_platform_ws_parser_t *p);
static int ngx_platform_ws_second_byte(ngx_platform_ws_parser_t *p);
static int ngx_platform_ws_frame_start(ngx_platform_ws_parser_t *p);
static int ngx_platform_ws_frame_end(ngx_platform_ws_parser_t *p);
static int ngx_platform_ws_fail(ngx_platform_ws_parser_t *p, unsigned code,
    const char *error);


void
ngx_platform_ws_parser_init(ngx_platform_ws_parser_t *p,
    uint64_t max_message, unsigned server)
{
    memset(p, 0, sizeof(ngx_platform_ws_parser_t));

    p->max_message = max_message;
    p->server = server ? 1 : 0;
    p->header_need = 2;
}


int
ngx_platform_ws_parse(ngx_platform_ws_parser_t *p, u_char **pos,
    u_char *last)
{
    int        rc;
    size_t     n;
    u_char    *s;
    unsigned   mpos;

    if (p->state == NGX_PLATFORM_WS_ST_ERROR) {
        return NGX_PLATFORM_WS_ERROR;
    }

    p->data = NULL;
    p->len = 0;
    p->last = 0;
    p->code = 0;
    p->reason = NULL;
    p->reason_len = 0;

    s = *pos;

    for ( ;; ) {

        if (p->state == NGX_PLATFORM_WS_ST_HEADER) {

            if (s == last) {
                *pos = s;
                return NGX_PLATFORM_WS_AGAIN;
            }

            p->header[p->header_len++] = *s++;

            if (p->header_len == 1) {
                rc = ngx_platform_ws_first_byte(p);

            } else if (p->header_len == 2) {
                rc = ngx_platform_ws_second_byte(p);

            } else {
                rc = NGX_PLATFORM_WS_AGAIN;
            }

            if (rc == NGX_PLATFORM_WS_AGAIN
                && p->header_len == p->header_need)
            {
                rc = ngx_platform_ws_frame_start(p);
            }

            if (rc != NGX_PLATFORM_WS_AGAIN) {
                *pos = s;
                return rc;
            }

            continue;
        }

        /* payload */

        if (s == last) {
            *pos = s;
            return NGX_PLATFORM_WS_AGAIN;
        }

        n = last - s;

        if ((uint64_t) n > p->remaining) {
            n = (size_t) p->remaining;
        }

        if (p->frame_opcode & 0x8) {

            /* control frames are gathered whole: at most 125 bytes */

            memcpy(p->control + p->control_len, s, n);

            if (p->masked) {
                mpos = p->mask_pos;
                ngx_platform_ws_mask(p->control + p->control_len, n, p->mask,
                                     &mpos);
                p->mask_pos = mpos;
            }

            p->control_len += n;
            p->remaining -= n;
            s += n;

            if (p->remaining) {
                continue;
            }

            rc = ngx_platform_ws_frame_end(p);

            if (rc != NGX_PLATFORM_WS_AGAIN) {
                *pos = s;
                return rc;
            }

            continue;
        }

        if (p->masked) {
            mpos = p->mask_pos;
            ngx_platform_ws_mask(s, n, p->mask, &mpos);
            p->mask_pos = mpos;
        }

        if (p->message_opcode == NGX_PLATFORM_WS_TEXT
            && ngx_platform_ws_utf8(&p->utf8, s, n) != 0)
        {
            *pos = s;
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_INVALID_DATA,
                                        "text is not UTF-8");
        }

        p->data = s;
        p->len = n;
        p->opcode = p->message_opcode;
        p->remaining -= n;
        s += n;

        *pos = s;

        if (p->remaining) {
            return NGX_PLATFORM_WS_DATA;
        }

        return ngx_platform_ws_frame_end(p);
    }
}


static int
ngx_platform_ws_first_byte(ngx_platform_ws_parser_t *p)
{
    unsigned  b, opcode;

    b = p->header[0];
    opcode = b & 0x0f;

    if (b & 0x70) {
        /* no extension is negotiated, so no reserved bit may be set */
        return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                    "reserved bits set");
    }

    switch (opcode) {

    case NGX_PLATFORM_WS_CONTINUATION:
        if (!p->in_message) {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                        "continuation without a message");
        }
        break;

    case NGX_PLATFORM_WS_TEXT:
    case NGX_PLATFORM_WS_BINARY:
        if (p->in_message) {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                        "new message inside a fragmented "
                                        "message");
        }
        break;

    case NGX_PLATFORM_WS_CLOSE:
    case NGX_PLATFORM_WS_PING:
    case NGX_PLATFORM_WS_PONG:
        if (!(b & 0x80)) {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                        "fragmented control frame");
        }
        break;

    default:
        return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                    "unknown opcode");
    }

    p->fin = (b & 0x80) ? 1 : 0;
    p->frame_opcode = opcode;

    return NGX_PLATFORM_WS_AGAIN;
}


static int
ngx_platform_ws_second_byte(ngx_platform_ws_parser_t *p)
{
    unsigned  b, len;

    b = p->header[1];
    len = b & 0x7f;

    p->masked = (b & 0x80) ? 1 : 0;

    if (p->server && !p->masked) {
        return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                    "unmasked frame");
    }

    if (!p->server && p->masked) {
        return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                    "masked frame from a server");
    }

    if ((p->frame_opcode & 0x8) && len > NGX_PLATFORM_WS_MAX_CONTROL) {
        return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                    "control frame longer than 125 bytes");
    }

    p->header_need = 2 + (len == 126 ? 2 : (len == 127 ? 8 : 0))
                     + (p->masked ? 4 : 0);

    return NGX_PLATFORM_WS_AGAIN;
}


static int
ngx_platform_ws_frame_start(ngx_platform_ws_parser_t *p)
{
    u_char    *h;
    unsigned   i;
    uint64_t   len;

    h = p->header + 2;
    len = p->header[1] & 0x7f;

    if (len == 126) {
        len = ((uint64_t) h[0] << 8) | h[1];
        h += 2;

    } else if (len == 127) {

        if (h[0] & 0x80) {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                        "64-bit length with the top bit set");
        }

        len = 0;

        for (i = 0; i < 8; i++) {
            len = (len << 8) | h[i];
        }

        h += 8;
    }

    if (p->masked) {
        memcpy(p->mask, h, 4);
        p->mask_pos = 0;
    }

    p->header_len = 0;
    p->header_need = 2;
    p->remaining = len;

    if (p->frame_opcode & 0x8) {
        p->control_len = 0;

    } else {

        if (p->frame_opcode != NGX_PLATFORM_WS_CONTINUATION) {
            p->in_message = 1;
            p->message_opcode = p->frame_opcode;
            p->message_len = 0;
            p->utf8 = 0;
        }

        if (p->max_message
            && (len > p->max_message
                || p->message_len > p->max_message - len))
        {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_TOO_BIG,
                                        "message too big");
        }

        p->message_len += len;
    }

    if (len) {
        p->state = NGX_PLATFORM_WS_ST_PAYLOAD;
        return NGX_PLATFORM_WS_AGAIN;
    }

    return ngx_platform_ws_frame_end(p);
}


/* the frame's payload is complete */

static int
ngx_platform_ws_frame_end(ngx_platform_ws_parser_t *p)
{
    unsigned  code;
    uint32_t  state;

    p->state = NGX_PLATFORM_WS_ST_HEADER;

    if (p->frame_opcode & 0x8) {
        p->opcode = p->frame_opcode;
        p->data = p->control;
        p->len = p->control_len;

        if (p->frame_opcode != NGX_PLATFORM_WS_CLOSE
            || p->control_len == 0)
        {
            return NGX_PLATFORM_WS_CONTROL;
        }

        if (p->control_len == 1) {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                        "close frame with a 1-byte payload");
        }

        code = ((unsigned) p->control[0] << 8) | p->control[1];

        if (!ngx_platform_ws_close_code_valid(code)) {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_PROTOCOL_ERROR,
                                        "invalid close code");
        }

        state = 0;

        if (ngx_platform_ws_utf8(&state, p->control + 2, p->control_len - 2)
            != 0
            || state != 0)
        {
            return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_INVALID_DATA,
                                        "close reason is not UTF-8");
        }

        p->code = code;
        p->reason = p->control + 2;
        p->reason_len = p->control_len - 2;

        return NGX_PLATFORM_WS_CONTROL;
    }

    if (!p->fin) {
        /* more fragments follow; a piece was returned already, if any */

        if (p->data) {
            return NGX_PLATFORM_WS_DATA;
        }

        return NGX_PLATFORM_WS_AGAIN;
    }

    if (p->message_opcode == NGX_PLATFORM_WS_TEXT && p->utf8 != 0) {
        return ngx_platform_ws_fail(p, NGX_PLATFORM_WS_INVALID_DATA,
                                    "text ends inside a character");
    }

    p->in_message = 0;
    p->opcode = p->message_opcode;
    p->last = 1;

    if (p->data == NULL) {
        /* an empty final frame: the message ends with no more payload */
        p->data = p->control;
        p->len = 0;
    }

    return NGX_PLATFORM_WS_DATA;
}


static int
ngx_platform_ws_fail(ngx_platform_ws_parser_t *p, unsigned code,
    const char *error)
{
    p->state = NGX_PLATFORM_WS_ST_ERROR;
    p->code = code;
    p->error = error;
    p->data = NULL;
    p->len = 0;
    p->last = 0;

    return NGX_PLATFORM_WS_ERROR;
}


size_t
ngx_platform_ws_header(u_char *buf, unsigned fin, unsigned opcode,
    uint64_t len, const u_char *mask)
{
    int      i;
    u_char  *p, m;

    p = buf;
    m = mask ? 0x80 : 0;

    *p++ = (u_char) ((fin ? 0x80 : 0) | (opcode & 0x0f));

    if (len < 126) {
        *p++ = (u_char) (m | len);

    } else if (len <= 0xffff) {
        *p++ = m | 126;
        *p++ = (u_char) (len >> 8);
        *p++ = (u_char) (len & 0xff);

    } else {
        *p++ = m | 127;

        for (i = 7; i >= 0; i--) {
            *p++ = (u_char) ((len >> (i * 8)) & 0xff);
        }
    }

    if (mask) {
        memcpy(p, mask, 4);
        p += 4;
    }

    return p - buf;
}


/* XOR with the mask, starting at byte *pos of it; eight bytes at a time */

void
ngx_platform_ws_mask(u_char *p, size_t n, const u_char mask[4],
    unsigned *pos)
{
    size_t    i;
    u_char    rot[8];
    uint64_t  m, w;

    if (n >= 16) {

        for (i = 0; i < 8; i++) {
            rot[i] = mask[(*pos + i) & 3];
        }

        memcpy(&m, rot, 8);

        while (n >= 8) {
            memcpy(&w, p, 8);
            w ^= m;
            memcpy(p, &w, 8);
            p += 8;
            n -= 8;
        }
    }

    for (i = 0; i < n; i++) {
        p[i] ^= mask[(*pos + i) & 3];
    }

    *pos = (*pos + (unsigned) n) & 3;
}


/*
 * The state is the number of continuation bytes still expected and the
 * range the next one must fall in (which rules out overlong forms,
 * surrogates and code points above U+10FFFF), or 0 between characters.
 */

int
ngx_platform_ws_utf8(uint32_t *state, const u_char *p, size_t n)
{
    unsigned       c, need, lo, hi;
    uint64_t       w;
    const u_char  *last;

    need = *state & 3;
    lo = (*state >> 8) & 0xff;
    hi = (*state >> 16) & 0xff;

    last = p + n;

    while (p < last) {

        if (need) {
            c = *p++;

            if (c < lo || c > hi) {
                return -1;
            }

            need--;
            lo = 0x80;
            hi = 0xbf;

            continue;
        }

        while (last - p >= 8) {
            memcpy(&w, p, 8);

            if (w & 0x8080808080808080ULL) {
                break;
            }

            p += 8;
        }

        if (p == last) {
            break;
        }

        c = *p++;

        if (c < 0x80) {
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;

        } else if (c == 0xe0) {
            need = 2;
            lo = 0xa0;

        } else if (c == 0xed) {
            need = 2;
            hi = 0x9f;

        } else if (c >= 0xe1 && c <= 0xef) {
            need = 2;

        } else if (c == 0xf0) {
            need = 3;
            lo = 0x90;

        } else if (c >= 0xf1 && c <= 0xf3) {
            need = 3;

        } else if (c == 0xf4) {
            need = 3;
            hi = 0x8f;

        } else {
            return -1;
        }
    }

    *state = need ? (need | (lo << 8) | (hi << 16)) : 0;

    return 0;
}


/* codes an endpoint may send (section 7.4) */

int
ngx_platform_ws_close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003)
           || (code >= 1007 && code <= 1011)
           || (code >= 3000 && code <= 4999);
}
