-- 016_rentals.sql - holiday rentals (issue 7), part 1: businesses, owners,
-- properties and their images.  docs/rentals.md tells the design; the
-- locations are in conf/api/rentals.conf.  Bookings, the public site and
-- payment are in 017_rentals_bookings.sql.
--
--   POST /api/rentals/signup                  api.rentals_signup
--        -> a magic link; confirming it creates the business (slug unique)
--           with the address as its first owner (rentals.on_confirm, called
--           from api.auth_confirm, patched in 017)
--   GET, PATCH /api/owner/business            api.owner_business_get/_update
--   POST /api/owner/invites                   api.owner_invite
--   GET, POST /api/owner/properties           api.owner_properties/_create
--   GET, PATCH, DELETE /api/owner/properties/{id}
--   POST /api/owner/properties/{id}/images    api.owner_image_add (upload)
--   PUT  /api/owner/properties/{id}/images/order
--   DELETE /api/owner/properties/{id}/images/{image}
--
-- Tenant isolation.  Every owner endpoint takes only the session's user
-- ($platform_user); the business is looked up from rentals.owners by
-- rentals.enter(), which stores it in the transaction-local setting
-- rentals.business.  The owner endpoints are SECURITY DEFINER functions
-- owned by the role rentals_tenant, which is neither superuser nor owner
-- of the tables: row-level security applies to it, and the policies below
-- let it see and write only rows of that business.  A bug in an owner
-- function (a forgotten WHERE business_id = ...) therefore cannot reach
-- another business: its rows are invisible (404).  The public endpoints
-- (by slug) and the flows that cross businesses (sign-up, confirmation,
-- Stripe, jobs) are SECURITY DEFINER functions of the migrating superuser,
-- which bypasses row-level security: each filters explicitly, and none of
-- them takes a business id from the client except as the public slug.
--
-- Errors as in 005: bad input is 22023 with DETAIL 'field: <name>'; a row
-- of another business is PT404; a state that forbids the request PT409.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, catalog-guarded DO blocks.

CREATE SCHEMA IF NOT EXISTS rentals;

-- The role the owner endpoints run as (see above).  Cluster-wide, so
-- created only when missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                   WHERE rolname = 'rentals_tenant')
    THEN
        CREATE ROLE rentals_tenant NOLOGIN NOSUPERUSER NOCREATEDB
            NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
EXCEPTION
    WHEN duplicate_object THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA rentals, app, platform TO rentals_tenant;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS rentals.businesses (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the public site is /b/<slug>/
    slug           text NOT NULL
                   CONSTRAINT businesses_slug_key UNIQUE
                   CONSTRAINT businesses_slug_check
                   CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'
                          AND slug !~ '--'),
    name           text NOT NULL CONSTRAINT businesses_name_check
                   CHECK (length(name) BETWEEN 1 AND 200),
    -- Stripe Connect account guests' payments go to (null: the platform's)
    stripe_account text CONSTRAINT businesses_stripe_account_check
                   CHECK (stripe_account ~ '^acct_[A-Za-z0-9]{1,250}$'),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- An owner belongs to one business (the session's user decides the
-- business of every owner endpoint).
CREATE TABLE IF NOT EXISTS rentals.owners (
    business_id bigint NOT NULL
                REFERENCES rentals.businesses (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL
                CONSTRAINT owners_user_id_key UNIQUE
                REFERENCES auth.users (id) ON DELETE CASCADE,
    invited_by  bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_id, user_id)
);

