-- 005_events.sql - organisations, organiser event management, ticket
-- types, and the public listing with date filters and title search
-- (issue 4, first slice; registration comes next).
--
-- Organiser endpoints take the organisation from the session
-- ($platform_org, checked by `platform_auth organiser org=$1`) and check
-- here that the event belongs to it: someone else's event is 404.
-- Bad input is 22023 (400) with DETAIL 'field: <name>' naming the field.
-- Functions that write are SECURITY DEFINER with a fixed search_path.

CREATE EXTENSION IF NOT EXISTS pg_trgm;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS app.organisations (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL
                   CONSTRAINT organisations_name_check
                   CHECK (length(name) BETWEEN 1 AND 200),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Stripe Connect account: paid tickets need one.
    stripe_account text
);

ALTER TABLE app.events ADD COLUMN IF NOT EXISTS cover_url text;
ALTER TABLE app.events ADD COLUMN IF NOT EXISTS main_stage boolean NOT NULL DEFAULT false;
ALTER TABLE app.events ADD COLUMN IF NOT EXISTS breakouts boolean NOT NULL DEFAULT false;
ALTER TABLE app.events ADD COLUMN IF NOT EXISTS team_size int;
ALTER TABLE app.events ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'events_team_size_check'
                     AND conrelid = 'app.events'::regclass) THEN
        ALTER TABLE app.events ADD CONSTRAINT events_team_size_check
            CHECK (team_size IS NULL OR team_size >= 0);
    END IF;
    -- NOT VALID: rows from before organisations existed are left alone.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'events_organisation_id_fkey'
                     AND conrelid = 'app.events'::regclass) THEN
        ALTER TABLE app.events ADD CONSTRAINT events_organisation_id_fkey
            FOREIGN KEY (organisation_id) REFERENCES app.organisations (id)
            NOT VALID;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS events_organisation_id_idx
    ON app.events (organisation_id, starts_at);

-- Title search (ILIKE '%...%').
CREATE INDEX IF NOT EXISTS events_title_trgm_idx
    ON app.events USING gin (title public.gin_trgm_ops);

CREATE TABLE IF NOT EXISTS app.ticket_types (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    name        text NOT NULL
                CONSTRAINT ticket_types_name_check
                CHECK (length(name) BETWEEN 1 AND 200),
    price_minor int NOT NULL DEFAULT 0
                CONSTRAINT ticket_types_price_check CHECK (price_minor >= 0),
    -- Keep in step with app.currencies().
    currency    char(3)
                CONSTRAINT ticket_types_currency_check
                CHECK (currency IN ('EUR', 'USD', 'GBP', 'CHF', 'SEK',
                                    'NOK', 'DKK', 'PLN', 'CZK', 'CAD',
                                    'AUD', 'JPY')),
    quantity    int NOT NULL CONSTRAINT ticket_types_quantity_check
                CHECK (quantity > 0),
    sold        int NOT NULL DEFAULT 0,
    sales_start timestamptz,
    sales_end   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT ticket_types_sold_check CHECK (sold >= 0 AND sold <= quantity),
    CONSTRAINT ticket_types_currency_required
        CHECK (price_minor = 0 OR currency IS NOT NULL),
    CONSTRAINT ticket_types_sales_check
        CHECK (sales_start IS NULL OR sales_end IS NULL
               OR sales_end > sales_start)
);

CREATE INDEX IF NOT EXISTS ticket_types_event_id_idx
    ON app.ticket_types (event_id);

-- nginx reads events directly (api.events_upcoming is not SECURITY
-- DEFINER); organisations and ticket types only through functions.
REVOKE ALL ON app.organisations, app.ticket_types FROM PUBLIC, platform_app;


-- ---------------------------------------------------------------------
-- Helpers (schema app, not callable by nginx)
-- ---------------------------------------------------------------------

