
/*
 * Errors: SQLSTATE to HTTP status (as PostgREST documents it), and the JSON
 * error body {"error":{"code":...,"message":...}} every endpoint answers.
 *
 * The server's own message is passed on only where it is written for the
 * client: RAISE in our SQL (P0001, PTnnn) and data errors (22xxx) that
 * describe the input.  Other errors get a fixed sentence; the server's text
 * goes to the error log.
 */


#include "ngx_platform_module.h"
#include "ngx_platform_pg.h"


typedef struct {
    const char   *prefix;      /* a code, or a class when two characters */
    ngx_uint_t    status;
} ngx_platform_sqlstate_map_t;


static const ngx_platform_sqlstate_map_t  ngx_platform_sqlstates[] = {

    /* exact codes first */
    { "23503", NGX_HTTP_CONFLICT },
    { "23505", NGX_HTTP_CONFLICT },
    { "23P01", NGX_HTTP_CONFLICT },
    { "40001", NGX_HTTP_CONFLICT },
    { "40P01", NGX_HTTP_CONFLICT },
    { "25006", NGX_HTTP_NOT_ALLOWED },
    { "42501", NGX_HTTP_FORBIDDEN },
    { "42883", NGX_HTTP_NOT_FOUND },
    { "42P01", NGX_HTTP_NOT_FOUND },
    { "57014", NGX_HTTP_GATEWAY_TIME_OUT },
    { "57P01", NGX_HTTP_SERVICE_UNAVAILABLE },
    { "57P02", NGX_HTTP_SERVICE_UNAVAILABLE },
    { "57P03", NGX_HTTP_SERVICE_UNAVAILABLE },
    { "P0001", NGX_HTTP_BAD_REQUEST },

    /* then classes */
    { "08", NGX_HTTP_SERVICE_UNAVAILABLE },
    { "0L", NGX_HTTP_FORBIDDEN },
    { "0P", NGX_HTTP_FORBIDDEN },
    { "22", NGX_HTTP_BAD_REQUEST },
    { "23", NGX_HTTP_BAD_REQUEST },
    { "28", NGX_HTTP_FORBIDDEN },
    { "53", NGX_HTTP_SERVICE_UNAVAILABLE },

    { NULL, NGX_HTTP_INTERNAL_SERVER_ERROR }
};


/* classes counted by platform_status; the last one takes the rest */

const char  *ngx_platform_error_classes[NGX_PLATFORM_PG_ERROR_CLASSES] = {
    "08", "0A", "22", "23", "25", "28", "2B", "40", "42", "53", "54", "55",
    "57", "58", "P0", "PT", "XX", "other"
};


static u_char *ngx_platform_json_string(u_char *p, const char *name,
    const char *value);


ngx_uint_t
ngx_platform_sqlstate_status(const char *sqlstate)
{
    ngx_int_t                           n;
    const ngx_platform_sqlstate_map_t  *m;

    if (sqlstate == NULL || ngx_strlen(sqlstate) != 5) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* RAISE SQLSTATE 'PTnnn' chooses the status itself */

    if (sqlstate[0] == 'P' && sqlstate[1] == 'T') {
        n = ngx_atoi((u_char *) sqlstate + 2, 3);

        if (n >= 100 && n <= 599) {
            return n;
        }

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (m = ngx_platform_sqlstates; m->prefix; m++) {
        if (ngx_strncmp(sqlstate, m->prefix, ngx_strlen(m->prefix)) == 0) {
            return m->status;
        }
    }

    return m->status;
}


ngx_uint_t
ngx_platform_error_class(const char *sqlstate)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_PLATFORM_PG_ERROR_CLASSES - 1; i++) {
        if (sqlstate[0] == ngx_platform_error_classes[i][0]
            && sqlstate[0] != '\0'
            && sqlstate[1] == ngx_platform_error_classes[i][1])
        {
            return i;
        }
    }

    return NGX_PLATFORM_PG_ERROR_CLASSES - 1;
}


