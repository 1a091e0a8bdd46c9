-- 021_rentals_channels.sql - holiday rentals: channels (Airbnb,
-- Booking.com, ...).  docs/rentals.md, section "Channels".
--
-- Applied by tools/migrate in one transaction; harmless when run again.
--
-- * Per business and channel the owner stores an API key and a webhook
--   secret.  Both arrive here already sealed (platform_seal in nginx:
--   libsodium secretbox under platform_secretbox_key, which PostgreSQL
--   never sees) as {"sealed": "<base64>", "last4": "..."}; the database
--   keeps the base64 and the key's last four characters, nothing else.
-- * Inbound webhooks (POST /api/channels/{business}/{channel}/webhook):
--   nginx looks the sealed secret up (api.channel_webhook_secret), opens
--   it and checks the signature before api.channel_webhook runs.  Events
--   are idempotent by (channel, event id) and by the booking's
--   (property, source, external_id); a stay the exclusion constraint
--   refuses becomes a rentals.booking_errors row, mailed to the owners.
-- * Outbound: triggers on bookings and properties queue one keyed sql job
--   per property (channel-push:<property>, a second later: ten changes in
--   a second make one push), which queues one call job per connected
--   channel to its platform_jobs_service with the API key as
--   "sealed:<base64>" in a header, opened by the jobs runner only when it
--   sends.  Dead pushes are listed and retried by the owner.

-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- The channels we know.  service: the platform_jobs_service of nginx.conf
-- that pushes go to (its base URL); the name is also the bookings'
-- source (rentals.bookings.source's check lists airbnb and booking_com: a
-- new kind needs that check extended too).
CREATE TABLE IF NOT EXISTS rentals.channel_kinds (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{1,30}$'),
    label         text NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
    service       text NOT NULL CHECK (service ~ '^[a-z0-9_]{1,32}$'),
    key_header    text NOT NULL DEFAULT 'X-Api-Key'
                  CHECK (key_header ~ '^[A-Za-z0-9-]{1,64}$'
                         AND lower(key_header) <> 'authorization'),
    max_attempts  int NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 100),
    push_delay    interval NOT NULL DEFAULT '1 second'
);

INSERT INTO rentals.channel_kinds (name, label, service)
VALUES ('airbnb', 'Airbnb', 'channel_airbnb'),
       ('booking_com', 'Booking.com', 'channel_booking_com')
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS rentals.channels (
    business_id            bigint NOT NULL
                           REFERENCES rentals.businesses (id) ON DELETE CASCADE,
    kind                   text NOT NULL REFERENCES rentals.channel_kinds (name),
    -- base64 of nonce || secretbox: only nginx can open it
    api_key_sealed         text NOT NULL
                           CHECK (api_key_sealed ~ '^[A-Za-z0-9+/]{56,}={0,2}$'),
    api_key_last4          text NOT NULL CHECK (length(api_key_last4) <= 4),
    webhook_secret_sealed  text NOT NULL
                           CHECK (webhook_secret_sealed
                                  ~ '^[A-Za-z0-9+/]{56,}={0,2}$'),
    enabled                boolean NOT NULL DEFAULT true,
    last_push_at           timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, kind)
);

-- Every inbound event once: a redelivery finds its row.
CREATE TABLE IF NOT EXISTS rentals.channel_events (
    kind         text NOT NULL,
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 200),
    business_id  bigint NOT NULL
                 REFERENCES rentals.businesses (id) ON DELETE CASCADE,
    type         text NOT NULL,
    external_id  text,
    booking_id   bigint,
    outcome      text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, event_id)
);

-- Stays a channel sent that could not be taken: the owner resolves them.
CREATE TABLE IF NOT EXISTS rentals.booking_errors (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id          bigint NOT NULL
                         REFERENCES rentals.businesses (id) ON DELETE CASCADE,
    property_id          bigint,
    channel              text NOT NULL,
    event_id             text NOT NULL,
    external_id          text,
    check_in             date,
    check_out            date,
    guest_name           text,
    guest_email          text,
    reason               text NOT NULL,
    conflict_booking_id  bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    resolved_at          timestamptz,
    resolved_by          bigint,
    resolution           text CHECK (length(resolution) <= 2000)
);

