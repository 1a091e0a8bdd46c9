
/*
 * A non-blocking SMTP client on nginx events, for the jobs runner.
 *
 * One message to the relay over a connection of its own:
 *
 *   connect (ngx_event_connect_peer()), TLS at once for smtps://
 *   220 greeting
 *   EHLO                      its reply tells STARTTLS and AUTH mechanisms
 *   STARTTLS, TLS, EHLO       platform_smtp_starttls on (if offered) or
 *                             required (fails if not offered)
 *   AUTH PLAIN or LOGIN       platform_smtp_auth
 *   MAIL FROM, RCPT TO...     one command at a time, no pipelining
 *   DATA, the message         bare LF and CR become CRLF, lines starting
 *                             with a dot are dot-stuffed, CRLF.CRLF ends
 *   250                       delivered: QUIT is sent without waiting for
 *                             its reply, and the connection closed
 *
 * Every step is driven by read and write events; a timer limits the whole
 * transfer (platform_jobs_timeout).  TLS is nginx's own (an ngx_ssl_t made
 * when the configuration is read); the relay's certificate is verified
 * against platform_jobs_trusted_certificate or the system's authorities
 * and must name the relay's address.
 *
 * The connection is marked idle: a worker that starts shutting down closes
 * idle connections, and the transfer ends with s->exiting set.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_smtp.h"


#define NGX_PLATFORM_SMTP_CONNECT      0
#define NGX_PLATFORM_SMTP_HANDSHAKE    1
#define NGX_PLATFORM_SMTP_GREETING     2
#define NGX_PLATFORM_SMTP_EHLO         3
#define NGX_PLATFORM_SMTP_STARTTLS     4
#define NGX_PLATFORM_SMTP_AUTH_PLAIN   5
#define NGX_PLATFORM_SMTP_AUTH_LOGIN   6
#define NGX_PLATFORM_SMTP_AUTH_USER    7
#define NGX_PLATFORM_SMTP_AUTH_PASS    8
#define NGX_PLATFORM_SMTP_MAIL         9
#define NGX_PLATFORM_SMTP_RCPT         10
#define NGX_PLATFORM_SMTP_DATA         11
#define NGX_PLATFORM_SMTP_BODY         12

/* the most sent in one call: a retry after NGX_AGAIN sends the same */
#define NGX_PLATFORM_SMTP_SEND_MAX     65536


