
/*
 * ngx_platform_module: the http{}-level part shared by the other modules:
 * platform_pg blocks, the registry of prepared statements, the statistics
 * zone, and starting and stopping the pools in each worker.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"


static void *ngx_platform_create_main_conf(ngx_conf_t *cf);
static char *ngx_platform_pg_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_platform_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_platform_init_stats_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_platform_init_process(ngx_cycle_t *cycle);
static void ngx_platform_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_platform_commands[] = {

    { ngx_string("platform_pg"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_platform_pg_block,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_platform_postconfiguration,        /* postconfiguration */

    ngx_platform_create_main_conf,         /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_platform_module = {
    NGX_MODULE_V1,
    &ngx_platform_module_ctx,              /* module context */
    ngx_platform_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_platform_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_platform_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_platform_create_main_conf(ngx_conf_t *cf)
{
    ngx_platform_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pmcf->upstreams, cf->pool, 2,
                       sizeof(ngx_platform_pg_upstream_t *))
        != NGX_OK
        || ngx_array_init(&pmcf->statements, cf->pool, 16, sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NULL;
    }

    return pmcf;
}


static char *
ngx_platform_pg_block(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_main_conf_t  *pmcf = conf;

    char                         *rv;
    ngx_str_t                    *value;
    ngx_conf_t                    save;
    ngx_platform_pg_upstream_t   *up, **upp;

    value = cf->args->elts;

    if (ngx_platform_pg_upstream_find(cf, &value[1]) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate platform_pg \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    up = ngx_pcalloc(cf->pool, sizeof(ngx_platform_pg_upstream_t));
    if (up == NULL) {
        return NGX_CONF_ERROR;
    }

    up->name = value[1];
    up->index = pmcf->upstreams.nelts;
    up->pool_size = NGX_CONF_UNSET_UINT;
    up->pipeline_depth = NGX_CONF_UNSET_UINT;
    up->queue_size = NGX_CONF_UNSET_UINT;
    up->queue_timeout = NGX_CONF_UNSET_MSEC;
    up->connect_timeout = NGX_CONF_UNSET_MSEC;
    up->query_timeout = NGX_CONF_UNSET_MSEC;
    up->backoff_min = NGX_CONF_UNSET_MSEC;
    up->backoff_max = NGX_CONF_UNSET_MSEC;

    upp = ngx_array_push(&pmcf->upstreams);
    if (upp == NULL) {
        return NGX_CONF_ERROR;
    }

    *upp = up;

    save = *cf;
    cf->handler = ngx_platform_pg_conf_entry;
    cf->handler_conf = (char *) up;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    return ngx_platform_pg_conf_done(cf, up);
}


ngx_platform_pg_upstream_t *
ngx_platform_pg_upstream_find(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                    i;
    ngx_platform_main_conf_t     *pmcf;
    ngx_platform_pg_upstream_t  **upp;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_module);

    upp = pmcf->upstreams.elts;

    for (i = 0; i < pmcf->upstreams.nelts; i++) {
        if (name == NULL) {
            return upp[i];
        }

        if (upp[i]->name.len == name->len
            && ngx_strncmp(upp[i]->name.data, name->data, name->len) == 0)
        {
            return upp[i];
        }
    }

    return NULL;
}


/* register a module's variables, a list ended by ngx_http_null_variable */

ngx_int_t
ngx_platform_add_variables(ngx_conf_t *cf, ngx_http_variable_t *vars)
{
    ngx_http_variable_t  *var, *v;

    for (v = vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* statements are numbered once per configuration; identical SQL shares one */

ngx_int_t
ngx_platform_statement_add(ngx_conf_t *cf, ngx_str_t *sql)
{
    ngx_str_t                 *s;
    ngx_uint_t                 i;
    ngx_platform_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_module);

    s = pmcf->statements.elts;

    for (i = 0; i < pmcf->statements.nelts; i++) {
        if (s[i].len == sql->len
            && ngx_strncmp(s[i].data, sql->data, sql->len) == 0)
        {
            return i;
        }
    }

    s = ngx_array_push(&pmcf->statements);
    if (s == NULL) {
        return NGX_ERROR;
    }

    /* libpq wants it NUL-terminated */

    s->len = sql->len;
    s->data = ngx_pnalloc(cf->pool, sql->len + 1);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(s->data, sql->data, sql->len) = '\0';

    return pmcf->statements.nelts - 1;
}


static ngx_int_t
ngx_platform_postconfiguration(ngx_conf_t *cf)
{
    size_t                     size;
    ngx_str_t                  name = ngx_string("platform_stats");
    ngx_platform_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_platform_module);

    if (pmcf->upstreams.nelts == 0) {
        return NGX_OK;
    }

    size = NGX_PLATFORM_STATS_WORKERS * pmcf->upstreams.nelts
           * sizeof(ngx_platform_pg_stats_t);

    /* room for the slab allocator's own bookkeeping */
    size = ngx_align(size, ngx_pagesize) + 8 * ngx_pagesize;

    pmcf->stats_zone = ngx_shared_memory_add(cf, &name, size,
                                             &ngx_platform_module);
    if (pmcf->stats_zone == NULL) {
        return NGX_ERROR;
    }

    pmcf->stats_zone->init = ngx_platform_init_stats_zone;
    pmcf->stats_zone->data = pmcf;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_init_stats_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_platform_main_conf_t  *opmcf = data;

    size_t                     size;
    ngx_slab_pool_t           *shpool;
    ngx_platform_main_conf_t  *pmcf;

    pmcf = zone->data;

    /* a zone kept over a reload has the same size, so the same layout */

    if (opmcf) {
        pmcf->stats = opmcf->stats;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        pmcf->stats = shpool->data;
        return NGX_OK;
    }

    size = NGX_PLATFORM_STATS_WORKERS * pmcf->upstreams.nelts
           * sizeof(ngx_platform_pg_stats_t);

    pmcf->stats = ngx_slab_calloc(shpool, size);
    if (pmcf->stats == NULL) {
        return NGX_ERROR;
    }

    shpool->data = pmcf->stats;

    return NGX_OK;
}


static ngx_int_t
ngx_platform_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_platform_main_conf_t     *pmcf;
    ngx_platform_pg_stats_t      *stats;
    ngx_platform_pg_upstream_t  **upp;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_platform_module);

    if (pmcf == NULL || pmcf->upstreams.nelts == 0) {
        return NGX_OK;
    }

    upp = pmcf->upstreams.elts;

    for (i = 0; i < pmcf->upstreams.nelts; i++) {

        if (ngx_worker < NGX_PLATFORM_STATS_WORKERS) {
            stats = pmcf->stats + ngx_worker * pmcf->upstreams.nelts + i;

            ngx_memzero(stats, sizeof(ngx_platform_pg_stats_t));

        } else {
            stats = ngx_pcalloc(cycle->pool, sizeof(ngx_platform_pg_stats_t));
            if (stats == NULL) {
                return NGX_ERROR;
            }
        }

        if (ngx_platform_pg_init_process(cycle, upp[i],
                                         pmcf->statements.nelts,
                                         pmcf->statements.elts, stats)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_platform_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_platform_main_conf_t     *pmcf;
    ngx_platform_pg_upstream_t  **upp;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_platform_module);

    if (pmcf == NULL) {
        return;
    }

    upp = pmcf->upstreams.elts;

    for (i = 0; i < pmcf->upstreams.nelts; i++) {
        ngx_platform_pg_exit_process(upp[i]);
    }
}
