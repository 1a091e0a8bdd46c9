
/*
 * The jobs runner.
 *
 * In the worker processes chosen by platform_jobs_workers, a timer claims
 * due jobs from PostgreSQL through the pool (jobs.claim: FOR UPDATE SKIP
 * LOCKED, so several workers and hosts share the queue), runs them and
 * records each outcome (jobs.finish):
 *
 *   mail      SMTP to the configured relay with our own client on nginx
 *             events (ngx_platform_smtp.c): MAIL FROM, RCPT TO, the
 *             message rendered by SQL;
 *   webhook   an HTTP(S) POST with libcurl, body and signature from SQL;
 *   call      an HTTP(S) request with libcurl to a service of nginx.conf
 *             (platform_jobs_service: base URL, bearer key, headers), the
 *             method, path, headers and body from SQL; the answer, kept up
 *             to platform_jobs_response_max_size, is recorded by
 *             jobs.finish_call(), which hands it to the job's callback;
 *   sql       jobs.run_sql() through the pool (it records the outcome in
 *             the same transaction).
 *
 * libcurl is driven by its multi-socket API on nginx events: its sockets
 * are wrapped with ngx_get_connection() and registered level-triggered
 * (CURLMOPT_SOCKETFUNCTION), its timeouts are an nginx timer
 * (CURLMOPT_TIMERFUNCTION).  libcurl's threaded resolver is never used: a
 * webhook URL that names a host needs its address from the database, a
 * service's host is resolved when the configuration is read, and either
 * is handed to libcurl with CURLOPT_RESOLVE.  Mail does not go
 * through libcurl, whose SMTP code waits for some replies outside the
 * event loop; the relay's address is numeric (checked at configuration
 * time).
 *
 * The last jobs.stats() and counters of outcomes by kind are kept in a
 * small shared zone for platform_status (ngx_platform_jobs_status()).
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"
#include "ngx_platform_smtp.h"
#include <curl/curl.h>
#include <sodium.h>
#include <arpa/inet.h>


#define NGX_PLATFORM_JOBS_MAIL          0
#define NGX_PLATFORM_JOBS_WEBHOOK       1
#define NGX_PLATFORM_JOBS_SQL           2
#define NGX_PLATFORM_JOBS_CALL          3
#define NGX_PLATFORM_JOBS_KINDS         4

/* a job's life in this worker */
#define NGX_PLATFORM_JOBS_RUNNING       0     /* transfer or run_sql */
#define NGX_PLATFORM_JOBS_RECORDING     1     /* jobs.finish in flight */
#define NGX_PLATFORM_JOBS_UNRECORDED    2     /* to be recorded again */

/* columns of the claim statement */
#define NGX_PLATFORM_JOBS_COL_ID        0
#define NGX_PLATFORM_JOBS_COL_KIND      1
#define NGX_PLATFORM_JOBS_COL_ATTEMPT   2
#define NGX_PLATFORM_JOBS_COL_FROM      3
#define NGX_PLATFORM_JOBS_COL_RCPT      4
#define NGX_PLATFORM_JOBS_COL_MESSAGE   5
#define NGX_PLATFORM_JOBS_COL_URL       6
#define NGX_PLATFORM_JOBS_COL_HEADERS   7
#define NGX_PLATFORM_JOBS_COL_BODY      8
#define NGX_PLATFORM_JOBS_COL_RESOLVE   9
#define NGX_PLATFORM_JOBS_COL_FUNCTION  10
#define NGX_PLATFORM_JOBS_COL_SERVICE   11
#define NGX_PLATFORM_JOBS_COL_METHOD    12
#define NGX_PLATFORM_JOBS_COLS          13


typedef struct ngx_platform_jobs_runner_s  ngx_platform_jobs_runner_t;


/* in the shared zone: written by the runner workers, read by the status */
typedef struct {
    ngx_atomic_t                due;
    ngx_atomic_t                running;
    ngx_atomic_t                retrying;
    ngx_atomic_t                dead;
    ngx_atomic_t                oldest_ms;
    ngx_atomic_t                polled;       /* ngx_time() of jobs.stats() */
    ngx_atomic_t                completed[NGX_PLATFORM_JOBS_KINDS];
    ngx_atomic_t                failed[NGX_PLATFORM_JOBS_KINDS];
} ngx_platform_jobs_shctx_t;


/* platform_jobs_service: where call jobs go */
typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   url;          /* base, no final "/" */
    char                       *resolve;      /* host:port:addr,... */
    ngx_array_t                 headers;      /* char *, "Name: value" */
    unsigned                    bearer:1;
} ngx_platform_jobs_service_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_str_t                   pg;
    ngx_platform_pg_upstream_t *upstream;

    ngx_msec_t                  interval;
    ngx_uint_t                  batch;
    time_t                      lease;
    ngx_msec_t                  timeout;
    ngx_uint_t                  workers;

    ngx_str_t                   smtp_url;
    ngx_str_t                   smtp_from;
    ngx_uint_t                  smtp_starttls;
    ngx_str_t                   smtp_user;
    ngx_str_t                   smtp_password;
    ngx_str_t                   trusted_certificate;
    size_t                      response_max_size;

    ngx_array_t                *services;     /* ngx_platform_jobs_service_t */

    ngx_platform_smtp_conf_t   *smtp;

    ngx_uint_t                  claim_statement;
    ngx_uint_t                  finish_statement;
    ngx_uint_t                  finish_call_statement;
    ngx_uint_t                  run_sql_statement;
    ngx_uint_t                  stats_statement;

    ngx_shm_zone_t             *shm_zone;
    ngx_platform_jobs_shctx_t  *sh;

    ngx_platform_jobs_runner_t *runner;       /* this worker's, or NULL */
} ngx_platform_jobs_main_conf_t;


struct ngx_platform_jobs_runner_s {
    ngx_platform_jobs_main_conf_t *jmcf;
    ngx_log_t                  *log;
    CURLM                      *multi;

    ngx_event_t                 poll;         /* claim cycle */
    ngx_event_t                 timer;        /* libcurl's timeout */

    ngx_queue_t                 jobs;
    ngx_uint_t                  njobs;
    ngx_uint_t                  ntransfers;

    ngx_platform_pg_query_t     claim;
    const char                 *claim_values[4];
    u_char                      claim_n[NGX_INT_T_LEN + 1];
    u_char                      claim_lease[NGX_TIME_T_LEN + 1];
    ngx_uint_t                  claimed;      /* asked for in this claim */

    ngx_platform_pg_query_t     stats;
    ngx_msec_t                  stats_at;

    unsigned                    claiming:1;
    unsigned                    polling_stats:1;
    unsigned                    more:1;       /* the last claim was full */
    unsigned                    failing:1;    /* claims fail: log once */
    unsigned                    exiting:1;
};


typedef struct {
    ngx_queue_t                 queue;
    ngx_platform_jobs_runner_t *runner;
    ngx_pool_t                 *pool;

    ngx_uint_t                  kind;
    ngx_uint_t                  state;
    u_char                     *id;           /* as the database sent them */
    u_char                     *attempt;
    time_t                      expires;      /* the lease */

    CURL                       *easy;         /* a webhook or a call */
    struct curl_slist          *headers;
    struct curl_slist          *resolve;
    u_char                     *data;         /* request body */
    size_t                      size;

    ngx_str_t                   response;     /* a call's answer */
    size_t                      response_size;  /* allocated */
    long                        status;       /* 0: no answer */
    u_char                      status_text[NGX_INT_T_LEN + 1];

    ngx_platform_smtp_t        *smtp;         /* a mail */

    unsigned                    ok:1;
    unsigned                    added:1;      /* to the multi handle */
    unsigned                    too_large:1;  /* the answer */
    unsigned                    answered:1;   /* for jobs.finish_call() */
    u_char                     *error;

    ngx_platform_pg_query_t     query;        /* run_sql or finish */
    const char                 *values[5];

    char                        errbuf[CURL_ERROR_SIZE];
} ngx_platform_jobs_job_t;


