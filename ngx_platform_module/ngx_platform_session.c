
/*
 * Sessions and access: cookies sealed with libsodium's crypto_secretbox,
 * verified in the access phase with no database round trip; platform_auth;
 * the identity variables; the Origin check; the epoch table that makes
 * "sign out everywhere" stick; $platform_random.
 *
 * Cookie: base64url(0x01 | nonce[24] | secretbox(claims)), claims being
 * "u=<user>;e=<epoch>;x=<unix expiry>;f=<0|1>;r=<role[:org],...>" as
 * written by platform.set_session() in SQL.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"
#include <sodium.h>


#define NGX_PLATFORM_AUTH_UNSET     NGX_CONF_UNSET_UINT
#define NGX_PLATFORM_AUTH_OFF       0
#define NGX_PLATFORM_AUTH_OPTIONAL  1
#define NGX_PLATFORM_AUTH_ANY       2
#define NGX_PLATFORM_AUTH_ROLES     3

#define NGX_PLATFORM_SESSION_VERSION  1
#define NGX_PLATFORM_SESSION_HEADER                                          \
    (1 + crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
#define NGX_PLATFORM_SESSION_MAX_CLAIMS  1024

/* cookies and claims up to these sizes are kept in the per-worker cache */
#define NGX_PLATFORM_SESSION_CACHE_COOKIE  320
#define NGX_PLATFORM_SESSION_CACHE_CLAIMS  224

/* a worker that started a poll and died is given up on after this */
#define NGX_PLATFORM_SESSION_POLL_DEADLINE  30


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    time_t                       next_poll;
    time_t                       poll_deadline;
    u_char                       since[64];
    size_t                       since_len;
    ngx_uint_t                   loaded;
} ngx_platform_session_shctx_t;


typedef struct {
    ngx_rbtree_node_t            node;        /* key: user id */
    uint32_t                     epoch;
    time_t                       changed;
} ngx_platform_session_node_t;


/*
 * A cookie this worker opened before, and its claims: the same bytes open
 * to the same claims, so the decryption is not repeated.  Expiry and epoch
 * are still checked on every request.
 */
typedef struct {
    u_short                      cookie_len;
    u_short                      claims_len;
    u_char                       cookie[NGX_PLATFORM_SESSION_CACHE_COOKIE];
    u_char                       claims[NGX_PLATFORM_SESSION_CACHE_CLAIMS];
} ngx_platform_session_slot_t;


typedef struct {
    ngx_array_t                 *keys;        /* ngx_str_t, 32 bytes each */
    ngx_str_t                    cookie;
    ngx_flag_t                   secure;
    size_t                       zone_size;
    ngx_msec_t                   epoch_poll;
    time_t                       max_age;
    ngx_array_t                 *origins;     /* ngx_str_t */
    ngx_str_t                    pg_name;
    ngx_uint_t                   cache_size;

    ngx_shm_zone_t              *zone;
    ngx_platform_session_shctx_t  *sh;
    ngx_slab_pool_t             *shpool;
    ngx_platform_pg_upstream_t  *upstream;
    ngx_uint_t                   statement;

    /* this worker's cache of opened cookies and its poll */
    ngx_platform_session_slot_t *cache;
    ngx_event_t                  poll_event;
    ngx_platform_pg_query_t     *poll;
    const char                  *poll_values[2];
    u_char                       poll_since[64];
    u_char                       poll_max_age[NGX_TIME_T_LEN + 1];
} ngx_platform_auth_main_conf_t;


typedef struct {
    ngx_uint_t                   mode;
    ngx_array_t                 *roles;       /* ngx_str_t */
    ngx_http_complex_value_t    *org;
} ngx_platform_auth_loc_conf_t;


typedef struct {
    ngx_uint_t                   valid;
    ngx_str_t                    user;
    ngx_str_t                    roles;
    ngx_str_t                    role;
    ngx_str_t                    org;
    ngx_str_t                    expires;
    ngx_uint_t                   mfa;
} ngx_platform_auth_ctx_t;


typedef struct {
    uint64_t                     user;
    uint32_t                     epoch;
    time_t                       expires;
    ngx_uint_t                   mfa;
    ngx_str_t                    user_text;
    ngx_str_t                    expires_text;
    ngx_str_t                    roles;
} ngx_platform_claims_t;


