-- 017_rentals_bookings.sql - holiday rentals (issue 7), part 2: bookings
-- that cannot overlap, the public site API, guests' magic links and
-- payment through Stripe Checkout.  docs/rentals.md tells the story.
--
--   GET  /api/b/{slug}                                   api.rentals_site
--   GET  /api/b/{slug}/properties/{id}?from=&to=         api.rentals_property
--   GET  /api/b/{slug}/properties/{id}/quote?check_in=&check_out=&guests=
--   POST /api/b/{slug}/properties/{id}/bookings          api.rentals_book
--        -> the stay is held at once (the exclusion constraint decides
--           between concurrent guests), a magic link goes to the guest;
--           confirming it (api.auth_confirm, patched below) gives a
--           session and starts the Checkout Session (`call` job); the
--           webhook (app.checkout_paid / app.checkout_unpaid, patched below
--           to hand sessions with metadata kind=booking to rentals.*)
--           confirms it; a keyed `sql` job expires the hold
--   GET  /api/me/bookings, GET /api/bookings/{id}         guests
--   GET  /api/owner/bookings?property=&from=&to=&status=  owners
--   POST /api/owner/properties/{id}/bookings              manual booking/block
--   POST /api/owner/bookings/{id}/cancel
--   DELETE /api/owner/properties/{id}
--
-- Tenant isolation as in 016: owner endpoints run as rentals_tenant under
-- row-level security; the rest are SECURITY DEFINER functions of the
-- migrating role that filter explicitly.

CREATE EXTENSION IF NOT EXISTS btree_gist;


-- ---------------------------------------------------------------------
-- Table
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS rentals.bookings (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id         bigint NOT NULL,
    property_id         bigint NOT NULL,
    -- [check-in day, check-out day): the check-out day is free for the
    -- next guest.  Dates are the property's local days.
    stay                daterange NOT NULL
                        CONSTRAINT bookings_stay_check
                        CHECK (NOT isempty(stay) AND lower_inc(stay)
                               AND NOT upper_inc(stay)
                               AND NOT lower_inf(stay)
                               AND NOT upper_inf(stay)),
    nights              int GENERATED ALWAYS AS
                        (upper(stay) - lower(stay)) STORED,
    status              text NOT NULL
                        CONSTRAINT bookings_status_check
                        CHECK (status IN ('held', 'confirmed', 'cancelled',
                                          'expired')),
    -- where it came from; channels (a later migration) add rows with
    -- their source and the channel's id for the reservation
    source              text NOT NULL DEFAULT 'direct'
                        CONSTRAINT bookings_source_check
                        CHECK (source IN ('direct', 'airbnb', 'booking_com',
                                          'manual')),
    external_id         text CHECK (length(external_id) <= 255),
    -- 'block': dates closed without a guest (owner, iCal import)
    kind                text NOT NULL DEFAULT 'booking'
                        CHECK (kind IN ('booking', 'block')),
    guest_user_id       bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    guest_name          text CHECK (length(guest_name) <= 200),
    guest_email         text CHECK (length(guest_email) <= 254),
    guests              int CHECK (guests BETWEEN 1 AND 100),
    note                text CHECK (length(note) <= 2000),
    amount_minor        int CHECK (amount_minor >= 0),
    currency            text,
    hold_expires_at     timestamptz,
    -- the public address of the site, for Stripe's return URLs and mails
    base_url            text,
    checkout_session_id text,
    checkout_url        text,
    payment_intent      text,
    paid_at             timestamptz,
    refund_id           text,
    error               text,
    created_by          bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    confirmed_at        timestamptz,
    cancelled_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    FOREIGN KEY (business_id, property_id)
        REFERENCES rentals.properties (business_id, id) ON DELETE CASCADE,

    -- Overlapping stays of one property cannot both be held or confirmed,
    -- whoever writes them (guests, owners, channels), however concurrent.
    CONSTRAINT bookings_no_overlap
        EXCLUDE USING gist (property_id WITH =, stay WITH &&)
        WHERE (status IN ('held', 'confirmed')),

    -- a channel's reservation is one row (idempotent imports)
    CONSTRAINT bookings_external_key UNIQUE (property_id, source, external_id)
);

CREATE INDEX IF NOT EXISTS bookings_business_stay_idx
    ON rentals.bookings USING gist (business_id, stay);
CREATE INDEX IF NOT EXISTS bookings_guest_email_idx
    ON rentals.bookings (guest_email);
CREATE INDEX IF NOT EXISTS bookings_guest_user_idx
    ON rentals.bookings (guest_user_id);
CREATE INDEX IF NOT EXISTS bookings_checkout_session_idx
    ON rentals.bookings (checkout_session_id);

REVOKE ALL ON rentals.bookings FROM PUBLIC, platform_app;
GRANT SELECT, INSERT, UPDATE ON rentals.bookings TO rentals_tenant;

ALTER TABLE rentals.bookings ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant ON rentals.bookings;
CREATE POLICY tenant ON rentals.bookings TO rentals_tenant
    USING (business_id = rentals.current_business())
    WITH CHECK (business_id = rentals.current_business());


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- A date given as text (query argument or JSON string): YYYY-MM-DD, else
-- 400 naming the field.  NULL stays NULL.
CREATE OR REPLACE FUNCTION rentals.parse_date(value text, field text)
RETURNS date
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d date;
BEGIN
    IF value IS NULL OR value = '' THEN
        RETURN NULL;
    END IF;
    IF value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        PERFORM app.bad_field(field, field || ' must be a date '
                                     '(YYYY-MM-DD).');
    END IF;
    BEGIN
        d := value::date;
    EXCEPTION WHEN data_exception THEN
        PERFORM app.bad_field(field, field || ' is not a valid date.');
    END;
    RETURN d;
END
$$;

-- The property's today (its time zone).
CREATE OR REPLACE FUNCTION rentals.today(p rentals.properties)
RETURNS date
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (now() AT TIME ZONE p.time_zone)::date;
$$;

