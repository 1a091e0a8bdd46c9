
/*
 * libFuzzer target for the lift reading decoder
 * (ngx_platform_module/ngx_platform_reading.c), both paths.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -I ngx_platform_module ngx_platform_module/ngx_platform_reading.c \
 *       t/fuzz/reading_fuzz.c -lmsgpackc -lm -o reading_fuzz
 *   ./reading_fuzz -max_total_time=600 NEW_DIR t/fuzz/corpus/reading
 *
 * (`make fuzz` does both.)  The first input byte chooses the path (bit 0:
 * JSON or MessagePack) and the batch limit (bits 1-3); the rest is the
 * body.  Each input is decoded twice and must give the same outcome; the
 * counts must add up (valid + invalid = readings, at most the limit), each
 * kept error must name a reading that is invalid, and every valid reading
 * must hold values in the documented ranges.  Each valid reading is then
 * written out as JSON by the encoder below and decoded again: it must come
 * back equal (both paths share the validation, so this also checks the
 * MessagePack one).  A failed check aborts.
 */


#include "ngx_platform_reading.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define FUZZ_MAX_READINGS  64
#define FUZZ_MAX_ERRORS    8
#define FUZZ_NOW           1700000000000LL


#define check(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                          \
        }                                                                     \
    } while (0)


static ngx_platform_reading_t        r1[FUZZ_MAX_READINGS];
static ngx_platform_reading_t        r2[FUZZ_MAX_READINGS];
static ngx_platform_reading_t        r3[1];
static ngx_platform_reading_error_t  e1[FUZZ_MAX_ERRORS];
static ngx_platform_reading_error_t  e2[FUZZ_MAX_ERRORS];
static ngx_platform_reading_error_t  e3[FUZZ_MAX_ERRORS];


static int
same_reading(const ngx_platform_reading_t *a, const ngx_platform_reading_t *b)
{
    int  i;

    if (a->seq != b->seq || a->ts_ms != b->ts_ms || a->kind != b->kind
        || a->present != b->present || a->valid != b->valid)
    {
        return 0;
    }

#define same_if(bit, field)                                                   \
    if ((a->present & (bit)) && a->field != b->field) {                       \
        return 0;                                                             \
    }

    same_if(NGX_PLATFORM_R_FLOOR_FROM, floor_from)
    same_if(NGX_PLATFORM_R_FLOOR_TO, floor_to)
    same_if(NGX_PLATFORM_R_DIRECTION, direction)
    same_if(NGX_PLATFORM_R_LOAD, load)
    same_if(NGX_PLATFORM_R_TEMPERATURE, temperature)

    if ((a->present & NGX_PLATFORM_R_FAULT_CODE)
        && (a->fault_code_len != b->fault_code_len
            || memcmp(a->fault_code, b->fault_code, a->fault_code_len) != 0))
    {
        return 0;
    }

    for (i = 0; i < NGX_PLATFORM_COUNTERS; i++) {
        if ((a->present & (NGX_PLATFORM_R_TRIPS << i))
            && a->counters[i] != b->counters[i])
        {
            return 0;
        }
    }

    return 1;
}


static size_t
to_json(const ngx_platform_reading_t *r, char *buf, size_t size)
{
    int     i;
    size_t  n;

    static const char *counters[] = { "trips", "floors", "door_cycles",
                                      "faults", "run_seconds" };

    n = (size_t) snprintf(buf, size, "{\"seq\":%lld,\"ts\":%lld,\"kind\":\"%s\"",
                          (long long) r->seq, (long long) r->ts_ms,
                          ngx_platform_reading_kind_name(r->kind));

#define add(...)  n += (size_t) snprintf(buf + n, size - n, __VA_ARGS__)

    if (r->present & NGX_PLATFORM_R_FLOOR_FROM) {
        add(",\"floor_from\":%d", (int) r->floor_from);
    }
    if (r->present & NGX_PLATFORM_R_FLOOR_TO) {
        add(",\"floor_to\":%d", (int) r->floor_to);
    }
    if (r->present & NGX_PLATFORM_R_DIRECTION) {
        add(",\"direction\":\"%s\"",
            ngx_platform_reading_direction_name(r->direction));
    }
    if (r->present & NGX_PLATFORM_R_LOAD) {
        add(",\"load\":%d", (int) r->load);
    }
    if (r->present & NGX_PLATFORM_R_TEMPERATURE) {
        add(",\"temperature\":%.17g", r->temperature);
        /* %.17g may print an integer: the decoder takes both */
    }
    if (r->present & NGX_PLATFORM_R_FAULT_CODE) {
        add(",\"fault_code\":\"%s\"", r->fault_code);
    }

    add(",\"counters\":{");
    for (i = 0; i < NGX_PLATFORM_COUNTERS; i++) {
        if (r->present & (NGX_PLATFORM_R_TRIPS << i)) {
            add("%s\"%s\":%lld", buf[n - 1] == '{' ? "" : ",", counters[i],
                (long long) r->counters[i]);
        }
    }
    add("}}");

    return n;
}