static ngx_int_t ngx_platform_auth_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_auth_deny(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
static ngx_int_t ngx_platform_auth_match(ngx_http_request_t *r,
    ngx_platform_auth_loc_conf_t *alcf, ngx_platform_auth_ctx_t *ctx);
static ngx_int_t ngx_platform_auth_origin(ngx_http_request_t *r,
    ngx_platform_auth_main_conf_t *amcf);
static ngx_int_t ngx_platform_session_open(ngx_http_request_t *r,
    ngx_platform_auth_main_conf_t *amcf, ngx_platform_claims_t *cl);
static ngx_int_t ngx_platform_session_parse(u_char *p, u_char *last,
    ngx_platform_claims_t *cl);
static ngx_int_t ngx_platform_session_cookie(ngx_http_request_t *r,
    ngx_platform_auth_main_conf_t *amcf, ngx_str_t *value, time_t max_age);

static uint32_t ngx_platform_session_epoch(
    ngx_platform_auth_main_conf_t *amcf, uint64_t user, ngx_uint_t *found);
static void ngx_platform_session_set_epoch(
    ngx_platform_auth_main_conf_t *amcf, uint64_t user, uint32_t epoch);
static ngx_platform_session_node_t *ngx_platform_session_lookup(
    ngx_platform_session_shctx_t *sh, uint64_t user);
static void ngx_platform_session_evict(ngx_platform_auth_main_conf_t *amcf);
static ngx_int_t ngx_platform_session_init_zone(ngx_shm_zone_t *zone,
    void *data);
static void ngx_platform_session_poll_handler(ngx_event_t *ev);
static void ngx_platform_session_poll_done(ngx_platform_pg_query_t *q);

static ngx_int_t ngx_platform_auth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_platform_random_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_platform_auth_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_platform_auth_postconfiguration(ngx_conf_t *cf);
static void *ngx_platform_auth_create_main_conf(ngx_conf_t *cf);
static char *ngx_platform_auth_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_platform_auth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_auth_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_session_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_auth(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_platform_auth_init_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_platform_auth_commands[] = {

    { ngx_string("platform_session_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_platform_session_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_session_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, cookie),
      NULL },

    { ngx_string("platform_session_secure"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, secure),
      NULL },

    { ngx_string("platform_session_zone_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, zone_size),
      NULL },

    { ngx_string("platform_session_epoch_poll"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, epoch_poll),
      NULL },

    { ngx_string("platform_session_max_age"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, max_age),
      NULL },

    { ngx_string("platform_session_origins"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, origins),
      NULL },

    { ngx_string("platform_session_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, cache_size),
      NULL },

    { ngx_string("platform_session_pg"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_auth_main_conf_t, pg_name),
      NULL },

    { ngx_string("platform_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_auth,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_auth_module_ctx = {
    ngx_platform_auth_preconfiguration,    /* preconfiguration */
    ngx_platform_auth_postconfiguration,   /* postconfiguration */

    ngx_platform_auth_create_main_conf,    /* create main configuration */
    ngx_platform_auth_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_auth_create_loc_conf,     /* create location configuration */
    ngx_platform_auth_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_platform_auth_module = {
    NGX_MODULE_V1,
    &ngx_platform_auth_module_ctx,         /* module context */
    ngx_platform_auth_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_platform_auth_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_platform_auth_vars[] = {

    { ngx_string("platform_user"), NULL, ngx_platform_auth_variable,
      offsetof(ngx_platform_auth_ctx_t, user), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_roles"), NULL, ngx_platform_auth_variable,
      offsetof(ngx_platform_auth_ctx_t, roles), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_role"), NULL, ngx_platform_auth_variable,
      offsetof(ngx_platform_auth_ctx_t, role), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_org"), NULL, ngx_platform_auth_variable,
      offsetof(ngx_platform_auth_ctx_t, org), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_session_expires"), NULL,
      ngx_platform_auth_variable,
      offsetof(ngx_platform_auth_ctx_t, expires), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

    { ngx_string("platform_mfa"), NULL, ngx_platform_auth_variable,
      (uintptr_t) -1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_random"), NULL, ngx_platform_random_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* the access phase */


static ngx_int_t
ngx_platform_auth_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_platform_claims_t           cl;
    ngx_platform_auth_ctx_t        *ctx;
    ngx_platform_auth_loc_conf_t   *alcf;
    ngx_platform_auth_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_platform_auth_module);

    if (alcf->mode == NGX_PLATFORM_AUTH_OFF || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_platform_auth_module);

    if (ctx) {
        /* decided already: this is a later pass of the access phase */
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_auth_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_platform_auth_module);

    amcf = ngx_http_get_module_main_conf(r, ngx_platform_auth_module);

    rc = ngx_platform_session_open(r, amcf, &cl);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        ctx->valid = 1;
        ctx->user = cl.user_text;
        ctx->roles = cl.roles;
        ctx->expires = cl.expires_text;
        ctx->mfa = cl.mfa;

        /* a cookie changes state only from a page of an allowed origin */

        if ((r->method & (NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH
                          |NGX_HTTP_DELETE))
            && ngx_platform_auth_origin(r, amcf) != NGX_OK)
        {
            ctx->valid = 0;
            return ngx_platform_auth_deny(r, NGX_HTTP_FORBIDDEN, "origin",
                                          "the request did not come from "
                                          "an allowed origin");
        }
    }

    if (alcf->mode == NGX_PLATFORM_AUTH_OPTIONAL) {
        return NGX_DECLINED;
    }

    if (!ctx->valid) {
        return ngx_platform_auth_deny(r, NGX_HTTP_UNAUTHORIZED,
                                      "unauthenticated",
                                      "sign in to continue");
    }

    if (alcf->mode == NGX_PLATFORM_AUTH_ANY) {
        ngx_str_set(&ctx->role, "participant");
        return NGX_DECLINED;
    }

    return ngx_platform_auth_match(r, alcf, ctx);
}


static ngx_int_t
ngx_platform_auth_deny(ngx_http_request_t *r, ngx_uint_t status,
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


/* the first configured role found among the session's memberships */

static ngx_int_t
ngx_platform_auth_match(ngx_http_request_t *r,
    ngx_platform_auth_loc_conf_t *alcf, ngx_platform_auth_ctx_t *ctx)
{
    u_char      *p, *last, *end, *colon;
    ngx_str_t   *role, org, name, morg;
    ngx_uint_t   i, mfa_missing;

    org.len = 0;

    if (alcf->org) {
        if (ngx_http_complex_value(r, alcf->org, &org) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (org.len == 0) {
            return ngx_platform_auth_deny(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                          "no organisation given");
        }
    }

    role = alcf->roles->elts;
    mfa_missing = 0;

    for (i = 0; i < alcf->roles->nelts; i++) {

        p = ctx->roles.data;
        last = p + ctx->roles.len;

        while (p < last) {
            end = ngx_strlchr(p, last, ',');
            if (end == NULL) {
                end = last;
            }

            colon = ngx_strlchr(p, end, ':');

            name.data = p;
            name.len = (colon ? colon : end) - p;
            morg.data = colon ? colon + 1 : end;
            morg.len = end - morg.data;

            p = end + 1;

            if (name.len != role[i].len
                || ngx_strncmp(name.data, role[i].data, name.len) != 0)
            {
                continue;
            }

            if (org.len
                && (morg.len != org.len
                    || ngx_strncmp(morg.data, org.data, org.len) != 0))
            {
                continue;
            }

            /* staff act only after their second factor */

            if (name.len == 5 && ngx_strncmp(name.data, "staff", 5) == 0
                && !ctx->mfa)
            {
                mfa_missing = 1;
                continue;
            }

            ctx->role = name;
            ctx->org = morg;

            return NGX_DECLINED;
        }
    }

    if (mfa_missing) {
        return ngx_platform_auth_deny(r, NGX_HTTP_FORBIDDEN, "mfa_required",
                                      "confirm with your authenticator code "
                                      "first");
    }

    return ngx_platform_auth_deny(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                  "your account may not do this");
}


/*
 * Origin (or Referer) must be one of platform_session_origins, or, when none
 * are listed, the request's own scheme://host.
 */

static ngx_int_t
ngx_platform_auth_origin(ngx_http_request_t *r,
    ngx_platform_auth_main_conf_t *amcf)
{
    u_char           *p, *last;
    ngx_str_t         origin, *allowed, scheme, *host;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    origin.len = 0;
    origin.data = NULL;

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

        if (h[i].key.len == sizeof("Origin") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Origin",
                               sizeof("Origin") - 1) == 0)
        {
            origin = h[i].value;
            break;
        }
    }

    if (origin.len == 0 || (origin.len == 4
                            && ngx_strncmp(origin.data, "null", 4) == 0))
    {
        if (r->headers_in.referer == NULL) {
            return NGX_DECLINED;
        }

        /* scheme://host[:port] of the Referer */

        p = r->headers_in.referer->value.data;
        last = p + r->headers_in.referer->value.len;

        p = ngx_strlcasestrn(p, last, (u_char *) "://", 3 - 1);
        if (p == NULL) {
            return NGX_DECLINED;
        }

        p += 3;

        while (p < last && *p != '/' && *p != '?' && *p != '#') {
            p++;
        }

        origin.data = r->headers_in.referer->value.data;
        origin.len = p - origin.data;
    }

    if (amcf->origins != NGX_CONF_UNSET_PTR) {
        allowed = amcf->origins->elts;

        for (i = 0; i < amcf->origins->nelts; i++) {
            if (allowed[i].len == origin.len
                && ngx_strncasecmp(allowed[i].data, origin.data, origin.len)
                   == 0)
            {
                return NGX_OK;
            }
        }

        return NGX_DECLINED;
    }

    /* the Host header as sent: with its port, unlike headers_in.server */

    if (r->headers_in.host == NULL || r->headers_in.host->value.len == 0) {
        return NGX_DECLINED;
    }

    host = &r->headers_in.host->value;

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        ngx_str_set(&scheme, "https://");

    } else
#endif
    {
        ngx_str_set(&scheme, "http://");
    }

    if (origin.len != scheme.len + host->len
        || ngx_strncasecmp(origin.data, scheme.data, scheme.len) != 0
        || ngx_strncasecmp(origin.data + scheme.len, host->data, host->len)
           != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the same rule for a handshake that is not a state-changing method */

ngx_int_t
ngx_platform_session_origin(ngx_http_request_t *r)
{
    ngx_platform_auth_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_platform_auth_module);

    return ngx_platform_auth_origin(r, amcf);
}


/* cookies */


static ngx_int_t
ngx_platform_session_open(ngx_http_request_t *r,
    ngx_platform_auth_main_conf_t *amcf, ngx_platform_claims_t *cl)
{
    u_char                       *m;
    size_t                        mlen;
    uint32_t                      epoch;
    ngx_str_t                     value, raw, *key;
    ngx_uint_t                    i, found;
    ngx_platform_session_slot_t  *slot;

    if (amcf->keys == NULL) {
        return NGX_DECLINED;
    }

#if (nginx_version >= 1023000)
    if (ngx_http_parse_multi_header_lines(r, r->headers_in.cookie,
                                          &amcf->cookie, &value)
        == NULL)
    {
        return NGX_DECLINED;
    }
#else
    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                          &amcf->cookie, &value)
        == NGX_DECLINED)
    {
        return NGX_DECLINED;
    }
#endif

    if (value.len == 0 || value.len > 2048) {
        return NGX_DECLINED;
    }

    slot = NULL;

    if (amcf->cache && value.len <= NGX_PLATFORM_SESSION_CACHE_COOKIE) {
        slot = &amcf->cache[ngx_murmur_hash2(value.data, value.len)
                            % amcf->cache_size];

        if (slot->cookie_len == value.len
            && ngx_memcmp(slot->cookie, value.data, value.len) == 0)
        {
            m = ngx_pnalloc(r->pool, slot->claims_len);
            if (m == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(m, slot->claims, slot->claims_len);
            mlen = slot->claims_len;

            goto opened;
        }
    }

    raw.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(value.len));
    if (raw.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64url(&raw, &value) != NGX_OK
        || raw.len <= NGX_PLATFORM_SESSION_HEADER
        || raw.data[0] != NGX_PLATFORM_SESSION_VERSION)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "platform_auth: malformed session cookie");
        return NGX_DECLINED;
    }

    m = ngx_pnalloc(r->pool, raw.len - NGX_PLATFORM_SESSION_HEADER + 1);
    if (m == NULL) {
        return NGX_ERROR;
    }

    key = amcf->keys->elts;

    for (i = 0; i < amcf->keys->nelts; i++) {
        if (crypto_secretbox_open_easy(m,
                              raw.data + 1 + crypto_secretbox_NONCEBYTES,
                              raw.len - 1 - crypto_secretbox_NONCEBYTES,
                              raw.data + 1, key[i].data)
            == 0)
        {
            break;
        }
    }

    if (i == amcf->keys->nelts) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "platform_auth: session cookie not sealed by our key");
        return NGX_DECLINED;
    }

    mlen = raw.len - NGX_PLATFORM_SESSION_HEADER;

    if (slot && mlen <= NGX_PLATFORM_SESSION_CACHE_CLAIMS) {
        slot->cookie_len = (u_short) value.len;
        slot->claims_len = (u_short) mlen;
        ngx_memcpy(slot->cookie, value.data, value.len);
        ngx_memcpy(slot->claims, m, mlen);
    }

opened:

    if (ngx_platform_session_parse(m, m + mlen, cl) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_auth: invalid claims in a sealed cookie");
        return NGX_DECLINED;
    }

    if (cl->expires <= ngx_time()) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "platform_auth: session of user %uL expired", cl->user);
        return NGX_DECLINED;
    }

    if (cl->expires > ngx_time() + amcf->max_age) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "platform_auth: session of user %uL claims more than "
                      "platform_session_max_age", cl->user);
        return NGX_DECLINED;
    }

    epoch = ngx_platform_session_epoch(amcf, cl->user, &found);

    if (found && cl->epoch < epoch) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "platform_auth: session of user %uL ended (epoch %uD "
                      "< %uD)", cl->user, cl->epoch, epoch);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_platform_session_parse(u_char *p, u_char *last, ngx_platform_claims_t *cl)
{
    u_char     *end, *v;
    ngx_int_t   n;
    ngx_uint_t  seen;

    ngx_memzero(cl, sizeof(ngx_platform_claims_t));
    seen = 0;

    while (p < last) {
        end = ngx_strlchr(p, last, ';');
        if (end == NULL) {
            end = last;
        }

        if (end == p) {
            p++;
            continue;
        }

        if (end - p < 2 || p[1] != '=') {
            return NGX_ERROR;
        }

        v = p + 2;

        switch (p[0]) {

        case 'u':
            n = ngx_atoi(v, end - v);
            if (n <= 0) {
                return NGX_ERROR;
            }

            cl->user = n;
            cl->user_text.data = v;
            cl->user_text.len = end - v;
            seen |= 1;
            break;

        case 'e':
            n = ngx_atoi(v, end - v);
            if (n < 0 || n > 0x7fffffff) {
                return NGX_ERROR;
            }

            cl->epoch = (uint32_t) n;
            seen |= 2;
            break;

        case 'x':
            cl->expires = ngx_atotm(v, end - v);
            if (cl->expires == NGX_ERROR) {
                return NGX_ERROR;
            }

            cl->expires_text.data = v;
            cl->expires_text.len = end - v;
            seen |= 4;
            break;

        case 'f':
            cl->mfa = (end - v == 1 && *v == '1');
            break;

        case 'r':
            cl->roles.data = v;
            cl->roles.len = end - v;
            break;

        default:
            break;
        }

        p = end + 1;
    }

    return (seen == 7) ? NGX_OK : NGX_ERROR;
}


