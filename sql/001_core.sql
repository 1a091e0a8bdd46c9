-- 001_core.sql - schemas, the application role and the helpers every
-- endpoint uses.
--
-- Applied by tools/migrate in one transaction.  Written to be harmless when
-- run again (IF NOT EXISTS, CREATE OR REPLACE, ON CONFLICT DO NOTHING).
--
-- Schemas:
--   api       functions that nginx calls (platform_query); one per endpoint,
--             taking typed arguments and returning the JSON body
--   platform  helpers for api functions (response status/headers, cursors)
--             and platform-wide state
--   app       the domain tables (from 002 on)
--
-- nginx connects as the login role platform_app: not a superuser, it may
-- only call functions in api/platform and read what they are granted.

CREATE SCHEMA IF NOT EXISTS api;
CREATE SCHEMA IF NOT EXISTS platform;

-- Roles are cluster-wide: every database of the cluster (test databases
-- too) shares this one, so create it only if it is missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                   WHERE rolname = 'platform_app')
    THEN
        CREATE ROLE platform_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOREPLICATION;
    END IF;
EXCEPTION
    -- Another database of the cluster is being migrated at the same time.
    WHEN duplicate_object THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA api, platform TO platform_app;

-- Functions created later by the migrating role are callable by nginx too.
ALTER DEFAULT PRIVILEGES IN SCHEMA api, platform
    GRANT EXECUTE ON FUNCTIONS TO platform_app;

-- tools/migrate creates this before running any file; repeated here so the
-- file also explains itself (and api.health can refer to it).
CREATE TABLE IF NOT EXISTS public.platform_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON public.platform_migrations TO platform_app;


-- Platform-wide facts (key/value): when the database was set up, the API
-- version reported by api.version().
CREATE TABLE IF NOT EXISTS platform.instance (
    key   text PRIMARY KEY,
    value text NOT NULL
);

INSERT INTO platform.instance (key, value)
VALUES ('created_at', now()::text),
       ('name', 'platform'),
       ('api_version', '1')
ON CONFLICT (key) DO NOTHING;

GRANT SELECT ON platform.instance TO platform_app;


-- ---------------------------------------------------------------------
-- Response helpers.  An api function may set the HTTP status and extra
-- response headers; the module reads the transaction-local settings
-- response.status and response.headers after the call.
-- ---------------------------------------------------------------------

-- platform.set_status(201): the response status (100..599).
CREATE OR REPLACE FUNCTION platform.set_status(status int)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF status IS NULL OR status < 100 OR status > 599 THEN
        RAISE EXCEPTION 'invalid HTTP status %', coalesce(status::text, 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'use a status code from 100 to 599';
    END IF;

    PERFORM pg_catalog.set_config('response.status', status::text, true);
END
$$;

-- platform.set_header('Location', '/api/events/7'): adds a response header.
-- response.headers holds one "Name: value" line per header, each ending in
-- a newline; the name must be an HTTP token and the value may not contain
-- control characters other than TAB (no header splitting).
CREATE OR REPLACE FUNCTION platform.set_header(name text, value text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF name IS NULL
       OR name !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$'
       OR length(name) > 256
    THEN
        RAISE EXCEPTION 'invalid HTTP header name'
            USING ERRCODE = '22023',
                  HINT = 'a header name is a non-empty HTTP token';
    END IF;

    IF value IS NULL
       OR value ~ '[\x01-\x08\x0A-\x1F\x7F]'
       OR length(value) > 8192
    THEN
        RAISE EXCEPTION 'invalid value for HTTP header %', name
            USING ERRCODE = '22023',
                  HINT = 'a header value may not contain control characters';
    END IF;

    PERFORM pg_catalog.set_config(
        'response.headers',
        coalesce(pg_catalog.current_setting('response.headers', true), '')
            || name || ': ' || value || E'\n',
        true);
END
$$;


-- ---------------------------------------------------------------------
-- Keyset pagination cursors.  A listing ordered by (timestamp, id) hands
-- out the last row's pair as an opaque, URL-safe token (base64url of
-- "<epoch microseconds>.<id>") and takes it back as "after".
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION platform.cursor_encode(ts timestamptz, id bigint)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
AS $$
    SELECT pg_catalog.translate(
               pg_catalog.rtrim(
                   pg_catalog.encode(
                       pg_catalog.convert_to(
                           (extract(epoch FROM ts) * 1000000)::bigint::text
                               || '.' || id::text,
                           'UTF8'),
                       'base64'),
                   '='),
               '+/', '-_');
$$;

-- Raises 22023 (answered 400) for anything cursor_encode did not produce.
CREATE OR REPLACE FUNCTION platform.cursor_decode(cursor text,
                                                  OUT ts timestamptz,
                                                  OUT id bigint)
LANGUAGE plpgsql
IMMUTABLE STRICT
AS $$
DECLARE
    raw text;
    m   text[];
BEGIN
    -- Checked before decoding, so decode() itself cannot fail.
    IF length(cursor) > 64
       OR cursor !~ '^[A-Za-z0-9_-]+$'
       OR length(cursor) % 4 = 1
    THEN
        RAISE EXCEPTION 'malformed pagination cursor'
            USING ERRCODE = '22023',
                  HINT = 'pass the "next" value of the previous page unchanged';
    END IF;

    -- 'escape' keeps non-printable bytes as \nnn, so they fail the match.
    raw := pg_catalog.encode(
               pg_catalog.decode(
                   pg_catalog.translate(cursor, '-_', '+/')
                       || pg_catalog.repeat('=', (4 - length(cursor) % 4) % 4),
                   'base64'),
               'escape');
    m := pg_catalog.regexp_match(raw, '^(-?[0-9]{1,17})\.([0-9]{1,18})$');

    IF m IS NULL THEN
        RAISE EXCEPTION 'malformed pagination cursor'
            USING ERRCODE = '22023',
                  HINT = 'pass the "next" value of the previous page unchanged';
    END IF;

    ts := timestamptz 'epoch' + m[1]::bigint * interval '1 microsecond';
    id := m[2]::bigint;
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints
-- ---------------------------------------------------------------------

-- GET /api/health: the database answers and which schema it has.
CREATE OR REPLACE FUNCTION api.health()
RETURNS json
LANGUAGE sql
STABLE
AS $$
    SELECT json_build_object(
        'status', 'ok',
        'database', current_database(),
        'schema_version', (SELECT max(version)
                           FROM public.platform_migrations),
        'time', now());
$$;

-- GET /api/version: what API this database serves.
CREATE OR REPLACE FUNCTION api.version()
RETURNS json
LANGUAGE sql
STABLE
AS $$
    SELECT json_build_object(
        'name', (SELECT value FROM platform.instance WHERE key = 'name'),
        'api_version', (SELECT value::int FROM platform.instance
                        WHERE key = 'api_version'),
        'schema_version', (SELECT max(version)
                           FROM public.platform_migrations));
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api, platform TO platform_app;