static ngx_int_t ngx_platform_smtp_prepare(ngx_platform_smtp_t *s);
static void ngx_platform_smtp_handler(ngx_event_t *ev);
static void ngx_platform_smtp_timeout_handler(ngx_event_t *ev);
static void ngx_platform_smtp_connected(ngx_platform_smtp_t *s);
static void ngx_platform_smtp_process(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_write(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_read_reply(ngx_platform_smtp_t *s);
static void ngx_platform_smtp_ehlo_line(ngx_platform_smtp_t *s,
    u_char *p, size_t len);
static ngx_int_t ngx_platform_smtp_reply(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_ehlo(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_auth(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_rcpt(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_send(ngx_platform_smtp_t *s,
    ngx_uint_t state, const char *fmt, ...);
static ngx_int_t ngx_platform_smtp_tls(ngx_platform_smtp_t *s);
#if (NGX_SSL)
static void ngx_platform_smtp_handshake_done(ngx_connection_t *c);
#endif
static void ngx_platform_smtp_quit(ngx_platform_smtp_t *s);
static ngx_int_t ngx_platform_smtp_fail(ngx_platform_smtp_t *s,
    const char *fmt, ...);
static void ngx_platform_smtp_finalize(ngx_platform_smtp_t *s,
    u_char *error);
static void ngx_platform_smtp_close(ngx_platform_smtp_t *s);


/* what a reply answers, for error messages */
static const char  *ngx_platform_smtp_steps[] = {
    "connecting",
    "in the TLS handshake",
    "in the greeting",
    "after EHLO",
    "after STARTTLS",
    "after AUTH",
    "after AUTH",
    "after AUTH",
    "after AUTH",
    "after MAIL FROM",
    "after RCPT TO",
    "after DATA",
    "after end of data"
};


/* configuration */


ngx_platform_smtp_conf_t *
ngx_platform_smtp_create_conf(ngx_conf_t *cf, ngx_str_t *url,
    ngx_uint_t starttls, ngx_str_t *user, ngx_str_t *password,
    ngx_str_t *trusted_certificate, ngx_msec_t timeout)
{
    u_char                    *p, *last, *host, *end;
    size_t                     len;
    ngx_int_t                  rc;
    in_port_t                  port;
    ngx_platform_smtp_conf_t  *scf;
#if (NGX_SSL)
    ngx_pool_cleanup_t        *cln;
#endif

    scf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_smtp_conf_t));
    if (scf == NULL) {
        return NULL;
    }

    p = url->data;
    last = p + url->len;

    if (url->len > 7 && ngx_strncasecmp(p, (u_char *) "smtp://", 7) == 0) {
        p += 7;
        port = 25;

    } else if (url->len > 8
               && ngx_strncasecmp(p, (u_char *) "smtps://", 8) == 0)
    {
        p += 8;
        port = 465;
        scf->implicit_tls = 1;

    } else {
        goto invalid;
    }

    host = p;
    end = ngx_strlchr(p, last, '/');

    if (end == NULL) {
        end = last;
    }

    /* the EHLO name: the path, or this host's name */

    if (last - end > 1) {
        scf->helo.data = end + 1;
        scf->helo.len = last - end - 1;

        for (p = scf->helo.data; p < last; p++) {
            if (*p <= ' ' || *p >= 0x7f || *p == '/' || *p == '?'
                || *p == '#' || *p == '%' || *p == '@')
            {
                goto invalid;
            }
        }

    } else {
        scf->helo = cf->cycle->hostname;
    }

    len = end - host;

    if (len > 2 && host[0] == '[' && host[len - 1] == ']') {
        rc = ngx_parse_addr(cf->pool, &scf->addr, host + 1, len - 2);

    } else {
        rc = ngx_parse_addr_port(cf->pool, &scf->addr, host, len);
    }

    if (rc != NGX_OK) {
        goto invalid;
    }

    if (ngx_inet_get_port(scf->addr.sockaddr) == 0) {
        ngx_inet_set_port(scf->addr.sockaddr, port);
    }

    /* "127.0.0.1:25" for the log, "127.0.0.1" for the certificate */

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN);
    if (p == NULL) {
        return NULL;
    }

    scf->addr.name.data = p;
    scf->addr.name.len = ngx_sock_ntop(scf->addr.sockaddr,
                                       scf->addr.socklen, p,
                                       NGX_SOCKADDR_STRLEN, 1);

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NULL;
    }

    scf->host.data = p;
    scf->host.len = ngx_sock_ntop(scf->addr.sockaddr, scf->addr.socklen, p,
                                  NGX_SOCKADDR_STRLEN, 0);
    p[scf->host.len] = '\0';

    scf->starttls = starttls;
    scf->user = *user;
    scf->password = *password;
    scf->timeout = timeout;

    if (!scf->implicit_tls && starttls == NGX_PLATFORM_SMTP_STARTTLS_OFF) {
        return scf;
    }

#if (NGX_SSL)

    scf->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (scf->ssl == NULL) {
        return NULL;
    }

    scf->ssl->log = cf->log;

    if (ngx_ssl_create(scf->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(scf->ssl);
        return NULL;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = scf->ssl;

    /*
     * The handshake does not stop at a bad certificate: its verification
     * result is checked afterwards, as ngx_http_upstream does.
     */

    if (trusted_certificate->len) {
        if (ngx_ssl_trusted_certificate(cf, scf->ssl, trusted_certificate,
                                        10)
            != NGX_OK)
        {
            return NULL;
        }

    } else if (SSL_CTX_set_default_verify_paths(scf->ssl->ctx) != 1) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "SSL_CTX_set_default_verify_paths() failed");
        return NULL;
    }

    return scf;

#else

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "platform_smtp_url \"%V\": TLS needs nginx built "
                       "with OpenSSL", url);
    return NULL;

#endif

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid platform_smtp_url \"%V\"", url);
    return NULL;
}