/*
 * Called with the "response.session" an endpoint's function set: claims to
 * seal into a new cookie, or "-;u=<user>;e=<epoch>" to end the user's
 * sessions.
 */

ngx_int_t
ngx_platform_session_respond(ngx_http_request_t *r, u_char *data, size_t len)
{
    u_char                         *buf, *nonce;
    ngx_str_t                       raw, value, *key;
    ngx_platform_claims_t           cl;
    ngx_platform_auth_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_platform_auth_module);

    if (len && data[0] == '-') {

        /* "-;u=<user>;e=<epoch>": no expiry, so parse reports incomplete */

        (void) ngx_platform_session_parse(data + 1, data + len, &cl);

        if (cl.user == 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "platform_query: invalid response.session \"%*s\"",
                          len, data);
            return NGX_ERROR;
        }

        if (amcf->sh) {
            ngx_platform_session_set_epoch(amcf, cl.user, cl.epoch);
        }

        ngx_str_null(&value);

        return ngx_platform_session_cookie(r, amcf, &value, 0);
    }

    if (amcf->keys == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_query: a function started a session but "
                      "there is no \"platform_session_key\"");
        return NGX_ERROR;
    }

    if (len > NGX_PLATFORM_SESSION_MAX_CLAIMS
        || ngx_platform_session_parse(data, data + len, &cl) != NGX_OK
        || cl.expires <= ngx_time())
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_query: invalid response.session \"%*s\"",
                      len, data);
        return NGX_ERROR;
    }

    /* a cookie we would refuse ourselves is not worth sending */

    if (cl.expires > ngx_time() + amcf->max_age) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_query: the session the function started "
                      "lasts longer than platform_session_max_age (%T s); "
                      "shorten it in SQL or raise the directive",
                      amcf->max_age);
        return NGX_ERROR;
    }

    buf = ngx_pnalloc(r->pool, NGX_PLATFORM_SESSION_HEADER + len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    key = amcf->keys->elts;
    nonce = buf + 1;

    buf[0] = NGX_PLATFORM_SESSION_VERSION;
    randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);

    if (crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES, data, len,
                              nonce, key[0].data)
        != 0)
    {
        return NGX_ERROR;
    }

    raw.data = buf;
    raw.len = NGX_PLATFORM_SESSION_HEADER + len;

    value.data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(raw.len));
    if (value.data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64url(&value, &raw);

    return ngx_platform_session_cookie(r, amcf, &value,
                                       cl.expires - ngx_time());
}


