
/*
 * Lift readings: an ingest body, MessagePack (msgpack-c) or JSON (a small
 * parser below producing the same msgpack_object tree), validated reading
 * by reading.  No nginx headers: t/fuzz/reading_fuzz.c links this file
 * alone.
 *
 * MessagePack headers declare element counts up to 2^32; msgpack-c
 * allocates them before reading the elements.  A first walk over the
 * headers therefore refuses counts larger than the bytes left (every
 * element takes at least one byte) and nesting deeper than max_depth, so
 * the allocations stay proportional to the body.
 */


#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <msgpack.h>

#include "ngx_platform_reading.h"


#define NGX_PLATFORM_MAX_SAFE  9007199254740991LL    /* 2^53 - 1 */


static const char *ngx_platform_kinds[] = { "trip", "door", "fault",
                                            "status" };
static const char *ngx_platform_dirs[] = { "up", "down", "none" };
static const char *ngx_platform_counter_names[] = { "trips", "floors",
    "door_cycles", "faults", "run_seconds" };


typedef struct {
    const unsigned char  *p;
    const unsigned char  *last;
    msgpack_zone         *zone;
    size_t                depth;
    size_t                max_depth;
} ngx_platform_json_t;


static int ngx_platform_mp_check(const unsigned char **pp,
    const unsigned char *last, size_t depth, size_t max_depth);
static int ngx_platform_json_value(ngx_platform_json_t *j,
    msgpack_object *o);
static void ngx_platform_reading_one(const msgpack_object *o, size_t index,
    const ngx_platform_reading_limits_t *limits,
    ngx_platform_readings_t *out);


const char *
ngx_platform_reading_kind_name(int kind)
{
    return ngx_platform_kinds[kind];
}


const char *
ngx_platform_reading_direction_name(int dir)
{
    return ngx_platform_dirs[dir];
}


int
ngx_platform_readings_decode(const unsigned char *data, size_t len, int json,
    const ngx_platform_reading_limits_t *limits, ngx_platform_readings_t *out)
{
    int                   rc;
    size_t                i, n, off;
    msgpack_zone          zone;
    msgpack_object        root;
    msgpack_unpacked      up;
    const unsigned char  *p;
    ngx_platform_json_t   j;

    out->nreadings = 0;
    out->nvalid = 0;
    out->nerrors = 0;
    out->ninvalid = 0;
    out->reason = NULL;

    if (len == 0) {
        out->reason = "the body is empty";
        return NGX_PLATFORM_READINGS_MALFORMED;
    }

    if (json) {
        if (!msgpack_zone_init(&zone, 4096)) {
            return NGX_PLATFORM_READINGS_NOMEM;
        }

        j.p = data;
        j.last = data + len;
        j.zone = &zone;
        j.depth = 0;
        j.max_depth = limits->max_depth;

        rc = ngx_platform_json_value(&j, &root);

        while (rc == 0 && j.p < j.last
               && (*j.p == ' ' || *j.p == '\t' || *j.p == '\r'
                   || *j.p == '\n'))
        {
            j.p++;
        }

        if (rc == 0 && j.p != j.last) {
            rc = -1;
        }

        if (rc != 0) {
            msgpack_zone_destroy(&zone);
            if (rc == -2) {
                return NGX_PLATFORM_READINGS_NOMEM;
            }
            out->reason = (j.depth > j.max_depth)
                          ? "the body is nested too deeply"
                          : "the body is not valid JSON";
            return NGX_PLATFORM_READINGS_MALFORMED;
        }

        rc = NGX_PLATFORM_READINGS_OK;
        goto decoded;
    }

    p = data;

    rc = ngx_platform_mp_check(&p, data + len, 1, limits->max_depth);

    if (rc != 0 || p != data + len) {
        out->reason = (rc == -2) ? "the body is nested too deeply"
                                 : "the body is not one MessagePack value";
        return NGX_PLATFORM_READINGS_MALFORMED;
    }

    msgpack_unpacked_init(&up);
    off = 0;

    rc = msgpack_unpack_next(&up, (const char *) data, len, &off);

    if (rc != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(&up);
        if (rc == MSGPACK_UNPACK_NOMEM_ERROR) {
            return NGX_PLATFORM_READINGS_NOMEM;
        }
        out->reason = "the body is not one MessagePack value";
        return NGX_PLATFORM_READINGS_MALFORMED;
    }

    root = up.data;
    rc = NGX_PLATFORM_READINGS_OK;

decoded:

    if (out->readings == NULL
        && (root.type == MSGPACK_OBJECT_MAP
            || (root.type == MSGPACK_OBJECT_ARRAY
                && root.via.array.size > 0
                && root.via.array.size <= limits->max_readings)))
    {
        n = (root.type == MSGPACK_OBJECT_MAP) ? 1 : root.via.array.size;

        out->readings = out->alloc(out->alloc_data,
                                   n * sizeof(ngx_platform_reading_t));
        if (out->readings == NULL) {
            rc = NGX_PLATFORM_READINGS_NOMEM;
            goto done;
        }
    }

    if (root.type == MSGPACK_OBJECT_MAP) {
        ngx_platform_reading_one(&root, 0, limits, out);

    } else if (root.type == MSGPACK_OBJECT_ARRAY) {

        if (root.via.array.size == 0) {
            out->reason = "the array of readings is empty";
            rc = NGX_PLATFORM_READINGS_MALFORMED;

        } else if (root.via.array.size > limits->max_readings) {
            rc = NGX_PLATFORM_READINGS_TOO_MANY;

        } else {
            for (i = 0; i < root.via.array.size; i++) {
                ngx_platform_reading_one(&root.via.array.ptr[i], i, limits,
                                         out);
            }
        }

    } else {
        out->reason = "the body must be a reading (map) or an array of them";
        rc = NGX_PLATFORM_READINGS_MALFORMED;
    }

done:

    if (json) {
        msgpack_zone_destroy(&zone);

    } else {
        msgpack_unpacked_destroy(&up);
    }

    return rc;
}


