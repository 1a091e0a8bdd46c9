
/*
 * Live video over HLS (docs/hls.md): who may push and who may watch
 * /live/{event}/{name}, decided before nginx's dav module (PUT) or static
 * module (GET, HEAD) does the work (DELETE is done here); the stream's
 * state for the event page; a timer that ends idle streams, removes
 * segments that left the live window, writes recordings' VOD playlists and
 * keeps the store under its size.
 *
 *   platform_hls event=$1 name=$3 [token=$2]
 *                ingest=/_hls/ingest/$1 watch=/_hls/watch/$1;
 *
 * The decisions come from PostgreSQL through a subrequest to the ingest=
 * or watch= location (a platform_query location) and are kept per worker
 * for platform_hls_cache_ttl: an encoder's key per event, a viewer's
 * (user, event).  A token= path element "<expiry>.<signature>" (HMAC-SHA256
 * under platform_hls_sign_key, made by $platform_hls_token) lets a player
 * without the cookie watch until the expiry.
 *
 * Without name= the directive only names the event for the variables
 * $platform_hls_live, $platform_hls_vod and $platform_hls_token.
 */


#include "ngx_platform_module.h"
#include <sodium.h>


#define NGX_PLATFORM_HLS_INGEST     1
#define NGX_PLATFORM_HLS_WATCH      2

#define NGX_PLATFORM_HLS_PLAYLIST   1
#define NGX_PLATFORM_HLS_SEGMENT    2
#define NGX_PLATFORM_HLS_INIT       3

#define NGX_PLATFORM_HLS_NAME_MAX   64
#define NGX_PLATFORM_HLS_SIG_LEN    43
/* playlists larger than this are not read by the timer */
#define NGX_PLATFORM_HLS_READ_MAX   (1024 * 1024)
/* the recording's list read to write vod.m3u8 (days of 1 s segments) */
#define NGX_PLATFORM_HLS_VOD_MAX    (64 * 1024 * 1024)
/* how long one request's question stands for others (then they ask) */
#define NGX_PLATFORM_HLS_ASK_TIME   30
/* how often a request waiting for another's question looks again */
#define NGX_PLATFORM_HLS_POLL_MS    20
/* segments looked at per directory by one sweep */
#define NGX_PLATFORM_HLS_FILES_MAX  4096


typedef struct {
    uint64_t                     event;
    uint64_t                     user;
    u_char                       key[16];
    time_t                       expires;     /* answer fresh until */
    time_t                       asking;      /* a request asks until */
    uint16_t                     status;      /* 0: no answer yet */
    u_char                       kind;
    u_char                       record;
} ngx_platform_hls_entry_t;


typedef struct {
    ngx_str_t                    store;
    time_t                       idle;
    time_t                       grace;
    off_t                        max_size;
    ngx_msec_t                   sweep;
    ngx_str_t                    sign_key;
    time_t                       sign_ttl;
    ngx_uint_t                   cache_size;
    time_t                       cache_ttl;
    ngx_int_t                    user_index;    /* $platform_user */

    /* this worker's */
    ngx_platform_hls_entry_t    *cache;
    ngx_event_t                  sweep_event;
} ngx_platform_hls_main_conf_t;


typedef struct {
    ngx_http_complex_value_t    *event;
    ngx_http_complex_value_t    *name;
    ngx_http_complex_value_t    *token;
    ngx_http_complex_value_t    *ingest;
    ngx_http_complex_value_t    *watch;
    size_t                       playlist_max;
    ngx_str_t                    cors;
} ngx_platform_hls_loc_conf_t;


typedef struct {
    ngx_uint_t                   kind;
    ngx_uint_t                   type;
    uint64_t                     event;
    uint64_t                     user;
    u_char                       key[16];
    ngx_str_t                    name;
    ngx_uint_t                   waiting;
    ngx_uint_t                   done;
    ngx_uint_t                   status;
    ngx_uint_t                   record;
    ngx_uint_t                   polling;
    ngx_uint_t                   polls;
    ngx_event_t                  wait;
} ngx_platform_hls_ctx_t;


typedef struct {
    ngx_str_t                    path;
    time_t                       mtime;
    off_t                        size;
} ngx_platform_hls_file_t;


static ngx_int_t ngx_platform_hls_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_hls_start(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx);
static ngx_int_t ngx_platform_hls_decided(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx);
static ngx_int_t ngx_platform_hls_lookup(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx);
static ngx_int_t ngx_platform_hls_poll(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx);
static void ngx_platform_hls_wake(ngx_event_t *ev);
static void ngx_platform_hls_cleanup(void *data);
static ngx_int_t ngx_platform_hls_ask(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx);
static ngx_int_t ngx_platform_hls_answer(ngx_http_request_t *r, void *data,
    ngx_int_t rc);
static ngx_int_t ngx_platform_hls_delete(ngx_http_request_t *r,
    ngx_platform_hls_main_conf_t *hmcf, ngx_platform_hls_ctx_t *ctx);
