-- Live video (docs/hls.md, ngx_platform_hls.c, conf/api/hls.conf): the
-- per-event ingest key and recording flag, the ingest key check nginx makes
-- (cached per worker), who may watch, and the stream state for the page.
--
-- The key is shown to the organisers again (they paste it into their
-- encoder), so the table keeps it; platform_app cannot read the table, only
-- the functions below can.  It is compared through SHA-256 digests.

CREATE TABLE IF NOT EXISTS app.hls_streams (
    event_id    bigint PRIMARY KEY
                REFERENCES app.events (id) ON DELETE CASCADE,
    ingest_key  text NOT NULL
                CHECK (ingest_key ~ '^[A-Za-z0-9_-]{32,64}$'),
    record      boolean NOT NULL DEFAULT false,
    rotated_at  timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON app.hls_streams FROM PUBLIC;


-- A new random key: 64 hex digits from two version 4 UUIDs (244 random
-- bits; gen_random_uuid is built in, whatever schema pgcrypto is in).
CREATE OR REPLACE FUNCTION app.hls_new_key()
RETURNS text
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text,
                   '-', '')
$$;


-- The event's stream row, made on first use (the organiser's first look).
CREATE OR REPLACE FUNCTION app.hls_stream(event_id bigint)
RETURNS app.hls_streams
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s app.hls_streams;
BEGIN
    INSERT INTO app.hls_streams AS x (event_id, ingest_key)
    VALUES (hls_stream.event_id, app.hls_new_key())
    ON CONFLICT ON CONSTRAINT hls_streams_pkey DO NOTHING;

    SELECT * INTO s FROM app.hls_streams AS x
    WHERE x.event_id = hls_stream.event_id;

    RETURN s;
END
$$;


CREATE OR REPLACE FUNCTION app.hls_stream_json(s app.hls_streams)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'event_id', s.event_id,
        'ingest_url', '/live/' || s.event_id || '/index.m3u8',
        'ingest_key', s.ingest_key,
        'record', s.record,
        'rotated_at', s.rotated_at)
$$;