static void *ngx_platform_jobs_create_main_conf(ngx_conf_t *cf);
static char *ngx_platform_jobs_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_platform_jobs(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_jobs_smtp_auth(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_jobs_service(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_platform_jobs_service_url(ngx_conf_t *cf,
    ngx_platform_jobs_service_t *s, ngx_str_t *url);
static ngx_int_t ngx_platform_jobs_header_line(ngx_str_t *line);
static ngx_int_t ngx_platform_jobs_check_url(const char *url,
    const char *schemes, const char **err);
static ngx_int_t ngx_platform_jobs_statement(ngx_conf_t *cf, char *sql,
    ngx_uint_t *n);
static ngx_int_t ngx_platform_jobs_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_platform_jobs_init_process(ngx_cycle_t *cycle);
static void ngx_platform_jobs_exit_process(ngx_cycle_t *cycle);

static void ngx_platform_jobs_poll_handler(ngx_event_t *ev);
static void ngx_platform_jobs_wake(ngx_platform_jobs_runner_t *rt);
static void ngx_platform_jobs_claim(ngx_platform_jobs_runner_t *rt);
static void ngx_platform_jobs_claim_done(ngx_platform_pg_query_t *q);
static void ngx_platform_jobs_claim_failed(ngx_platform_jobs_runner_t *rt,
    const char *what, const char *reason);
static void ngx_platform_jobs_poll_stats(ngx_platform_jobs_runner_t *rt);
static void ngx_platform_jobs_stats_done(ngx_platform_pg_query_t *q);

static void ngx_platform_jobs_start(ngx_platform_jobs_runner_t *rt,
    PGresult *res, int row);
static u_char *ngx_platform_jobs_field(ngx_platform_jobs_job_t *job,
    PGresult *res, int row, int col);
static ngx_int_t ngx_platform_jobs_mail(ngx_platform_jobs_job_t *job,
    PGresult *res, int row);
static ngx_int_t ngx_platform_jobs_headers(ngx_platform_jobs_job_t *job,
    u_char *text);
static ngx_int_t ngx_platform_jobs_webhook(ngx_platform_jobs_job_t *job,
    PGresult *res, int row);
static ngx_int_t ngx_platform_jobs_call(ngx_platform_jobs_job_t *job,
    PGresult *res, int row);
static ngx_int_t ngx_platform_jobs_request(ngx_platform_jobs_job_t *job,
    u_char *url, u_char *method);
static ngx_int_t ngx_platform_jobs_list(struct curl_slist **list,
    u_char *text);
static void ngx_platform_jobs_mail_done(ngx_platform_smtp_t *s);
static void ngx_platform_jobs_run_sql(ngx_platform_jobs_job_t *job);
static void ngx_platform_jobs_run_sql_done(ngx_platform_pg_query_t *q);
static size_t ngx_platform_jobs_response(char *buf, size_t size, size_t n,
    void *data);

static int ngx_platform_jobs_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp);
static int ngx_platform_jobs_timer(CURLM *multi, long timeout_ms,
    void *userp);
static void ngx_platform_jobs_read_handler(ngx_event_t *ev);
static void ngx_platform_jobs_write_handler(ngx_event_t *ev);
static void ngx_platform_jobs_timer_handler(ngx_event_t *ev);
static void ngx_platform_jobs_action(ngx_platform_jobs_runner_t *rt,
    curl_socket_t s, int mask);
static void ngx_platform_jobs_transfers_done(ngx_platform_jobs_runner_t *rt);
static void ngx_platform_jobs_abandon(ngx_platform_jobs_runner_t *rt);

static void ngx_platform_jobs_ended(ngx_platform_jobs_job_t *job,
    long status, u_char *error);
static void ngx_platform_jobs_done(ngx_platform_jobs_job_t *job,
    ngx_uint_t ok, u_char *error);
static void ngx_platform_jobs_set_error(ngx_platform_jobs_job_t *job,
    u_char *error);
static void ngx_platform_jobs_record(ngx_platform_jobs_job_t *job);
static void ngx_platform_jobs_record_done(ngx_platform_pg_query_t *q);
static void ngx_platform_jobs_free(ngx_platform_jobs_job_t *job);


static ngx_conf_num_bounds_t  ngx_platform_jobs_batch_bounds = {
    ngx_conf_check_num_bounds, 1, 1000
};

static ngx_conf_num_bounds_t  ngx_platform_jobs_workers_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_MAX_PROCESSES
};


static ngx_conf_enum_t  ngx_platform_jobs_starttls[] = {
    { ngx_string("off"), NGX_PLATFORM_SMTP_STARTTLS_OFF },
    { ngx_string("on"), NGX_PLATFORM_SMTP_STARTTLS_ON },
    { ngx_string("required"), NGX_PLATFORM_SMTP_STARTTLS_REQ },
    { ngx_null_string, 0 }
};


static const char  *ngx_platform_jobs_kinds[] = {
    "mail", "webhook", "sql", "call"
};


static ngx_command_t  ngx_platform_jobs_commands[] = {

    { ngx_string("platform_jobs"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_platform_jobs,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_jobs_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, interval),
      NULL },

    { ngx_string("platform_jobs_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, batch),
      &ngx_platform_jobs_batch_bounds },

    { ngx_string("platform_jobs_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, lease),
      NULL },

    { ngx_string("platform_jobs_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, timeout),
      NULL },

    { ngx_string("platform_jobs_workers"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, workers),
      &ngx_platform_jobs_workers_bounds },

    { ngx_string("platform_smtp_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, smtp_url),
      NULL },

    { ngx_string("platform_smtp_from"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, smtp_from),
      NULL },

    { ngx_string("platform_smtp_starttls"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, smtp_starttls),
      &ngx_platform_jobs_starttls },

    { ngx_string("platform_smtp_auth"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_platform_jobs_smtp_auth,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_jobs_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, trusted_certificate),
      NULL },

    { ngx_string("platform_jobs_service"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_platform_jobs_service,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("platform_jobs_response_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_platform_jobs_main_conf_t, response_max_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_jobs_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_platform_jobs_create_main_conf,    /* create main configuration */
    ngx_platform_jobs_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_platform_jobs_module = {
    NGX_MODULE_V1,
    &ngx_platform_jobs_module_ctx,         /* module context */
    ngx_platform_jobs_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_platform_jobs_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_platform_jobs_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* configuration */


static void *
ngx_platform_jobs_create_main_conf(ngx_conf_t *cf)
{
    ngx_platform_jobs_main_conf_t  *jmcf;

    jmcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_jobs_main_conf_t));
    if (jmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     jmcf->pg = { 0, NULL };
     *     jmcf->upstream = NULL;
     *     jmcf->smtp_url = { 0, NULL };
     *     jmcf->smtp_from = { 0, NULL };
     *     jmcf->smtp_user = { 0, NULL };
     *     jmcf->smtp_password = { 0, NULL };
     *     jmcf->trusted_certificate = { 0, NULL };
     *     jmcf->services = NULL;
     *     jmcf->smtp = NULL;
     *     jmcf->shm_zone = NULL;
     *     jmcf->sh = NULL;
     *     jmcf->runner = NULL;
     */

    jmcf->enable = NGX_CONF_UNSET;
    jmcf->interval = NGX_CONF_UNSET_MSEC;
    jmcf->batch = NGX_CONF_UNSET_UINT;
    jmcf->lease = NGX_CONF_UNSET;
    jmcf->timeout = NGX_CONF_UNSET_MSEC;
    jmcf->workers = NGX_CONF_UNSET_UINT;
    jmcf->smtp_starttls = NGX_CONF_UNSET_UINT;
    jmcf->response_max_size = NGX_CONF_UNSET_SIZE;

    return jmcf;
}


static char *
ngx_platform_jobs_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_platform_jobs_main_conf_t *jmcf = conf;

    const char       *err;
    ngx_str_t         name = ngx_string("platform_jobs");
    ngx_file_info_t   fi;

    ngx_conf_init_value(jmcf->enable, 0);
    ngx_conf_init_msec_value(jmcf->interval, 1000);
    ngx_conf_init_uint_value(jmcf->batch, 10);
    ngx_conf_init_value(jmcf->lease, 60);
    ngx_conf_init_msec_value(jmcf->timeout, 30000);
    ngx_conf_init_uint_value(jmcf->workers, 1);
    ngx_conf_init_uint_value(jmcf->smtp_starttls,
                             NGX_PLATFORM_SMTP_STARTTLS_OFF);
    ngx_conf_init_size_value(jmcf->response_max_size, 1024 * 1024);

    if (jmcf->smtp_url.data == NULL) {
        ngx_str_set(&jmcf->smtp_url, "smtp://127.0.0.1:25");
    }

    if (jmcf->smtp_from.data == NULL) {
        ngx_str_set(&jmcf->smtp_from, "noreply@example.com");
    }

    if (!jmcf->enable) {
        return NGX_CONF_OK;
    }

    jmcf->upstream = ngx_platform_pg_upstream_find(cf, &jmcf->pg);

    if (jmcf->upstream == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_jobs: no platform_pg \"%V\"", &jmcf->pg);
        return NGX_CONF_ERROR;
    }

    if (jmcf->interval == 0 || jmcf->timeout == 0 || jmcf->lease <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_jobs_interval, platform_jobs_timeout "
                           "and platform_jobs_lease must not be zero");
        return NGX_CONF_ERROR;
    }

    /* a lease must outlast a transfer and the recording of its outcome */

    if ((ngx_msec_t) jmcf->lease * 1000 <= jmcf->timeout + 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_jobs_lease must be longer than "
                           "platform_jobs_timeout plus 1s");
        return NGX_CONF_ERROR;
    }

    if (ngx_platform_jobs_check_url((char *) jmcf->smtp_url.data,
                                    "smtp,smtps", &err)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid platform_smtp_url \"%V\": %s",
                           &jmcf->smtp_url, err);
        return NGX_CONF_ERROR;
    }

    if (jmcf->smtp_from.len == 0 || jmcf->smtp_from.len > 254
        || ngx_strlchr(jmcf->smtp_from.data,
                       jmcf->smtp_from.data + jmcf->smtp_from.len, '@')
           == NULL
        || ngx_strlchr(jmcf->smtp_from.data,
                       jmcf->smtp_from.data + jmcf->smtp_from.len, '<')
        || ngx_strlchr(jmcf->smtp_from.data,
                       jmcf->smtp_from.data + jmcf->smtp_from.len, '>')
        || ngx_strlchr(jmcf->smtp_from.data,
                       jmcf->smtp_from.data + jmcf->smtp_from.len, ' '))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid platform_smtp_from \"%V\": an address "
                           "such as noreply@example.com is expected",
                           &jmcf->smtp_from);
        return NGX_CONF_ERROR;
    }

    if (jmcf->trusted_certificate.data) {
        if (ngx_conf_full_name(cf->cycle, &jmcf->trusted_certificate, 1)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (ngx_file_info(jmcf->trusted_certificate.data, &fi)
            == NGX_FILE_ERROR)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               ngx_file_info_n " \"%V\" failed",
                               &jmcf->trusted_certificate);
            return NGX_CONF_ERROR;
        }
    }

    /* the relay's address, its TLS context */

    jmcf->smtp = ngx_platform_smtp_create_conf(cf, &jmcf->smtp_url,
                                               jmcf->smtp_starttls,
                                               &jmcf->smtp_user,
                                               &jmcf->smtp_password,
                                               &jmcf->trusted_certificate,
                                               jmcf->timeout);
    if (jmcf->smtp == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_platform_jobs_statement(cf,
            "SELECT id, kind, attempt, mail_from, rcpt_to, message, url, "
            "headers, body, resolve, sql_function, service, method "
            "FROM jobs.claim($1, $2::int, $3::int, $4)",
            &jmcf->claim_statement) != NGX_OK
        || ngx_platform_jobs_statement(cf,
            "SELECT jobs.finish($1::bigint, $2::boolean, $3, $4::int)",
            &jmcf->finish_statement) != NGX_OK
        || ngx_platform_jobs_statement(cf,
            "SELECT jobs.finish_call($1::bigint, $2::int, $3::int, $4, $5)",
            &jmcf->finish_call_statement) != NGX_OK
        || ngx_platform_jobs_statement(cf,
            "SELECT jobs.run_sql($1::bigint, $2::int)",
            &jmcf->run_sql_statement) != NGX_OK
        || ngx_platform_jobs_statement(cf,
            "SELECT due, running, retrying, dead, "
            "(oldest_due_age_seconds * 1000)::bigint FROM jobs.stats()",
            &jmcf->stats_statement) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    jmcf->shm_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                           &ngx_platform_jobs_module);
    if (jmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    jmcf->shm_zone->init = ngx_platform_jobs_init_zone;
    jmcf->shm_zone->data = jmcf;

    return NGX_CONF_OK;
}


static char *
ngx_platform_jobs(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_jobs_main_conf_t *jmcf = conf;

    ngx_str_t  *value;

    if (jmcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        jmcf->enable = 0;
        return NGX_CONF_OK;
    }

    jmcf->enable = 1;
    jmcf->pg = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_platform_jobs_smtp_auth(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_jobs_main_conf_t *jmcf = conf;

    ngx_str_t  *value;

    if (jmcf->smtp_user.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 256
        || ngx_strlchr(value[1].data, value[1].data + value[1].len, ':'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid user name \"%V\" in platform_smtp_auth",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    jmcf->smtp_user = value[1];

    if (ngx_platform_read_secret(cf, &value[2], &jmcf->smtp_password)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * A secret's file (a password, an API key, a webhook's signing secret):
 * one line of at most 1024 bytes, a final line break dropped; a relative
 * name is relative to the configuration's directory.  Never logged.
 */

ngx_int_t
ngx_platform_read_secret(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *secret)
{
    u_char           *buf, *p;
    size_t            size;
    ssize_t           n;
    ngx_int_t         rc;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", name);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", name);
        goto done;
    }

    size = ngx_file_size(&fi);

    if (size == 0 || size > 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%V\" must hold 1 to 1024 bytes",
                           name);
        goto done;
    }

    buf = ngx_pnalloc(cf->pool, size + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, buf, size, 0);

    if (n == NGX_ERROR) {
        goto done;
    }

    if ((size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           ngx_read_file_n " \"%V\" returned only "
                           "%z bytes instead of %uz", name, n, size);
        goto done;
    }

    while (size && (buf[size - 1] == LF || buf[size - 1] == CR)) {
        size--;
    }

    for (p = buf; p < buf + size; p++) {
        if (*p == '\0' || *p == CR || *p == LF) {
            break;
        }
    }

    if (size == 0 || p != buf + size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%V\" must hold one line", name);
        goto done;
    }

    buf[size] = '\0';

    secret->len = size;
    secret->data = buf;

    rc = NGX_OK;

done:

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", name);
    }

    return rc;
}


/*
 * platform_jobs_service NAME URL [bearer=FILE] [header="Name: value"]...
 * Where call jobs naming NAME go.
 */

static char *
ngx_platform_jobs_service(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_jobs_main_conf_t *jmcf = conf;

    char                         **h;
    u_char                        *p;
    ngx_str_t                     *value, file, key;
    ngx_uint_t                     i;
    ngx_platform_jobs_service_t   *s;

    value = cf->args->elts;

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
        {
            break;
        }
    }

    if (value[1].len == 0 || value[1].len > 32
        || p != value[1].data + value[1].len)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid service name \"%V\" in "
                           "platform_jobs_service: 1 to 32 characters a-z, "
                           "0-9 or _", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (jmcf->services == NULL) {
        jmcf->services = ngx_array_create(cf->pool, 2,
                                          sizeof(ngx_platform_jobs_service_t));
        if (jmcf->services == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    s = jmcf->services->elts;

    for (i = 0; i < jmcf->services->nelts; i++) {
        if (s[i].name.len == value[1].len
            && ngx_strncmp(s[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate platform_jobs_service \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    s = ngx_array_push(jmcf->services);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(s, sizeof(ngx_platform_jobs_service_t));
    s->name = value[1];

    if (ngx_array_init(&s->headers, cf->pool, 2, sizeof(char *)) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_platform_jobs_service_url(cf, s, &value[2]) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {

        h = ngx_array_push(&s->headers);
        if (h == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[i].data, "bearer=", 7) == 0) {
            if (s->bearer) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate bearer= in "
                                   "platform_jobs_service \"%V\"", &s->name);
                return NGX_CONF_ERROR;
            }

            file.data = value[i].data + 7;
            file.len = value[i].len - 7;

            if (ngx_platform_read_secret(cf, &file, &key) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            p = ngx_pnalloc(cf->pool, sizeof("Authorization: Bearer ")
                                      + key.len);
            if (p == NULL) {
                return NGX_CONF_ERROR;
            }

            *ngx_sprintf(p, "Authorization: Bearer %V", &key) = '\0';

            *h = (char *) p;
            s->bearer = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "header=", 7) == 0) {
            value[i].data += 7;
            value[i].len -= 7;

            if (ngx_platform_jobs_header_line(&value[i]) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid header \"%V\" in "
                                   "platform_jobs_service \"%V\": "
                                   "\"Name: value\" is expected",
                                   &value[i], &s->name);
                return NGX_CONF_ERROR;
            }

            /* the configuration's words end with '\0' */
            *h = (char *) value[i].data;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in "
                           "platform_jobs_service \"%V\"",
                           &value[i], &s->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * A service's base URL: http or https, no user, query or fragment.  A host
 * name is resolved now, as proxy_pass does for a static name, so that
 * workers never resolve: libcurl gets the addresses with CURLOPT_RESOLVE.
 */

static char *
ngx_platform_jobs_service_url(ngx_conf_t *cf, ngx_platform_jobs_service_t *s,
    ngx_str_t *url)
{
    char        *host, *port, *part;
    u_char      *p, *last;
    size_t       len;
    CURLU       *u;
    ngx_int_t    rc;
    ngx_url_t    addr;
    ngx_uint_t   i;
    const char  *err;
    CURLUcode    uc;

    rc = ngx_platform_jobs_check_url((char *) url->data, "http,https", &err);

    if (rc == NGX_ERROR) {
        goto invalid;
    }

    u = curl_url();
    if (u == NULL) {
        return NGX_CONF_ERROR;
    }

    host = NULL;
    port = NULL;
    part = NULL;
    err = NULL;

    if (curl_url_set(u, CURLUPART_URL, (char *) url->data, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)
           != CURLUE_OK)
    {
        err = "not a URL";

    } else if ((uc = curl_url_get(u, CURLUPART_USER, &part, 0))
               != CURLUE_NO_USER)
    {
        err = (uc == CURLUE_OK) ? "a user name is not allowed: use bearer= "
                                  "or header=" : "not a URL";

    } else if (curl_url_get(u, CURLUPART_QUERY, &part, 0) != CURLUE_NO_QUERY
               || curl_url_get(u, CURLUPART_FRAGMENT, &part, 0)
                  != CURLUE_NO_FRAGMENT)
    {
        err = "a query or fragment is not allowed";
    }

    curl_free(part);
    curl_url_cleanup(u);

    if (err == NULL && rc == NGX_DECLINED) {

        /* a host name */

        ngx_memzero(&addr, sizeof(ngx_url_t));
        addr.host.data = (u_char *) host;
        addr.host.len = ngx_strlen(host);
        addr.port = (in_port_t) ngx_atoi((u_char *) port, ngx_strlen(port));

        if (ngx_inet_resolve_host(cf->pool, &addr) != NGX_OK) {
            err = addr.err ? addr.err : "host not found";

        } else {
            len = addr.host.len + ngx_strlen(port) + 2
                  + addr.naddrs * (NGX_SOCKADDR_STRLEN + 3);

            p = ngx_pnalloc(cf->pool, len);
            if (p == NULL) {
                err = "out of memory";

            } else {
                s->resolve = (char *) p;
                last = p + len;

                p = ngx_sprintf(p, "%s:%s:", host, port);

                for (i = 0; i < addr.naddrs; i++) {
                    if (i) {
                        *p++ = ',';
                    }

                    if (addr.addrs[i].sockaddr->sa_family == AF_INET6) {
                        *p++ = '[';
                    }

                    p += ngx_sock_ntop(addr.addrs[i].sockaddr,
                                       addr.addrs[i].socklen, p,
                                       last - p - 3, 0);

                    if (addr.addrs[i].sockaddr->sa_family == AF_INET6) {
                        *p++ = ']';
                    }
                }

                *p = '\0';
            }
        }
    }

    curl_free(host);
    curl_free(port);

    if (err) {
        goto invalid;
    }

    s->url = *url;

    while (s->url.len && s->url.data[s->url.len - 1] == '/') {
        s->url.len--;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid URL \"%V\" in platform_jobs_service \"%V\": "
                       "%s", url, &s->name, err);
    return NGX_CONF_ERROR;
}


/* "Name: value": a token, a colon, printable text */

static ngx_int_t
ngx_platform_jobs_header_line(ngx_str_t *line)
{
    u_char  *p, *last;

    p = line->data;
    last = p + line->len;

    while (p < last && *p > ' ' && *p < 0x7f && *p != ':') {
        p++;
    }

    if (p == line->data || p == last || *p != ':') {
        return NGX_ERROR;
    }

    for (p++; p < last; p++) {
        if ((*p < ' ' && *p != '\t') || *p == 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A URL with one of the schemes (a comma list) whose host is a numeric
 * address: workers never resolve names (libcurl would in a thread of its
 * own).  Parsing only.
 * NGX_DECLINED: the host is a name.
 */

static ngx_int_t
ngx_platform_jobs_check_url(const char *url, const char *schemes,
    const char **err)
{
    char             *scheme, *host, *h, *p;
    size_t            len;
    CURLU            *u;
    ngx_int_t         rc;
    struct in_addr    addr;
    struct in6_addr   addr6;

    u = curl_url();
    if (u == NULL) {
        *err = "out of memory";
        return NGX_ERROR;
    }

    scheme = NULL;
    host = NULL;
    rc = NGX_ERROR;

    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
    {
        *err = "not a URL";
        goto done;
    }

    len = ngx_strlen(scheme);
    p = ngx_strstr(schemes, scheme);

    if (p == NULL
        || (p != schemes && p[-1] != ',')
        || (p[len] != ',' && p[len] != '\0'))
    {
        *err = "unsupported scheme";
        goto done;
    }

    h = host;
    len = ngx_strlen(h);

    if (len > 2 && h[0] == '[' && h[len - 1] == ']') {
        h[len - 1] = '\0';
        h++;

        if (inet_pton(AF_INET6, h, &addr6) == 1) {
            rc = NGX_OK;
        }

    } else if (inet_pton(AF_INET, h, &addr) == 1) {
        rc = NGX_OK;
    }

    if (rc != NGX_OK) {
        *err = "the host is a name; use a numeric address so that workers "
               "never resolve names";
        rc = NGX_DECLINED;
    }

done:

    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);

    return rc;
}


static ngx_int_t
ngx_platform_jobs_statement(ngx_conf_t *cf, char *sql, ngx_uint_t *n)
{
    ngx_int_t  rc;
    ngx_str_t  s;

    s.data = (u_char *) sql;
    s.len = ngx_strlen(sql);

    rc = ngx_platform_statement_add(cf, &s);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    *n = rc;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_jobs_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_platform_jobs_main_conf_t *ojmcf = data;

    ngx_slab_pool_t                *shpool;
    ngx_platform_jobs_main_conf_t  *jmcf;

    jmcf = zone->data;

    /* counters survive a reload */

    if (ojmcf) {
        jmcf->sh = ojmcf->sh;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        jmcf->sh = shpool->data;
        return NGX_OK;
    }

    jmcf->sh = ngx_slab_calloc(shpool, sizeof(ngx_platform_jobs_shctx_t));
    if (jmcf->sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = jmcf->sh;

    return NGX_OK;
}


/* the worker */


static ngx_int_t
ngx_platform_jobs_init_process(ngx_cycle_t *cycle)
{
    u_char                         *p;
    size_t                          len;
    CURLM                          *multi;
    ngx_platform_jobs_runner_t     *rt;
    ngx_platform_jobs_main_conf_t  *jmcf;

    jmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_platform_jobs_module);

    if (jmcf == NULL || !jmcf->enable || ngx_worker >= jmcf->workers
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "platform_jobs: curl_global_init() failed");
        return NGX_ERROR;
    }

    rt = ngx_pcalloc(cycle->pool, sizeof(ngx_platform_jobs_runner_t));
    if (rt == NULL) {
        curl_global_cleanup();
        return NGX_ERROR;
    }

    multi = curl_multi_init();
    if (multi == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "platform_jobs: curl_multi_init() failed");
        curl_global_cleanup();
        return NGX_ERROR;
    }

    rt->jmcf = jmcf;
    rt->log = cycle->log;
    rt->multi = multi;
    ngx_queue_init(&rt->jobs);

    (void) curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION,
                             ngx_platform_jobs_socket);
    (void) curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, rt);
    (void) curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION,
                             ngx_platform_jobs_timer);
    (void) curl_multi_setopt(multi, CURLMOPT_TIMERDATA, rt);
    (void) curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS,
                             (long) jmcf->batch);

    rt->poll.handler = ngx_platform_jobs_poll_handler;
    rt->poll.data = rt;
    rt->poll.log = cycle->log;
    rt->poll.cancelable = 1;

    rt->timer.handler = ngx_platform_jobs_timer_handler;
    rt->timer.data = rt;
    rt->timer.log = cycle->log;
    rt->timer.cancelable = 1;

    /* the claim's fixed parameters: worker, n, lease, sender */

    len = cycle->hostname.len + 1 + NGX_INT_T_LEN + 1;

    p = ngx_pnalloc(cycle->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *ngx_snprintf(p, len - 1, "%V/%P", &cycle->hostname, ngx_pid) = '\0';

    *ngx_sprintf(rt->claim_lease, "%T", jmcf->lease) = '\0';

    rt->claim_values[0] = (char *) p;
    rt->claim_values[1] = (char *) rt->claim_n;
    rt->claim_values[2] = (char *) rt->claim_lease;
    rt->claim_values[3] = (char *) jmcf->smtp_from.data;

    rt->claim.upstream = jmcf->upstream;
    rt->claim.statement = jmcf->claim_statement;
    rt->claim.nparams = 4;
    rt->claim.values = rt->claim_values;
    rt->claim.handler = ngx_platform_jobs_claim_done;
    rt->claim.data = rt;
    rt->claim.log = cycle->log;

    rt->stats.upstream = jmcf->upstream;
    rt->stats.statement = jmcf->stats_statement;
    rt->stats.nparams = 0;
    rt->stats.handler = ngx_platform_jobs_stats_done;
    rt->stats.data = rt;
    rt->stats.log = cycle->log;

    jmcf->runner = rt;

    /* the pool is connecting now: the first claim a moment later */
    ngx_add_timer(&rt->poll, ngx_min(jmcf->interval, 200));

    return NGX_OK;
}


static void
ngx_platform_jobs_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    ngx_connection_t               *c;
    ngx_platform_jobs_job_t        *job;
    ngx_platform_jobs_runner_t     *rt;
    ngx_platform_jobs_main_conf_t  *jmcf;

    jmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_platform_jobs_module);

    if (jmcf == NULL || jmcf->runner == NULL) {
        return;
    }

    rt = jmcf->runner;
    rt->exiting = 1;

    if (rt->poll.timer_set) {
        ngx_del_timer(&rt->poll);
    }

    /*
     * The pool has been stopped already (its module comes first): queries
     * it had sent are forgotten without their handlers; only those still
     * waiting in its queue must be taken out.
     */

    if (rt->claim.queued) {
        ngx_platform_pg_abort(&rt->claim);
    }

    if (rt->stats.queued) {
        ngx_platform_pg_abort(&rt->stats);
    }

    while (!ngx_queue_empty(&rt->jobs)) {
        q = ngx_queue_head(&rt->jobs);
        job = ngx_queue_data(q, ngx_platform_jobs_job_t, queue);

        if (job->query.queued) {
            ngx_platform_pg_abort(&job->query);
        }

        ngx_platform_jobs_free(job);
    }

    /* closes cached connections; sockets it watched are released */
    (void) curl_multi_cleanup(rt->multi);
    rt->multi = NULL;

    if (rt->timer.timer_set) {
        ngx_del_timer(&rt->timer);
    }

    c = cycle->connections;

    for (i = 0; i < cycle->connection_n; i++) {
        if (c[i].fd != (ngx_socket_t) -1
            && c[i].read
            && c[i].read->handler == ngx_platform_jobs_read_handler)
        {
            ngx_platform_socket_release(&c[i], 0);
        }
    }

    curl_global_cleanup();

    jmcf->runner = NULL;
}


/* the claim cycle */


static void
ngx_platform_jobs_poll_handler(ngx_event_t *ev)
{
    ngx_queue_t                 *q, *next;
    ngx_platform_jobs_job_t     *job;
    ngx_platform_jobs_runner_t  *rt;

    rt = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate || rt->exiting) {
        return;
    }

    ngx_add_timer(&rt->poll, rt->jmcf->interval);

    /* outcomes the database did not take yet */

    for (q = ngx_queue_head(&rt->jobs);
         q != ngx_queue_sentinel(&rt->jobs);
         q = next)
    {
        next = ngx_queue_next(q);
        job = ngx_queue_data(q, ngx_platform_jobs_job_t, queue);

        if (job->state != NGX_PLATFORM_JOBS_UNRECORDED) {
            continue;
        }

        if (ngx_time() >= job->expires) {
            ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                          "platform_jobs: job %s: outcome not recorded "
                          "within its lease, it will run again", job->id);
            ngx_platform_jobs_free(job);
            continue;
        }

        ngx_platform_jobs_record(job);
    }

    ngx_platform_jobs_claim(rt);

    if (ngx_worker == 0
        && ngx_current_msec - rt->stats_at >= rt->jmcf->interval)
    {
        ngx_platform_jobs_poll_stats(rt);
    }
}