-- Checks a guest's stay (check_in, check_out, guests as sent) against the
-- property and prices it; 400 naming the field.  Returns the quote:
-- {"property_id", "check_in", "check_out", "nights", "guests",
--  "nightly_minor", "nights_minor", "cleaning_fee_minor", "total_minor",
--  "currency", "available"}.
CREATE OR REPLACE FUNCTION rentals.quote(p rentals.properties,
                                         check_in_text text,
                                         check_out_text text,
                                         guests_text text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_in     date := rentals.parse_date(check_in_text, 'check_in');
    v_out    date := rentals.parse_date(check_out_text, 'check_out');
    v_guests int;
    v_nights int;
BEGIN
    IF v_in IS NULL THEN
        PERFORM app.bad_field('check_in', 'check_in is required.');
    END IF;
    IF v_out IS NULL THEN
        PERFORM app.bad_field('check_out', 'check_out is required.');
    END IF;
    IF v_in < rentals.today(p) THEN
        PERFORM app.bad_field('check_in', 'check_in is in the past.');
    END IF;
    IF v_out <= v_in THEN
        PERFORM app.bad_field('check_out', 'check_out must be after '
                                           'check_in.');
    END IF;
    v_nights := v_out - v_in;
    IF v_nights < p.min_nights THEN
        PERFORM app.bad_field('check_out', 'The stay must be at least '
            || p.min_nights || ' night' || CASE WHEN p.min_nights > 1
                                                THEN 's' ELSE '' END
            || ' long.');
    END IF;
    IF v_nights > 365 THEN
        PERFORM app.bad_field('check_out', 'A stay is at most 365 nights.');
    END IF;
    IF v_in > rentals.today(p) + 730 THEN
        PERFORM app.bad_field('check_in', 'Bookings open two years ahead.');
    END IF;

    IF guests_text IS NULL OR guests_text = '' THEN
        v_guests := 1;
    ELSIF guests_text !~ '^[0-9]{1,4}$' OR guests_text::int < 1 THEN
        PERFORM app.bad_field('guests', 'guests must be a whole number of '
                                        'at least 1.');
    ELSE
        v_guests := guests_text::int;
    END IF;
    IF v_guests > p.capacity THEN
        PERFORM app.bad_field('guests', p.name || ' sleeps at most '
                                        || p.capacity || '.');
    END IF;

    RETURN jsonb_build_object(
        'property_id', p.id,
        'check_in', v_in, 'check_out', v_out, 'nights', v_nights,
        'guests', v_guests,
        'nightly_minor', p.price_minor,
        'nights_minor', v_nights::bigint * p.price_minor,
        'cleaning_fee_minor', p.cleaning_fee_minor,
        'total_minor', v_nights::bigint * p.price_minor
                       + p.cleaning_fee_minor,
        'currency', p.currency,
        'available', NOT EXISTS (
            SELECT 1 FROM rentals.bookings AS b
            WHERE b.property_id = p.id
              AND (b.status = 'confirmed'
                   OR b.status = 'held' AND b.hold_expires_at > now())
              AND b.stay && daterange(v_in, v_out)));
END
$$;

-- The published property of a business by its public slug; 404 else.
CREATE OR REPLACE FUNCTION rentals.public_property(slug text,
                                                   property_id bigint)
RETURNS rentals.properties
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p rentals.properties;
BEGIN
    SELECT x.* INTO p
    FROM rentals.properties AS x
    JOIN rentals.businesses AS b ON b.id = x.business_id
    WHERE b.slug = public_property.slug AND x.id = public_property.property_id;
    IF p.id IS NULL THEN
        RAISE EXCEPTION 'No such property.' USING ERRCODE = 'PT404';
    END IF;
    RETURN p;
END
$$;

-- The sentence a guest reads about a booking.
CREATE OR REPLACE FUNCTION rentals.booking_message(b rentals.bookings)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE b.status
        WHEN 'held' THEN
            CASE WHEN b.guest_user_id IS NULL
                 THEN 'Your dates are held: confirm your address with the '
                      'link we emailed you, then pay to confirm the booking.'
                 ELSE 'Your dates are held until '
                      || to_char(b.hold_expires_at AT TIME ZONE 'UTC',
                                 'HH24:MI') || ' UTC. Complete the payment '
                      || 'to confirm the booking.' END
        WHEN 'confirmed' THEN 'Your booking is confirmed.'
        WHEN 'expired' THEN coalesce(b.error, 'The hold ran out and the '
                                     'dates were given back.')
        ELSE coalesce(b.error, 'This booking was cancelled.') END;
$$;

-- A booking as its guest sees it (owner: also the owner's fields).
CREATE OR REPLACE FUNCTION rentals.booking_json(b rentals.bookings,
                                                private boolean DEFAULT false)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (jsonb_build_object(
        'id', b.id, 'status', b.status,
        'message', rentals.booking_message(b),
        'property', jsonb_build_object('id', p.id, 'name', p.name,
                                       'check_in_time',
                                       to_char(p.check_in_time, 'HH24:MI'),
                                       'check_out_time',
                                       to_char(p.check_out_time, 'HH24:MI'),
                                       'time_zone', p.time_zone),
        'business', jsonb_build_object('slug', s.slug, 'name', s.name),
        'check_in', lower(b.stay), 'check_out', upper(b.stay),
        'nights', b.nights, 'guests', b.guests,
        'guest_name', b.guest_name, 'guest_email', b.guest_email,
        'amount_minor', b.amount_minor, 'currency', b.currency,
        'hold_expires_at', CASE WHEN b.status = 'held'
                                THEN b.hold_expires_at END,
        'checkout_url', CASE WHEN b.status = 'held' THEN b.checkout_url END,
        'error', b.error, 'created_at', b.created_at)
        || CASE WHEN private THEN jsonb_build_object(
               'source', b.source, 'external_id', b.external_id,
               'kind', b.kind, 'note', b.note, 'paid_at', b.paid_at,
               'payment_intent', b.payment_intent,
               'refund_id', b.refund_id, 'confirmed_at', b.confirmed_at,
               'cancelled_at', b.cancelled_at, 'updated_at', b.updated_at)
           ELSE '{}'::jsonb END)::json
    FROM rentals.properties AS p
    JOIN rentals.businesses AS s ON s.id = p.business_id
    WHERE p.id = b.property_id;
$$;

CREATE OR REPLACE FUNCTION rentals.booking_url(b rentals.bookings)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rtrim(b.base_url, '/') || '/b/' || s.slug || '/booking.html?id='
           || b.id
    FROM rentals.businesses AS s WHERE s.id = b.business_id;
$$;


-- ---------------------------------------------------------------------
-- Stripe (call jobs, as 008; service "stripe" of nginx.conf)
-- ---------------------------------------------------------------------

-- The Checkout Session of a held booking: the total to the business's
-- connected account when it has one (destination charge), else to the
-- platform's.  metadata[kind]=booking routes the webhook here.
CREATE OR REPLACE FUNCTION rentals.stripe_checkout(b rentals.bookings)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p    rentals.properties;
    acc  text;
    url  text := rentals.booking_url(b);
    form jsonb;
BEGIN
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id;
    SELECT s.stripe_account INTO acc FROM rentals.businesses AS s
    WHERE s.id = b.business_id;

    form := jsonb_build_object(
        'mode', 'payment',
        'line_items[0][price_data][currency]', lower(b.currency),
        'line_items[0][price_data][unit_amount]', b.amount_minor,
        'line_items[0][price_data][product_data][name]',
            left(p.name || ', ' || to_char(lower(b.stay), 'YYYY-MM-DD')
                 || ' to ' || to_char(upper(b.stay), 'YYYY-MM-DD')
                 || ' (' || b.nights || ' nights)', 250),
        'line_items[0][quantity]', 1,
        'payment_intent_data[metadata][booking_id]', b.id::text,
        'customer_email', b.guest_email,
        'client_reference_id', 'booking-' || b.id,
        'metadata[kind]', 'booking',
        'metadata[booking_id]', b.id::text,
        'success_url', url || '&session_id={CHECKOUT_SESSION_ID}',
        'cancel_url', url || '&cancelled=1',
        'expires_at', floor(extract(epoch FROM
                          greatest(b.hold_expires_at,
                                   now() + interval '40 minutes')))::bigint);
    IF acc IS NOT NULL THEN
        form := form || jsonb_build_object(
            'payment_intent_data[transfer_data][destination]', acc);
    END IF;

    RETURN app.stripe_call('/v1/checkout/sessions', form,
                           'booking-checkout-' || b.id,
                           'booking_checkout_created',
                           jsonb_build_object('booking_id', b.id));
END
$$;

CREATE OR REPLACE FUNCTION rentals.stripe_expire(b rentals.bookings)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.stripe_call('/v1/checkout/sessions/' || b.checkout_session_id
                           || '/expire', '{}'::jsonb,
                           'expire-' || b.checkout_session_id,
                           'stripe_checkout_expired',
                           jsonb_build_object('booking_id', b.id))
    WHERE b.checkout_session_id IS NOT NULL;
$$;

CREATE OR REPLACE FUNCTION rentals.stripe_refund(b rentals.bookings)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.stripe_call('/v1/refunds',
               jsonb_build_object('payment_intent', b.payment_intent,
                                  'metadata[booking_id]', b.id::text)
               || CASE WHEN EXISTS (SELECT 1 FROM rentals.businesses AS s
                                    WHERE s.id = b.business_id
                                      AND s.stripe_account IS NOT NULL)
                       THEN '{"reverse_transfer": true}'::jsonb
                       ELSE '{}'::jsonb END,
               'booking-refund-' || b.id, 'booking_refund_created',
               jsonb_build_object('booking_id', b.id))
    WHERE b.payment_intent IS NOT NULL AND b.refund_id IS NULL;
$$;

CREATE OR REPLACE FUNCTION callbacks.booking_checkout_created(context jsonb,
                                                              status int,
                                                              response text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b       rentals.bookings;
    session jsonb;
BEGIN
    SELECT * INTO b FROM rentals.bookings AS x
    WHERE x.id = (context->>'booking_id')::bigint FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF status BETWEEN 200 AND 299 THEN
        BEGIN
            session := response::jsonb;
        EXCEPTION WHEN data_exception THEN
            session := NULL;
        END;
    END IF;

    IF jsonb_typeof(session->'id') = 'string'
       AND jsonb_typeof(session->'url') = 'string' THEN
        UPDATE rentals.bookings AS x
        SET checkout_session_id = session->>'id',
            checkout_url = session->>'url',
            payment_intent = coalesce(session->>'payment_intent',
                                      x.payment_intent),
            updated_at = now()
        WHERE x.id = b.id
        RETURNING * INTO b;
        IF b.status <> 'held' THEN
            PERFORM rentals.stripe_expire(b);
        END IF;
        RETURN;
    END IF;

    IF b.status = 'held' THEN
        UPDATE rentals.bookings AS x
        SET status = 'cancelled', cancelled_at = now(), updated_at = now(),
            error = 'The payment could not be started. Please try again '
                    'in a few minutes.'
        WHERE x.id = b.id;
        PERFORM jobs.cancel('booking-hold:' || b.id);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION callbacks.booking_refund_created(context jsonb,
                                                            status int,
                                                            response text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb;
BEGIN
    IF status BETWEEN 200 AND 299 THEN
        BEGIN
            r := response::jsonb;
        EXCEPTION WHEN data_exception THEN
            r := NULL;
        END;
    END IF;
    UPDATE rentals.bookings AS x
    SET refund_id = CASE WHEN jsonb_typeof(r->'id') = 'string'
                         THEN r->>'id' ELSE x.refund_id END,
        error = CASE WHEN jsonb_typeof(r->'id') = 'string' THEN x.error
                     ELSE concat_ws(' ', x.error, 'The refund failed: '
                                    'handle it in the Stripe dashboard.') END,
        updated_at = now()
    WHERE x.id = (context->>'booking_id')::bigint;
END
$$;


-- ---------------------------------------------------------------------
-- Holding, confirming, releasing
-- ---------------------------------------------------------------------

-- The guest proved the address (or was signed in as it): the booking is
-- theirs and its Checkout Session is asked for.
CREATE OR REPLACE FUNCTION rentals.booking_start_payment(booking_id bigint,
                                                         user_id bigint)
RETURNS rentals.bookings
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b rentals.bookings;
BEGIN
    UPDATE rentals.bookings AS x
    SET guest_user_id = booking_start_payment.user_id, updated_at = now()
    WHERE x.id = booking_id AND x.status = 'held'
      AND x.checkout_session_id IS NULL
    RETURNING * INTO b;
    IF FOUND THEN
        PERFORM rentals.stripe_checkout(b);
    END IF;
    RETURN b;
END
$$;

-- Paid: confirmed, the hold job cancelled, the guest mailed.
CREATE OR REPLACE FUNCTION rentals.booking_confirmed(b rentals.bookings)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p rentals.properties;
    s rentals.businesses;
BEGIN
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id;
    SELECT * INTO s FROM rentals.businesses AS x WHERE x.id = b.business_id;
    PERFORM jobs.cancel('booking-hold:' || b.id);
    IF b.guest_email IS NOT NULL THEN
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', b.guest_email,
            'subject', 'Booking confirmed: ' || p.name || ', '
                       || to_char(lower(b.stay), 'DD Mon YYYY'),
            'text', 'Hello ' || coalesce(b.guest_name, '') || E',\n\n'
                || 'your stay at "' || p.name || '" (' || s.name
                || ') is confirmed.' || E'\n\n'
                || '  Check-in:  ' || to_char(lower(b.stay), 'FMDay DD Month YYYY')
                || ' from ' || to_char(p.check_in_time, 'HH24:MI') || E'\n'
                || '  Check-out: ' || to_char(upper(b.stay), 'FMDay DD Month YYYY')
                || ' by ' || to_char(p.check_out_time, 'HH24:MI') || E'\n'
                || '  Guests:    ' || coalesce(b.guests, 1) || E'\n'
                || '  Paid:      ' || app.money(b.amount_minor, b.currency)
                || E'\n  Address:   ' || p.address || E'\n\n'
                || 'Your booking: ' || coalesce(rentals.booking_url(b), '')
                || E'\n'));
    END IF;
END
$$;

-- SQL job 'booking-hold:<id>' at hold_expires_at: dates still held are
-- given back (expired) and the Checkout Session expired.
CREATE OR REPLACE FUNCTION maintenance.booking_hold_expire(args jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b rentals.bookings;
BEGIN
    UPDATE rentals.bookings AS x
    SET status = 'expired', updated_at = now(),
        error = 'The time to pay ran out and the dates were given back. '
                'Please book again.'
    WHERE x.id = (args->>'booking_id')::bigint AND x.status = 'held'
      AND x.hold_expires_at <= now()
    RETURNING * INTO b;
    IF FOUND THEN
        PERFORM rentals.stripe_expire(b);
    END IF;
END
$$;

-- Webhook: a booking's Checkout Session paid.  A hold already given back
-- takes its dates again if they are still free; otherwise the payment is
-- refunded and the booking says why.
CREATE OR REPLACE FUNCTION rentals.checkout_paid(session jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b rentals.bookings;
BEGIN
    SELECT * INTO b FROM rentals.bookings AS x
    WHERE x.checkout_session_id = session->>'id' FOR UPDATE;
    IF NOT FOUND AND session->'metadata'->>'booking_id' ~ '^[0-9]{1,18}$' THEN
        SELECT * INTO b FROM rentals.bookings AS x
        WHERE x.id = (session->'metadata'->>'booking_id')::bigint
          AND x.checkout_session_id IS NULL
        FOR UPDATE;
    END IF;
    IF b.id IS NULL THEN
        RETURN 'unknown session';
    END IF;

    UPDATE rentals.bookings AS x
    SET checkout_session_id = session->>'id',
        payment_intent = coalesce(session->>'payment_intent',
                                  x.payment_intent),
        paid_at = coalesce(x.paid_at, now()),
        amount_minor = CASE WHEN jsonb_typeof(session->'amount_total')
                                 = 'number'
                            THEN (session->>'amount_total')::int
                            ELSE x.amount_minor END,
        updated_at = now()
    WHERE x.id = b.id
    RETURNING * INTO b;

    IF b.status = 'confirmed' THEN
        RETURN 'already confirmed';
    END IF;

    IF b.status = 'held' THEN
        UPDATE rentals.bookings AS x
        SET status = 'confirmed', confirmed_at = now(), error = NULL
        WHERE x.id = b.id
        RETURNING * INTO b;
        PERFORM rentals.booking_confirmed(b);
        RETURN 'confirmed';
    END IF;

    IF b.status = 'expired' AND upper(b.stay) > current_date THEN
        BEGIN
            UPDATE rentals.bookings AS x
            SET status = 'confirmed', confirmed_at = now(), error = NULL
            WHERE x.id = b.id
            RETURNING * INTO b;
            PERFORM rentals.booking_confirmed(b);
            RETURN 'confirmed late';
        EXCEPTION WHEN exclusion_violation THEN
            NULL;
        END;
    END IF;

    UPDATE rentals.bookings AS x
    SET error = 'Your payment arrived after the dates were given back to '
                'someone else, so it is refunded in full.',
        updated_at = now()
    WHERE x.id = b.id
    RETURNING * INTO b;
    PERFORM rentals.stripe_refund(b);
    RETURN 'refunded';
END
$$;

-- Webhook: a booking's Checkout Session ended unpaid: the hold goes.
CREATE OR REPLACE FUNCTION rentals.checkout_unpaid(session jsonb,
                                                   error text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b rentals.bookings;
BEGIN
    UPDATE rentals.bookings AS x
    SET status = 'expired', error = checkout_unpaid.error, updated_at = now()
    WHERE x.checkout_session_id = session->>'id' AND x.status = 'held'
    RETURNING * INTO b;
    IF FOUND THEN
        PERFORM jobs.cancel('booking-hold:' || b.id);
        RETURN 'released';
    END IF;
    RETURN 'not held';
END
$$;

-- Sessions of bookings (metadata kind=booking) go to the functions above;
-- the registration code of 008 stays as it was for everything else.
SELECT app.patch_function('app.checkout_paid(jsonb)',
$old$BEGIN
    SELECT * INTO r FROM app.registrations AS x
    WHERE x.checkout_session_id = session->>'id';
$old$,
$new$BEGIN
    IF session->'metadata'->>'kind' = 'booking' THEN
        RETURN rentals.checkout_paid(session);
    END IF;

    SELECT * INTO r FROM app.registrations AS x
    WHERE x.checkout_session_id = session->>'id';
$new$);

SELECT app.patch_function('app.checkout_unpaid(jsonb, text, text)',
$old$BEGIN
    SELECT x.id INTO v_id FROM app.registrations AS x
$old$,
$new$BEGIN
    IF session->'metadata'->>'kind' = 'booking' THEN
        RETURN rentals.checkout_unpaid(session, error);
    END IF;

    SELECT x.id INTO v_id FROM app.registrations AS x
$new$);


-- ---------------------------------------------------------------------
-- Confirming a magic link: sign-ups and guests' bookings
-- ---------------------------------------------------------------------

-- Called by api.auth_confirm once the address is proven: its pending
-- sign-ups (of the last day) create their business, its held bookings
-- not yet attached to an account start their payment.  Returns
-- {"bookings": [...], "business": {...} | null}.
CREATE OR REPLACE FUNCTION rentals.on_confirm(user_id bigint, email text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id   bigint;
    v_b    bigint;
    made   bigint;
    list   jsonb := '[]';
    b      rentals.bookings;
BEGIN
    FOR v_id IN SELECT s.id FROM rentals.signups AS s
                WHERE s.email = on_confirm.email AND s.status = 'pending'
                  AND s.created_at > now() - interval '1 day'
                ORDER BY s.id
    LOOP
        made := rentals.signup_complete(v_id, user_id);
        v_b := coalesce(v_b, made);
    END LOOP;

    FOR v_id IN SELECT x.id FROM rentals.bookings AS x
                WHERE x.guest_email = on_confirm.email
                  AND x.guest_user_id IS NULL AND x.status = 'held'
                  AND x.source = 'direct'
                ORDER BY x.id
    LOOP
        b := rentals.booking_start_payment(v_id, user_id);
        list := list || jsonb_build_array(rentals.booking_json(b)::jsonb);
    END LOOP;

    RETURN jsonb_build_object('bookings', list,
                              'business', rentals.business_json(v_b));
END
$$;

SELECT app.patch_function(
    'api.auth_confirm(jsonb, text, text, integer)',
$old$    regs := app.registrations_confirm_pending($old$,
$new$    res := res || rentals.on_confirm((res->'user'->>'id')::bigint,
                                     res->'user'->>'email');

    regs := app.registrations_confirm_pending($new$);


-- ---------------------------------------------------------------------
-- Public site
-- ---------------------------------------------------------------------

-- GET /api/b/{slug}: {"business": {"slug", "name"}, "properties": [...]}.
CREATE OR REPLACE FUNCTION api.rentals_site(slug text)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s rentals.businesses;
BEGIN
    SELECT * INTO s FROM rentals.businesses AS x WHERE x.slug = rentals_site.slug;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such site.' USING ERRCODE = 'PT404';
    END IF;
    RETURN json_build_object(
        'business', json_build_object('slug', s.slug, 'name', s.name),
        'properties', (SELECT coalesce(json_agg(
                                  rentals.property_json(p, false)
                                  ORDER BY p.id), '[]')
                       FROM rentals.properties AS p
                       WHERE p.business_id = s.id));
END
$$;

-- GET /api/b/{slug}/properties/{id}?from=YYYY-MM-DD&to=YYYY-MM-DD: the
-- property with its photos and the stays taken between from (default: the
-- first of this month) and to (default: three months later; at most 400
-- days): "availability": {"from", "to", "booked": [{"check_in",
-- "check_out"}]} (check_out is free again).
CREATE OR REPLACE FUNCTION api.rentals_property(slug text, property_id bigint,
                                                from_text text DEFAULT NULL,
                                                to_text text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p      rentals.properties := rentals.public_property(slug, property_id);
    v_from date := rentals.parse_date(from_text, 'from');
    v_to   date := rentals.parse_date(to_text, 'to');
BEGIN
    v_from := coalesce(v_from, date_trunc('month', rentals.today(p))::date);
    v_to := coalesce(v_to, (v_from + interval '3 months')::date);
    IF v_to <= v_from THEN
        PERFORM app.bad_field('to', 'to must be after from.');
    END IF;
    IF v_to - v_from > 400 THEN
        PERFORM app.bad_field('to', 'Ask for at most 400 days at a time.');
    END IF;

    RETURN (rentals.property_json(p, false)::jsonb || jsonb_build_object(
        'business', (SELECT jsonb_build_object('slug', s.slug, 'name', s.name)
                     FROM rentals.businesses AS s WHERE s.id = p.business_id),
        'availability', jsonb_build_object(
            'from', v_from, 'to', v_to,
            'booked', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                  'check_in', lower(b.stay),
                                  'check_out', upper(b.stay))
                              ORDER BY lower(b.stay)), '[]')
                       FROM rentals.bookings AS b
                       WHERE b.property_id = p.id
                         AND (b.status = 'confirmed'
                              OR b.status = 'held'
                                 AND b.hold_expires_at > now())
                         AND b.stay && daterange(v_from, v_to)))))::json;
END
$$;

-- GET /api/b/{slug}/properties/{id}/quote?check_in=&check_out=&guests=
CREATE OR REPLACE FUNCTION api.rentals_quote(slug text, property_id bigint,
                                             check_in text, check_out text,
                                             guests text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN rentals.quote(rentals.public_property(slug, property_id),
                         check_in, check_out, guests)::json;
END
$$;

-- POST /api/b/{slug}/properties/{id}/bookings (platform_auth optional),
-- body {"email", "name", "check_in", "check_out", "guests"}.  The dates
-- are held at once for hold_seconds (409 "These dates are not available."
-- naming check_in when they are taken, however concurrent the requests:
-- the exclusion constraint decides).  Signed in as that address: 201
-- {"status": "held", "link_sent": false, "booking"} and the Checkout
-- Session is on its way
-- (the booking page polls GET /api/bookings/{id} for checkout_url).
-- Otherwise 202 {"status": "held", "link_sent": true, "booking"} and a
-- magic link to the
-- address (template rentals_booking_link) returning to the booking page;
-- confirming it starts the payment.  400 names the field, 404 an unknown
-- property, 429 past the link limits (the hold is given back).
CREATE OR REPLACE FUNCTION api.rentals_book(slug text, property_id bigint,
                                            body jsonb, user_id bigint,
                                            token text, client_ip text,
                                            base_url text,
                                            hold_seconds int DEFAULT 1800,
                                            per_email int DEFAULT 5,
                                            per_ip int DEFAULT 20)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       rentals.properties := rentals.public_property(slug, property_id);
    q       jsonb;
    v_email text;
    v_name  text;
    v_me    text;
    b       rentals.bookings;
    res     json;
BEGIN
    IF token IS NULL OR token !~ '^[A-Za-z0-9_-]{43}$'
       OR base_url IS NULL OR base_url !~ '^https?://'
       OR coalesce(hold_seconds, 0) NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'booking is not configured correctly'
            USING ERRCODE = 'PT500';
    END IF;

    PERFORM app.check_fields(body, ARRAY['email', 'name', 'check_in',
                                         'check_out', 'guests']);
    IF body ? 'check_in' AND jsonb_typeof(body->'check_in') <> 'string' THEN
        PERFORM app.bad_field('check_in', 'check_in must be a date '
                                          '(YYYY-MM-DD).');
    END IF;
    IF body ? 'check_out' AND jsonb_typeof(body->'check_out') <> 'string' THEN
        PERFORM app.bad_field('check_out', 'check_out must be a date '
                                           '(YYYY-MM-DD).');
    END IF;
    IF body ? 'guests' AND jsonb_typeof(body->'guests') <> 'number' THEN
        PERFORM app.bad_field('guests', 'guests must be a whole number of '
                                        'at least 1.');
    END IF;
    q := rentals.quote(p, body->>'check_in', body->>'check_out',
                       body->>'guests');
    v_email := app.json_email(body, 'email');
    v_name := app.json_text(body, 'name', 200, 1);
    IF v_name ~ '[[:cntrl:]]' THEN
        PERFORM app.bad_field('name', 'name may not contain control '
                                      'characters.');
    END IF;

    -- Holds whose job has not run yet (runner busy or down) end here.
    PERFORM maintenance.booking_hold_expire(
                jsonb_build_object('booking_id', x.id))
    FROM rentals.bookings AS x
    WHERE x.property_id = p.id AND x.status = 'held'
      AND x.hold_expires_at <= now()
      AND x.stay && daterange((q->>'check_in')::date,
                              (q->>'check_out')::date);
    IF EXISTS (SELECT 1 FROM rentals.bookings AS x
               WHERE x.property_id = p.id
                 AND x.status IN ('held', 'confirmed')
                 AND x.stay && daterange((q->>'check_in')::date,
                                         (q->>'check_out')::date)) THEN
        RAISE EXCEPTION 'These dates are not available.'
            USING ERRCODE = 'PT409', DETAIL = 'field: check_in';
    END IF;

    BEGIN
        INSERT INTO rentals.bookings (business_id, property_id, stay, status,
            source, guest_name, guest_email, guests, amount_minor, currency,
            hold_expires_at, base_url)
        VALUES (p.business_id, p.id,
                daterange((q->>'check_in')::date, (q->>'check_out')::date),
                'held', 'direct', v_name, v_email, (q->>'guests')::int,
                (q->>'total_minor')::int, p.currency,
                now() + hold_seconds * interval '1 second',
                rtrim(base_url, '/'))
        RETURNING * INTO b;
    EXCEPTION WHEN exclusion_violation THEN
        RAISE EXCEPTION 'These dates are not available.'
            USING ERRCODE = 'PT409', DETAIL = 'field: check_in';
    END;

    PERFORM jobs.enqueue('sql', jsonb_build_object(
                'function', 'booking_hold_expire',
                'args', jsonb_build_object('booking_id', b.id)),
            run_at => b.hold_expires_at, key => 'booking-hold:' || b.id);

    SELECT u.email INTO v_me FROM auth.users AS u
    WHERE u.id = rentals_book.user_id;
    IF v_me = v_email THEN
        b := rentals.booking_start_payment(b.id, user_id);
        PERFORM platform.set_status(201);
        RETURN json_build_object('status', 'held', 'link_sent', false,
                                 'booking', rentals.booking_json(b));
    END IF;

    res := auth.send_link(v_email, token, auth.to_inet(client_ip), base_url,
                          '/b/' || slug || '/booking.html?id=' || b.id, NULL,
                          'rentals_booking_link',
                          jsonb_build_object(
                              'name', v_name, 'property', p.name,
                              'check_in', q->>'check_in',
                              'check_out', q->>'check_out',
                              'total', app.money((q->>'total_minor')::int,
                                                 p.currency)),
                          ttl_seconds => least(900, hold_seconds),
                          per_email => per_email, per_ip => per_ip);
    IF res IS NOT NULL THEN
        -- nothing was sent: the dates go back at once
        UPDATE rentals.bookings AS x
        SET status = 'cancelled', cancelled_at = now(),
            error = 'Too many links were requested.'
        WHERE x.id = b.id;
        PERFORM jobs.cancel('booking-hold:' || b.id);
        RETURN res;
    END IF;

    PERFORM platform.set_status(202);
    RETURN json_build_object('status', 'held', 'link_sent', true,
                             'booking', rentals.booking_json(b));
END
$$;


-- ---------------------------------------------------------------------
-- Guests
-- ---------------------------------------------------------------------

-- GET /api/me/bookings (platform_auth any): the caller's bookings (by
-- account, or by address while the link is not confirmed), upcoming
-- first, then past: {"upcoming": [...], "past": [...]}.
CREATE OR REPLACE FUNCTION api.my_bookings(user_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email text;
BEGIN
    SELECT u.email INTO v_email FROM auth.users AS u
    WHERE u.id = my_bookings.user_id;
    IF v_email IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    RETURN (
        WITH mine AS (
            SELECT b.* FROM rentals.bookings AS b
            WHERE b.kind = 'booking'
              AND (b.guest_user_id = my_bookings.user_id
                   OR b.guest_user_id IS NULL AND b.guest_email = v_email)
        )
        SELECT json_build_object(
            'upcoming', (SELECT coalesce(json_agg(rentals.booking_json(m)
                                                  ORDER BY lower(m.stay), m.id),
                                         '[]')
                         FROM mine AS m WHERE upper(m.stay) >= current_date),
            'past', (SELECT coalesce(json_agg(rentals.booking_json(m)
                                              ORDER BY lower(m.stay) DESC,
                                                       m.id DESC), '[]')
                     FROM mine AS m WHERE upper(m.stay) < current_date)));
END
$$;

-- GET /api/bookings/{id} (platform_auth any): the caller's own booking.
CREATE OR REPLACE FUNCTION api.booking_get(user_id bigint, booking_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b rentals.bookings;
BEGIN
    SELECT x.* INTO b FROM rentals.bookings AS x
    JOIN auth.users AS u ON u.id = booking_get.user_id
    WHERE x.id = booking_get.booking_id AND x.kind = 'booking'
      AND (x.guest_user_id = u.id
           OR x.guest_user_id IS NULL AND x.guest_email = u.email);
    IF b.id IS NULL THEN
        RAISE EXCEPTION 'No such booking.' USING ERRCODE = 'PT404';
    END IF;
    RETURN rentals.booking_json(b);
END
$$;


-- ---------------------------------------------------------------------
-- Owners (SECURITY DEFINER owned by rentals_tenant: RLS applies)
-- ---------------------------------------------------------------------

-- GET /api/owner/bookings?property=&from=&to=&status=: the business's
-- bookings and blocks whose stay meets [from, to) (default: from today,
-- no end), of one property if given, of one status if given (default:
-- held and confirmed), by check-in.  {"bookings": [...]} (owner's view).
CREATE OR REPLACE FUNCTION api.owner_bookings(user_id bigint,
                                              property text DEFAULT NULL,
                                              from_text text DEFAULT NULL,
                                              to_text text DEFAULT NULL,
                                              status text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b      bigint := rentals.enter(user_id);
    v_prop   bigint;
    v_from   date := rentals.parse_date(from_text, 'from');
    v_to     date := rentals.parse_date(to_text, 'to');
    v_status text[] := ARRAY['held', 'confirmed'];
BEGIN
    IF property IS NOT NULL AND property <> '' THEN
        IF property !~ '^[0-9]{1,18}$' THEN
            PERFORM app.bad_field('property', 'property must be a property '
                                              'id.');
        END IF;
        v_prop := (rentals.owner_property(property::bigint)).id;
    END IF;
    IF status IS NOT NULL AND status <> '' THEN
        IF status = 'all' THEN
            v_status := ARRAY['held', 'confirmed', 'cancelled', 'expired'];
        ELSIF status IN ('held', 'confirmed', 'cancelled', 'expired') THEN
            v_status := ARRAY[status];
        ELSE
            PERFORM app.bad_field('status', 'status must be held, confirmed, '
                                  'cancelled, expired or all.');
        END IF;
    END IF;
    IF v_from IS NOT NULL AND v_to IS NOT NULL AND v_to <= v_from THEN
        PERFORM app.bad_field('to', 'to must be after from.');
    END IF;

    RETURN json_build_object('bookings', (
        SELECT coalesce(json_agg(rentals.booking_json(b, true)
                                 ORDER BY lower(b.stay), b.id), '[]')
        FROM rentals.bookings AS b
        WHERE (v_prop IS NULL OR b.property_id = v_prop)
          AND b.status = ANY (v_status)
          AND b.stay && daterange(coalesce(v_from, current_date), v_to)));
END
$$;

-- POST /api/owner/properties/{id}/bookings: a booking the owner takes
-- (phone, a channel not connected yet) or a block, confirmed at once.
-- body {"check_in", "check_out", "kind": "booking"|"block" (default
-- booking), "source": "manual"|"airbnb"|"booking_com" (default manual),
-- "external_id"?, "guest_name"?, "guest_email"?, "guests"?, "note"?}.
-- 201 with the booking; 409 naming check_in when the dates are taken.
-- No minimum stay, capacity or price here: the owner decides.
CREATE OR REPLACE FUNCTION api.owner_booking_create(user_id bigint,
                                                    property_id bigint,
                                                    body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b      bigint := rentals.enter(user_id);
    p        rentals.properties := rentals.owner_property(property_id);
    v_in     date;
    v_out    date;
    v_kind   text := 'booking';
    v_source text := 'manual';
    v_guests int;
    b        rentals.bookings;
BEGIN
    PERFORM app.check_fields(body, ARRAY['check_in', 'check_out', 'kind',
        'source', 'external_id', 'guest_name', 'guest_email', 'guests',
        'note']);
    IF jsonb_typeof(body->'check_in') IS DISTINCT FROM 'string' THEN
        PERFORM app.bad_field('check_in', 'check_in must be a date '
                                          '(YYYY-MM-DD).');
    END IF;
    IF jsonb_typeof(body->'check_out') IS DISTINCT FROM 'string' THEN
        PERFORM app.bad_field('check_out', 'check_out must be a date '
                                           '(YYYY-MM-DD).');
    END IF;
    v_in := rentals.parse_date(body->>'check_in', 'check_in');
    v_out := rentals.parse_date(body->>'check_out', 'check_out');
    IF v_out <= v_in THEN
        PERFORM app.bad_field('check_out', 'check_out must be after '
                                           'check_in.');
    END IF;
    IF v_out <= rentals.today(p) THEN
        PERFORM app.bad_field('check_out', 'check_out is in the past.');
    END IF;
    IF v_out - v_in > 731 THEN
        PERFORM app.bad_field('check_out', 'At most two years at a time.');
    END IF;
    IF body ? 'kind' THEN
        IF body->>'kind' NOT IN ('booking', 'block')
           OR jsonb_typeof(body->'kind') <> 'string' THEN
            PERFORM app.bad_field('kind', 'kind must be booking or block.');
        END IF;
        v_kind := body->>'kind';
    END IF;
    IF body ? 'source' THEN
        IF body->>'source' NOT IN ('manual', 'airbnb', 'booking_com')
           OR jsonb_typeof(body->'source') <> 'string' THEN
            PERFORM app.bad_field('source', 'source must be manual, airbnb '
                                            'or booking_com.');
        END IF;
        v_source := body->>'source';
    END IF;
    IF body ? 'guests' AND body->'guests' <> 'null'::jsonb THEN
        v_guests := app.json_int(body, 'guests', 1);
        IF v_guests > 100 THEN
            PERFORM app.bad_field('guests', 'guests must be at most 100.');
        END IF;
    END IF;

    BEGIN
        INSERT INTO rentals.bookings (business_id, property_id, stay, status,
            source, external_id, kind, guest_name, guest_email, guests, note,
            created_by, confirmed_at)
        VALUES (v_b, p.id, daterange(v_in, v_out), 'confirmed', v_source,
                CASE WHEN body ? 'external_id'
                     THEN nullif(app.json_text(body, 'external_id', 255), '')
                     END,
                v_kind,
                CASE WHEN body ? 'guest_name'
                     THEN nullif(app.json_text(body, 'guest_name', 200), '')
                     END,
                rentals.json_email_opt(body, 'guest_email'), v_guests,
                CASE WHEN body ? 'note'
                     THEN nullif(app.json_text(body, 'note', 2000), '') END,
                user_id, now())
        RETURNING * INTO b;
    EXCEPTION
        WHEN exclusion_violation THEN
            RAISE EXCEPTION 'These dates are not available.'
                USING ERRCODE = 'PT409', DETAIL = 'field: check_in';
        WHEN unique_violation THEN
            RAISE EXCEPTION 'A booking with this external_id exists.'
                USING ERRCODE = 'PT409', DETAIL = 'field: external_id';
    END;

    PERFORM platform.set_status(201);
    RETURN rentals.booking_json(b, true);
END
$$;

-- The side effects of an owner's cancellation (SECURITY DEFINER of the
-- migrating role: jobs and Stripe): the hold job goes, an open Checkout
-- Session is expired, a payment refunded, the guest mailed.
CREATE OR REPLACE FUNCTION rentals.booking_cancelled(booking_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b rentals.bookings;
    p rentals.properties;
BEGIN
    SELECT * INTO b FROM rentals.bookings AS x
    WHERE x.id = booking_id AND x.business_id = rentals.current_business()
      AND x.status = 'cancelled';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO p FROM rentals.properties AS x WHERE x.id = b.property_id;
    PERFORM jobs.cancel('booking-hold:' || b.id);
    IF b.paid_at IS NULL THEN
        PERFORM rentals.stripe_expire(b);
    ELSE
        PERFORM rentals.stripe_refund(b);
    END IF;
    IF b.guest_email IS NOT NULL AND b.source = 'direct' THEN
        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', b.guest_email,
            'subject', 'Booking cancelled: ' || p.name,
            'text', 'Hello ' || coalesce(b.guest_name, '') || E',\n\n'
                || 'your stay at "' || p.name || '" from '
                || to_char(lower(b.stay), 'DD Mon YYYY') || ' to '
                || to_char(upper(b.stay), 'DD Mon YYYY')
                || ' was cancelled by the owner.'
                || CASE WHEN b.paid_at IS NOT NULL
                        THEN E'\n\nYour payment is refunded in full.'
                        ELSE '' END || E'\n'));
    END IF;
END
$$;

-- POST /api/owner/bookings/{id}/cancel: held or confirmed -> cancelled
-- (the dates are free again).  A second call changes nothing.
CREATE OR REPLACE FUNCTION api.owner_booking_cancel(user_id bigint,
                                                    booking_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    b   rentals.bookings;
BEGIN
    SELECT * INTO b FROM rentals.bookings AS x
    WHERE x.id = owner_booking_cancel.booking_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such booking.' USING ERRCODE = 'PT404';
    END IF;
    IF b.status IN ('held', 'confirmed') THEN
        UPDATE rentals.bookings AS x
        SET status = 'cancelled', cancelled_at = now(), updated_at = now(),
            error = 'This booking was cancelled by the owner.'
        WHERE x.id = b.id
        RETURNING * INTO b;
        PERFORM rentals.booking_cancelled(b.id);
    END IF;
    RETURN rentals.booking_json(b, true);
END
$$;

-- DELETE /api/owner/properties/{id}: 409 while it has stays to come
-- (cancel them first); its past bookings and images go with it.
CREATE OR REPLACE FUNCTION api.owner_property_delete(user_id bigint,
                                                     property_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_b bigint := rentals.enter(user_id);
    p   rentals.properties := rentals.owner_property(property_id, true);
BEGIN
    IF EXISTS (SELECT 1 FROM rentals.bookings AS b
               WHERE b.property_id = p.id
                 AND b.status IN ('held', 'confirmed')
                 AND upper(b.stay) > rentals.today(p)) THEN
        RAISE EXCEPTION 'This property has bookings to come: cancel them '
                        'first.' USING ERRCODE = 'PT409';
    END IF;
    DELETE FROM rentals.properties AS x WHERE x.id = p.id;
    RETURN json_build_object('deleted', true, 'id', p.id);
END
$$;


-- ---------------------------------------------------------------------
-- Mail template
-- ---------------------------------------------------------------------

INSERT INTO jobs.mail_templates (name, subject, text, html)
VALUES (
    'rentals_booking_link',
    'Confirm your booking at {{property}}',
    E'Hello {{name}},\n\n'
    || E'your dates at "{{property}}", {{check_in}} to {{check_out}} '
    || E'({{total}}), are held for you.  Confirm your address with this '
    || E'link to pay and confirm the booking:\n\n{{link}}\n\n'
    || E'It works once and expires in {{expires_minutes}} minutes.  If you '
    || E'did not ask for this, ignore this message: the dates are given '
    || E'back by themselves.\n',
    E'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello {{name}},</p>\n<p>your dates at <b>{{property}}</b>, '
    || E'{{check_in}} to {{check_out}} ({{total}}), are held for you.</p>\n'
    || E'<p><a href="{{link}}">Confirm and pay</a></p>\n'
    || E'<p>It works once and expires in {{expires_minutes}} minutes.  If '
    || E'you did not ask for this, ignore this message: the dates are '
    || E'given back by themselves.</p>\n</body></html>\n'
)
ON CONFLICT (name) DO NOTHING;


-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rentals FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION maintenance.booking_hold_expire(jsonb),
    callbacks.booking_checkout_created(jsonb, int, text),
    callbacks.booking_refund_created(jsonb, int, text)
    FROM PUBLIC, platform_app;

GRANT EXECUTE ON FUNCTION
    rentals.parse_date(text, text), rentals.today(rentals.properties),
    rentals.booking_message(rentals.bookings),
    rentals.booking_json(rentals.bookings, boolean),
    rentals.booking_cancelled(bigint)
    TO rentals_tenant;
GRANT EXECUTE ON FUNCTION app.money(int, text) TO rentals_tenant;

ALTER FUNCTION api.owner_bookings(bigint, text, text, text, text)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_booking_create(bigint, bigint, jsonb)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_booking_cancel(bigint, bigint)
    OWNER TO rentals_tenant;
ALTER FUNCTION api.owner_property_delete(bigint, bigint)
    OWNER TO rentals_tenant;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api TO platform_app;