/* a transfer */


ngx_int_t
ngx_platform_smtp_start(ngx_platform_smtp_t *s)
{
    ngx_int_t               rc;
    ngx_err_t               err;
    ngx_connection_t       *c;
    ngx_peer_connection_t  *pc;
    u_char                  errstr[NGX_MAX_ERROR_STR];

    s->error = NULL;
    s->exiting = 0;

    if (ngx_platform_smtp_prepare(s) != NGX_OK) {
        /* the error is set */
        return NGX_ERROR;
    }

    pc = &s->peer;
    ngx_memzero(pc, sizeof(ngx_peer_connection_t));

    pc->sockaddr = s->conf->addr.sockaddr;
    pc->socklen = s->conf->addr.socklen;
    pc->name = &s->conf->addr.name;
    pc->get = ngx_event_get_peer;
    pc->log = s->log;
    pc->log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(pc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        err = ngx_socket_errno;

        s->error = ngx_pnalloc(s->pool, NGX_MAX_ERROR_STR);
        if (s->error == NULL) {
            s->error = (u_char *) "SMTP connect() failed";
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED && err) {
            *ngx_strerror(err, errstr, sizeof(errstr) - 1) = '\0';
            *ngx_snprintf(s->error, NGX_MAX_ERROR_STR - 1,
                          "SMTP connect() to %V failed (%d: %s)",
                          pc->name, err, errstr) = '\0';

        } else {
            *ngx_snprintf(s->error, NGX_MAX_ERROR_STR - 1,
                          "SMTP connect() to %V failed", pc->name) = '\0';
        }

        return NGX_ERROR;
    }

    c = pc->connection;

    c->data = s;
    c->pool = s->pool;
    c->read->handler = ngx_platform_smtp_handler;
    c->write->handler = ngx_platform_smtp_handler;

    /* a worker that starts shutting down closes it: see the handler */
    c->idle = 1;

    s->state = NGX_PLATFORM_SMTP_CONNECT;
    s->writing = 0;
    s->tls = 0;
    s->in_pos = s->in;
    s->in_last = s->in;
    s->active = 1;

    s->timer.handler = ngx_platform_smtp_timeout_handler;
    s->timer.data = s;
    s->timer.log = s->log;

    ngx_add_timer(&s->timer, s->conf->timeout);

    if (rc == NGX_OK) {
        /* connected at once: carry on from the event loop */
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/* gives up a transfer in flight; the handler is not called */

void
ngx_platform_smtp_abort(ngx_platform_smtp_t *s)
{
    if (!s->active) {
        return;
    }

    ngx_platform_smtp_close(s);
    s->active = 0;
}


/* recipients as a list, the message as it is sent after DATA */

static ngx_int_t
ngx_platform_smtp_prepare(ngx_platform_smtp_t *s)
{
    u_char     *p, *last, *line, *end, *d;
    ngx_uint_t  n, bol;

    last = s->rcpt.data + s->rcpt.len;
    n = 0;

    for (p = s->rcpt.data; p < last; p++) {
        if (*p == LF) {
            n++;
        }
    }

    s->rcpts = ngx_palloc(s->pool, (n + 1) * sizeof(ngx_str_t));
    if (s->rcpts == NULL) {
        s->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    s->nrcpts = 0;
    s->next_rcpt = 0;

    for (line = s->rcpt.data; line < last; line = end + 1) {
        end = ngx_strlchr(line, last, LF);

        if (end == NULL) {
            end = last;
        }

        p = end;

        while (p > line && (p[-1] == CR || p[-1] == ' ')) {
            p--;
        }

        if (p == line) {
            continue;
        }

        for (d = line; d < p; d++) {
            if (*d <= ' ' || *d == '<' || *d == '>' || *d == 0x7f) {
                s->error = (u_char *) "invalid recipient address";
                return NGX_ERROR;
            }
        }

        s->rcpts[s->nrcpts].data = line;
        s->rcpts[s->nrcpts].len = p - line;
        s->nrcpts++;
    }

    if (s->nrcpts == 0) {
        s->error = (u_char *) "no recipients";
        return NGX_ERROR;
    }

    for (p = s->from.data; p < s->from.data + s->from.len; p++) {
        if (*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f) {
            s->error = (u_char *) "invalid sender address";
            return NGX_ERROR;
        }
    }

    /* CRLF line ends, dot-stuffing, CRLF.CRLF at the end */

    d = ngx_pnalloc(s->pool, 2 * s->message.len + sizeof(CRLF "." CRLF));
    if (d == NULL) {
        s->error = (u_char *) "out of memory";
        return NGX_ERROR;
    }

    s->out = d;

    p = s->message.data;
    last = p + s->message.len;
    bol = 1;

    while (p < last) {

        if (*p == CR || *p == LF) {
            if (*p == CR && p + 1 < last && p[1] == LF) {
                p++;
            }

            p++;
            *d++ = CR;
            *d++ = LF;
            bol = 1;
            continue;
        }

        if (bol && *p == '.') {
            *d++ = '.';
        }

        *d++ = *p++;
        bol = 0;
    }

    if (!bol) {
        *d++ = CR;
        *d++ = LF;
    }

    d = ngx_cpymem(d, "." CRLF, sizeof("." CRLF) - 1);

    s->message.data = s->out;
    s->message.len = d - s->out;

    s->out = NULL;

    return NGX_OK;
}


static void
ngx_platform_smtp_handler(ngx_event_t *ev)
{
    int                   err;
    socklen_t             len;
    ngx_connection_t     *c;
    ngx_platform_smtp_t  *s;
    u_char                errstr[NGX_MAX_ERROR_STR];

    c = ev->data;
    s = c->data;

    if (c->close) {
        /* the worker is shutting down */
        s->exiting = 1;
        ngx_platform_smtp_finalize(s, (u_char *) "the worker is exiting");
        return;
    }

    if (s->state != NGX_PLATFORM_SMTP_CONNECT) {
        ngx_platform_smtp_process(s);
        return;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        *ngx_strerror(err, errstr, sizeof(errstr) - 1) = '\0';
        (void) ngx_platform_smtp_fail(s, "SMTP connect() to %V failed "
                                      "(%d: %s)", s->peer.name, err, errstr);
        return;
    }

    ngx_platform_smtp_connected(s);
}


static void
ngx_platform_smtp_timeout_handler(ngx_event_t *ev)
{
    ngx_platform_smtp_t  *s;

    s = ev->data;

    (void) ngx_platform_smtp_fail(s, "SMTP timed out (%s)",
                                  ngx_platform_smtp_steps[s->state]);
}


static void
ngx_platform_smtp_connected(ngx_platform_smtp_t *s)
{
    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, s->log, 0,
                   "platform smtp: connected to %V", s->peer.name);

    if (s->conf->implicit_tls) {
        (void) ngx_platform_smtp_tls(s);
        return;
    }

    s->state = NGX_PLATFORM_SMTP_GREETING;

    ngx_platform_smtp_process(s);
}


/* until a write or a read must wait, or the transfer is over */

static void
ngx_platform_smtp_process(ngx_platform_smtp_t *s)
{
    for ( ;; ) {

        if (s->writing && ngx_platform_smtp_write(s) != NGX_OK) {
            return;
        }

        if (ngx_platform_smtp_read_reply(s) != NGX_OK) {
            return;
        }

        if (ngx_platform_smtp_reply(s) != NGX_OK) {
            return;
        }
    }
}


/* NGX_OK: all sent; NGX_AGAIN; NGX_DONE: the transfer has failed */

static ngx_int_t
ngx_platform_smtp_write(ngx_platform_smtp_t *s)
{
    size_t             size;
    ssize_t            n;
    ngx_connection_t  *c;

    c = s->peer.connection;

    while (s->out < s->out_last) {
        size = ngx_min((size_t) (s->out_last - s->out),
                       NGX_PLATFORM_SMTP_SEND_MAX);

        n = c->send(c, s->out, size);

        if (n > 0) {
            s->out += n;
            continue;
        }

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return ngx_platform_smtp_fail(s, "SMTP event failed (%s)",
                                    ngx_platform_smtp_steps[s->state]);
            }

            return NGX_AGAIN;
        }

        return ngx_platform_smtp_fail(s, "SMTP connection to the relay "
                                      "lost (sending, %s)",
                                      ngx_platform_smtp_steps[s->state]);
    }

    s->writing = 0;

    return NGX_OK;
}


