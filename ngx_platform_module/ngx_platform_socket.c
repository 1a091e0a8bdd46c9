
/*
 * An nginx connection around a socket that a library owns (libpq's,
 * libcurl's).  Its events are registered level-triggered: the library reads
 * what it needs, not until EAGAIN, so we must be woken again while data
 * remain.  Releasing it leaves the socket to the library, which closes it.
 */


#include "ngx_platform_module.h"


void
ngx_platform_socket_events(ngx_connection_t *c, ngx_uint_t rd, ngx_uint_t wr)
{
    ngx_event_t  *rev, *wev;

    rev = c->read;
    wev = c->write;

    if (wr && !wev->active) {
        ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);

    } else if (!wr && wev->active) {
        ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }

    if (rd && !rev->active) {
        ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT);

    } else if (!rd && rev->active) {
        ngx_del_event(rev, NGX_READ_EVENT, 0);
    }
}


/*
 * closing: the library has closed the socket or is about to (libpq on EOF
 * or PQfinish), so the kernel forgets it by itself and no epoll_ctl() may
 * be made on it; otherwise (libcurl keeping a socket for reuse) its events
 * are removed now.
 */

void
ngx_platform_socket_release(ngx_connection_t *c, ngx_uint_t closing)
{
    ngx_uint_t  flags;

    flags = closing ? NGX_CLOSE_EVENT : 0;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, flags);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
    }

    c->idle = 0;
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}