/* claim again at once: a job finished and the queue may hold more */

static void
ngx_platform_jobs_wake(ngx_platform_jobs_runner_t *rt)
{
    if (!rt->more || rt->claiming || rt->exiting || ngx_exiting) {
        return;
    }

    if (rt->poll.timer_set) {
        ngx_del_timer(&rt->poll);
    }

    ngx_add_timer(&rt->poll, 1);
}


static void
ngx_platform_jobs_claim(ngx_platform_jobs_runner_t *rt)
{
    ngx_uint_t  n;

    if (rt->claiming || rt->njobs >= rt->jmcf->batch) {
        return;
    }

    n = rt->jmcf->batch - rt->njobs;

    *ngx_sprintf(rt->claim_n, "%ui", n) = '\0';

    rt->claimed = n;

    if (ngx_platform_pg_query(&rt->claim) == NGX_ERROR) {
        ngx_platform_jobs_claim_failed(rt, "claim", rt->claim.reason);
        return;
    }

    rt->claiming = 1;
}


static void
ngx_platform_jobs_claim_done(ngx_platform_pg_query_t *q)
{
    int                          i, n;
    PGresult                    *res;
    ngx_platform_jobs_runner_t  *rt;

    rt = q->data;
    res = q->res;
    q->res = NULL;

    rt->claiming = 0;

    if (res == NULL) {
        ngx_platform_jobs_claim_failed(rt, "claim", q->reason);
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK
        || PQnfields(res) != NGX_PLATFORM_JOBS_COLS)
    {
        ngx_platform_jobs_claim_failed(rt, "jobs.claim()",
                                       PQresultErrorMessage(res));
        PQclear(res);
        return;
    }

    if (rt->failing) {
        rt->failing = 0;
        ngx_log_error(NGX_LOG_NOTICE, rt->log, 0,
                      "platform_jobs: claiming jobs again");
    }

    n = PQntuples(res);

    rt->more = ((ngx_uint_t) n >= rt->claimed);

    if (rt->exiting || ngx_exiting) {
        /* they run again when their lease is over */
        PQclear(res);
        return;
    }

    for (i = 0; i < n; i++) {
        ngx_platform_jobs_start(rt, res, i);
    }

    PQclear(res);
}