ngx_int_t
ngx_platform_send_pg_error(ngx_http_request_t *r, PGresult *res)
{
    char        *sqlstate, *message, *detail, *hint;
    u_char      *p;
    size_t       len;
    ngx_buf_t   *b;
    ngx_uint_t   status, echo, level;

    sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);

    if (sqlstate == NULL) {
        sqlstate = "XX000";
    }

    status = ngx_platform_sqlstate_status(sqlstate);

    echo = (ngx_strcmp(sqlstate, "P0001") == 0
            || (sqlstate[0] == 'P' && sqlstate[1] == 'T')
            || (sqlstate[0] == '2' && sqlstate[1] == '2'));

    level = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) ? NGX_LOG_ERR
                                                        : NGX_LOG_INFO;

    ngx_log_error(level, r->connection->log, 0,
                  "platform_query: SQLSTATE %s: %s%s%s", sqlstate,
                  message ? message : "", detail ? ": " : "",
                  detail ? detail : "");

    if (!echo) {
        return ngx_platform_send_error(r, status, sqlstate, NULL);
    }

    len = sizeof("{\"error\":{\"code\":\"\"}}") - 1 + 5
          + sizeof(",\"message\":\"\"") - 1 + sizeof(",\"detail\":\"\"") - 1
          + sizeof(",\"hint\":\"\"") - 1;

    if (message) {
        len += ngx_strlen(message) * 6;
    }

    if (detail) {
        len += ngx_strlen(detail) * 6;
    }

    if (hint) {
        len += ngx_strlen(hint) * 6;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"error\":{", 10);
    p = ngx_platform_json_string(p, "code", sqlstate);
    *p++ = ',';
    p = ngx_platform_json_string(p, "message", message ? message : "");

    if (detail) {
        *p++ = ',';
        p = ngx_platform_json_string(p, "detail", detail);
    }

    if (hint) {
        *p++ = ',';
        p = ngx_platform_json_string(p, "hint", hint);
    }

    b->last = ngx_cpymem(p, "}}", 2);

    return ngx_platform_send_body(r, status, b);
}


/* an error of our own or a fixed sentence for a status */

ngx_int_t
ngx_platform_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    u_char           *p;
    size_t            len;
    ngx_buf_t        *b;
    ngx_table_elt_t  *h;

    if (message == NULL) {
        switch (status) {
        case NGX_HTTP_BAD_REQUEST:
            message = "the request is not valid";
            break;
        case NGX_HTTP_FORBIDDEN:
            message = "permission denied";
            break;
        case NGX_HTTP_NOT_FOUND:
            message = "not found";
            break;
        case NGX_HTTP_NOT_ALLOWED:
            message = "method not allowed";
            break;
        case NGX_HTTP_CONFLICT:
            message = "conflicts with existing data";
            break;
        case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
            message = "request body too large";
            break;
        case NGX_HTTP_UNSUPPORTED_MEDIA_TYPE:
            message = "unsupported content type";
            break;
        case NGX_HTTP_SERVICE_UNAVAILABLE:
            message = "database unavailable, try again shortly";
            break;
        case NGX_HTTP_GATEWAY_TIME_OUT:
            message = "the query took too long";
            break;
        default:
            message = "internal error";
        }
    }

    len = sizeof("{\"error\":{\"code\":\"\",\"message\":\"\"}}") - 1
          + ngx_strlen(code) * 6 + ngx_strlen(message) * 6;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"error\":{", 10);
    p = ngx_platform_json_string(p, "code", code);
    *p++ = ',';
    p = ngx_platform_json_string(p, "message", message);
    b->last = ngx_cpymem(p, "}}", 2);

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_platform_send_body(r, status, b);
}


/* send b as the whole body; Content-Type is JSON unless already set */

ngx_int_t
ngx_platform_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;

    if (r->headers_out.content_type.len == 0) {
        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* "name":"escaped value" */

static u_char *
ngx_platform_json_string(u_char *p, const char *name, const char *value)
{
    size_t  len;

    *p++ = '"';
    p = ngx_cpymem(p, name, ngx_strlen(name));
    *p++ = '"';
    *p++ = ':';
    *p++ = '"';

    len = ngx_strlen(value);
    p = (u_char *) ngx_escape_json(p, (u_char *) value, len);

    *p++ = '"';

    return p;
}