/* validation */


static void
ngx_platform_reading_error(ngx_platform_readings_t *out, size_t index,
    const char *field, const char *reason)
{
    ngx_platform_reading_error_t  *e;

    out->ninvalid++;

    if (out->nerrors < out->max_errors) {
        e = &out->errors[out->nerrors++];
        e->index = index;
        e->field = field;
        e->reason = reason;
    }
}


static int
ngx_platform_key_is(const msgpack_object *k, const char *name)
{
    size_t  n;

    n = strlen(name);

    return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}


/* an integer in [min, max]: 0, or -1 (not an integer) or -2 (range) */
static int
ngx_platform_int(const msgpack_object *o, int64_t min, int64_t max,
    int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t) INT64_MAX) {
            return -2;
        }
        *v = (int64_t) o->via.u64;

    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;

    } else {
        return -1;
    }

    return (*v < min || *v > max) ? -2 : 0;
}


static int
ngx_platform_enum(const msgpack_object *o, const char **names, int n)
{
    int  i;

    if (o->type != MSGPACK_OBJECT_STR) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (ngx_platform_key_is(o, names[i])) {
            return i;
        }
    }

    return -1;
}


#define ngx_platform_bad(field, reason)                                       \
    do {                                                                      \
        ngx_platform_reading_error(out, index, field, reason);                \
        return;                                                               \
    } while (0)