static ngx_int_t ngx_platform_hls_deny(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
static ngx_int_t ngx_platform_hls_headers(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx);
static ngx_int_t ngx_platform_hls_add_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static void ngx_platform_hls_marker(ngx_http_request_t *r,
    ngx_platform_hls_main_conf_t *hmcf, ngx_platform_hls_ctx_t *ctx);
static ngx_uint_t ngx_platform_hls_name_type(ngx_str_t *name);
static ngx_int_t ngx_platform_hls_event_id(ngx_str_t *s, uint64_t *id);
static ngx_platform_hls_entry_t *ngx_platform_hls_cache_slot(
    ngx_platform_hls_main_conf_t *hmcf, ngx_platform_hls_ctx_t *ctx);
static void ngx_platform_hls_sign(ngx_platform_hls_main_conf_t *hmcf,
    uint64_t event, time_t expires, u_char *out);
static ngx_int_t ngx_platform_hls_token_ok(ngx_platform_hls_main_conf_t *hmcf,
    uint64_t event, ngx_str_t *token);

static ngx_int_t ngx_platform_hls_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void ngx_platform_hls_sweep_handler(ngx_event_t *ev);
static void ngx_platform_hls_sweep_dir(ngx_platform_hls_main_conf_t *hmcf,
    ngx_str_t *dir, ngx_array_t *removable, off_t *total, ngx_log_t *log);
static u_char *ngx_platform_hls_read(u_char *path, size_t *len,
    ngx_file_info_t *fi, ngx_log_t *log);
static u_char *ngx_platform_hls_read_max(u_char *path, size_t *len,
    ngx_file_info_t *fi, off_t max, ngx_log_t *log);
static ngx_int_t ngx_platform_hls_append(ngx_str_t *dir, const char *name,
    u_char *data, size_t len, ngx_log_t *log);
static ngx_int_t ngx_platform_hls_write(ngx_str_t *dir, const char *name,
    u_char *data, size_t len, ngx_uint_t append, ngx_log_t *log);
static ngx_int_t ngx_platform_hls_referenced(u_char *pl, size_t len,
    ngx_str_t *name);
static void ngx_platform_hls_record(ngx_str_t *dir, u_char *pl, size_t len,
    ngx_uint_t ended, ngx_log_t *log);
static void ngx_platform_hls_vod(ngx_str_t *dir, u_char *pl, size_t len,
    ngx_log_t *log);
static int ngx_libc_cdecl ngx_platform_hls_older(const void *a,
    const void *b);

static char *ngx_platform_hls(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_hls_sign_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_platform_hls_create_main_conf(ngx_conf_t *cf);
static char *ngx_platform_hls_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_platform_hls_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_hls_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_platform_hls_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_platform_hls_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_platform_hls_init_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_platform_hls_commands[] = {

    { ngx_string("platform_hls"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_hls,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_hls_playlist_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_hls_loc_conf_t, playlist_max),
      NULL },

    { ngx_string("platform_hls_cors"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_hls_loc_conf_t, cors),
      NULL },

    { ngx_string("platform_hls_store"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, store),
      NULL },

    { ngx_string("platform_hls_idle"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, idle),
      NULL },

    { ngx_string("platform_hls_grace"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, grace),
      NULL },

    { ngx_string("platform_hls_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, max_size),
      NULL },

    { ngx_string("platform_hls_sweep"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, sweep),
      NULL },

    { ngx_string("platform_hls_sign_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_platform_hls_sign_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_hls_sign_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, sign_ttl),
      NULL },

    { ngx_string("platform_hls_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, cache_size),
      NULL },

    { ngx_string("platform_hls_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_hls_main_conf_t, cache_ttl),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_hls_module_ctx = {
    ngx_platform_hls_preconfiguration,     /* preconfiguration */
    ngx_platform_hls_postconfiguration,    /* postconfiguration */

    ngx_platform_hls_create_main_conf,     /* create main configuration */
    ngx_platform_hls_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_hls_create_loc_conf,      /* create location configuration */
    ngx_platform_hls_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_platform_hls_module = {
    NGX_MODULE_V1,
    &ngx_platform_hls_module_ctx,          /* module context */
    ngx_platform_hls_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_platform_hls_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


#define NGX_PLATFORM_HLS_VAR_LIVE   0
#define NGX_PLATFORM_HLS_VAR_VOD    1
#define NGX_PLATFORM_HLS_VAR_TOKEN  2
#define NGX_PLATFORM_HLS_VAR_STORE  3

static ngx_http_variable_t  ngx_platform_hls_vars[] = {

    { ngx_string("platform_hls_live"), NULL, ngx_platform_hls_variable,
      NGX_PLATFORM_HLS_VAR_LIVE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_hls_vod"), NULL, ngx_platform_hls_variable,
      NGX_PLATFORM_HLS_VAR_VOD, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_hls_token"), NULL, ngx_platform_hls_variable,
      NGX_PLATFORM_HLS_VAR_TOKEN, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_hls_store"), NULL, ngx_platform_hls_variable,
      NGX_PLATFORM_HLS_VAR_STORE, 0, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_platform_hls_user_var = ngx_string("platform_user");
static ngx_str_t  ngx_platform_hls_cache_control =
    ngx_string("Cache-Control");
static ngx_str_t  ngx_platform_hls_no_cache = ngx_string("no-cache");
static ngx_str_t  ngx_platform_hls_immutable =
    ngx_string("max-age=31536000, immutable");
static ngx_str_t  ngx_platform_hls_acao =
    ngx_string("Access-Control-Allow-Origin");
static ngx_str_t  ngx_platform_hls_acac =
    ngx_string("Access-Control-Allow-Credentials");
static ngx_str_t  ngx_platform_hls_true = ngx_string("true");
static ngx_str_t  ngx_platform_hls_vary = ngx_string("Vary");
static ngx_str_t  ngx_platform_hls_origin = ngx_string("Origin");


/* the precontent phase: after platform_auth, before dav or static */

static ngx_int_t
ngx_platform_hls_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_platform_hls_ctx_t       *ctx;
    ngx_platform_hls_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_platform_hls_module);

    if (hlcf->name == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_platform_hls_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_hls_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, ctx, ngx_platform_hls_module);

        rc = ngx_platform_hls_start(r, hlcf, ctx);

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_platform_hls_decided(r, hlcf, ctx);
    }

    if (ctx->polling) {
        if (ctx->wait.timer_set) {
            return NGX_AGAIN;
        }

        ctx->polling = 0;

        rc = ngx_platform_hls_lookup(r, hlcf, ctx);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (ctx->waiting && !ctx->done) {
        return NGX_AGAIN;
    }

    return ngx_platform_hls_decided(r, hlcf, ctx);
}


/*
 * What is asked and by whom.  NGX_OK: ctx->status holds the decision (0:
 * not known yet, a subrequest is needed); anything else is returned.
 */

static ngx_int_t
ngx_platform_hls_start(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx)
{
    ngx_str_t                      event, token, *auth;
    ngx_http_variable_value_t     *vv;
    ngx_platform_hls_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_platform_hls_module);

    if (ngx_http_complex_value(r, hlcf->event, &event) != NGX_OK
        || ngx_http_complex_value(r, hlcf->name, &ctx->name) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_platform_hls_event_id(&event, &ctx->event) != NGX_OK) {
        return ngx_platform_hls_deny(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                     "event: not an event id");
    }

    ctx->type = ngx_platform_hls_name_type(&ctx->name);

    if (ctx->type == 0) {
        return ngx_platform_hls_deny(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                     "name: 1 to 64 letters, digits, - or _ "
                                     "and .m3u8, .ts, .m4s or .mp4");
    }

    if (r->method & (NGX_HTTP_PUT|NGX_HTTP_DELETE)) {
        ctx->kind = NGX_PLATFORM_HLS_INGEST;

        if (ctx->name.len == sizeof("vod.m3u8") - 1
            && ngx_strncmp(ctx->name.data, "vod.m3u8", ctx->name.len) == 0)
        {
            return ngx_platform_hls_deny(r, NGX_HTTP_BAD_REQUEST,
                                         "bad_request",
                                         "name: vod.m3u8 is the recording's");
        }

        if (r->headers_in.authorization == NULL
            || r->headers_in.authorization->value.len == 0)
        {
            return ngx_platform_hls_deny(r, NGX_HTTP_UNAUTHORIZED,
                                         "unauthenticated",
                                         "send Authorization: Bearer "
                                         "<ingest key>");
        }

        auth = &r->headers_in.authorization->value;

        if (auth->len > 512) {
            return ngx_platform_hls_deny(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                         "the ingest key is wrong");
        }

        if (ctx->type == NGX_PLATFORM_HLS_PLAYLIST
            && r->headers_in.content_length_n > (off_t) hlcf->playlist_max)
        {
            return ngx_platform_hls_deny(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "body_too_large",
                                         "the playlist is too large");
        }

        crypto_generichash(ctx->key, sizeof(ctx->key), auth->data, auth->len,
                           NULL, 0);

    } else if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        ctx->kind = NGX_PLATFORM_HLS_WATCH;

        if (hlcf->token) {
            if (ngx_http_complex_value(r, hlcf->token, &token) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (token.len) {
                if (ngx_platform_hls_token_ok(hmcf, ctx->event, &token)
                    != NGX_OK)
                {
                    return ngx_platform_hls_deny(r, NGX_HTTP_FORBIDDEN,
                                                 "forbidden",
                                                 "the link has expired or "
                                                 "is not valid");
                }

                ctx->status = NGX_HTTP_OK;
                return NGX_OK;
            }
        }

        vv = ngx_http_get_indexed_variable(r, hmcf->user_index);

        if (vv == NULL || vv->not_found || vv->len == 0) {
            return ngx_platform_hls_deny(r, NGX_HTTP_UNAUTHORIZED,
                                         "unauthenticated",
                                         "sign in to watch");
        }

        ctx->user = ngx_atoof(vv->data, vv->len);

    } else {
        return ngx_platform_hls_deny(r, NGX_HTTP_NOT_ALLOWED,
                                     "method_not_allowed",
                                     "GET, HEAD, PUT or DELETE");
    }

    return ngx_platform_hls_lookup(r, hlcf, ctx);
}


/*
 * The worker's cache: a fresh answer is used; an answer up to one
 * platform_hls_cache_ttl old is used while one request asks again (so a
 * crowd of viewers never asks at once when it expires); without any, the
 * first request asks and the others look again every 20 ms until the
 * answer is there.
 */

static ngx_int_t
ngx_platform_hls_lookup(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx)
{
    time_t                         now;
    ngx_platform_hls_entry_t      *e;
    ngx_platform_hls_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_platform_hls_module);

    now = ngx_time();
    e = ngx_platform_hls_cache_slot(hmcf, ctx);

    if (e->kind == ctx->kind && e->event == ctx->event
        && e->user == ctx->user
        && sodium_memcmp(e->key, ctx->key, sizeof(ctx->key)) == 0)
    {
        if (e->status
            && (e->expires > now
                || (e->expires + hmcf->cache_ttl > now && e->asking > now)))
        {
            ctx->status = e->status;
            ctx->record = e->record;
            return NGX_OK;
        }

        if (e->status == 0 && e->asking > now
            && ctx->polls < NGX_PLATFORM_HLS_ASK_TIME * 1000
                            / NGX_PLATFORM_HLS_POLL_MS)
        {
            return ngx_platform_hls_poll(r, hlcf, ctx);
        }

    } else {
        e->kind = (u_char) ctx->kind;
        e->event = ctx->event;
        e->user = ctx->user;
        ngx_memcpy(e->key, ctx->key, sizeof(ctx->key));
        e->status = 0;
        e->expires = 0;
    }

    e->asking = now + NGX_PLATFORM_HLS_ASK_TIME;

    return ngx_platform_hls_ask(r, hlcf, ctx);
}


static ngx_int_t
ngx_platform_hls_poll(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    if (ctx->wait.handler == NULL) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_platform_hls_cleanup;
        cln->data = ctx;

        ctx->wait.handler = ngx_platform_hls_wake;
        ctx->wait.data = r;
        ctx->wait.log = r->connection->log;
    }

    ctx->polls++;
    ctx->polling = 1;

    ngx_add_timer(&ctx->wait, NGX_PLATFORM_HLS_POLL_MS);

    return NGX_AGAIN;
}


static void
ngx_platform_hls_wake(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ev->data;
    c = r->connection;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


static void
ngx_platform_hls_cleanup(void *data)
{
    ngx_platform_hls_ctx_t *ctx = data;

    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }
}


static ngx_int_t
ngx_platform_hls_ask(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx)
{
    ngx_str_t                     uri;
    ngx_http_request_t           *sr;
    ngx_http_post_subrequest_t   *ps;

    if (ngx_http_complex_value(r, ctx->kind == NGX_PLATFORM_HLS_INGEST
                                  ? hlcf->ingest : hlcf->watch, &uri)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps->handler = ngx_platform_hls_answer;
    ps->data = ctx;

    /*
     * In the background: the connection stays the main request's, whose
     * reading is blocked meanwhile.  An encoder that half-closes after its
     * body (ffmpeg does) is then not taken for one that went away, as it
     * would be by the subrequest's own handler.  The answer wakes us.
     */

    if (ngx_http_subrequest(r, &uri, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED
                            |NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * Only the status and headers are wanted.  The subrequest has its own
     * copy of the headers: the encoder's body is not its business.
     */
    sr->header_only = 1;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.content_length = NULL;
    sr->headers_in.content_type = NULL;
    sr->headers_in.chunked = 0;

    ctx->waiting = 1;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_platform_hls_answer(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_platform_hls_ctx_t *ctx = data;

    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (ctx->done) {
        /* a subrequest may be finalized more than once */
        return rc;
    }

    ctx->done = 1;
    ctx->status = r->headers_out.status;

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE
        || ctx->status == 0)
    {
        ctx->status = (rc >= NGX_HTTP_SPECIAL_RESPONSE) ? (ngx_uint_t) rc
                                                        : 500;
    }

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len == sizeof("X-HLS-Record") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-HLS-Record",
                               h[i].key.len) == 0)
        {
            ctx->record = (h[i].value.len == 1 && h[i].value.data[0] == '1');
        }
    }

    if (ngx_http_post_request(r->parent, NULL) != NGX_OK) {
        return NGX_ERROR;
    }

    return rc;
}


static ngx_int_t
ngx_platform_hls_decided(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx)
{
    ngx_platform_hls_entry_t      *e;
    ngx_platform_hls_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_platform_hls_module);

    if (ctx->status == 0) {
        return NGX_AGAIN;
    }

    if (ctx->waiting) {
        ctx->waiting = 0;

        /* answers of the database are kept; failures of it are not */

        if (ctx->status == NGX_HTTP_OK || ctx->status == NGX_HTTP_UNAUTHORIZED
            || ctx->status == NGX_HTTP_FORBIDDEN
            || ctx->status == NGX_HTTP_NOT_FOUND)
        {
            e = ngx_platform_hls_cache_slot(hmcf, ctx);
            e->kind = (u_char) ctx->kind;
            e->event = ctx->event;
            e->user = ctx->user;
            ngx_memcpy(e->key, ctx->key, sizeof(ctx->key));
            e->status = (uint16_t) ctx->status;
            e->record = (u_char) ctx->record;
            e->expires = ngx_time() + hmcf->cache_ttl;
            e->asking = 0;

        } else {
            /* no answer: the next request asks again */
            e = ngx_platform_hls_cache_slot(hmcf, ctx);
            e->asking = 0;
        }
    }

    switch (ctx->status) {

    case NGX_HTTP_OK:
        break;

    case NGX_HTTP_UNAUTHORIZED:
        return ngx_platform_hls_deny(r, NGX_HTTP_UNAUTHORIZED,
                                     "unauthenticated",
                                     ctx->kind == NGX_PLATFORM_HLS_INGEST
                                     ? "send Authorization: Bearer "
                                       "<ingest key>"
                                     : "sign in to watch");

    case NGX_HTTP_FORBIDDEN:
        return ngx_platform_hls_deny(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                     ctx->kind == NGX_PLATFORM_HLS_INGEST
                                     ? "the ingest key is wrong"
                                     : "the stream is for ticket holders");

    case NGX_HTTP_NOT_FOUND:
        return ngx_platform_hls_deny(r, NGX_HTTP_NOT_FOUND, "not_found",
                                     "no such event");

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_hls: the %s check answered %ui",
                      ctx->kind == NGX_PLATFORM_HLS_INGEST ? "ingest"
                                                           : "watch",
                      ctx->status);

        return ngx_platform_hls_deny(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "unavailable",
                                     "try again in a moment");
    }

    if (ctx->kind == NGX_PLATFORM_HLS_WATCH) {
        if (ngx_platform_hls_headers(r, hlcf, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_DECLINED;
    }

    /* ingest */

    if (r->method == NGX_HTTP_DELETE) {
        return ngx_platform_hls_delete(r, hmcf, ctx);
    }

    if (ctx->type == NGX_PLATFORM_HLS_PLAYLIST && r->method == NGX_HTTP_PUT) {
        ngx_platform_hls_marker(r, hmcf, ctx);
    }

    return NGX_DECLINED;
}


/*
 * DELETE (ffmpeg's delete_segments) is answered here rather than by the
 * dav module, which refuses a DELETE with a (chunked, empty) body.  A
 * recording keeps every segment: the encoder is told it is gone.
 */

static ngx_int_t
ngx_platform_hls_delete(ngx_http_request_t *r,
    ngx_platform_hls_main_conf_t *hmcf, ngx_platform_hls_ctx_t *ctx)
{
    u_char     *p, path[NGX_MAX_PATH];
    ngx_int_t   rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->record || hmcf->store.len == 0) {
        return NGX_HTTP_NO_CONTENT;
    }

    if (hmcf->store.len + NGX_INT64_LEN + ctx->name.len + 3 > NGX_MAX_PATH) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(path, "%V/%uL/%V", &hmcf->store, ctx->event, &ctx->name);
    *p = '\0';

    if (ngx_delete_file(path) == NGX_FILE_ERROR) {
        if (ngx_errno == NGX_ENOENT) {
            return ngx_platform_hls_deny(r, NGX_HTTP_NOT_FOUND, "not_found",
                                         "no such file");
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", path);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_NO_CONTENT;
}


static ngx_int_t
ngx_platform_hls_deny(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_platform_send_error(r, status, code, message);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_platform_hls_headers(ngx_http_request_t *r,
    ngx_platform_hls_loc_conf_t *hlcf, ngx_platform_hls_ctx_t *ctx)
{
    ngx_str_t  *cc;

    cc = (ctx->type == NGX_PLATFORM_HLS_PLAYLIST)
         ? &ngx_platform_hls_no_cache : &ngx_platform_hls_immutable;

    if (ngx_platform_hls_add_header(r, &ngx_platform_hls_cache_control, cc)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (hlcf->cors.len == 0
        || (hlcf->cors.len == 3 && ngx_strncmp(hlcf->cors.data, "off", 3)
                                   == 0))
    {
        return NGX_OK;
    }

    if (ngx_platform_hls_add_header(r, &ngx_platform_hls_acao, &hlcf->cors)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (hlcf->cors.len == 1 && hlcf->cors.data[0] == '*') {
        return NGX_OK;
    }

    if (ngx_platform_hls_add_header(r, &ngx_platform_hls_acac,
                                    &ngx_platform_hls_true)
        != NGX_OK
        || ngx_platform_hls_add_header(r, &ngx_platform_hls_vary,
                                       &ngx_platform_hls_origin)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_platform_hls_add_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value = *value;

    return NGX_OK;
}


/* STORE/EVENT/.record exists while the event is being recorded */

static void
ngx_platform_hls_marker(ngx_http_request_t *r,
    ngx_platform_hls_main_conf_t *hmcf, ngx_platform_hls_ctx_t *ctx)
{
    u_char          *p, path[NGX_MAX_PATH];
    ngx_fd_t         fd;
    ngx_file_info_t  fi;

    if (hmcf->store.len == 0
        || hmcf->store.len + NGX_INT64_LEN + 16 > NGX_MAX_PATH)
    {
        return;
    }

    p = ngx_sprintf(path, "%V/%uL/", &hmcf->store, ctx->event);
    *p = '\0';

    if (ngx_file_info(path, &fi) == NGX_FILE_ERROR
        && ngx_create_dir(path, 0755) == NGX_FILE_ERROR
        && ngx_errno != NGX_EEXIST)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      ngx_create_dir_n " \"%s\" failed", path);
        return;
    }

    p = ngx_sprintf(p, ".record");
    *p = '\0';

    if (!ctx->record) {
        (void) ngx_delete_file(path);
        return;
    }

    if (ngx_file_info(path, &fi) != NGX_FILE_ERROR) {
        return;
    }

    fd = ngx_open_file(path, NGX_FILE_WRONLY, NGX_FILE_CREATE_OR_OPEN, 0644);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", path);
        return;
    }

    (void) ngx_close_file(fd);
}


static ngx_uint_t
ngx_platform_hls_name_type(ngx_str_t *name)
{
    u_char     *p, *dot;
    size_t      base;
    ngx_str_t   ext;

    if (name->len == 0 || name->len > NGX_PLATFORM_HLS_NAME_MAX + 5) {
        return 0;
    }

    dot = NULL;

    for (p = name->data; p < name->data + name->len; p++) {
        if (*p == '.') {
            if (dot) {
                return 0;
            }

            dot = p;
            continue;
        }

        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
        {
            return 0;
        }
    }

    if (dot == NULL) {
        return 0;
    }

    base = dot - name->data;

    if (base == 0 || base > NGX_PLATFORM_HLS_NAME_MAX) {
        return 0;
    }

    ext.data = dot + 1;
    ext.len = name->len - base - 1;

    if (ext.len == 4 && ngx_strncmp(ext.data, "m3u8", 4) == 0) {
        return NGX_PLATFORM_HLS_PLAYLIST;
    }

    if ((ext.len == 2 && ngx_strncmp(ext.data, "ts", 2) == 0)
        || (ext.len == 3 && ngx_strncmp(ext.data, "m4s", 3) == 0))
    {
        return NGX_PLATFORM_HLS_SEGMENT;
    }

    if (ext.len == 3 && ngx_strncmp(ext.data, "mp4", 3) == 0) {
        return NGX_PLATFORM_HLS_INIT;
    }

    return 0;
}


static ngx_int_t
ngx_platform_hls_event_id(ngx_str_t *s, uint64_t *id)
{
    off_t  n;

    if (s->len == 0 || s->len > 18) {
        return NGX_ERROR;
    }

    n = ngx_atoof(s->data, s->len);

    if (n <= 0) {
        return NGX_ERROR;
    }

    *id = (uint64_t) n;

    return NGX_OK;
}


static ngx_platform_hls_entry_t *
ngx_platform_hls_cache_slot(ngx_platform_hls_main_conf_t *hmcf,
    ngx_platform_hls_ctx_t *ctx)
{
    uint32_t  h;
    u_char    buf[1 + 8 + 8 + 16];

    buf[0] = (u_char) ctx->kind;
    ngx_memcpy(buf + 1, &ctx->event, 8);
    ngx_memcpy(buf + 9, &ctx->user, 8);
    ngx_memcpy(buf + 17, ctx->key, 16);

    h = ngx_murmur_hash2(buf, sizeof(buf));

    return &hmcf->cache[h % hmcf->cache_size];
}


/* base64url(HMAC-SHA256(key, "hls:<event>:<expires>")), 43 characters */

static void
ngx_platform_hls_sign(ngx_platform_hls_main_conf_t *hmcf, uint64_t event,
    time_t expires, u_char *out)
{
    u_char                              msg[64], mac[32], *p;
    ngx_str_t                           src, dst;
    crypto_auth_hmacsha256_state        st;

    p = ngx_sprintf(msg, "hls:%uL:%T", event, expires);

    crypto_auth_hmacsha256_init(&st, hmcf->sign_key.data,
                                hmcf->sign_key.len);
    crypto_auth_hmacsha256_update(&st, msg, p - msg);
    crypto_auth_hmacsha256_final(&st, mac);

    src.data = mac;
    src.len = sizeof(mac);
    dst.data = out;

    ngx_encode_base64url(&dst, &src);
}


static ngx_int_t
ngx_platform_hls_token_ok(ngx_platform_hls_main_conf_t *hmcf, uint64_t event,
    ngx_str_t *token)
{
    u_char  *dot, sig[NGX_PLATFORM_HLS_SIG_LEN + 1];
    time_t   expires;

    if (hmcf->sign_key.len == 0) {
        return NGX_DECLINED;
    }

    dot = ngx_strlchr(token->data, token->data + token->len, '.');

    if (dot == NULL || dot == token->data || dot - token->data > 12
        || token->data + token->len - (dot + 1) != NGX_PLATFORM_HLS_SIG_LEN)
    {
        return NGX_DECLINED;
    }

    expires = ngx_atotm(token->data, dot - token->data);

    if (expires == NGX_ERROR || expires < ngx_time()) {
        return NGX_DECLINED;
    }

    ngx_platform_hls_sign(hmcf, event, expires, sig);

    if (sodium_memcmp(sig, dot + 1, NGX_PLATFORM_HLS_SIG_LEN) != 0) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * $platform_hls_live, $platform_hls_vod, $platform_hls_token of the event
 * of platform_hls event=; $platform_hls_store
 */

static ngx_int_t
ngx_platform_hls_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p, *pl, path[NGX_MAX_PATH];
    size_t                         len;
    time_t                         expires;
    uint64_t                       event;
    ngx_str_t                      ev;
    ngx_uint_t                     yes;
    ngx_file_info_t                fi;
    ngx_platform_hls_loc_conf_t   *hlcf;
    ngx_platform_hls_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_platform_hls_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_platform_hls_module);

    v->not_found = 1;

    if (data == NGX_PLATFORM_HLS_VAR_STORE) {
        if (hmcf->store.len == 0) {
            return NGX_OK;
        }

        v->data = hmcf->store.data;
        v->len = hmcf->store.len;

        goto found;
    }

    if (hlcf->event == NULL) {
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, hlcf->event, &ev) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_platform_hls_event_id(&ev, &event) != NGX_OK) {
        return NGX_OK;
    }

    if (data == NGX_PLATFORM_HLS_VAR_TOKEN) {
        if (hmcf->sign_key.len == 0) {
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 1
                                 + NGX_PLATFORM_HLS_SIG_LEN + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        expires = ngx_time() + hmcf->sign_ttl;

        v->data = p;
        p = ngx_sprintf(p, "%T.", expires);
        ngx_platform_hls_sign(hmcf, event, expires, p);
        v->len = p + NGX_PLATFORM_HLS_SIG_LEN - v->data;

        goto found;
    }

    if (hmcf->store.len == 0
        || hmcf->store.len + NGX_INT64_LEN + 16 > NGX_MAX_PATH)
    {
        return NGX_OK;
    }

    p = ngx_sprintf(path, "%V/%uL/%s", &hmcf->store, event,
                    data == NGX_PLATFORM_HLS_VAR_VOD ? "vod.m3u8"
                                                     : "index.m3u8");
    *p = '\0';

    yes = 0;

    if (data == NGX_PLATFORM_HLS_VAR_VOD) {
        yes = (ngx_file_info(path, &fi) != NGX_FILE_ERROR);

    } else {
        pl = ngx_platform_hls_read(path, &len, &fi, r->connection->log);

        if (pl) {
            yes = ngx_file_mtime(&fi) + hmcf->idle >= ngx_time()
                  && ngx_strlcasestrn(pl, pl + len,
                                      (u_char *) "#EXT-X-ENDLIST",
                                      sizeof("#EXT-X-ENDLIST") - 2)
                     == NULL;
            ngx_free(pl);
        }
    }

    if (yes) {
        ngx_str_set(&ev, "true");

    } else {
        ngx_str_set(&ev, "false");
    }

    v->data = ev.data;
    v->len = ev.len;

found:

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the sweep: one worker, every platform_hls_sweep */

static void
ngx_platform_hls_sweep_handler(ngx_event_t *ev)
{
    ngx_platform_hls_main_conf_t *hmcf = ev->data;

    off_t                     total;
    size_t                    len;
    ngx_dir_t                 dir;
    ngx_str_t                 path;
    ngx_uint_t                i, removed;
    ngx_array_t               removable;
    ngx_platform_hls_file_t  *f;
    u_char                    buf[NGX_MAX_PATH];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_memzero(&removable, sizeof(ngx_array_t));
    removable.size = sizeof(ngx_platform_hls_file_t);

    if (ngx_open_dir(&hmcf->store, &dir) == NGX_ERROR) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_ERR, ev->log, ngx_errno,
                          ngx_open_dir_n " \"%V\" failed", &hmcf->store);
        }

        goto next;
    }

    total = 0;

    for ( ;; ) {
        ngx_set_errno(0);

        if (ngx_read_dir(&dir) == NGX_ERROR) {
            break;
        }

        len = ngx_de_namelen(&dir);

        if (len == 0 || len > 18
            || ngx_atoof(ngx_de_name(&dir), len) == NGX_ERROR
            || hmcf->store.len + len + 2 > NGX_MAX_PATH)
        {
            continue;
        }

        path.data = buf;
        path.len = ngx_sprintf(buf, "%V/%*s", &hmcf->store, len,
                               ngx_de_name(&dir)) - buf;
        buf[path.len] = '\0';

        ngx_platform_hls_sweep_dir(hmcf, &path, &removable, &total, ev->log);
    }

    (void) ngx_close_dir(&dir);

    /* over the size: the oldest segments no live playlist names go first */

    if (hmcf->max_size && total > hmcf->max_size && removable.nelts) {
        ngx_qsort(removable.elts, removable.nelts,
                  sizeof(ngx_platform_hls_file_t), ngx_platform_hls_older);

        f = removable.elts;
        removed = 0;

        for (i = 0; i < removable.nelts && total > hmcf->max_size; i++) {
            if (ngx_delete_file(f[i].path.data) != NGX_FILE_ERROR) {
                total -= f[i].size;
                removed++;
            }
        }

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "platform_hls: store \"%V\" over platform_hls_max_size "
                      "%O: removed the %ui oldest segments", &hmcf->store,
                      hmcf->max_size, removed);
    }

    f = removable.elts;

    for (i = 0; i < removable.nelts; i++) {
        ngx_free(f[i].path.data);
    }

    if (removable.elts) {
        ngx_free(removable.elts);
    }

next:

    ngx_add_timer(ev, hmcf->sweep);
}


static void
ngx_platform_hls_sweep_dir(ngx_platform_hls_main_conf_t *hmcf,
    ngx_str_t *dir, ngx_array_t *removable, off_t *total, ngx_log_t *log)
{
    u_char                   *pl, path[NGX_MAX_PATH];
    size_t                    len, n;
    time_t                    now;
    ngx_dir_t                 d;
    ngx_str_t                 name;
    ngx_uint_t                ended, record, files, type, live;
    ngx_file_info_t           fi, vfi;
    ngx_platform_hls_file_t  *f;

    if (dir->len + 32 > NGX_MAX_PATH) {
        return;
    }

    now = ngx_time();

    ngx_sprintf(path, "%V/.record%Z", dir);
    record = (ngx_file_info(path, &fi) != NGX_FILE_ERROR);

    ngx_sprintf(path, "%V/index.m3u8%Z", dir);
    pl = ngx_platform_hls_read(path, &len, &fi, log);

    ended = 1;
    live = 0;

    if (pl) {
        ended = ngx_strlcasestrn(pl, pl + len, (u_char *) "#EXT-X-ENDLIST",
                                 sizeof("#EXT-X-ENDLIST") - 2) != NULL;

        if (record) {
            ngx_platform_hls_record(dir, pl, len, ended, log);
        }

        if (!ended && ngx_file_mtime(&fi) + hmcf->idle < now) {
            if (ngx_platform_hls_write(dir, "index.m3u8",
                                       (u_char *) "#EXT-X-ENDLIST\n",
                                       sizeof("#EXT-X-ENDLIST\n") - 1, 1,
                                       log)
                == NGX_OK)
            {
                ngx_log_error(NGX_LOG_NOTICE, log, 0,
                              "platform_hls: \"%V\" idle for %T s: "
                              "the stream is ended", dir, hmcf->idle);
                ended = 1;
            }
        }

        live = !ended;

        if (record && ended) {
            ngx_sprintf(path, "%V/vod.m3u8%Z", dir);

            if (ngx_file_info(path, &vfi) == NGX_FILE_ERROR
                || ngx_file_mtime(&vfi) < ngx_file_mtime(&fi))
            {
                ngx_platform_hls_vod(dir, pl, len, log);
            }
        }
    }

    if (ngx_open_dir(dir, &d) == NGX_ERROR) {
        goto done;
    }

    files = 0;

    for ( ;; ) {
        ngx_set_errno(0);

        if (ngx_read_dir(&d) == NGX_ERROR) {
            break;
        }

        name.data = ngx_de_name(&d);
        name.len = ngx_de_namelen(&d);

        type = ngx_platform_hls_name_type(&name);

        if (type == 0 || files++ > NGX_PLATFORM_HLS_FILES_MAX) {
            continue;
        }

        ngx_sprintf(path, "%V/%V%Z", dir, &name);

        if (ngx_file_info(path, &fi) == NGX_FILE_ERROR) {
            continue;
        }

        *total += ngx_file_size(&fi);

        if (type != NGX_PLATFORM_HLS_SEGMENT) {
            continue;
        }

        if (pl && ngx_platform_hls_referenced(pl, len, &name) && live) {
            continue;
        }

        if (!record && ngx_file_mtime(&fi) + hmcf->grace < now
            && !(pl && ngx_platform_hls_referenced(pl, len, &name)))
        {
            if (ngx_delete_file(path) != NGX_FILE_ERROR) {
                *total -= ngx_file_size(&fi);
            }

            continue;
        }

        if (hmcf->max_size == 0) {
            continue;
        }

        if (removable->nelts == removable->nalloc) {
            f = ngx_alloc((removable->nalloc * 2 + 64)
                          * sizeof(ngx_platform_hls_file_t), log);
            if (f == NULL) {
                continue;
            }

            if (removable->elts) {
                ngx_memcpy(f, removable->elts,
                           removable->nelts * sizeof(ngx_platform_hls_file_t));
                ngx_free(removable->elts);
            }

            removable->elts = f;
            removable->nalloc = removable->nalloc * 2 + 64;
        }

        f = (ngx_platform_hls_file_t *) removable->elts + removable->nelts++;

        n = ngx_strlen(path);

        f->path.data = ngx_alloc(n + 1, log);
        if (f->path.data == NULL) {
            removable->nelts--;
            continue;
        }

        ngx_memcpy(f->path.data, path, n + 1);
        f->path.len = n;
        f->mtime = ngx_file_mtime(&fi);
        f->size = ngx_file_size(&fi);
    }

    (void) ngx_close_dir(&d);

done:

    if (pl) {
        ngx_free(pl);
    }
}


/* a playlist into memory (ngx_free it); NULL when absent or too large */

static u_char *
ngx_platform_hls_read(u_char *path, size_t *len, ngx_file_info_t *fi,
    ngx_log_t *log)
{
    return ngx_platform_hls_read_max(path, len, fi,
                                     NGX_PLATFORM_HLS_READ_MAX, log);
}


static u_char *
ngx_platform_hls_read_max(u_char *path, size_t *len, ngx_file_info_t *fi,
    off_t max, ngx_log_t *log)
{
    u_char      *buf;
    ssize_t      n;
    ngx_file_t   file;

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name.data = path;
    file.name.len = ngx_strlen(path);
    file.log = log;

    file.fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        return NULL;
    }

    buf = NULL;

    if (ngx_fd_info(file.fd, fi) == NGX_FILE_ERROR
        || ngx_file_size(fi) > max)
    {
        goto done;
    }

    buf = ngx_alloc(ngx_file_size(fi) + 1, log);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, buf, ngx_file_size(fi), 0);

    if (n == NGX_ERROR) {
        ngx_free(buf);
        buf = NULL;
        goto done;
    }

    buf[n] = '\0';
    *len = n;

done:

    (void) ngx_close_file(file.fd);

    return buf;
}


/*
 * DIR/NAME replaced atomically by DIR/.NAME.tmp renamed over it; with
 * append, the new bytes follow the old ones.
 */

static ngx_int_t
ngx_platform_hls_write(ngx_str_t *dir, const char *name, u_char *data,
    size_t len, ngx_uint_t append, ngx_log_t *log)
{
    u_char           *old, path[NGX_MAX_PATH], tmp[NGX_MAX_PATH];
    size_t            olen;
    ngx_fd_t          fd;
    ngx_int_t         rc;
    ngx_file_info_t   fi;

    ngx_sprintf(path, "%V/%s%Z", dir, name);
    ngx_sprintf(tmp, "%V/.%s.tmp%Z", dir, name);

    old = NULL;
    olen = 0;

    if (append) {
        old = ngx_platform_hls_read(path, &olen, &fi, log);
    }

    fd = ngx_open_file(tmp, NGX_FILE_WRONLY, NGX_FILE_TRUNCATE, 0644);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", tmp);
        if (old) {
            ngx_free(old);
        }
        return NGX_ERROR;
    }

    rc = NGX_OK;

    if ((olen && write(fd, old, olen) != (ssize_t) olen)
        || (len && write(fd, data, len) != (ssize_t) len))
    {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "write() \"%s\" failed", tmp);
        rc = NGX_ERROR;
    }

    if (old) {
        ngx_free(old);
    }

    (void) ngx_close_file(fd);

    if (rc == NGX_OK && ngx_rename_file(tmp, path) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_rename_file_n " \"%s\" failed", tmp);
        rc = NGX_ERROR;
    }

    if (rc != NGX_OK) {
        (void) ngx_delete_file(tmp);
    }

    return rc;
}