static ngx_int_t
ngx_platform_session_cookie(ngx_http_request_t *r,
    ngx_platform_auth_main_conf_t *amcf, ngx_str_t *value, time_t max_age)
{
    u_char           *p;
    size_t            len;
    ngx_table_elt_t  *h;

    len = amcf->cookie.len + 1 + value->len
          + sizeof("; Path=/; Max-Age=") - 1 + NGX_TIME_T_LEN
          + sizeof("; HttpOnly; SameSite=Lax; Secure") - 1;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Set-Cookie");
    h->value.data = p;

    p = ngx_sprintf(p, "%V=%V; Path=/; Max-Age=%T; HttpOnly; SameSite=Lax",
                    &amcf->cookie, value, max_age);

    if (amcf->secure) {
        p = ngx_cpymem(p, "; Secure", sizeof("; Secure") - 1);
    }

    h->value.len = p - h->value.data;

    return NGX_OK;
}


/* the epoch table */


static uint32_t
ngx_platform_session_epoch(ngx_platform_auth_main_conf_t *amcf,
    uint64_t user, ngx_uint_t *found)
{
    uint32_t                      epoch;
    ngx_platform_session_node_t  *node;

    *found = 0;
    epoch = 0;

    if (amcf->sh == NULL) {
        return 0;
    }

    ngx_shmtx_lock(&amcf->shpool->mutex);

    node = ngx_platform_session_lookup(amcf->sh, user);

    if (node) {
        *found = 1;
        epoch = node->epoch;
    }

    ngx_shmtx_unlock(&amcf->shpool->mutex);

    return epoch;
}