static void
ngx_platform_reading_one(const msgpack_object *o, size_t index,
    const ngx_platform_reading_limits_t *limits, ngx_platform_readings_t *out)
{
    int                      rc, c, kind;
    size_t                   i, n;
    int64_t                  v;
    unsigned                 seen;
    const char              *s;
    msgpack_object          *val, *cv;
    msgpack_object_kv       *kv, *ckv;
    ngx_platform_reading_t  *r;

    r = &out->readings[out->nreadings++];
    memset(r, 0, offsetof(ngx_platform_reading_t, fault_code) + 1);

    if (o->type != MSGPACK_OBJECT_MAP) {
        ngx_platform_bad("-", "a reading must be a map");
    }

    seen = 0;
    kv = o->via.map.ptr;

    for (i = 0; i < o->via.map.size; i++) {

        if (kv[i].key.type != MSGPACK_OBJECT_STR) {
            ngx_platform_bad("-", "field names must be strings");
        }

        val = &kv[i].val;

        if (ngx_platform_key_is(&kv[i].key, "seq")) {
            if (seen & 0x10000) {
                ngx_platform_bad("seq", "given twice");
            }
            seen |= 0x10000;
            rc = ngx_platform_int(val, 0, NGX_PLATFORM_MAX_SAFE, &r->seq);
            if (rc != 0) {
                ngx_platform_bad("seq", "must be an integer from 0 to 2^53-1");
            }

        } else if (ngx_platform_key_is(&kv[i].key, "ts")) {
            if (seen & 0x20000) {
                ngx_platform_bad("ts", "given twice");
            }
            seen |= 0x20000;
            rc = ngx_platform_int(val, 0, NGX_PLATFORM_MAX_SAFE, &r->ts_ms);
            if (rc != 0) {
                ngx_platform_bad("ts", "must be Unix time in milliseconds "
                                       "(an integer)");
            }
            if (r->ts_ms < limits->now_ms - limits->max_past_ms) {
                ngx_platform_bad("ts", "too old");
            }
            if (r->ts_ms > limits->now_ms + limits->max_future_ms) {
                ngx_platform_bad("ts", "in the future");
            }

        } else if (ngx_platform_key_is(&kv[i].key, "kind")) {
            if (seen & 0x40000) {
                ngx_platform_bad("kind", "given twice");
            }
            seen |= 0x40000;
            kind = ngx_platform_enum(val, ngx_platform_kinds, 4);
            if (kind < 0) {
                ngx_platform_bad("kind",
                                 "must be \"trip\", \"door\", \"fault\" or "
                                 "\"status\"");
            }
            r->kind = kind;

        } else if (ngx_platform_key_is(&kv[i].key, "floor_from")
                   || ngx_platform_key_is(&kv[i].key, "floor_to"))
        {
            s = ngx_platform_key_is(&kv[i].key, "floor_from") ? "floor_from"
                                                               : "floor_to";
            c = (s[6] == 'f') ? NGX_PLATFORM_R_FLOOR_FROM
                              : NGX_PLATFORM_R_FLOOR_TO;
            if (r->present & c) {
                ngx_platform_bad(s, "given twice");
            }
            if (val->type == MSGPACK_OBJECT_NIL) {
                continue;
            }
            if (ngx_platform_int(val, -20, 300, &v) != 0) {
                ngx_platform_bad(s, "must be an integer from -20 to 300");
            }
            r->present |= c;
            if (c == NGX_PLATFORM_R_FLOOR_FROM) {
                r->floor_from = (int32_t) v;
            } else {
                r->floor_to = (int32_t) v;
            }

        } else if (ngx_platform_key_is(&kv[i].key, "direction")) {
            if (r->present & NGX_PLATFORM_R_DIRECTION) {
                ngx_platform_bad("direction", "given twice");
            }
            if (val->type == MSGPACK_OBJECT_NIL) {
                continue;
            }
            rc = ngx_platform_enum(val, ngx_platform_dirs, 3);
            if (rc < 0) {
                ngx_platform_bad("direction",
                                 "must be \"up\", \"down\" or \"none\"");
            }
            r->present |= NGX_PLATFORM_R_DIRECTION;
            r->direction = rc;

        } else if (ngx_platform_key_is(&kv[i].key, "load")) {
            if (r->present & NGX_PLATFORM_R_LOAD) {
                ngx_platform_bad("load", "given twice");
            }
            if (val->type == MSGPACK_OBJECT_NIL) {
                continue;
            }
            if (ngx_platform_int(val, 0, 100000, &v) != 0) {
                ngx_platform_bad("load", "must be kilograms from 0 to 100000");
            }
            r->present |= NGX_PLATFORM_R_LOAD;
            r->load = (int32_t) v;

        } else if (ngx_platform_key_is(&kv[i].key, "temperature")) {
            if (r->present & NGX_PLATFORM_R_TEMPERATURE) {
                ngx_platform_bad("temperature", "given twice");
            }
            if (val->type == MSGPACK_OBJECT_NIL) {
                continue;
            }
            if (val->type == MSGPACK_OBJECT_FLOAT32
                || val->type == MSGPACK_OBJECT_FLOAT64)
            {
                r->temperature = val->via.f64;

            } else if (ngx_platform_int(val, -100, 200, &v) == 0) {
                r->temperature = (double) v;

            } else {
                ngx_platform_bad("temperature", "must be a number");
            }
            if (!(r->temperature >= -60.0 && r->temperature <= 150.0)) {
                ngx_platform_bad("temperature",
                                 "must be from -60 to 150 degrees Celsius");
            }
            r->present |= NGX_PLATFORM_R_TEMPERATURE;

        } else if (ngx_platform_key_is(&kv[i].key, "fault_code")) {
            if (r->present & NGX_PLATFORM_R_FAULT_CODE) {
                ngx_platform_bad("fault_code", "given twice");
            }
            if (val->type == MSGPACK_OBJECT_NIL) {
                continue;
            }
            if (val->type != MSGPACK_OBJECT_STR || val->via.str.size == 0
                || val->via.str.size > NGX_PLATFORM_FAULT_CODE_MAX)
            {
                ngx_platform_bad("fault_code",
                                 "must be text of 1 to 32 characters");
            }
            for (n = 0; n < val->via.str.size; n++) {
                c = (unsigned char) val->via.str.ptr[n];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                      || (c >= '0' && c <= '9') || c == '_' || c == '-'
                      || c == '.' || c == ':'))
                {
                    ngx_platform_bad("fault_code",
                                     "may hold letters, digits and _ - . :");
                }
            }
            memcpy(r->fault_code, val->via.str.ptr, val->via.str.size);
            r->fault_code[val->via.str.size] = '\0';
            r->fault_code_len = val->via.str.size;
            r->present |= NGX_PLATFORM_R_FAULT_CODE;

        } else if (ngx_platform_key_is(&kv[i].key, "counters")) {
            if (seen & 0x80000) {
                ngx_platform_bad("counters", "given twice");
            }
            seen |= 0x80000;
            if (val->type == MSGPACK_OBJECT_NIL) {
                continue;
            }
            if (val->type != MSGPACK_OBJECT_MAP) {
                ngx_platform_bad("counters", "must be a map");
            }

            ckv = val->via.map.ptr;

            for (n = 0; n < val->via.map.size; n++) {
                if (ckv[n].key.type != MSGPACK_OBJECT_STR) {
                    ngx_platform_bad("counters", "names must be strings");
                }

                c = ngx_platform_enum(&ckv[n].key, ngx_platform_counter_names,
                                      NGX_PLATFORM_COUNTERS);
                if (c < 0) {
                    ngx_platform_bad("counters", "unknown counter (trips, "
                                     "floors, door_cycles, faults, "
                                     "run_seconds)");
                }

                if (r->present & (NGX_PLATFORM_R_TRIPS << c)) {
                    ngx_platform_bad(ngx_platform_counter_names[c],
                                     "given twice");
                }

                cv = &ckv[n].val;

                if (cv->type == MSGPACK_OBJECT_NIL) {
                    continue;
                }

                if (ngx_platform_int(cv, 0, NGX_PLATFORM_MAX_SAFE,
                                     &r->counters[c]) != 0)
                {
                    ngx_platform_bad(ngx_platform_counter_names[c],
                                     "must be an integer from 0 to 2^53-1");
                }

                r->present |= (NGX_PLATFORM_R_TRIPS << c);
            }

        } else {
            ngx_platform_bad("-", "unknown field (seq, ts, kind, floor_from, "
                             "floor_to, direction, load, temperature, "
                             "fault_code, counters)");
        }
    }

    if (!(seen & 0x10000)) {
        ngx_platform_bad("seq", "is required");
    }

    if (!(seen & 0x20000)) {
        ngx_platform_bad("ts", "is required");
    }

    if (!(seen & 0x40000)) {
        ngx_platform_bad("kind", "is required");
    }

    r->valid = 1;
    out->nvalid++;
}