/* DIR/NAME grows by DATA (the recording's list, which only this worker
 * writes and nobody serves) */

static ngx_int_t
ngx_platform_hls_append(ngx_str_t *dir, const char *name, u_char *data,
    size_t len, ngx_log_t *log)
{
    u_char    path[NGX_MAX_PATH];
    ngx_fd_t  fd;
    ngx_int_t rc;

    ngx_sprintf(path, "%V/%s%Z", dir, name);

    fd = ngx_open_file(path, NGX_FILE_APPEND, NGX_FILE_CREATE_OR_OPEN, 0644);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", path);
        return NGX_ERROR;
    }

    rc = NGX_OK;

    if (write(fd, data, len) != (ssize_t) len) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "write() \"%s\" failed", path);
        rc = NGX_ERROR;
    }

    (void) ngx_close_file(fd);

    return rc;
}


/* NAME is a line of the playlist (a segment URI) or its EXT-X-MAP */

static ngx_int_t
ngx_platform_hls_referenced(u_char *pl, size_t len, ngx_str_t *name)
{
    u_char  *p, *last;

    last = pl + len;
    p = pl;

    while (p < last) {
        p = ngx_strlcasestrn(p, last, name->data, name->len - 1);

        if (p == NULL) {
            return 0;
        }

        if ((p == pl || p[-1] == '\n' || p[-1] == '"' || p[-1] == '/')
            && (p + name->len == last || p[name->len] == '\n'
                || p[name->len] == '\r' || p[name->len] == '"'))
        {
            return 1;
        }

        p += name->len;
    }

    return 0;
}


