
/*
 * Event chat: rooms in a shared memory zone, fan-out from every worker,
 * history and batches in PostgreSQL (sql/013_chat.sql, docs/chat.md).
 *
 * The zone (platform_chat_zone) holds one node per room in an rbtree by
 * key ("<event>:main", "<event>:team:<id>", "<event>:admin") and an LRU
 * queue of the rooms.  A room has a ring of entries (the JSON of a message
 * or of a presence notice, as sent to clients) numbered by a sequence;
 * messages also have an id, monotonic per room, that is their key in
 * PostgreSQL.  A publish writes its entry once, under the slab mutex, and
 * wakes the workers: every worker has an eventfd, all created in
 * init_module before the fork, so each worker can write to the others';
 * the writes are coalesced to one per worker and pass of the event loop
 * (a posted event).  A woken worker walks its own rooms (those it has
 * connections in), copies the entries it has not delivered yet into one
 * buffer of WebSocket frames (ngx_platform_ws_shared_t) and queues that
 * buffer to each of its connections in the room without copying: one
 * queued piece per connection and pass, however many messages it holds.
 *
 * A connection is authorized by PostgreSQL before the 101
 * (api.chat_join); when the ring lacks part of the last messages, they
 * are read from PostgreSQL (api.chat_messages) before the 101 too.
 *
 * Messages are written to PostgreSQL by the worker that received them, in
 * batches (a JSON array given to api.chat_store), at most "batch" messages
 * or "flush" milliseconds after the first one, one query in flight.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"
#include "ngx_platform_ws.h"
#include "ngx_platform_chat.h"
#include <sodium.h>

#if (NGX_LINUX)
#include <sys/eventfd.h>
#endif


#define NGX_PLATFORM_CHAT_KEY_MAX    64
#define NGX_PLATFORM_CHAT_ROOM_MAX   32
#define NGX_PLATFORM_CHAT_IDLE       10      /* s before an empty room goes */
#define NGX_PLATFORM_CHAT_BURST      8       /* published, then delivered */
#define NGX_PLATFORM_CHAT_PRESENT    500     /* users listed in a welcome */
#define NGX_PLATFORM_CHAT_RETRIES    3       /* of a batch that failed */
#define NGX_PLATFORM_CHAT_CKEY_MAX   64

#define NGX_PLATFORM_CHAT_MESSAGE    0       /* entry kinds */
#define NGX_PLATFORM_CHAT_PRESENCE   1
#define NGX_PLATFORM_CHAT_HELP       2


typedef struct {
    uint64_t                    seq;
    uint64_t                    id;          /* 0: a presence notice */
    uint64_t                    user;        /* the sender, for no-echo */
    uint64_t                    to;          /* only this user's; 0: all */
    ngx_uint_t                  kind;
    size_t                      len;
    u_char                      data[1];
} ngx_platform_chat_entry_t;


/* a user in a room (presence list): all their connections, every worker */
typedef struct {
    ngx_rbtree_node_t           node;        /* key: user id */
    ngx_uint_t                  refs;
    size_t                      len;
    u_char                      user[1];     /* {"id","name","avatar"} */
} ngx_platform_chat_member_t;


/* a user in an event: the rate limit's bucket, shared by their sockets */
typedef struct {
    ngx_rbtree_node_t           node;        /* key: user id */
    uint64_t                    event;
    ngx_uint_t                  refs;        /* connections */
    ngx_uint_t                  excess;      /* as limit_req */
    ngx_msec_t                  last;
} ngx_platform_chat_user_t;


typedef struct {
    ngx_rbtree_node_t           node;        /* key: crc32 of the key */
    ngx_queue_t                 lru;
    uint64_t                    seq;         /* the last entry's */
    uint64_t                    first;       /* the oldest held, > seq: none */
    uint64_t                    last_id;
    ngx_uint_t                  count;       /* connections, every worker */
    ngx_uint_t                  users;       /* distinct users */
    ngx_rbtree_t                members;     /* ngx_platform_chat_member_t */
    ngx_rbtree_node_t           members_sentinel;
    time_t                      used;
    size_t                      bytes;
    ngx_msec_t                  presence_at;     /* the last summary */
    ngx_uint_t                  presence_dirty;  /* changed since */
    ngx_platform_chat_entry_t **ring;        /* "messages" slots */
    u_short                     len;
    u_char                      key[1];
} ngx_platform_chat_room_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru;         /* most recently used first */
    ngx_rbtree_t                users;       /* ngx_platform_chat_user_t */
    ngx_rbtree_node_t           users_sentinel;
    ngx_atomic_t                rooms;
    ngx_atomic_t                connections;
    ngx_atomic_t                published;
    ngx_atomic_t                delivered;
    ngx_atomic_t                evicted_entries;
    ngx_atomic_t                evicted_rooms;
    ngx_atomic_t                dropped;
    ngx_atomic_t                lagged;
    ngx_atomic_t                rate_limited;
    ngx_atomic_t                batches;
    ngx_atomic_t                persisted;
    ngx_atomic_t                persist_failed;
    ngx_atomic_t                relayed;     /* heard, appended */
    ngx_atomic_t                relay_duplicates;
    ngx_atomic_t                relay_skipped;   /* too long to notify */
    ngx_atomic_t                persist_retries;
    ngx_atomic_t                engagement_batches;
    ngx_atomic_t                engagement_stored;
    ngx_atomic_t                engagement_failed;
    ngx_atomic_t                help;
} ngx_platform_chat_shctx_t;


typedef struct ngx_platform_chat_zone_s  ngx_platform_chat_zone_t;


/* a worker's batch: messages (api.chat_store) or engagement items */
typedef struct {
    ngx_platform_chat_zone_t   *zone;
    ngx_uint_t                  statement;
    u_char                     *pending;     /* a JSON array being made */
    size_t                      pending_len;
    size_t                      pending_size;
    ngx_uint_t                  pending_n;
    u_char                     *inflight;    /* sent, or to be sent again */
    ngx_uint_t                  inflight_n;
    ngx_uint_t                  tries;
    const char                 *values[2];
    ngx_platform_pg_query_t     query;
    ngx_event_t                 flush_ev;
    unsigned                    busy:1;
    unsigned                    engagement:1;
    unsigned                    relay:1;     /* api.chat_relay */
} ngx_platform_chat_batch_t;


typedef struct ngx_platform_chat_main_conf_s  ngx_platform_chat_main_conf_t;


/* a platform_chat_zone, and this worker's side of it */
struct ngx_platform_chat_zone_s {
    ngx_str_t                   name;
    ngx_shm_zone_t             *shm_zone;
    ngx_platform_chat_shctx_t  *sh;
    ngx_slab_pool_t            *shpool;
    ngx_uint_t                  messages;    /* ring slots per room */
    size_t                      room_size;   /* ring bytes per room */
    ngx_msec_t                  flush;
    ngx_uint_t                  batch;
    ngx_str_t                   pg_name;
    ngx_platform_pg_upstream_t *upstream;
    ngx_uint_t                  store;       /* statements */
    ngx_uint_t                  engage;
    ngx_str_t                   relay;       /* channel, NUL-terminated */
    ngx_uint_t                  relay_store;
    uint64_t                    relay_origin;    /* this worker's, random */
    uint64_t                    relay_n;

    ngx_platform_chat_main_conf_t  *cmcf;

    /* the worker's */
    ngx_rbtree_t                local;       /* local rooms by key */
    ngx_rbtree_node_t           local_sentinel;
    ngx_queue_t                 locals;
    ngx_array_t                 pieces;      /* delivery scratch */

    ngx_platform_chat_batch_t   messages_batch;
    ngx_platform_chat_batch_t   engagement;
    ngx_event_t                 beat_ev;     /* engagement heartbeats */
    ngx_event_t                 presence_ev;     /* summaries due */
};


struct ngx_platform_chat_main_conf_s {
    ngx_array_t                 zones;       /* ngx_platform_chat_zone_t * */
    ngx_fd_t                   *fds;         /* an eventfd per worker */
    ngx_uint_t                  nfds;
    ngx_connection_t           *wake;        /* this worker's, read */
    ngx_event_t                 notify;      /* posted: deliver, wake others */
    ngx_log_t                  *log;
    ngx_msec_t                  heartbeat;   /* platform_chat_heartbeat */
    ngx_int_t                   presence_notices;  /* users, then summaries */
    time_t                      started;     /* connection keys */
    ngx_uint_t                  connections;
};


typedef struct {
    ngx_platform_chat_zone_t   *zone;
    ngx_http_complex_value_t   *event;
    ngx_http_complex_value_t   *request;     /* help request id */
    ngx_uint_t                  join;        /* statements */
    ngx_uint_t                  history;
    ngx_uint_t                  presence;    /* platform_chat_presence */
    ngx_uint_t                  help;
    ngx_uint_t                  help_clear;
} ngx_platform_chat_loc_conf_main_t;


typedef struct {
    ngx_platform_chat_loc_conf_main_t  *chat;
    ngx_uint_t                  rate;        /* per 1000 s, as limit_req */
    ngx_uint_t                  burst;       /* * 1000 */
    size_t                      max_text;
    ngx_uint_t                  history_size;
    ngx_int_t                   user_index;  /* $platform_user */
} ngx_platform_chat_loc_conf_t;


/* a room this worker has connections in */
typedef struct {
    ngx_str_node_t              sn;
    ngx_queue_t                 queue;       /* zone->locals */
    ngx_queue_t                 members;
    ngx_platform_chat_room_t   *room;        /* in the zone */
    uint64_t                    delivered;   /* seq */
    u_char                      key[NGX_PLATFORM_CHAT_KEY_MAX];
} ngx_platform_chat_local_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_platform_chat_loc_conf_t *conf;
    ngx_platform_chat_zone_t   *zone;
    ngx_platform_pg_query_t     query;
    const char                 *values[5];
    PGresult                   *history;     /* rows (id, json) */

    ngx_platform_ws_t          *ws;
    ngx_platform_chat_local_t  *local;
    ngx_queue_t                 queue;       /* local->members */
    uint64_t                    from;        /* seq: delivered before */

    uint64_t                    event_id;
    uint64_t                    user_id;
    uint64_t                    last_id;     /* persisted, from PG */
    ngx_str_t                   room;        /* main, admin, team:<id> */
    ngx_str_t                   key;
    ngx_str_t                   user;        /* JSON object */
    ngx_str_t                   name;        /* JSON string */
    ngx_str_t                   role;
    ngx_str_t                   help_list;   /* admin: open requests */
    u_char                      event_buf[NGX_INT64_LEN];
    u_char                      room_buf[NGX_PLATFORM_CHAT_ROOM_MAX];
    u_char                      ckey[NGX_PLATFORM_CHAT_CKEY_MAX];
    size_t                      ckey_len;

    ngx_platform_chat_room_t   *zroom;       /* in the zone */
    ngx_platform_chat_member_t *member;
    ngx_platform_chat_user_t   *bucket;      /* in the zone, or NULL: */
    ngx_uint_t                  excess;      /* rate, as limit_req */
    ngx_msec_t                  last;
    uint64_t                    help_seq;    /* admin ring at the join */

    ngx_platform_pg_query_t     hq;          /* help, help_clear */
    const char                 *hvalues[4];
    u_char                     *htext;
    u_char                      hid[NGX_INT64_LEN + 1];

    unsigned                    echo:1;
    unsigned                    joined:1;
    unsigned                    presence_only:1;
    unsigned                    clear_only:1;
    unsigned                    waiting:1;
    unsigned                    help_busy:1;
} ngx_platform_chat_conn_t;


/* a run of frames in the delivery buffer */
typedef struct {
    u_char                     *pos;
    u_char                     *last;
    uint64_t                    seq;
    uint64_t                    user;
    uint64_t                    to;
} ngx_platform_chat_piece_t;