/* MessagePack: counts and depth before msgpack-c allocates */


static int
ngx_platform_mp_need(const unsigned char **pp, const unsigned char *last,
    size_t n)
{
    if ((size_t) (last - *pp) < n) {
        return -1;
    }

    *pp += n;
    return 0;
}


static uint64_t
ngx_platform_mp_be(const unsigned char *p, size_t n)
{
    uint64_t  v;

    v = 0;

    while (n--) {
        v = (v << 8) | *p++;
    }

    return v;
}


static int
ngx_platform_mp_check(const unsigned char **pp, const unsigned char *last,
    size_t depth, size_t max_depth)
{
    int                   rc;
    uint64_t              n, i, len;
    unsigned int          b;
    const unsigned char  *p;

    if (depth > max_depth) {
        return -2;
    }

    p = *pp;

    if (p >= last) {
        return -1;
    }

    b = *p++;
    n = 0;
    len = 0;

    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        goto scalar;
    }

    if ((b & 0xf0) == 0x80) {
        n = 2 * (uint64_t) (b & 0x0f);
        goto container;
    }

    if ((b & 0xf0) == 0x90) {
        n = b & 0x0f;
        goto container;
    }

    if ((b & 0xe0) == 0xa0) {
        len = b & 0x1f;
        goto scalar;
    }

    switch (b) {
    case 0xcc: case 0xd0: len = 1; break;
    case 0xcd: case 0xd1: len = 2; break;
    case 0xca: case 0xce: case 0xd2: len = 4; break;
    case 0xcb: case 0xcf: case 0xd3: len = 8; break;
    case 0xd4: len = 2; break;
    case 0xd5: len = 3; break;
    case 0xd6: len = 5; break;
    case 0xd7: len = 9; break;
    case 0xd8: len = 17; break;

    case 0xc4: case 0xd9:
        if (last - p < 1) { return -1; }
        len = p[0]; p += 1; break;
    case 0xc5: case 0xda:
        if (last - p < 2) { return -1; }
        len = ngx_platform_mp_be(p, 2); p += 2; break;
    case 0xc6: case 0xdb:
        if (last - p < 4) { return -1; }
        len = ngx_platform_mp_be(p, 4); p += 4; break;

    case 0xc7:
        if (last - p < 1) { return -1; }
        len = 1 + (uint64_t) p[0]; p += 1; break;
    case 0xc8:
        if (last - p < 2) { return -1; }
        len = 1 + ngx_platform_mp_be(p, 2); p += 2; break;
    case 0xc9:
        if (last - p < 4) { return -1; }
        len = 1 + ngx_platform_mp_be(p, 4); p += 4; break;

    case 0xdc:
        if (last - p < 2) { return -1; }
        n = ngx_platform_mp_be(p, 2); p += 2; goto container;
    case 0xdd:
        if (last - p < 4) { return -1; }
        n = ngx_platform_mp_be(p, 4); p += 4; goto container;
    case 0xde:
        if (last - p < 2) { return -1; }
        n = 2 * ngx_platform_mp_be(p, 2); p += 2; goto container;
    case 0xdf:
        if (last - p < 4) { return -1; }
        n = 2 * ngx_platform_mp_be(p, 4); p += 4; goto container;

    default:                                   /* 0xc1: never used */
        return -1;
    }