/*
 * Recording: every "#EXTINF...\n<uri>\n" pair of the live playlist whose
 * media sequence number is past the last one kept is appended to
 * DIR/.vod; DIR/.vodseq holds that number.  A live playlist starting
 * before it while a finished recording is there is a new push (encoders
 * number from 0 again, overwriting the old segments): the recording starts
 * over.
 */

static void
ngx_platform_hls_record(ngx_str_t *dir, u_char *pl, size_t len,
    ngx_uint_t ended, ngx_log_t *log)
{
    u_char           *p, *last, *eol, *inf, *s, path[NGX_MAX_PATH];
    u_char           *out, *o, num[NGX_INT64_LEN + 2];
    size_t            slen;
    int64_t           seq, kept;
    ngx_uint_t        append;
    ngx_file_info_t   fi;

    ngx_sprintf(path, "%V/.vodseq%Z", dir);

    kept = -1;
    s = ngx_platform_hls_read(path, &slen, &fi, log);

    if (s) {
        if (slen) {
            kept = ngx_atoof(s, slen);
        }

        ngx_free(s);
    }

    last = pl + len;
    seq = 0;

    p = ngx_strlcasestrn(pl, last, (u_char *) "#EXT-X-MEDIA-SEQUENCE:",
                         sizeof("#EXT-X-MEDIA-SEQUENCE:") - 2);

    if (p) {
        p += sizeof("#EXT-X-MEDIA-SEQUENCE:") - 1;

        for (eol = p; eol < last && *eol >= '0' && *eol <= '9'; eol++) {
            /* void */
        }

        seq = ngx_atoof(p, eol - p);

        if (seq < 0) {
            return;
        }
    }

    append = 1;

    ngx_sprintf(path, "%V/vod.m3u8%Z", dir);

    if (!ended && seq <= kept && ngx_file_info(path, &fi) != NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "platform_hls: \"%V\" pushed again: the recording "
                      "starts over", dir);
        (void) ngx_delete_file(path);
        kept = -1;
        append = 0;
    }

    out = ngx_alloc(len + 1, log);
    if (out == NULL) {
        return;
    }

    o = out;
    inf = NULL;
    seq--;

    for (p = pl; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        if (eol - p >= 8 && ngx_strncmp(p, "#EXTINF:", 8) == 0) {
            inf = p;
            continue;
        }

        if (p == eol || *p == '#' || *p == '\r') {
            continue;
        }

        seq++;

        if (seq <= kept || inf == NULL) {
            inf = NULL;
            continue;
        }

        o = ngx_cpymem(o, inf, eol - inf);
        *o++ = '\n';
        inf = NULL;
        kept = seq;
    }

    if (o > out) {
        if ((append ? ngx_platform_hls_append(dir, ".vod", out, o - out, log)
                    : ngx_platform_hls_write(dir, ".vod", out, o - out, 0,
                                             log))
            == NGX_OK)
        {
            o = ngx_sprintf(num, "%L", kept);
            (void) ngx_platform_hls_write(dir, ".vodseq", num, o - num, 0,
                                          log);
        }
    }

    ngx_free(out);
}