/*
 * Reads a complete reply: s->code and s->reply (its last line).
 * NGX_OK, NGX_AGAIN, or NGX_DONE: the transfer has failed.
 */

static ngx_int_t
ngx_platform_smtp_read_reply(ngx_platform_smtp_t *s)
{
    u_char            *p, *line;
    size_t             len;
    ssize_t            n;
    ngx_uint_t         code, i;
    ngx_connection_t  *c;

    c = s->peer.connection;

    for ( ;; ) {

        while ((p = ngx_strlchr(s->in_pos, s->in_last, LF)) != NULL) {
            line = s->in_pos;
            len = p - line;
            s->in_pos = p + 1;

            if (len && line[len - 1] == CR) {
                len--;
            }

            ngx_log_debug2(NGX_LOG_DEBUG_EVENT, s->log, 0,
                           "platform smtp: reply \"%*s\"", len, line);

            if (len < 3
                || line[0] < '1' || line[0] > '5'
                || line[1] < '0' || line[1] > '9'
                || line[2] < '0' || line[2] > '9'
                || (len > 3 && line[3] != ' ' && line[3] != '-'))
            {
                return ngx_platform_smtp_fail(s, "SMTP invalid reply (%s)",
                                    ngx_platform_smtp_steps[s->state]);
            }

            code = (line[0] - '0') * 100 + (line[1] - '0') * 10
                   + (line[2] - '0');

            if (s->state == NGX_PLATFORM_SMTP_EHLO && code == 250) {
                ngx_platform_smtp_ehlo_line(s, line + 4,
                                            len > 4 ? len - 4 : 0);
            }

            if (len > 3 && line[3] == '-') {
                continue;
            }

            /* the last line, printable, for error messages */

            len = ngx_min(len, sizeof(s->reply));

            for (i = 0; i < len; i++) {
                s->reply[i] = (line[i] < ' ' || line[i] == 0x7f)
                              ? '?' : line[i];
            }

            s->reply_len = len;
            s->code = code;

            return NGX_OK;
        }

        /* keep a partial line at the start of the buffer */

        len = s->in_last - s->in_pos;

        if (len == sizeof(s->in)) {
            return ngx_platform_smtp_fail(s, "SMTP reply line too long (%s)",
                                    ngx_platform_smtp_steps[s->state]);
        }

        if (s->in_pos != s->in) {
            ngx_memmove(s->in, s->in_pos, len);
            s->in_pos = s->in;
            s->in_last = s->in + len;
        }

        n = c->recv(c, s->in_last, s->in + sizeof(s->in) - s->in_last);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                return ngx_platform_smtp_fail(s, "SMTP event failed (%s)",
                                    ngx_platform_smtp_steps[s->state]);
            }

            return NGX_AGAIN;
        }

        if (n == NGX_ERROR || n == 0) {
            return ngx_platform_smtp_fail(s, "SMTP connection closed by the "
                                          "relay (%s)",
                                          ngx_platform_smtp_steps[s->state]);
        }

        s->in_last += n;
    }
}