-- Sign-ups waiting for their magic link (email proven -> business).
CREATE TABLE IF NOT EXISTS rentals.signups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL,
    slug        text NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CONSTRAINT signups_status_check
                CHECK (status IN ('pending', 'done', 'failed')),
    business_id bigint REFERENCES rentals.businesses (id) ON DELETE SET NULL,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS signups_email_idx
    ON rentals.signups (email) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS rentals.properties (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id       bigint NOT NULL
                      REFERENCES rentals.businesses (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description       text NOT NULL DEFAULT ''
                      CHECK (length(description) <= 10000),
    address           text NOT NULL DEFAULT '' CHECK (length(address) <= 500),
    capacity          int NOT NULL CHECK (capacity BETWEEN 1 AND 100),
    -- per night, in minor units of currency (app.currencies(), 010)
    price_minor       int NOT NULL CHECK (price_minor >= 0),
    cleaning_fee_minor int NOT NULL DEFAULT 0 CHECK (cleaning_fee_minor >= 0),
    currency          text NOT NULL
                      CONSTRAINT properties_currency_check
                      CHECK (currency = ANY (app.currencies())),
    min_nights        int NOT NULL DEFAULT 1 CHECK (min_nights BETWEEN 1 AND 365),
    -- local times at the property (time_zone)
    check_in_time     time NOT NULL DEFAULT '15:00',
    check_out_time    time NOT NULL DEFAULT '10:00',
    -- the cleaner's window starts at check-out
    cleaning_minutes  int NOT NULL DEFAULT 180
                      CHECK (cleaning_minutes BETWEEN 0 AND 1440),
    time_zone         text NOT NULL DEFAULT 'UTC',
    cleaner_email     text CHECK (length(cleaner_email) <= 254),
    -- where the key box is: for the welcome mail, never public
    key_box_location  text NOT NULL DEFAULT ''
                      CHECK (length(key_box_location) <= 1000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),

    -- (business_id, id) is what child rows refer to: a child always
    -- belongs to the business of its property.
    CONSTRAINT properties_business_id_id_key UNIQUE (business_id, id)
);

CREATE TABLE IF NOT EXISTS rentals.property_images (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id  bigint NOT NULL,
    property_id  bigint NOT NULL,
    -- the file platform_upload stored: <2 hex>/<sha256>.<ext>
    name         text NOT NULL
                 CONSTRAINT property_images_name_check
                 CHECK (name ~ '^[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|webp)$'
                        AND substr(name, 1, 2) = substr(name, 4, 2)),
    content_type text NOT NULL
                 CHECK (content_type IN ('image/jpeg', 'image/png',
                                         'image/webp')),
    size         bigint NOT NULL CHECK (size > 0),
    width        int CHECK (width > 0),
    height       int CHECK (height > 0),
    position     int NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),

    FOREIGN KEY (business_id, property_id)
        REFERENCES rentals.properties (business_id, id) ON DELETE CASCADE,
    CONSTRAINT property_images_property_name_key UNIQUE (property_id, name)
);

CREATE INDEX IF NOT EXISTS property_images_property_idx
    ON rentals.property_images (property_id, position);

REVOKE ALL ON ALL TABLES IN SCHEMA rentals FROM PUBLIC, platform_app;


-- ---------------------------------------------------------------------
-- Row-level security: rentals_tenant sees its business only
-- ---------------------------------------------------------------------

-- The business rentals.enter() chose for this transaction (NULL: none,
-- and then no row matches).
CREATE OR REPLACE FUNCTION rentals.current_business()
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT nullif(current_setting('rentals.business', true), '')::bigint;
$$;

GRANT SELECT, UPDATE ON rentals.businesses TO rentals_tenant;
GRANT SELECT ON rentals.owners TO rentals_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON rentals.properties, rentals.property_images TO rentals_tenant;

ALTER TABLE rentals.businesses ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.owners ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.properties ENABLE ROW LEVEL SECURITY;
ALTER TABLE rentals.property_images ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS tenant ON rentals.businesses;
CREATE POLICY tenant ON rentals.businesses TO rentals_tenant
    USING (id = rentals.current_business())
    WITH CHECK (id = rentals.current_business());

DROP POLICY IF EXISTS tenant ON rentals.owners;
CREATE POLICY tenant ON rentals.owners TO rentals_tenant
    USING (business_id = rentals.current_business());

DROP POLICY IF EXISTS tenant ON rentals.properties;
CREATE POLICY tenant ON rentals.properties TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());