static void
ngx_platform_session_set_epoch(ngx_platform_auth_main_conf_t *amcf,
    uint64_t user, uint32_t epoch)
{
    ngx_platform_session_node_t  *node;

    ngx_shmtx_lock(&amcf->shpool->mutex);

    node = ngx_platform_session_lookup(amcf->sh, user);

    if (node == NULL) {
        node = ngx_slab_alloc_locked(amcf->shpool,
                                     sizeof(ngx_platform_session_node_t));

        if (node == NULL) {
            ngx_platform_session_evict(amcf);
            node = ngx_slab_alloc_locked(amcf->shpool,
                                         sizeof(ngx_platform_session_node_t));
        }

        if (node == NULL) {
            ngx_shmtx_unlock(&amcf->shpool->mutex);
            ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                          "platform_session zone is full: user %uL's "
                          "sessions end only when they expire; raise "
                          "platform_session_zone_size", user);
            return;
        }

        node->node.key = (ngx_rbtree_key_t) user;
        node->epoch = epoch;
        ngx_rbtree_insert(&amcf->sh->rbtree, &node->node);

    } else if (epoch > node->epoch) {
        node->epoch = epoch;
    }

    node->changed = ngx_time();

    ngx_shmtx_unlock(&amcf->shpool->mutex);
}


static ngx_platform_session_node_t *
ngx_platform_session_lookup(ngx_platform_session_shctx_t *sh, uint64_t user)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    key = (ngx_rbtree_key_t) user;
    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        return (ngx_platform_session_node_t *) node;
    }

    return NULL;
}


/* entries older than the longest session can go: no cookie predates them */

