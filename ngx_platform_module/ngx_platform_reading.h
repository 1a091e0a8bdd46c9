
/*
 * Lift readings: decoding and validation of an ingest body (MessagePack or
 * JSON), plain C without nginx headers so that t/fuzz/ can fuzz it alone.
 */


#ifndef _NGX_PLATFORM_READING_H_INCLUDED_
#define _NGX_PLATFORM_READING_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


enum {
    NGX_PLATFORM_READING_TRIP = 0,
    NGX_PLATFORM_READING_DOOR,
    NGX_PLATFORM_READING_FAULT,
    NGX_PLATFORM_READING_STATUS
};

enum {
    NGX_PLATFORM_DIR_UP = 0,
    NGX_PLATFORM_DIR_DOWN,
    NGX_PLATFORM_DIR_NONE
};

/* which optional fields are present */
#define NGX_PLATFORM_R_FLOOR_FROM    0x0001
#define NGX_PLATFORM_R_FLOOR_TO      0x0002
#define NGX_PLATFORM_R_DIRECTION     0x0004
#define NGX_PLATFORM_R_LOAD          0x0008
#define NGX_PLATFORM_R_TEMPERATURE   0x0010
#define NGX_PLATFORM_R_FAULT_CODE    0x0020
#define NGX_PLATFORM_R_TRIPS         0x0040
#define NGX_PLATFORM_R_FLOORS        0x0080
#define NGX_PLATFORM_R_DOOR_CYCLES   0x0100
#define NGX_PLATFORM_R_FAULTS        0x0200
#define NGX_PLATFORM_R_RUN_SECONDS   0x0400

#define NGX_PLATFORM_FAULT_CODE_MAX  32
#define NGX_PLATFORM_COUNTERS        5


typedef struct {
    int64_t      seq;
    int64_t      ts_ms;             /* Unix time, milliseconds */
    unsigned     present;
    int          valid;
    int          kind;
    int          direction;
    int32_t      floor_from;
    int32_t      floor_to;
    int32_t      load;
    double       temperature;
    int64_t      counters[NGX_PLATFORM_COUNTERS];
    size_t       fault_code_len;
    char         fault_code[NGX_PLATFORM_FAULT_CODE_MAX + 1];
} ngx_platform_reading_t;


typedef struct {
    size_t       index;
    const char  *field;             /* static strings */
    const char  *reason;
} ngx_platform_reading_error_t;


typedef struct {
    size_t       max_readings;
    size_t       max_depth;         /* of the whole body, >= 3 */
    int64_t      now_ms;
    int64_t      max_past_ms;       /* how old ts may be */
    int64_t      max_future_ms;     /* how far ahead ts may be */
} ngx_platform_reading_limits_t;


typedef struct {
    /* room for max_readings, or NULL: alloc() is asked for as many as the
     * body holds once that is known */
    ngx_platform_reading_t        *readings;
    void                        *(*alloc)(void *data, size_t size);
    void                          *alloc_data;
    size_t                         nreadings;
    size_t                         nvalid;
    ngx_platform_reading_error_t  *errors;
    size_t                         max_errors;
    size_t                         nerrors;     /* kept, <= max_errors */
    size_t                         ninvalid;
    const char                    *reason;      /* the body's, on failure */
} ngx_platform_readings_t;


#define NGX_PLATFORM_READINGS_OK         0
#define NGX_PLATFORM_READINGS_MALFORMED  -1    /* reason set */
#define NGX_PLATFORM_READINGS_TOO_MANY   -2
#define NGX_PLATFORM_READINGS_NOMEM      -3


/* json: 1 for application/json, 0 for application/msgpack */
int ngx_platform_readings_decode(const unsigned char *data, size_t len,
    int json, const ngx_platform_reading_limits_t *limits,
    ngx_platform_readings_t *out);

const char *ngx_platform_reading_kind_name(int kind);
const char *ngx_platform_reading_direction_name(int dir);


#endif /* _NGX_PLATFORM_READING_H_INCLUDED_ */