/* a line of the EHLO reply, after "250-" or "250 " */

static void
ngx_platform_smtp_ehlo_line(ngx_platform_smtp_t *s, u_char *p, size_t len)
{
    u_char  *last, *word;

    last = p + len;

    if (len == 8 && ngx_strncasecmp(p, (u_char *) "STARTTLS", 8) == 0) {
        s->ehlo_starttls = 1;
        return;
    }

    if (len < 5 || ngx_strncasecmp(p, (u_char *) "AUTH", 4) != 0
        || (p[4] != ' ' && p[4] != '='))
    {
        return;
    }

    p += 5;

    while (p < last) {
        word = p;

        while (p < last && *p != ' ') {
            p++;
        }

        if (p - word == 5 && ngx_strncasecmp(word, (u_char *) "PLAIN", 5)
                             == 0)
        {
            s->ehlo_plain = 1;

        } else if (p - word == 5
                   && ngx_strncasecmp(word, (u_char *) "LOGIN", 5) == 0)
        {
            s->ehlo_login = 1;
        }

        while (p < last && *p == ' ') {
            p++;
        }
    }
}


/* NGX_OK: a command to send next; NGX_DONE: over, or TLS started */

static ngx_int_t
ngx_platform_smtp_reply(ngx_platform_smtp_t *s)
{
    ngx_uint_t                 expected;
    ngx_platform_smtp_conf_t  *scf;

    scf = s->conf;

    switch (s->state) {

    case NGX_PLATFORM_SMTP_GREETING:
    case NGX_PLATFORM_SMTP_STARTTLS:
        expected = 220;
        break;

    case NGX_PLATFORM_SMTP_AUTH_PLAIN:
    case NGX_PLATFORM_SMTP_AUTH_PASS:
        expected = 235;
        break;

    case NGX_PLATFORM_SMTP_AUTH_LOGIN:
    case NGX_PLATFORM_SMTP_AUTH_USER:
        expected = 334;
        break;

    case NGX_PLATFORM_SMTP_DATA:
        expected = 354;
        break;

    case NGX_PLATFORM_SMTP_RCPT:
        expected = (s->code == 251) ? 251 : 250;
        break;

    default:
        expected = 250;
    }

    if (s->code != expected) {
        return ngx_platform_smtp_fail(s, "SMTP %*s (%s)",
                                      s->reply_len, s->reply,
                                      ngx_platform_smtp_steps[s->state]);
    }

    switch (s->state) {

    case NGX_PLATFORM_SMTP_GREETING:
        return ngx_platform_smtp_ehlo(s);

    case NGX_PLATFORM_SMTP_EHLO:

        if (!s->tls && scf->starttls != NGX_PLATFORM_SMTP_STARTTLS_OFF) {

            if (s->ehlo_starttls) {
                return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_STARTTLS,
                                              "STARTTLS" CRLF);
            }

            if (scf->starttls == NGX_PLATFORM_SMTP_STARTTLS_REQ) {
                return ngx_platform_smtp_fail(s, "SMTP the relay does not "
                                              "offer STARTTLS "
                                              "(platform_smtp_starttls "
                                              "required)");
            }
        }

        if (scf->user.len) {
            return ngx_platform_smtp_auth(s);
        }

        return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_MAIL,
                                      "MAIL FROM:<%V>" CRLF, &s->from);

    case NGX_PLATFORM_SMTP_STARTTLS:

        /* nothing may come before the handshake (CVE-2011-0411) */

        if (s->in_pos != s->in_last) {
            return ngx_platform_smtp_fail(s, "SMTP data after the reply to "
                                          "STARTTLS");
        }

        return ngx_platform_smtp_tls(s);

    case NGX_PLATFORM_SMTP_AUTH_LOGIN:
    case NGX_PLATFORM_SMTP_AUTH_USER:
        return ngx_platform_smtp_auth(s);

    case NGX_PLATFORM_SMTP_AUTH_PLAIN:
    case NGX_PLATFORM_SMTP_AUTH_PASS:
        return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_MAIL,
                                      "MAIL FROM:<%V>" CRLF, &s->from);

    case NGX_PLATFORM_SMTP_MAIL:
    case NGX_PLATFORM_SMTP_RCPT:
        return ngx_platform_smtp_rcpt(s);

    case NGX_PLATFORM_SMTP_DATA:
        s->state = NGX_PLATFORM_SMTP_BODY;
        s->out = s->message.data;
        s->out_last = s->message.data + s->message.len;
        s->writing = 1;
        return NGX_OK;

    default: /* NGX_PLATFORM_SMTP_BODY */
        ngx_platform_smtp_quit(s);
        return NGX_DONE;
    }
}