static void
ngx_platform_jobs_claim_failed(ngx_platform_jobs_runner_t *rt,
    const char *what, const char *reason)
{
    size_t      len;
    ngx_uint_t  level;

    rt->more = 0;

    if (reason == NULL) {
        reason = "failed";
    }

    len = ngx_strlen(reason);

    while (len && (reason[len - 1] == LF || reason[len - 1] == ' ')) {
        len--;
    }

    /* once per outage: the pool logs the connection's own troubles */

    level = rt->failing ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, rt->log, 0, "platform_jobs: %s: %*s",
                  what, len, reason);

    rt->failing = 1;
}


static void
ngx_platform_jobs_poll_stats(ngx_platform_jobs_runner_t *rt)
{
    if (rt->polling_stats) {
        return;
    }

    rt->stats_at = ngx_current_msec;

    if (ngx_platform_pg_query(&rt->stats) == NGX_ERROR) {
        return;
    }

    rt->polling_stats = 1;
}


static void
ngx_platform_jobs_stats_done(ngx_platform_pg_query_t *q)
{
    PGresult                    *res;
    ngx_int_t                    n;
    ngx_platform_jobs_shctx_t   *sh;
    ngx_platform_jobs_runner_t  *rt;

    rt = q->data;
    res = q->res;
    q->res = NULL;

    rt->polling_stats = 0;

    if (res == NULL) {
        return;
    }

    sh = rt->jmcf->sh;

    if (sh == NULL
        || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1
        || PQnfields(res) != 5)
    {
        PQclear(res);
        return;
    }

    /* counts, and the oldest due job's wait in milliseconds */

    n = ngx_atoi((u_char *) PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0));
    sh->due = (n == NGX_ERROR) ? 0 : n;

    n = ngx_atoi((u_char *) PQgetvalue(res, 0, 1), PQgetlength(res, 0, 1));
    sh->running = (n == NGX_ERROR) ? 0 : n;

    n = ngx_atoi((u_char *) PQgetvalue(res, 0, 2), PQgetlength(res, 0, 2));
    sh->retrying = (n == NGX_ERROR) ? 0 : n;

    n = ngx_atoi((u_char *) PQgetvalue(res, 0, 3), PQgetlength(res, 0, 3));
    sh->dead = (n == NGX_ERROR) ? 0 : n;

    n = ngx_atoi((u_char *) PQgetvalue(res, 0, 4), PQgetlength(res, 0, 4));
    sh->oldest_ms = (n == NGX_ERROR) ? 0 : n;

    sh->polled = ngx_time();

    PQclear(res);
}


