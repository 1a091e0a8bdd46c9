
/*
 * ngx_platform_module: shared types and the main configuration.
 */


#ifndef _NGX_PLATFORM_MODULE_H_INCLUDED_
#define _NGX_PLATFORM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef struct ngx_platform_pg_upstream_s  ngx_platform_pg_upstream_t;
typedef struct ngx_platform_pg_stats_s     ngx_platform_pg_stats_t;


typedef struct {
    ngx_array_t                 upstreams;    /* ngx_platform_pg_upstream_t * */
    ngx_array_t                 statements;   /* ngx_str_t, SQL text */
    ngx_shm_zone_t             *stats_zone;
    ngx_platform_pg_stats_t    *stats;        /* in stats_zone */
} ngx_platform_main_conf_t;


/* per-worker slots in the statistics zone; workers beyond it keep local ones */
#define NGX_PLATFORM_STATS_WORKERS  256


ngx_platform_pg_upstream_t *ngx_platform_pg_upstream_find(ngx_conf_t *cf,
    ngx_str_t *name);
ngx_int_t ngx_platform_statement_add(ngx_conf_t *cf, ngx_str_t *sql);
ngx_int_t ngx_platform_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);

/* a secret's file: one line, read at configuration time, never logged */
ngx_int_t ngx_platform_read_secret(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *secret);

/* errors: SQLSTATE mapping and JSON error responses */
ngx_uint_t ngx_platform_sqlstate_status(const char *sqlstate);
ngx_uint_t ngx_platform_error_class(const char *sqlstate);
extern const char  *ngx_platform_error_classes[];
ngx_int_t ngx_platform_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message);
ngx_int_t ngx_platform_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b);
u_char *ngx_platform_jobs_status(ngx_http_request_t *r, u_char *p,
    u_char *last);


/* an nginx connection around a socket a library owns */
void ngx_platform_socket_events(ngx_connection_t *c, ngx_uint_t rd,
    ngx_uint_t wr);
void ngx_platform_socket_release(ngx_connection_t *c, ngx_uint_t closing);

/* sessions: seal claims set by SQL into a cookie, or end sessions */
ngx_int_t ngx_platform_session_respond(ngx_http_request_t *r, u_char *data,
    size_t len);
/* Origin (or Referer) is one of platform_session_origins: NGX_OK */
ngx_int_t ngx_platform_session_origin(ngx_http_request_t *r);

/* platform_webhook_signature: NGX_DECLINED lets the query run */
ngx_int_t ngx_platform_signature_check(ngx_http_request_t *r,
    ngx_str_t *body);

/* a Stripe-format signature header, "t=<digits>,v1=<hex>[,v1=...]" */
#define NGX_PLATFORM_SIGNATURE_MAX  8     /* v1 items kept, at most */

typedef struct {
    ngx_str_t                    time;
    ngx_uint_t                   n;
    u_char                       v1[NGX_PLATFORM_SIGNATURE_MAX][32];
} ngx_platform_signature_t;

/* the header NAME: NGX_OK; NGX_DECLINED: absent; NGX_ERROR: garbled */
ngx_int_t ngx_platform_signature_parse(ngx_http_request_t *r,
    ngx_str_t *name, ngx_platform_signature_t *sig);
/* NGX_OK: a v1 is HMAC-SHA-256 of "<t>.<body>" under SECRET */
ngx_int_t ngx_platform_signature_match(ngx_platform_signature_t *sig,
    ngx_str_t *secret, ngx_str_t *body);
/* NGX_OK: t is within TOLERANCE seconds of our clock (0: any t) */
ngx_int_t ngx_platform_signature_fresh(ngx_platform_signature_t *sig,
    time_t tolerance);

/* sealed secrets (ngx_platform_seal.c): platform_seal and
 * platform_webhook_sealed_signature, NGX_DECLINED lets the query run,
 * NGX_AGAIN: ngx_platform_query_continue() follows */
ngx_int_t ngx_platform_seal_request(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_platform_seal_open(ngx_pool_t *pool, ngx_str_t *sealed,
    ngx_str_t *out);
ngx_int_t ngx_platform_seal_open_text(ngx_pool_t *pool, u_char **text,
    const char **error);
/* a location's arguments (ngx_http_complex_value_t) as libpq parameter
 * values: empty is NULL, a NUL byte is refused with 400 (NGX_OK or the
 * status to finalize with) */
ngx_int_t ngx_platform_query_values(ngx_http_request_t *r, ngx_array_t *args,
    const char **values);
/* platform_query: run the location's query now (NGX_DONE: it runs) */
ngx_int_t ngx_platform_query_continue(ngx_http_request_t *r);
ngx_platform_pg_upstream_t *ngx_platform_query_upstream(
    ngx_http_request_t *r);

/* platform_upload: NGX_DECLINED: no upload here; NGX_OK: read to a file */
ngx_int_t ngx_platform_upload_init(ngx_http_request_t *r, off_t *max_size);
/* the body is read: NGX_DECLINED: stored, the query may run */
ngx_int_t ngx_platform_upload_store(ngx_http_request_t *r);


extern ngx_module_t  ngx_platform_module;
extern ngx_module_t  ngx_platform_query_module;
extern ngx_module_t  ngx_platform_status_module;
extern ngx_module_t  ngx_platform_auth_module;
extern ngx_module_t  ngx_platform_jobs_module;
extern ngx_module_t  ngx_platform_signature_module;
extern ngx_module_t  ngx_platform_upload_module;
extern ngx_module_t  ngx_platform_ingest_module;
extern ngx_module_t  ngx_platform_seal_module;


#endif /* _NGX_PLATFORM_MODULE_H_INCLUDED_ */