static ngx_int_t
ngx_platform_smtp_ehlo(ngx_platform_smtp_t *s)
{
    s->ehlo_starttls = 0;
    s->ehlo_plain = 0;
    s->ehlo_login = 0;

    return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_EHLO, "EHLO %V" CRLF,
                                  &s->conf->helo);
}


/* the next step of AUTH PLAIN or LOGIN; credentials are never logged */

static ngx_int_t
ngx_platform_smtp_auth(ngx_platform_smtp_t *s)
{
    u_char                    *p;
    ngx_str_t                  plain, encoded;
    ngx_uint_t                 state;
    ngx_platform_smtp_conf_t  *scf;

    scf = s->conf;

    switch (s->state) {

    case NGX_PLATFORM_SMTP_AUTH_LOGIN:
        plain = scf->user;
        state = NGX_PLATFORM_SMTP_AUTH_USER;
        break;

    case NGX_PLATFORM_SMTP_AUTH_USER:
        plain = scf->password;
        state = NGX_PLATFORM_SMTP_AUTH_PASS;
        break;

    default: /* after EHLO */

        if (s->ehlo_plain) {
            /* "\0user\0password" */

            plain.len = 1 + scf->user.len + 1 + scf->password.len;
            plain.data = ngx_pnalloc(s->pool, plain.len);
            if (plain.data == NULL) {
                return ngx_platform_smtp_fail(s, "out of memory");
            }

            p = plain.data;
            *p++ = '\0';
            p = ngx_cpymem(p, scf->user.data, scf->user.len);
            *p++ = '\0';
            ngx_memcpy(p, scf->password.data, scf->password.len);

            state = NGX_PLATFORM_SMTP_AUTH_PLAIN;
            break;
        }

        if (s->ehlo_login) {
            return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_AUTH_LOGIN,
                                          "AUTH LOGIN" CRLF);
        }

        return ngx_platform_smtp_fail(s, "SMTP the relay offers no AUTH "
                                      "PLAIN or LOGIN (after EHLO)");
    }

    encoded.len = ngx_base64_encoded_length(plain.len);
    encoded.data = ngx_pnalloc(s->pool, encoded.len);
    if (encoded.data == NULL) {
        return ngx_platform_smtp_fail(s, "out of memory");
    }

    ngx_encode_base64(&encoded, &plain);

    if (state == NGX_PLATFORM_SMTP_AUTH_PLAIN) {
        return ngx_platform_smtp_send(s, state, "AUTH PLAIN %V" CRLF,
                                      &encoded);
    }

    return ngx_platform_smtp_send(s, state, "%V" CRLF, &encoded);
}


