
/*
 * A non-blocking SMTP client on nginx events, for the jobs runner: one
 * message to one relay over one connection (ngx_platform_smtp.c).
 */


#ifndef _NGX_PLATFORM_SMTP_H_INCLUDED_
#define _NGX_PLATFORM_SMTP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>


#define NGX_PLATFORM_SMTP_STARTTLS_OFF  0
#define NGX_PLATFORM_SMTP_STARTTLS_ON   1
#define NGX_PLATFORM_SMTP_STARTTLS_REQ  2

/* the longest reply line read, CRLF included (RFC 5321 says 512) */
#define NGX_PLATFORM_SMTP_LINE          2048


typedef struct ngx_platform_smtp_s  ngx_platform_smtp_t;

typedef void (*ngx_platform_smtp_handler_pt)(ngx_platform_smtp_t *s);


/* the relay, made when the configuration is read */
typedef struct {
    ngx_addr_t                     addr;
    ngx_str_t                      host;      /* the address, for its cert */
    ngx_str_t                      helo;
    ngx_uint_t                     starttls;
    ngx_str_t                      user;
    ngx_str_t                      password;
    ngx_msec_t                     timeout;   /* the whole transfer */
    unsigned                       implicit_tls:1;
#if (NGX_SSL)
    ngx_ssl_t                     *ssl;
#endif
} ngx_platform_smtp_conf_t;


struct ngx_platform_smtp_s {
    /* set by the caller */
    ngx_platform_smtp_conf_t      *conf;
    ngx_pool_t                    *pool;
    ngx_log_t                     *log;
    ngx_str_t                      from;
    ngx_str_t                      rcpt;      /* addresses, one per line */
    ngx_str_t                      message;   /* RFC 5322, any line ends */
    ngx_platform_smtp_handler_pt   handler;
    void                          *data;

    /* the outcome, when the handler is called */
    u_char                        *error;     /* NULL: delivered */
    unsigned                       exiting:1; /* given up: worker exits */

    /* private */
    ngx_peer_connection_t          peer;
    ngx_event_t                    timer;
    ngx_uint_t                     state;
    ngx_uint_t                     code;
    ngx_str_t                     *rcpts;
    ngx_uint_t                     nrcpts;
    ngx_uint_t                     next_rcpt;
    u_char                        *out;
    u_char                        *out_last;
    u_char                        *in_pos;
    u_char                        *in_last;
    u_char                         in[NGX_PLATFORM_SMTP_LINE];
    u_char                         reply[256];
    size_t                         reply_len;
    unsigned                       writing:1;
    unsigned                       active:1;
    unsigned                       tls:1;
    unsigned                       ehlo_starttls:1;
    unsigned                       ehlo_plain:1;
    unsigned                       ehlo_login:1;
};


ngx_platform_smtp_conf_t *ngx_platform_smtp_create_conf(ngx_conf_t *cf,
    ngx_str_t *url, ngx_uint_t starttls, ngx_str_t *user,
    ngx_str_t *password, ngx_str_t *trusted_certificate,
    ngx_msec_t timeout);
ngx_int_t ngx_platform_smtp_start(ngx_platform_smtp_t *s);
void ngx_platform_smtp_abort(ngx_platform_smtp_t *s);


#endif /* _NGX_PLATFORM_SMTP_H_INCLUDED_ */