static void
ngx_platform_session_evict(ngx_platform_auth_main_conf_t *amcf)
{
    time_t              old;
    ngx_rbtree_node_t  *node, *next, *sentinel, *root;

    old = ngx_time() - amcf->max_age;
    sentinel = amcf->sh->rbtree.sentinel;

    root = amcf->sh->rbtree.root;

    if (root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(root, sentinel); node; node = next) {
        next = ngx_rbtree_next(&amcf->sh->rbtree, node);

        if (((ngx_platform_session_node_t *) node)->changed < old) {
            ngx_rbtree_delete(&amcf->sh->rbtree, node);
            ngx_slab_free_locked(amcf->shpool, node);
        }
    }
}


static ngx_int_t
ngx_platform_session_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_platform_auth_main_conf_t  *oamcf = data;

    ngx_platform_auth_main_conf_t  *amcf;

    amcf = zone->data;

    if (oamcf) {
        amcf->sh = oamcf->sh;
        amcf->shpool = oamcf->shpool;
        return NGX_OK;
    }

    amcf->shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        amcf->sh = amcf->shpool->data;
        return NGX_OK;
    }

    amcf->sh = ngx_slab_calloc(amcf->shpool,
                               sizeof(ngx_platform_session_shctx_t));
    if (amcf->sh == NULL) {
        return NGX_ERROR;
    }

    amcf->shpool->data = amcf->sh;

    ngx_rbtree_init(&amcf->sh->rbtree, &amcf->sh->sentinel,
                    ngx_rbtree_insert_value);

    amcf->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * Other hosts' sign-outs: one worker per host asks the database every
 * platform_session_epoch_poll for the epochs changed since the last answer.
 */

static void
ngx_platform_session_poll_handler(ngx_event_t *ev)
{
    time_t                          now;
    ngx_uint_t                      go;
    ngx_platform_auth_main_conf_t  *amcf;

    amcf = ev->data;
    now = ngx_time();

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_shmtx_lock(&amcf->shpool->mutex);

    go = (now >= amcf->sh->next_poll && now >= amcf->sh->poll_deadline);

    if (go) {
        amcf->sh->poll_deadline = now + NGX_PLATFORM_SESSION_POLL_DEADLINE;

        if (amcf->sh->since_len) {
            ngx_memcpy(amcf->poll_since, amcf->sh->since,
                       amcf->sh->since_len);
            amcf->poll_since[amcf->sh->since_len] = '\0';
            amcf->poll_values[0] = (char *) amcf->poll_since;

        } else {
            amcf->poll_values[0] = NULL;
        }
    }

    ngx_shmtx_unlock(&amcf->shpool->mutex);

    if (go) {
        ngx_memzero(amcf->poll, sizeof(ngx_platform_pg_query_t));

        amcf->poll->upstream = amcf->upstream;
        amcf->poll->statement = amcf->statement;
        amcf->poll->nparams = 2;
        amcf->poll->values = amcf->poll_values;
        amcf->poll->handler = ngx_platform_session_poll_done;
        amcf->poll->data = amcf;
        amcf->poll->log = ngx_cycle->log;

        if (ngx_platform_pg_query(amcf->poll) != NGX_AGAIN) {
            ngx_platform_session_poll_done(amcf->poll);
        }
    }

    ngx_add_timer(ev, amcf->epoch_poll);
}


static void
ngx_platform_session_poll_done(ngx_platform_pg_query_t *q)
{
    u_char                         *p, *last, *bar, *end, *colon;
    ngx_int_t                       user, epoch;
    ngx_platform_auth_main_conf_t  *amcf;

    amcf = q->data;

    if (q->res == NULL || PQresultStatus(q->res) != PGRES_TUPLES_OK
        || PQntuples(q->res) != 1 || PQgetisnull(q->res, 0, 0))
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "platform_session: epoch poll failed: %s",
                      q->res ? PQresultErrorMessage(q->res)
                             : (q->reason ? q->reason : "no result"));
        goto done;
    }

    p = (u_char *) PQgetvalue(q->res, 0, 0);
    last = p + PQgetlength(q->res, 0, 0);

    bar = ngx_strlchr(p, last, '|');

    if (bar == NULL || bar - p >= (ssize_t) sizeof(amcf->sh->since)) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "platform_session: invalid answer from "
                      "platform.session_epochs()");
        goto done;
    }

    for (p = bar + 1; p < last; p = end + 1) {
        end = ngx_strlchr(p, last, ',');
        if (end == NULL) {
            end = last;
        }

        colon = ngx_strlchr(p, end, ':');
        if (colon == NULL) {
            continue;
        }

        user = ngx_atoi(p, colon - p);
        epoch = ngx_atoi(colon + 1, end - colon - 1);

        if (user > 0 && epoch >= 0) {
            ngx_platform_session_set_epoch(amcf, user, epoch);
        }
    }

    p = (u_char *) PQgetvalue(q->res, 0, 0);

    ngx_shmtx_lock(&amcf->shpool->mutex);
    ngx_memcpy(amcf->sh->since, p, bar - p);
    amcf->sh->since_len = bar - p;
    amcf->sh->loaded = 1;
    ngx_shmtx_unlock(&amcf->shpool->mutex);

done:

    PQclear(q->res);
    q->res = NULL;

    ngx_shmtx_lock(&amcf->shpool->mutex);
    amcf->sh->next_poll = ngx_time() + amcf->epoch_poll / 1000;
    amcf->sh->poll_deadline = 0;
    ngx_shmtx_unlock(&amcf->shpool->mutex);
}


