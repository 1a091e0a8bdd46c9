
/*
 * placeholder: filled in by the auth/jobs work (see docs/auth-and-jobs.md)
 */


#include "ngx_platform_module.h"


static ngx_http_module_t  ngx_platform_auth_module_ctx = {
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
};


ngx_module_t  ngx_platform_auth_module = {
    NGX_MODULE_V1,
    &ngx_platform_auth_module_ctx,
    NULL,
    NGX_HTTP_MODULE,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NGX_MODULE_V1_PADDING
};