scalar:

    if (ngx_platform_mp_need(&p, last, len) != 0) {
        return -1;
    }

    *pp = p;
    return 0;

container:

    if (n > (uint64_t) (last - p)) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        rc = ngx_platform_mp_check(&p, last, depth + 1, max_depth);
        if (rc != 0) {
            return rc;
        }
    }

    *pp = p;
    return 0;
}


/* JSON (RFC 8259) into msgpack objects: -1 invalid, -2 out of memory */


static void
ngx_platform_json_space(ngx_platform_json_t *j)
{
    while (j->p < j->last
           && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r'
               || *j->p == '\n'))
    {
        j->p++;
    }
}


static int
ngx_platform_json_literal(ngx_platform_json_t *j, const char *word)
{
    size_t  n;

    n = strlen(word);

    if ((size_t) (j->last - j->p) < n || memcmp(j->p, word, n) != 0) {
        return -1;
    }

    j->p += n;
    return 0;
}


static int
ngx_platform_json_hex4(ngx_platform_json_t *j, unsigned int *v)
{
    int           i, c;

    if (j->last - j->p < 4) {
        return -1;
    }

    *v = 0;

    for (i = 0; i < 4; i++) {
        c = *j->p++;
        *v <<= 4;
        if (c >= '0' && c <= '9') {
            *v |= c - '0';
        } else if (c >= 'a' && c <= 'f') {
            *v |= c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            *v |= c - 'A' + 10;
        } else {
            return -1;
        }
    }

    return 0;
}


