
/*
 * Event chat (ngx_platform_chat.c): what other parts of the module see.
 */


#ifndef _NGX_PLATFORM_CHAT_H_INCLUDED_
#define _NGX_PLATFORM_CHAT_H_INCLUDED_


#include "ngx_platform_module.h"


/* platform_status lines, and an upper bound of their size */
u_char *ngx_platform_chat_status(ngx_http_request_t *r, u_char *p,
    u_char *last);
size_t ngx_platform_chat_status_size(ngx_http_request_t *r);


extern ngx_module_t  ngx_platform_chat_module;


#endif /* _NGX_PLATFORM_CHAT_H_INCLUDED_ */
