-- 018_lifts.sql - lift telemetry, first part (issue 8 items 1-5): the
-- registry (buildings and lifts of an organisation), device enrolment in
-- the style of RFC 8628, device tokens, and raw readings partitioned by day
-- with idempotent batched ingest.  See docs/telemetry.md.
--
-- Organisations are app.organisations (005); the manufacturer's operations
-- staff hold the membership role 'staff' in an organisation and reach the
-- registry through `platform_auth staff org=$1` ($platform_org).  Someone
-- else's building or lift is 404.  Bad input is 22023 (400) with DETAIL
-- 'field: <name>' (app.bad_field).  nginx's role platform_app has no rights
-- on the tables; the api functions are SECURITY DEFINER with a fixed
-- search_path.
--
-- Device tokens: 'lt1.' || base64url(lift id (8 bytes, big-endian) ||
-- generation (4 bytes) || HMAC-SHA-256(key, 'lift-token-v1' || those 12
-- bytes)).  The key is platform_device_key's file in nginx; it reaches the
-- token endpoint as $platform_device_key (hex) and is never stored here.
-- nginx checks the MAC without the database; the generation is checked by
-- lifts.ingest in the same statement that stores the readings, so a
-- revocation (generation + 1) takes effect at the lift's next write.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, catalog-guarded DO blocks.