-- Organisers: GET /api/orgs/{org}/events/{id}/stream
-- {"event_id", "ingest_url", "ingest_key", "record", "rotated_at"}
CREATE OR REPLACE FUNCTION api.hls_ingest_get(org_id bigint, event_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
BEGIN
    RETURN app.hls_stream_json(app.hls_stream(e.id));
END
$$;


-- Organisers: PATCH /api/orgs/{org}/events/{id}/stream {"record": bool}
CREATE OR REPLACE FUNCTION api.hls_ingest_update(org_id bigint,
                                                 event_id bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
    s app.hls_streams;
BEGIN
    PERFORM app.check_fields(body, ARRAY['record']);

    IF NOT body ? 'record' OR jsonb_typeof(body->'record') <> 'boolean' THEN
        PERFORM app.bad_field('record', 'record must be true or false.');
    END IF;

    s := app.hls_stream(e.id);

    UPDATE app.hls_streams AS x SET record = (body->>'record')::boolean
    WHERE x.event_id = e.id
    RETURNING * INTO s;

    RETURN app.hls_stream_json(s);
END
$$;


-- Organisers: POST /api/orgs/{org}/events/{id}/stream/key — a new key; the
-- old one stops working within platform_hls_cache_ttl (docs/hls.md).
CREATE OR REPLACE FUNCTION api.hls_ingest_rotate(org_id bigint,
                                                 event_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
    s app.hls_streams;
BEGIN
    s := app.hls_stream(e.id);

    UPDATE app.hls_streams AS x
    SET ingest_key = app.hls_new_key(), rotated_at = now()
    WHERE x.event_id = e.id
    RETURNING * INTO s;

    RETURN app.hls_stream_json(s);
END
$$;


-- nginx, at an encoder's PUT/DELETE of /live/{event}/... (a subrequest
-- whose answer each worker caches): auth is the Authorization header as
-- sent ("Bearer <key>").  200 {"event_id", "record"} with the header
-- X-HLS-Record: 1|0; PT401 without a key, PT403 for a wrong key or an event
-- without a stream.
CREATE OR REPLACE FUNCTION api.hls_ingest_check(event_id bigint, auth text)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s    app.hls_streams;
    v_key text := substring(coalesce(auth, '') FROM '^Bearer +(.+)$');
BEGIN
    IF v_key IS NULL OR v_key = '' THEN
        RAISE EXCEPTION 'The ingest key is missing.'
            USING ERRCODE = 'PT401',
                  HINT = 'send Authorization: Bearer <ingest key>';
    END IF;

    SELECT * INTO s FROM app.hls_streams AS x
    WHERE x.event_id = hls_ingest_check.event_id;

    IF NOT FOUND
       OR sha256(convert_to(s.ingest_key, 'UTF8'))
          <> sha256(convert_to(v_key, 'UTF8'))
    THEN
        RAISE EXCEPTION 'The ingest key is wrong.' USING ERRCODE = 'PT403';
    END IF;

    PERFORM platform.set_header('X-HLS-Record',
                                CASE WHEN s.record THEN '1' ELSE '0' END);

    RETURN json_build_object('event_id', s.event_id, 'record', s.record);
END
$$;


-- Who may watch: the event's ticket holders (valid ticket) and its
-- organisers.  PT401 without a user, PT404 no such event, PT403 otherwise.
CREATE OR REPLACE FUNCTION app.hls_may_watch(user_id bigint, event_id bigint)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events;
BEGIN
    IF hls_may_watch.user_id IS NULL THEN
        RAISE EXCEPTION 'Sign in to watch.' USING ERRCODE = 'PT401';
    END IF;

    SELECT * INTO e FROM app.events AS x WHERE x.id = hls_may_watch.event_id;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    IF NOT EXISTS (SELECT 1 FROM app.tickets AS t
                   WHERE t.event_id = e.id
                     AND t.user_id = hls_may_watch.user_id
                     AND t.status = 'valid')
       AND NOT (e.organisation_id IS NOT NULL AND EXISTS (
                   SELECT 1 FROM auth.memberships AS m
                   WHERE m.user_id = hls_may_watch.user_id
                     AND m.org_id = e.organisation_id
                     AND m.role IN ('organiser', 'owner')))
    THEN
        RAISE EXCEPTION 'The stream is for ticket holders.'
            USING ERRCODE = 'PT403';
    END IF;
END
$$;


-- nginx, at a viewer's first request for /live/{event}/... (a subrequest
-- whose answer each worker caches per user and event): 200 or 401/403/404.
CREATE OR REPLACE FUNCTION api.hls_watch_check(user_id bigint, event_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM app.hls_may_watch(user_id, event_id);
    RETURN json_build_object('event_id', event_id, 'watch', true);
END
$$;


-- The event page: GET /api/events/{id}/stream (signed in; PT401 without a
-- user, PT404 no such event).  live, vod: what nginx found in the
-- stream's directory; token: a signed path element for players that cannot
-- send the cookie, made by nginx ("<expiry>.<signature>", see
-- docs/hls.md).  Someone signed in without a ticket gets "watch": false and
-- nothing else (a page state, not an error: the page just says so).
-- {"watch", "live", "playlist", "signed_playlist", "expires", "recording"}
CREATE OR REPLACE FUNCTION api.hls_stream_state(user_id bigint,
                                                event_id bigint,
                                                live boolean, vod boolean,
                                                token text)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_base text := '/live/' || event_id || '/';
BEGIN
    PERFORM platform.set_header('Cache-Control', 'no-store');

    BEGIN
        PERFORM app.hls_may_watch(user_id, event_id);
    EXCEPTION WHEN SQLSTATE 'PT403' THEN
        RETURN json_build_object('watch', false, 'live', false,
                                 'playlist', NULL, 'signed_playlist', NULL,
                                 'expires', NULL, 'recording', NULL);
    END;

    RETURN json_build_object(
        'watch', true,
        'live', coalesce(live, false),
        'playlist', v_base || 'index.m3u8',
        'signed_playlist', CASE WHEN token ~ '^[0-9]+\.[A-Za-z0-9_-]+$'
                                THEN v_base || 's/' || token || '/index.m3u8'
                           END,
        'expires', CASE WHEN token ~ '^[0-9]+\.'
                        THEN to_timestamp(split_part(token, '.', 1)::bigint)
                   END,
        'recording', CASE WHEN coalesce(vod, false)
                          THEN v_base || 'vod.m3u8' END);
END
$$;


REVOKE ALL ON FUNCTION app.hls_new_key(), app.hls_stream(bigint),
                       app.hls_stream_json(app.hls_streams),
                       app.hls_may_watch(bigint, bigint)
    FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    api.hls_ingest_get(bigint, bigint),
    api.hls_ingest_update(bigint, bigint, jsonb),
    api.hls_ingest_rotate(bigint, bigint),
    api.hls_ingest_check(bigint, text),
    api.hls_watch_check(bigint, bigint),
    api.hls_stream_state(bigint, bigint, boolean, boolean, text)
TO platform_app;
