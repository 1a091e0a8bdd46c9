-- 022_rentals_comms.sql - holiday rentals (issue 7): scheduled guest and
-- cleaner mails, key codes, the iCal feed of each property and the import
-- of the channels' feeds, and mailing a property's previous guests.
-- docs/rentals.md ("Scheduled mails" and after) tells the design.
--
--   GET  /api/owner/properties/{id}/key-codes          api.owner_key_codes
--   POST /api/owner/properties/{id}/key-codes/rotate   api.owner_key_code_rotate
--   GET  /api/owner/properties/{id}/ical               api.owner_ical
--   POST /api/owner/properties/{id}/ical/rotate        api.owner_ical_rotate
--   POST /api/owner/properties/{id}/ical/feeds         api.owner_ical_feed_add
--   DELETE /api/owner/properties/{id}/ical/feeds/{f}   api.owner_ical_feed_delete
--   POST /api/owner/properties/{id}/ical/feeds/{f}/import  ..._feed_import
--   POST /api/owner/properties/{id}/announce           api.owner_announce
--   GET  /ical/{token}.ics                             api.rentals_ical
--
-- Booking changes are followed by a trigger on rentals.bookings
-- (rentals.comms_on_booking): a confirmed booking gets three keyed `sql`
-- jobs (booking:<id>:reminder, :welcome, :cleaner) which, at their time,
-- render the mail with what is true then (the key code of the day) and
-- queue it; a date change moves them (jobs.reschedule), anything else
-- than confirmed cancels them (jobs.cancel).
--
-- Tenant isolation as in 016: the owner endpoints are owned by
-- rentals_tenant (row-level security on the new tables too); what touches
-- jobs is SECURITY DEFINER of the migrating role and acts only on
-- rentals.current_business().
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, ON CONFLICT DO NOTHING.


-- ---------------------------------------------------------------------
-- Settings
-- ---------------------------------------------------------------------

-- One row.  time_scale is for tests only: every mail's time is brought
-- nearer, now() + (time - now()) / time_scale, so that a stay days away
-- has its three mails within seconds, in their order.  1 in production.
CREATE TABLE IF NOT EXISTS rentals.comms_settings (
    one                boolean PRIMARY KEY DEFAULT true CHECK (one),
    reminder_before    interval NOT NULL DEFAULT '3 days'
                       CHECK (reminder_before >= '0'),
    welcome_before     interval NOT NULL DEFAULT '24 hours'
                       CHECK (welcome_before >= '0'),
    time_scale         double precision NOT NULL DEFAULT 1
                       CHECK (time_scale >= 1),
    ical_import_every  interval NOT NULL DEFAULT '30 minutes'
                       CHECK (ical_import_every >= '1 minute'),
    -- the next free slot of the announcement queue (emails per second)
    announce_next_at   timestamptz
);

INSERT INTO rentals.comms_settings (one) VALUES (true) ON CONFLICT DO NOTHING;
REVOKE ALL ON rentals.comms_settings FROM PUBLIC, platform_app;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- Key codes of a property's key box.  set_at: when the code went on the
-- box (the cleaner's mail of a changeover, a rotation, the first code);
-- NULL while a code is only announced: a guest's welcome mail sent before
-- the previous guest leaves carries the code the cleaner will set then.
CREATE TABLE IF NOT EXISTS rentals.key_codes (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id       bigint NOT NULL,
    property_id       bigint NOT NULL,
    code              text NOT NULL CHECK (code ~ '^[0-9]{4,8}$'),
    reason            text NOT NULL
                      CHECK (reason IN ('first', 'changeover', 'rotation')),
    -- a changeover's code: set after this stay's check-out
    after_booking_id  bigint UNIQUE
                      REFERENCES rentals.bookings (id) ON DELETE SET NULL,
    set_at            timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (business_id, property_id)
        REFERENCES rentals.properties (business_id, id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS key_codes_property_idx
    ON rentals.key_codes (property_id, id);

-- The secret address of a property's calendar: /ical/<token>.ics
CREATE TABLE IF NOT EXISTS rentals.ical_exports (
    property_id  bigint PRIMARY KEY,
    business_id  bigint NOT NULL,
    token        text NOT NULL UNIQUE CHECK (token ~ '^[0-9a-f]{32}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (business_id, property_id)
        REFERENCES rentals.properties (business_id, id) ON DELETE CASCADE
);

-- Hosts the import may fetch from, and the platform_jobs_service of
-- nginx.conf that reaches each (workers never resolve names: a service's
-- host is resolved when nginx reads its configuration).  An operator adds
-- a row for each feed host, and the service to nginx.conf.
CREATE TABLE IF NOT EXISTS rentals.ical_hosts (
    origin   text PRIMARY KEY CHECK (origin ~ '^https?://[a-z0-9.:\[\]-]+$'),
    service  text NOT NULL CHECK (service ~ '^[a-z0-9_]{1,32}$')
);

INSERT INTO rentals.ical_hosts (origin, service) VALUES
    ('https://www.airbnb.com', 'ical_airbnb'),
    ('https://ical.booking.com', 'ical_booking_com'),
    ('https://admin.booking.com', 'ical_booking_com')
ON CONFLICT DO NOTHING;
REVOKE ALL ON rentals.ical_hosts FROM PUBLIC, platform_app;

-- A channel's feed imported into a property (one per channel).
CREATE TABLE IF NOT EXISTS rentals.ical_feeds (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id    bigint NOT NULL,
    property_id    bigint NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('airbnb', 'booking_com')),
    url            text NOT NULL CHECK (length(url) <= 2000),
    service        text NOT NULL,
    path           text NOT NULL,
    status         text NOT NULL DEFAULT 'new'
                   CHECK (status IN ('new', 'ok', 'failed')),
    last_error     text,
    -- what the last good import found
    events         int,
    blocks         int,
    conflicts      jsonb,
    last_import_at timestamptz,
    last_ok_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (property_id, channel),
    FOREIGN KEY (business_id, property_id)
        REFERENCES rentals.properties (business_id, id) ON DELETE CASCADE
);

-- The feed a block came from: the import removes only its own blocks.
ALTER TABLE rentals.bookings ADD COLUMN IF NOT EXISTS ical_feed_id bigint
    REFERENCES rentals.ical_feeds (id) ON DELETE SET NULL;

REVOKE ALL ON rentals.key_codes, rentals.ical_exports, rentals.ical_feeds
    FROM PUBLIC, platform_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON rentals.key_codes, rentals.ical_exports, rentals.ical_feeds
    TO rentals_tenant;

ALTER TABLE rentals.key_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.ical_exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.ical_feeds ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant ON rentals.key_codes;
CREATE POLICY tenant ON rentals.key_codes TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());

DROP POLICY IF EXISTS tenant ON rentals.ical_exports;
CREATE POLICY tenant ON rentals.ical_exports TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());

DROP POLICY IF EXISTS tenant ON rentals.ical_feeds;
CREATE POLICY tenant ON rentals.ical_feeds TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- n bytes of pgcrypto's CSPRNG (the schema pgcrypto lives in is found
-- at migration time, as 004 does for hmac).
DO $do$
DECLARE
    s text;