/* running a job */


static void
ngx_platform_jobs_start(ngx_platform_jobs_runner_t *rt, PGresult *res,
    int row)
{
    char                     *kind;
    ngx_int_t                 rc;
    ngx_pool_t               *pool;
    ngx_platform_jobs_job_t  *job;

    pool = ngx_create_pool(1024, rt->log);
    if (pool == NULL) {
        return;
    }

    job = ngx_pcalloc(pool, sizeof(ngx_platform_jobs_job_t));
    if (job == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    job->pool = pool;
    job->runner = rt;
    job->state = NGX_PLATFORM_JOBS_RUNNING;
    job->expires = ngx_time() + rt->jmcf->lease;

    ngx_queue_insert_tail(&rt->jobs, &job->queue);
    rt->njobs++;

    job->id = ngx_platform_jobs_field(job, res, row, NGX_PLATFORM_JOBS_COL_ID);
    job->attempt = ngx_platform_jobs_field(job, res, row,
                                           NGX_PLATFORM_JOBS_COL_ATTEMPT);

    if (job->id == NULL || job->attempt == NULL) {
        /* the lease runs out and it is claimed again */
        ngx_platform_jobs_free(job);
        return;
    }

    kind = PQgetvalue(res, row, NGX_PLATFORM_JOBS_COL_KIND);

    if (ngx_strcmp(kind, "mail") == 0) {
        job->kind = NGX_PLATFORM_JOBS_MAIL;
        rc = ngx_platform_jobs_mail(job, res, row);

    } else if (ngx_strcmp(kind, "webhook") == 0) {
        job->kind = NGX_PLATFORM_JOBS_WEBHOOK;
        rc = ngx_platform_jobs_webhook(job, res, row);

    } else if (ngx_strcmp(kind, "call") == 0) {
        job->kind = NGX_PLATFORM_JOBS_CALL;
        rc = ngx_platform_jobs_call(job, res, row);

    } else if (ngx_strcmp(kind, "sql") == 0) {
        job->kind = NGX_PLATFORM_JOBS_SQL;
        ngx_platform_jobs_run_sql(job);
        return;

    } else {
        ngx_log_error(NGX_LOG_ERR, rt->log, 0,
                      "platform_jobs: job %s has unknown kind \"%s\"",
                      job->id, kind);
        ngx_platform_jobs_free(job);
        return;
    }

    if (rc == NGX_ERROR) {
        /* the error is set: as if there had been no answer */
        ngx_platform_jobs_ended(job, 0, job->error);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rt->log, 0,
                   "platform_jobs: job %s attempt %s started",
                   job->id, job->attempt);
}


/* a text column as a NUL-terminated copy in the job's pool; NULL for NULL */

static u_char *
ngx_platform_jobs_field(ngx_platform_jobs_job_t *job, PGresult *res, int row,
    int col)
{
    int      len;
    u_char  *p;

    if (PQgetisnull(res, row, col)) {
        return NULL;
    }

    len = PQgetlength(res, row, col);

    p = ngx_pnalloc(job->pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, PQgetvalue(res, row, col), len);
    p[len] = '\0';

    return p;
}


static ngx_int_t
ngx_platform_jobs_mail(ngx_platform_jobs_job_t *job, PGresult *res, int row)
{
    u_char               *from, *rcpt, *message;
    ngx_platform_smtp_t  *s;

    from = ngx_platform_jobs_field(job, res, row, NGX_PLATFORM_JOBS_COL_FROM);
    rcpt = ngx_platform_jobs_field(job, res, row, NGX_PLATFORM_JOBS_COL_RCPT);
    message = ngx_platform_jobs_field(job, res, row,
                                      NGX_PLATFORM_JOBS_COL_MESSAGE);

    if (from == NULL || rcpt == NULL || message == NULL) {
        job->error = (u_char *) "claim returned no message";
        return NGX_ERROR;
    }

    s = ngx_pcalloc(job->pool, sizeof(ngx_platform_smtp_t));
    if (s == NULL) {
        job->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    s->conf = job->runner->jmcf->smtp;
    s->pool = job->pool;
    s->log = job->runner->log;
    s->from.data = from;
    s->from.len = ngx_strlen(from);
    s->rcpt.data = rcpt;
    s->rcpt.len = ngx_strlen(rcpt);
    s->message.data = message;
    s->message.len = ngx_strlen(message);
    s->handler = ngx_platform_jobs_mail_done;
    s->data = job;

    if (ngx_platform_smtp_start(s) != NGX_OK) {
        job->error = s->error;
        return NGX_ERROR;
    }

    job->smtp = s;

    return NGX_OK;
}


static void
ngx_platform_jobs_mail_done(ngx_platform_smtp_t *s)
{
    ngx_platform_jobs_job_t  *job;

    job = s->data;

    if (s->exiting) {
        /* frees this job too */
        ngx_platform_jobs_abandon(job->runner);
        return;
    }

    job->smtp = NULL;

    ngx_platform_jobs_done(job, s->error == NULL, s->error);
}


static ngx_int_t
ngx_platform_jobs_webhook(ngx_platform_jobs_job_t *job, PGresult *res,
    int row)
{
    u_char      *url, *headers, *resolve;
    ngx_int_t    rc;
    const char  *err;

    url = ngx_platform_jobs_field(job, res, row, NGX_PLATFORM_JOBS_COL_URL);
    headers = ngx_platform_jobs_field(job, res, row,
                                      NGX_PLATFORM_JOBS_COL_HEADERS);
    resolve = ngx_platform_jobs_field(job, res, row,
                                      NGX_PLATFORM_JOBS_COL_RESOLVE);
    job->data = ngx_platform_jobs_field(job, res, row,
                                        NGX_PLATFORM_JOBS_COL_BODY);

    if (url == NULL || headers == NULL || job->data == NULL) {
        job->error = (u_char *) "claim returned no request";
        return NGX_ERROR;
    }

    rc = ngx_platform_jobs_check_url((char *) url, "http,https", &err);

    if (rc == NGX_DECLINED && resolve == NULL) {
        job->error = (u_char *) "the webhook URL names a host: set its "
                                "address in jobs.webhook_targets (workers "
                                "never resolve names)";
        return NGX_ERROR;
    }

    if (rc == NGX_ERROR) {
        job->error = (u_char *) err;
        return NGX_ERROR;
    }

    if (resolve && ngx_platform_jobs_list(&job->resolve, resolve) != NGX_OK) {
        job->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    if (ngx_platform_jobs_headers(job, headers) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_platform_jobs_request(job, url, (u_char *) "POST");
}


/* a call: the service from nginx.conf, the request from SQL */

static ngx_int_t
ngx_platform_jobs_call(ngx_platform_jobs_job_t *job, PGresult *res, int row)
{
    char                          **h;
    u_char                         *name, *method, *path, *headers, *url;
    size_t                          len;
    ngx_uint_t                      i, n;
    struct curl_slist              *l;
    ngx_platform_jobs_service_t    *s;
    ngx_platform_jobs_main_conf_t  *jmcf;

    jmcf = job->runner->jmcf;

    name = ngx_platform_jobs_field(job, res, row,
                                   NGX_PLATFORM_JOBS_COL_SERVICE);
    method = ngx_platform_jobs_field(job, res, row,
                                     NGX_PLATFORM_JOBS_COL_METHOD);
    path = ngx_platform_jobs_field(job, res, row, NGX_PLATFORM_JOBS_COL_URL);
    headers = ngx_platform_jobs_field(job, res, row,
                                      NGX_PLATFORM_JOBS_COL_HEADERS);
    job->data = ngx_platform_jobs_field(job, res, row,
                                        NGX_PLATFORM_JOBS_COL_BODY);

    if (name == NULL || method == NULL || path == NULL || path[0] != '/') {
        job->error = (u_char *) "claim returned no request";
        return NGX_ERROR;
    }

    len = ngx_strlen(name);
    s = NULL;
    n = jmcf->services ? jmcf->services->nelts : 0;

    for (i = 0; i < n; i++) {
        s = (ngx_platform_jobs_service_t *) jmcf->services->elts + i;

        if (s->name.len == len && ngx_strncmp(s->name.data, name, len) == 0) {
            break;
        }
    }

    if (i == n) {
        job->error = ngx_pnalloc(job->pool, sizeof("unknown service \"\": "
                                                   "nginx.conf has no "
                                                   "platform_jobs_service "
                                                   "of this name")
                                            + len);
        if (job->error) {
            ngx_sprintf(job->error, "unknown service \"%s\": nginx.conf has "
                        "no platform_jobs_service of this name%Z", name);
        }

        return NGX_ERROR;
    }

    len = ngx_strlen(path);

    url = ngx_pnalloc(job->pool, s->url.len + len + 1);
    if (url == NULL) {
        job->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    ngx_sprintf(url, "%V%s%Z", &s->url, path);

    /* the request's headers, then the service's (Authorization among them) */

    if (headers && ngx_platform_jobs_headers(job, headers) != NGX_OK) {
        return NGX_ERROR;
    }

    h = s->headers.elts;

    for (i = 0; i < s->headers.nelts; i++) {
        l = curl_slist_append(job->headers, h[i]);
        if (l == NULL) {
            job->error = (u_char *) "out of memory";
            return NGX_ERROR;
        }

        job->headers = l;
    }

    if (s->resolve) {
        job->resolve = curl_slist_append(NULL, s->resolve);
        if (job->resolve == NULL) {
            job->error = (u_char *) "out of memory";
            return NGX_ERROR;
        }
    }

    return ngx_platform_jobs_request(job, url, method);
}


/*
 * An HTTP request on the multi handle: the URL, the method, job->headers,
 * job->resolve, and job->data as the body (none when NULL).
 */

static ngx_int_t
ngx_platform_jobs_request(ngx_platform_jobs_job_t *job, u_char *url,
    u_char *method)
{
    CURL                           *easy;
    struct curl_slist              *l;
    ngx_platform_jobs_runner_t     *rt;
    ngx_platform_jobs_main_conf_t  *jmcf;

    rt = job->runner;
    jmcf = rt->jmcf;

    /* no "Expect: 100-continue" round trip before a large body */

    l = curl_slist_append(job->headers, "Expect:");
    if (l == NULL) {
        job->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    job->headers = l;

    easy = curl_easy_init();
    if (easy == NULL) {
        job->error = (u_char *) "curl_easy_init() failed";
        return NGX_ERROR;
    }

    job->easy = easy;

    /*
     * NOSIGNAL: no alarm(); PROXY "": proxies named in the environment
     * would have to be resolved; redirects are not followed (the default).
     */

    if (curl_easy_setopt(easy, CURLOPT_PRIVATE, job) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, job->errbuf)
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) jmcf->timeout)
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                            (long) jmcf->timeout) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK
#if (LIBCURL_VERSION_NUM >= 0x075500)
        || curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https")
           != CURLE_OK
#else
        || curl_easy_setopt(easy, CURLOPT_PROTOCOLS,
                            (long) (CURLPROTO_HTTP|CURLPROTO_HTTPS))
           != CURLE_OK
#endif
        || curl_easy_setopt(easy, CURLOPT_HTTPHEADER, job->headers)
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_USERAGENT, "nginx-platform-jobs/1")
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION,
                            ngx_platform_jobs_response) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_WRITEDATA, job) != CURLE_OK
        || (job->resolve
            && curl_easy_setopt(easy, CURLOPT_RESOLVE, job->resolve)
               != CURLE_OK)
        || (jmcf->trusted_certificate.data
            && curl_easy_setopt(easy, CURLOPT_CAINFO,
                                jmcf->trusted_certificate.data)
               != CURLE_OK))
    {
        job->error = (u_char *) "libcurl refused an HTTP option";
        return NGX_ERROR;
    }

    if (job->data) {
        job->size = ngx_strlen(job->data);

        if (curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->data) != CURLE_OK
            || curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                (curl_off_t) job->size) != CURLE_OK
            || (ngx_strcmp(method, "POST") != 0
                && curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method)
                   != CURLE_OK))
        {
            job->error = (u_char *) "libcurl refused the request body";
            return NGX_ERROR;
        }

    } else if (ngx_strcmp(method, "GET") != 0
               && curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method)
                  != CURLE_OK)
    {
        job->error = (u_char *) "libcurl refused the method";
        return NGX_ERROR;
    }

    /* before: adding calls the timer function, which looks at the count */
    rt->ntransfers++;

    if (curl_multi_add_handle(rt->multi, easy) != CURLM_OK) {
        rt->ntransfers--;
        job->error = (u_char *) "curl_multi_add_handle() failed";
        return NGX_ERROR;
    }

    job->added = 1;

    return NGX_OK;
}


