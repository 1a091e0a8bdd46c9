
/*
 * Image uploads: platform_upload stores a PUT or POST body as an image
 * before the location's platform_query runs.
 *
 *   platform_upload DIR [max_size=5m] [types=jpeg,png,webp];
 *
 * nginx keeps the body in a temporary file (client_body_temp_path); the
 * first bytes decide the type (JPEG FF D8 FF, PNG 89 50 4E 47 0D 0A 1A 0A,
 * WebP "RIFF" <size> "WEBP"): the Content-Type header and any file name are
 * never looked at.  Anything else is answered 415, a body over max_size
 * 413, and the query does not run.  An image is named by the SHA-256 of its
 * bytes and the temporary file is renamed into DIR/<2 hex>/<64 hex>.<ext>
 * (atomic; the same bytes give the same name, and a name already there is
 * left alone).  The query then sees $platform_upload_name (the path below
 * DIR), $platform_upload_type, $platform_upload_size and, when the headers
 * read in the first 64 KB give them, $platform_upload_width and
 * $platform_upload_height.
 *
 * A file whose query then fails stays: it is harmless (content-addressed,
 * no row names it) and the media sweep removes files no row refers to
 * (docs/media.md).
 */


#include "ngx_platform_module.h"
#include <sodium.h>


#define NGX_PLATFORM_UPLOAD_JPEG   0x01
#define NGX_PLATFORM_UPLOAD_PNG    0x02
#define NGX_PLATFORM_UPLOAD_WEBP   0x04
#define NGX_PLATFORM_UPLOAD_ALL    0x07

/* the bytes read at once; the headers looked at are in the first read */
#define NGX_PLATFORM_UPLOAD_CHUNK  65536


typedef struct {
    ngx_str_t                    dir;        /* full path; NULL: off */
    size_t                       max_size;
    ngx_uint_t                   types;
    ngx_path_t                  *path;
} ngx_platform_upload_loc_conf_t;


typedef struct {
    ngx_str_t                    name;       /* "ab/ab...ef.jpg" */
    ngx_str_t                    type;
    off_t                        size;
    ngx_uint_t                   width;      /* 0: unknown */
    ngx_uint_t                   height;
} ngx_platform_upload_ctx_t;


typedef struct {
    ngx_uint_t                   type;
    ngx_str_t                    name;       /* in types= */
    ngx_str_t                    ext;
    ngx_str_t                    mime;
} ngx_platform_upload_type_t;


static ngx_platform_upload_type_t  ngx_platform_upload_types[] = {
    { NGX_PLATFORM_UPLOAD_JPEG, ngx_string("jpeg"), ngx_string("jpg"),
      ngx_string("image/jpeg") },
    { NGX_PLATFORM_UPLOAD_PNG, ngx_string("png"), ngx_string("png"),
      ngx_string("image/png") },
    { NGX_PLATFORM_UPLOAD_WEBP, ngx_string("webp"), ngx_string("webp"),
      ngx_string("image/webp") },
    { 0, ngx_null_string, ngx_null_string, ngx_null_string }
};


enum {
    ngx_platform_upload_var_name = 0,
    ngx_platform_upload_var_type,
    ngx_platform_upload_var_size,
    ngx_platform_upload_var_width,
    ngx_platform_upload_var_height
};


static ngx_platform_upload_type_t *ngx_platform_upload_sniff(u_char *p,
    size_t len, ngx_uint_t *width, ngx_uint_t *height);
static void ngx_platform_upload_jpeg_size(u_char *p, size_t len,
    ngx_uint_t *width, ngx_uint_t *height);
static ngx_int_t ngx_platform_upload_refuse(ngx_http_request_t *r,
    ngx_platform_upload_loc_conf_t *ulcf);