CREATE SCHEMA IF NOT EXISTS lifts;
REVOKE ALL ON SCHEMA lifts FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS lifts.buildings (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     bigint NOT NULL REFERENCES app.organisations (id),
    name       text NOT NULL
               CONSTRAINT buildings_name_check
               CHECK (length(name) BETWEEN 1 AND 200),
    address    text CONSTRAINT buildings_address_check
                    CHECK (length(address) <= 500),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS buildings_org_id_idx ON lifts.buildings (org_id);

CREATE TABLE IF NOT EXISTS lifts.lifts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id           bigint NOT NULL REFERENCES app.organisations (id),
    building_id      bigint NOT NULL REFERENCES lifts.buildings (id),
    serial           text NOT NULL
                     CONSTRAINT lifts_serial_key UNIQUE
                     CONSTRAINT lifts_serial_check
                     CHECK (serial ~ '^[A-Za-z0-9._-]{1,64}$'),
    model            text NOT NULL
                     CONSTRAINT lifts_model_check
                     CHECK (length(model) BETWEEN 1 AND 100),
    installed_on     date,
    floors           int NOT NULL
                     CONSTRAINT lifts_floors_check
                     CHECK (floors BETWEEN 2 AND 300),
    -- Device tokens carry the generation they were issued for; + 1
    -- revokes every token issued before.
    token_generation int NOT NULL DEFAULT 0,
    enrolled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS lifts_building_id_idx ON lifts.lifts (building_id);
CREATE INDEX IF NOT EXISTS lifts_org_id_idx ON lifts.lifts (org_id);

-- RFC 8628 device authorisations: the device code is kept as its sha256.
CREATE TABLE IF NOT EXISTS lifts.device_authorizations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_hash  bytea NOT NULL
                 CONSTRAINT device_authorizations_device_hash_key UNIQUE,
    user_code    text NOT NULL
                 CONSTRAINT device_authorizations_user_code_check
                 CHECK (user_code ~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$'),
    serial       text NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CONSTRAINT device_authorizations_state_check
                 CHECK (state IN ('pending', 'approved', 'denied', 'issued')),
    lift_id      bigint REFERENCES lifts.lifts (id) ON DELETE CASCADE,
    decided_by   bigint,
    poll_interval int NOT NULL DEFAULT 5,
    last_poll_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- A user code is unique among the authorisations still pending.
CREATE UNIQUE INDEX IF NOT EXISTS device_authorizations_user_code_key
    ON lifts.device_authorizations (user_code) WHERE state = 'pending';

-- Raw readings, partitioned by device time (one partition a day, created
-- ahead by lifts.create_partitions and on demand by lifts.ingest).  The
-- unique key must hold the partition key: a resent reading is a duplicate
-- only with the same seq AND the same ts.
CREATE TABLE IF NOT EXISTS lifts.readings (
    lift_id       bigint NOT NULL,
    seq           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    kind          text NOT NULL
                  CONSTRAINT readings_kind_check
                  CHECK (kind IN ('trip', 'door', 'fault', 'status')),
    floor_from    smallint,
    floor_to      smallint,
    direction     text CONSTRAINT readings_direction_check
                       CHECK (direction IN ('up', 'down', 'none')),
    load_kg       int,
    temperature   real,
    fault_code    text,
    trips         bigint,
    floors        bigint,
    door_cycles   bigint,
    faults        bigint,
    run_seconds   bigint,
    received_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT readings_key UNIQUE (lift_id, seq, ts)
) PARTITION BY RANGE (ts);


-- ---------------------------------------------------------------------
-- Partitions
-- ---------------------------------------------------------------------

-- The partition holding DAY (UTC): lifts.readings_YYYYMMDD.
CREATE OR REPLACE FUNCTION lifts.ensure_partition(day date)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := 'readings_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass('lifts.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- two sessions creating the same day wait for each other
    PERFORM pg_advisory_xact_lock(hashtext('lifts.readings'), day - date '2000-01-01');
    IF to_regclass('lifts.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE lifts.%I PARTITION OF lifts.readings '
                   'FOR VALUES FROM (%L) TO (%L)', name,
                   (day::timestamp AT TIME ZONE 'UTC'),
                   ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN true;
END
$$;

-- Partitions from DAYS_BACK days ago to DAYS_AHEAD days ahead; returns how
-- many were made.  Run daily as an SQL job (maintenance.lifts_partitions).
CREATE OR REPLACE FUNCTION lifts.create_partitions(days_back int DEFAULT 1,
                                                   days_ahead int DEFAULT 7)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    n int := 0;
    d date;
BEGIN
    FOR d IN SELECT generate_series(today - days_back, today + days_ahead,
                                    interval '1 day')::date
    LOOP
        IF lifts.ensure_partition(d) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

DO $$ BEGIN PERFORM lifts.create_partitions(1, 7); END $$;

CREATE SCHEMA IF NOT EXISTS maintenance;

--   jobs.enqueue('sql', '{"function": "lifts_partitions"}')
CREATE OR REPLACE FUNCTION maintenance.lifts_partitions()
RETURNS json
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('created', lifts.create_partitions(1, 7));
$$;

REVOKE ALL ON FUNCTION maintenance.lifts_partitions() FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Ingest (called by ngx_platform_ingest.c, one call per batch)
-- ---------------------------------------------------------------------

-- One element per reading in every array.  Returns one character per
-- reading, in order: 'a' stored, 'd' duplicate (already stored, or earlier
-- in this batch), 'r' refused: the token's generation is not the lift's
-- (revoked) or the lift is gone.
CREATE OR REPLACE FUNCTION lifts.ingest(lift bigint[], gen int[],
    seq bigint[], ts_ms bigint[], kind text[], floor_from int[],
    floor_to int[], direction text[], load_kg int[], temperature real[],
    fault_code text[], trips bigint[], floors bigint[],
    door_cycles bigint[], faults bigint[], run_seconds bigint[])
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      date;
    result text;
BEGIN
    FOR d IN SELECT DISTINCT (to_timestamp(t / 1000.0) AT TIME ZONE 'UTC')::date
             FROM unnest(ts_ms) AS t
    LOOP
        PERFORM lifts.ensure_partition(d);
    END LOOP;

    WITH r AS (
        SELECT u.*, to_timestamp(u.t / 1000.0) AS at,
               (l.id IS NOT NULL) AS valid,
               row_number() OVER (PARTITION BY u.l, u.s, u.t
                                  ORDER BY u.i) AS nth
        FROM unnest(lift, gen, seq, ts_ms, kind, floor_from, floor_to,
                    direction, load_kg, temperature, fault_code, trips,
                    floors, door_cycles, faults, run_seconds)
             WITH ORDINALITY
             AS u(l, g, s, t, k, ff, ft, dir, ld, tmp, fc, c1, c2, c3, c4,
                  c5, i)
        LEFT JOIN lifts.lifts AS l
               ON l.id = u.l AND l.token_generation = u.g
    ), ins AS (
        INSERT INTO lifts.readings AS x (lift_id, seq, ts, kind, floor_from,
            floor_to, direction, load_kg, temperature, fault_code, trips,
            floors, door_cycles, faults, run_seconds)
        SELECT r.l, r.s, r.at, r.k, r.ff, r.ft, r.dir, r.ld, r.tmp, r.fc,
               r.c1, r.c2, r.c3, r.c4, r.c5
        FROM r
        WHERE r.valid AND r.nth = 1
        ON CONFLICT DO NOTHING
        RETURNING x.lift_id, x.seq, x.ts
    )
    SELECT string_agg(CASE WHEN NOT r.valid THEN 'r'
                           WHEN r.nth = 1 AND ins.lift_id IS NOT NULL THEN 'a'
                           ELSE 'd' END, '' ORDER BY r.i)
    INTO result
    FROM r
    LEFT JOIN ins ON ins.lift_id = r.l AND ins.seq = r.s AND ins.ts = r.at;

    RETURN coalesce(result, '');
END
$$;

REVOKE ALL ON FUNCTION lifts.ingest(bigint[], int[], bigint[], bigint[],
    text[], int[], int[], text[], int[], real[], text[], bigint[], bigint[],
    bigint[], bigint[], bigint[]) FROM PUBLIC;
GRANT USAGE ON SCHEMA lifts TO platform_app;
GRANT EXECUTE ON FUNCTION lifts.ingest(bigint[], int[], bigint[], bigint[],
    text[], int[], int[], text[], int[], real[], text[], bigint[], bigint[],
    bigint[], bigint[], bigint[]) TO platform_app;


-- ---------------------------------------------------------------------
-- Registry endpoints (staff of the organisation)
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION lifts.building_json(b lifts.buildings)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('id', b.id, 'name', b.name,
                             'address', b.address,
                             'lifts', (SELECT count(*) FROM lifts.lifts AS l
                                       WHERE l.building_id = b.id),
                             'created_at', b.created_at);
$$;

CREATE OR REPLACE FUNCTION lifts.lift_json(l lifts.lifts)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('id', l.id, 'building_id', l.building_id,
                             'serial', l.serial, 'model', l.model,
                             'installed_on', l.installed_on,
                             'floors', l.floors,
                             'enrolled', l.enrolled_at IS NOT NULL,
                             'enrolled_at', l.enrolled_at,
                             'token_generation', l.token_generation,
                             'created_at', l.created_at);
$$;

-- Building fields from a JSON body (name required on create).
CREATE OR REPLACE FUNCTION lifts.check_building(body jsonb, creating boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    IF (creating OR body ? 'name')
       AND (jsonb_typeof(body->'name') IS DISTINCT FROM 'string'
            OR length(btrim(body->>'name')) NOT BETWEEN 1 AND 200) THEN
        PERFORM app.bad_field('name', 'A name of 1 to 200 characters is needed.');
    END IF;
    IF body ? 'address' AND jsonb_typeof(body->'address') <> 'null'
       AND (jsonb_typeof(body->'address') <> 'string'
            OR length(body->>'address') > 500) THEN
        PERFORM app.bad_field('address', 'The address is text of at most 500 characters.');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION api.lift_buildings_list(org bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(json_agg(lifts.building_json(b) ORDER BY b.name, b.id),
                    '[]')
    FROM lifts.buildings AS b
    WHERE b.org_id = org;
$$;

CREATE OR REPLACE FUNCTION api.lift_building_create(org bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b lifts.buildings;
BEGIN
    PERFORM lifts.check_building(body, true);
    INSERT INTO lifts.buildings (org_id, name, address)
    VALUES (org, btrim(body->>'name'), body->>'address')
    RETURNING * INTO b;
    PERFORM platform.set_status(201);
    RETURN lifts.building_json(b);
END
$$;

CREATE OR REPLACE FUNCTION api.lift_building_get(org bigint, id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifts.building_json(b)
    FROM lifts.buildings AS b
    WHERE b.id = lift_building_get.id AND b.org_id = org;
$$;

CREATE OR REPLACE FUNCTION api.lift_building_update(org bigint, id bigint,
                                                   body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b lifts.buildings;
BEGIN
    PERFORM lifts.check_building(body, false);
    UPDATE lifts.buildings AS x
    SET name = coalesce(btrim(body->>'name'), x.name),
        address = CASE WHEN body ? 'address' THEN body->>'address'
                       ELSE x.address END
    WHERE x.id = lift_building_update.id AND x.org_id = org
    RETURNING * INTO b;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN lifts.building_json(b);
END
$$;

CREATE OR REPLACE FUNCTION api.lift_building_delete(org bigint, id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM lifts.buildings AS b
                   WHERE b.id = lift_building_delete.id AND b.org_id = org) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM lifts.lifts AS l
               WHERE l.building_id = lift_building_delete.id) THEN
        RAISE EXCEPTION 'The building still has lifts.'
            USING ERRCODE = 'PT409', DETAIL = 'field: id';
    END IF;
    DELETE FROM lifts.buildings AS b
    WHERE b.id = lift_building_delete.id AND b.org_id = org;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN json_build_object('deleted', id);
END
$$;

-- PostgreSQL 15 has no pg_input_is_valid.
CREATE OR REPLACE FUNCTION lifts.is_date(s text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM s::date;
    RETURN true;
EXCEPTION
    WHEN datetime_field_overflow OR invalid_datetime_format THEN
        RETURN false;
END
$$;

-- Lift fields from a JSON body (all but installed_on required on create).
CREATE OR REPLACE FUNCTION lifts.check_lift(org bigint, body jsonb,
                                            creating boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    IF (creating OR body ? 'serial')
       AND (jsonb_typeof(body->'serial') IS DISTINCT FROM 'string'
            OR body->>'serial' !~ '^[A-Za-z0-9._-]{1,64}$') THEN
        PERFORM app.bad_field('serial', 'The serial is 1 to 64 letters, digits, ".", "_" or "-".');
    END IF;
    IF (creating OR body ? 'model')
       AND (jsonb_typeof(body->'model') IS DISTINCT FROM 'string'
            OR length(btrim(body->>'model')) NOT BETWEEN 1 AND 100) THEN
        PERFORM app.bad_field('model', 'A model of 1 to 100 characters is needed.');
    END IF;
    IF (creating OR body ? 'floors')
       AND (jsonb_typeof(body->'floors') IS DISTINCT FROM 'number'
            OR body->>'floors' !~ '^[0-9]{1,3}$'
            OR (body->>'floors')::int NOT BETWEEN 2 AND 300) THEN
        PERFORM app.bad_field('floors', 'Floors is a whole number from 2 to 300.');
    END IF;
    IF (creating OR body ? 'building_id')
       AND (jsonb_typeof(body->'building_id') IS DISTINCT FROM 'number'
            OR body->>'building_id' !~ '^[0-9]{1,18}$'
            OR NOT EXISTS (SELECT 1 FROM lifts.buildings AS b
                           WHERE b.id = (body->>'building_id')::bigint
                             AND b.org_id = org)) THEN
        PERFORM app.bad_field('building_id', 'No such building.');
    END IF;
    IF body ? 'installed_on' AND jsonb_typeof(body->'installed_on') <> 'null'
       AND (jsonb_typeof(body->'installed_on') <> 'string'
            OR body->>'installed_on' !~ '^\d{4}-\d{2}-\d{2}$'
            OR NOT lifts.is_date(body->>'installed_on')) THEN
        PERFORM app.bad_field('installed_on', 'The installation date is YYYY-MM-DD.');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION api.lifts_list(org bigint, building bigint DEFAULT NULL)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(json_agg(lifts.lift_json(l) ORDER BY l.serial), '[]')
    FROM lifts.lifts AS l
    WHERE l.org_id = org
      AND (building IS NULL OR l.building_id = building);
$$;

CREATE OR REPLACE FUNCTION api.lift_create(org bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifts.lifts;
BEGIN
    PERFORM lifts.check_lift(org, body, true);
    INSERT INTO lifts.lifts (org_id, building_id, serial, model,
                             installed_on, floors)
    VALUES (org, (body->>'building_id')::bigint, body->>'serial',
            btrim(body->>'model'), (body->>'installed_on')::date,
            (body->>'floors')::int)
    RETURNING * INTO l;
    PERFORM platform.set_status(201);
    RETURN lifts.lift_json(l);
END
$$;

CREATE OR REPLACE FUNCTION api.lift_get(org bigint, id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifts.lift_json(l)
    FROM lifts.lifts AS l
    WHERE l.id = lift_get.id AND l.org_id = org;
$$;

CREATE OR REPLACE FUNCTION api.lift_update(org bigint, id bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifts.lifts;
BEGIN
    PERFORM lifts.check_lift(org, body, false);
    UPDATE lifts.lifts AS x
    SET building_id = coalesce((body->>'building_id')::bigint, x.building_id),
        serial = coalesce(body->>'serial', x.serial),
        model = coalesce(btrim(body->>'model'), x.model),
        installed_on = CASE WHEN body ? 'installed_on'
                            THEN (body->>'installed_on')::date
                            ELSE x.installed_on END,
        floors = coalesce((body->>'floors')::int, x.floors)
    WHERE x.id = lift_update.id AND x.org_id = org
    RETURNING * INTO l;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN lifts.lift_json(l);
END
$$;

-- Deleting a lift keeps its readings (they are history); its tokens stop
-- working because lifts.ingest finds no lift.
CREATE OR REPLACE FUNCTION api.lift_delete(org bigint, id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM lifts.lifts AS l
    WHERE l.id = lift_delete.id AND l.org_id = org;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN json_build_object('deleted', id);
END
$$;

-- Revokes every device token of the lift (they stop working at the lift's
-- next write); the lift enrols again to get a new one.
CREATE OR REPLACE FUNCTION api.lift_revoke(org bigint, id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifts.lifts;
BEGIN
    UPDATE lifts.lifts AS x
    SET token_generation = x.token_generation + 1,
        enrolled_at = NULL
    WHERE x.id = lift_revoke.id AND x.org_id = org
    RETURNING * INTO l;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN lifts.lift_json(l);
END
$$;


-- ---------------------------------------------------------------------
-- Device enrolment (RFC 8628 style)
-- ---------------------------------------------------------------------

-- RFC 8628 error answer: {"error": code}, 400.
CREATE OR REPLACE FUNCTION lifts.oauth_error(code text, description text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM platform.set_status(400);
    PERFORM platform.set_header('Cache-Control', 'no-store');
    IF description IS NULL THEN
        RETURN json_build_object('error', code);
    END IF;
    RETURN json_build_object('error', code, 'error_description', description);
END
$$;

-- 8 characters from the 20 consonants RFC 8628 section 6.1 suggests.
CREATE OR REPLACE FUNCTION lifts.new_user_code()
RETURNS text
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(substr('BCDFGHJKLMNPQRSTVWXZ',
                             1 + get_byte(r, i) % 20, 1), '' ORDER BY i)
    FROM (SELECT public.gen_random_bytes(8) AS r) AS x,
         generate_series(0, 7) AS i;
$$;

-- POST /api/devices/authorize {"serial"}: api.device_authorize(body,
-- $platform_random, base_url).  The serial need not be registered yet
-- (staff choose the lift when approving).  256 values of a byte modulo 20
-- are not quite uniform (the first 16 letters are a little likelier):
-- 8 characters still give more than 2^34 codes for a code that lives ten
-- minutes and is entered by staff who are signed in.
CREATE OR REPLACE FUNCTION api.device_authorize(body jsonb, random text,
    base_url text, expires_in int DEFAULT 600, poll_interval int DEFAULT 5)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    code text;
    n    int := 0;
BEGIN
    IF random IS NULL OR random !~ '^[A-Za-z0-9_-]{43}$' THEN
        RAISE EXCEPTION 'device enrolment is not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'random must be $platform_random';
    END IF;
    IF body IS NULL OR jsonb_typeof(body) <> 'object'
       OR jsonb_typeof(body->'serial') IS DISTINCT FROM 'string'
       OR body->>'serial' !~ '^[A-Za-z0-9._-]{1,64}$' THEN
        RETURN lifts.oauth_error('invalid_request',
                                 'serial: 1 to 64 letters, digits, ".", "_" or "-"');
    END IF;

    LOOP
        code := lifts.new_user_code();
        BEGIN
            INSERT INTO lifts.device_authorizations (device_hash, user_code,
                serial, poll_interval, expires_at)
            VALUES (sha256(convert_to(random, 'UTF8')), code, body->>'serial',
                    poll_interval, now() + expires_in * interval '1 second');
            EXIT;
        EXCEPTION
            WHEN unique_violation THEN
                n := n + 1;
                IF n >= 5 THEN
                    RAISE;
                END IF;
        END;
    END LOOP;

    PERFORM platform.set_header('Cache-Control', 'no-store');
    RETURN json_build_object(
        'device_code', random,
        'user_code', substr(code, 1, 4) || '-' || substr(code, 5, 4),
        'verification_uri', coalesce(base_url, '') || '/lifts/device.html',
        'verification_uri_complete', coalesce(base_url, '')
            || '/lifts/device.html?code=' || code,
        'expires_in', expires_in,
        'interval', poll_interval);
END
$$;

-- A user code as typed: case and "-"/spaces ignored.
CREATE OR REPLACE FUNCTION lifts.normalise_user_code(code text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT upper(regexp_replace(coalesce(code, ''), '[\s-]', '', 'g'));
$$;

-- POST /api/lift-orgs/{org}/devices/approve {"user_code", "lift"}
-- (staff): binds the pending authorisation to a lift of the organisation.
-- Approving revokes the lift's earlier device tokens (generation + 1) when
-- the token is issued.
CREATE OR REPLACE FUNCTION api.device_approve(org bigint, user_id bigint,
                                              body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    code  text;
    a     lifts.device_authorizations;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    code := lifts.normalise_user_code(body->>'user_code');
    IF code !~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$' THEN
        PERFORM app.bad_field('user_code', 'The code is 8 letters, e.g. WDJB-MJHT.');
    END IF;
    IF jsonb_typeof(body->'lift') IS DISTINCT FROM 'number'
       OR body->>'lift' !~ '^[0-9]{1,18}$'
       OR NOT EXISTS (SELECT 1 FROM lifts.lifts AS l
                      WHERE l.id = (body->>'lift')::bigint AND l.org_id = org) THEN
        PERFORM app.bad_field('lift', 'No such lift.');
    END IF;

    UPDATE lifts.device_authorizations AS x
    SET state = 'approved', lift_id = (body->>'lift')::bigint,
        decided_by = user_id
    WHERE x.user_code = code AND x.state = 'pending' AND x.expires_at > now()
    RETURNING * INTO a;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No pending device has this code (it may have expired).'
            USING ERRCODE = 'PT404', DETAIL = 'field: user_code';
    END IF;

    RETURN json_build_object('approved', true, 'lift', a.lift_id,
                             'serial', a.serial);
END
$$;

-- POST /api/lift-orgs/{org}/devices/deny {"user_code"} (staff).
CREATE OR REPLACE FUNCTION api.device_deny(org bigint, user_id bigint,
                                           body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    code text;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    code := lifts.normalise_user_code(body->>'user_code');
    IF code !~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$' THEN
        PERFORM app.bad_field('user_code', 'The code is 8 letters, e.g. WDJB-MJHT.');
    END IF;
    UPDATE lifts.device_authorizations AS x
    SET state = 'denied', decided_by = user_id
    WHERE x.user_code = code AND x.state = 'pending' AND x.expires_at > now();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No pending device has this code (it may have expired).'
            USING ERRCODE = 'PT404', DETAIL = 'field: user_code';
    END IF;
    RETURN json_build_object('denied', true);
END
$$;

-- The device token for (lift, generation) under KEY (hex).
CREATE OR REPLACE FUNCTION lifts.device_token(lift bigint, generation int,
                                              key text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'lt1.' || translate(rtrim(encode(m || public.hmac(
                         convert_to('lift-token-v1', 'UTF8') || m,
                         decode(key, 'hex'), 'sha256'), 'base64'), '='),
                     E'+/\n', '-_')
    FROM (SELECT int8send(lift) || int4send(generation) AS m) AS x;
$$;

-- POST /api/devices/token {"device_code"}: api.device_token(body,
-- $platform_device_key).  RFC 8628 section 3.5 answers.  The token is
-- issued once: a later poll with the same code is invalid_grant.
CREATE OR REPLACE FUNCTION api.device_token(body jsonb, key text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a   lifts.device_authorizations;
    gen int;
BEGIN
    IF key IS NULL OR key !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'device tokens are not configured'
            USING ERRCODE = 'PT500',
                  DETAIL = 'key must be $platform_device_key (platform_device_key)';
    END IF;
    IF body IS NULL OR jsonb_typeof(body) <> 'object'
       OR jsonb_typeof(body->'device_code') IS DISTINCT FROM 'string' THEN
        RETURN lifts.oauth_error('invalid_request', 'device_code is missing');
    END IF;

    SELECT * INTO a
    FROM lifts.device_authorizations AS x
    WHERE x.device_hash = sha256(convert_to(body->>'device_code', 'UTF8'))
    FOR UPDATE;

    IF NOT FOUND OR a.state = 'issued' THEN
        RETURN lifts.oauth_error('invalid_grant');
    END IF;
    IF a.state = 'denied' THEN
        RETURN lifts.oauth_error('access_denied');
    END IF;
    IF a.expires_at <= now() THEN
        RETURN lifts.oauth_error('expired_token');
    END IF;

    IF a.state = 'pending' THEN
        IF a.last_poll_at IS NOT NULL
           AND now() < a.last_poll_at + a.poll_interval * interval '1 second'
        THEN
            UPDATE lifts.device_authorizations AS x
            SET poll_interval = x.poll_interval + 5, last_poll_at = now()
            WHERE x.id = a.id;
            RETURN lifts.oauth_error('slow_down');
        END IF;
        UPDATE lifts.device_authorizations AS x
        SET last_poll_at = now()
        WHERE x.id = a.id;
        RETURN lifts.oauth_error('authorization_pending');
    END IF;

    -- approved: a new generation, so the lift's earlier tokens stop working
    UPDATE lifts.lifts AS l
    SET token_generation = l.token_generation + 1, enrolled_at = now()
    WHERE l.id = a.lift_id
    RETURNING l.token_generation INTO gen;
    IF NOT FOUND THEN
        RETURN lifts.oauth_error('access_denied', 'the lift was deleted');
    END IF;

    UPDATE lifts.device_authorizations AS x
    SET state = 'issued', last_poll_at = now()
    WHERE x.id = a.id;

    PERFORM platform.set_header('Cache-Control', 'no-store');
    RETURN json_build_object('access_token',
                             lifts.device_token(a.lift_id, gen, key),
                             'token_type', 'Bearer', 'lift', a.lift_id);
END
$$;

-- Old authorisations go (maintenance.lifts_purge, an SQL job).
CREATE OR REPLACE FUNCTION maintenance.lifts_purge()
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM lifts.device_authorizations
    WHERE expires_at < now() - interval '1 day';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN json_build_object('device_authorizations', n);
END
$$;

REVOKE ALL ON FUNCTION maintenance.lifts_purge() FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Rights
-- ---------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA lifts FROM PUBLIC, platform_app;
-- helpers run inside the SECURITY DEFINER functions only
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA lifts FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifts.ingest(bigint[], int[], bigint[], bigint[],
    text[], int[], int[], text[], int[], real[], text[], bigint[], bigint[],
    bigint[], bigint[], bigint[]) TO platform_app;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'api.lift_buildings_list(bigint)',
        'api.lift_building_create(bigint, jsonb)',
        'api.lift_building_get(bigint, bigint)',
        'api.lift_building_update(bigint, bigint, jsonb)',
        'api.lift_building_delete(bigint, bigint)',
        'api.lifts_list(bigint, bigint)',
        'api.lift_create(bigint, jsonb)',
        'api.lift_get(bigint, bigint)',
        'api.lift_update(bigint, bigint, jsonb)',
        'api.lift_delete(bigint, bigint)',
        'api.lift_revoke(bigint, bigint)',
        'api.device_authorize(jsonb, text, text, int, int)',
        'api.device_approve(bigint, bigint, jsonb)',
        'api.device_deny(bigint, bigint, jsonb)',
        'api.device_token(jsonb, text)']
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO platform_app', f);
    END LOOP;
END
$$;