static int
ngx_platform_json_string(ngx_platform_json_t *j, msgpack_object *o)
{
    char                 *buf, *d;
    unsigned int          c, lo;
    const unsigned char  *s;

    /* j->p is past the opening quote; unescaped text is never longer */

    for (s = j->p; s < j->last && *s != '"'; s++) {
        if (*s == '\\') {
            s++;
        }
    }

    if (s >= j->last) {
        return -1;
    }

    buf = msgpack_zone_malloc(j->zone, (size_t) (s - j->p) + 1);
    if (buf == NULL) {
        return -2;
    }

    d = buf;

    while (*j->p != '"') {
        c = *j->p++;

        if (c < 0x20) {
            return -1;
        }

        if (c != '\\') {
            *d++ = (char) c;
            continue;
        }

        c = *j->p++;

        switch (c) {
        case '"': case '\\': case '/': *d++ = (char) c; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;

        case 'u':
            if (ngx_platform_json_hex4(j, &c) != 0) {
                return -1;
            }

            if (c >= 0xd800 && c <= 0xdbff) {
                if (j->last - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') {
                    return -1;
                }
                j->p += 2;
                if (ngx_platform_json_hex4(j, &lo) != 0
                    || lo < 0xdc00 || lo > 0xdfff)
                {
                    return -1;
                }
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);

            } else if (c >= 0xdc00 && c <= 0xdfff) {
                return -1;
            }

            /* at most 4 bytes for the 6 or 12 read */

            if (c < 0x80) {
                *d++ = (char) c;
            } else if (c < 0x800) {
                *d++ = (char) (0xc0 | (c >> 6));
                *d++ = (char) (0x80 | (c & 0x3f));
            } else if (c < 0x10000) {
                *d++ = (char) (0xe0 | (c >> 12));
                *d++ = (char) (0x80 | ((c >> 6) & 0x3f));
                *d++ = (char) (0x80 | (c & 0x3f));
            } else {
                *d++ = (char) (0xf0 | (c >> 18));
                *d++ = (char) (0x80 | ((c >> 12) & 0x3f));
                *d++ = (char) (0x80 | ((c >> 6) & 0x3f));
                *d++ = (char) (0x80 | (c & 0x3f));
            }
            break;

        default:
            return -1;
        }
    }

    j->p++;

    o->type = MSGPACK_OBJECT_STR;
    o->via.str.ptr = buf;
    o->via.str.size = (uint32_t) (d - buf);

    return 0;
}


static int
ngx_platform_json_number(ngx_platform_json_t *j, msgpack_object *o)
{
    int                   neg, frac;
    char                  tmp[64];
    size_t                n;
    uint64_t              v;
    const unsigned char  *s;

    s = j->p;
    neg = 0;
    frac = 0;

    if (j->p < j->last && *j->p == '-') {
        neg = 1;
        j->p++;
    }

    if (j->p >= j->last || *j->p < '0' || *j->p > '9') {
        return -1;
    }

    if (*j->p == '0' && j->p + 1 < j->last
        && j->p[1] >= '0' && j->p[1] <= '9')
    {
        return -1;
    }

    while (j->p < j->last && *j->p >= '0' && *j->p <= '9') {
        j->p++;
    }

    if (j->p < j->last && *j->p == '.') {
        frac = 1;
        j->p++;
        if (j->p >= j->last || *j->p < '0' || *j->p > '9') {
            return -1;
        }
        while (j->p < j->last && *j->p >= '0' && *j->p <= '9') {
            j->p++;
        }
    }

    if (j->p < j->last && (*j->p == 'e' || *j->p == 'E')) {
        frac = 1;
        j->p++;
        if (j->p < j->last && (*j->p == '+' || *j->p == '-')) {
            j->p++;
        }
        if (j->p >= j->last || *j->p < '0' || *j->p > '9') {
            return -1;
        }
        while (j->p < j->last && *j->p >= '0' && *j->p <= '9') {
            j->p++;
        }
    }

    n = (size_t) (j->p - s);

    if (n >= sizeof(tmp)) {
        return -1;
    }

    if (!frac) {
        /* integers of at most 18 digits: no overflow */
        if (n - neg > 18) {
            return -1;
        }

        v = 0;
        for (s += neg; s < j->p; s++) {
            v = v * 10 + (uint64_t) (*s - '0');
        }

        if (neg && v != 0) {
            o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
            o->via.i64 = -(int64_t) v;
        } else {
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = v;
        }

        return 0;
    }

    memcpy(tmp, s, n);
    tmp[n] = '\0';

    o->type = MSGPACK_OBJECT_FLOAT64;
    o->via.f64 = strtod(tmp, NULL);

    if (!isfinite(o->via.f64)) {
        return -1;
    }

    return 0;
}