/*
 * A job's header lines onto job->headers.  "sealed:<base64>" in them (a
 * channel's API key, sealed by platform_seal) is opened with
 * platform_secretbox_key only here, as the request is made, into a copy
 * that is wiped once libcurl has its own (ngx_platform_seal.c).
 */

static ngx_int_t
ngx_platform_jobs_headers(ngx_platform_jobs_job_t *job, u_char *text)
{
    u_char      *opened;
    size_t       len;
    ngx_int_t    rc;
    const char  *err;

    opened = text;

    if (ngx_platform_seal_open_text(job->pool, &opened, &err) != NGX_OK) {
        job->error = (u_char *) err;
        return NGX_ERROR;
    }

    len = ngx_strlen(opened);

    rc = ngx_platform_jobs_list(&job->headers, opened);

    if (opened != text) {
        sodium_memzero(opened, len);
    }

    if (rc != NGX_OK) {
        job->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Appends the lines of text (LF-separated; empty ones skipped) to a
 * libcurl list; libcurl copies them.  The text is modified.
 */

static ngx_int_t
ngx_platform_jobs_list(struct curl_slist **list, u_char *text)
{
    u_char             *p, *end;
    struct curl_slist  *l;

    p = text;

    while (*p) {
        end = (u_char *) ngx_strchr(p, LF);

        if (end) {
            *end = '\0';
        }

        if (*p) {
            l = curl_slist_append(*list, (char *) p);
            if (l == NULL) {
                return NGX_ERROR;
            }

            *list = l;
        }

        if (end == NULL) {
            break;
        }

        p = end + 1;
    }

    return NGX_OK;
}


static void
ngx_platform_jobs_run_sql(ngx_platform_jobs_job_t *job)
{
    ngx_platform_pg_query_t     *q;
    ngx_platform_jobs_runner_t  *rt;

    rt = job->runner;
    q = &job->query;

    job->values[0] = (char *) job->id;
    job->values[1] = (char *) job->attempt;

    q->upstream = rt->jmcf->upstream;
    q->statement = rt->jmcf->run_sql_statement;
    q->nparams = 2;
    q->values = job->values;
    q->handler = ngx_platform_jobs_run_sql_done;
    q->data = job;
    q->log = rt->log;

    if (ngx_platform_pg_query(q) == NGX_ERROR) {
        ngx_platform_jobs_done(job, 0, (u_char *) q->reason);
    }
}


static void
ngx_platform_jobs_run_sql_done(ngx_platform_pg_query_t *q)
{
    PGresult                 *res;
    ngx_platform_jobs_job_t  *job;

    job = q->data;
    res = q->res;
    q->res = NULL;

    if (res == NULL) {
        /* if run_sql() did commit, finish() of this attempt changes nothing */
        ngx_platform_jobs_done(job, 0, (u_char *) q->reason);
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        /* rolled back, the job is still running: record the failure */
        ngx_platform_jobs_done(job, 0,
                               (u_char *) PQresultErrorMessage(res));
        PQclear(res);
        return;
    }

    /* jobs.run_sql() has recorded the outcome itself */

    job->state = NGX_PLATFORM_JOBS_RECORDING;

    if (PQgetisnull(res, 0, 0)) {
        ngx_platform_jobs_done(job, 1, NULL);

    } else {
        ngx_platform_jobs_done(job, 0, (u_char *) PQgetvalue(res, 0, 0));
    }

    PQclear(res);

    ngx_platform_jobs_free(job);
}


/*
 * libcurl's write function: a call's answer is kept, up to
 * platform_jobs_response_max_size (then the transfer stops); a webhook's
 * is dropped.
 */

static size_t
ngx_platform_jobs_response(char *buf, size_t size, size_t n, void *data)
{
    ngx_platform_jobs_job_t *job = data;

    u_char  *p;
    size_t   len, max, alloc;

    len = size * n;

    if (job->kind != NGX_PLATFORM_JOBS_CALL) {
        return len;
    }

    max = job->runner->jmcf->response_max_size;

    if (len > max - job->response.len) {
        job->too_large = 1;
        return 0;
    }

    /* room for the answer and a '\0' */

    if (job->response.len + len >= job->response_size) {
        alloc = ngx_max(job->response_size * 2, 4096);
        alloc = ngx_max(alloc, job->response.len + len + 1);
        alloc = ngx_min(alloc, max + 1);

        p = ngx_pnalloc(job->pool, alloc);
        if (p == NULL) {
            return 0;
        }

        if (job->response.data) {
            ngx_memcpy(p, job->response.data, job->response.len);
            ngx_pfree(job->pool, job->response.data);
        }

        job->response.data = p;
        job->response_size = alloc;
    }

    ngx_memcpy(job->response.data + job->response.len, buf, len);
    job->response.len += len;

    return len;
}


/* libcurl on nginx events */


static int
ngx_platform_jobs_socket(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
    ngx_platform_jobs_runner_t *rt = userp;

    ngx_connection_t  *c;

    c = socketp;

    if (what == CURL_POLL_REMOVE) {
        /* libcurl closes the socket itself, after this */

        if (c) {
            ngx_platform_socket_release(c, 0);
            (void) curl_multi_assign(rt->multi, s, NULL);
        }

        return 0;
    }

    if (c == NULL) {
        c = ngx_get_connection(s, rt->log);

        if (c == NULL) {
            /* nginx has logged it; the transfer times out */
            return 0;
        }

        c->data = rt;
        c->read->handler = ngx_platform_jobs_read_handler;
        c->write->handler = ngx_platform_jobs_write_handler;
        c->read->log = rt->log;
        c->write->log = rt->log;

        /*
         * "idle": a worker that starts shutting down closes idle
         * connections, and so tells us to give up our transfers
         */
        c->idle = 1;

        if (curl_multi_assign(rt->multi, s, c) != CURLM_OK) {
            ngx_platform_socket_release(c, 0);
            return 0;
        }
    }

    ngx_platform_socket_events(c, what & CURL_POLL_IN, what & CURL_POLL_OUT);

    return 0;
}


static int
ngx_platform_jobs_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_platform_jobs_runner_t *rt = userp;

    if (rt->timer.timer_set) {
        ngx_del_timer(&rt->timer);
    }

    if (timeout_ms < 0) {
        return 0;
    }

    /* transfers in flight hold a graceful shutdown until they time out */
    rt->timer.cancelable = (rt->ntransfers == 0);

    ngx_add_timer(&rt->timer, (ngx_msec_t) timeout_ms);

    return 0;
}


static void
ngx_platform_jobs_read_handler(ngx_event_t *ev)
{
    ngx_connection_t            *c;
    ngx_platform_jobs_runner_t  *rt;

    c = ev->data;
    rt = c->data;

    if (c->close) {
        ngx_platform_jobs_abandon(rt);
        return;
    }

    ngx_platform_jobs_action(rt, c->fd, CURL_CSELECT_IN);
}


static void
ngx_platform_jobs_write_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    ngx_platform_jobs_action(c->data, c->fd, CURL_CSELECT_OUT);
}


