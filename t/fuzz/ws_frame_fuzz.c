
/*
 * libFuzzer target for the WebSocket frame parser
 * (ngx_platform_module/ngx_platform_ws_frame.c).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -I ngx_platform_module ngx_platform_module/ngx_platform_ws_frame.c \
 *       t/fuzz/ws_frame_fuzz.c -o ws_frame_fuzz
 *   ./ws_frame_fuzz -max_total_time=600 NEW_DIR t/fuzz/corpus/ws_frame
 *
 * (`make fuzz` does both.)  The first input byte chooses the mode, the
 * limit and how the rest is split:
 *
 *   bit 7      0: the rest is raw bytes from the network;
 *              1: the rest is a list of messages that are encoded with
 *              ngx_platform_ws_header() and ngx_platform_ws_mask(),
 *              fragmented, and must come out of the parser unchanged;
 *   bit 6      server side (frames must be masked) or client side;
 *   bits 0-2   the message size limit (see limits[]);
 *   bits 3-5   the split seed.
 *
 * Raw bytes are parsed three ways (at once, byte by byte, in pseudo-random
 * pieces) and every way must give the same messages, control frames and
 * error.  Each result is also checked on its own: text is valid UTF-8 by an
 * independent decoder, messages respect the limit, control payloads are at
 * most 125 bytes, close codes are valid.  A failed check aborts.
 */


#include "ngx_platform_ws_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define FUZZ_MAX_EVENTS  4096


typedef struct {
    int             type;
    unsigned        opcode;
    unsigned        code;
    size_t          len;
    size_t          offset;      /* of the payload in the log's data */
} fuzz_event_t;


typedef struct {
    fuzz_event_t    events[FUZZ_MAX_EVENTS];
    size_t          nevents;
    u_char         *data;
    size_t          data_len;
    size_t          data_size;
    size_t          message_start;
    int             in_message;
} fuzz_log_t;


static const uint64_t  limits[8] = {
    0, 1, 125, 126, 1000, 65535, 65536, 1 << 20
};


static void fuzz_check(int cond, const char *what);
static int fuzz_utf8_valid(const u_char *p, size_t n);
static void fuzz_log_reset(fuzz_log_t *log);
static void fuzz_append(fuzz_log_t *log, const u_char *p, size_t n);
static int fuzz_parse(const u_char *in, size_t n, unsigned flags,
    unsigned split, fuzz_log_t *log);
static void fuzz_compare(fuzz_log_t *a, fuzz_log_t *b);
static void fuzz_roundtrip(const u_char *in, size_t n, unsigned flags);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static fuzz_log_t  log_a, log_b, log_c;


static void
fuzz_check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "ws_frame_fuzz: check failed: %s\n", what);
        abort();
    }
}


/* decodes each code point and checks its value: a second opinion */