/* DIR/vod.m3u8: the live playlist's header lines and every kept segment */

static void
ngx_platform_hls_vod(ngx_str_t *dir, u_char *pl, size_t len, ngx_log_t *log)
{
    u_char           *p, *last, *eol, *out, *o, *kept, path[NGX_MAX_PATH];
    size_t            klen;
    ngx_file_info_t   fi;

    ngx_sprintf(path, "%V/.vod%Z", dir);

    kept = ngx_platform_hls_read_max(path, &klen, &fi,
                                     NGX_PLATFORM_HLS_VOD_MAX, log);
    if (kept == NULL) {
        if (ngx_file_info(path, &fi) == NGX_FILE_ERROR) {
            return;    /* nothing recorded (yet) */
        }

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "platform_hls: \"%V/.vod\" missing or larger than "
                      "%d bytes: no vod.m3u8", dir, NGX_PLATFORM_HLS_VOD_MAX);
        return;
    }

    out = ngx_alloc(len + klen + 128, log);
    if (out == NULL) {
        ngx_free(kept);
        return;
    }

    o = ngx_cpymem(out, "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n"
                   "#EXT-X-MEDIA-SEQUENCE:0\n",
                   sizeof("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n"
                          "#EXT-X-MEDIA-SEQUENCE:0\n") - 1);

    last = pl + len;

    for (p = pl; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        if ((eol - p > 15 && ngx_strncmp(p, "#EXT-X-VERSION:", 15) == 0)
            || (eol - p > 22
                && ngx_strncmp(p, "#EXT-X-TARGETDURATION:", 22) == 0)
            || (eol - p > 11 && ngx_strncmp(p, "#EXT-X-MAP:", 11) == 0))
        {
            o = ngx_cpymem(o, p, eol - p);
            *o++ = '\n';
        }

        if (eol - p >= 8 && ngx_strncmp(p, "#EXTINF:", 8) == 0) {
            break;
        }
    }

    o = ngx_cpymem(o, kept, klen);
    o = ngx_cpymem(o, "#EXT-X-ENDLIST\n", sizeof("#EXT-X-ENDLIST\n") - 1);

    if (ngx_platform_hls_write(dir, "vod.m3u8", out, o - out, 0, log)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "platform_hls: \"%V/vod.m3u8\" written", dir);
    }

    ngx_free(out);
    ngx_free(kept);
}