-- Raises 22023 (400) naming the field in DETAIL.
CREATE OR REPLACE FUNCTION app.bad_field(field text, message text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = message,
                          DETAIL = 'field: ' || field;
END
$$;

-- The business types events may have: one list for checks and messages
-- (002's constraint on app.events guards the same list in the table).
CREATE OR REPLACE FUNCTION app.business_types()
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['conference', 'hackathon', 'meetup', 'workshop', 'webinar',
                 'other']
$$;

-- A request body must be a JSON object whose fields are all known.
CREATE OR REPLACE FUNCTION app.check_fields(body jsonb, known text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'Send a JSON object.');
    END IF;

    FOR k IN SELECT jsonb_object_keys(body) LOOP
        IF k <> ALL (known) THEN
            PERFORM app.bad_field(k, 'Unknown field ' || left(k, 50) || '.');
        END IF;
    END LOOP;
END
$$;

-- The percent-decoding nginx leaves undone for $arg_x ("+" is a space).
CREATE OR REPLACE FUNCTION app.url_decode(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(convert_from(string_agg(
               CASE WHEN r.m[1] IS NOT NULL THEN decode(substr(r.m[1], 2), 'hex')
                    ELSE convert_to(r.m[2], 'UTF8') END,
               ''::bytea ORDER BY r.n), 'UTF8'), '')
    FROM regexp_matches(replace(s, '+', ' '),
                        '(%[0-9A-Fa-f]{2})|([^%]+|%)', 'g')
         WITH ORDINALITY AS r(m, n);
$$;

CREATE OR REPLACE FUNCTION app.json_time(body jsonb, field text)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v timestamptz;
BEGIN
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'string' THEN
        PERFORM app.bad_field(field, field || ' must be a date and time '
                                     '(ISO 8601, e.g. 2027-05-01T09:00:00Z).');
    END IF;
    BEGIN
        v := (body->>field)::timestamptz;
    EXCEPTION WHEN data_exception THEN
        PERFORM app.bad_field(field, field || ' is not a valid date and time.');
    END;
    IF NOT isfinite(v) THEN
        PERFORM app.bad_field(field, field || ' is not a valid date and time.');
    END IF;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION app.json_int(body jsonb, field text,
                                        min_value int DEFAULT 0)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body->field = 'null'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'number' THEN
        PERFORM app.bad_field(field, field || ' must be a whole number of at least '
                                     || min_value || '.');
    END IF;
    IF (body->>field)::numeric <> trunc((body->>field)::numeric)
       OR (body->>field)::numeric NOT BETWEEN min_value AND 2147483647
    THEN
        PERFORM app.bad_field(field, field || ' must be a whole number of at least '
                                     || min_value || '.');
    END IF;
    RETURN (body->>field)::int;
END
$$;

CREATE OR REPLACE FUNCTION app.json_bool(body jsonb, field text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'boolean' THEN
        PERFORM app.bad_field(field, field || ' must be true or false.');
    END IF;
    RETURN (body->>field)::boolean;
END
$$;

CREATE OR REPLACE FUNCTION app.json_text(body jsonb, field text,
                                         max_len int, min_len int DEFAULT 0)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
BEGIN
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'string' THEN
        PERFORM app.bad_field(field, field || ' must be a string.');
    END IF;
    v := btrim(body->>field);
    IF length(v) < min_len THEN
        PERFORM app.bad_field(field, field || ' is required.');
    END IF;
    IF length(v) > max_len THEN
        PERFORM app.bad_field(field, field || ' is too long (at most '
                                     || max_len || ' characters).');
    END IF;
    RETURN v;
END
$$;

-- The body's fields applied to an event (defaults for a new one), checked.
CREATE OR REPLACE FUNCTION app.event_apply(e app.events, body jsonb)
RETURNS app.events
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM app.check_fields(body, ARRAY['title', 'description',
                'business_type', 'starts_at', 'ends_at', 'time_zone',
                'capacity', 'cover_url', 'main_stage', 'breakouts',
                'team_size']);

    IF body ? 'title' THEN
        e.title := app.json_text(body, 'title', 200, 1);
    END IF;
    IF body ? 'description' THEN
        e.description := app.json_text(body, 'description', 10000);
    END IF;
    IF body ? 'business_type' THEN
        e.business_type := body->>'business_type';
        IF jsonb_typeof(body->'business_type') IS DISTINCT FROM 'string'
           OR e.business_type <> ALL (app.business_types()) THEN
            PERFORM app.bad_field('business_type',
                'business_type must be one of '
                || array_to_string(app.business_types(), ', ') || '.');
        END IF;
    END IF;
    IF body ? 'starts_at' THEN
        e.starts_at := app.json_time(body, 'starts_at');
    END IF;
    IF body ? 'ends_at' THEN
        e.ends_at := app.json_time(body, 'ends_at');
    END IF;
    IF body ? 'time_zone' THEN
        e.time_zone := app.json_text(body, 'time_zone', 64, 1);
        IF NOT EXISTS (SELECT 1 FROM pg_timezone_names AS z
                       WHERE z.name = e.time_zone) THEN
            PERFORM app.bad_field('time_zone',
                'time_zone must be an IANA time zone, e.g. Europe/Paris.');
        END IF;
    END IF;
    IF body ? 'capacity' THEN
        e.capacity := app.json_int(body, 'capacity', 0);
    END IF;
    IF body ? 'team_size' THEN
        e.team_size := app.json_int(body, 'team_size', 0);
    END IF;
    IF body ? 'cover_url' THEN
        IF body->'cover_url' = 'null'::jsonb THEN
            e.cover_url := NULL;
        ELSE
            e.cover_url := app.json_text(body, 'cover_url', 2000);
            IF e.cover_url !~ '^https?://[^[:space:][:cntrl:]]+$' THEN
                PERFORM app.bad_field('cover_url',
                    'cover_url must be an http(s) address.');
            END IF;
        END IF;
    END IF;
    IF body ? 'main_stage' THEN
        e.main_stage := app.json_bool(body, 'main_stage');
    END IF;
    IF body ? 'breakouts' THEN
        e.breakouts := app.json_bool(body, 'breakouts');
    END IF;

    IF e.title IS NULL THEN
        PERFORM app.bad_field('title', 'title is required.');
    END IF;
    IF e.business_type IS NULL THEN
        PERFORM app.bad_field('business_type', 'business_type is required.');
    END IF;
    IF e.starts_at IS NULL THEN
        PERFORM app.bad_field('starts_at', 'starts_at is required.');
    END IF;
    IF e.ends_at IS NULL THEN
        PERFORM app.bad_field('ends_at', 'ends_at is required.');
    END IF;
    IF e.ends_at <= e.starts_at THEN
        PERFORM app.bad_field('ends_at', 'ends_at must be after starts_at.');
    END IF;

    RETURN e;
END
$$;

-- The organisation's event, locked, or 404.
CREATE OR REPLACE FUNCTION app.org_event(org_id bigint, event_id bigint)
RETURNS app.events
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events;
BEGIN
    SELECT * INTO e
    FROM app.events AS x
    WHERE x.id = org_event.event_id
      AND x.organisation_id = org_event.org_id
    FOR UPDATE;

    IF NOT FOUND OR org_id IS NULL THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    RETURN e;
END
$$;

CREATE OR REPLACE FUNCTION app.ticket_type_json(t app.ticket_types)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', t.id,
        'name', t.name,
        'price_minor', t.price_minor,
        'currency', t.currency,
        'quantity', t.quantity,
        'sold', t.sold,
        'remaining', t.quantity - t.sold,
        'sales_start', t.sales_start,
        'sales_end', t.sales_end);
$$;

CREATE OR REPLACE FUNCTION app.event_json(e app.events)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', e.id,
        'organisation_id', e.organisation_id,
        'title', e.title,
        'description', e.description,
        'business_type', e.business_type,
        'starts_at', e.starts_at,
        'ends_at', e.ends_at,
        'time_zone', e.time_zone,
        'capacity', e.capacity,
        'status', e.status,
        'cover_url', e.cover_url,
        'main_stage', e.main_stage,
        'breakouts', e.breakouts,
        'team_size', e.team_size,
        'created_at', e.created_at,
        'updated_at', e.updated_at,
        'ticket_types',
        (SELECT coalesce(json_agg(app.ticket_type_json(t) ORDER BY t.id),
                         '[]'::json)
         FROM app.ticket_types AS t
         WHERE t.event_id = e.id));
$$;

-- The body's fields applied to a ticket type, checked.
CREATE OR REPLACE FUNCTION app.ticket_type_apply(t app.ticket_types, body jsonb)
RETURNS app.ticket_types
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM app.check_fields(body, ARRAY['name', 'price_minor', 'currency',
                'quantity', 'sales_start', 'sales_end']);

    IF body ? 'name' THEN
        t.name := app.json_text(body, 'name', 200, 1);
    END IF;
    IF body ? 'price_minor' THEN
        t.price_minor := coalesce(app.json_int(body, 'price_minor', 0), 0);
    END IF;
    IF body ? 'currency' THEN
        IF body->'currency' = 'null'::jsonb THEN
            t.currency := NULL;
        ELSIF jsonb_typeof(body->'currency') IS DISTINCT FROM 'string'
              OR upper(body->>'currency') <> ALL (ARRAY['EUR', 'USD', 'GBP',
                     'CHF', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK', 'CAD', 'AUD',
                     'JPY']) THEN
            PERFORM app.bad_field('currency',
                'currency must be one of EUR, USD, GBP, CHF, SEK, NOK, DKK, '
                'PLN, CZK, CAD, AUD, JPY.');
        ELSE
            t.currency := upper(body->>'currency');
        END IF;
    END IF;
    IF body ? 'quantity' THEN
        t.quantity := app.json_int(body, 'quantity', 1);
    END IF;
    IF body ? 'sales_start' THEN
        t.sales_start := CASE WHEN body->'sales_start' = 'null'::jsonb THEN NULL
                              ELSE app.json_time(body, 'sales_start') END;
    END IF;
    IF body ? 'sales_end' THEN
        t.sales_end := CASE WHEN body->'sales_end' = 'null'::jsonb THEN NULL
                            ELSE app.json_time(body, 'sales_end') END;
    END IF;

    IF t.name IS NULL THEN
        PERFORM app.bad_field('name', 'name is required.');
    END IF;
    IF t.quantity IS NULL THEN
        PERFORM app.bad_field('quantity', 'quantity is required.');
    END IF;
    IF t.quantity < t.sold THEN
        PERFORM app.bad_field('quantity', 'quantity cannot be below the '
                                          || t.sold || ' tickets sold.');
    END IF;
    IF coalesce(t.price_minor, 0) > 0 AND t.currency IS NULL THEN
        PERFORM app.bad_field('currency', 'currency is required for a paid ticket.');
    END IF;
    IF t.sales_end <= t.sales_start THEN
        PERFORM app.bad_field('sales_end', 'sales_end must be after sales_start.');
    END IF;

    RETURN t;
END
$$;

-- One ticket of the type, if any is left: true when taken.  One UPDATE,
-- so concurrent callers cannot oversell (the row lock serialises them and
-- each re-checks sold < quantity on the current row).
CREATE OR REPLACE FUNCTION app.take_ticket(ticket_type_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH t AS (
        UPDATE app.ticket_types AS x
        SET sold = x.sold + 1
        WHERE x.id = take_ticket.ticket_type_id
          AND x.sold < x.quantity
        RETURNING x.id
    )
    SELECT EXISTS (SELECT 1 FROM t);
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA app FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Endpoints: organisations
-- ---------------------------------------------------------------------

-- POST /api/orgs (platform_auth any): api.org_create($platform_user::bigint,
-- $platform_body::jsonb), body {"name"}.  201 {"id", "name"}; the caller
-- becomes its organiser and the session is re-issued with the membership.
CREATE OR REPLACE FUNCTION api.org_create(user_id bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text;
    o      app.organisations;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'Send a JSON object with the name.');
    END IF;
    v_name := app.json_text(body, 'name', 200, 1);

    INSERT INTO app.organisations (name) VALUES (v_name) RETURNING * INTO o;
    INSERT INTO auth.memberships (user_id, role, org_id)
    VALUES (org_create.user_id, 'organiser', o.id);

    PERFORM platform.set_session(org_create.user_id);
    PERFORM platform.set_status(201);
    RETURN json_build_object('id', o.id, 'name', o.name,
                             'created_at', o.created_at);
END
$$;

-- POST /api/orgs/{org}/invites (platform_auth organiser org=$1):
--   api.org_invite($platform_user::bigint, $platform_org::bigint,
--                  $platform_body::jsonb), body {"email"}.
-- Makes the address (an account is created if needed) an organiser of the
-- organisation and mails it a plain notice (no template: the sign-in page
-- is where they go; their next session carries the membership).
CREATE OR REPLACE FUNCTION api.org_invite(user_id bigint, org_id bigint,
                                          body jsonb,
                                          base_url text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email  text;
    v_org    text;
    v_uid    bigint;
    v_added  boolean;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM auth.memberships AS m
                   WHERE m.user_id = org_invite.user_id
                     AND m.role = 'organiser'
                     AND m.org_id = org_invite.org_id) THEN
        RAISE EXCEPTION 'Only organisers of this organisation can invite.'
            USING ERRCODE = 'PT403';
    END IF;
    SELECT o.name INTO v_org FROM app.organisations AS o
    WHERE o.id = org_invite.org_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such organisation.' USING ERRCODE = 'PT404';
    END IF;

    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'Send a JSON object with the email.');
    END IF;
    v_email := lower(app.json_text(body, 'email', 254, 1));
    IF v_email !~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+\.[^@[:space:][:cntrl:]]+$' THEN
        PERFORM app.bad_field('email', 'email is not a valid email address.');
    END IF;

    INSERT INTO auth.users AS x (email) VALUES (v_email)
    ON CONFLICT (email) DO UPDATE SET email = x.email
    RETURNING x.id INTO v_uid;

    INSERT INTO auth.memberships (user_id, role, org_id)
    VALUES (v_uid, 'organiser', org_invite.org_id)
    ON CONFLICT ON CONSTRAINT memberships_key DO NOTHING;
    v_added := FOUND;

    IF v_added THEN
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', v_email,
            'subject', 'You are now an organiser of ' || v_org,
            'text', 'You were added as an organiser of "' || v_org || '".'
                    || E'\n\nSign in with this address'
                    || coalesce(' at ' || rtrim(base_url, '/') || '/signin.html', '')
                    || ' to manage its events.' || E'\n'));
        PERFORM platform.set_status(201);
    END IF;

    RETURN json_build_object('user_id', v_uid, 'email', v_email,
                             'org_id', org_invite.org_id,
                             'added', v_added);
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: organiser events (platform_auth organiser org=$1)
-- ---------------------------------------------------------------------