/* the second decoding asks for its room: never more than the limit */
static void *
fuzz_alloc(void *data, size_t size)
{
    check(size >= sizeof(ngx_platform_reading_t)
          && size <= *(size_t *) data * sizeof(ngx_platform_reading_t));
    return r2;
}


static void
decode(const unsigned char *data, size_t len, int json, size_t max,
    ngx_platform_reading_t *r, ngx_platform_reading_error_t *e,
    ngx_platform_readings_t *out, int *rc)
{
    ngx_platform_reading_limits_t  limits;

    limits.max_readings = max;
    limits.max_depth = 4;
    limits.now_ms = FUZZ_NOW;
    limits.max_past_ms = 30LL * 86400 * 1000;
    limits.max_future_ms = 300 * 1000;

    memset(out, 0, sizeof(*out));
    out->readings = r;
    out->alloc = fuzz_alloc;
    out->alloc_data = &max;
    out->errors = e;
    out->max_errors = FUZZ_MAX_ERRORS;

    *rc = ngx_platform_readings_decode(data, len, json, &limits, out);
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int                       json, rc1, rc2, rc3;
    char                      buf[1024];
    size_t                    i, j, max, n;
    ngx_platform_readings_t   o1, o2, o3;
    ngx_platform_reading_t   *r;

    if (size < 1) {
        return 0;
    }

    json = data[0] & 1;
    max = 1 + ((data[0] >> 1) & 7) * 8;        /* 1 .. 57 */

    data++;
    size--;

    decode(data, size, json, max, r1, e1, &o1, &rc1);
    decode(data, size, json, max, NULL, e2, &o2, &rc2);

    check(rc1 == rc2);
    check(rc1 == 0 || rc1 == -1 || rc1 == -2);
    check(rc1 != -1 || o1.reason != NULL);
    check(o1.nreadings == o2.nreadings && o1.nvalid == o2.nvalid
          && o1.ninvalid == o2.ninvalid && o1.nerrors == o2.nerrors);

    if (rc1 != 0) {
        return 0;
    }

    check(o1.nreadings >= 1 && o1.nreadings <= max);
    check(o1.nvalid + o1.ninvalid == o1.nreadings);
    check(o1.nerrors == (o1.ninvalid < FUZZ_MAX_ERRORS ? o1.ninvalid
                                                       : FUZZ_MAX_ERRORS));

    for (i = 0; i < o1.nerrors; i++) {
        check(e1[i].index < o1.nreadings);
        check(!r1[e1[i].index].valid);
        check(e1[i].field != NULL && e1[i].reason != NULL);
        check(e1[i].index == e2[i].index
              && strcmp(e1[i].field, e2[i].field) == 0);
        if (i) {
            check(e1[i].index > e1[i - 1].index);
        }
    }

    for (i = 0; i < o1.nreadings; i++) {
        r = &r1[i];
        check(r->valid == r2[i].valid);

        if (!r->valid) {
            continue;
        }

        check(same_reading(r, &r2[i]));
        check(r->seq >= 0 && r->kind >= 0 && r->kind <= 3);
        check(r->ts_ms >= FUZZ_NOW - 30LL * 86400 * 1000
              && r->ts_ms <= FUZZ_NOW + 300 * 1000);
        check(!(r->present & NGX_PLATFORM_R_TEMPERATURE)
              || (r->temperature >= -60.0 && r->temperature <= 150.0));
        check(!(r->present & NGX_PLATFORM_R_FAULT_CODE)
              || (r->fault_code_len >= 1
                  && r->fault_code_len <= NGX_PLATFORM_FAULT_CODE_MAX
                  && strlen(r->fault_code) == r->fault_code_len));
        for (j = 0; j < NGX_PLATFORM_COUNTERS; j++) {
            check(r->counters[j] >= 0);
        }

        /* out as JSON and in again */

        n = to_json(r, buf, sizeof(buf));
        check(n < sizeof(buf));

        decode((unsigned char *) buf, n, 1, 1, r3, e3, &o3, &rc3);
        check(rc3 == 0 && o3.nvalid == 1);
        check(same_reading(r, &r3[0]));
    }

    return 0;
}