static void
ngx_platform_jobs_timer_handler(ngx_event_t *ev)
{
    ngx_platform_jobs_action(ev->data, CURL_SOCKET_TIMEOUT, 0);
}


/* the connection may be gone when this returns */

static void
ngx_platform_jobs_action(ngx_platform_jobs_runner_t *rt, curl_socket_t s,
    int mask)
{
    int        running;
    CURLMcode  rc;

    rc = curl_multi_socket_action(rt->multi, s, mask, &running);

    if (rc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ERR, rt->log, 0,
                      "platform_jobs: curl_multi_socket_action() failed: %s",
                      curl_multi_strerror(rc));
    }

    ngx_platform_jobs_transfers_done(rt);
}


static void
ngx_platform_jobs_transfers_done(ngx_platform_jobs_runner_t *rt)
{
    int                       left;
    char                     *p;
    long                      status;
    CURL                     *easy;
    u_char                   *error;
    CURLMsg                  *msg;
    CURLcode                  rc;
    ngx_platform_jobs_job_t  *job;

    while ((msg = curl_multi_info_read(rt->multi, &left)) != NULL) {

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        rc = msg->data.result;

        p = NULL;
        (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
        job = (ngx_platform_jobs_job_t *) p;

        status = 0;
        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

        /* msg is gone after this */
        (void) curl_multi_remove_handle(rt->multi, easy);
        rt->ntransfers--;

        job->added = 0;
        job->easy = NULL;
        curl_easy_cleanup(easy);

        if (rc == CURLE_OK) {
            ngx_platform_jobs_ended(job, status, NULL);
            continue;
        }

        p = job->errbuf[0] ? job->errbuf : (char *) curl_easy_strerror(rc);

        /* libcurl's text may not name the receiver's answer: add it */

        error = ngx_pnalloc(job->pool, ngx_strlen(p)
                                       + sizeof(" (last reply )")
                                       + NGX_INT_T_LEN
                                       + sizeof("the response is larger "
                                                "than platform_jobs_"
                                                "response_max_size ( "
                                                "bytes)"));
        if (error == NULL) {
            error = (u_char *) "failed";

        } else if (job->too_large) {
            ngx_sprintf(error, "the response is larger than "
                        "platform_jobs_response_max_size (%uz bytes)%Z",
                        rt->jmcf->response_max_size);

        } else if (status > 0) {
            ngx_sprintf(error, "%s (last reply %l)%Z", p, status);

        } else {
            ngx_sprintf(error, "%s%Z", p);
        }

        ngx_platform_jobs_ended(job, 0, error);
    }

    if (rt->ntransfers == 0) {
        rt->timer.cancelable = 1;
    }
}


/*
 * The worker is shutting down: its database connections are closing, so
 * outcomes could not be recorded.  Transfers in flight are given up; the
 * jobs run again when their lease is over.
 */

static void
ngx_platform_jobs_abandon(ngx_platform_jobs_runner_t *rt)
{
    ngx_queue_t              *q, *next;
    ngx_platform_jobs_job_t  *job;

    rt->exiting = 1;

    for (q = ngx_queue_head(&rt->jobs);
         q != ngx_queue_sentinel(&rt->jobs);
         q = next)
    {
        next = ngx_queue_next(q);
        job = ngx_queue_data(q, ngx_platform_jobs_job_t, queue);

        if (job->easy == NULL && job->smtp == NULL) {
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, rt->log, 0,
                      "platform_jobs: job %s given up, the worker is "
                      "exiting; it runs again after its lease", job->id);

        ngx_platform_jobs_free(job);
    }
}


/* outcomes */


/*
 * A request is over (or could not be made): status is the HTTP status, 0
 * when there was no answer, and then error says why.  A webhook succeeded
 * with a 2xx answer; a call's outcome is decided by jobs.finish_call().
 */

static void
ngx_platform_jobs_ended(ngx_platform_jobs_job_t *job, long status,
    u_char *error)
{
    if (job->kind == NGX_PLATFORM_JOBS_CALL) {

        if (status > 0
            && job->response.len
            && ngx_strlchr(job->response.data,
                           job->response.data + job->response.len, '\0'))
        {
            status = 0;
            error = (u_char *) "the response holds a NUL byte";
        }

        if (job->response.data) {
            job->response.data[job->response.len] = '\0';
        }

        job->status = status;
        *ngx_sprintf(job->status_text, "%l", status) = '\0';
        job->answered = 1;

        ngx_platform_jobs_set_error(job, error);
        ngx_platform_jobs_record(job);
        return;
    }

    if (error == NULL && (status < 200 || status > 299)) {
        error = ngx_pnalloc(job->pool, sizeof("HTTP status ") + NGX_INT_T_LEN);
        if (error) {
            ngx_sprintf(error, "HTTP status %l%Z", status);

        } else {
            error = (u_char *) "failed";
        }
    }

    ngx_platform_jobs_done(job, error == NULL, error);
}


/* counts and logs an attempt's outcome, and records it unless it is */

static void
ngx_platform_jobs_done(ngx_platform_jobs_job_t *job, ngx_uint_t ok,
    u_char *error)
{
    ngx_platform_jobs_shctx_t   *sh;
    ngx_platform_jobs_runner_t  *rt;

    rt = job->runner;
    sh = rt->jmcf->sh;

    job->ok = ok;

    if (ok) {
        job->error = NULL;

        if (sh) {
            (void) ngx_atomic_fetch_add(&sh->completed[job->kind], 1);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rt->log, 0,
                       "platform_jobs: job %s attempt %s done",
                       job->id, job->attempt);

    } else {
        ngx_platform_jobs_set_error(job, error ? error : (u_char *) "failed");

        if (sh) {
            (void) ngx_atomic_fetch_add(&sh->failed[job->kind], 1);
        }

        ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                      "platform_jobs: %s job %s attempt %s failed: %s",
                      ngx_platform_jobs_kinds[job->kind], job->id,
                      job->attempt, job->error);
    }

    if (job->state == NGX_PLATFORM_JOBS_RUNNING) {
        ngx_platform_jobs_record(job);
    }
}