static int ngx_libc_cdecl
ngx_platform_hls_older(const void *a, const void *b)
{
    const ngx_platform_hls_file_t  *fa = a, *fb = b;

    return (fa->mtime > fb->mtime) - (fa->mtime < fb->mtime);
}


/* configuration */

static char *
ngx_platform_hls(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_hls_loc_conf_t *hlcf = conf;

    ngx_str_t                         *value, v;
    ngx_uint_t                         i;
    ngx_http_complex_value_t         **cvp;
    ngx_http_compile_complex_value_t   ccv;

    if (hlcf->event != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "event=", 6) == 0) {
            cvp = &hlcf->event;
            v.data = value[i].data + 6;

        } else if (ngx_strncmp(value[i].data, "name=", 5) == 0) {
            cvp = &hlcf->name;
            v.data = value[i].data + 5;

        } else if (ngx_strncmp(value[i].data, "token=", 6) == 0) {
            cvp = &hlcf->token;
            v.data = value[i].data + 6;

        } else if (ngx_strncmp(value[i].data, "ingest=", 7) == 0) {
            cvp = &hlcf->ingest;
            v.data = value[i].data + 7;

        } else if (ngx_strncmp(value[i].data, "watch=", 6) == 0) {
            cvp = &hlcf->watch;
            v.data = value[i].data + 6;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        v.len = value[i].data + value[i].len - v.data;

        if (v.len == 0 || *cvp != NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        *cvp = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (*cvp == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &v;
        ccv.complex_value = *cvp;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (hlcf->event == NULL) {
        return "needs event=";
    }

    if (hlcf->name && (hlcf->ingest == NULL || hlcf->watch == NULL)) {
        return "with name= needs ingest= and watch=";
    }

    return NGX_CONF_OK;
}


/* the key's file is read as bytes (32 random bytes, like the session key) */

static char *
ngx_platform_hls_sign_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_hls_main_conf_t *hmcf = conf;

    ssize_t           n;
    ngx_str_t        *value, name;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    if (hmcf->sign_key.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;

    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    n = NGX_ERROR;

    if (ngx_fd_info(file.fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) >= 32 && ngx_file_size(&fi) <= 1024)
    {
        hmcf->sign_key.data = ngx_pnalloc(cf->pool, ngx_file_size(&fi));

        if (hmcf->sign_key.data) {
            n = ngx_read_file(&file, hmcf->sign_key.data,
                              ngx_file_size(&fi), 0);
        }
    }

    (void) ngx_close_file(file.fd);

    if (n < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must hold 32 to 1024 bytes", &name);
        return NGX_CONF_ERROR;
    }

    hmcf->sign_key.len = n;

    return NGX_CONF_OK;
}


static void *
ngx_platform_hls_create_main_conf(ngx_conf_t *cf)
{
    ngx_platform_hls_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_hls_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     hmcf->store = { 0, NULL };
     *     hmcf->sign_key = { 0, NULL };
     *     hmcf->cache = NULL;
     */

    hmcf->idle = NGX_CONF_UNSET;
    hmcf->grace = NGX_CONF_UNSET;
    hmcf->max_size = NGX_CONF_UNSET;
    hmcf->sweep = NGX_CONF_UNSET_MSEC;
    hmcf->sign_ttl = NGX_CONF_UNSET;
    hmcf->cache_size = NGX_CONF_UNSET_UINT;
    hmcf->cache_ttl = NGX_CONF_UNSET;

    return hmcf;
}


static char *
ngx_platform_hls_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_platform_hls_main_conf_t *hmcf = conf;

    u_char  *p;

    ngx_conf_init_value(hmcf->idle, 10);
    ngx_conf_init_value(hmcf->grace, 30);
    ngx_conf_init_value(hmcf->max_size, 0);
    ngx_conf_init_msec_value(hmcf->sweep, 1000);
    ngx_conf_init_value(hmcf->sign_ttl, 3600);
    ngx_conf_init_uint_value(hmcf->cache_size, 16384);
    ngx_conf_init_value(hmcf->cache_ttl, 5);

    if (hmcf->cache_size == 0) {
        hmcf->cache_size = 1;
    }

    if (hmcf->store.len) {
        if (ngx_conf_full_name(cf->cycle, &hmcf->store, 0) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        while (hmcf->store.len > 1
               && hmcf->store.data[hmcf->store.len - 1] == '/')
        {
            hmcf->store.len--;
        }

        /* NUL-terminated for ngx_open_dir() */
        p = ngx_pnalloc(cf->pool, hmcf->store.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, hmcf->store.data, hmcf->store.len);
        p[hmcf->store.len] = '\0';
        hmcf->store.data = p;
    }

    return NGX_CONF_OK;
}


static void *
ngx_platform_hls_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_hls_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_hls_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     hlcf->event = NULL;
     *     hlcf->name = NULL;
     *     hlcf->token = NULL;
     *     hlcf->ingest = NULL;
     *     hlcf->watch = NULL;
     *     hlcf->cors = { 0, NULL };
     */

    hlcf->playlist_max = NGX_CONF_UNSET_SIZE;
    hlcf->cors.data = NULL;

    return hlcf;
}


static char *
ngx_platform_hls_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_hls_loc_conf_t *prev = parent;
    ngx_platform_hls_loc_conf_t *conf = child;

    if (conf->event == NULL) {
        conf->event = prev->event;
        conf->name = prev->name;
        conf->token = prev->token;
        conf->ingest = prev->ingest;
        conf->watch = prev->watch;
    }

    ngx_conf_merge_size_value(conf->playlist_max, prev->playlist_max,
                              256 * 1024);
    ngx_conf_merge_str_value(conf->cors, prev->cors, "");

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_platform_hls_preconfiguration(ngx_conf_t *cf)
{
    return ngx_platform_add_variables(cf, ngx_platform_hls_vars);
}


static ngx_int_t
ngx_platform_hls_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_platform_hls_main_conf_t  *hmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_platform_hls_handler;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_hls_module);

    hmcf->user_index = ngx_http_get_variable_index(cf,
                                                   &ngx_platform_hls_user_var);
    if (hmcf->user_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_platform_hls_init_process(ngx_cycle_t *cycle)
{
    ngx_platform_hls_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_platform_hls_module);

    if (hmcf == NULL) {
        return NGX_OK;
    }

    hmcf->cache = ngx_calloc(hmcf->cache_size
                             * sizeof(ngx_platform_hls_entry_t), cycle->log);
    if (hmcf->cache == NULL) {
        return NGX_ERROR;
    }

    if (hmcf->store.len == 0
        || (ngx_process != NGX_PROCESS_SINGLE && ngx_worker != 0))
    {
        return NGX_OK;
    }

    hmcf->sweep_event.handler = ngx_platform_hls_sweep_handler;
    hmcf->sweep_event.data = hmcf;
    hmcf->sweep_event.log = cycle->log;
    hmcf->sweep_event.cancelable = 1;

    ngx_add_timer(&hmcf->sweep_event, hmcf->sweep);

    return NGX_OK;
}