static ngx_int_t ngx_platform_chat_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_chat_presence_handler(ngx_http_request_t *r);
static ngx_int_t ngx_platform_chat_clear_handler(ngx_http_request_t *r);
static void ngx_platform_chat_rest_cleared(ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_chat_start(ngx_http_request_t *r,
    ngx_uint_t presence);
static void ngx_platform_chat_joined(ngx_platform_pg_query_t *q);
static void ngx_platform_chat_history_done(ngx_platform_pg_query_t *q);
static ngx_int_t ngx_platform_chat_respond_presence(ngx_http_request_t *r,
    ngx_platform_chat_conn_t *cc);
static void ngx_platform_chat_cleanup(void *data);
static void ngx_platform_chat_finish(ngx_http_request_t *r, ngx_int_t rc);

static ngx_int_t ngx_platform_chat_open(ngx_platform_ws_t *ws);
static ngx_int_t ngx_platform_chat_message(ngx_platform_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len);
static void ngx_platform_chat_close(ngx_platform_ws_t *ws, ngx_uint_t code);
static ngx_int_t ngx_platform_chat_error(ngx_platform_chat_conn_t *cc,
    const char *code, const char *message);
static ngx_int_t ngx_platform_chat_publish(ngx_platform_chat_conn_t *cc,
    u_char *text, size_t len);
static ngx_int_t ngx_platform_chat_presence_notice(
    ngx_platform_chat_conn_t *cc, const char *what, ngx_uint_t *count);
static ngx_int_t ngx_platform_chat_presence_summary(
    ngx_platform_chat_zone_t *zone, ngx_platform_chat_room_t *room);
static void ngx_platform_chat_presence_handler_ev(ngx_event_t *ev);

static ngx_platform_chat_room_t *ngx_platform_chat_lookup(
    ngx_platform_chat_zone_t *zone, ngx_str_t *key, uint32_t hash);
static ngx_platform_chat_room_t *ngx_platform_chat_room_get(
    ngx_platform_chat_zone_t *zone, ngx_str_t *key, uint64_t last_id);
static ngx_platform_chat_entry_t *ngx_platform_chat_append(
    ngx_platform_chat_zone_t *zone, ngx_platform_chat_room_t *room,
    size_t len);
static void ngx_platform_chat_drop_oldest(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *room);
static ngx_uint_t ngx_platform_chat_evict(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *keep);
static void ngx_platform_chat_touch(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *room);

static void ngx_platform_chat_notify(ngx_platform_chat_main_conf_t *cmcf);
static void ngx_platform_chat_notify_handler(ngx_event_t *ev);
static void ngx_platform_chat_wake_others(ngx_platform_chat_main_conf_t *cmcf);
static void ngx_platform_chat_wake_handler(ngx_event_t *ev);
static void ngx_platform_chat_deliver(ngx_platform_chat_zone_t *zone);
static void ngx_platform_chat_deliver_room(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_local_t *local);

static ngx_int_t ngx_platform_chat_persist(ngx_platform_chat_conn_t *cc,
    uint64_t id, u_char *text, size_t len, u_char *time, size_t tlen);
static void ngx_platform_chat_engage(ngx_platform_chat_conn_t *cc,
    char kind);
static void ngx_platform_chat_beat_handler(ngx_event_t *ev);
static u_char *ngx_platform_chat_batch_reserve(
    ngx_platform_chat_batch_t *b, size_t need);
static void ngx_platform_chat_batch_commit(ngx_platform_chat_batch_t *b,
    u_char *p);
static void ngx_platform_chat_flush_handler(ngx_event_t *ev);
static void ngx_platform_chat_flush(ngx_platform_chat_batch_t *b);
static void ngx_platform_chat_stored(ngx_platform_pg_query_t *q);

static void ngx_platform_chat_relay_notify(void *data, const char *channel,
    const char *payload);
static void ngx_platform_chat_relay_listening(void *data);
static ngx_int_t ngx_platform_chat_rate_check(ngx_platform_chat_conn_t *cc);
static ngx_int_t ngx_platform_chat_help(ngx_platform_chat_conn_t *cc,
    u_char *data, size_t len);
static ngx_int_t ngx_platform_chat_help_clear(ngx_platform_chat_conn_t *cc,
    u_char *data, size_t len);
static void ngx_platform_chat_help_done(ngx_platform_pg_query_t *q);
static void ngx_platform_chat_help_cleared(ngx_platform_pg_query_t *q);
static void ngx_platform_chat_cleared_notices(ngx_platform_chat_zone_t *zone,
    u_char *event, PGresult *res);
static void ngx_platform_chat_notice(ngx_platform_chat_zone_t *zone,
    u_char *key, size_t klen, uint64_t to, u_char *data, size_t len);
static ngx_platform_chat_member_t *ngx_platform_chat_member(
    ngx_platform_chat_room_t *room, uint64_t user);
static ngx_platform_chat_user_t *ngx_platform_chat_user(
    ngx_platform_chat_zone_t *zone, uint64_t event, uint64_t user);
static void *ngx_platform_chat_alloc(ngx_platform_chat_zone_t *zone,
    size_t size);

static ngx_int_t ngx_platform_chat_json_field(u_char *p, u_char *last,
    const char *name, ngx_str_t *value);
static u_char *ngx_platform_chat_json_value(u_char *p, u_char *last);
static u_char *ngx_platform_chat_json_string(u_char *p, u_char *last);
static u_char *ngx_platform_chat_time(u_char *p);

static ngx_int_t ngx_platform_chat_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_platform_chat_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_platform_chat_init_process(ngx_cycle_t *cycle);
static void ngx_platform_chat_exit_process(ngx_cycle_t *cycle);
static void ngx_platform_chat_close_fds(void *data);
static ngx_int_t ngx_platform_chat_postconfiguration(ngx_conf_t *cf);
static void *ngx_platform_chat_create_main_conf(ngx_conf_t *cf);
static void *ngx_platform_chat_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_chat_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_platform_chat_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_chat(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_chat_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_chat_heartbeat(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#define ngx_platform_chat_count(zone, field, n)                               \
    (void) ngx_atomic_fetch_add(&(zone)->sh->field, n)


static ngx_platform_ws_handler_t  ngx_platform_chat_ws_handler = {
    ngx_string("chat"),
    ngx_platform_chat_open,
    ngx_platform_chat_message,
    ngx_platform_chat_close
};


static ngx_str_t  ngx_platform_chat_join_sql = ngx_string(
    "SELECT j->>'room', j->>'key', (j->'user')::text, "
    "(j->'user'->'name')::text, j->>'role', j->>'last_id', "
    "CASE WHEN j->>'room' = 'admin' THEN "
    "(api.chat_help_list($1::bigint, $2::bigint, false)->'requests')::text "
    "END "
    "FROM (SELECT api.chat_join($1::bigint, $2::bigint, $3) AS j) AS s");

static ngx_str_t  ngx_platform_chat_history_sql = ngx_string(
    "SELECT (x->>'id')::bigint, x::text FROM json_array_elements("
    "api.chat_messages($1::bigint, $2::bigint, $3, $4::bigint, $5::int)"
    "->'messages') AS x");

static ngx_str_t  ngx_platform_chat_relay_sql = ngx_string(
    "SELECT api.chat_relay($1::jsonb, $2)");

static ngx_str_t  ngx_platform_chat_store_sql = ngx_string(
    "SELECT api.chat_store($1::jsonb)");

static ngx_str_t  ngx_platform_chat_engage_sql = ngx_string(
    "SELECT api.chat_engagement_store($1::jsonb)");

/* text: the client's JSON string literal */
static ngx_str_t  ngx_platform_chat_help_sql = ngx_string(
    "SELECT j->>'id', j::text FROM (SELECT api.chat_help($1::bigint, "
    "$2::bigint, $3, $4::json #>> '{}') AS j) AS s");

static ngx_str_t  ngx_platform_chat_help_clear_sql = ngx_string(
    "SELECT j->>'id', (j->'by')::text, j->>'user_id', j->>'room', j::text "
    "FROM (SELECT api.chat_help_clear($1::bigint, $2::bigint, $3::bigint) "
    "AS j) AS s");


static ngx_command_t  ngx_platform_chat_commands[] = {

    { ngx_string("platform_chat_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_platform_chat_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_chat"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_chat,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_chat_presence"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_chat,
      NGX_HTTP_LOC_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("platform_chat_help_clear"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_platform_chat,
      NGX_HTTP_LOC_CONF_OFFSET,
      2,
      NULL },

    { ngx_string("platform_chat_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_TAKE12,
      ngx_platform_chat_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_chat_max_text"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_chat_loc_conf_t, max_text),
      NULL },

    { ngx_string("platform_chat_heartbeat"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_platform_chat_heartbeat,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_chat_presence_notices"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_chat_main_conf_t, presence_notices),
      NULL },

    { ngx_string("platform_chat_history"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_platform_chat_loc_conf_t, history_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_chat_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_platform_chat_postconfiguration,   /* postconfiguration */

    ngx_platform_chat_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_chat_create_loc_conf,     /* create location configuration */
    ngx_platform_chat_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_platform_chat_module = {
    NGX_MODULE_V1,
    &ngx_platform_chat_module_ctx,         /* module context */
    ngx_platform_chat_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_platform_chat_init_module,         /* init module */
    ngx_platform_chat_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_platform_chat_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the handshake: authorization (and history) from PostgreSQL, then 101 */

static ngx_int_t
ngx_platform_chat_handler(ngx_http_request_t *r)
{
    return ngx_platform_chat_start(r, 0);
}


static ngx_int_t
ngx_platform_chat_presence_handler(ngx_http_request_t *r)
{
    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    return ngx_platform_chat_start(r, 1);
}


/* POST /api/events/{id}/help/{rid}/clear */

static ngx_int_t
ngx_platform_chat_clear_handler(ngx_http_request_t *r)
{
    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    return ngx_platform_chat_start(r, 2);
}


static ngx_int_t
ngx_platform_chat_start(ngx_http_request_t *r, ngx_uint_t presence)
{
    u_char                        *p;
    ngx_str_t                      event, room, arg;
    ngx_uint_t                     i;
    ngx_pool_cleanup_t            *cln;
    ngx_http_variable_value_t     *vv;
    ngx_platform_chat_conn_t      *cc;
    ngx_platform_pg_query_t       *q;
    ngx_platform_chat_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_platform_chat_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cc = ngx_pcalloc(r->pool, sizeof(ngx_platform_chat_conn_t));
    if (cc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cc->request = r;
    cc->conf = clcf;
    cc->zone = clcf->chat->zone;
    cc->echo = 1;
    cc->presence_only = (presence == 1);
    cc->clear_only = (presence == 2);

    /* the event: digits */

    if (ngx_http_complex_value(r, clcf->chat->event, &event) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (event.len == 0 || event.len > 18) {
        return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                       "No such event.");
    }

    for (i = 0; i < event.len; i++) {
        if (event.data[i] < '0' || event.data[i] > '9') {
            return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND,
                                           "not_found", "No such event.");
        }
    }

    *ngx_cpymem(cc->event_buf, event.data, event.len) = '\0';

    /* the room: ?room=main|admin|team|team:<id>, main by default */

    if (presence == 2) {
        /* the request's id, digits */

        if (ngx_http_complex_value(r, clcf->chat->request, &arg) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (arg.len == 0 || arg.len > 18) {
            goto bad_request;
        }

        for (i = 0; i < arg.len; i++) {
            if (arg.data[i] < '0' || arg.data[i] > '9') {
                goto bad_request;
            }
        }

        *ngx_cpymem(cc->hid, arg.data, arg.len) = '\0';
        ngx_str_set(&room, "admin");

    } else if (presence) {
        ngx_str_set(&room, "admin");

    } else if (ngx_http_arg(r, (u_char *) "room", 4, &arg) == NGX_OK
               && arg.len)
    {
        if (arg.len >= NGX_PLATFORM_CHAT_ROOM_MAX) {
            goto bad_room;
        }

        p = cc->room_buf;
        ngx_unescape_uri(&p, &arg.data, arg.len, NGX_UNESCAPE_URI);
        room.data = cc->room_buf;
        room.len = p - cc->room_buf;

        if (room.len == 0) {
            goto bad_room;
        }

        for (i = 0; i < room.len; i++) {
            if (!((room.data[i] >= 'a' && room.data[i] <= 'z')
                  || (room.data[i] >= '0' && room.data[i] <= '9')
                  || room.data[i] == ':'))
            {
                goto bad_room;
            }
        }

    } else {
        ngx_str_set(&room, "main");
    }

    p = ngx_pnalloc(r->pool, room.len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_cpymem(p, room.data, room.len) = '\0';

    /*
     * The admin room's welcome lists the open help requests as the join
     * query reads them; help notices published from now on are sent after
     * the welcome too (by id: a repeat changes nothing).
     */

    if (!presence && room.len == 5 && ngx_strncmp(room.data, "admin", 5) == 0)
    {
        u_char                     kbuf[NGX_PLATFORM_CHAT_KEY_MAX];
        ngx_str_t                  key;
        ngx_platform_chat_room_t  *ar;

        key.data = kbuf;
        key.len = ngx_sprintf(kbuf, "%s:admin", cc->event_buf) - kbuf;

        ngx_shmtx_lock(&cc->zone->shpool->mutex);

        ar = ngx_platform_chat_lookup(cc->zone, &key,
                                      ngx_crc32_short(key.data, key.len));
        cc->help_seq = ar ? ar->seq : 0;

        ngx_shmtx_unlock(&cc->zone->shpool->mutex);
    }

    q = &cc->query;

    /* $platform_user: NULL without a session (401 from SQL) */

    vv = ngx_http_get_indexed_variable(r, clcf->user_index);

    if (vv && !vv->not_found && vv->len) {
        cc->values[0] = (char *) ngx_pnalloc(r->pool, vv->len + 1);
        if (cc->values[0] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *ngx_cpymem((u_char *) cc->values[0], vv->data, vv->len) = '\0';
        cc->user_id = ngx_atoof(vv->data, vv->len);
    }

    cc->values[1] = (char *) cc->event_buf;
    cc->values[2] = (char *) p;
    cc->event_id = ngx_atoof(event.data, event.len);

    q->upstream = cc->zone->upstream;
    q->statement = clcf->chat->join;
    q->nparams = 3;
    q->values = cc->values;
    q->handler = ngx_platform_chat_joined;

    if (cc->clear_only) {
        cc->values[2] = (char *) cc->hid;
        q->statement = clcf->chat->help_clear;
        q->handler = ngx_platform_chat_rest_cleared;
    }
    q->data = cc;
    q->log = r->connection->log;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_platform_chat_cleanup;
    cln->data = cc;

    ngx_http_set_ctx(r, cc, ngx_platform_chat_module);

    if (ngx_platform_pg_query(q) == NGX_ERROR) {
        return ngx_platform_send_error(r, q->status ? q->status
                                       : NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "unavailable", "The chat is not "
                                       "available, try again.");
    }

    cc->waiting = 1;
    r->main->count++;

    return NGX_DONE;

bad_room:

    return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "No such room.");

bad_request:

    return ngx_platform_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "No such help request.");
}


/* the REST clear: notices as from the admin room, the JSON answered */

static void
ngx_platform_chat_rest_cleared(ngx_platform_pg_query_t *q)
{
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    PGresult                  *res;
    ngx_http_request_t        *r;
    ngx_platform_chat_conn_t  *cc;

    cc = q->data;
    r = cc->request;
    res = q->res;

    cc->waiting = 0;

    if (res == NULL) {
        rc = ngx_platform_send_error(r, q->status ? q->status
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "unavailable", "Not available, "
                                     "try again.");
        goto done;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || PQnfields(res) != 5)
    {
        rc = ngx_platform_send_pg_error(r, res);
        PQclear(res);
        goto done;
    }

    ngx_platform_chat_cleared_notices(cc->zone, cc->event_buf, res);

    b = ngx_create_temp_buf(r->pool, PQgetlength(res, 0, 4) + 1);

    if (b == NULL) {
        PQclear(res);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    b->last = ngx_cpymem(b->last, PQgetvalue(res, 0, 4),
                         PQgetlength(res, 0, 4));
    PQclear(res);

    rc = ngx_platform_send_body(r, NGX_HTTP_OK, b);

done:

    ngx_platform_chat_finish(r, rc);
}


static ngx_str_t
ngx_platform_chat_value(ngx_http_request_t *r, PGresult *res, int row,
    int col)
{
    ngx_str_t  s;

    s.len = PQgetlength(res, row, col);
    s.data = ngx_pnalloc(r->pool, s.len + 1);

    if (s.data == NULL) {
        s.len = 0;
        return s;
    }

    *ngx_cpymem(s.data, PQgetvalue(res, row, col), s.len) = '\0';

    return s;
}


static void
ngx_platform_chat_joined(ngx_platform_pg_query_t *q)
{
    u_char                     *p;
    uint64_t                    oldest, id;
    ngx_str_t                   last;
    PGresult                   *res;
    ngx_int_t                   rc;
    ngx_uint_t                  n, s, want;
    ngx_http_request_t         *r;
    ngx_platform_chat_conn_t   *cc;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_zone_t   *zone;
    ngx_platform_chat_entry_t  *e;

    cc = q->data;
    r = cc->request;
    res = q->res;
    zone = cc->zone;

    cc->waiting = 0;

    if (res == NULL) {
        rc = ngx_platform_send_error(r, q->status ? q->status
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "unavailable", "The chat is not "
                                     "available, try again.");
        goto done;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || PQnfields(res) != 7)
    {
        rc = ngx_platform_send_pg_error(r, res);
        PQclear(res);
        goto done;
    }

    cc->room = ngx_platform_chat_value(r, res, 0, 0);
    cc->key = ngx_platform_chat_value(r, res, 0, 1);
    cc->user = ngx_platform_chat_value(r, res, 0, 2);
    cc->name = ngx_platform_chat_value(r, res, 0, 3);
    cc->role = ngx_platform_chat_value(r, res, 0, 4);
    last = ngx_platform_chat_value(r, res, 0, 5);
    cc->help_list = ngx_platform_chat_value(r, res, 0, 6);

    PQclear(res);

    if (cc->room.len == 0 || cc->key.len == 0 || cc->user.len == 0
        || cc->key.len >= NGX_PLATFORM_CHAT_KEY_MAX)
    {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    cc->last_id = ngx_atoof(last.data, last.len);

    if (cc->presence_only) {
        rc = ngx_platform_chat_respond_presence(r, cc);
        goto done;
    }

    /* does the ring hold the last messages?  else the rest from PG */

    want = cc->conf->history_size;
    oldest = 0;
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    room = ngx_platform_chat_lookup(zone, &cc->key,
                                    ngx_crc32_short(cc->key.data,
                                                    cc->key.len));
    if (room) {
        for (s = room->seq; s >= room->first && s > 0 && n < want; s--) {
            e = room->ring[s % zone->messages];

            if (e && e->seq == s && e->id) {
                oldest = e->id;
                n++;
            }
        }

        if (room->last_id > cc->last_id) {
            cc->last_id = room->last_id;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    id = oldest ? oldest : cc->last_id + 1;

    if (n >= want || id <= 1 || want == 0) {
        goto upgrade;
    }

    /* api.chat_messages(user, event, room, before, limit) */

    p = ngx_pnalloc(r->pool, 2 * NGX_INT64_LEN + 2);
    if (p == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    cc->values[2] = (char *) cc->room.data;
    cc->values[3] = (char *) p;
    p = ngx_sprintf(p, "%uL", id);
    *p++ = '\0';
    cc->values[4] = (char *) p;
    p = ngx_sprintf(p, "%ui", want - n);
    *p = '\0';

    q->statement = cc->conf->chat->history;
    q->nparams = 5;
    q->handler = ngx_platform_chat_history_done;
    q->res = NULL;

    if (ngx_platform_pg_query(q) == NGX_ERROR) {
        rc = ngx_platform_send_error(r, q->status ? q->status
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "unavailable", "The chat is not "
                                     "available, try again.");
        goto done;
    }

    cc->waiting = 1;

    return;

upgrade:

    rc = ngx_platform_ws_upgrade(r, &ngx_platform_chat_ws_handler, cc);

done:

    ngx_platform_chat_finish(r, rc);
}


static void
ngx_platform_chat_history_done(ngx_platform_pg_query_t *q)
{
    ngx_int_t                  rc;
    PGresult                  *res;
    ngx_http_request_t        *r;
    ngx_platform_chat_conn_t  *cc;

    cc = q->data;
    r = cc->request;
    res = q->res;

    cc->waiting = 0;

    if (res == NULL) {
        rc = ngx_platform_send_error(r, q->status ? q->status
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "unavailable", "The chat is not "
                                     "available, try again.");
        goto done;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 2) {
        rc = ngx_platform_send_pg_error(r, res);
        PQclear(res);
        goto done;
    }

    cc->history = res;      /* freed by the cleanup */

    rc = ngx_platform_ws_upgrade(r, &ngx_platform_chat_ws_handler, cc);

done:

    ngx_platform_chat_finish(r, rc);
}


static void
ngx_platform_chat_finish(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/*
 * GET: the live rooms of the event, their connections and users
 * (organisers); ?room=<name>: that room's users listed too.
 */

static ngx_int_t
ngx_platform_chat_respond_presence(ngx_http_request_t *r,
    ngx_platform_chat_conn_t *cc)
{
    u_char                      *p, *u;
    size_t                       len, prefix;
    ngx_buf_t                   *b;
    ngx_str_t                    arg, want;
    ngx_uint_t                   n, listed;
    ngx_queue_t                 *lq;
    ngx_rbtree_node_t           *node, *root, *sentinel;
    ngx_platform_chat_room_t    *room, *target;
    ngx_platform_chat_zone_t    *zone;
    ngx_platform_chat_member_t  *m;
    u_char                       wbuf[NGX_PLATFORM_CHAT_ROOM_MAX];

    zone = cc->zone;

    /* "<event>:" */
    prefix = ngx_strlen(cc->event_buf) + 1;

    want.len = 0;
    want.data = wbuf;

    if (ngx_http_arg(r, (u_char *) "room", 4, &arg) == NGX_OK
        && arg.len && arg.len < NGX_PLATFORM_CHAT_ROOM_MAX)
    {
        u = wbuf;
        ngx_unescape_uri(&u, &arg.data, arg.len, NGX_UNESCAPE_URI);
        want.len = u - wbuf;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    n = 0;
    target = NULL;
    len = 0;

    for (lq = ngx_queue_head(&zone->sh->lru);
         lq != ngx_queue_sentinel(&zone->sh->lru);
         lq = ngx_queue_next(lq))
    {
        room = ngx_queue_data(lq, ngx_platform_chat_room_t, lru);

        if (room->len > prefix
            && ngx_strncmp(room->key, cc->key.data, prefix) == 0)
        {
            n++;

            if (want.len && room->len - prefix == want.len
                && ngx_strncmp(room->key + prefix, want.data, want.len) == 0)
            {
                target = room;
            }
        }
    }

    if (target) {
        root = target->members.root;
        sentinel = target->members.sentinel;
        listed = 0;

        if (root != sentinel) {
            for (node = ngx_rbtree_min(root, sentinel);
                 node && listed < NGX_PLATFORM_CHAT_PRESENT;
                 node = ngx_rbtree_next(&target->members, node))
            {
                m = (ngx_platform_chat_member_t *) node;
                len += m->len + 1;
                listed++;
            }
        }

        len += sizeof(",\"users\":[],\"users_truncated\":true");
    }

    len += sizeof("{\"event_id\":,\"rooms\":[]}") + NGX_INT64_LEN
           + n * (sizeof("{\"room\":\"\",\"count\":,\"user_count\":,"
                         "\"last_id\":},")
                  + NGX_PLATFORM_CHAT_KEY_MAX + 3 * NGX_INT64_LEN);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(b->last, "{\"event_id\":%uL,\"rooms\":[", cc->event_id);

    for (lq = ngx_queue_head(&zone->sh->lru);
         lq != ngx_queue_sentinel(&zone->sh->lru) && n;
         lq = ngx_queue_next(lq))
    {
        room = ngx_queue_data(lq, ngx_platform_chat_room_t, lru);

        if (room->len > prefix
            && ngx_strncmp(room->key, cc->key.data, prefix) == 0)
        {
            if (p[-1] != '[') {
                *p++ = ',';
            }

            p = ngx_sprintf(p, "{\"room\":\"%*s\",\"count\":%ui,"
                            "\"user_count\":%ui,\"last_id\":%uL",
                            (size_t) (room->len - prefix),
                            room->key + prefix, room->count, room->users,
                            room->last_id);

            if (room == target) {
                p = ngx_cpymem(p, ",\"users\":[", sizeof(",\"users\":[") - 1);
                root = room->members.root;
                sentinel = room->members.sentinel;
                listed = 0;

                if (root != sentinel) {
                    for (node = ngx_rbtree_min(root, sentinel);
                         node && listed < NGX_PLATFORM_CHAT_PRESENT;
                         node = ngx_rbtree_next(&room->members, node))
                    {
                        m = (ngx_platform_chat_member_t *) node;

                        if (listed++) {
                            *p++ = ',';
                        }

                        p = ngx_cpymem(p, m->user, m->len);
                    }
                }

                *p++ = ']';

                if (room->users > listed) {
                    p = ngx_cpymem(p, ",\"users_truncated\":true",
                                   sizeof(",\"users_truncated\":true") - 1);
                }
            }

            *p++ = '}';
            n--;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    p = ngx_cpymem(p, "]}", 2);
    b->last = p;

    return ngx_platform_send_body(r, NGX_HTTP_OK, b);
}


static void
ngx_platform_chat_cleanup(void *data)
{
    ngx_platform_chat_conn_t  *cc = data;

    if (cc->waiting) {
        ngx_platform_pg_abort(&cc->query);
        cc->waiting = 0;
    }

    if (cc->history) {
        PQclear(cc->history);
        cc->history = NULL;
    }

    if (cc->help_busy) {
        ngx_platform_pg_abort(&cc->hq);
        cc->help_busy = 0;
    }
}


/* the WebSocket */

static ngx_int_t
ngx_platform_chat_open(ngx_platform_ws_t *ws)
{
    u_char                      *p, *start, *hp;
    size_t                       len, hlen;
    uint64_t                     oldest, limit, s;
    ngx_int_t                    rc;
    ngx_uint_t                   n, i, want, count, users, rows, from, listed;
    ngx_array_t                  helps;
    ngx_str_t                   *hs;
    ngx_str_node_t              *sn;
    ngx_rbtree_node_t           *node, *root, *sentinel;
    ngx_platform_chat_conn_t    *cc;
    ngx_platform_chat_local_t   *local;
    ngx_platform_chat_room_t    *room;
    ngx_platform_chat_zone_t    *zone;
    ngx_platform_chat_entry_t   *e, **hist;
    ngx_platform_chat_member_t  *m;
    uint32_t                     hash;

    cc = ws->data;
    cc->ws = ws;
    zone = cc->zone;
    want = cc->conf->history_size;

    hist = ngx_pcalloc(cc->request->pool,
                       (want + 1) * sizeof(ngx_platform_chat_entry_t *));
    if (hist == NULL) {
        return NGX_ERROR;
    }

    if (ngx_array_init(&helps, cc->request->pool, 4, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    hash = ngx_crc32_short(cc->key.data, cc->key.len);

    /* the welcome, with the history, is built under the lock: no copies */

    ngx_shmtx_lock(&zone->shpool->mutex);

    room = ngx_platform_chat_room_get(zone, &cc->key, cc->last_id);

    if (room == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_log_error(NGX_LOG_ERR, ws->connection->log, 0,
                      "platform_chat_zone \"%V\" is full", &zone->name);
        return NGX_ERROR;
    }

    /* counted first: an eviction below cannot take the room */

    room->count++;
    (void) ngx_atomic_fetch_add(&zone->sh->connections, 1);
    cc->joined = 1;
    cc->zroom = room;

    /* the user in the room (presence list) and in the event (rate) */

    m = ngx_platform_chat_member(room, cc->user_id);

    if (m == NULL) {
        len = offsetof(ngx_platform_chat_member_t, user) + cc->user.len;
        m = ngx_platform_chat_alloc(zone, len);

        if (m) {
            ngx_memzero(m, len);
            m->node.key = (ngx_rbtree_key_t) cc->user_id;
            m->len = cc->user.len;
            ngx_memcpy(m->user, cc->user.data, cc->user.len);
            ngx_rbtree_insert(&room->members, &m->node);
        }
    }

    if (m) {
        cc->member = m;

        if (m->refs++ == 0) {
            room->users++;
        }
    }

    cc->bucket = ngx_platform_chat_user(zone, cc->event_id, cc->user_id);

    if (cc->bucket) {
        cc->bucket->refs++;
    }

    count = room->count;
    users = room->users;

    if (m == NULL || m->refs == 1) {
        rc = ngx_platform_chat_presence_notice(cc, "joined", &count);
        if (rc == NGX_ERROR) {
            /* no room for the notice: the join goes on without it */
            ngx_platform_chat_count(zone, dropped, 1);
        }
    }

    cc->from = room->seq;

    n = 0;
    oldest = 0;

    for (i = room->seq; i >= room->first && i > 0 && n < want; i--) {
        e = room->ring[i % zone->messages];

        if (e && e->seq == i && e->id) {
            hist[n++] = e;
            oldest = e->id;
        }
    }

    /* from PG: the newest rows older than the ring's oldest message */

    limit = oldest ? oldest : (uint64_t) -1;
    rows = 0;
    from = 0;

    if (cc->history && n < want) {
        rows = PQntuples(cc->history);

        /* ascending ids: those at or after the ring's start are cut off */

        while (rows
               && (uint64_t) ngx_atoof((u_char *)
                                       PQgetvalue(cc->history, rows - 1, 0),
                                       PQgetlength(cc->history, rows - 1, 0))
                  >= limit)
        {
            rows--;
        }

        if (rows > want - n) {
            from = rows - (want - n);
        }
    }

    len = sizeof("{\"type\":\"welcome\",\"room\":\"\",\"user\":,\"role\":\"\","
                 "\"count\":,\"users\":,\"present\":[],"
                 "\"present_truncated\":true,\"help\":,\"messages\":[]}")
          + cc->room.len + cc->user.len + cc->role.len + 2 * NGX_INT64_LEN
          + cc->help_list.len;

    root = room->members.root;
    sentinel = room->members.sentinel;
    listed = 0;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node && listed < NGX_PLATFORM_CHAT_PRESENT;
             node = ngx_rbtree_next(&room->members, node))
        {
            len += ((ngx_platform_chat_member_t *) node)->len + 1;
            listed++;
        }
    }

    for (i = 0; i < n; i++) {
        len += hist[i]->len + 1;
    }

    for (i = from; i < rows; i++) {
        len += PQgetlength(cc->history, i, 1) + 1;
    }

    start = ngx_pnalloc(cc->request->pool, len);
    if (start == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_ERROR;
    }

    p = ngx_sprintf(start, "{\"type\":\"welcome\",\"room\":\"%V\","
                    "\"user\":%V,\"role\":\"%V\",\"count\":%ui,"
                    "\"users\":%ui,\"present\":[", &cc->room, &cc->user,
                    &cc->role, count, users);

    listed = 0;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node && listed < NGX_PLATFORM_CHAT_PRESENT;
             node = ngx_rbtree_next(&room->members, node))
        {
            m = (ngx_platform_chat_member_t *) node;

            if (listed++) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, m->user, m->len);
        }
    }

    *p++ = ']';

    if (users > listed) {
        p = ngx_cpymem(p, ",\"present_truncated\":true",
                       sizeof(",\"present_truncated\":true") - 1);
    }

    if (cc->help_list.len) {
        p = ngx_sprintf(p, ",\"help\":%V", &cc->help_list);
    }

    p = ngx_cpymem(p, ",\"messages\":[", sizeof(",\"messages\":[") - 1);

    for (i = from; i < rows; i++) {
        if (p[-1] != '[') {
            *p++ = ',';
        }

        p = ngx_cpymem(p, PQgetvalue(cc->history, i, 1),
                       PQgetlength(cc->history, i, 1));
    }

    while (n) {
        e = hist[--n];

        if (p[-1] != '[') {
            *p++ = ',';
        }

        p = ngx_cpymem(p, e->data, e->len);
    }

    /* admin: help notices published since the join query read the list */

    if (cc->help_list.len) {
        s = ngx_max(cc->help_seq + 1, room->first);

        for ( /* void */ ; s <= cc->from; s++) {
            e = room->ring[s % zone->messages];

            if (e == NULL || e->seq != s || e->kind != NGX_PLATFORM_CHAT_HELP)
            {
                continue;
            }

            hs = ngx_array_push(&helps);
            hp = (hs == NULL) ? NULL : ngx_pnalloc(cc->request->pool, e->len);

            if (hp == NULL) {
                break;
            }

            hs->data = hp;
            hs->len = e->len;
            ngx_memcpy(hp, e->data, e->len);
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    p = ngx_cpymem(p, "]}", 2);

    if (ngx_platform_ws_send(ws, NGX_PLATFORM_WS_TEXT, start, p - start)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    hs = helps.elts;

    for (i = 0; i < helps.nelts; i++) {
        hlen = hs[i].len;

        if (ngx_platform_ws_send(ws, NGX_PLATFORM_WS_TEXT, hs[i].data, hlen)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }

    if (cc->history) {
        PQclear(cc->history);
        cc->history = NULL;
    }

    /* this worker's side of the room */

    sn = ngx_str_rbtree_lookup(&zone->local, &cc->key, hash);

    if (sn) {
        local = (ngx_platform_chat_local_t *) sn;

    } else {
        local = ngx_alloc(sizeof(ngx_platform_chat_local_t),
                          ws->connection->log);
        if (local == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(local->key, cc->key.data, cc->key.len);
        local->sn.str.data = local->key;
        local->sn.str.len = cc->key.len;
        local->sn.node.key = hash;
        local->room = room;
        local->delivered = cc->from;
        ngx_queue_init(&local->members);
        ngx_queue_insert_tail(&zone->locals, &local->queue);
        ngx_rbtree_insert(&zone->local, &local->sn.node);
    }

    cc->local = local;
    ngx_queue_insert_tail(&local->members, &cc->queue);

    /* engagement: the connection opened */

    cc->ckey_len = ngx_snprintf(cc->ckey, NGX_PLATFORM_CHAT_CKEY_MAX,
                                "%P-%T-%ui", ngx_pid, zone->cmcf->started,
                                ++zone->cmcf->connections)
                   - cc->ckey;

    ngx_platform_chat_engage(cc, 'o');

    ngx_platform_chat_notify(zone->cmcf);

    return NGX_OK;
}


/*
 * under the mutex: a presence entry; count is the room's.  While the room
 * has at most platform_chat_presence_notices users (before a leave, after
 * a join), a "joined"/"left" notice naming the user; above, the change is
 * only marked, and a summary {"type":"presence","count","users"} goes out
 * at most once a second per room: at once when the last one is a second
 * old, else from this worker's presence_ev.
 */

static ngx_int_t
ngx_platform_chat_presence_notice(ngx_platform_chat_conn_t *cc,
    const char *what, ngx_uint_t *count)
{
    u_char                     *p;
    size_t                      len;
    ngx_msec_t                  since;
    ngx_uint_t                  users;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_entry_t  *e;
    ngx_platform_chat_zone_t   *zone;

    zone = cc->zone;

    room = ngx_platform_chat_lookup(zone, &cc->key,
                                    ngx_crc32_short(cc->key.data,
                                                    cc->key.len));
    if (room == NULL) {
        return NGX_ERROR;
    }

    users = room->users + (what[0] == 'l' ? 1 : 0);

    if (users > (ngx_uint_t) zone->cmcf->presence_notices) {
        room->presence_dirty = 1;
        since = ngx_current_msec - room->presence_at;

        if (since >= 1000) {
            return ngx_platform_chat_presence_summary(zone, room);
        }

        if (!zone->presence_ev.timer_set) {
            ngx_add_timer(&zone->presence_ev, 1000 - since);
        }

        return NGX_OK;
    }

    len = sizeof("{\"type\":\"presence\",\"\":,\"count\":,\"users\":}") - 1
          + ngx_strlen(what) + cc->user.len + 2 * NGX_INT_T_LEN;

    e = ngx_platform_chat_append(zone, room, len);
    if (e == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(e->data, "{\"type\":\"presence\",\"%s\":%V,\"count\":%ui,"
                    "\"users\":%ui}", what, &cc->user, *count, room->users);

    e->len = p - e->data;
    e->id = 0;
    e->user = cc->user_id;
    e->kind = NGX_PLATFORM_CHAT_PRESENCE;
    room->bytes -= len - e->len;

    return NGX_OK;
}


/* under the mutex: the room's summary, now */

static ngx_int_t
ngx_platform_chat_presence_summary(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *room)
{
    u_char                     *p;
    size_t                      len;
    ngx_platform_chat_entry_t  *e;

    room->presence_dirty = 0;
    room->presence_at = ngx_current_msec;

    len = sizeof("{\"type\":\"presence\",\"count\":,\"users\":}") - 1
          + 2 * NGX_INT_T_LEN;

    e = ngx_platform_chat_append(zone, room, len);
    if (e == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(e->data, "{\"type\":\"presence\",\"count\":%ui,"
                    "\"users\":%ui}", room->count, room->users);

    e->len = p - e->data;
    e->id = 0;
    e->user = 0;
    e->kind = NGX_PLATFORM_CHAT_PRESENCE;
    room->bytes -= len - e->len;

    return NGX_OK;
}


/*
 * presence_ev: the summaries that are due, of any room of the zone (the
 * worker that marked a room may have no connection left in it); the next
 * one due re-arms it
 */

static void
ngx_platform_chat_presence_handler_ev(ngx_event_t *ev)
{
    ngx_msec_t                  since, wait;
    ngx_uint_t                  sent;
    ngx_queue_t                *lq;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_zone_t   *zone;

    zone = ev->data;
    sent = 0;
    wait = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (lq = ngx_queue_head(&zone->sh->lru);
         lq != ngx_queue_sentinel(&zone->sh->lru);
         lq = ngx_queue_next(lq))
    {
        room = ngx_queue_data(lq, ngx_platform_chat_room_t, lru);

        if (!room->presence_dirty) {
            continue;
        }

        since = ngx_current_msec - room->presence_at;

        if (since < 1000) {
            if (wait == 0 || 1000 - since < wait) {
                wait = 1000 - since;
            }

            continue;
        }

        if (room->count == 0) {
            room->presence_dirty = 0;       /* nobody to tell */
            continue;
        }

        if (ngx_platform_chat_presence_summary(zone, room) != NGX_OK) {
            ngx_platform_chat_count(zone, dropped, 1);
        }

        sent++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (wait && !ngx_exiting) {
        ngx_add_timer(ev, wait);
    }

    if (sent) {
        ngx_platform_chat_notify(zone->cmcf);
    }
}


static ngx_int_t
ngx_platform_chat_message(ngx_platform_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    ngx_str_t                  type, text, echo;
    ngx_platform_chat_conn_t  *cc;

    cc = ws->data;

    if (opcode != NGX_PLATFORM_WS_TEXT
        || ngx_platform_chat_json_field(data, data + len, "type", &type)
           != NGX_OK)
    {
        return ngx_platform_chat_error(cc, "bad_request",
                                       "Send JSON objects with a "
                                       "\\\"type\\\".");
    }

    if (type.len == sizeof("\"options\"") - 1
        && ngx_strncmp(type.data, "\"options\"", type.len) == 0)
    {
        if (ngx_platform_chat_json_field(data, data + len, "echo", &echo)
            == NGX_OK)
        {
            if (echo.len == 4 && ngx_strncmp(echo.data, "true", 4) == 0) {
                cc->echo = 1;

            } else if (echo.len == 5
                       && ngx_strncmp(echo.data, "false", 5) == 0)
            {
                cc->echo = 0;

            } else {
                return ngx_platform_chat_error(cc, "bad_request",
                                               "echo: true or false");
            }
        }

        return NGX_OK;
    }

#define ngx_platform_chat_type_is(type, name)                                 \
    ((type).len == sizeof("\"" name "\"") - 1                                 \
     && ngx_strncmp((type).data, "\"" name "\"", (type).len) == 0)

    if (ngx_platform_chat_type_is(type, "help")) {
        return ngx_platform_chat_help(cc, data, len);
    }

    if (ngx_platform_chat_type_is(type, "help_clear")) {
        return ngx_platform_chat_help_clear(cc, data, len);
    }

    if (!ngx_platform_chat_type_is(type, "message")) {
        return ngx_platform_chat_error(cc, "bad_request",
                                       "Unknown message type.");
    }

    if (ngx_platform_chat_json_field(data, data + len, "text", &text)
        != NGX_OK
        || text.len < 3 || text.data[0] != '"')
    {
        return ngx_platform_chat_error(cc, "bad_request",
                                       "A message needs a \\\"text\\\".");
    }

    if (text.len - 2 > cc->conf->max_text) {
        return ngx_platform_chat_error(cc, "too_long",
                                       "The message is too long.");
    }

    if (ngx_platform_chat_rate_check(cc) != NGX_OK) {
        return ngx_platform_chat_error(cc, "rate_limited",
                                       "Too many messages: wait a moment.");
    }

    return ngx_platform_chat_publish(cc, text.data, text.len);
}


/*
 * The rate, a leaky bucket as limit_req's, per user and event in the zone
 * (all the user's sockets share it); per connection when the zone had no
 * memory for the user's entry.  NGX_DECLINED: over the limit.
 */

static ngx_int_t
ngx_platform_chat_rate_check(ngx_platform_chat_conn_t *cc)
{
    ngx_int_t                  excess;
    ngx_uint_t                *bexcess;
    ngx_msec_t                 now, *blast;
    ngx_msec_int_t             ms;
    ngx_platform_chat_zone_t  *zone;

    if (cc->conf->rate == 0) {
        return NGX_OK;
    }

    zone = cc->zone;
    now = ngx_current_msec;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (cc->bucket) {
        bexcess = &cc->bucket->excess;
        blast = &cc->bucket->last;

    } else {
        bexcess = &cc->excess;
        blast = &cc->last;
    }

    if (*blast == 0) {
        excess = 0;

    } else {
        ms = (ngx_msec_int_t) (now - *blast);

        if (ms < 0) {
            ms = 0;
        }

        excess = (ngx_int_t) *bexcess
                 - (ngx_int_t) (cc->conf->rate * ms / 1000) + 1000;

        if (excess < 0) {
            excess = 0;
        }
    }

    if ((ngx_uint_t) excess > cc->conf->burst) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_platform_chat_count(zone, rate_limited, 1);
        return NGX_DECLINED;
    }

    *bexcess = excess;
    *blast = now ? now : 1;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/* {"type":"help","text":"..."}: a participant asks for help */

static ngx_int_t
ngx_platform_chat_help(ngx_platform_chat_conn_t *cc, u_char *data,
    size_t len)
{
    ngx_int_t                 rc;
    ngx_str_t                 text;
    ngx_platform_pg_query_t  *q;

    if (cc->room.len == 5 && ngx_strncmp(cc->room.data, "admin", 5) == 0) {
        return ngx_platform_chat_error(cc, "bad_request",
                                       "Help requests come from the main "
                                       "or a team room.");
    }

    rc = ngx_platform_chat_json_field(data, data + len, "text", &text);

    if (rc == NGX_DECLINED
        || (rc == NGX_OK && text.len == 4
            && ngx_strncmp(text.data, "null", 4) == 0))
    {
        text.len = 0;

    } else if (rc != NGX_OK || text.len < 2 || text.data[0] != '"') {
        return ngx_platform_chat_error(cc, "bad_request",
                                       "text: a string");

    } else if (text.len - 2 > cc->conf->max_text) {
        return ngx_platform_chat_error(cc, "too_long",
                                       "The note is too long.");
    }

    if (cc->help_busy) {
        return ngx_platform_chat_error(cc, "busy",
                                       "Your request is being sent.");
    }

    if (ngx_platform_chat_rate_check(cc) != NGX_OK) {
        return ngx_platform_chat_error(cc, "rate_limited",
                                       "Too many messages: wait a moment.");
    }

    if (cc->htext == NULL) {
        cc->htext = ngx_pnalloc(cc->request->pool, cc->conf->max_text + 3);
        if (cc->htext == NULL) {
            return NGX_ERROR;
        }
    }

    *ngx_cpymem(cc->htext, text.data, text.len) = '\0';

    q = &cc->hq;
    ngx_memzero(q, sizeof(ngx_platform_pg_query_t));

    cc->hvalues[0] = cc->values[0];
    cc->hvalues[1] = (char *) cc->event_buf;
    cc->hvalues[2] = (char *) cc->room.data;
    cc->hvalues[3] = text.len ? (char *) cc->htext : NULL;

    q->upstream = cc->zone->upstream;
    q->statement = cc->conf->chat->help;
    q->nparams = 4;
    q->values = cc->hvalues;
    q->handler = ngx_platform_chat_help_done;
    q->data = cc;
    q->log = cc->ws->connection->log;

    if (ngx_platform_pg_query(q) == NGX_ERROR) {
        return ngx_platform_chat_error(cc, "unavailable",
                                       "Help requests are not available, "
                                       "try again.");
    }

    cc->help_busy = 1;

    return NGX_OK;
}


/* an error frame for a failed help query */

static void
ngx_platform_chat_help_error(ngx_platform_chat_conn_t *cc,
    ngx_platform_pg_query_t *q)
{
    char  *state;

    state = q->res ? PQresultErrorField(q->res, PG_DIAG_SQLSTATE) : NULL;

    if (state && ngx_strcmp(state, "PT404") == 0) {
        (void) ngx_platform_chat_error(cc, "not_found",
                                       "No such help request.");

    } else if (state && ngx_strcmp(state, "PT403") == 0) {
        (void) ngx_platform_chat_error(cc, "forbidden", "Not allowed.");

    } else {
        ngx_log_error(NGX_LOG_ERR, q->log, 0, "chat help: %s",
                      q->res ? PQresultErrorMessage(q->res)
                             : (q->reason ? q->reason : "no connection"));
        (void) ngx_platform_chat_error(cc, "unavailable",
                                       "Not stored, try again.");
    }
}


static void
ngx_platform_chat_help_done(ngx_platform_pg_query_t *q)
{
    u_char                    *p, *buf;
    size_t                     len;
    ngx_str_t                  id, req;
    PGresult                  *res;
    ngx_platform_chat_conn_t  *cc;
    u_char                     ack[64];
    u_char                     key[NGX_PLATFORM_CHAT_KEY_MAX];

    cc = q->data;
    res = q->res;
    cc->help_busy = 0;

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1 || PQnfields(res) != 2)
    {
        ngx_platform_chat_help_error(cc, q);
        goto done;
    }

    id.data = (u_char *) PQgetvalue(res, 0, 0);
    id.len = PQgetlength(res, 0, 0);
    req.data = (u_char *) PQgetvalue(res, 0, 1);
    req.len = PQgetlength(res, 0, 1);

    ngx_platform_chat_count(cc->zone, help, 1);

    p = ngx_snprintf(ack, sizeof(ack), "{\"type\":\"help_ack\",\"id\":%V}",
                     &id);

    (void) ngx_platform_ws_send(cc->ws, NGX_PLATFORM_WS_TEXT, ack, p - ack);

    /* the admin room of the event */

    len = sizeof("{\"type\":\"help\",\"request\":}") - 1 + req.len;

    buf = ngx_alloc(len, q->log);
    if (buf == NULL) {
        goto done;
    }

    p = ngx_sprintf(buf, "{\"type\":\"help\",\"request\":%V}", &req);

    ngx_platform_chat_notice(cc->zone, key,
                             ngx_sprintf(key, "%s:admin", cc->event_buf)
                             - key, 0, buf, p - buf);
    ngx_free(buf);

done:

    if (res) {
        PQclear(res);
    }
}


/* {"type":"help_clear","id":N}: an organiser in the admin room */

static ngx_int_t
ngx_platform_chat_help_clear(ngx_platform_chat_conn_t *cc, u_char *data,
    size_t len)
{
    u_char                   *p;
    ngx_str_t                 id;
    ngx_platform_pg_query_t  *q;

    if (cc->room.len != 5 || ngx_strncmp(cc->room.data, "admin", 5) != 0) {
        return ngx_platform_chat_error(cc, "forbidden",
                                       "Help requests are cleared from the "
                                       "admin room.");
    }

    if (ngx_platform_chat_json_field(data, data + len, "id", &id) != NGX_OK
        || id.len == 0 || id.len > NGX_INT64_LEN
        || ngx_atoof(id.data, id.len) <= 0)
    {
        return ngx_platform_chat_error(cc, "bad_request", "id: a number");
    }

    if (cc->help_busy) {
        return ngx_platform_chat_error(cc, "busy", "One at a time.");
    }

    p = ngx_cpymem(cc->hid, id.data, id.len);
    *p = '\0';

    q = &cc->hq;
    ngx_memzero(q, sizeof(ngx_platform_pg_query_t));

    cc->hvalues[0] = cc->values[0];
    cc->hvalues[1] = (char *) cc->event_buf;
    cc->hvalues[2] = (char *) cc->hid;

    q->upstream = cc->zone->upstream;
    q->statement = cc->conf->chat->help_clear;
    q->nparams = 3;
    q->values = cc->hvalues;
    q->handler = ngx_platform_chat_help_cleared;
    q->data = cc;
    q->log = cc->ws->connection->log;

    if (ngx_platform_pg_query(q) == NGX_ERROR) {
        return ngx_platform_chat_error(cc, "unavailable",
                                       "Not available, try again.");
    }

    cc->help_busy = 1;

    return NGX_OK;
}


/*
 * A request cleared (api.chat_help_clear's columns: id, by, user_id, room,
 * the whole JSON): told to the admin room, and to the participant's
 * connections in the room the request came from.
 */

static void
ngx_platform_chat_cleared_notices(ngx_platform_chat_zone_t *zone,
    u_char *event, PGresult *res)
{
    u_char     *p, *buf;
    size_t      len;
    uint64_t    user;
    ngx_str_t   id, by, room;
    u_char      key[NGX_PLATFORM_CHAT_KEY_MAX];

    id.data = (u_char *) PQgetvalue(res, 0, 0);
    id.len = PQgetlength(res, 0, 0);
    by.data = (u_char *) PQgetvalue(res, 0, 1);
    by.len = PQgetlength(res, 0, 1);
    room.data = (u_char *) PQgetvalue(res, 0, 3);
    room.len = PQgetlength(res, 0, 3);
    user = ngx_atoof((u_char *) PQgetvalue(res, 0, 2),
                     PQgetlength(res, 0, 2));

    if (by.len == 0) {
        ngx_str_set(&by, "null");
    }

    len = sizeof("{\"type\":\"help_cleared\",\"id\":,\"by\":}") + id.len
          + by.len;

    buf = ngx_alloc(len, zone->cmcf->log);
    if (buf == NULL) {
        return;
    }

    p = ngx_sprintf(buf, "{\"type\":\"help_cleared\",\"id\":%V,\"by\":%V}",
                    &id, &by);

    ngx_platform_chat_notice(zone, key,
                             ngx_sprintf(key, "%s:admin", event) - key, 0,
                             buf, p - buf);

    if (room.len && room.len < NGX_PLATFORM_CHAT_ROOM_MAX
        && (int64_t) user > 0)
    {
        p = ngx_sprintf(buf, "{\"type\":\"help_cleared\",\"id\":%V}", &id);

        ngx_platform_chat_notice(zone, key,
                                 ngx_sprintf(key, "%s:%V", event, &room)
                                 - key, user, buf, p - buf);
    }

    ngx_free(buf);
}


static void
ngx_platform_chat_help_cleared(ngx_platform_pg_query_t *q)
{
    PGresult                  *res;
    ngx_platform_chat_conn_t  *cc;

    cc = q->data;
    res = q->res;
    cc->help_busy = 0;

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1 || PQnfields(res) != 5)
    {
        ngx_platform_chat_help_error(cc, q);

    } else {
        ngx_platform_chat_cleared_notices(cc->zone, cc->event_buf, res);
    }

    if (res) {
        PQclear(res);
    }
}


/*
 * A notice into a room by key (help, help_cleared): nobody connected, no
 * room, nothing to do.  to: only that user's connections get it.
 */

static void
ngx_platform_chat_notice(ngx_platform_chat_zone_t *zone, u_char *key,
    size_t klen, uint64_t to, u_char *data, size_t len)
{
    ngx_str_t                   k;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_entry_t  *e;

    k.data = key;
    k.len = klen;

    ngx_shmtx_lock(&zone->shpool->mutex);

    room = ngx_platform_chat_lookup(zone, &k, ngx_crc32_short(key, klen));

    if (room == NULL || room->count == 0) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    e = ngx_platform_chat_append(zone, room, len);

    if (e == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_platform_chat_count(zone, dropped, 1);
        return;
    }

    ngx_memcpy(e->data, data, len);
    e->to = to;
    e->kind = NGX_PLATFORM_CHAT_HELP;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_platform_chat_notify(zone->cmcf);
}


static ngx_int_t
ngx_platform_chat_error(ngx_platform_chat_conn_t *cc, const char *code,
    const char *message)
{
    u_char  *p;
    u_char   buf[256];

    p = ngx_snprintf(buf, sizeof(buf),
                     "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}",
                     code, message);

    if (ngx_platform_ws_send(cc->ws, NGX_PLATFORM_WS_TEXT, buf, p - buf)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* text is a JSON string literal, as the client sent it (validated) */

static ngx_int_t
ngx_platform_chat_publish(ngx_platform_chat_conn_t *cc, u_char *text,
    size_t len)
{
    u_char                     *p;
    size_t                      size;
    uint64_t                    id;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_zone_t   *zone;
    ngx_platform_chat_entry_t  *e;
    u_char                      time[32];
    size_t                      tlen;

    zone = cc->zone;
    tlen = ngx_platform_chat_time(time) - time;

    if (zone->relay.len) {
        /* numbered by PostgreSQL, heard back like every host's */

        if (ngx_platform_chat_persist(cc, 0, text, len, time, tlen)
            != NGX_OK)
        {
            return ngx_platform_chat_error(cc, "busy",
                                           "The chat is busy: send again.");
        }

        ngx_platform_chat_count(zone, published, 1);
        return NGX_OK;
    }

    size = sizeof("{\"type\":\"message\",\"id\":,\"room\":\"\",\"sender\":,"
                  "\"text\":,\"time\":\"\"}") - 1
           + NGX_INT64_LEN + cc->room.len + cc->user.len + len + tlen;

    ngx_shmtx_lock(&zone->shpool->mutex);

    room = cc->local->room;

    e = ngx_platform_chat_append(zone, room, size);

    if (e == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_platform_chat_count(zone, dropped, 1);
        return ngx_platform_chat_error(cc, "busy",
                                       "The chat is busy: send again.");
    }

    id = ++room->last_id;

    p = ngx_sprintf(e->data, "{\"type\":\"message\",\"id\":%uL,"
                    "\"room\":\"%V\",\"sender\":%V,\"text\":",
                    id, &cc->room, &cc->user);
    p = ngx_cpymem(p, text, len);
    p = ngx_sprintf(p, ",\"time\":\"%*s\"}", tlen, time);

    e->len = p - e->data;
    e->id = id;
    e->user = cc->user_id;
    room->bytes -= size - e->len;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_platform_chat_count(zone, published, 1);

    /*
     * Many messages in one pass of the event loop (a client's burst read
     * at once): delivered and announced now rather than at the end of the
     * pass, so that no ring passes over entries not delivered yet.
     */

    if (id && room->seq - cc->local->delivered >= NGX_PLATFORM_CHAT_BURST) {
        ngx_platform_chat_wake_others(zone->cmcf);
        ngx_platform_chat_deliver_room(zone, cc->local);
    }

    ngx_platform_chat_notify(zone->cmcf);

    if (ngx_platform_chat_persist(cc, id, text, len, time, tlen) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, cc->ws->connection->log, 0,
                      "chat message %uL of \"%V\" not persisted",
                      id, &cc->key);
    }

    return NGX_OK;
}


static void
ngx_platform_chat_close(ngx_platform_ws_t *ws, ngx_uint_t code)
{
    ngx_uint_t                   count, last;
    ngx_platform_chat_conn_t    *cc;
    ngx_platform_chat_local_t   *local;
    ngx_platform_chat_room_t    *room;
    ngx_platform_chat_zone_t    *zone;
    ngx_platform_chat_member_t  *m;
    ngx_platform_chat_user_t    *u;

    cc = ws->data;

    if (cc->help_busy) {
        /* its answer would come to a connection that is gone */
        ngx_platform_pg_abort(&cc->hq);
        cc->help_busy = 0;
    }

    if (!cc->joined) {
        return;
    }

    cc->joined = 0;
    zone = cc->zone;
    local = cc->local;
    room = cc->zroom;

    if (local) {
        ngx_queue_remove(&cc->queue);
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (room->count) {
        room->count--;
    }

    (void) ngx_atomic_fetch_add(&zone->sh->connections, -1);

    count = room->count;
    last = 1;
    m = cc->member;

    if (m) {
        last = (--m->refs == 0);

        if (last) {
            ngx_rbtree_delete(&room->members, &m->node);
            ngx_slab_free_locked(zone->shpool, m);

            if (room->users) {
                room->users--;
            }
        }

        cc->member = NULL;
    }

    u = cc->bucket;

    if (u) {
        if (--u->refs == 0) {
            ngx_rbtree_delete(&zone->sh->users, &u->node);
            ngx_slab_free_locked(zone->shpool, u);
        }

        cc->bucket = NULL;
    }

    if (last
        && ngx_platform_chat_presence_notice(cc, "left", &count) != NGX_OK)
    {
        ngx_platform_chat_count(zone, dropped, 1);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (local && ngx_queue_empty(&local->members)) {
        /* what is left in the ring is nobody's here any more */
        ngx_rbtree_delete(&zone->local, &local->sn.node);
        ngx_queue_remove(&local->queue);
        ngx_free(local);
    }

    cc->local = NULL;

    ngx_platform_chat_engage(cc, 'c');

    ngx_platform_chat_notify(zone->cmcf);
}


/* under the mutex: the user in the room, or NULL */

static ngx_platform_chat_member_t *
ngx_platform_chat_member(ngx_platform_chat_room_t *room, uint64_t user)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    key = (ngx_rbtree_key_t) user;
    node = room->members.root;
    sentinel = room->members.sentinel;

    while (node != sentinel) {

        if (key == node->key) {
            return (ngx_platform_chat_member_t *) node;
        }

        node = (key < node->key) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_platform_chat_user_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_platform_chat_user_t  *u, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            u = (ngx_platform_chat_user_t *) node;
            t = (ngx_platform_chat_user_t *) temp;

            p = (u->event < t->event) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* under the mutex: the user's entry in the event, made when missing */

static ngx_platform_chat_user_t *
ngx_platform_chat_user(ngx_platform_chat_zone_t *zone, uint64_t event,
    uint64_t user)
{
    ngx_rbtree_key_t           key;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_platform_chat_user_t  *u;

    key = (ngx_rbtree_key_t) user;
    node = zone->sh->users.root;
    sentinel = zone->sh->users.sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        u = (ngx_platform_chat_user_t *) node;

        if (u->event == event) {
            return u;
        }

        node = (event < u->event) ? node->left : node->right;
    }

    u = ngx_platform_chat_alloc(zone, sizeof(ngx_platform_chat_user_t));
    if (u == NULL) {
        return NULL;
    }

    ngx_memzero(u, sizeof(ngx_platform_chat_user_t));
    u->node.key = key;
    u->event = event;

    ngx_rbtree_insert(&zone->sh->users, &u->node);

    return u;
}


/* under the mutex: memory from the slab, rings evicted for it if need be */

static void *
ngx_platform_chat_alloc(ngx_platform_chat_zone_t *zone, size_t size)
{
    void  *p;

    for ( ;; ) {
        p = ngx_slab_alloc_locked(zone->shpool, size);

        if (p || !ngx_platform_chat_evict(zone, NULL)) {
            return p;
        }
    }
}


/* the zone, under the mutex */

static ngx_platform_chat_room_t *
ngx_platform_chat_lookup(ngx_platform_chat_zone_t *zone, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_platform_chat_room_t  *room;

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        room = (ngx_platform_chat_room_t *) node;

        rc = ngx_memn2cmp(key->data, room->key, key->len, room->len);

        if (rc == 0) {
            return room;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_platform_chat_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_platform_chat_room_t   *r, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            r = (ngx_platform_chat_room_t *) node;
            t = (ngx_platform_chat_room_t *) temp;

            p = (ngx_memn2cmp(r->key, t->key, r->len, t->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_platform_chat_room_t *
ngx_platform_chat_room_get(ngx_platform_chat_zone_t *zone, ngx_str_t *key,
    uint64_t last_id)
{
    size_t                     size;
    uint32_t                   hash;
    ngx_platform_chat_room_t  *room;

    hash = ngx_crc32_short(key->data, key->len);

    room = ngx_platform_chat_lookup(zone, key, hash);

    if (room) {
        if (room->last_id < last_id) {
            room->last_id = last_id;
        }

        ngx_platform_chat_touch(zone, room);
        return room;
    }

    size = offsetof(ngx_platform_chat_room_t, key) + key->len;
    size = ngx_align(size, sizeof(void *));

    for ( ;; ) {
        room = ngx_slab_alloc_locked(zone->shpool,
                                     size + zone->messages * sizeof(void *));
        if (room) {
            break;
        }

        if (!ngx_platform_chat_evict(zone, NULL)) {
            return NULL;
        }
    }

    ngx_memzero(room, size + zone->messages * sizeof(void *));

    room->node.key = hash;
    room->len = (u_short) key->len;
    ngx_memcpy(room->key, key->data, key->len);
    room->ring = (ngx_platform_chat_entry_t **) ((u_char *) room + size);
    room->seq = 0;
    room->first = 1;
    room->last_id = last_id;
    room->used = ngx_time();
    ngx_rbtree_init(&room->members, &room->members_sentinel,
                    ngx_rbtree_insert_value);

    ngx_rbtree_insert(&zone->sh->rbtree, &room->node);
    ngx_queue_insert_head(&zone->sh->lru, &room->lru);
    zone->sh->rooms++;

    return room;
}


/*
 * A new entry at the end of the ring: the oldest go when the ring is full
 * (slots or bytes); when the zone is full, other rooms' entries go first,
 * least recently used rooms first.  len is an upper bound.
 */

static ngx_platform_chat_entry_t *
ngx_platform_chat_append(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *room, size_t len)
{
    ngx_platform_chat_entry_t  *e;

    while (room->first <= room->seq
           && (room->seq - room->first + 1 >= zone->messages
               || room->bytes + len > zone->room_size))
    {
        ngx_platform_chat_drop_oldest(zone, room);
    }

    for ( ;; ) {
        e = ngx_slab_alloc_locked(zone->shpool,
                                  offsetof(ngx_platform_chat_entry_t, data)
                                  + len);
        if (e) {
            break;
        }

        if (!ngx_platform_chat_evict(zone, room)) {
            return NULL;
        }
    }

    if (room->first > room->seq) {
        room->first = room->seq + 1;
    }

    e->seq = ++room->seq;
    e->len = len;
    e->id = 0;
    e->user = 0;
    e->to = 0;
    e->kind = NGX_PLATFORM_CHAT_MESSAGE;
    room->ring[e->seq % zone->messages] = e;
    room->bytes += len;
    room->used = ngx_time();

    ngx_platform_chat_touch(zone, room);

    return e;
}


static void
ngx_platform_chat_drop_oldest(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *room)
{
    ngx_uint_t                  slot;
    ngx_platform_chat_entry_t  *e;

    slot = room->first % zone->messages;
    e = room->ring[slot];

    if (e && e->seq == room->first) {
        room->bytes -= e->len;
        room->ring[slot] = NULL;
        ngx_slab_free_locked(zone->shpool, e);
    }

    room->first++;
}


/* frees something: 1, or 0 when nothing could go */

static ngx_uint_t
ngx_platform_chat_evict(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *keep)
{
    time_t                     now;
    ngx_queue_t               *lq;
    ngx_platform_chat_room_t  *room;

    now = ngx_time();

    for (lq = ngx_queue_last(&zone->sh->lru);
         lq != ngx_queue_sentinel(&zone->sh->lru);
         lq = ngx_queue_prev(lq))
    {
        room = ngx_queue_data(lq, ngx_platform_chat_room_t, lru);

        if (room == keep) {
            continue;
        }

        if (room->first <= room->seq) {
            /* an idle room's ring: emptied at once */

            while (room->first <= room->seq) {
                ngx_platform_chat_drop_oldest(zone, room);
                (void) ngx_atomic_fetch_add(&zone->sh->evicted_entries, 1);
            }

            return 1;
        }

        if (room->count == 0 && now - room->used > NGX_PLATFORM_CHAT_IDLE) {
            ngx_queue_remove(&room->lru);
            ngx_rbtree_delete(&zone->sh->rbtree, &room->node);
            ngx_slab_free_locked(zone->shpool, room);
            zone->sh->rooms--;
            (void) ngx_atomic_fetch_add(&zone->sh->evicted_rooms, 1);
            return 1;
        }
    }

    /* the room itself keeps its newest entry */

    if (keep && keep->first < keep->seq) {
        ngx_platform_chat_drop_oldest(zone, keep);
        (void) ngx_atomic_fetch_add(&zone->sh->evicted_entries, 1);
        return 1;
    }

    return 0;
}


static void
ngx_platform_chat_touch(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_room_t *room)
{
    ngx_queue_remove(&room->lru);
    ngx_queue_insert_head(&zone->sh->lru, &room->lru);
}


/* wake-up: one posted event per pass writes every other worker's eventfd */

static void
ngx_platform_chat_notify(ngx_platform_chat_main_conf_t *cmcf)
{
    if (!cmcf->notify.posted) {
        ngx_post_event(&cmcf->notify, &ngx_posted_events);
    }
}


static void
ngx_platform_chat_notify_handler(ngx_event_t *ev)
{
    ngx_uint_t                      i;
    ngx_platform_chat_zone_t      **zones;
    ngx_platform_chat_main_conf_t  *cmcf;

    cmcf = ev->data;

    ngx_platform_chat_wake_others(cmcf);

    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        ngx_platform_chat_deliver(zones[i]);
    }
}


static void
ngx_platform_chat_wake_others(ngx_platform_chat_main_conf_t *cmcf)
{
    uint64_t    one;
    ngx_uint_t  i;

    one = 1;

    for (i = 0; i < cmcf->nfds; i++) {
        if (i == ngx_worker || cmcf->fds[i] == NGX_INVALID_FILE) {
            continue;
        }

        if (write(cmcf->fds[i], &one, sizeof(uint64_t)) == -1
            && ngx_errno != NGX_EAGAIN)
        {
            ngx_log_error(NGX_LOG_ALERT, cmcf->log, ngx_errno,
                          "write() to the chat eventfd of worker %ui "
                          "failed", i);
        }
    }
}


static void
ngx_platform_chat_wake_handler(ngx_event_t *ev)
{
    uint64_t                        n;
    ngx_uint_t                      i;
    ngx_connection_t               *c;
    ngx_platform_chat_zone_t      **zones;
    ngx_platform_chat_main_conf_t  *cmcf;

    c = ev->data;
    cmcf = c->data;

    while (read(c->fd, &n, sizeof(uint64_t)) == sizeof(uint64_t)) {
        /* void */
    }

    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        ngx_platform_chat_deliver(zones[i]);
    }

    if (ngx_handle_read_event(ev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "chat eventfd: cannot wait for events");
    }
}


static void
ngx_platform_chat_deliver(ngx_platform_chat_zone_t *zone)
{
    ngx_queue_t                *lq;
    ngx_platform_chat_local_t  *local;

    for (lq = ngx_queue_head(&zone->locals);
         lq != ngx_queue_sentinel(&zone->locals);
         lq = ngx_queue_next(lq))
    {
        local = ngx_queue_data(lq, ngx_platform_chat_local_t, queue);

        if (local->room->seq != local->delivered) {
            ngx_platform_chat_deliver_room(zone, local);
        }
    }
}


/*
 * The new entries of a room, copied once (as frames) into a shared buffer
 * under the mutex, then queued to each connection of this worker in the
 * room: one piece per connection when it gets them all, a piece per run
 * otherwise (no-echo, a connection that joined in between).
 */

static void
ngx_platform_chat_deliver_room(ngx_platform_chat_zone_t *zone,
    ngx_platform_chat_local_t *local)
{
    u_char                     *pos;
    size_t                      size;
    uint64_t                    s, from, last;
    ngx_uint_t                  i, j, k, n;
    ngx_queue_t                *q;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_conn_t   *cc;
    ngx_platform_chat_entry_t  *e;
    ngx_platform_chat_piece_t  *pc;
    ngx_platform_ws_shared_t   *sb;

    room = local->room;
    zone->pieces.nelts = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    last = room->seq;
    from = local->delivered + 1;

    if (from < room->first) {
        /* gone before this worker came round: skipped, counted */
        (void) ngx_atomic_fetch_add(&zone->sh->lagged, room->first - from);
        from = room->first;
    }

    size = 0;

    for (s = from; s <= last; s++) {
        e = room->ring[s % zone->messages];

        if (e && e->seq == s) {
            size += NGX_PLATFORM_WS_MAX_HEADER + e->len;
        }
    }

    sb = NULL;

    if (size) {
        sb = ngx_platform_ws_shared_create(size, zone->cmcf->log);
    }

    if (sb) {
        for (s = from; s <= last; s++) {
            e = room->ring[s % zone->messages];

            if (e == NULL || e->seq != s) {
                continue;
            }

            pc = ngx_array_push(&zone->pieces);
            if (pc == NULL) {
                break;
            }

            pc->pos = ngx_platform_ws_shared_add(sb, NGX_PLATFORM_WS_TEXT,
                                                 e->data, e->len);
            pc->last = sb->last;
            pc->seq = s;
            pc->user = e->user;
            pc->to = e->to;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    local->delivered = last;

    if (sb == NULL) {
        return;
    }

    pc = zone->pieces.elts;
    n = zone->pieces.nelts;

    for (q = ngx_queue_head(&local->members);
         q != ngx_queue_sentinel(&local->members);
         q = ngx_queue_next(q))
    {
        cc = ngx_queue_data(q, ngx_platform_chat_conn_t, queue);

        /* runs of pieces this connection gets */

        for (i = 0; i < n; i = j) {

            if (pc[i].seq <= cc->from
                || (!cc->echo && pc[i].user == cc->user_id)
                || (pc[i].to && pc[i].to != cc->user_id))
            {
                j = i + 1;
                continue;
            }

            pos = pc[i].pos;

            for (j = i + 1; j < n; j++) {
                if (pc[j].seq <= cc->from
                    || (!cc->echo && pc[j].user == cc->user_id)
                    || (pc[j].to && pc[j].to != cc->user_id))
                {
                    break;
                }
            }

            k = j - i;

            if (ngx_platform_ws_send_shared(cc->ws, sb, pos, pc[j - 1].last,
                                            k)
                != NGX_OK)
            {
                /* closing (too slow): its close() comes later */
                break;
            }

            ngx_platform_chat_count(zone, delivered, k);
        }

        if (cc->from < last) {
            cc->from = last;
        }
    }

    ngx_platform_ws_shared_release(sb);
}


/* persistence: batches per worker */

static ngx_int_t
ngx_platform_chat_persist(ngx_platform_chat_conn_t *cc, uint64_t id,
    u_char *text, size_t len, u_char *time, size_t tlen)
{
    u_char  *p;
    size_t   need;

    need = sizeof("{\"e\":,\"r\":\"\",\"i\":,\"u\":,\"n\":,\"s\":,\"t\":,"
                  "\"at\":\"\",\"x\":\"-\"}") + 5 * NGX_INT64_LEN
           + cc->room.len + cc->name.len + cc->user.len + len + tlen;

    p = ngx_platform_chat_batch_reserve(&cc->zone->messages_batch, need);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "{\"e\":%uL,\"r\":\"%V\",\"i\":%uL,\"u\":%uL,"
                    "\"n\":%V,\"s\":%V,\"t\":", cc->event_id, &cc->room, id,
                    cc->user_id, &cc->name, &cc->user);
    p = ngx_cpymem(p, text, len);
    p = ngx_sprintf(p, ",\"at\":\"%*s\"", tlen, time);

    if (cc->zone->relay.len) {
        /* stored once however often the batch is sent */
        p = ngx_sprintf(p, ",\"x\":\"%016xL-%uL\"", cc->zone->relay_origin,
                        ++cc->zone->relay_n);
    }

    *p++ = '}';

    ngx_platform_chat_batch_commit(&cc->zone->messages_batch, p);

    return NGX_OK;
}


/* engagement: 'o' opened, 'c' closed, 'b' a beat, into the batch */

static void
ngx_platform_chat_engage(ngx_platform_chat_conn_t *cc, char kind)
{
    u_char                    *p;
    size_t                     need, tlen;
    ngx_platform_chat_zone_t  *zone;
    u_char                     time[32];

    zone = cc->zone;

    if (zone->cmcf->heartbeat == 0 || cc->ckey_len == 0) {
        return;
    }

    tlen = ngx_platform_chat_time(time) - time;

    need = sizeof("{\"k\":\"x\",\"c\":\"\",\"e\":,\"u\":,\"r\":\"\","
                  "\"at\":\"\"}") + 2 * NGX_INT64_LEN + cc->ckey_len
           + cc->room.len + tlen;

    p = ngx_platform_chat_batch_reserve(&zone->engagement, need);
    if (p == NULL) {
        return;
    }

    p = ngx_sprintf(p, "{\"k\":\"%c\",\"c\":\"%*s\",\"e\":%uL,\"u\":%uL,"
                    "\"r\":\"%V\",\"at\":\"%*s\"}", kind, cc->ckey_len,
                    cc->ckey, cc->event_id, cc->user_id, &cc->room, tlen,
                    time);

    ngx_platform_chat_batch_commit(&zone->engagement, p);
}


/* every platform_chat_heartbeat: a beat for each connection here */

static void
ngx_platform_chat_beat_handler(ngx_event_t *ev)
{
    ngx_queue_t                *lq, *mq;
    ngx_platform_chat_conn_t   *cc;
    ngx_platform_chat_zone_t   *zone;
    ngx_platform_chat_local_t  *local;

    zone = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    for (lq = ngx_queue_head(&zone->locals);
         lq != ngx_queue_sentinel(&zone->locals);
         lq = ngx_queue_next(lq))
    {
        local = ngx_queue_data(lq, ngx_platform_chat_local_t, queue);

        for (mq = ngx_queue_head(&local->members);
             mq != ngx_queue_sentinel(&local->members);
             mq = ngx_queue_next(mq))
        {
            cc = ngx_queue_data(mq, ngx_platform_chat_conn_t, queue);
            ngx_platform_chat_engage(cc, 'b');
        }
    }

    ngx_add_timer(ev, zone->cmcf->heartbeat);
}


/* room for an item of at most need bytes: where it goes ('[' or ',' put) */

static u_char *
ngx_platform_chat_batch_reserve(ngx_platform_chat_batch_t *b, size_t need)
{
    u_char  *p, *n;
    size_t   size;

    need += 3;      /* ',' before, "]" and NUL after */

    if (b->pending_len + need > b->pending_size) {
        size = ngx_max(b->pending_size * 2, b->pending_len + need);
        size = ngx_max(size, 4096);

        n = ngx_alloc(size, b->zone->cmcf->log);
        if (n == NULL) {
            return NULL;
        }

        if (b->pending) {
            ngx_memcpy(n, b->pending, b->pending_len);
            ngx_free(b->pending);
        }

        b->pending = n;
        b->pending_size = size;
    }

    p = b->pending + b->pending_len;

    *p++ = b->pending_n ? ',' : '[';

    return p;
}


static void
ngx_platform_chat_batch_commit(ngx_platform_chat_batch_t *b, u_char *p)
{
    b->pending_len = p - b->pending;
    b->pending_n++;

    /* relayed: at once when none is in flight, clients wait for it */

    if (b->pending_n >= b->zone->batch || (b->relay && !b->busy)) {
        ngx_platform_chat_flush(b);

    } else if (!b->flush_ev.timer_set && !b->busy) {
        ngx_add_timer(&b->flush_ev, b->zone->flush);
    }
}


static void
ngx_platform_chat_flush_handler(ngx_event_t *ev)
{
    ngx_platform_chat_flush(ev->data);
}


/*
 * One statement per batch, one in flight per batch and worker.  A batch
 * that failed is sent again (NGX_PLATFORM_CHAT_RETRIES times, after
 * 0.5, 1, 2 s; the statements are idempotent), then dropped and counted;
 * a worker that is exiting does not wait to try again.
 */

static void
ngx_platform_chat_flush(ngx_platform_chat_batch_t *b)
{
    ngx_platform_pg_query_t  *q;

    if (b->busy) {
        return;
    }

    if (b->flush_ev.timer_set) {
        ngx_del_timer(&b->flush_ev);
    }

    if (b->inflight == NULL) {

        if (b->pending_n == 0) {
            return;
        }

        /* "]" and NUL: room was kept for them */

        b->pending[b->pending_len++] = ']';
        b->pending[b->pending_len] = '\0';

        b->inflight = b->pending;
        b->inflight_n = b->pending_n;
        b->tries = 0;
        b->pending = NULL;
        b->pending_len = 0;
        b->pending_size = 0;
        b->pending_n = 0;
    }

    q = &b->query;
    ngx_memzero(q, sizeof(ngx_platform_pg_query_t));

    b->values[0] = (char *) b->inflight;
    b->values[1] = (char *) b->zone->relay.data;

    q->upstream = b->zone->upstream;
    q->statement = b->statement;
    q->nparams = b->relay ? 2 : 1;
    q->values = b->values;
    q->handler = ngx_platform_chat_stored;
    q->data = b;
    q->log = b->zone->cmcf->log;

    b->busy = 1;

    if (ngx_platform_pg_query(q) == NGX_ERROR) {
        q->res = NULL;
        ngx_platform_chat_stored(q);
    }
}


static void
ngx_platform_chat_stored(ngx_platform_pg_query_t *q)
{
    ngx_uint_t                  ok;
    ngx_platform_chat_zone_t   *zone;
    ngx_platform_chat_batch_t  *b;

    b = q->data;
    zone = b->zone;
    b->busy = 0;

    ok = (q->res && PQresultStatus(q->res) == PGRES_TUPLES_OK);

    if (b->engagement) {
        ngx_platform_chat_count(zone, engagement_batches, 1);
    } else {
        ngx_platform_chat_count(zone, batches, 1);
    }

    if (!ok && b->tries < NGX_PLATFORM_CHAT_RETRIES
        && !ngx_exiting && !ngx_terminate && !ngx_quit)
    {
        ngx_log_error(NGX_LOG_WARN, zone->cmcf->log, 0,
                      "chat: a batch of %ui %s not stored, sent again: %s",
                      b->inflight_n, b->engagement ? "engagement items"
                                                   : "messages",
                      q->res ? PQresultErrorMessage(q->res)
                             : (q->reason ? q->reason : "no connection"));

        if (q->res) {
            PQclear(q->res);
            q->res = NULL;
        }

        ngx_platform_chat_count(zone, persist_retries, 1);

        /* kept in inflight (not when exiting: the pool is closing) */
        if (b->flush_ev.timer_set) {
            ngx_del_timer(&b->flush_ev);
        }

        ngx_add_timer(&b->flush_ev, 500 << b->tries++);
        return;
    }

    if (ok) {
        if (b->engagement) {
            ngx_platform_chat_count(zone, engagement_stored, b->inflight_n);
        } else {
            ngx_platform_chat_count(zone, persisted, b->inflight_n);
        }

    } else {
        ngx_log_error(NGX_LOG_ERR, zone->cmcf->log, 0,
                      "chat: %ui %s not stored, dropped: %s",
                      b->inflight_n, b->engagement ? "engagement items"
                                                   : "messages",
                      q->res ? PQresultErrorMessage(q->res)
                             : (q->reason ? q->reason : "no connection"));

        if (b->engagement) {
            ngx_platform_chat_count(zone, engagement_failed, b->inflight_n);
        } else {
            ngx_platform_chat_count(zone, persist_failed, b->inflight_n);
        }
    }

    if (q->res) {
        PQclear(q->res);
        q->res = NULL;
    }

    ngx_free(b->inflight);
    b->inflight = NULL;
    b->tries = 0;

    if (b->pending_n) {
        if (b->pending_n >= zone->batch || b->relay) {
            ngx_platform_chat_flush(b);

        } else if (!b->flush_ev.timer_set) {
            ngx_add_timer(&b->flush_ev, zone->flush);
        }
    }
}


/*
 * Across hosts (relay=CHANNEL): what PostgreSQL numbered and stored,
 * heard on the LISTEN connection of this worker's pool, every worker of
 * every host.  {"k": key, "i": id, "u": user, "m": message}.  The first
 * worker of a host to hear a message appends it (the room's last_id says
 * which ids the ring has), the others skip it: each message is delivered
 * once on each host.  A room nobody on this host is in is created anyway,
 * so that a client joining right after gets the message in its welcome.
 */

static void
ngx_platform_chat_relay_notify(void *data, const char *channel,
    const char *payload)
{
    ngx_platform_chat_zone_t *zone = data;

    u_char                     *p, *last;
    uint64_t                    id, user;
    ngx_str_t                   key, v, m;
    ngx_platform_chat_room_t   *room;
    ngx_platform_chat_entry_t  *e;

    p = (u_char *) payload;
    last = p + ngx_strlen(payload);

    if (ngx_platform_chat_json_field(p, last, "k", &key) != NGX_OK
        || key.len < 3 || key.len - 2 > NGX_PLATFORM_CHAT_KEY_MAX
        || ngx_platform_chat_json_field(p, last, "i", &v) != NGX_OK
        || (id = ngx_atoof(v.data, v.len)) == (uint64_t) NGX_ERROR
        || id == 0
        || ngx_platform_chat_json_field(p, last, "u", &v) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, zone->cmcf->log, 0,
                      "chat relay: invalid notification on \"%s\": %s",
                      channel, payload);
        return;
    }

    user = (v.len == 4 && ngx_strncmp(v.data, "null", 4) == 0)
           ? 0 : (uint64_t) ngx_atoof(v.data, v.len);

    key.data++;
    key.len -= 2;

    if (ngx_platform_chat_json_field(p, last, "m", &m) != NGX_OK) {
        /* too long to be notified: it is in the history */
        ngx_platform_chat_count(zone, relay_skipped, 1);
        m.len = 0;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    room = ngx_platform_chat_room_get(zone, &key, id - 1);

    if (room == NULL || id <= room->last_id) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (room) {
            ngx_platform_chat_count(zone, relay_duplicates, 1);
        }

        return;
    }

    room->last_id = id;

    if (m.len == 0) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    e = ngx_platform_chat_append(zone, room, m.len);

    if (e == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_platform_chat_count(zone, dropped, 1);
        return;
    }

    ngx_memcpy(e->data, m.data, m.len);
    e->id = id;
    e->user = user;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_platform_chat_count(zone, relayed, 1);
    ngx_platform_chat_notify(zone->cmcf);
}


static void
ngx_platform_chat_relay_listening(void *data)
{
    ngx_platform_chat_zone_t *zone = data;

    ngx_log_error(NGX_LOG_INFO, zone->cmcf->log, 0,
                  "platform_chat_zone \"%V\": relaying through \"%V\"",
                  &zone->name, &zone->relay);
}


/*
 * A minimal reader for the clients' JSON objects: the raw value of a
 * top-level field (a string with its quotes), NGX_DECLINED when absent,
 * NGX_ERROR when the text is not one JSON object.  Strings are checked
 * (escapes, no control characters, no \u0000 that PostgreSQL refuses); the
 * WebSocket layer has checked the UTF-8.
 */

static ngx_int_t
ngx_platform_chat_json_field(u_char *p, u_char *last, const char *name,
    ngx_str_t *value)
{
    u_char     *k, *kend, *v;
    size_t      len;
    ngx_int_t   rc;

    len = ngx_strlen(name);
    rc = NGX_DECLINED;

#define ws(p)  while (p < last && (*p == ' ' || *p == '\t' || *p == '\n'    \
                                   || *p == '\r')) p++

    ws(p);

    if (p == last || *p++ != '{') {
        return NGX_ERROR;
    }

    ws(p);

    if (p < last && *p == '}') {
        p++;
        goto end;
    }

    for ( ;; ) {
        ws(p);
        k = p;
        p = ngx_platform_chat_json_string(p, last);
        if (p == NULL) {
            return NGX_ERROR;
        }

        kend = p;

        ws(p);

        if (p == last || *p++ != ':') {
            return NGX_ERROR;
        }

        ws(p);
        v = p;
        p = ngx_platform_chat_json_value(p, last);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if ((size_t) (kend - k) == len + 2
            && ngx_strncmp(k + 1, name, len) == 0)
        {
            value->data = v;
            value->len = p - v;
            rc = NGX_OK;
        }

        ws(p);

        if (p == last) {
            return NGX_ERROR;
        }

        if (*p == ',') {
            p++;
            continue;
        }

        if (*p++ == '}') {
            break;
        }

        return NGX_ERROR;
    }

end:

    ws(p);

#undef ws

    return (p == last) ? rc : NGX_ERROR;
}


static u_char *
ngx_platform_chat_json_string(u_char *p, u_char *last)
{
    ngx_uint_t  i;

    if (p == last || *p++ != '"') {
        return NULL;
    }

    while (p < last) {

        if (*p == '"') {
            return p + 1;
        }

        if (*p < 0x20) {
            return NULL;
        }

        if (*p++ != '\\') {
            continue;
        }

        if (p == last) {
            return NULL;
        }

        switch (*p++) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            break;

        case 'u':
            if (last - p < 4 || ngx_strncmp(p, "0000", 4) == 0) {
                return NULL;
            }

            for (i = 0; i < 4; i++) {
                if (ngx_hextoi(p + i, 1) == NGX_ERROR) {
                    return NULL;
                }
            }

            p += 4;
            break;

        default:
            return NULL;
        }
    }

    return NULL;
}


static u_char *
ngx_platform_chat_json_value(u_char *p, u_char *last)
{
    u_char      c, *start;
    ngx_uint_t  depth;

    if (p == last) {
        return NULL;
    }

    if (*p == '"') {
        return ngx_platform_chat_json_string(p, last);
    }

    if (*p == '{' || *p == '[') {
        /* skipped, strings inside respected */
        depth = 0;

        while (p < last) {
            c = *p;

            if (c == '"') {
                p = ngx_platform_chat_json_string(p, last);
                if (p == NULL) {
                    return NULL;
                }
                continue;
            }

            if (c == '{' || c == '[') {
                if (++depth > 16) {
                    return NULL;
                }

            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }

            p++;
        }

        return NULL;
    }

    /* true, false, null, numbers */

    start = p;

    while (p < last && ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
                        || *p == '-' || *p == '+' || *p == '.'
                        || *p == 'E'))
    {
        p++;
    }

    return (p == start) ? NULL : p;
}


/* 2026-11-23T19:26:37.123Z */

static u_char *
ngx_platform_chat_time(u_char *p)
{
    ngx_tm_t     tm;
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       tp->msec);
}


/* statistics */

size_t
ngx_platform_chat_status_size(ngx_http_request_t *r)
{
    ngx_uint_t                      i;
    ngx_platform_chat_zone_t      **zones;
    ngx_platform_chat_main_conf_t  *cmcf;
    size_t                          len;

    cmcf = ngx_http_get_module_main_conf(r, ngx_platform_chat_module);

    if (cmcf == NULL) {
        return 0;
    }

    len = 1024;
    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        len += 20 * (96 + NGX_ATOMIC_T_LEN + zones[i]->name.len);
    }

    return len;
}


u_char *
ngx_platform_chat_status(ngx_http_request_t *r, u_char *p, u_char *last)
{
    ngx_uint_t                      i;
    ngx_platform_chat_zone_t      **zones, *z;
    ngx_platform_chat_shctx_t      *sh;
    ngx_platform_chat_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_platform_chat_module);

    if (cmcf == NULL || cmcf->zones.nelts == 0) {
        return p;
    }

    zones = cmcf->zones.elts;

    p = ngx_slprintf(p, last,
        "# HELP platform_chat_rooms Rooms in the chat zone.\n"
        "# TYPE platform_chat_rooms gauge\n"
        "# HELP platform_chat_connections Chat connections.\n"
        "# TYPE platform_chat_connections gauge\n"
        "# HELP platform_chat_messages_total Chat messages published, "
        "delivered (one per connection), refused for lack of memory "
        "(dropped), rate limited, skipped by a worker that came round after "
        "the ring had dropped them (lagged).\n"
        "# TYPE platform_chat_messages_total counter\n"
        "# HELP platform_chat_evicted_total Ring entries and idle rooms "
        "evicted from a full zone.\n"
        "# TYPE platform_chat_evicted_total counter\n"
        "# HELP platform_chat_persist_total Batches written to PostgreSQL "
        "and the messages in them, stored or failed (dropped after the "
        "retries), batches sent again.\n"
        "# TYPE platform_chat_persist_total counter\n"
        "# HELP platform_chat_engagement_total Engagement batches, items "
        "stored or failed.\n"
        "# TYPE platform_chat_engagement_total counter\n"
        "# HELP platform_chat_help_total Help requests stored.\n"
        "# TYPE platform_chat_help_total counter\n"
        "# HELP platform_chat_relay_total Messages heard from PostgreSQL "
        "(relay=): appended to the ring, already there (another worker "
        "heard them first), or too long to be notified.\n"
        "# TYPE platform_chat_relay_total counter\n");

    for (i = 0; i < cmcf->zones.nelts; i++) {
        z = zones[i];
        sh = z->sh;

        if (sh == NULL) {
            continue;
        }

        p = ngx_slprintf(p, last,
            "platform_chat_rooms{zone=\"%V\"} %uA\n"
            "platform_chat_connections{zone=\"%V\"} %uA\n"
            "platform_chat_messages_total{zone=\"%V\",result=\"published\"}"
            " %uA\n"
            "platform_chat_messages_total{zone=\"%V\",result=\"delivered\"}"
            " %uA\n"
            "platform_chat_messages_total{zone=\"%V\",result=\"dropped\"}"
            " %uA\n"
            "platform_chat_messages_total{zone=\"%V\","
            "result=\"rate_limited\"} %uA\n"
            "platform_chat_messages_total{zone=\"%V\",result=\"lagged\"}"
            " %uA\n"
            "platform_chat_evicted_total{zone=\"%V\",what=\"entries\"} %uA\n"
            "platform_chat_evicted_total{zone=\"%V\",what=\"rooms\"} %uA\n"
            "platform_chat_persist_total{zone=\"%V\",what=\"batches\"} %uA\n"
            "platform_chat_persist_total{zone=\"%V\",what=\"stored\"} %uA\n"
            "platform_chat_persist_total{zone=\"%V\",what=\"failed\"} %uA\n"
            "platform_chat_persist_total{zone=\"%V\",what=\"retries\"} %uA\n"
            "platform_chat_engagement_total{zone=\"%V\",what=\"batches\"}"
            " %uA\n"
            "platform_chat_engagement_total{zone=\"%V\",what=\"stored\"}"
            " %uA\n"
            "platform_chat_engagement_total{zone=\"%V\",what=\"failed\"}"
            " %uA\n"
            "platform_chat_help_total{zone=\"%V\"} %uA\n",
            &z->name, sh->rooms, &z->name, sh->connections,
            &z->name, sh->published, &z->name, sh->delivered,
            &z->name, sh->dropped, &z->name, sh->rate_limited,
            &z->name, sh->lagged,
            &z->name, sh->evicted_entries, &z->name, sh->evicted_rooms,
            &z->name, sh->batches, &z->name, sh->persisted,
            &z->name, sh->persist_failed, &z->name, sh->persist_retries,
            &z->name, sh->engagement_batches,
            &z->name, sh->engagement_stored,
            &z->name, sh->engagement_failed, &z->name, sh->help);

        if (z->relay.len) {
            p = ngx_slprintf(p, last,
                "platform_chat_relay_total{zone=\"%V\",result=\"relayed\"}"
                " %uA\n"
                "platform_chat_relay_total{zone=\"%V\","
                "result=\"duplicate\"} %uA\n"
                "platform_chat_relay_total{zone=\"%V\",result=\"skipped\"}"
                " %uA\n",
                &z->name, sh->relayed, &z->name, sh->relay_duplicates,
                &z->name, sh->relay_skipped);
        }
    }

    return p;
}


/* configuration and processes */

static ngx_int_t
ngx_platform_chat_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_platform_chat_zone_t  *ozone = data;

    size_t                     len;
    ngx_platform_chat_zone_t  *zone;

    zone = shm_zone->data;
    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ozone) {
        zone->sh = ozone->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_platform_chat_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(zone->sh, sizeof(ngx_platform_chat_shctx_t));

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_platform_chat_rbtree_insert_value);
    ngx_queue_init(&zone->sh->lru);
    ngx_rbtree_init(&zone->sh->users, &zone->sh->users_sentinel,
                    ngx_platform_chat_user_insert_value);

    len = sizeof(" in platform_chat_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in platform_chat_zone \"%V\"%Z",
                &shm_zone->shm.name);

    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


/* the master, before the fork: an eventfd per worker */

static ngx_int_t
ngx_platform_chat_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_core_conf_t                *ccf;
    ngx_pool_cleanup_t             *cln;
    ngx_platform_chat_main_conf_t  *cmcf;

    if (ngx_test_config || ngx_process == NGX_PROCESS_SIGNALLER) {
        return NGX_OK;
    }

    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module)
        == NULL)
    {
        return NGX_OK;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_platform_chat_module);

    if (cmcf == NULL || cmcf->zones.nelts == 0) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    cmcf->nfds = ccf->master ? ccf->worker_processes : 1;
    cmcf->fds = ngx_palloc(cycle->pool, cmcf->nfds * sizeof(ngx_fd_t));
    if (cmcf->fds == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < cmcf->nfds; i++) {
        cmcf->fds[i] = NGX_INVALID_FILE;
    }

    cln->handler = ngx_platform_chat_close_fds;
    cln->data = cmcf;

#if (NGX_LINUX)
    for (i = 0; i < cmcf->nfds; i++) {
        cmcf->fds[i] = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);

        if (cmcf->fds[i] == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "eventfd() for the chat failed");
            cmcf->fds[i] = NGX_INVALID_FILE;
            return NGX_ERROR;
        }
    }
#else
    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                  "platform_chat_zone needs Linux (eventfd)");
    return NGX_ERROR;
#endif

    return NGX_OK;
}


static void
ngx_platform_chat_close_fds(void *data)
{
    ngx_platform_chat_main_conf_t  *cmcf = data;

    ngx_uint_t  i;

    for (i = 0; i < cmcf->nfds; i++) {
        if (cmcf->fds[i] != NGX_INVALID_FILE) {
            (void) close(cmcf->fds[i]);
            cmcf->fds[i] = NGX_INVALID_FILE;
        }
    }
}


static ngx_int_t
ngx_platform_chat_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_connection_t               *c;
    ngx_platform_chat_zone_t      **zones, *zone;
    ngx_platform_chat_main_conf_t  *cmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module)
        == NULL)
    {
        return NGX_OK;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_platform_chat_module);

    if (cmcf == NULL || cmcf->zones.nelts == 0 || cmcf->fds == NULL) {
        return NGX_OK;
    }

    cmcf->log = cycle->log;
    cmcf->notify.handler = ngx_platform_chat_notify_handler;
    cmcf->notify.data = cmcf;
    cmcf->notify.log = cycle->log;

    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        zone = zones[i];

        ngx_rbtree_init(&zone->local, &zone->local_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_queue_init(&zone->locals);

        if (ngx_array_init(&zone->pieces, cycle->pool, 64,
                           sizeof(ngx_platform_chat_piece_t))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        zone->messages_batch.zone = zone;
        zone->messages_batch.statement = zone->store;

        if (zone->relay.len) {
            zone->messages_batch.statement = zone->relay_store;
            zone->messages_batch.relay = 1;
            randombytes_buf(&zone->relay_origin, sizeof(uint64_t));
        }
        zone->messages_batch.flush_ev.handler =
                                           ngx_platform_chat_flush_handler;
        zone->messages_batch.flush_ev.data = &zone->messages_batch;
        zone->messages_batch.flush_ev.log = cycle->log;

        zone->engagement.zone = zone;
        zone->engagement.statement = zone->engage;
        zone->engagement.engagement = 1;
        zone->engagement.flush_ev.handler = ngx_platform_chat_flush_handler;
        zone->engagement.flush_ev.data = &zone->engagement;
        zone->engagement.flush_ev.log = cycle->log;

        zone->presence_ev.handler = ngx_platform_chat_presence_handler_ev;
        zone->presence_ev.data = zone;
        zone->presence_ev.log = cycle->log;
        zone->presence_ev.cancelable = 1;

        if (cmcf->heartbeat) {
            zone->beat_ev.handler = ngx_platform_chat_beat_handler;
            zone->beat_ev.data = zone;
            zone->beat_ev.log = cycle->log;
            zone->beat_ev.cancelable = 1;
            ngx_add_timer(&zone->beat_ev, cmcf->heartbeat);
        }
    }

    cmcf->started = ngx_time();

    /* our eventfd, read; the others' only written */

    if (ngx_worker >= cmcf->nfds) {
        return NGX_OK;
    }

    for (i = 0; i < cmcf->nfds; i++) {
        if (i != ngx_worker) {
            continue;
        }

        c = ngx_get_connection(cmcf->fds[i], cycle->log);
        if (c == NULL) {
            return NGX_ERROR;
        }

        c->data = cmcf;
        c->read->handler = ngx_platform_chat_wake_handler;
        c->read->log = cycle->log;
        c->write->log = cycle->log;
        c->log = cycle->log;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            ngx_free_connection(c);
            return NGX_ERROR;
        }

        cmcf->wake = c;
    }

    return NGX_OK;
}


static void
ngx_platform_chat_exit_process(ngx_cycle_t *cycle)
{
    ngx_platform_chat_main_conf_t  *cmcf;

    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module)
        == NULL)
    {
        return;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_platform_chat_module);

    if (cmcf && cmcf->wake) {
        ngx_close_connection(cmcf->wake);
        cmcf->wake = NULL;
    }
}


static ngx_int_t
ngx_platform_chat_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_platform_main_conf_t       *pmcf;
    ngx_platform_chat_zone_t      **zones, *zone;
    ngx_platform_pg_upstream_t    **upp;
    ngx_platform_chat_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_chat_module);
    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_module);

    if (cmcf->heartbeat == NGX_CONF_UNSET_MSEC) {
        cmcf->heartbeat = 60000;
    }

    if (cmcf->presence_notices == NGX_CONF_UNSET) {
        cmcf->presence_notices = 100;
    }

    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        zone = zones[i];

        if (zone->pg_name.len) {
            zone->upstream = ngx_platform_pg_upstream_find(cf,
                                                           &zone->pg_name);
        } else if (pmcf->upstreams.nelts) {
            upp = pmcf->upstreams.elts;
            zone->upstream = upp[0];
        }

        if (zone->upstream == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "platform_chat_zone \"%V\": no platform_pg "
                               "block%s%V", &zone->name,
                               zone->pg_name.len ? " " : "",
                               &zone->pg_name);
            return NGX_ERROR;
        }

        if (zone->relay.len
            && ngx_platform_pg_listen(cf, zone->upstream, &zone->relay,
                                      ngx_platform_chat_relay_notify,
                                      ngx_platform_chat_relay_listening,
                                      zone)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void *
ngx_platform_chat_create_main_conf(ngx_conf_t *cf)
{
    ngx_platform_chat_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_chat_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&cmcf->zones, cf->pool, 1,
                       sizeof(ngx_platform_chat_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    cmcf->heartbeat = NGX_CONF_UNSET_MSEC;
    cmcf->presence_notices = NGX_CONF_UNSET;

    return cmcf;
}


static void *
ngx_platform_chat_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_chat_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_chat_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->chat = NULL;
     */

    conf->rate = NGX_CONF_UNSET_UINT;
    conf->burst = NGX_CONF_UNSET_UINT;
    conf->max_text = NGX_CONF_UNSET_SIZE;
    conf->history_size = NGX_CONF_UNSET_UINT;
    conf->user_index = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_platform_chat_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_chat_loc_conf_t *prev = parent;
    ngx_platform_chat_loc_conf_t *conf = child;

    ngx_str_t  name = ngx_string("platform_user");

    ngx_conf_merge_uint_value(conf->rate, prev->rate, 5000);
    ngx_conf_merge_uint_value(conf->burst, prev->burst, 10000);
    ngx_conf_merge_size_value(conf->max_text, prev->max_text, 2000);
    ngx_conf_merge_uint_value(conf->history_size, prev->history_size, 20);

    if (conf->max_text > 8000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_chat_max_text: at most 8000");
        return NGX_CONF_ERROR;
    }

    if (conf->history_size > 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_chat_history: at most 100");
        return NGX_CONF_ERROR;
    }

    if (conf->chat) {
        conf->user_index = ngx_http_get_variable_index(cf, &name);
        if (conf->user_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * platform_chat_zone NAME SIZE [pg=NAME] [messages=N] [room_size=SIZE]
 *                    [flush=TIME] [batch=N];
 */

static char *
ngx_platform_chat_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_chat_main_conf_t *cmcf = conf;

    ssize_t                     size;
    ngx_str_t                  *value, s;
    ngx_int_t                   n;
    ngx_uint_t                  i;
    ngx_platform_chat_zone_t   *zone, **zp;

    value = cf->args->elts;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_platform_chat_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];
    zone->cmcf = cmcf;
    zone->messages = 100;
    zone->room_size = 64 * 1024;
    zone->flush = 20;
    zone->batch = 100;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_chat_zone \"%V\": invalid size \"%V\" "
                           "(at least %uz)", &value[1], &value[2],
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "pg=", 3) == 0) {
            zone->pg_name.data = value[i].data + 3;
            zone->pg_name.len = value[i].len - 3;
            continue;
        }

        if (ngx_strncmp(value[i].data, "messages=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n < 2 || n > 10000) {
                goto invalid;
            }
            zone->messages = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "room_size=", 10) == 0) {
            s.data = value[i].data + 10;
            s.len = value[i].len - 10;
            n = ngx_parse_size(&s);
            if (n < 1024) {
                goto invalid;
            }
            zone->room_size = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "flush=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;
            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n < 1) {
                goto invalid;
            }
            zone->flush = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "relay=", 6) == 0) {
            zone->relay.len = value[i].len - 6;
            zone->relay.data = ngx_pnalloc(cf->pool, zone->relay.len + 1);
            if (zone->relay.data == NULL) {
                return NGX_CONF_ERROR;
            }

            *ngx_cpymem(zone->relay.data, value[i].data + 6,
                        zone->relay.len) = '\0';
            continue;
        }

        if (ngx_strncmp(value[i].data, "batch=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n < 1 || n > 10000) {
                goto invalid;
            }
            zone->batch = n;
            continue;
        }

        goto invalid;
    }

    zone->shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                           &ngx_platform_chat_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone->init = ngx_platform_chat_init_zone;
    zone->shm_zone->data = zone;

    n = ngx_platform_statement_add(cf, &ngx_platform_chat_store_sql);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    zone->store = n;

    if (zone->relay.len) {
        n = ngx_platform_statement_add(cf, &ngx_platform_chat_relay_sql);
        if (n == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        zone->relay_store = n;
    }

    n = ngx_platform_statement_add(cf, &ngx_platform_chat_engage_sql);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    zone->engage = n;

    zp = ngx_array_push(&cmcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "platform_chat_zone: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * platform_chat event=$1 [zone=NAME];
 * platform_chat_presence event=$1 [zone=NAME];
 */

static char *
ngx_platform_chat(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_chat_loc_conf_t *clcf = conf;

    ngx_int_t                           n;
    ngx_str_t                          *value, name;
    ngx_uint_t                          i;
    ngx_http_core_loc_conf_t           *hclcf;
    ngx_platform_chat_zone_t          **zones;
    ngx_http_compile_complex_value_t    ccv;
    ngx_platform_chat_main_conf_t      *cmcf;
    ngx_platform_chat_loc_conf_main_t  *chat;

    if (clcf->chat) {
        return "is duplicate";
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_chat_module);

    chat = ngx_pcalloc(cf->pool, sizeof(ngx_platform_chat_loc_conf_main_t));
    if (chat == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    ngx_str_null(&name);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "event=", 6) == 0) {
            value[i].data += 6;
            value[i].len -= 6;

            chat->event = ngx_palloc(cf->pool,
                                     sizeof(ngx_http_complex_value_t));
            if (chat->event == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &value[i];
            ccv.complex_value = chat->event;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "request=", 8) == 0
            && cmd->offset == 2)
        {
            value[i].data += 8;
            value[i].len -= 8;

            chat->request = ngx_palloc(cf->pool,
                                       sizeof(ngx_http_complex_value_t));
            if (chat->request == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &value[i];
            ccv.complex_value = chat->request;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (chat->event == NULL) {
        return "needs event=";
    }

    if (cmd->offset == 2 && chat->request == NULL) {
        return "needs request=";
    }

    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        if (name.len == 0
            || (zones[i]->name.len == name.len
                && ngx_strncmp(zones[i]->name.data, name.data, name.len)
                   == 0))
        {
            chat->zone = zones[i];
            break;
        }
    }

    if (chat->zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no platform_chat_zone%s%V (it must come before)",
                           name.len ? " " : "", &name);
        return NGX_CONF_ERROR;
    }

    n = ngx_platform_statement_add(cf, &ngx_platform_chat_join_sql);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    chat->join = n;

    n = ngx_platform_statement_add(cf, &ngx_platform_chat_history_sql);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    chat->history = n;

    n = ngx_platform_statement_add(cf, &ngx_platform_chat_help_sql);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    chat->help = n;

    n = ngx_platform_statement_add(cf, &ngx_platform_chat_help_clear_sql);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    chat->help_clear = n;
    chat->presence = cmd->offset;
    clcf->chat = chat;

    hclcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (cmd->offset == 2) {
        hclcf->handler = ngx_platform_chat_clear_handler;
        return NGX_CONF_OK;
    }

    if (cmd->offset) {
        hclcf->handler = ngx_platform_chat_presence_handler;
        return NGX_CONF_OK;
    }

    hclcf->handler = ngx_platform_chat_handler;

    if (ngx_platform_ws_enable(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* platform_chat_rate 5r/s [burst=10]; "off" */

static char *
ngx_platform_chat_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_chat_loc_conf_t *clcf = conf;

    u_char     *p;
    size_t      len;
    ngx_int_t   rate, scale, burst;
    ngx_str_t  *value;

    if (clcf->rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        clcf->rate = 0;
        clcf->burst = 0;
        return NGX_CONF_OK;
    }

    len = value[1].len;
    p = value[1].data + len - 3;
    scale = 1;

    if (len > 3 && ngx_strncmp(p, "r/s", 3) == 0) {
        len -= 3;

    } else if (len > 3 && ngx_strncmp(p, "r/m", 3) == 0) {
        scale = 60;
        len -= 3;

    } else {
        goto invalid;
    }

    rate = ngx_atoi(value[1].data, len);
    if (rate <= 0) {
        goto invalid;
    }

    burst = 0;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "burst=", 6) != 0) {
            goto invalid;
        }

        burst = ngx_atoi(value[2].data + 6, value[2].len - 6);
        if (burst < 0) {
            goto invalid;
        }
    }

    clcf->rate = rate * 1000 / scale;
    clcf->burst = burst * 1000;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "platform_chat_rate: invalid value \"%V\"",
                       &value[cf->args->nelts - 1]);
    return NGX_CONF_ERROR;
}


/* platform_chat_heartbeat 60s | off; */

static char *
ngx_platform_chat_heartbeat(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_chat_main_conf_t *cmcf = conf;

    ngx_str_t  *value;
    ngx_msec_t  ms;

    if (cmcf->heartbeat != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        cmcf->heartbeat = 0;
        return NGX_CONF_OK;
    }

    ms = ngx_parse_time(&value[1], 0);

    if (ms == (ngx_msec_t) NGX_ERROR || ms < 1000 || ms > 3600000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_chat_heartbeat: from 1s to 1h, or off");
        return NGX_CONF_ERROR;
    }

    cmcf->heartbeat = ms;

    return NGX_CONF_OK;
}