BEGIN
    SELECT n.nspname INTO s
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pgcrypto';

    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION rentals.random_bytes(n int)
        RETURNS bytea
        LANGUAGE sql
        VOLATILE STRICT
        AS $b$ SELECT %I.gen_random_bytes(n) $b$
    $f$, s);
END
$do$;

-- A six-digit code, uniform to 2^-32 (32 random bits mod 10^6).
CREATE OR REPLACE FUNCTION rentals.random_code()
RETURNS text
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lpad(((('x' || encode(rentals.random_bytes(4), 'hex'))::bit(32)
                  ::bigint) % 1000000)::text, 6, '0');
$$;

-- A stay's moments: check-in and check-out at the property's local times.
CREATE OR REPLACE FUNCTION rentals.check_in_at(b rentals.bookings,
                                               p rentals.properties)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (lower(b.stay) + p.check_in_time) AT TIME ZONE p.time_zone;
$$;

CREATE OR REPLACE FUNCTION rentals.check_out_at(b rentals.bookings,
                                                p rentals.properties)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (upper(b.stay) + p.check_out_time) AT TIME ZONE p.time_zone;
$$;

-- When a mail due at t is sent: t itself, or nearer under a test's
-- time_scale.
CREATE OR REPLACE FUNCTION rentals.comms_at(t timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.time_scale = 1 THEN t
                ELSE now() + (t - now()) / s.time_scale END
    FROM rentals.comms_settings AS s;
$$;


-- ---------------------------------------------------------------------
-- Key codes
-- ---------------------------------------------------------------------

-- A new code for the property (never the same as the newest one), and
-- only the four newest kept.
CREATE OR REPLACE FUNCTION rentals.key_code_new(p rentals.properties,
                                                reason text,
                                                after_booking bigint,
                                                set_now boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_last text;
    v_code text;
BEGIN
    SELECT k.code INTO v_last FROM rentals.key_codes AS k
    WHERE k.property_id = p.id ORDER BY k.id DESC LIMIT 1;
    LOOP
        v_code := rentals.random_code();
        EXIT WHEN v_code IS DISTINCT FROM v_last;
    END LOOP;
    INSERT INTO rentals.key_codes (business_id, property_id, code, reason,
                                   after_booking_id, set_at)
    VALUES (p.business_id, p.id, v_code, reason, after_booking,
            CASE WHEN set_now THEN now() END);
    DELETE FROM rentals.key_codes AS k
    WHERE k.property_id = p.id
      AND k.id NOT IN (SELECT x.id FROM rentals.key_codes AS x
                       WHERE x.property_id = p.id
                       ORDER BY x.id DESC LIMIT 4);
    RETURN v_code;
END
$$;

-- The code of the changeover after booking b: made by the first of the
-- cleaner's mail (set_now: the cleaner sets it now) and the next guest's
-- welcome mail (only announced).
CREATE OR REPLACE FUNCTION rentals.key_code_changeover(b rentals.bookings,
                                                       set_now boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p rentals.properties;
    k rentals.key_codes;
BEGIN
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id
    FOR UPDATE;
    SELECT * INTO k FROM rentals.key_codes AS x WHERE x.after_booking_id = b.id;
    IF NOT FOUND THEN
        RETURN rentals.key_code_new(p, 'changeover', b.id, set_now);
    END IF;
    IF set_now AND k.set_at IS NULL THEN
        UPDATE rentals.key_codes AS x SET set_at = now() WHERE x.id = k.id;
    END IF;
    RETURN k.code;
END
$$;

-- The code on the box when guest b arrives: the code of a changeover
-- still to come before the arrival (the previous stay's cleaner mail not
-- sent yet), else the code set last (a first one made if there is none).
CREATE OR REPLACE FUNCTION rentals.key_code_for_arrival(b rentals.bookings)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prev rentals.bookings;
    p    rentals.properties;
    v    text;
BEGIN
    SELECT * INTO prev FROM rentals.bookings AS x
    WHERE x.property_id = b.property_id AND x.id <> b.id
      AND x.kind = 'booking' AND x.status = 'confirmed'
      AND upper(x.stay) <= lower(b.stay)
      AND EXISTS (SELECT 1 FROM jobs.jobs AS j
                  WHERE j.key = 'booking:' || x.id || ':cleaner'
                    AND j.state IN ('pending', 'running'))
    ORDER BY upper(x.stay) DESC LIMIT 1;
    IF FOUND THEN
        RETURN rentals.key_code_changeover(prev, false);
    END IF;

    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id
    FOR UPDATE;
    SELECT k.code INTO v FROM rentals.key_codes AS k
    WHERE k.property_id = p.id AND k.set_at IS NOT NULL
    ORDER BY k.set_at DESC, k.id DESC LIMIT 1;
    IF v IS NULL THEN
        v := rentals.key_code_new(p, 'first', NULL, true);
    END IF;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION rentals.key_code_json(k rentals.key_codes,
                                                 is_current boolean)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('id', k.id, 'code', k.code, 'reason', k.reason,
                             'after_booking_id', k.after_booking_id,
                             'set_at', k.set_at, 'current', is_current,
                             'created_at', k.created_at);
$$;


-- ---------------------------------------------------------------------
-- Scheduled mails
-- ---------------------------------------------------------------------

INSERT INTO jobs.mail_templates (name, subject, text, html) VALUES
(
    'rentals_reminder',
    'Your stay at {{property}} starts on {{check_in}}',
    E'Hello {{name}},\n\n'
    || E'a reminder: your stay at "{{property}}" ({{business}}) starts on '
    || E'{{check_in}}, from {{check_in_time}}, and ends on {{check_out}} by '
    || E'{{check_out_time}}.\n\n'
    || E'Address: {{address}}\n\n'
    || E'The day before you arrive you will get the key code.\n\n'
    || E'Your booking: {{link}}\n',
    NULL
),
(
    'rentals_welcome',
    'Welcome to {{property}}: how to get in',
    E'Hello {{name}},\n\n'
    || E'welcome!  Your stay at "{{property}}" starts on {{check_in}}, '
    || E'from {{check_in_time}}.\n\n'
    || E'Address:      {{address}}\n'
    || E'Key box:      {{key_box_location}}\n'
    || E'Key box code: {{key_code}}\n\n'
    || E'Please leave by {{check_out_time}} on {{check_out}}.\n\n'
    || E'Your booking: {{link}}\n',
    NULL
),
(
    'rentals_cleaner',
    'Cleaning at {{property}} on {{check_out}}',
    E'Hello,\n\n'
    || E'the guests of "{{property}}" leave on {{check_out}} by '
    || E'{{check_out_time}}; the cleaning should be done by '
    || E'{{cleaning_until}}.\n\n'
    || E'Address: {{address}}\n'
    || E'Next arrival: {{next_arrival}}\n\n'
    || E'Please set the key box ({{key_box_location}}) to the new code:\n\n'
    || E'    {{key_code}}\n',
    NULL
),
(
    'rentals_key_rotated',
    'New key box code for {{property}}',
    E'Hello,\n\n'
    || E'the owner changed the key box code of "{{property}}" '
    || E'({{address}}).  Please set the key box ({{key_box_location}}) to:'
    || E'\n\n    {{key_code}}\n',
    NULL
)
ON CONFLICT (name) DO NOTHING;

-- Queues, replaces or cancels the three mails of booking b (keyed jobs).
CREATE OR REPLACE FUNCTION rentals.comms_schedule(booking_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b     rentals.bookings;
    p     rentals.properties;
    s     rentals.comms_settings;
    v_in  timestamptz;
    v_out timestamptz;
    w     record;
    v_key text;
BEGIN
    SELECT * INTO b FROM rentals.bookings AS x WHERE x.id = booking_id;
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id;
    SELECT * INTO s FROM rentals.comms_settings AS x;

    v_in := rentals.check_in_at(b, p);
    v_out := rentals.check_out_at(b, p);

    FOR w IN
        SELECT * FROM (VALUES
            -- no reminder when its time is already past at confirmation
            ('reminder', v_in - s.reminder_before,
             v_in - s.reminder_before > now()),
            -- the welcome is sent at once when booked less than a day ahead
            ('welcome', greatest(v_in - s.welcome_before, now()), v_in > now()),
            ('cleaner', v_out, v_out > now())
        ) AS t (what, at, due)
    LOOP
        v_key := 'booking:' || b.id || ':' || w.what;
        IF b.status = 'confirmed' AND b.kind = 'booking' AND w.due THEN
            IF NOT jobs.reschedule(v_key, rentals.comms_at(w.at)) THEN
                PERFORM jobs.enqueue('sql', jsonb_build_object(
                    'function', 'rentals_booking_mail',
                    'args', jsonb_build_object('booking_id', b.id,
                                               'what', w.what)),
                    rentals.comms_at(w.at), v_key);
            END IF;
        ELSE
            PERFORM jobs.cancel(v_key);
        END IF;
    END LOOP;
END
$$;

-- The trigger: a booking that becomes confirmed, changes dates, or stops
-- being confirmed.  A manual booking confirmed with a guest's address
-- gets its confirmation mail here (a paid direct booking gets it from
-- rentals.booking_confirmed, 017; channels mail their own guests).
CREATE OR REPLACE FUNCTION rentals.comms_on_booking()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p rentals.properties;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status AND NEW.stay = OLD.stay
       AND NEW.kind = OLD.kind
    THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.status <> 'confirmed' THEN
        RETURN NULL;
    END IF;

    PERFORM rentals.comms_schedule(NEW.id);

    IF TG_OP = 'INSERT' AND NEW.status = 'confirmed' AND NEW.kind = 'booking'
       AND NEW.source = 'manual' AND NEW.guest_email IS NOT NULL
       AND jobs.valid_address(NEW.guest_email)
    THEN
        SELECT * INTO p FROM rentals.properties AS x
        WHERE x.id = NEW.property_id;
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', NEW.guest_email,
            'subject', 'Booking confirmed: ' || p.name || ', '
                       || to_char(lower(NEW.stay), 'DD Mon YYYY'),
            'text', 'Hello ' || coalesce(NEW.guest_name, '') || E',\n\n'
                || 'your stay at "' || p.name || '" is confirmed.' || E'\n\n'
                || '  Check-in:  '
                || to_char(lower(NEW.stay), 'FMDay DD Month YYYY')
                || ' from ' || to_char(p.check_in_time, 'HH24:MI') || E'\n'
                || '  Check-out: '
                || to_char(upper(NEW.stay), 'FMDay DD Month YYYY')
                || ' by ' || to_char(p.check_out_time, 'HH24:MI') || E'\n'
                || '  Address:   ' || p.address || E'\n'));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER rentals_comms
    AFTER INSERT OR UPDATE OF status, stay, kind ON rentals.bookings
    FOR EACH ROW EXECUTE FUNCTION rentals.comms_on_booking();

-- SQL job booking:<id>:<what> at its time: the mail, rendered with what
-- is true now (the key code), queued at once.  Nothing when the booking
-- is no longer confirmed (the job is cancelled then; this is the guard
-- for a race with that).
CREATE OR REPLACE FUNCTION maintenance.rentals_booking_mail(args jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_what text := args->>'what';
    b      rentals.bookings;
    p      rentals.properties;
    s      rentals.businesses;
    n      rentals.bookings;
    v_code text;
    vars   jsonb;
BEGIN
    SELECT * INTO b FROM rentals.bookings AS x
    WHERE x.id = (args->>'booking_id')::bigint;
    IF NOT FOUND OR b.status <> 'confirmed' OR b.kind <> 'booking' THEN
        RETURN;
    END IF;
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id;
    SELECT * INTO s FROM rentals.businesses AS x WHERE x.id = b.business_id;

    vars := jsonb_build_object(
        'name', coalesce(b.guest_name, ''),
        'property', p.name, 'business', s.name,
        'address', p.address,
        'key_box_location', coalesce(nullif(p.key_box_location, ''),
                                     'ask the owner'),
        'check_in', to_char(lower(b.stay), 'FMDay DD Month YYYY'),
        'check_out', to_char(upper(b.stay), 'FMDay DD Month YYYY'),
        'check_in_time', to_char(p.check_in_time, 'HH24:MI'),
        'check_out_time', to_char(p.check_out_time, 'HH24:MI'),
        'link', coalesce(rentals.booking_url(b), ''));

    IF v_what = 'reminder' THEN
        IF b.guest_email IS NOT NULL AND jobs.valid_address(b.guest_email) THEN
            PERFORM jobs.enqueue('mail', jsonb_build_object(
                'to', b.guest_email, 'template', 'rentals_reminder',
                'from_name', s.name, 'vars', vars));
        END IF;

    ELSIF v_what = 'welcome' THEN
        v_code := rentals.key_code_for_arrival(b);
        IF b.guest_email IS NOT NULL AND jobs.valid_address(b.guest_email) THEN
            PERFORM jobs.enqueue('mail', jsonb_build_object(
                'to', b.guest_email, 'template', 'rentals_welcome',
                'from_name', s.name,
                'vars', vars || jsonb_build_object('key_code', v_code)));
        END IF;

    ELSIF v_what = 'cleaner' THEN
        -- the cleaner sets a new code now (announced already if the next
        -- guest's welcome went out first)
        v_code := rentals.key_code_changeover(b, true);
        SELECT * INTO n FROM rentals.bookings AS x
        WHERE x.property_id = b.property_id AND x.id <> b.id
          AND x.status = 'confirmed' AND lower(x.stay) >= upper(b.stay)
        ORDER BY lower(x.stay) LIMIT 1;
        IF p.cleaner_email IS NOT NULL AND jobs.valid_address(p.cleaner_email)
        THEN
            PERFORM jobs.enqueue('mail', jsonb_build_object(
                'to', p.cleaner_email, 'template', 'rentals_cleaner',
                'from_name', s.name,
                'vars', vars || jsonb_build_object(
                    'key_code', v_code,
                    'cleaning_until', to_char(p.check_out_time
                        + make_interval(mins => p.cleaning_minutes), 'HH24:MI'),
                    'next_arrival', CASE
                        WHEN n.id IS NULL THEN 'none booked yet'
                        ELSE to_char(lower(n.stay), 'FMDay DD Month YYYY')
                             || ' from ' || to_char(p.check_in_time, 'HH24:MI')
                        END)));
        END IF;
    END IF;
END
$$;


-- ---------------------------------------------------------------------
-- Owners: key codes
-- ---------------------------------------------------------------------

-- A rotation asked by an owner (SECURITY DEFINER: it mails the cleaner).
CREATE OR REPLACE FUNCTION rentals.key_code_rotate(property_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p      rentals.properties;
    s      rentals.businesses;
    v_code text;
BEGIN
    SELECT * INTO p FROM rentals.properties AS x
    WHERE x.id = key_code_rotate.property_id
      AND x.business_id = rentals.current_business()
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such property.' USING ERRCODE = 'PT404';
    END IF;
    SELECT * INTO s FROM rentals.businesses AS x WHERE x.id = p.business_id;
    v_code := rentals.key_code_new(p, 'rotation', NULL, true);
    IF p.cleaner_email IS NOT NULL AND jobs.valid_address(p.cleaner_email) THEN
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', p.cleaner_email, 'template', 'rentals_key_rotated',
            'from_name', s.name,
            'vars', jsonb_build_object(
                'property', p.name, 'address', p.address,
                'key_box_location', coalesce(nullif(p.key_box_location, ''),
                                             'the key box'),
                'key_code', v_code)));
    END IF;
    RETURN (SELECT max(k.id) FROM rentals.key_codes AS k
            WHERE k.property_id = p.id);
END
$$;

-- The (at most four) codes of a property, newest first; "current" is the
-- one on the box now.
CREATE OR REPLACE FUNCTION rentals.key_codes_json(property_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cur bigint;
BEGIN
    SELECT k.id INTO v_cur FROM rentals.key_codes AS k
    WHERE k.property_id = key_codes_json.property_id AND k.set_at IS NOT NULL
    ORDER BY k.set_at DESC, k.id DESC LIMIT 1;
    RETURN json_build_object(
        'property_id', property_id,
        'current', (SELECT k.code FROM rentals.key_codes AS k
                    WHERE k.id = v_cur),
        'codes', coalesce((SELECT json_agg(rentals.key_code_json(k,
                                               k.id = v_cur)
                                           ORDER BY k.id DESC)
                           FROM rentals.key_codes AS k
                           WHERE k.property_id = key_codes_json.property_id),
                          '[]'));
END
$$;

-- GET /api/owner/properties/{id}/key-codes
CREATE OR REPLACE FUNCTION api.owner_key_codes(user_id bigint,
                                               property_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b   bigint := rentals.enter(user_id);
    p     rentals.properties := rentals.owner_property(property_id);
BEGIN
    RETURN rentals.key_codes_json(p.id);
END
$$;

-- POST /api/owner/properties/{id}/key-codes/rotate: a new code, set now
-- (the cleaner is mailed it); 201 with the list.
CREATE OR REPLACE FUNCTION api.owner_key_code_rotate(user_id bigint,
                                                     property_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id);
BEGIN
    PERFORM rentals.key_code_rotate(p.id);
    PERFORM platform.set_status(201);
    RETURN rentals.key_codes_json(p.id);
END
$$;


-- ---------------------------------------------------------------------
-- iCal export
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rentals.ical_token()
RETURNS text
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(rentals.random_bytes(16), 'hex');
$$;

-- YYYYMMDD
CREATE OR REPLACE FUNCTION rentals.ics_date(d date)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(d, 'YYYYMMDD');
$$;

-- The calendar of a property: every held or confirmed stay and block
-- ending after 30 days ago, all-day events with an exclusive end (the
-- check-out day is free), no guest details.  UIDs are the booking's id:
-- stable while its dates change.
CREATE OR REPLACE FUNCTION rentals.property_ics(property_id bigint,
                                                base_url text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH p AS (SELECT * FROM rentals.properties AS x
               WHERE x.id = property_ics.property_id),
    host AS (SELECT coalesce(substring(base_url FROM '^https?://([^/:]+)'),
                             'platform.invalid') AS h)
    SELECT app.ics_fold('BEGIN:VCALENDAR')
        || app.ics_fold('VERSION:2.0')
        || app.ics_fold('PRODID:-//Platform//Rentals//EN')
        || app.ics_fold('CALSCALE:GREGORIAN')
        || app.ics_fold('METHOD:PUBLISH')
        || app.ics_fold('X-WR-CALNAME:' || app.ics_text(p.name))
        || coalesce((
            SELECT string_agg(
                   app.ics_fold('BEGIN:VEVENT')
                || app.ics_fold('UID:booking-' || b.id || '@' || host.h)
                || app.ics_fold('DTSTAMP:' || app.ics_time(now()))
                || app.ics_fold('DTSTART;VALUE=DATE:'
                                || rentals.ics_date(lower(b.stay)))
                || app.ics_fold('DTEND;VALUE=DATE:'
                                || rentals.ics_date(upper(b.stay)))
                || app.ics_fold('SUMMARY:' || CASE WHEN b.kind = 'block'
                                                   THEN 'Not available'
                                                   ELSE 'Reserved' END)
                || app.ics_fold('TRANSP:OPAQUE')
                || app.ics_fold('END:VEVENT'), '' ORDER BY lower(b.stay), b.id)
            FROM rentals.bookings AS b
            WHERE b.property_id = p.id
              AND (b.status = 'confirmed'
                   OR b.status = 'held' AND b.hold_expires_at > now())
              AND upper(b.stay) > rentals.today(p) - 30), '')
        || app.ics_fold('END:VCALENDAR')
    FROM p, host;
$$;

-- GET /ical/{token}.ics (public: the token is 128 random bits known to
-- the owner and the channels they gave it to).
CREATE OR REPLACE FUNCTION api.rentals_ical(token text,
                                            base_url text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF token ~ '^[0-9a-f]{32}$' THEN
        SELECT e.property_id INTO v_id FROM rentals.ical_exports AS e
        WHERE e.token = rentals_ical.token;
    END IF;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'No such calendar.' USING ERRCODE = 'PT404';
    END IF;
    PERFORM platform.set_header('Content-Type', 'text/calendar; charset=utf-8');
    PERFORM platform.set_header('Cache-Control', 'private, no-cache');
    RETURN rentals.property_ics(v_id, base_url);
END
$$;


-- ---------------------------------------------------------------------
-- iCal import: parsing (tolerant, but a broken file is refused whole)
-- ---------------------------------------------------------------------

-- The lines of a calendar: CRLF, LF or CR ends, folded lines joined.
CREATE OR REPLACE FUNCTION rentals.ical_lines(feed text)
RETURNS text[]
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_to_array(
               regexp_replace(
                   regexp_replace(ltrim(feed, E'\uFEFF'), E'\r\n?', E'\n', 'g'),
                   E'\n[ \t]', '', 'g'),
               E'\n');
$$;

-- A TEXT value unescaped.
CREATE OR REPLACE FUNCTION rentals.ical_unescape(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT replace(replace(replace(replace(replace(replace(s,
               '\\', E'\x01'), '\n', E'\n'), '\N', E'\n'), '\,', ','),
               '\;', ';'), E'\x01', '\');
$$;

-- A DTSTART/DTEND value as the property's local time (a date is its
-- midnight): VALUE=DATE (20250105), UTC (20250105T140000Z), with TZID
-- (an unknown zone is taken as floating), or floating (local).  NULL when
-- the value is none of these.
CREATE OR REPLACE FUNCTION rentals.ical_time(value text, params text,
                                             tz text)
RETURNS timestamp
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v    text := btrim(value);
    ts   timestamp;
    tzid text;
BEGIN
    IF v ~ '^\d{8}$' THEN
        RETURN (substr(v, 1, 4) || '-' || substr(v, 5, 2) || '-'
                || substr(v, 7, 2))::date::timestamp;
    END IF;
    IF v !~ '^\d{8}T\d{6}Z?$' THEN
        RETURN NULL;
    END IF;
    ts := (substr(v, 1, 4) || '-' || substr(v, 5, 2) || '-' || substr(v, 7, 2)
           || ' ' || substr(v, 10, 2) || ':' || substr(v, 12, 2) || ':'
           || substr(v, 14, 2))::timestamp;
    IF v ~ 'Z$' THEN
        RETURN (ts AT TIME ZONE 'UTC') AT TIME ZONE tz;
    END IF;
    tzid := btrim(substring(params FROM '(?i);TZID=("[^"]*"|[^;:]*)'), '"');
    IF tzid IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_timezone_names AS z WHERE z.name = tzid)
    THEN
        RETURN (ts AT TIME ZONE tzid) AT TIME ZONE tz;
    END IF;
    RETURN ts;
EXCEPTION
    WHEN datetime_field_overflow OR invalid_datetime_format THEN
        RETURN NULL;
END
$$;

-- The events of a feed as stays in the property's time zone tz: one row
-- per UID (a UID repeated: the highest SEQUENCE, then the last, wins),
-- cancelled events left out.  A file that is not a calendar, a VEVENT not
-- closed, a missing or unreadable DTSTART, an unreadable DTEND or
-- DURATION raises 22023 with the reason (and the line).
CREATE OR REPLACE FUNCTION rentals.ical_parse(feed text, tz text)
RETURNS TABLE (uid text, stay daterange, summary text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lines    text[] := rentals.ical_lines(feed);
    line     text;
    n        int := 0;
    m        text[];
    v_name   text;
    in_cal   boolean := false;
    ended    boolean := false;
    in_ev    boolean := false;
    ev_line  int;
    depth    int := 0;          -- VALARM, VTIMEZONE...: skipped
    v_uid    text;
    v_start  timestamp;
    v_sparam text;
    v_sraw   text;
    v_end    timestamp;
    v_dur    text;
    v_sum    text;
    v_status text;
    v_seq    int;
    v_from   date;
    v_to     date;
    evs      jsonb := '[]';
BEGIN
    IF feed IS NULL OR btrim(feed) = '' THEN
        RAISE EXCEPTION 'the feed is empty' USING ERRCODE = '22023';
    END IF;
    FOREACH line IN ARRAY lines LOOP
        n := n + 1;
        CONTINUE WHEN btrim(line) = '';
        m := regexp_match(line, '^([A-Za-z0-9-]+)((?:;[^:]*)?):(.*)$');
        IF m IS NULL THEN
            IF NOT in_cal THEN
                RAISE EXCEPTION 'not an iCalendar file (no BEGIN:VCALENDAR)'
                    USING ERRCODE = '22023';
            END IF;
            RAISE EXCEPTION 'line % is not a content line: "%"', n,
                            left(line, 60) USING ERRCODE = '22023';
        END IF;
        v_name := upper(m[1]);

        IF NOT in_cal THEN
            IF v_name = 'BEGIN' AND upper(btrim(m[3])) = 'VCALENDAR' THEN
                in_cal := true;
                CONTINUE;
            END IF;
            RAISE EXCEPTION 'not an iCalendar file (no BEGIN:VCALENDAR)'
                USING ERRCODE = '22023';
        END IF;
        IF ended THEN
            CONTINUE;           -- a second calendar in the file: ignored
        END IF;

        IF v_name = 'BEGIN' THEN
            IF upper(btrim(m[3])) = 'VEVENT' AND depth = 0 THEN
                IF in_ev THEN
                    RAISE EXCEPTION 'line %: BEGIN:VEVENT inside a VEVENT '
                                    '(line %)', n, ev_line
                        USING ERRCODE = '22023';
                END IF;
                in_ev := true;
                ev_line := n;
                v_uid := NULL; v_start := NULL; v_sraw := NULL;
                v_sparam := NULL; v_end := NULL; v_dur := NULL;
                v_sum := NULL; v_status := NULL; v_seq := 0;
            ELSE
                depth := depth + 1;
            END IF;
            CONTINUE;
        END IF;

        IF v_name = 'END' THEN
            IF depth > 0 THEN
                depth := depth - 1;
            ELSIF upper(btrim(m[3])) = 'VCALENDAR' THEN
                IF in_ev THEN
                    RAISE EXCEPTION 'the VEVENT of line % is not closed',
                                    ev_line USING ERRCODE = '22023';
                END IF;
                ended := true;
            ELSIF upper(btrim(m[3])) = 'VEVENT' AND in_ev THEN
                in_ev := false;
                IF v_sraw IS NULL THEN
                    RAISE EXCEPTION 'the VEVENT of line % has no DTSTART',
                                    ev_line USING ERRCODE = '22023';
                END IF;
                IF v_start IS NULL THEN
                    RAISE EXCEPTION 'the VEVENT of line % has a DTSTART that '
                                    'is not a date or date-time: "%"',
                                    ev_line, left(v_sraw, 40)
                        USING ERRCODE = '22023';
                END IF;
                CONTINUE WHEN upper(coalesce(v_status, '')) = 'CANCELLED';
                IF v_end IS NULL AND v_dur IS NOT NULL THEN
                    BEGIN
                        v_end := v_start + v_dur::interval;
                    EXCEPTION WHEN OTHERS THEN
                        RAISE EXCEPTION 'the VEVENT of line % has a DURATION '
                                        'that cannot be read: "%"', ev_line,
                                        left(v_dur, 40)
                            USING ERRCODE = '22023';
                    END;
                END IF;
                v_from := v_start::date;
                v_to := coalesce(v_end::date, v_from + 1);
                IF v_to <= v_from THEN
                    v_to := v_from + 1;
                END IF;
                evs := evs || jsonb_build_object(
                    'uid', coalesce(v_uid, 'no-uid-' || md5(v_sraw || '/'
                                    || v_to::text || '/'
                                    || coalesce(v_sum, ''))),
                    'from', v_from, 'to', v_to, 'summary', v_sum,
                    'seq', v_seq, 'n', n);
            ELSE
                RAISE EXCEPTION 'line %: END:% without its BEGIN', n,
                                left(m[3], 40) USING ERRCODE = '22023';
            END IF;
            CONTINUE;
        END IF;

        CONTINUE WHEN NOT in_ev OR depth > 0;

        CASE v_name
        WHEN 'UID' THEN
            v_uid := btrim(m[3]);
            IF v_uid = '' THEN
                v_uid := NULL;
            ELSIF length(v_uid) > 255 THEN
                v_uid := 'md5-' || md5(v_uid);
            END IF;
        WHEN 'DTSTART' THEN
            v_sraw := m[3];
            v_start := rentals.ical_time(m[3], m[2], tz);
        WHEN 'DTEND' THEN
            v_end := rentals.ical_time(m[3], m[2], tz);
            IF v_end IS NULL THEN
                RAISE EXCEPTION 'line %: DTEND is not a date or date-time: '
                                '"%"', n, left(m[3], 40)
                    USING ERRCODE = '22023';
            END IF;
        WHEN 'DURATION' THEN
            v_dur := btrim(m[3]);
        WHEN 'SUMMARY' THEN
            v_sum := left(rentals.ical_unescape(m[3]), 200);
        WHEN 'STATUS' THEN
            v_status := btrim(m[3]);
        WHEN 'SEQUENCE' THEN
            v_seq := CASE WHEN btrim(m[3]) ~ '^\d{1,9}$'
                          THEN btrim(m[3])::int ELSE 0 END;
        ELSE
            NULL;
        END CASE;
    END LOOP;

    IF NOT in_cal THEN
        RAISE EXCEPTION 'not an iCalendar file (no BEGIN:VCALENDAR)'
            USING ERRCODE = '22023';
    END IF;
    IF in_ev THEN
        RAISE EXCEPTION 'the VEVENT of line % is not closed (the file is cut '
                        'short)', ev_line USING ERRCODE = '22023';
    END IF;
    IF NOT ended THEN
        RAISE EXCEPTION 'the file is cut short (no END:VCALENDAR)'
            USING ERRCODE = '22023';
    END IF;

    RETURN QUERY
    SELECT DISTINCT ON (e->>'uid') e->>'uid',
           daterange((e->>'from')::date, (e->>'to')::date),
           e->>'summary'
    FROM jsonb_array_elements(evs) AS e
    ORDER BY e->>'uid', (e->>'seq')::int DESC, (e->>'n')::int DESC;
END
$$;


-- ---------------------------------------------------------------------
-- iCal import: applying a feed
-- ---------------------------------------------------------------------

-- The events of a good feed as blocks of its property: stays still to
-- come; overlapping events of the feed merged into one block (the UID of
-- the earliest names it); a block that overlaps another booking is not
-- written and is reported in "conflicts"; this feed's blocks to come that
-- are no longer in it are cancelled.
CREATE OR REPLACE FUNCTION rentals.ical_apply(f rentals.ical_feeds,
                                              feed text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p           rentals.properties;
    v_today     date;
    e           record;
    v_uids      text[] := '{}';
    v_conflicts jsonb := '[]';
    v_events    int;
    v_blocks    int := 0;
BEGIN
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = f.property_id;
    v_today := rentals.today(p);

    CREATE TEMP TABLE IF NOT EXISTS rentals_ical_events (
        uid text, stay daterange, summary text) ON COMMIT DROP;
    TRUNCATE rentals_ical_events;
    INSERT INTO rentals_ical_events
    SELECT * FROM rentals.ical_parse(feed, p.time_zone);
    SELECT count(*) INTO v_events FROM rentals_ical_events;

    FOR e IN
        WITH d AS (SELECT * FROM rentals_ical_events AS x
                   WHERE upper(x.stay) > v_today),
        o AS (SELECT d.*, max(upper(d.stay)) OVER (
                          ORDER BY lower(d.stay), d.uid
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                          AS prev_end
              FROM d),
        g AS (SELECT o.*, count(*) FILTER (WHERE o.prev_end IS NULL
                                           OR lower(o.stay) >= o.prev_end)
                          OVER (ORDER BY lower(o.stay), o.uid) AS grp
              FROM o)
        SELECT (array_agg(g.uid ORDER BY lower(g.stay), g.uid))[1] AS uid,
               daterange(min(lower(g.stay)), max(upper(g.stay))) AS stay,
               (array_agg(g.summary ORDER BY lower(g.stay), g.uid))[1]
                   AS summary
        FROM g GROUP BY g.grp ORDER BY 2
    LOOP
        v_uids := v_uids || e.uid;
        BEGIN
            INSERT INTO rentals.bookings AS b (business_id, property_id, stay,
                status, source, external_id, kind, note, ical_feed_id,
                confirmed_at)
            VALUES (f.business_id, f.property_id, e.stay, 'confirmed',
                    f.channel, e.uid, 'block',
                    left(coalesce(e.summary, 'Not available'), 2000), f.id,
                    now())
            ON CONFLICT (property_id, source, external_id) DO UPDATE
            SET stay = EXCLUDED.stay, status = 'confirmed',
                note = EXCLUDED.note, cancelled_at = NULL, updated_at = now()
            WHERE b.ical_feed_id = f.id
              AND (b.stay <> EXCLUDED.stay OR b.status <> 'confirmed'
                   OR b.note IS DISTINCT FROM EXCLUDED.note);
            v_blocks := v_blocks + 1;
        EXCEPTION WHEN exclusion_violation THEN
            v_conflicts := v_conflicts || jsonb_build_object(
                'uid', e.uid, 'check_in', lower(e.stay),
                'check_out', upper(e.stay),
                'reason', 'overlaps another booking of the property');
        END;
    END LOOP;

    UPDATE rentals.bookings AS b
    SET status = 'cancelled', cancelled_at = now(), updated_at = now(),
        error = 'No longer in the ' || f.channel || ' calendar.'
    WHERE b.ical_feed_id = f.id AND b.kind = 'block'
      AND b.status = 'confirmed' AND upper(b.stay) > v_today
      AND b.external_id <> ALL (v_uids);

    UPDATE rentals.ical_feeds AS x
    SET status = 'ok', last_error = NULL, events = v_events,
        blocks = v_blocks, conflicts = v_conflicts,
        last_import_at = now(), last_ok_at = now()
    WHERE x.id = f.id;
END
$$;

-- The import's call job (a GET through the feed host's service).
CREATE OR REPLACE FUNCTION rentals.ical_feed_payload(f rentals.ical_feeds)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'service', f.service, 'method', 'GET', 'path', f.path,
        'headers', jsonb_build_object('Accept', 'text/calendar'),
        'callback', 'rentals_ical_fetched',
        'context', jsonb_build_object('feed_id', f.id));
$$;

-- Queues (or moves to `at`) the import of a feed: key ical-feed:<id>.
CREATE OR REPLACE FUNCTION rentals.ical_feed_schedule(feed_id bigint,
                                                      at timestamptz)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f rentals.ical_feeds;
BEGIN
    SELECT * INTO f FROM rentals.ical_feeds AS x
    WHERE x.id = feed_id AND x.business_id = rentals.current_business();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such feed.' USING ERRCODE = 'PT404';
    END IF;
    IF NOT jobs.reschedule('ical-feed:' || f.id, at) THEN
        PERFORM jobs.enqueue('call', rentals.ical_feed_payload(f), at,
                             'ical-feed:' || f.id, 3);
    END IF;
END
$$;

-- Its end: cancels the import and this feed's blocks to come.
CREATE OR REPLACE FUNCTION rentals.ical_feed_unschedule(feed_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rentals.ical_feeds AS x
               WHERE x.id = feed_id
                 AND x.business_id = rentals.current_business())
    THEN
        PERFORM jobs.cancel('ical-feed:' || feed_id);
    END IF;
END
$$;

-- The answer to the import's GET: a 2xx body is parsed and applied; any
-- other answer, or a body that cannot be read, marks the feed failed with
-- the reason and leaves its blocks as the last good import made them.
-- Then the next import is queued (ical_import_every).  Never raises for
-- the feed's sake (a raise would make the runner fetch again at once).
CREATE OR REPLACE FUNCTION callbacks.rentals_ical_fetched(context jsonb,
                                                          status int,
                                                          response text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f      rentals.ical_feeds;
    v_err  text;
BEGIN
    SELECT * INTO f FROM rentals.ical_feeds AS x
    WHERE x.id = (context->>'feed_id')::bigint FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF status BETWEEN 200 AND 299 THEN
        BEGIN
            PERFORM rentals.ical_apply(f, response);
        EXCEPTION WHEN invalid_parameter_value THEN
            v_err := SQLERRM;
        END;
    ELSIF status = 0 THEN
        v_err := 'the feed could not be fetched: ' || coalesce(response, '');
    ELSE
        v_err := 'the feed answered HTTP status ' || status;
    END IF;

    IF v_err IS NOT NULL THEN
        UPDATE rentals.ical_feeds AS x
        SET status = 'failed', last_error = left(v_err, 1000),
            last_import_at = now()
        WHERE x.id = f.id;
    END IF;

    PERFORM jobs.enqueue_next('call', rentals.ical_feed_payload(f),
                              now() + (SELECT s.ical_import_every
                                       FROM rentals.comms_settings AS s),
                              'ical-feed:' || f.id);
END
$$;


-- ---------------------------------------------------------------------
-- Owners: iCal
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rentals.ical_feed_json(f rentals.ical_feeds)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('id', f.id, 'channel', f.channel, 'url', f.url,
                             'status', f.status, 'last_error', f.last_error,
                             'events', f.events, 'blocks', f.blocks,
                             'conflicts', f.conflicts,
                             'last_import_at', f.last_import_at,
                             'last_ok_at', f.last_ok_at,
                             'created_at', f.created_at);
$$;

-- The property's export (made on first use) and feeds.
CREATE OR REPLACE FUNCTION rentals.ical_json(p rentals.properties,
                                             base_url text)
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_token text;
BEGIN
    SELECT e.token INTO v_token FROM rentals.ical_exports AS e
    WHERE e.property_id = p.id;
    IF v_token IS NULL THEN
        INSERT INTO rentals.ical_exports (property_id, business_id, token)
        VALUES (p.id, p.business_id, rentals.ical_token())
        ON CONFLICT (property_id) DO NOTHING;
        SELECT e.token INTO v_token FROM rentals.ical_exports AS e
        WHERE e.property_id = p.id;
    END IF;
    RETURN json_build_object(
        'property_id', p.id,
        'export_url', coalesce(rtrim(base_url, '/'), '') || '/ical/'
                      || v_token || '.ics',
        'feeds', coalesce((SELECT json_agg(rentals.ical_feed_json(f)
                                           ORDER BY f.id)
                           FROM rentals.ical_feeds AS f
                           WHERE f.property_id = p.id), '[]'));
END
$$;

-- GET /api/owner/properties/{id}/ical
CREATE OR REPLACE FUNCTION api.owner_ical(user_id bigint, property_id bigint,
                                          base_url text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id);
BEGIN
    RETURN rentals.ical_json(p, base_url);
END
$$;

-- POST /api/owner/properties/{id}/ical/rotate: a new secret address; the
-- old one answers 404 at once.
CREATE OR REPLACE FUNCTION api.owner_ical_rotate(user_id bigint,
                                                 property_id bigint,
                                                 base_url text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id);
BEGIN
    INSERT INTO rentals.ical_exports AS e (property_id, business_id, token)
    VALUES (p.id, p.business_id, rentals.ical_token())
    ON CONFLICT ON CONSTRAINT ical_exports_pkey DO UPDATE
    SET token = EXCLUDED.token, created_at = now();
    RETURN rentals.ical_json(p, base_url);
END
$$;

-- POST /api/owner/properties/{id}/ical/feeds {"channel", "url"}: 201, and
-- the first import is queued at once.  url: http(s), its origin one of
-- rentals.ical_hosts (400 url otherwise), the rest printable ASCII.
CREATE OR REPLACE FUNCTION api.owner_ical_feed_add(user_id bigint,
                                                   property_id bigint,
                                                   body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b       bigint := rentals.enter(user_id);
    p         rentals.properties := rentals.owner_property(property_id);
    v_channel text;
    v_url     text;
    v_origin  text;
    v_path    text;
    v_service text;
    f         rentals.ical_feeds;
BEGIN
    PERFORM app.check_fields(body, ARRAY['channel', 'url']);
    v_channel := app.json_text(body, 'channel', 20, 1);
    IF v_channel NOT IN ('airbnb', 'booking_com') THEN
        PERFORM app.bad_field('channel', 'channel must be airbnb or '
                                         'booking_com.');
    END IF;
    v_url := app.json_text(body, 'url', 2000, 1);
    v_origin := lower(substring(v_url FROM '^(https?://[^/?#@\s]+)'));
    IF v_origin IS NULL OR v_url !~ '^https?://[^/?#@\s]+([/?][\x21-\x7E]*)?$'
    THEN
        PERFORM app.bad_field('url', 'url must be an http or https address '
                                     'of printable characters.');
    END IF;
    v_path := substr(v_url, length(v_origin) + 1);
    v_path := CASE WHEN v_path = '' THEN '/'
                   WHEN left(v_path, 1) = '?' THEN '/' || v_path
                   ELSE v_path END;
    v_service := rentals.ical_service(v_origin);
    IF v_service IS NULL THEN
        PERFORM app.bad_field('url', 'Calendars from ' || v_origin
                                     || ' cannot be fetched: this platform '
                                     || 'is not set up for that host.');
    END IF;

    BEGIN
        INSERT INTO rentals.ical_feeds (business_id, property_id, channel,
                                        url, service, path)
        VALUES (p.business_id, p.id, v_channel, v_url, v_service, v_path)
        RETURNING * INTO f;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'This property already imports a % calendar.',
                        v_channel
            USING ERRCODE = 'PT409', DETAIL = 'field: channel';
    END;
    PERFORM rentals.ical_feed_schedule(f.id, now());
    PERFORM platform.set_status(201);
    RETURN rentals.ical_feed_json(f);
END
$$;

-- The service for an origin (rentals.ical_hosts is not the tenant's).
CREATE OR REPLACE FUNCTION rentals.ical_service(origin text)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.service FROM rentals.ical_hosts AS h WHERE h.origin = ical_service.origin;
$$;

-- DELETE /api/owner/properties/{id}/ical/feeds/{feed}: the import stops;
-- the feed's blocks to come are cancelled (its past ones stay).
CREATE OR REPLACE FUNCTION api.owner_ical_feed_delete(user_id bigint,
                                                      property_id bigint,
                                                      feed_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id);
    v_n int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rentals.ical_feeds AS f
                   WHERE f.id = feed_id AND f.property_id = p.id) THEN
        RAISE EXCEPTION 'No such feed.' USING ERRCODE = 'PT404';
    END IF;
    PERFORM rentals.ical_feed_unschedule(feed_id);
    UPDATE rentals.bookings AS b
    SET status = 'cancelled', cancelled_at = now(), updated_at = now(),
        error = 'Its calendar feed was removed.'
    WHERE b.ical_feed_id = feed_id AND b.status = 'confirmed'
      AND upper(b.stay) > rentals.today(p);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    DELETE FROM rentals.ical_feeds AS f WHERE f.id = feed_id;
    RETURN json_build_object('deleted', true, 'id', feed_id,
                             'blocks_cancelled', v_n);
END
$$;

-- POST /api/owner/properties/{id}/ical/feeds/{feed}/import: now (202).
CREATE OR REPLACE FUNCTION api.owner_ical_feed_import(user_id bigint,
                                                      property_id bigint,
                                                      feed_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id);
    f   rentals.ical_feeds;
BEGIN
    SELECT * INTO f FROM rentals.ical_feeds AS x
    WHERE x.id = feed_id AND x.property_id = p.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such feed.' USING ERRCODE = 'PT404';
    END IF;
    PERFORM rentals.ical_feed_schedule(f.id, now());
    PERFORM platform.set_status(202);
    RETURN rentals.ical_feed_json(f);
END
$$;


-- ---------------------------------------------------------------------
-- Owners: mailing previous guests
-- ---------------------------------------------------------------------

-- Queues one mail per address of the property's past guests (confirmed
-- stays that ended), spaced 1/rate seconds apart on one queue for the
-- whole platform (comms_settings.announce_next_at): at most `rate` such
-- mails a second however many owners press the button.  Returns
-- {"recipients", "first_at", "last_at"}.
CREATE OR REPLACE FUNCTION rentals.announce(property_id bigint,
                                            subject text, message text,
                                            rate int)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       rentals.properties;
    s       rentals.businesses;
    v_reply text;
    v_start timestamptz;
    v_step  interval;
    v_n     int := 0;
    r       record;
BEGIN
    SELECT * INTO p FROM rentals.properties AS x
    WHERE x.id = announce.property_id
      AND x.business_id = rentals.current_business();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such property.' USING ERRCODE = 'PT404';
    END IF;
    SELECT * INTO s FROM rentals.businesses AS x WHERE x.id = p.business_id;
    SELECT u.email INTO v_reply FROM auth.users AS u
    WHERE u.id = nullif(current_setting('rentals.user', true), '')::bigint;

    rate := least(greatest(coalesce(rate, 10), 1), 1000);
    v_step := make_interval(secs => 1.0 / rate);

    PERFORM 1 FROM rentals.comms_settings FOR UPDATE;
    SELECT greatest(coalesce(c.announce_next_at, now()), now()) INTO v_start
    FROM rentals.comms_settings AS c;

    FOR r IN
        SELECT lower(b.guest_email) AS email
        FROM rentals.bookings AS b
        WHERE b.property_id = p.id AND b.kind = 'booking'
          AND b.status = 'confirmed' AND b.guest_email IS NOT NULL
          AND upper(b.stay) <= rentals.today(p)
          AND jobs.valid_address(b.guest_email)
        GROUP BY lower(b.guest_email)
        ORDER BY min(lower(b.stay)), 1
    LOOP
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', r.email, 'subject', subject, 'from_name', s.name,
            'text', message || E'\n\n-- \n' || s.name || ', "' || p.name
                    || E'"\nYou get this because you stayed here before.\n')
            || CASE WHEN v_reply IS NOT NULL AND jobs.valid_address(v_reply)
                    THEN jsonb_build_object('reply_to', v_reply)
                    ELSE '{}' END,
            v_start + v_step * v_n);
        v_n := v_n + 1;
    END LOOP;

    UPDATE rentals.comms_settings
    SET announce_next_at = v_start + v_step * v_n;

    RETURN json_build_object('recipients', v_n,
                             'first_at', CASE WHEN v_n > 0 THEN v_start END,
                             'last_at', CASE WHEN v_n > 0
                                             THEN v_start + v_step * (v_n - 1)
                                        END);
END
$$;

-- POST /api/owner/properties/{id}/announce {"subject", "text"}: 202.
-- rate: emails per second ($platform_mail_rate of nginx.conf).
CREATE OR REPLACE FUNCTION api.owner_announce(user_id bigint,
                                              property_id bigint,
                                              body jsonb, rate int)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id);
    v_subject text;
    v_text    text;
    res       json;
BEGIN
    PERFORM app.check_fields(body, ARRAY['subject', 'text']);
    v_subject := app.json_text(body, 'subject', 200, 1);
    v_text := app.json_text(body, 'text', 10000, 1);
    res := rentals.announce(p.id, v_subject, v_text, rate);
    PERFORM platform.set_status(202);
    RETURN res;
END
$$;


-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rentals FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION maintenance.rentals_booking_mail(jsonb),
    callbacks.rentals_ical_fetched(jsonb, int, text)
    FROM PUBLIC, platform_app;

GRANT EXECUTE ON FUNCTION
    rentals.key_code_json(rentals.key_codes, boolean),
    rentals.key_codes_json(bigint),
    rentals.key_code_rotate(bigint),
    rentals.ical_token(), rentals.random_bytes(int),
    rentals.ical_json(rentals.properties, text),
    rentals.ical_feed_json(rentals.ical_feeds),
    rentals.ical_feed_schedule(bigint, timestamptz),
    rentals.ical_feed_unschedule(bigint),
    rentals.ical_service(text),
    rentals.announce(bigint, text, text, int)
    TO rentals_tenant;

ALTER FUNCTION api.owner_key_codes(bigint, bigint) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_key_code_rotate(bigint, bigint)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_ical(bigint, bigint, text) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_ical_rotate(bigint, bigint, text)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_ical_feed_add(bigint, bigint, jsonb)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_ical_feed_delete(bigint, bigint, bigint)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_ical_feed_import(bigint, bigint, bigint)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_announce(bigint, bigint, jsonb, int)
    OWNER TO rentals_tenant;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api TO platform_app;