CREATE INDEX IF NOT EXISTS booking_errors_open
    ON rentals.booking_errors (business_id, created_at)
    WHERE resolved_at IS NULL;

GRANT SELECT ON rentals.channel_kinds TO rentals_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE ON rentals.channels TO rentals_tenant;
GRANT SELECT, UPDATE ON rentals.booking_errors TO rentals_tenant;

ALTER TABLE rentals.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.booking_errors ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.channel_events ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant ON rentals.channels;
CREATE POLICY tenant ON rentals.channels TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());

DROP POLICY IF EXISTS tenant ON rentals.booking_errors;
CREATE POLICY tenant ON rentals.booking_errors TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());


-- ---------------------------------------------------------------------
-- Owners: connecting channels
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rentals.channel_json(k rentals.channel_kinds,
                                                c rentals.channels,
                                                slug text)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'kind', k.name,
        'label', k.label,
        'connected', c.business_id IS NOT NULL,
        'enabled', coalesce(c.enabled, false),
        'api_key', json_build_object('set', c.business_id IS NOT NULL,
                                     'last4', c.api_key_last4),
        'webhook_secret', json_build_object('set',
                                            c.business_id IS NOT NULL),
        'webhook_path', '/api/channels/' || slug || '/' || k.name
                        || '/webhook',
        'last_push_at', c.last_push_at,
        'updated_at', c.updated_at);
$$;