/* variables */


static ngx_int_t
ngx_platform_auth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *s;
    ngx_platform_auth_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_platform_auth_module);

    if (ctx == NULL || !ctx->valid) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == (uintptr_t) -1) {
        v->data = (u_char *) (ctx->mfa ? "1" : "0");
        v->len = 1;

    } else {
        s = (ngx_str_t *) ((char *) ctx + data);
        v->data = s->data;
        v->len = s->len;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_random_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char     bytes[32];
    ngx_str_t  src, dst;

    randombytes_buf(bytes, sizeof(bytes));

    dst.data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(sizeof(bytes)));
    if (dst.data == NULL) {
        return NGX_ERROR;
    }

    src.data = bytes;
    src.len = sizeof(bytes);

    ngx_encode_base64url(&dst, &src);
    sodium_memzero(bytes, sizeof(bytes));

    v->data = dst.data;
    v->len = dst.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* configuration */


static ngx_int_t
ngx_platform_auth_preconfiguration(ngx_conf_t *cf)
{
    if (sodium_init() < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "sodium_init() failed");
        return NGX_ERROR;
    }

    return ngx_platform_add_variables(cf, ngx_platform_auth_vars);
}


static ngx_int_t
ngx_platform_auth_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_platform_auth_handler;

    return NGX_OK;
}


static void *
ngx_platform_auth_create_main_conf(ngx_conf_t *cf)
{
    ngx_platform_auth_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_auth_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->keys = NULL;
     *     amcf->cookie = { 0, NULL };
     *     amcf->pg_name = { 0, NULL };
     */

    amcf->secure = NGX_CONF_UNSET;
    amcf->zone_size = NGX_CONF_UNSET_SIZE;
    amcf->epoch_poll = NGX_CONF_UNSET_MSEC;
    amcf->max_age = NGX_CONF_UNSET;
    amcf->origins = NGX_CONF_UNSET_PTR;
    amcf->cache_size = NGX_CONF_UNSET_UINT;

    return amcf;
}


static char *
ngx_platform_auth_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_platform_auth_main_conf_t  *amcf = conf;

    ngx_str_t  name = ngx_string("platform_sessions");
    ngx_str_t  sql = ngx_string(
        "SELECT platform.session_epochs(coalesce($1::timestamptz, "
        "now() - make_interval(secs => $2::int)))");

    if (amcf->cookie.data == NULL) {
        ngx_str_set(&amcf->cookie, "platform_session");
    }

    ngx_conf_init_value(amcf->secure, 1);
    ngx_conf_init_size_value(amcf->zone_size, 1024 * 1024);
    ngx_conf_init_msec_value(amcf->epoch_poll, 2000);
    ngx_conf_init_value(amcf->max_age, 30 * 24 * 3600);
    ngx_conf_init_uint_value(amcf->cache_size, 1024);

    if (amcf->epoch_poll < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"platform_session_epoch_poll\" must be at "
                           "least 1s");
        return NGX_CONF_ERROR;
    }

    if (amcf->keys == NULL) {
        return NGX_CONF_OK;
    }

    amcf->zone = ngx_shared_memory_add(cf, &name, amcf->zone_size,
                                       &ngx_platform_auth_module);
    if (amcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    amcf->zone->init = ngx_platform_session_init_zone;
    amcf->zone->data = amcf;

    amcf->upstream = ngx_platform_pg_upstream_find(cf,
                                     amcf->pg_name.data ? &amcf->pg_name
                                                        : NULL);

    if (amcf->upstream == NULL) {
        if (amcf->pg_name.data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "platform_session_pg: no platform_pg block "
                               "named \"%V\"", &amcf->pg_name);
            return NGX_CONF_ERROR;
        }

        /* no database: only this host's sign-outs are known */
        return NGX_CONF_OK;
    }

    amcf->statement = ngx_platform_statement_add(cf, &sql);

    if (amcf->statement == (ngx_uint_t) NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_platform_auth_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_auth_loc_conf_t  *alcf;

    alcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_auth_loc_conf_t));
    if (alcf == NULL) {
        return NULL;
    }

    alcf->mode = NGX_PLATFORM_AUTH_UNSET;

    return alcf;
}


static char *
ngx_platform_auth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_auth_loc_conf_t  *prev = parent;
    ngx_platform_auth_loc_conf_t  *conf = child;

    ngx_platform_auth_main_conf_t  *amcf;

    if (conf->mode == NGX_PLATFORM_AUTH_UNSET) {
        conf->mode = (prev->mode == NGX_PLATFORM_AUTH_UNSET)
                     ? NGX_PLATFORM_AUTH_OFF : prev->mode;
        conf->roles = prev->roles;
        conf->org = prev->org;
    }

    if (conf->mode != NGX_PLATFORM_AUTH_OFF) {
        amcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_platform_auth_module);

        if (amcf->keys == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"platform_auth\" needs "
                               "\"platform_session_key\"");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* platform_session_key FILE [PREVIOUS_FILE]: 32 raw bytes or 64 hex digits */