/* a copy: the error may live in a result or buffer about to go */

static void
ngx_platform_jobs_set_error(ngx_platform_jobs_job_t *job, u_char *error)
{
    size_t  len;

    if (error == NULL) {
        job->error = NULL;
        return;
    }

    len = ngx_strlen(error);

    while (len && (error[len - 1] == LF || error[len - 1] == CR
                   || error[len - 1] == ' '))
    {
        len--;
    }

    len = ngx_min(len, 1000);

    job->error = ngx_pnalloc(job->pool, len + 1);

    if (job->error == NULL) {
        job->error = (u_char *) "failed";

    } else {
        *ngx_cpymem(job->error, error, len) = '\0';
    }
}


static void
ngx_platform_jobs_record(ngx_platform_jobs_job_t *job)
{
    ngx_platform_pg_query_t     *q;
    ngx_platform_jobs_runner_t  *rt;

    rt = job->runner;
    q = &job->query;

    if (job->answered) {
        /* a call: jobs.finish_call() runs the callback and decides */

        job->values[0] = (char *) job->id;
        job->values[1] = (char *) job->attempt;
        job->values[2] = (char *) job->status_text;
        job->values[3] = job->status ? (job->response.data
                                        ? (char *) job->response.data : "")
                                     : NULL;
        job->values[4] = (char *) job->error;

        q->statement = rt->jmcf->finish_call_statement;
        q->nparams = 5;

    } else {
        job->values[0] = (char *) job->id;
        job->values[1] = job->ok ? "t" : "f";
        job->values[2] = (char *) job->error;
        job->values[3] = (char *) job->attempt;

        q->statement = rt->jmcf->finish_statement;
        q->nparams = 4;
    }

    q->upstream = rt->jmcf->upstream;
    q->values = job->values;
    q->handler = ngx_platform_jobs_record_done;
    q->data = job;
    q->log = rt->log;

    if (ngx_platform_pg_query(q) == NGX_ERROR) {

        if (job->state != NGX_PLATFORM_JOBS_UNRECORDED) {
            ngx_log_error(NGX_LOG_NOTICE, rt->log, 0,
                          "platform_jobs: job %s: outcome not recorded yet "
                          "(%s), trying again", job->id, q->reason);
        }

        job->state = NGX_PLATFORM_JOBS_UNRECORDED;
        return;
    }

    job->state = NGX_PLATFORM_JOBS_RECORDING;
}


static void
ngx_platform_jobs_record_done(ngx_platform_pg_query_t *q)
{
    PGresult                    *res;
    ngx_platform_jobs_job_t     *job;
    ngx_platform_jobs_runner_t  *rt;

    job = q->data;
    rt = job->runner;
    res = q->res;
    q->res = NULL;

    if (res == NULL) {
        ngx_log_error(NGX_LOG_NOTICE, rt->log, 0,
                      "platform_jobs: job %s: outcome not recorded yet "
                      "(%s), trying again", job->id, q->reason);
        job->state = NGX_PLATFORM_JOBS_UNRECORDED;
        return;
    }

    if (job->answered) {
        job->answered = 0;

        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            /* rolled back: the attempt is recorded as failed */
            ngx_log_error(NGX_LOG_ERR, rt->log, 0,
                          "platform_jobs: job %s: jobs.finish_call() "
                          "failed: %s", job->id, PQresultErrorMessage(res));

            job->state = NGX_PLATFORM_JOBS_RUNNING;
            ngx_platform_jobs_done(job, 0,
                                   (u_char *) PQresultErrorMessage(res));
            PQclear(res);
            return;
        }

        /* recorded: NULL when the job is done, else the error */

        ngx_platform_jobs_done(job, PQgetisnull(res, 0, 0),
                               (u_char *) PQgetvalue(res, 0, 0));

    } else if (PQresultStatus(res) != PGRES_TUPLES_OK
               || PQntuples(res) != 1)
    {
        ngx_log_error(NGX_LOG_ERR, rt->log, 0,
                      "platform_jobs: job %s: jobs.finish() failed: %s",
                      job->id, PQresultErrorMessage(res));

    } else if (PQgetisnull(res, 0, 0)) {
        ngx_log_error(NGX_LOG_INFO, rt->log, 0,
                      "platform_jobs: job %s: attempt %s was not recorded, "
                      "the job had been claimed again", job->id,
                      job->attempt);
    }

    PQclear(res);

    ngx_platform_jobs_free(job);
    ngx_platform_jobs_wake(rt);
}


static void
ngx_platform_jobs_free(ngx_platform_jobs_job_t *job)
{
    ngx_platform_jobs_runner_t  *rt;

    rt = job->runner;

    if (job->easy) {
        if (job->added) {
            (void) curl_multi_remove_handle(rt->multi, job->easy);
            rt->ntransfers--;
        }

        curl_easy_cleanup(job->easy);
    }

    if (job->smtp) {
        ngx_platform_smtp_abort(job->smtp);
    }

    curl_slist_free_all(job->headers);
    curl_slist_free_all(job->resolve);

    ngx_queue_remove(&job->queue);
    rt->njobs--;

    ngx_destroy_pool(job->pool);

    if (rt->ntransfers == 0) {
        rt->timer.cancelable = 1;
    }
}


/* for platform_status: the last jobs.stats() and the outcome counters */

u_char *
ngx_platform_jobs_status(ngx_http_request_t *r, u_char *p, u_char *last)
{
    ngx_uint_t                      i;
    ngx_platform_jobs_shctx_t      *sh;
    ngx_platform_jobs_main_conf_t  *jmcf;

    jmcf = ngx_http_get_module_main_conf(r, ngx_platform_jobs_module);

    if (jmcf == NULL || jmcf->sh == NULL) {
        return p;
    }

    sh = jmcf->sh;

    p = ngx_slprintf(p, last,
        "# HELP platform_jobs_due Jobs whose time has come, not yet "
        "claimed.\n"
        "# TYPE platform_jobs_due gauge\n"
        "platform_jobs_due %uA\n"
        "# HELP platform_jobs_running Jobs claimed by a runner.\n"
        "# TYPE platform_jobs_running gauge\n"
        "platform_jobs_running %uA\n"
        "# HELP platform_jobs_retrying Pending jobs that failed before.\n"
        "# TYPE platform_jobs_retrying gauge\n"
        "platform_jobs_retrying %uA\n"
        "# HELP platform_jobs_dead Jobs given up after max_attempts.\n"
        "# TYPE platform_jobs_dead gauge\n"
        "platform_jobs_dead %uA\n"
        "# HELP platform_jobs_oldest_due_seconds How long the oldest due "
        "job has waited.\n"
        "# TYPE platform_jobs_oldest_due_seconds gauge\n"
        "platform_jobs_oldest_due_seconds %uA.%03uA\n"
        "# HELP platform_jobs_stats_timestamp_seconds When the figures "
        "above were read from the database.\n"
        "# TYPE platform_jobs_stats_timestamp_seconds gauge\n"
        "platform_jobs_stats_timestamp_seconds %uA\n",
        sh->due, sh->running, sh->retrying, sh->dead,
        sh->oldest_ms / 1000, sh->oldest_ms % 1000, sh->polled);

    p = ngx_slprintf(p, last,
        "# HELP platform_jobs_completed_total Attempts that succeeded, "
        "by kind.\n"
        "# TYPE platform_jobs_completed_total counter\n");

    for (i = 0; i < NGX_PLATFORM_JOBS_KINDS; i++) {
        p = ngx_slprintf(p, last,
                         "platform_jobs_completed_total{kind=\"%s\"} %uA\n",
                         ngx_platform_jobs_kinds[i], sh->completed[i]);
    }

    p = ngx_slprintf(p, last,
        "# HELP platform_jobs_failed_total Attempts that failed, by kind.\n"
        "# TYPE platform_jobs_failed_total counter\n");

    for (i = 0; i < NGX_PLATFORM_JOBS_KINDS; i++) {
        p = ngx_slprintf(p, last,
                         "platform_jobs_failed_total{kind=\"%s\"} %uA\n",
                         ngx_platform_jobs_kinds[i], sh->failed[i]);
    }

    return p;
}