-- GET /api/owner/channels
CREATE OR REPLACE FUNCTION api.owner_channels(user_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b    bigint := rentals.enter(user_id);
    v_slug text;
BEGIN
    SELECT b.slug INTO v_slug FROM rentals.businesses AS b WHERE b.id = v_b;
    RETURN json_build_object('channels', coalesce(
        (SELECT json_agg(rentals.channel_json(k, c, v_slug) ORDER BY k.name)
         FROM rentals.channel_kinds AS k
         LEFT JOIN rentals.channels AS c ON c.kind = k.name),
        '[]'::json));
END
$$;

-- A field platform_seal replaced: {"sealed": base64, "last4": text}.
CREATE OR REPLACE FUNCTION rentals.sealed_field(body jsonb, field text)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT body ? field THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(body -> field) IS DISTINCT FROM 'object'
       OR jsonb_typeof(body -> field -> 'sealed') IS DISTINCT FROM 'string'
       OR (body -> field ->> 'sealed') !~ '^[A-Za-z0-9+/]{56,}={0,2}$'
       OR jsonb_typeof(body -> field -> 'last4') IS DISTINCT FROM 'string'
    THEN
        -- only nginx's platform_seal makes these: a client cannot
        PERFORM app.bad_field(field, field || ' must be a string.');
    END IF;
    RETURN body -> field;
END
$$;

-- PUT /api/owner/channels/{kind} {"api_key", "webhook_secret", "enabled"?}
-- (both secrets to connect; afterwards either may be given alone).
CREATE OR REPLACE FUNCTION api.owner_channel_put(user_id bigint, kind text,
                                                 body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b    bigint := rentals.enter(user_id);
    k      rentals.channel_kinds;
    c      rentals.channels;
    v_key  jsonb;
    v_sec  jsonb;
    v_slug text;
    f      text;
BEGIN
    SELECT * INTO k FROM rentals.channel_kinds AS x
    WHERE x.name = owner_channel_put.kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such channel.' USING ERRCODE = 'PT404';
    END IF;
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    FOR f IN SELECT jsonb_object_keys(body) LOOP
        IF f NOT IN ('api_key', 'webhook_secret', 'enabled') THEN
            PERFORM app.bad_field(f, 'Unknown field ' || left(f, 64) || '.');
        END IF;
    END LOOP;
    IF body ? 'enabled' AND jsonb_typeof(body -> 'enabled') <> 'boolean' THEN
        PERFORM app.bad_field('enabled', 'enabled must be true or false.');
    END IF;
    v_key := rentals.sealed_field(body, 'api_key');
    v_sec := rentals.sealed_field(body, 'webhook_secret');

    SELECT * INTO c FROM rentals.channels AS x
    WHERE x.kind = k.name FOR UPDATE;
    IF NOT FOUND THEN
        IF v_key IS NULL THEN
            PERFORM app.bad_field('api_key', 'api_key is required.');
        END IF;
        IF v_sec IS NULL THEN
            PERFORM app.bad_field('webhook_secret',
                                  'webhook_secret is required.');
        END IF;
        INSERT INTO rentals.channels AS x
            (business_id, kind, api_key_sealed, api_key_last4,
             webhook_secret_sealed, enabled)
        VALUES (v_b, k.name, v_key ->> 'sealed', v_key ->> 'last4',
                v_sec ->> 'sealed',
                coalesce((body ->> 'enabled')::boolean, true))
        RETURNING * INTO c;
        PERFORM platform.set_status(201);
    ELSE
        UPDATE rentals.channels AS x
        SET api_key_sealed = coalesce(v_key ->> 'sealed', x.api_key_sealed),
            api_key_last4 = coalesce(v_key ->> 'last4', x.api_key_last4),
            webhook_secret_sealed = coalesce(v_sec ->> 'sealed',
                                             x.webhook_secret_sealed),
            enabled = coalesce((body ->> 'enabled')::boolean, x.enabled),
            updated_at = now()
        WHERE x.business_id = c.business_id AND x.kind = c.kind
        RETURNING * INTO c;
    END IF;
    SELECT b.slug INTO v_slug FROM rentals.businesses AS b WHERE b.id = v_b;
    RETURN rentals.channel_json(k, c, v_slug);
END
$$;

-- DELETE /api/owner/channels/{kind}: forgets the keys.
CREATE OR REPLACE FUNCTION api.owner_channel_delete(user_id bigint, kind text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
BEGIN
    DELETE FROM rentals.channels AS x WHERE x.kind = owner_channel_delete.kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such channel.' USING ERRCODE = 'PT404';
    END IF;
    RETURN json_build_object('deleted', true, 'kind', kind);
END
$$;


-- ---------------------------------------------------------------------
-- Booking errors
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rentals.booking_error_json(e rentals.booking_errors)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', e.id, 'property_id', e.property_id, 'channel', e.channel,
        'event_id', e.event_id, 'external_id', e.external_id,
        'check_in', e.check_in, 'check_out', e.check_out,
        'guest_name', e.guest_name, 'guest_email', e.guest_email,
        'reason', e.reason, 'conflict_booking_id', e.conflict_booking_id,
        'created_at', e.created_at, 'resolved_at', e.resolved_at,
        'resolution', e.resolution);
$$;

-- GET /api/owner/booking-errors?status=open|resolved|all
CREATE OR REPLACE FUNCTION api.owner_booking_errors(user_id bigint,
                                                    status text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    v_s text := coalesce(status, 'open');
BEGIN
    IF v_s NOT IN ('open', 'resolved', 'all') THEN
        PERFORM app.bad_field('status', 'status is open, resolved or all.');
    END IF;
    RETURN json_build_object('errors', coalesce(
        (SELECT json_agg(rentals.booking_error_json(e) ORDER BY e.id)
         FROM rentals.booking_errors AS e
         WHERE v_s = 'all'
            OR (v_s = 'open') = (e.resolved_at IS NULL)),
        '[]'::json));
END
$$;

-- POST /api/owner/booking-errors/{id}/resolve {"resolution"?}
CREATE OR REPLACE FUNCTION api.owner_booking_error_resolve(user_id bigint,
                                                           error_id bigint,
                                                           body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    e   rentals.booking_errors;
    v_r text;
BEGIN
    IF body IS NOT NULL AND jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    IF body IS NOT NULL AND EXISTS (SELECT 1 FROM jsonb_object_keys(body) f
                                    WHERE f <> 'resolution') THEN
        PERFORM app.bad_field('body', 'Only resolution may be given.');
    END IF;
    v_r := body ->> 'resolution';
    IF length(v_r) > 2000 THEN
        PERFORM app.bad_field('resolution', 'resolution is too long.');
    END IF;
    UPDATE rentals.booking_errors AS x
    SET resolved_at = coalesce(x.resolved_at, now()),
        resolved_by = coalesce(x.resolved_by, owner_booking_error_resolve.user_id),
        resolution = coalesce(v_r, x.resolution)
    WHERE x.id = error_id
    RETURNING * INTO e;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such booking error.' USING ERRCODE = 'PT404';
    END IF;
    RETURN rentals.booking_error_json(e);
END
$$;

ALTER FUNCTION api.owner_channels(bigint) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_channel_put(bigint, text, jsonb) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_channel_delete(bigint, text) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_booking_errors(bigint, text) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_booking_error_resolve(bigint, bigint, jsonb)
    OWNER TO rentals_tenant;


-- ---------------------------------------------------------------------
-- Inbound webhooks
-- ---------------------------------------------------------------------

-- A business by slug, else by id (a slug may be all digits: it wins).
CREATE OR REPLACE FUNCTION rentals.business_by_ref(ref text)
RETURNS bigint
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT b.id INTO v_id FROM rentals.businesses AS b WHERE b.slug = ref;
    IF v_id IS NULL AND ref ~ '^[0-9]{1,18}$' THEN
        SELECT b.id INTO v_id FROM rentals.businesses AS b
        WHERE b.id = ref::bigint;
    END IF;
    RETURN v_id;
END
$$;

-- For platform_webhook_sealed_signature: the sealed webhook secret of a
-- business (slug or id) and channel, or NULL (nginx answers 404).
CREATE OR REPLACE FUNCTION api.channel_webhook_secret(business text,
                                                      kind text)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.webhook_secret_sealed FROM rentals.channels AS c
    WHERE c.business_id = rentals.business_by_ref(business)
      AND c.kind = channel_webhook_secret.kind AND c.enabled;
$$;

-- Mails the owners of a business (no template: a plain text mail).
CREATE OR REPLACE FUNCTION rentals.mail_owners(business_id bigint,
                                               subject text, body text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_to jsonb;
BEGIN
    SELECT jsonb_agg(u.email ORDER BY u.email) INTO v_to
    FROM rentals.owners AS o JOIN auth.users AS u ON u.id = o.user_id
    WHERE o.business_id = mail_owners.business_id;
    IF v_to IS NOT NULL THEN
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', v_to, 'subject', subject, 'text', body));
    END IF;
END
$$;

-- POST /api/channels/{business}/{kind}/webhook, signature already checked
-- by nginx.  body: {"id": event id, "type": "booking.created" |
-- "booking.changed" | "booking.cancelled", "booking": {"id": the
-- channel's reservation id, "property_id": ours, "check_in", "check_out",
-- "guest_name"?, "guest_email"?, "guests"?}}.  200 {"outcome": ...}:
-- created, changed, cancelled, ignored, conflict (a booking error), or
-- "duplicate": true for an event seen before.
CREATE OR REPLACE FUNCTION api.channel_webhook(business text, kind text,
                                               body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b       bigint := rentals.business_by_ref(business);
    v_event   text := body ->> 'id';
    v_type    text := body ->> 'type';
    bk        jsonb := body -> 'booking';
    v_ext     text;
    v_pid     bigint;
    v_in      date;
    v_out     date;
    v_guests  int;
    b         rentals.bookings;
    e         rentals.channel_events;
    v_outcome text;
    v_bid     bigint;
    v_conf    bigint;
    v_err     bigint;
    v_pname   text;
BEGIN
    IF v_b IS NULL OR NOT EXISTS (SELECT 1 FROM rentals.channels AS c
                                  WHERE c.business_id = v_b
                                    AND c.kind = channel_webhook.kind) THEN
        RAISE EXCEPTION 'No such channel.' USING ERRCODE = 'PT404';
    END IF;
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    IF jsonb_typeof(body -> 'id') IS DISTINCT FROM 'string'
       OR length(v_event) NOT BETWEEN 1 AND 200 THEN
        PERFORM app.bad_field('id', 'id (the event id) is required.');
    END IF;
    IF v_type IS NULL OR v_type NOT IN ('booking.created', 'booking.changed',
                                        'booking.cancelled') THEN
        PERFORM app.bad_field('type', 'type is booking.created, '
                              'booking.changed or booking.cancelled.');
    END IF;
    IF jsonb_typeof(bk) IS DISTINCT FROM 'object' THEN
        PERFORM app.bad_field('booking', 'booking is required.');
    END IF;
    v_ext := bk ->> 'id';
    IF jsonb_typeof(bk -> 'id') NOT IN ('string', 'number')
       OR length(v_ext) NOT BETWEEN 1 AND 255 THEN
        PERFORM app.bad_field('booking.id', 'booking.id is required.');
    END IF;
    IF jsonb_typeof(bk -> 'property_id') IS DISTINCT FROM 'number'
       OR (bk ->> 'property_id') !~ '^[0-9]{1,18}$' THEN
        PERFORM app.bad_field('booking.property_id',
                              'booking.property_id is required.');
    END IF;
    v_pid := (bk ->> 'property_id')::bigint;
    SELECT p.name INTO v_pname FROM rentals.properties AS p
    WHERE p.id = v_pid AND p.business_id = v_b;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such property.' USING ERRCODE = 'PT404',
            DETAIL = 'field: booking.property_id';
    END IF;
    IF v_type <> 'booking.cancelled' THEN
        BEGIN
            v_in := (bk ->> 'check_in')::date;
        EXCEPTION WHEN OTHERS THEN v_in := NULL;
        END;
        BEGIN
            v_out := (bk ->> 'check_out')::date;
        EXCEPTION WHEN OTHERS THEN v_out := NULL;
        END;
        IF v_in IS NULL THEN
            PERFORM app.bad_field('booking.check_in',
                                  'booking.check_in must be a date.');
        END IF;
        IF v_out IS NULL OR v_out <= v_in OR v_out - v_in > 365 THEN
            PERFORM app.bad_field('booking.check_out', 'booking.check_out '
                                  'must be a date after check_in.');
        END IF;
        IF bk ? 'guests' AND (bk ->> 'guests') ~ '^[0-9]{1,3}$' THEN
            v_guests := least(greatest((bk ->> 'guests')::int, 1), 100);
        END IF;
    END IF;

    -- each event once
    INSERT INTO rentals.channel_events AS x
        (kind, event_id, business_id, type, external_id)
    VALUES (channel_webhook.kind, v_event, v_b, v_type, v_ext)
    ON CONFLICT DO NOTHING
    RETURNING * INTO e;
    IF NOT FOUND THEN
        SELECT * INTO e FROM rentals.channel_events AS x
        WHERE x.kind = channel_webhook.kind AND x.event_id = v_event;
        RETURN json_build_object('duplicate', true, 'outcome', e.outcome,
                                 'booking_id', e.booking_id);
    END IF;

    -- the channel's reservation: one row per (property, source, id)
    SELECT * INTO b FROM rentals.bookings AS x
    WHERE x.property_id = v_pid AND x.source = channel_webhook.kind
      AND x.external_id = v_ext
    FOR UPDATE;

    IF v_type = 'booking.cancelled' THEN
        IF b.id IS NULL OR b.status NOT IN ('held', 'confirmed') THEN
            v_outcome := 'ignored';
        ELSE
            UPDATE rentals.bookings AS x
            SET status = 'cancelled', cancelled_at = now(), updated_at = now(),
                error = 'Cancelled on ' || channel_webhook.kind || '.'
            WHERE x.id = b.id;
            v_outcome := 'cancelled';
        END IF;
        v_bid := b.id;
    ELSE
        BEGIN
            IF b.id IS NULL THEN
                INSERT INTO rentals.bookings AS x
                    (business_id, property_id, stay, status, source,
                     external_id, kind, guest_name, guest_email, guests,
                     confirmed_at)
                VALUES (v_b, v_pid, daterange(v_in, v_out), 'confirmed',
                        channel_webhook.kind, v_ext, 'booking',
                        left(bk ->> 'guest_name', 200),
                        left(bk ->> 'guest_email', 254), v_guests, now())
                RETURNING x.id INTO v_bid;
                v_outcome := 'created';
            ELSE
                UPDATE rentals.bookings AS x
                SET stay = daterange(v_in, v_out), status = 'confirmed',
                    guest_name = coalesce(left(bk ->> 'guest_name', 200),
                                          x.guest_name),
                    guest_email = coalesce(left(bk ->> 'guest_email', 254),
                                           x.guest_email),
                    guests = coalesce(v_guests, x.guests),
                    cancelled_at = NULL,
                    confirmed_at = coalesce(x.confirmed_at, now()),
                    updated_at = now()
                WHERE x.id = b.id;
                v_bid := b.id;
                v_outcome := 'changed';
            END IF;
        EXCEPTION WHEN exclusion_violation THEN
            SELECT x.id INTO v_conf FROM rentals.bookings AS x
            WHERE x.property_id = v_pid AND x.status IN ('held', 'confirmed')
              AND x.stay && daterange(v_in, v_out)
              AND x.id IS DISTINCT FROM b.id
            ORDER BY lower(x.stay) LIMIT 1;
            INSERT INTO rentals.booking_errors AS x
                (business_id, property_id, channel, event_id, external_id,
                 check_in, check_out, guest_name, guest_email, reason,
                 conflict_booking_id)
            VALUES (v_b, v_pid, channel_webhook.kind, v_event, v_ext, v_in,
                    v_out, left(bk ->> 'guest_name', 200),
                    left(bk ->> 'guest_email', 254),
                    'The dates overlap another booking.', v_conf)
            RETURNING x.id INTO v_err;
            PERFORM rentals.mail_owners(v_b,
                'Booking conflict on ' || channel_webhook.kind || ': '
                || v_pname,
                'Hello,' || E'\n\n' || channel_webhook.kind
                || ' sent a reservation (' || v_ext || ') for "' || v_pname
                || '" from ' || v_in || ' to ' || v_out
                || ', but these dates are already taken'
                || coalesce(' by booking ' || v_conf, '') || '.' || E'\n\n'
                || 'Please resolve it in your owner area (booking error '
                || v_err || ').' || E'\n');
            v_bid := b.id;
            v_outcome := 'conflict';
        END;
    END IF;

    UPDATE rentals.channel_events AS x
    SET outcome = v_outcome, booking_id = v_bid
    WHERE x.kind = channel_webhook.kind AND x.event_id = v_event;

    RETURN json_build_object('outcome', v_outcome, 'booking_id', v_bid,
                             'booking_error_id', v_err);
END
$$;


-- ---------------------------------------------------------------------
-- Outbound pushes
-- ---------------------------------------------------------------------

-- The call payload of one push: the property's public details and its
-- taken dates (held, confirmed, blocks) from today for a year.
CREATE OR REPLACE FUNCTION rentals.channel_push_payload(c rentals.channels,
                                                        property_id bigint)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k  rentals.channel_kinds;
    p  rentals.properties;
BEGIN
    SELECT * INTO k FROM rentals.channel_kinds AS x WHERE x.name = c.kind;
    SELECT * INTO p FROM rentals.properties AS x
    WHERE x.id = channel_push_payload.property_id
      AND x.business_id = c.business_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'service', k.service,
        'method', 'POST',
        'path', '/properties/' || p.id || '/availability',
        'headers', jsonb_build_object(k.key_header,
                                      'sealed:' || c.api_key_sealed),
        'json', jsonb_build_object(
            'business_id', c.business_id,
            'property', jsonb_build_object(
                'id', p.id, 'name', p.name, 'capacity', p.capacity,
                'price_minor', p.price_minor, 'currency', p.currency,
                'min_nights', p.min_nights,
                'check_in_time', p.check_in_time,
                'check_out_time', p.check_out_time,
                'time_zone', p.time_zone),
            'unavailable', coalesce(
                (SELECT jsonb_agg(jsonb_build_object(
                            'check_in', lower(b.stay),
                            'check_out', upper(b.stay),
                            'kind', b.kind) ORDER BY lower(b.stay))
                 FROM rentals.bookings AS b
                 WHERE b.property_id = p.id
                   AND b.status IN ('held', 'confirmed')
                   AND b.stay && daterange(current_date,
                                           current_date + 366)),
                '[]'::jsonb),
            'sent_at', now()),
        'callback', 'channel_push',
        'context', jsonb_build_object('business_id', c.business_id,
                                      'kind', c.kind,
                                      'property_id', p.id));
END
$$;

-- The keyed sql job: one push per property and second, whatever the
-- number of changes.  A push already running gets one follower.
CREATE OR REPLACE FUNCTION rentals.channel_push_queue(business_id bigint,
                                                      property_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key   text := 'channel-push:' || property_id;
    v_delay interval;
BEGIN
    SELECT min(k.push_delay) INTO v_delay
    FROM rentals.channels AS c JOIN rentals.channel_kinds AS k
         ON k.name = c.kind
    WHERE c.business_id = channel_push_queue.business_id AND c.enabled;
    IF v_delay IS NULL THEN
        RETURN;                                 -- no channel connected
    END IF;
    IF EXISTS (SELECT 1 FROM jobs.jobs AS j
               WHERE j.key = v_key AND j.state = 'running') THEN
        v_key := v_key || ':next';
    END IF;
    PERFORM jobs.enqueue('sql', jsonb_build_object(
                'function', 'channel_push',
                'args', jsonb_build_object('property_id', property_id)),
            run_at => now() + v_delay, key => v_key);
END
$$;

-- The sql job: one call job per connected channel.
CREATE OR REPLACE FUNCTION maintenance.channel_push(args jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c  rentals.channels;
    k  rentals.channel_kinds;
    v  jsonb;
BEGIN
    FOR c IN SELECT x.* FROM rentals.channels AS x
             JOIN rentals.properties AS p ON p.business_id = x.business_id
             WHERE p.id = (args ->> 'property_id')::bigint AND x.enabled
             ORDER BY x.kind
    LOOP
        SELECT * INTO k FROM rentals.channel_kinds AS x WHERE x.name = c.kind;
        v := rentals.channel_push_payload(c, (args ->> 'property_id')::bigint);
        IF v IS NOT NULL THEN
            PERFORM jobs.enqueue('call', v, max_attempts => k.max_attempts);
        END IF;
    END LOOP;
END
$$;

-- A push's answer: 2xx done; anything else fails the attempt (retried
-- with backoff, dead after the last one).
CREATE OR REPLACE FUNCTION callbacks.channel_push(context jsonb, status int,
                                                  response text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF status NOT BETWEEN 200 AND 299 THEN
        RAISE EXCEPTION 'the channel answered %', status;
    END IF;
    UPDATE rentals.channels AS c SET last_push_at = now()
    WHERE c.business_id = (context ->> 'business_id')::bigint
      AND c.kind = context ->> 'kind';
END
$$;

-- Triggers: availability (a stay or block held/confirmed/cancelled, its
-- dates) and property details.
CREATE OR REPLACE FUNCTION rentals.channel_bookings_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR TG_OP = 'DELETE'
       OR NEW.stay IS DISTINCT FROM OLD.stay
       OR (NEW.status IN ('held', 'confirmed'))
          IS DISTINCT FROM (OLD.status IN ('held', 'confirmed'))
    THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM rentals.channel_push_queue(OLD.business_id,
                                               OLD.property_id);
        ELSE
            PERFORM rentals.channel_push_queue(NEW.business_id,
                                               NEW.property_id);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rentals.channel_properties_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM rentals.channel_push_queue(NEW.business_id, NEW.id);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS channel_push ON rentals.bookings;
CREATE TRIGGER channel_push
    AFTER INSERT OR UPDATE OR DELETE ON rentals.bookings
    FOR EACH ROW EXECUTE FUNCTION rentals.channel_bookings_changed();

DROP TRIGGER IF EXISTS channel_push ON rentals.properties;
CREATE TRIGGER channel_push
    AFTER INSERT OR UPDATE ON rentals.properties
    FOR EACH ROW
    WHEN (pg_trigger_depth() < 2)
    EXECUTE FUNCTION rentals.channel_properties_changed();

-- The dead letters: pushes that failed their last attempt.
CREATE OR REPLACE FUNCTION api.owner_channel_dead(user_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
BEGIN
    RETURN json_build_object('dead', coalesce(
        (SELECT json_agg(json_build_object(
                    'id', j.id,
                    'channel', j.payload -> 'context' ->> 'kind',
                    'property_id',
                    (j.payload -> 'context' ->> 'property_id')::bigint,
                    'attempts', j.attempts, 'last_error', j.last_error,
                    'created_at', j.created_at,
                    'finished_at', j.finished_at) ORDER BY j.id DESC)
         FROM jobs.jobs AS j
         WHERE j.kind = 'call' AND j.state = 'dead'
           AND j.payload ->> 'callback' = 'channel_push'
           AND (j.payload -> 'context' ->> 'business_id')::bigint = v_b),
        '[]'::json));
END
$$;

-- POST /api/owner/channels/dead/{id}/retry: sent again with today's
-- availability (not the stale one it carried).
CREATE OR REPLACE FUNCTION api.owner_channel_retry(user_id bigint,
                                                   job_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b  bigint := rentals.enter(user_id);
    j    jobs.jobs;
    c    rentals.channels;
    v    jsonb;
BEGIN
    SELECT * INTO j FROM jobs.jobs AS x
    WHERE x.id = job_id AND x.kind = 'call' AND x.state = 'dead'
      AND x.payload ->> 'callback' = 'channel_push'
      AND (x.payload -> 'context' ->> 'business_id')::bigint = v_b
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such failed push.' USING ERRCODE = 'PT404';
    END IF;
    SELECT * INTO c FROM rentals.channels AS x
    WHERE x.business_id = v_b AND x.kind = j.payload -> 'context' ->> 'kind';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'This channel is no longer connected.'
            USING ERRCODE = 'PT409';
    END IF;
    v := rentals.channel_push_payload(c,
             (j.payload -> 'context' ->> 'property_id')::bigint);
    IF v IS NULL THEN
        RAISE EXCEPTION 'The property no longer exists.'
            USING ERRCODE = 'PT409';
    END IF;
    UPDATE jobs.jobs AS x SET payload = v WHERE x.id = j.id;
    PERFORM jobs.retry(j.id);
    RETURN json_build_object('id', j.id, 'retried', true);
END
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api TO platform_app;

REVOKE ALL ON rentals.channel_kinds, rentals.channels, rentals.channel_events,
    rentals.booking_errors FROM PUBLIC, platform_app;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rentals FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION maintenance.channel_push(jsonb),
    callbacks.channel_push(jsonb, int, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    rentals.current_business(),
    rentals.enter(bigint),
    rentals.channel_json(rentals.channel_kinds, rentals.channels, text),
    rentals.sealed_field(jsonb, text),
    rentals.booking_error_json(rentals.booking_errors)
TO rentals_tenant;