static ngx_int_t
ngx_platform_smtp_rcpt(ngx_platform_smtp_t *s)
{
    ngx_str_t  *rcpt;

    if (s->next_rcpt == s->nrcpts) {
        return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_DATA,
                                      "DATA" CRLF);
    }

    rcpt = &s->rcpts[s->next_rcpt++];

    return ngx_platform_smtp_send(s, NGX_PLATFORM_SMTP_RCPT,
                                  "RCPT TO:<%V>" CRLF, rcpt);
}


/* a command to write before the next reply; NGX_OK or NGX_DONE */

static ngx_int_t
ngx_platform_smtp_send(ngx_platform_smtp_t *s, ngx_uint_t state,
    const char *fmt, ...)
{
    u_char   *p;
    size_t    len;
    va_list   args;

    /* room for any command: the longest argument is in one of these */

    len = s->conf->helo.len + 2 * (s->conf->user.len + s->conf->password.len)
          + s->from.len + s->rcpt.len + 64;

    p = ngx_pnalloc(s->pool, len);
    if (p == NULL) {
        return ngx_platform_smtp_fail(s, "out of memory");
    }

    s->out = p;

    va_start(args, fmt);
    s->out_last = ngx_vslprintf(p, p + len, fmt, args);
    va_end(args);

    s->state = state;
    s->writing = 1;

    return NGX_OK;
}


/* NGX_DONE: the handshake goes on, or the transfer has failed */

static ngx_int_t
ngx_platform_smtp_tls(ngx_platform_smtp_t *s)
{
#if (NGX_SSL)

    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = s->peer.connection;

    if (ngx_ssl_create_connection(s->conf->ssl, c, NGX_SSL_CLIENT)
        != NGX_OK)
    {
        return ngx_platform_smtp_fail(s, "SMTP TLS connection not created");
    }

    s->state = NGX_PLATFORM_SMTP_HANDSHAKE;

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_platform_smtp_handshake_done;
        return NGX_DONE;
    }

    ngx_platform_smtp_handshake_done(c);

    return NGX_DONE;