/* elements are gathered in a growing zone array (at most twice the room) */
static int
ngx_platform_json_grow(ngx_platform_json_t *j, void **a, size_t *cap,
    size_t n, size_t size)
{
    void  *na;

    if (n < *cap) {
        return 0;
    }

    *cap = *cap ? *cap * 2 : 8;

    na = msgpack_zone_malloc(j->zone, *cap * size);
    if (na == NULL) {
        return -2;
    }

    if (n) {
        memcpy(na, *a, n * size);
    }

    *a = na;
    return 0;
}


static int
ngx_platform_json_value(ngx_platform_json_t *j, msgpack_object *o)
{
    int                 rc;
    size_t              n, cap;
    void               *a;
    msgpack_object_kv  *kv;

    ngx_platform_json_space(j);

    if (j->p >= j->last) {
        return -1;
    }

    switch (*j->p) {

    case '{':
    case '[':
        if (++j->depth > j->max_depth) {
            return -1;
        }

        a = NULL;
        n = 0;
        cap = 0;

        if (*j->p++ == '{') {
            ngx_platform_json_space(j);

            if (j->p < j->last && *j->p == '}') {
                j->p++;

            } else {
                for ( ;; ) {
                    rc = ngx_platform_json_grow(j, &a, &cap, n,
                                                sizeof(msgpack_object_kv));
                    if (rc != 0) {
                        return rc;
                    }

                    kv = (msgpack_object_kv *) a + n;

                    ngx_platform_json_space(j);
                    if (j->p >= j->last || *j->p != '"') {
                        return -1;
                    }
                    j->p++;

                    rc = ngx_platform_json_string(j, &kv->key);
                    if (rc != 0) {
                        return rc;
                    }

                    ngx_platform_json_space(j);
                    if (j->p >= j->last || *j->p != ':') {
                        return -1;
                    }
                    j->p++;

                    rc = ngx_platform_json_value(j, &kv->val);
                    if (rc != 0) {
                        return rc;
                    }

                    n++;

                    ngx_platform_json_space(j);
                    if (j->p < j->last && *j->p == ',') {
                        j->p++;
                        continue;
                    }
                    if (j->p < j->last && *j->p == '}') {
                        j->p++;
                        break;
                    }
                    return -1;
                }
            }

            o->type = MSGPACK_OBJECT_MAP;
            o->via.map.size = (uint32_t) n;
            o->via.map.ptr = a;

        } else {
            ngx_platform_json_space(j);

            if (j->p < j->last && *j->p == ']') {
                j->p++;

            } else {
                for ( ;; ) {
                    rc = ngx_platform_json_grow(j, &a, &cap, n,
                                                sizeof(msgpack_object));
                    if (rc != 0) {
                        return rc;
                    }

                    rc = ngx_platform_json_value(j, (msgpack_object *) a + n);
                    if (rc != 0) {
                        return rc;
                    }

                    n++;

                    ngx_platform_json_space(j);
                    if (j->p < j->last && *j->p == ',') {
                        j->p++;
                        continue;
                    }
                    if (j->p < j->last && *j->p == ']') {
                        j->p++;
                        break;
                    }
                    return -1;
                }
            }

            o->type = MSGPACK_OBJECT_ARRAY;
            o->via.array.size = (uint32_t) n;
            o->via.array.ptr = a;
        }

        j->depth--;
        return 0;

    case '"':
        j->p++;
        return ngx_platform_json_string(j, o);

    case 't':
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = 1;
        return ngx_platform_json_literal(j, "true");

    case 'f':
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = 0;
        return ngx_platform_json_literal(j, "false");

    case 'n':
        o->type = MSGPACK_OBJECT_NIL;
        return ngx_platform_json_literal(j, "null");

    default:
        return ngx_platform_json_number(j, o);
    }
}