static int
fuzz_utf8_valid(const u_char *p, size_t n)
{
    size_t    i, k, len;
    uint32_t  cp, min;

    for (i = 0; i < n; /* void */) {

        if (p[i] < 0x80) {
            i++;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            len = 2;
            cp = p[i] & 0x1f;
            min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            len = 3;
            cp = p[i] & 0x0f;
            min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            len = 4;
            cp = p[i] & 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        if (n - i < len) {
            return 0;
        }

        for (k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += len;
    }

    return 1;
}


static void
fuzz_log_reset(fuzz_log_t *log)
{
    log->nevents = 0;
    log->data_len = 0;
    log->message_start = 0;
    log->in_message = 0;
}


static void
fuzz_append(fuzz_log_t *log, const u_char *p, size_t n)
{
    if (log->data_len + n > log->data_size) {
        log->data_size = (log->data_len + n) * 2 + 256;
        log->data = realloc(log->data, log->data_size);
        fuzz_check(log->data != NULL, "realloc");
    }

    if (n) {
        memcpy(log->data + log->data_len, p, n);
        log->data_len += n;
    }
}


/*
 * Parses a copy of in[] in pieces: split 0 at once, 1 byte by byte, else
 * pseudo-random sizes from the seed.  Returns 1 if it ended in an error.
 */

static int
fuzz_parse(const u_char *in, size_t n, unsigned flags, unsigned split,
    fuzz_log_t *log)
{
    int                        rc, failed;
    u_char                    *buf, *pos, *end, *last;
    size_t                     piece;
    uint32_t                   rnd;
    uint64_t                   limit;
    fuzz_event_t              *ev;
    ngx_platform_ws_parser_t   p;

    limit = limits[flags & 7];

    ngx_platform_ws_parser_init(&p, limit, (flags >> 6) & 1);
    fuzz_log_reset(log);

    buf = malloc(n ? n : 1);
    fuzz_check(buf != NULL, "malloc");
    memcpy(buf, in, n);

    pos = buf;
    end = buf + n;
    rnd = split * 2654435761u + 1;
    failed = 0;

    while (pos < end && !failed) {

        if (split == 0) {
            piece = end - pos;

        } else if (split == 1) {
            piece = 1;

        } else {
            rnd = rnd * 1103515245u + 12345;
            piece = 1 + (rnd >> 16) % 19;

            if (piece > (size_t) (end - pos)) {
                piece = end - pos;
            }
        }

        last = pos + piece;

        for ( ;; ) {
            rc = ngx_platform_ws_parse(&p, &pos, last);

            fuzz_check(pos <= last, "position past the input");

            if (rc == NGX_PLATFORM_WS_AGAIN) {
                fuzz_check(pos == last, "AGAIN before the end");
                break;
            }

            if (rc == NGX_PLATFORM_WS_DATA) {
                fuzz_check(p.opcode == NGX_PLATFORM_WS_TEXT
                           || p.opcode == NGX_PLATFORM_WS_BINARY,
                           "data of a message with a bad opcode");
                fuzz_check(p.data != NULL, "data without a pointer");

                if (!log->in_message) {
                    log->in_message = 1;
                    log->message_start = log->data_len;
                }

                fuzz_append(log, p.data, p.len);

                if (limit) {
                    fuzz_check(log->data_len - log->message_start <= limit,
                               "message over the limit");
                }

                if (!p.last) {
                    continue;
                }

                if (p.opcode == NGX_PLATFORM_WS_TEXT) {
                    fuzz_check(fuzz_utf8_valid(log->data + log->message_start,
                                               log->data_len
                                               - log->message_start),
                               "text message that is not UTF-8");
                }

                log->in_message = 0;

                if (log->nevents == FUZZ_MAX_EVENTS) {
                    continue;
                }

                ev = &log->events[log->nevents++];
                ev->type = rc;
                ev->opcode = p.opcode;
                ev->code = 0;
                ev->offset = log->message_start;
                ev->len = log->data_len - log->message_start;

                continue;
            }

            if (rc == NGX_PLATFORM_WS_CONTROL) {
                fuzz_check(p.opcode == NGX_PLATFORM_WS_CLOSE
                           || p.opcode == NGX_PLATFORM_WS_PING
                           || p.opcode == NGX_PLATFORM_WS_PONG,
                           "control frame with a bad opcode");
                fuzz_check(p.len <= NGX_PLATFORM_WS_MAX_CONTROL,
                           "control payload over 125 bytes");

                if (p.opcode == NGX_PLATFORM_WS_CLOSE) {
                    if (p.len == 0) {
                        fuzz_check(p.code == 0, "code without payload");

                    } else {
                        fuzz_check(p.len >= 2, "1-byte close accepted");
                        fuzz_check(ngx_platform_ws_close_code_valid(p.code),
                                   "invalid close code accepted");
                        fuzz_check(p.reason_len == p.len - 2,
                                   "close reason length");
                        fuzz_check(fuzz_utf8_valid(p.reason, p.reason_len),
                                   "close reason that is not UTF-8");
                    }
                }

                if (log->nevents == FUZZ_MAX_EVENTS) {
                    continue;
                }

                /* control frames go in the log beside the messages' data */

                ev = &log->events[log->nevents++];
                ev->type = rc;
                ev->opcode = p.opcode;
                ev->code = p.code;
                ev->offset = 0;
                ev->len = p.len;

                continue;
            }

            fuzz_check(rc == NGX_PLATFORM_WS_ERROR, "unknown result");
            fuzz_check(p.code == NGX_PLATFORM_WS_PROTOCOL_ERROR
                       || p.code == NGX_PLATFORM_WS_INVALID_DATA
                       || p.code == NGX_PLATFORM_WS_TOO_BIG,
                       "error with an unexpected code");
            fuzz_check(p.error != NULL, "error without a reason");

            /* the parser stays failed */
            fuzz_check(ngx_platform_ws_parse(&p, &pos, last)
                       == NGX_PLATFORM_WS_ERROR, "error not sticky");

            if (log->nevents < FUZZ_MAX_EVENTS) {
                ev = &log->events[log->nevents++];
                ev->type = rc;
                ev->opcode = 0;
                ev->code = p.code;
                ev->offset = 0;
                ev->len = 0;
            }

            failed = 1;
            break;
        }
    }

    free(buf);

    return failed;
}


static void
fuzz_compare(fuzz_log_t *a, fuzz_log_t *b)
{
    size_t         i;
    fuzz_event_t  *x, *y;

    fuzz_check(a->nevents == b->nevents, "different number of events");

    for (i = 0; i < a->nevents; i++) {
        x = &a->events[i];
        y = &b->events[i];

        fuzz_check(x->type == y->type, "different event");
        fuzz_check(x->opcode == y->opcode, "different opcode");
        fuzz_check(x->code == y->code, "different code");
        fuzz_check(x->len == y->len, "different length");

        if (x->type == NGX_PLATFORM_WS_DATA && x->len) {
            fuzz_check(memcmp(a->data + x->offset, b->data + y->offset,
                              x->len) == 0, "different message");
        }
    }
}


/*
 * The rest of the input as messages: a byte for the kind and fragment
 * count, two for the length, then the payload.  Each is encoded, masked
 * and fragmented as a client would, with a ping between fragments
 * sometimes; the parser must give each back.
 */

static void
fuzz_roundtrip(const u_char *in, size_t n, unsigned flags)
{
    int                        rc;
    u_char                    *wire, *pos, *last, mask[4], *payload;
    size_t                     wlen, wsize, len, off, frag, nfrag, k, i, got;
    unsigned                   kind, opcode, mpos, server;
    uint32_t                   state;
    ngx_platform_ws_parser_t   p;

    server = (flags >> 6) & 1;
    ngx_platform_ws_parser_init(&p, 0, server);

    wsize = n * 2 + 64;
    wire = malloc(wsize);
    fuzz_check(wire != NULL, "malloc");

    i = 0;

    while (n - i >= 3) {
        kind = in[i];
        len = ((size_t) in[i + 1] << 8) | in[i + 2];
        i += 3;

        if (len > n - i) {
            len = n - i;
        }

        payload = (u_char *) in + i;
        i += len;

        opcode = (kind & 1) ? NGX_PLATFORM_WS_BINARY : NGX_PLATFORM_WS_TEXT;

        if (opcode == NGX_PLATFORM_WS_TEXT) {
            state = 0;

            if (ngx_platform_ws_utf8(&state, payload, len) != 0
                || state != 0)
            {
                fuzz_check(!fuzz_utf8_valid(payload, len),
                           "valid text refused by the validator");
                opcode = NGX_PLATFORM_WS_BINARY;

            } else {
                fuzz_check(fuzz_utf8_valid(payload, len),
                           "invalid text accepted by the validator");
            }
        }

        nfrag = 1 + ((kind >> 1) & 3);

        /* worst case: a 14-byte header and a 6-byte ping per fragment */
        if (len + nfrag * 20 + 16 > wsize) {
            wsize = len + nfrag * 20 + 16;
            free(wire);
            wire = malloc(wsize);
            fuzz_check(wire != NULL, "malloc");
        }

        wlen = 0;
        off = 0;

        for (k = 0; k < nfrag; k++) {
            frag = (k == nfrag - 1) ? len - off : (len - off) / 2;

            mask[0] = (u_char) (kind * 7);
            mask[1] = (u_char) (k + 1);
            mask[2] = (u_char) (len);
            mask[3] = 0xa5;

            wlen += ngx_platform_ws_header(wire + wlen, k == nfrag - 1,
                                           k ? NGX_PLATFORM_WS_CONTINUATION
                                             : opcode,
                                           frag, server ? mask : NULL);
            memcpy(wire + wlen, payload + off, frag);

            if (server) {
                mpos = 0;
                ngx_platform_ws_mask(wire + wlen, frag, mask, &mpos);
            }

            wlen += frag;
            off += frag;

            if ((kind & 0x80) && k < nfrag - 1) {
                wlen += ngx_platform_ws_header(wire + wlen, 1,
                                               NGX_PLATFORM_WS_PING, 0,
                                               server ? mask : NULL);
            }
        }

        pos = wire;
        last = wire + wlen;
        got = 0;

        for ( ;; ) {
            rc = ngx_platform_ws_parse(&p, &pos, last);

            if (rc == NGX_PLATFORM_WS_AGAIN) {
                break;
            }

            fuzz_check(rc != NGX_PLATFORM_WS_ERROR,
                       "an encoded message was refused");

            if (rc == NGX_PLATFORM_WS_CONTROL) {
                fuzz_check(p.opcode == NGX_PLATFORM_WS_PING && p.len == 0,
                           "a ping came out wrong");
                continue;
            }

            fuzz_check(p.opcode == opcode, "message opcode changed");
            fuzz_check(got + p.len <= len, "message grew");
            fuzz_check(memcmp(p.data, payload + got, p.len) == 0,
                       "message changed");
            got += p.len;

            if (p.last) {
                fuzz_check(got == len, "message shrank");
                fuzz_check(pos == last, "bytes after the message");
            }
        }

        fuzz_check(got == len, "message incomplete");
    }

    free(wire);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int       fa, fb, fc;
    unsigned  flags;

    if (size < 1) {
        return 0;
    }

    flags = data[0];
    data++;
    size--;

    if (flags & 0x80) {
        fuzz_roundtrip(data, size, flags);
        return 0;
    }

    fa = fuzz_parse(data, size, flags, 0, &log_a);
    fb = fuzz_parse(data, size, flags, 1, &log_b);
    fc = fuzz_parse(data, size, flags, 2 + ((flags >> 3) & 7), &log_c);

    fuzz_check(fa == fb && fa == fc, "split changed the outcome");

    fuzz_compare(&log_a, &log_b);
    fuzz_compare(&log_a, &log_c);

    return 0;
}