-- GET /api/orgs/{org}/events: all the organisation's events (drafts,
-- published, past), {"current": [...], "past": [...]}.
CREATE OR REPLACE FUNCTION api.org_events(org_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'current', coalesce(json_agg(app.event_json(e) ORDER BY e.starts_at, e.id)
                            FILTER (WHERE e.ends_at > now()), '[]'::json),
        'past', coalesce(json_agg(app.event_json(e) ORDER BY e.starts_at DESC, e.id)
                         FILTER (WHERE e.ends_at <= now()), '[]'::json))
    FROM app.events AS e
    WHERE e.organisation_id = org_events.org_id;
$$;

-- POST /api/orgs/{org}/events: a draft.  201 with the event.
CREATE OR REPLACE FUNCTION api.event_create(org_id bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events;
BEGIN
    IF org_id IS NULL THEN
        RAISE EXCEPTION 'No organisation.' USING ERRCODE = 'PT403';
    END IF;
    e.description := '';
    e.time_zone := 'UTC';
    e.main_stage := false;
    e.breakouts := false;
    e := app.event_apply(e, body);

    INSERT INTO app.events (organisation_id, title, description,
                            business_type, starts_at, ends_at, time_zone,
                            capacity, cover_url, main_stage, breakouts,
                            team_size)
    VALUES (event_create.org_id, e.title, e.description, e.business_type,
            e.starts_at, e.ends_at, e.time_zone, e.capacity, e.cover_url,
            e.main_stage, e.breakouts, e.team_size)
    RETURNING * INTO e;

    PERFORM platform.set_status(201);
    RETURN app.event_json(e);
END
$$;

-- GET /api/orgs/{org}/events/{id}: the event whatever its status.
CREATE OR REPLACE FUNCTION api.org_event_get(org_id bigint, event_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.event_json(e)
    FROM app.events AS e
    WHERE e.id = org_event_get.event_id
      AND e.organisation_id = org_event_get.org_id;
$$;

-- PATCH /api/orgs/{org}/events/{id}: the fields sent (drafts and
-- published events; a published event cannot move into the past).
CREATE OR REPLACE FUNCTION api.event_update(org_id bigint, event_id bigint,
                                            body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e    app.events := app.org_event(org_id, event_id);
    prev app.events := e;
BEGIN
    IF e.status = 'cancelled' THEN
        RAISE EXCEPTION 'A cancelled event cannot be changed.'
            USING ERRCODE = 'PT409';
    END IF;
    e := app.event_apply(e, body);
    IF e.status = 'published' AND e.starts_at <= now()
       AND e.starts_at IS DISTINCT FROM prev.starts_at THEN
        PERFORM app.bad_field('starts_at', 'starts_at must be in the future.');
    END IF;

    UPDATE app.events AS x
    SET title = e.title, description = e.description,
        business_type = e.business_type, starts_at = e.starts_at,
        ends_at = e.ends_at, time_zone = e.time_zone, capacity = e.capacity,
        cover_url = e.cover_url, main_stage = e.main_stage,
        breakouts = e.breakouts, team_size = e.team_size, updated_at = now()
    WHERE x.id = e.id
    RETURNING * INTO e;

    RETURN app.event_json(e);
END
$$;

-- POST /api/orgs/{org}/events/{id}/publish
CREATE OR REPLACE FUNCTION api.event_publish(org_id bigint, event_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
BEGIN
    IF e.status = 'published' THEN
        RETURN app.event_json(e);
    END IF;
    IF e.status <> 'draft' THEN
        RAISE EXCEPTION 'Only a draft can be published.' USING ERRCODE = 'PT409';
    END IF;
    IF e.ends_at <= e.starts_at THEN
        PERFORM app.bad_field('ends_at', 'ends_at must be after starts_at.');
    END IF;
    IF e.starts_at <= now() THEN
        PERFORM app.bad_field('starts_at', 'starts_at must be in the future.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM app.ticket_types AS t
                   WHERE t.event_id = e.id) THEN
        PERFORM app.bad_field('ticket_types',
                              'Add at least one ticket type first.');
    END IF;
    IF EXISTS (SELECT 1 FROM app.ticket_types AS t
               WHERE t.event_id = e.id AND t.price_minor > 0)
       AND (SELECT o.stripe_account FROM app.organisations AS o
            WHERE o.id = e.organisation_id) IS NULL THEN
        PERFORM app.bad_field('stripe_account',
            'Paid tickets need a connected Stripe account.');
    END IF;

    UPDATE app.events AS x
    SET status = 'published', updated_at = now()
    WHERE x.id = e.id
    RETURNING * INTO e;

    RETURN app.event_json(e);
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: ticket types
-- ---------------------------------------------------------------------

-- POST /api/orgs/{org}/events/{event}/ticket-types
CREATE OR REPLACE FUNCTION api.ticket_type_create(org_id bigint,
                                                  event_id bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
    t app.ticket_types;
BEGIN
    t.price_minor := 0;
    t.sold := 0;
    t := app.ticket_type_apply(t, body);

    INSERT INTO app.ticket_types (event_id, name, price_minor, currency,
                                  quantity, sales_start, sales_end)
    VALUES (e.id, t.name, t.price_minor, t.currency, t.quantity,
            t.sales_start, t.sales_end)
    RETURNING * INTO t;

    PERFORM platform.set_status(201);
    RETURN app.ticket_type_json(t);
END
$$;

-- PATCH /api/orgs/{org}/events/{event}/ticket-types/{id}
CREATE OR REPLACE FUNCTION api.ticket_type_update(org_id bigint,
                                                  event_id bigint,
                                                  ticket_type_id bigint,
                                                  body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
    t app.ticket_types;
BEGIN
    SELECT * INTO t FROM app.ticket_types AS x
    WHERE x.id = ticket_type_update.ticket_type_id AND x.event_id = e.id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such ticket type.' USING ERRCODE = 'PT404';
    END IF;

    t := app.ticket_type_apply(t, body);

    UPDATE app.ticket_types AS x
    SET name = t.name, price_minor = t.price_minor, currency = t.currency,
        quantity = t.quantity, sales_start = t.sales_start,
        sales_end = t.sales_end
    WHERE x.id = t.id
    RETURNING * INTO t;

    RETURN app.ticket_type_json(t);
END
$$;

-- DELETE /api/orgs/{org}/events/{event}/ticket-types/{id}: only while none
-- is sold (409 otherwise).
CREATE OR REPLACE FUNCTION api.ticket_type_delete(org_id bigint,
                                                  event_id bigint,
                                                  ticket_type_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e      app.events := app.org_event(org_id, event_id);
    v_sold int;
BEGIN
    DELETE FROM app.ticket_types AS x
    WHERE x.id = ticket_type_delete.ticket_type_id AND x.event_id = e.id
    RETURNING x.sold INTO v_sold;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such ticket type.' USING ERRCODE = 'PT404';
    END IF;
    IF v_sold > 0 THEN
        RAISE EXCEPTION 'Tickets of this type were sold: it cannot be deleted.'
            USING ERRCODE = 'PT409';
    END IF;
    RETURN json_build_object('deleted', ticket_type_id);
END
$$;


-- ---------------------------------------------------------------------
-- Public listing
-- ---------------------------------------------------------------------

-- GET /api/events?after=&limit=&type=&from=&to=&q=
--
-- As in 002, plus: from_date / to_date (events overlapping those days,
-- UTC), q (title contains, case-insensitive; %-escapes are decoded here
-- because nginx's $arg_q is not).  Only published events.
DROP FUNCTION IF EXISTS api.events_upcoming(text, int, text);

CREATE OR REPLACE FUNCTION api.events_upcoming(after text DEFAULT NULL,
                                               lim int DEFAULT 20,
                                               business_type text DEFAULT NULL,
                                               from_date date DEFAULT NULL,
                                               to_date date DEFAULT NULL,
                                               q text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    n       int := least(greatest(coalesce(lim, 20), 1), 100);
    c_start timestamptz := '-infinity';
    c_id    bigint := 0;
    v_from  timestamptz := (from_date::timestamp AT TIME ZONE 'UTC');
    v_to    timestamptz := ((to_date + 1)::timestamp AT TIME ZONE 'UTC');
    pattern text;
    result  json;
BEGIN
    IF events_upcoming.business_type IS NOT NULL
       AND events_upcoming.business_type <> ALL (app.business_types())
    THEN
        RAISE EXCEPTION 'unknown business type'
            USING ERRCODE = '22023',
                  HINT = 'use one of '
                         || array_to_string(app.business_types(), ', ');
    END IF;

    IF from_date IS NOT NULL AND to_date IS NOT NULL AND to_date < from_date
    THEN
        RAISE EXCEPTION 'to is before from' USING ERRCODE = '22023',
              DETAIL = 'field: to';
    END IF;

    IF q IS NOT NULL THEN
        pattern := btrim(app.url_decode(q));
        IF length(pattern) > 200 THEN
            RAISE EXCEPTION 'search text is too long' USING ERRCODE = '22023',
                  DETAIL = 'field: q';
        END IF;
        pattern := CASE WHEN pattern = '' THEN NULL
                        ELSE '%' || replace(replace(replace(pattern,
                                 '\', '\\'), '%', '\%'), '_', '\_') || '%'
                   END;
    END IF;

    IF after IS NOT NULL THEN
        SELECT c.ts, c.id INTO c_start, c_id
        FROM platform.cursor_decode(after) AS c;
    END IF;

    WITH page AS (
        SELECT e.id, e.title, e.business_type, e.starts_at, e.ends_at,
               e.time_zone,
               row_number() OVER (ORDER BY e.starts_at, e.id) AS rn
        FROM (SELECT *
              FROM app.events AS ev
              WHERE ev.status = 'published'
                AND ev.ends_at > now()
                AND (ev.starts_at, ev.id) > (c_start, c_id)
                AND (events_upcoming.business_type IS NULL
                     OR ev.business_type = events_upcoming.business_type)
                AND (v_from IS NULL OR ev.ends_at > v_from)
                AND (v_to IS NULL OR ev.starts_at < v_to)
                AND (pattern IS NULL OR ev.title ILIKE pattern)
              ORDER BY ev.starts_at, ev.id
              LIMIT n + 1) AS e
    )
    SELECT json_build_object(
               'items',
               coalesce(json_agg(json_build_object(
                            'id', p.id,
                            'title', p.title,
                            'business_type', p.business_type,
                            'starts_at', p.starts_at,
                            'ends_at', p.ends_at,
                            'time_zone', p.time_zone)
                        ORDER BY p.rn) FILTER (WHERE p.rn <= n),
                        '[]'::json),
               'next',
               CASE WHEN count(*) > n THEN
                   platform.cursor_encode(
                       max(p.starts_at) FILTER (WHERE p.rn = n),
                       max(p.id) FILTER (WHERE p.rn = n))
               END)
    INTO result
    FROM page AS p;

    RETURN result;
END
$$;

-- app.url_decode and app.business_types are called by the listing as
-- platform_app.
GRANT EXECUTE ON FUNCTION app.url_decode(text) TO platform_app;
GRANT EXECUTE ON FUNCTION app.business_types() TO platform_app;

-- GET /api/events/{id}: published or cancelled events, with the
-- organisation's name and the ticket types (remaining = quantity - sold).
CREATE OR REPLACE FUNCTION api.event_get(id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
               'id', e.id,
               'organisation_id', e.organisation_id,
               'organisation', o.name,
               'title', e.title,
               'description', e.description,
               'business_type', e.business_type,
               'starts_at', e.starts_at,
               'ends_at', e.ends_at,
               'time_zone', e.time_zone,
               'capacity', e.capacity,
               'status', e.status,
               'cover_url', e.cover_url,
               'main_stage', e.main_stage,
               'breakouts', e.breakouts,
               'team_size', e.team_size,
               'ticket_types',
               (SELECT coalesce(json_agg(json_build_object(
                           'id', t.id,
                           'name', t.name,
                           'price_minor', t.price_minor,
                           'currency', t.currency,
                           'remaining', t.quantity - t.sold,
                           'sales_start', t.sales_start,
                           'sales_end', t.sales_end) ORDER BY t.id),
                       '[]'::json)
                FROM app.ticket_types AS t
                WHERE t.event_id = e.id))
    FROM app.events AS e
    LEFT JOIN app.organisations AS o ON o.id = e.organisation_id
    WHERE e.id = event_get.id
      AND e.status IN ('published', 'cancelled');
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api, platform TO platform_app;