DROP POLICY IF EXISTS tenant ON rentals.property_images;
CREATE POLICY tenant ON rentals.property_images TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- The session's user as an owner: sets rentals.business (transaction-
-- local) to the user's business and returns it.  401 without a user, 403
-- for a user who runs no business.  SECURITY DEFINER: it reads
-- rentals.owners before any business is chosen.
CREATE OR REPLACE FUNCTION rentals.enter(user_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_business bigint;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    SELECT o.business_id INTO v_business
    FROM rentals.owners AS o WHERE o.user_id = enter.user_id;

    IF v_business IS NULL THEN
        RAISE EXCEPTION 'This account does not run a rentals business.'
            USING ERRCODE = 'PT403',
                  HINT = 'Sign up at /owner/ or ask an owner to invite you.';
    END IF;

    PERFORM set_config('rentals.business', v_business::text, true);
    PERFORM set_config('rentals.user', user_id::text, true);
    RETURN v_business;
END
$$;

-- A public slug: 3..63 lowercase letters, digits and single dashes, not
-- at either end.
CREATE OR REPLACE FUNCTION rentals.valid_slug(slug text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'
                    AND slug !~ '--', false);
$$;

-- An optional email field: NULL when absent or null.
CREATE OR REPLACE FUNCTION rentals.json_email_opt(body jsonb, field text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body->field IS NULL OR body->field = 'null'::jsonb
       OR body->>field = '' THEN
        RETURN NULL;
    END IF;
    RETURN app.json_email(body, field);
END
$$;

-- A time of day "HH:MM".
CREATE OR REPLACE FUNCTION rentals.json_hhmm(body jsonb, field text)
RETURNS time
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'string'
       OR body->>field !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
    THEN
        PERFORM app.bad_field(field, field || ' must be a time of day '
                                     '(HH:MM, e.g. 15:00).');
    END IF;
    RETURN (body->>field)::time;
END
$$;

-- The fields of a property body applied to p (defaults for a new one),
-- checked; 400 naming the first bad field.
CREATE OR REPLACE FUNCTION rentals.property_apply(p rentals.properties,
                                                  body jsonb)
RETURNS rentals.properties
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    is_new boolean := p.id IS NULL;
BEGIN
    PERFORM app.check_fields(body, ARRAY['name', 'description', 'address',
        'capacity', 'price_minor', 'cleaning_fee_minor', 'currency',
        'min_nights', 'check_in_time', 'check_out_time', 'cleaning_minutes',
        'time_zone', 'cleaner_email', 'key_box_location']);

    IF is_new THEN
        IF NOT body ? 'name' THEN
            PERFORM app.bad_field('name', 'name is required.');
        ELSIF NOT body ? 'capacity' THEN
            PERFORM app.bad_field('capacity', 'capacity is required.');
        ELSIF NOT body ? 'price_minor' THEN
            PERFORM app.bad_field('price_minor', 'price_minor (the nightly '
                                  'price in minor units) is required.');
        ELSIF NOT body ? 'currency' THEN
            PERFORM app.bad_field('currency', 'currency is required.');
        END IF;
    END IF;

    IF body ? 'name' THEN
        p.name := app.json_text(body, 'name', 200, 1);
    END IF;
    IF body ? 'description' THEN
        p.description := app.json_text(body, 'description', 10000);
    END IF;
    IF body ? 'address' THEN
        p.address := app.json_text(body, 'address', 500);
    END IF;
    IF body ? 'capacity' THEN
        p.capacity := app.json_int(body, 'capacity', 1);
        IF p.capacity IS NULL OR p.capacity > 100 THEN
            PERFORM app.bad_field('capacity', 'capacity must be a whole '
                                              'number from 1 to 100.');
        END IF;
    END IF;
    IF body ? 'price_minor' THEN
        p.price_minor := app.json_int(body, 'price_minor', 0);
        IF p.price_minor IS NULL THEN
            PERFORM app.bad_field('price_minor', 'price_minor is required.');
        END IF;
    END IF;
    IF body ? 'cleaning_fee_minor' THEN
        p.cleaning_fee_minor := coalesce(
            app.json_int(body, 'cleaning_fee_minor', 0), 0);
    END IF;
    IF body ? 'currency' THEN
        IF jsonb_typeof(body->'currency') IS DISTINCT FROM 'string'
           OR upper(body->>'currency') <> ALL (app.currencies()) THEN
            PERFORM app.bad_field('currency', 'currency must be one of '
                || array_to_string(app.currencies(), ', ') || '.');
        END IF;
        p.currency := upper(body->>'currency');
    END IF;
    IF body ? 'min_nights' THEN
        p.min_nights := app.json_int(body, 'min_nights', 1);
        IF p.min_nights IS NULL OR p.min_nights > 365 THEN
            PERFORM app.bad_field('min_nights', 'min_nights must be a whole '
                                                'number from 1 to 365.');
        END IF;
    END IF;
    IF body ? 'check_in_time' THEN
        p.check_in_time := rentals.json_hhmm(body, 'check_in_time');
    END IF;
    IF body ? 'check_out_time' THEN
        p.check_out_time := rentals.json_hhmm(body, 'check_out_time');
    END IF;
    IF body ? 'cleaning_minutes' THEN
        p.cleaning_minutes := app.json_int(body, 'cleaning_minutes', 0);
        IF p.cleaning_minutes IS NULL OR p.cleaning_minutes > 1440 THEN
            PERFORM app.bad_field('cleaning_minutes', 'cleaning_minutes must '
                                  'be a whole number from 0 to 1440.');
        END IF;
    END IF;
    IF body ? 'time_zone' THEN
        p.time_zone := app.json_text(body, 'time_zone', 64, 1);
        IF NOT EXISTS (SELECT 1 FROM pg_timezone_names AS z
                       WHERE z.name = p.time_zone) THEN
            PERFORM app.bad_field('time_zone', 'time_zone must be an IANA '
                                  'time zone (e.g. Europe/Paris).');
        END IF;
    END IF;
    IF body ? 'cleaner_email' THEN
        p.cleaner_email := rentals.json_email_opt(body, 'cleaner_email');
    END IF;
    IF body ? 'key_box_location' THEN
        p.key_box_location := app.json_text(body, 'key_box_location', 1000);
    END IF;

    -- Check-out, then the cleaning, then the next guest's check-in on the
    -- same day: the window must fit between the two times.
    p.check_in_time := coalesce(p.check_in_time, '15:00');
    p.check_out_time := coalesce(p.check_out_time, '10:00');
    p.cleaning_minutes := coalesce(p.cleaning_minutes, 180);
    IF p.check_out_time + p.cleaning_minutes * interval '1 minute'
           > p.check_in_time
       OR p.check_out_time + p.cleaning_minutes * interval '1 minute'
           < p.check_out_time   -- wrapped past midnight
    THEN
        PERFORM app.bad_field(
            CASE WHEN body ? 'cleaning_minutes' THEN 'cleaning_minutes'
                 WHEN body ? 'check_in_time' THEN 'check_in_time'
                 ELSE 'check_out_time' END,
            'The cleaning window (' || p.cleaning_minutes || ' minutes from '
            || to_char(p.check_out_time, 'HH24:MI') || ') must end by the '
            || 'check-in time (' || to_char(p.check_in_time, 'HH24:MI')
            || ').');
    END IF;

    RETURN p;
END
$$;

CREATE OR REPLACE FUNCTION rentals.image_json(i rentals.property_images)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', i.id, 'position', i.position,
        'url', '/media/' || i.name,
        'thumbnails', json_build_object('w320', '/media/w320/' || i.name,
                                        'w960', '/media/w960/' || i.name),
        'content_type', i.content_type, 'size', i.size,
        'width', i.width, 'height', i.height);
$$;

-- A property's images in order (as the caller may see them).
CREATE OR REPLACE FUNCTION rentals.images_json(property_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(json_agg(rentals.image_json(i)
                             ORDER BY i.position, i.id), '[]')
    FROM rentals.property_images AS i
    WHERE i.property_id = images_json.property_id;
$$;

-- A property as the public sees it (private: also the owner's fields).
CREATE OR REPLACE FUNCTION rentals.property_json(p rentals.properties,
                                                 private boolean)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (jsonb_build_object(
        'id', p.id, 'name', p.name, 'description', p.description,
        'address', p.address, 'capacity', p.capacity,
        'price_minor', p.price_minor,
        'cleaning_fee_minor', p.cleaning_fee_minor,
        'currency', p.currency, 'min_nights', p.min_nights,
        'check_in_time', to_char(p.check_in_time, 'HH24:MI'),
        'check_out_time', to_char(p.check_out_time, 'HH24:MI'),
        'time_zone', p.time_zone,
        'images', rentals.images_json(p.id))
        || CASE WHEN private THEN jsonb_build_object(
               'cleaning_minutes', p.cleaning_minutes,
               'cleaner_email', p.cleaner_email,
               'key_box_location', p.key_box_location,
               'created_at', p.created_at, 'updated_at', p.updated_at)
           ELSE '{}'::jsonb END)::json;
$$;

-- The owner's property (RLS decides what "the owner's" is); 404 else.
CREATE OR REPLACE FUNCTION rentals.owner_property(property_id bigint,
                                                  lock boolean DEFAULT false)
RETURNS rentals.properties
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p rentals.properties;
BEGIN
    IF lock THEN
        SELECT * INTO p FROM rentals.properties AS x
        WHERE x.id = owner_property.property_id
          AND x.business_id = rentals.current_business()
        FOR UPDATE;
    ELSE
        SELECT * INTO p FROM rentals.properties AS x
        WHERE x.id = owner_property.property_id
          AND x.business_id = rentals.current_business();
    END IF;
    IF p.id IS NULL THEN
        RAISE EXCEPTION 'No such property.' USING ERRCODE = 'PT404';
    END IF;
    RETURN p;
END
$$;

CREATE OR REPLACE FUNCTION rentals.business_json(business_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', b.id, 'slug', b.slug, 'name', b.name,
        'stripe_account', b.stripe_account,
        'site_url', '/b/' || b.slug || '/',
        'owners', (SELECT coalesce(json_agg(json_build_object(
                                       'user_id', o.user_id,
                                       'email', u.email)
                                   ORDER BY o.created_at, o.user_id), '[]')
                   FROM rentals.owners AS o
                   JOIN auth.users AS u ON u.id = o.user_id
                   WHERE o.business_id = b.id),
        'created_at', b.created_at)
    FROM rentals.businesses AS b
    WHERE b.id = business_json.business_id;
$$;


-- ---------------------------------------------------------------------
-- Sign-up (public; SECURITY DEFINER of the migrating role)
-- ---------------------------------------------------------------------

-- Creates the business of a proven address; NULL and the sign-up marked
-- failed when the slug was taken meanwhile or the address already owns
-- one.  The session's roles do not change (owners are looked up per
-- request), so no new cookie is needed.
CREATE OR REPLACE FUNCTION rentals.signup_complete(signup_id bigint,
                                                   user_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s   rentals.signups;
    v_b bigint;
BEGIN
    SELECT * INTO s FROM rentals.signups AS x
    WHERE x.id = signup_id AND x.status = 'pending' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF EXISTS (SELECT 1 FROM rentals.owners AS o
               WHERE o.user_id = signup_complete.user_id) THEN
        UPDATE rentals.signups AS x SET status = 'failed',
            error = 'This account already runs a rentals business.'
        WHERE x.id = s.id;
        RETURN NULL;
    END IF;

    INSERT INTO rentals.businesses (slug, name) VALUES (s.slug, s.name)
    ON CONFLICT ON CONSTRAINT businesses_slug_key DO NOTHING
    RETURNING id INTO v_b;
    IF v_b IS NULL THEN
        UPDATE rentals.signups AS x SET status = 'failed',
            error = 'The address /b/' || s.slug || '/ was taken meanwhile.'
        WHERE x.id = s.id;
        RETURN NULL;
    END IF;

    INSERT INTO rentals.owners (business_id, user_id)
    VALUES (v_b, signup_complete.user_id);
    UPDATE rentals.signups AS x SET status = 'done', business_id = v_b
    WHERE x.id = s.id;
    RETURN v_b;
END
$$;

-- POST /api/rentals/signup (platform_auth optional), body {"email",
-- "business_name", "slug"}.  202 {"status":"pending"} and a magic link
-- (template rentals_signup) returning to /owner/; confirming it creates
-- the business.  Signed in as that address: 201 {"status":"created",
-- "business"} at once.  400 names the field; 409 "slug" taken, or the
-- account already runs a business; 429 past the link limits.
CREATE OR REPLACE FUNCTION api.rentals_signup(body jsonb, user_id bigint,
                                              token text, client_ip text,
                                              base_url text,
                                              per_email int DEFAULT 5,
                                              per_ip int DEFAULT 20)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email text;
    v_name  text;
    v_slug  text;
    v_me    text;
    v_id    bigint;
    v_b     bigint;
    res     json;
BEGIN
    IF token IS NULL OR token !~ '^[A-Za-z0-9_-]{43}$'
       OR base_url IS NULL OR base_url !~ '^https?://' THEN
        RAISE EXCEPTION 'sign-up is not configured correctly'
            USING ERRCODE = 'PT500';
    END IF;

    PERFORM app.check_fields(body, ARRAY['email', 'business_name', 'slug']);
    v_email := app.json_email(body, 'email');
    v_name := app.json_text(body, 'business_name', 200, 1);
    IF v_name ~ '[[:cntrl:]]' THEN
        PERFORM app.bad_field('business_name', 'business_name may not '
                              'contain control characters.');
    END IF;
    IF jsonb_typeof(body->'slug') IS DISTINCT FROM 'string'
       OR NOT rentals.valid_slug(body->>'slug') THEN
        PERFORM app.bad_field('slug', 'slug must be 3 to 63 lowercase '
            'letters, digits and single dashes, starting and ending with a '
            'letter or digit (your site is /b/<slug>/).');
    END IF;
    v_slug := body->>'slug';

    IF EXISTS (SELECT 1 FROM rentals.businesses AS b WHERE b.slug = v_slug)
    THEN
        RAISE EXCEPTION 'The address /b/%/ is taken: choose another slug.',
                        v_slug
            USING ERRCODE = 'PT409', DETAIL = 'field: slug';
    END IF;

    SELECT u.email INTO v_me FROM auth.users AS u
    WHERE u.id = rentals_signup.user_id;

    IF EXISTS (SELECT 1 FROM rentals.owners AS o
               JOIN auth.users AS u ON u.id = o.user_id
               WHERE u.email = v_email) THEN
        RAISE EXCEPTION 'This address already runs a rentals business.'
            USING ERRCODE = 'PT409', DETAIL = 'field: email',
                  HINT = 'Sign in and open /owner/.';
    END IF;

    INSERT INTO rentals.signups (email, slug, name)
    VALUES (v_email, v_slug, v_name)
    RETURNING id INTO v_id;

    IF v_me = v_email THEN
        v_b := rentals.signup_complete(v_id, user_id);
        IF v_b IS NULL THEN
            RAISE EXCEPTION 'The address /b/%/ is taken: choose another '
                            'slug.', v_slug
                USING ERRCODE = 'PT409', DETAIL = 'field: slug';
        END IF;
        PERFORM platform.set_status(201);
        RETURN json_build_object('status', 'created',
                                 'business', rentals.business_json(v_b));
    END IF;

    res := auth.send_link(v_email, token, auth.to_inet(client_ip), base_url,
                          '/owner/', NULL, 'rentals_signup',
                          jsonb_build_object('business_name', v_name,
                                             'slug', v_slug),
                          per_email => per_email, per_ip => per_ip);
    IF res IS NOT NULL THEN
        RETURN res;
    END IF;

    PERFORM platform.set_status(202);
    RETURN json_build_object('status', 'pending', 'slug', v_slug);
END
$$;


-- ---------------------------------------------------------------------
-- Owner endpoints (SECURITY DEFINER owned by rentals_tenant: RLS applies)
-- ---------------------------------------------------------------------

-- GET /api/owner/business
CREATE OR REPLACE FUNCTION api.owner_business_get(user_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN rentals.business_json(rentals.enter(user_id));
END
$$;

-- PATCH /api/owner/business, body {"name"?, "stripe_account"?}.  The slug
-- is the public address and does not change.
CREATE OR REPLACE FUNCTION api.owner_business_update(user_id bigint,
                                                     body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b   bigint := rentals.enter(user_id);
    b     rentals.businesses;
BEGIN
    PERFORM app.check_fields(body, ARRAY['name', 'stripe_account']);
    SELECT * INTO b FROM rentals.businesses AS x WHERE x.id = v_b FOR UPDATE;

    IF body ? 'name' THEN
        b.name := app.json_text(body, 'name', 200, 1);
    END IF;
    IF body ? 'stripe_account' THEN
        IF body->'stripe_account' = 'null'::jsonb THEN
            b.stripe_account := NULL;
        ELSIF jsonb_typeof(body->'stripe_account') IS DISTINCT FROM 'string'
              OR body->>'stripe_account' !~ '^acct_[A-Za-z0-9]{1,250}$' THEN
            PERFORM app.bad_field('stripe_account', 'stripe_account must be '
                                  'a Stripe account id (acct_...).');
        ELSE
            b.stripe_account := body->>'stripe_account';
        END IF;
    END IF;

    UPDATE rentals.businesses AS x
    SET name = b.name, stripe_account = b.stripe_account
    WHERE x.id = v_b;
    RETURN rentals.business_json(v_b);
END
$$;

-- Adds an owner to the caller's business (SECURITY DEFINER of the
-- migrating role: it writes auth.users, rentals.owners and the mail).
CREATE OR REPLACE FUNCTION rentals.add_owner(email text, token text,
                                             client_ip text, base_url text,
                                             per_email int, per_ip int)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_b     bigint := rentals.current_business();
    v_by    bigint := nullif(current_setting('rentals.user', true), '')::bigint;
    v_uid   bigint;
    v_other bigint;
    b       rentals.businesses;
    res     json;
BEGIN
    SELECT * INTO b FROM rentals.businesses AS x WHERE x.id = v_b;
    IF b.id IS NULL THEN
        RAISE EXCEPTION 'No business chosen.' USING ERRCODE = 'PT403';
    END IF;

    INSERT INTO auth.users AS x (email) VALUES (add_owner.email)
    ON CONFLICT (email) DO UPDATE SET email = x.email
    RETURNING x.id INTO v_uid;

    SELECT o.business_id INTO v_other FROM rentals.owners AS o
    WHERE o.user_id = v_uid;
    IF v_other = v_b THEN
        RETURN json_build_object('user_id', v_uid, 'email', add_owner.email,
                                 'added', false);
    ELSIF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'This address already runs another rentals '
                        'business.'
            USING ERRCODE = 'PT409', DETAIL = 'field: email';
    END IF;

    res := auth.send_link(add_owner.email, token, auth.to_inet(client_ip),
                          base_url, '/owner/', NULL, 'rentals_owner_invite',
                          jsonb_build_object('business_name', b.name),
                          ttl_seconds => 86400,
                          per_email => per_email, per_ip => per_ip);
    IF res IS NOT NULL THEN
        RETURN res;
    END IF;

    INSERT INTO rentals.owners (business_id, user_id, invited_by)
    VALUES (v_b, v_uid, v_by);

    PERFORM platform.set_status(201);
    RETURN json_build_object('user_id', v_uid, 'email', add_owner.email,
                             'added', true);
END
$$;

-- POST /api/owner/invites, body {"email"}: the address becomes an owner
-- of the caller's business and is mailed a magic link (valid a day) to
-- /owner/.  201 {"user_id", "email", "added": true}; 200 "added": false
-- when already an owner here; 409 when an owner of another business.
CREATE OR REPLACE FUNCTION api.owner_invite(user_id bigint, body jsonb,
                                            token text, client_ip text,
                                            base_url text,
                                            per_email int DEFAULT 5,
                                            per_ip int DEFAULT 20)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
BEGIN
    PERFORM app.check_fields(body, ARRAY['email']);
    RETURN rentals.add_owner(app.json_email(body, 'email'), token, client_ip,
                             base_url, per_email, per_ip);
END
$$;

-- GET /api/owner/properties: the business's properties, oldest first.
CREATE OR REPLACE FUNCTION api.owner_properties(user_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
BEGIN
    -- No WHERE business_id here on purpose: row-level security is what
    -- keeps other businesses out (tested in sql/tests/016_rentals.sql).
    RETURN json_build_object('properties',
        (SELECT coalesce(json_agg(rentals.property_json(p, true)
                                  ORDER BY p.id), '[]')
         FROM rentals.properties AS p));
END
$$;

-- POST /api/owner/properties: 201 with the property.
CREATE OR REPLACE FUNCTION api.owner_property_create(user_id bigint,
                                                     body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties;
BEGIN
    p := rentals.property_apply(p, body);
    INSERT INTO rentals.properties (business_id, name, description, address,
        capacity, price_minor, cleaning_fee_minor, currency, min_nights,
        check_in_time, check_out_time, cleaning_minutes, time_zone,
        cleaner_email, key_box_location)
    VALUES (v_b, p.name, coalesce(p.description, ''),
            coalesce(p.address, ''), p.capacity, p.price_minor,
            coalesce(p.cleaning_fee_minor, 0), p.currency,
            coalesce(p.min_nights, 1), p.check_in_time, p.check_out_time,
            p.cleaning_minutes, coalesce(p.time_zone, 'UTC'),
            p.cleaner_email, coalesce(p.key_box_location, ''))
    RETURNING * INTO p;

    PERFORM platform.set_status(201);
    PERFORM platform.set_header('Location', '/api/owner/properties/' || p.id);
    RETURN rentals.property_json(p, true);
END
$$;

-- GET /api/owner/properties/{id}
CREATE OR REPLACE FUNCTION api.owner_property_get(user_id bigint,
                                                  property_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
BEGIN
    RETURN rentals.property_json(rentals.owner_property(property_id), true);
END
$$;

-- PATCH /api/owner/properties/{id}: the fields sent.
CREATE OR REPLACE FUNCTION api.owner_property_update(user_id bigint,
                                                     property_id bigint,
                                                     body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id, true);
BEGIN
    p := rentals.property_apply(p, body);
    UPDATE rentals.properties AS x
    SET name = p.name, description = p.description, address = p.address,
        capacity = p.capacity, price_minor = p.price_minor,
        cleaning_fee_minor = p.cleaning_fee_minor, currency = p.currency,
        min_nights = p.min_nights, check_in_time = p.check_in_time,
        check_out_time = p.check_out_time,
        cleaning_minutes = p.cleaning_minutes, time_zone = p.time_zone,
        cleaner_email = p.cleaner_email,
        key_box_location = p.key_box_location, updated_at = now()
    WHERE x.id = p.id
    RETURNING * INTO p;
    RETURN rentals.property_json(p, true);
END
$$;

-- POST /api/owner/properties/{id}/images: the body is the image, stored by
-- platform_upload (type sniffed, size limited) before this runs; appended
-- last.  201 with the image; the same file again answers 200 with the
-- existing one.  409 past 50 images.
CREATE OR REPLACE FUNCTION api.owner_image_add(user_id bigint,
                                               property_id bigint,
                                               name text, content_type text,
                                               size bigint,
                                               width int DEFAULT NULL,
                                               height int DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id, true);
    i   rentals.property_images;
BEGIN
    IF name IS NULL OR name !~ '^[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|webp)$'
    THEN
        RAISE EXCEPTION 'No uploaded image.' USING ERRCODE = '22023',
            DETAIL = 'field: file';
    END IF;

    SELECT * INTO i FROM rentals.property_images AS x
    WHERE x.property_id = p.id AND x.name = owner_image_add.name;
    IF FOUND THEN
        RETURN rentals.image_json(i);
    END IF;

    IF (SELECT count(*) FROM rentals.property_images AS x
        WHERE x.property_id = p.id) >= 50 THEN
        RAISE EXCEPTION 'A property has at most 50 images.'
            USING ERRCODE = 'PT409';
    END IF;

    INSERT INTO rentals.property_images (business_id, property_id, name,
        content_type, size, width, height, position)
    VALUES (v_b, p.id, owner_image_add.name, content_type, size,
            nullif(width, 0), nullif(height, 0),
            coalesce((SELECT max(x.position) + 1
                      FROM rentals.property_images AS x
                      WHERE x.property_id = p.id), 0))
    RETURNING * INTO i;

    PERFORM platform.set_status(201);
    RETURN rentals.image_json(i);
END
$$;

-- PUT /api/owner/properties/{id}/images/order, body {"ids": [...]}: every
-- image of the property, once, in the new order.  Answers the images.
CREATE OR REPLACE FUNCTION api.owner_images_order(user_id bigint,
                                                  property_id bigint,
                                                  body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b  bigint := rentals.enter(user_id);
    p    rentals.properties := rentals.owner_property(property_id, true);
    ids  bigint[];
BEGIN
    PERFORM app.check_fields(body, ARRAY['ids']);
    IF jsonb_typeof(body->'ids') IS DISTINCT FROM 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(body->'ids') AS e
                  WHERE jsonb_typeof(e) <> 'number'
                     OR e::text !~ '^[0-9]{1,18}$') THEN
        PERFORM app.bad_field('ids', 'ids must be the list of the '
                              'property''s image ids in the new order.');
    END IF;
    SELECT array_agg(e::text::bigint ORDER BY n) INTO ids
    FROM jsonb_array_elements(body->'ids') WITH ORDINALITY AS a(e, n);

    IF coalesce(cardinality(ids), 0)
           <> (SELECT count(DISTINCT x) FROM unnest(ids) AS x)
       OR (SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}')
           FROM rentals.property_images AS x WHERE x.property_id = p.id)
          IS DISTINCT FROM
          (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(ids) AS x)
    THEN
        PERFORM app.bad_field('ids', 'ids must name every image of the '
                              'property exactly once.');
    END IF;

    UPDATE rentals.property_images AS x
    SET position = o.n - 1
    FROM unnest(ids) WITH ORDINALITY AS o(id, n)
    WHERE x.id = o.id AND x.property_id = p.id;

    RETURN json_build_object('images', rentals.images_json(p.id));
END
$$;

-- DELETE /api/owner/properties/{id}/images/{image}: 204-like
-- {"deleted": true}.  The file stays (another row may name it; the sweep
-- of docs/media.md removes files no row names).
CREATE OR REPLACE FUNCTION api.owner_image_delete(user_id bigint,
                                                  property_id bigint,
                                                  image_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id, true);
BEGIN
    DELETE FROM rentals.property_images AS x
    WHERE x.id = image_id AND x.property_id = p.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such image.' USING ERRCODE = 'PT404';
    END IF;
    RETURN json_build_object('deleted', true);
END
$$;


-- ---------------------------------------------------------------------
-- Mail templates
-- ---------------------------------------------------------------------

INSERT INTO jobs.mail_templates (name, subject, text, html)
VALUES (
    'rentals_signup',
    'Confirm your rentals site {{business_name}}',
    E'Hello,\n\n'
    || E'confirm your address to create "{{business_name}}" (your site '
    || E'will be /b/{{slug}}/) with this link:\n\n{{link}}\n\n'
    || E'It works once and expires in {{expires_minutes}} minutes.  If you '
    || E'did not sign up, ignore this message.\n',
    E'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello,</p>\n<p>confirm your address to create '
    || E'<b>{{business_name}}</b> (your site will be /b/{{slug}}/):</p>\n'
    || E'<p><a href="{{link}}">Create my site</a></p>\n'
    || E'<p>It works once and expires in {{expires_minutes}} minutes.  If '
    || E'you did not sign up, ignore this message.</p>\n</body></html>\n'
), (
    'rentals_owner_invite',
    'You are now an owner of {{business_name}}',
    E'Hello,\n\n'
    || E'you were added as an owner of "{{business_name}}".  Sign in with '
    || E'this link:\n\n{{link}}\n\n'
    || E'It works once and expires in {{expires_minutes}} minutes; later, '
    || E'sign in with this address on the sign-in page.\n',
    E'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello,</p>\n<p>you were added as an owner of '
    || E'<b>{{business_name}}</b>.</p>\n'
    || E'<p><a href="{{link}}">Sign in</a></p>\n'
    || E'<p>It works once and expires in {{expires_minutes}} minutes; '
    || E'later, sign in with this address on the sign-in page.</p>\n'
    || E'</body></html>\n'
)
ON CONFLICT (name) DO NOTHING;


-- ---------------------------------------------------------------------
-- Files the media sweep must keep (docs/media.md): property images too
-- ---------------------------------------------------------------------

SELECT app.patch_function('maintenance.media_names()',
    'SELECT DISTINCT m.name FROM app.media AS m ORDER BY 1;',
    'SELECT m.name FROM app.media AS m UNION '
    'SELECT i.name FROM rentals.property_images AS i ORDER BY 1;');


-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rentals FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    rentals.current_business(), rentals.enter(bigint),
    rentals.valid_slug(text), rentals.json_email_opt(jsonb, text),
    rentals.json_hhmm(jsonb, text),
    rentals.property_apply(rentals.properties, jsonb),
    rentals.image_json(rentals.property_images),
    rentals.images_json(bigint),
    rentals.property_json(rentals.properties, boolean),
    rentals.owner_property(bigint, boolean),
    rentals.business_json(bigint),
    rentals.add_owner(text, text, text, text, int, int)
    TO rentals_tenant;

GRANT EXECUTE ON FUNCTION
    app.bad_field(text, text), app.check_fields(jsonb, text[]),
    app.json_text(jsonb, text, int, int), app.json_int(jsonb, text, int),
    app.json_email(jsonb, text), app.valid_email(text), app.currencies(),
    platform.set_status(int), platform.set_header(text, text)
    TO rentals_tenant;

-- app.valid_email asks jobs.valid_address (a pure function).
GRANT USAGE ON SCHEMA jobs TO rentals_tenant;
GRANT EXECUTE ON FUNCTION jobs.valid_address(text) TO rentals_tenant;

-- rentals.business_json reads the owners' addresses.
GRANT USAGE ON SCHEMA auth TO rentals_tenant;
GRANT SELECT (id, email) ON auth.users TO rentals_tenant;

-- The owner endpoints run as rentals_tenant (row-level security).
ALTER FUNCTION api.owner_business_get(bigint) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_business_update(bigint, jsonb)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_invite(bigint, jsonb, text, text, text, int, int)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_properties(bigint) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_property_create(bigint, jsonb)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_property_get(bigint, bigint)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_property_update(bigint, bigint, jsonb)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_image_add(bigint, bigint, text, text, bigint, int,
                                   int) OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_images_order(bigint, bigint, jsonb)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_image_delete(bigint, bigint, bigint)
    OWNER TO rentals_tenant;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api TO platform_app;