static char *
ngx_platform_session_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_auth_main_conf_t  *amcf = conf;

    u_char      buf[80];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_str_t  *value, *key, name;
    ngx_uint_t  i;

    if (amcf->keys) {
        return "is duplicate";
    }

    amcf->keys = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (amcf->keys == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        name = value[i];

        if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
        if (fd == NGX_INVALID_FILE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "\"platform_session_key\": cannot open "
                               "\"%V\"", &name);
            return NGX_CONF_ERROR;
        }

        n = ngx_read_fd(fd, buf, sizeof(buf));
        ngx_close_file(fd);

        while (n > 32 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
            n--;
        }

        key = ngx_array_push(amcf->keys);
        if (key == NULL) {
            return NGX_CONF_ERROR;
        }

        key->len = crypto_secretbox_KEYBYTES;
        key->data = ngx_pnalloc(cf->pool, crypto_secretbox_KEYBYTES);
        if (key->data == NULL) {
            return NGX_CONF_ERROR;
        }

        if (n == crypto_secretbox_KEYBYTES) {
            ngx_memcpy(key->data, buf, n);

        } else if (n == 2 * crypto_secretbox_KEYBYTES
                   && sodium_hex2bin(key->data, crypto_secretbox_KEYBYTES,
                                     (char *) buf, n, NULL, NULL, NULL)
                      == 0)
        {
            /* 64 hex digits */

        } else {
            sodium_memzero(buf, sizeof(buf));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"platform_session_key\": \"%V\" must hold "
                               "32 random bytes (or 64 hex digits); make one "
                               "with: head -c 32 /dev/urandom > FILE",
                               &name);
            return NGX_CONF_ERROR;
        }

        sodium_memzero(buf, sizeof(buf));
    }

    return NGX_CONF_OK;
}


/* platform_auth off | optional | any | ROLE ... [org=VALUE] */

static char *
ngx_platform_auth(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_auth_loc_conf_t  *alcf = conf;

    ngx_str_t                         *value, *role, v;
    ngx_uint_t                         i;
    ngx_http_compile_complex_value_t   ccv;

    if (alcf->mode != NGX_PLATFORM_AUTH_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "off") == 0) {
            alcf->mode = NGX_PLATFORM_AUTH_OFF;
            return NGX_CONF_OK;
        }

        if (ngx_strcmp(value[1].data, "optional") == 0) {
            alcf->mode = NGX_PLATFORM_AUTH_OPTIONAL;
            return NGX_CONF_OK;
        }

        if (ngx_strcmp(value[1].data, "any") == 0) {
            alcf->mode = NGX_PLATFORM_AUTH_ANY;
            return NGX_CONF_OK;
        }
    }

    alcf->mode = NGX_PLATFORM_AUTH_ROLES;

    alcf->roles = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (alcf->roles == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "org=", 4) == 0) {
            if (alcf->org) {
                return "has a duplicate \"org=\"";
            }

            v.data = value[i].data + 4;
            v.len = value[i].len - 4;

            if (v.len == 0) {
                return "has an empty \"org=\"";
            }

            alcf->org = ngx_palloc(cf->pool,
                                   sizeof(ngx_http_complex_value_t));
            if (alcf->org == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &v;
            ccv.complex_value = alcf->org;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "participant") != 0
            && ngx_strcmp(value[i].data, "organiser") != 0
            && ngx_strcmp(value[i].data, "owner") != 0
            && ngx_strcmp(value[i].data, "staff") != 0
            && ngx_strcmp(value[i].data, "admin") != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid role \"%V\" in \"platform_auth\", "
                               "expected off, optional, any, or roles among "
                               "participant, organiser, owner, staff, admin "
                               "[org=value]", &value[i]);
            return NGX_CONF_ERROR;
        }

        role = ngx_array_push(alcf->roles);
        if (role == NULL) {
            return NGX_CONF_ERROR;
        }

        *role = value[i];
    }

    if (alcf->roles->nelts == 0) {
        return "needs a role with \"org=\"";
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_platform_auth_init_process(ngx_cycle_t *cycle)
{
    ngx_platform_auth_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_platform_auth_module);

    if (amcf == NULL || amcf->keys == NULL) {
        return NGX_OK;
    }

    if (amcf->cache_size) {
        amcf->cache = ngx_pcalloc(cycle->pool, amcf->cache_size
                                         * sizeof(ngx_platform_session_slot_t));
        if (amcf->cache == NULL) {
            return NGX_ERROR;
        }
    }

    if (amcf->sh == NULL || amcf->upstream == NULL) {
        return NGX_OK;
    }

    amcf->poll = ngx_pcalloc(cycle->pool, sizeof(ngx_platform_pg_query_t));
    if (amcf->poll == NULL) {
        return NGX_ERROR;
    }

    *ngx_sprintf(amcf->poll_max_age, "%T", amcf->max_age) = '\0';
    amcf->poll_values[1] = (char *) amcf->poll_max_age;

    amcf->poll_event.handler = ngx_platform_session_poll_handler;
    amcf->poll_event.data = amcf;
    amcf->poll_event.log = cycle->log;
    amcf->poll_event.cancelable = 1;

    /* the first poll soon after start: the pool connects first */
    ngx_add_timer(&amcf->poll_event, 100);

    return NGX_OK;
}