#else

    return ngx_platform_smtp_fail(s, "SMTP TLS is not available");

#endif
}


#if (NGX_SSL)

static void
ngx_platform_smtp_handshake_done(ngx_connection_t *c)
{
    X509                 *cert;
    long                  rc;
    ngx_int_t             match;
    ngx_platform_smtp_t  *s;

    s = c->data;

    c->read->handler = ngx_platform_smtp_handler;
    c->write->handler = ngx_platform_smtp_handler;

    if (c->close) {
        s->exiting = 1;
        ngx_platform_smtp_finalize(s, (u_char *) "the worker is exiting");
        return;
    }

    if (c->ssl == NULL || !c->ssl->handshaked) {
        (void) ngx_platform_smtp_fail(s, "SMTP TLS handshake with %V failed",
                                      s->peer.name);
        return;
    }

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        (void) ngx_platform_smtp_fail(s, "SMTP TLS certificate of %V not "
                                      "trusted: (%l:%s)", s->peer.name, rc,
                                      X509_verify_cert_error_string(rc));
        return;
    }

    /* the relay is an address: the certificate must name it (IP SAN) */

    cert = SSL_get_peer_certificate(c->ssl->connection);

    if (cert == NULL) {
        (void) ngx_platform_smtp_fail(s, "SMTP TLS: %V sent no certificate",
                                      s->peer.name);
        return;
    }

    match = (X509_check_ip_asc(cert, (char *) s->conf->host.data, 0) == 1);

    X509_free(cert);

    if (!match) {
        (void) ngx_platform_smtp_fail(s, "SMTP TLS certificate does not "
                                      "match \"%V\"", &s->conf->host);
        return;
    }

    s->tls = 1;

    if (s->conf->implicit_tls) {
        s->state = NGX_PLATFORM_SMTP_GREETING;

    } else if (ngx_platform_smtp_ehlo(s) != NGX_OK) {
        return;
    }

    ngx_platform_smtp_process(s);
}

#endif


/*
 * Delivered.  QUIT is sent if the socket takes it at once, and the
 * connection closed without waiting for its reply.
 */

static void
ngx_platform_smtp_quit(ngx_platform_smtp_t *s)
{
    ngx_connection_t  *c;

    c = s->peer.connection;

    (void) c->send(c, (u_char *) "QUIT" CRLF, sizeof("QUIT" CRLF) - 1);

    ngx_platform_smtp_finalize(s, NULL);
}


static ngx_int_t
ngx_platform_smtp_fail(ngx_platform_smtp_t *s, const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    p = ngx_pnalloc(s->pool, NGX_MAX_ERROR_STR);

    if (p == NULL) {
        p = (u_char *) "SMTP failed";

    } else {
        va_start(args, fmt);
        last = ngx_vslprintf(p, p + NGX_MAX_ERROR_STR - 1, fmt, args);
        va_end(args);

        *last = '\0';
    }

    ngx_platform_smtp_finalize(s, p);

    return NGX_DONE;
}


/* the connection is closed before the handler, which may free s */

static void
ngx_platform_smtp_finalize(ngx_platform_smtp_t *s, u_char *error)
{
    ngx_platform_smtp_close(s);

    s->active = 0;
    s->error = error;

    s->handler(s);
}


static void
ngx_platform_smtp_close(ngx_platform_smtp_t *s)
{
    ngx_connection_t  *c;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    if (s->timer.posted) {
        ngx_delete_posted_event(&s->timer);
    }

    c = s->peer.connection;

    if (c == NULL) {
        return;
    }

    s->peer.connection = NULL;

#if (NGX_SSL)

    if (c->ssl) {
        /* no close_notify exchange: nothing may wait */
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        (void) ngx_ssl_shutdown(c);
    }

#endif

    c->idle = 0;

    ngx_close_connection(c);
}