static ngx_int_t ngx_platform_upload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_platform_upload_add_variables(ngx_conf_t *cf);
static void *ngx_platform_upload_create_loc_conf(ngx_conf_t *cf);
static char *ngx_platform_upload_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_platform_upload(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_platform_upload_commands[] = {

    { ngx_string("platform_upload"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_platform_upload,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_platform_upload_module_ctx = {
    ngx_platform_upload_add_variables,     /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_platform_upload_create_loc_conf,   /* create location configuration */
    ngx_platform_upload_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_platform_upload_module = {
    NGX_MODULE_V1,
    &ngx_platform_upload_module_ctx,       /* module context */
    ngx_platform_upload_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_platform_upload_vars[] = {

    { ngx_string("platform_upload_name"), NULL,
      ngx_platform_upload_variable, ngx_platform_upload_var_name,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_upload_type"), NULL,
      ngx_platform_upload_variable, ngx_platform_upload_var_type,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_upload_size"), NULL,
      ngx_platform_upload_variable, ngx_platform_upload_var_size,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_upload_width"), NULL,
      ngx_platform_upload_variable, ngx_platform_upload_var_width,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("platform_upload_height"), NULL,
      ngx_platform_upload_variable, ngx_platform_upload_var_height,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * Called by platform_query before the body is read.  NGX_DECLINED: no
 * upload here (or not PUT/POST), the usual body rules apply; NGX_OK: the
 * body, of at most *max_size bytes, is to be read into a file for
 * ngx_platform_upload_store().
 */

ngx_int_t
ngx_platform_upload_init(ngx_http_request_t *r, off_t *max_size)
{
    ngx_platform_upload_loc_conf_t  *ulcf;

    ulcf = ngx_http_get_module_loc_conf(r, ngx_platform_upload_module);

    if (ulcf->dir.data == NULL
        || (r->method != NGX_HTTP_PUT && r->method != NGX_HTTP_POST))
    {
        return NGX_DECLINED;
    }

    *max_size = (off_t) ulcf->max_size;

    /* as the dav module does: a file that outlives the read, to rename */

    r->request_body_in_file_only = 1;
    r->request_body_in_persistent_file = 1;
    r->request_body_in_clean_file = 1;
    r->request_body_file_log_level = 0;

    return NGX_OK;
}


/*
 * Called by platform_query once the body is read.  NGX_DECLINED: the image
 * is stored and the variables are set, the query may run; anything else:
 * the request was answered (413, 415) or failed, finalize with it.
 */

ngx_int_t
ngx_platform_upload_store(ngx_http_request_t *r)
{
    u_char                          *buf, *p;
    off_t                            size, offset;
    size_t                           head;
    ssize_t                          n;
    ngx_str_t                        path;
    ngx_uint_t                       width, height;
    ngx_file_info_t                  fi;
    ngx_temp_file_t                 *tf;
    ngx_ext_rename_file_t            ext;
    ngx_platform_upload_ctx_t       *ctx;
    ngx_platform_upload_type_t      *type;
    ngx_platform_upload_loc_conf_t  *ulcf;
    crypto_hash_sha256_state         st;
    u_char                           hash[crypto_hash_sha256_BYTES];
    u_char                           hex[2 * crypto_hash_sha256_BYTES];

    ulcf = ngx_http_get_module_loc_conf(r, ngx_platform_upload_module);

    if (r->request_body == NULL || r->request_body->temp_file == NULL) {
        /* no body at all */
        return ngx_platform_upload_refuse(r, ulcf);
    }

    tf = r->request_body->temp_file;

    if (ngx_fd_info(tf->file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                      ngx_fd_info_n " \"%V\" failed", &tf->file.name);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = ngx_file_size(&fi);

    if (size > (off_t) ulcf->max_size) {
        /* a chunked body: its size was not known before it was read */
        return ngx_platform_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body_too_large",
                                       "the file is too large");
    }

    if (size == 0) {
        return ngx_platform_upload_refuse(r, ulcf);
    }

    buf = ngx_pnalloc(r->pool, NGX_PLATFORM_UPLOAD_CHUNK);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the magic bytes and the dimensions, from the first chunk */

    head = (size_t) ngx_min(size, NGX_PLATFORM_UPLOAD_CHUNK);

    n = ngx_read_file(&tf->file, buf, head, 0);

    if (n != (ssize_t) head) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "platform_upload: could not read \"%V\"",
                      &tf->file.name);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    width = 0;
    height = 0;

    type = ngx_platform_upload_sniff(buf, head, &width, &height);

    if (type == NULL || !(type->type & ulcf->types)) {
        return ngx_platform_upload_refuse(r, ulcf);
    }

    /* SHA-256 of the whole file, read in chunks */

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, buf, head);

    for (offset = head; offset < size; offset += n) {
        n = ngx_read_file(&tf->file, buf,
                          (size_t) ngx_min(size - offset,
                                           NGX_PLATFORM_UPLOAD_CHUNK),
                          offset);

        if (n <= 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "platform_upload: could not read \"%V\"",
                          &tf->file.name);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        crypto_hash_sha256_update(&st, buf, n);
    }

    crypto_hash_sha256_final(&st, hash);
    ngx_hex_dump(hex, hash, sizeof(hash));

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_platform_upload_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* "ab/" hex "." ext */

    ctx->name.len = 3 + sizeof(hex) + 1 + type->ext.len;
    ctx->name.data = ngx_pnalloc(r->pool, ctx->name.len);
    if (ctx->name.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(ctx->name.data, hex, 2);
    *p++ = '/';
    p = ngx_cpymem(p, hex, sizeof(hex));
    *p++ = '.';
    ngx_memcpy(p, type->ext.data, type->ext.len);

    ctx->type = type->mime;
    ctx->size = size;
    ctx->width = width;
    ctx->height = height;

    path.len = ulcf->dir.len + 1 + ctx->name.len;
    path.data = ngx_pnalloc(r->pool, path.len + 1);
    if (path.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(path.data, ulcf->dir.data, ulcf->dir.len);
    *p++ = '/';
    p = ngx_cpymem(p, ctx->name.data, ctx->name.len);
    *p = '\0';

    if (ngx_file_info(path.data, &fi) == NGX_FILE_ERROR) {

        /* new: the temporary file becomes the image (it is deleted else) */

        ext.access = NGX_FILE_DEFAULT_ACCESS;
        ext.path_access = 0755;
        ext.time = -1;
        ext.fd = tf->file.fd;
        ext.create_path = 1;
        ext.delete_file = 1;
        ext.log = r->connection->log;

        if (ngx_ext_rename_file(&tf->file.name, &path, &ext) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "platform_upload: stored \"%V\"", &path);
    }

    ngx_http_set_ctx(r, ctx, ngx_platform_upload_module);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_platform_upload_refuse(ngx_http_request_t *r,
    ngx_platform_upload_loc_conf_t *ulcf)
{
    u_char                      *p, *last;
    ngx_platform_upload_type_t  *t;
    u_char                       msg[128];

    p = ngx_cpymem(msg, "the body is not an image of an accepted type (",
                   sizeof("the body is not an image of an accepted type (")
                   - 1);
    last = msg + sizeof(msg) - 3;

    for (t = ngx_platform_upload_types; t->type; t++) {
        if (!(t->type & ulcf->types)) {
            continue;
        }

        if (p[-1] != '(') {
            p = ngx_slprintf(p, last, ", ");
        }

        p = ngx_slprintf(p, last, "%V", &t->name);
    }

    *p++ = ')';
    *p = '\0';

    return ngx_platform_send_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                   "unsupported_media_type", (char *) msg);
}


/*
 * The type by the magic bytes; the dimensions when the first bytes hold
 * them (every read is bounds-checked against len).
 */

#define ngx_platform_be16(p)  ((ngx_uint_t) (p)[0] << 8 | (p)[1])
#define ngx_platform_be32(p)                                                 \
    ((ngx_uint_t) (p)[0] << 24 | (ngx_uint_t) (p)[1] << 16                   \
     | (ngx_uint_t) (p)[2] << 8 | (p)[3])
#define ngx_platform_le16(p)  ((ngx_uint_t) (p)[1] << 8 | (p)[0])
#define ngx_platform_le24(p)                                                 \
    ((ngx_uint_t) (p)[2] << 16 | (ngx_uint_t) (p)[1] << 8 | (p)[0])

static ngx_platform_upload_type_t *
ngx_platform_upload_sniff(u_char *p, size_t len, ngx_uint_t *width,
    ngx_uint_t *height)
{
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        ngx_platform_upload_jpeg_size(p, len, width, height);
        return &ngx_platform_upload_types[0];
    }

    if (len >= 8 && ngx_memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) {

        /* the first chunk is IHDR: length, "IHDR", width, height */

        if (len >= 24 && ngx_memcmp(p + 12, "IHDR", 4) == 0) {
            *width = ngx_platform_be32(p + 16);
            *height = ngx_platform_be32(p + 20);
        }

        return &ngx_platform_upload_types[1];
    }

    if (len >= 12 && ngx_memcmp(p, "RIFF", 4) == 0
        && ngx_memcmp(p + 8, "WEBP", 4) == 0)
    {
        if (len >= 30 && ngx_memcmp(p + 12, "VP8X", 4) == 0) {
            /* canvas width - 1 and height - 1, 24 bits each */
            *width = ngx_platform_le24(p + 24) + 1;
            *height = ngx_platform_le24(p + 27) + 1;

        } else if (len >= 30 && ngx_memcmp(p + 12, "VP8 ", 4) == 0
                   && p[23] == 0x9d && p[24] == 0x01 && p[25] == 0x2a)
        {
            /* a key frame: start code, then 14-bit width and height */
            *width = ngx_platform_le16(p + 26) & 0x3fff;
            *height = ngx_platform_le16(p + 28) & 0x3fff;

        } else if (len >= 25 && ngx_memcmp(p + 12, "VP8L", 4) == 0
                   && p[20] == 0x2f)
        {
            /* signature, then width - 1 and height - 1, 14 bits each */
            *width = ((ngx_uint_t) p[21] | (ngx_uint_t) (p[22] & 0x3f) << 8)
                     + 1;
            *height = ((ngx_uint_t) p[22] >> 6 | (ngx_uint_t) p[23] << 2
                       | (ngx_uint_t) (p[24] & 0x0f) << 10)
                      + 1;
        }

        return &ngx_platform_upload_types[2];
    }

    return NULL;
}


/* the segments up to a start of frame (SOFn) marker: its height, width */

static void
ngx_platform_upload_jpeg_size(u_char *p, size_t len, ngx_uint_t *width,
    ngx_uint_t *height)
{
    size_t      i, seg;
    ngx_uint_t  marker;

    i = 2;

    while (i + 4 <= len) {

        if (p[i] != 0xff) {
            return;
        }

        marker = p[i + 1];

        if (marker == 0xff) {
            /* fill byte */
            i++;
            continue;
        }

        if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
            /* TEM, RSTn, SOI: no length */
            i += 2;
            continue;
        }

        if (marker == 0xd9 || marker == 0xda) {
            /* EOI, SOS: no frame header before the scan */
            return;
        }

        seg = ngx_platform_be16(p + i + 2);

        if (seg < 2) {
            return;
        }

        if (marker >= 0xc0 && marker <= 0xcf
            && marker != 0xc4 && marker != 0xc8 && marker != 0xcc)
        {
            /* length, precision, height, width */

            if (seg >= 7 && i + 9 <= len) {
                *height = ngx_platform_be16(p + i + 5);
                *width = ngx_platform_be16(p + i + 7);
            }

            return;
        }

        i += 2 + seg;
    }
}


/* $platform_upload_* */


static ngx_int_t
ngx_platform_upload_add_variables(ngx_conf_t *cf)
{
    return ngx_platform_add_variables(cf, ngx_platform_upload_vars);
}


static ngx_int_t
ngx_platform_upload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                     *p;
    ngx_uint_t                  n;
    ngx_platform_upload_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_platform_upload_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case ngx_platform_upload_var_name:
        v->data = ctx->name.data;
        v->len = ctx->name.len;
        break;

    case ngx_platform_upload_var_type:
        v->data = ctx->type.data;
        v->len = ctx->type.len;
        break;

    default: /* size, width, height */

        if (data == ngx_platform_upload_var_size) {
            p = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
            if (p == NULL) {
                return NGX_ERROR;
            }

            v->data = p;
            v->len = ngx_sprintf(p, "%O", ctx->size) - p;
            break;
        }

        n = (data == ngx_platform_upload_var_width) ? ctx->width
                                                    : ctx->height;

        if (n == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%ui", n) - p;
        break;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* configuration */


static void *
ngx_platform_upload_create_loc_conf(ngx_conf_t *cf)
{
    ngx_platform_upload_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_platform_upload_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->dir = { 0, NULL };
     *     conf->path = NULL;
     */

    conf->max_size = NGX_CONF_UNSET_SIZE;
    conf->types = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_platform_upload_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_platform_upload_loc_conf_t  *prev = parent;
    ngx_platform_upload_loc_conf_t  *conf = child;

    if (conf->dir.data == NULL) {
        conf->dir = prev->dir;
        conf->path = prev->path;
        conf->max_size = prev->max_size;
        conf->types = prev->types;
    }

    ngx_conf_merge_size_value(conf->max_size, prev->max_size,
                              5 * 1024 * 1024);
    ngx_conf_merge_uint_value(conf->types, prev->types,
                              NGX_PLATFORM_UPLOAD_ALL);

    return NGX_CONF_OK;
}


static char *
ngx_platform_upload(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_platform_upload_loc_conf_t  *ulcf = conf;

    u_char                      *p, *last, *comma;
    ngx_err_t                    err;
    ngx_str_t                   *value, s, dir;
    ngx_uint_t                   i;
    ngx_file_info_t              fi;
    ngx_platform_upload_type_t  *t;

    if (ulcf->dir.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            ulcf->max_size = ngx_parse_size(&s);

            if (ulcf->max_size == (size_t) NGX_ERROR || ulcf->max_size == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "types=", 6) == 0) {
            ulcf->types = 0;
            p = value[i].data + 6;
            last = value[i].data + value[i].len;

            while (p < last) {
                comma = ngx_strlchr(p, last, ',');
                if (comma == NULL) {
                    comma = last;
                }

                for (t = ngx_platform_upload_types; t->type; t++) {
                    if (t->name.len == (size_t) (comma - p)
                        && ngx_strncmp(t->name.data, p, comma - p) == 0)
                    {
                        break;
                    }
                }

                if (t->type == 0) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "unknown type \"%*s\" in "
                                       "\"platform_upload\", expected jpeg, "
                                       "png or webp", comma - p, p);
                    return NGX_CONF_ERROR;
                }

                ulcf->types |= t->type;
                p = comma + 1;
            }

            if (ulcf->types == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    /* DIR, relative to the prefix; created now and checked */

    dir = value[1];

    while (dir.len > 1 && dir.data[dir.len - 1] == '/') {
        dir.len--;
    }

    if (dir.len == 0) {
        return "has an empty directory";
    }

    if (ngx_conf_full_name(cf->cycle, &dir, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* DIR and its parents: "DIR/" makes ngx_create_full_path() do DIR */

    p = ngx_pnalloc(cf->temp_pool, dir.len + 2);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_cpymem(p, dir.data, dir.len) = '/';
    p[dir.len + 1] = '\0';

    err = ngx_create_full_path(p, 0755);

    if (err) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                           "platform_upload: cannot create the directory "
                           "\"%V\"", &dir);
        return NGX_CONF_ERROR;
    }

    if (ngx_file_info(dir.data, &fi) == NGX_FILE_ERROR || !ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "platform_upload: \"%V\" is not a directory",
                           &dir);
        return NGX_CONF_ERROR;
    }

    if (access((char *) dir.data, W_OK|X_OK) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "platform_upload: the directory \"%V\" is not "
                           "writable", &dir);
        return NGX_CONF_ERROR;
    }

    /*
     * As a path of the cycle, nginx gives the directory to the workers'
     * user when it starts as root.
     */

    ulcf->path = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
    if (ulcf->path == NULL) {
        return NGX_CONF_ERROR;
    }

    ulcf->path->name = dir;
    ulcf->path->conf_file = cf->conf_file->file.name.data;
    ulcf->path->line = cf->conf_file->line;

    if (ngx_add_path(cf, &ulcf->path) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ulcf->dir = dir;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"platform_upload\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}
