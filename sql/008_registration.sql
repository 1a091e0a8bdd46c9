-- 008_registration.sql - registration, tickets and payment through Stripe
-- (issue 4): the functions that fill the tables of 006.  docs/payments.md
-- tells the story; docs/api.md lists the endpoints.
--
--   POST /api/events/{id}/registrations   api.registration_create
--        -> pending registration, consent recorded, magic link mailed
--   POST /api/auth/confirm                 api.auth_confirm (replaced here)
--        -> signs in (auth.confirm_link, the former api.auth_confirm) and
--           confirms every pending registration of the address:
--           free: ticket issued (or sold_out); paid: place held, a `call`
--           job creates the Stripe Checkout Session, an `sql` job releases
--           the hold when it runs out
--   POST /api/stripe/webhook               api.stripe_webhook
--        -> each event id once: completed/async succeeded issue the
--           ticket, expired/async failed release the hold
--   GET  /api/registrations/{id}, /api/me/tickets, /api/tickets/{code}/event.ics
--   POST /api/tickets/{code}/cancel, /api/orgs/{org}/events/{id}/cancel
--   GET  /api/orgs/{org}/events/{id}/registrations, PUT /api/orgs/{org}/stripe
--
-- Counting places: app.take_ticket (005) is the only way a place is taken
-- (one UPDATE with sold < quantity, so concurrent takers cannot oversell);
-- app.release_place gives one back.  A place is counted while its
-- registration is held or issued (its ticket valid), never otherwise.
--
-- Errors as in 005: bad input is 22023 with DETAIL 'field: <name>',
-- someone else's event or registration is PT404, a state that forbids the
-- request is PT409 with a sentence.


-- ---------------------------------------------------------------------
-- Columns added to 006's tables
-- ---------------------------------------------------------------------

-- What the registration needs later, when no nginx.conf argument is at
-- hand (webhooks, jobs): how long a paid place is held and the public
-- address of the site for links in mails and Stripe's return URLs.
ALTER TABLE app.registrations ADD COLUMN IF NOT EXISTS hold_seconds int;
ALTER TABLE app.registrations ADD COLUMN IF NOT EXISTS base_url text;
ALTER TABLE app.registrations ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;
ALTER TABLE app.registrations ADD COLUMN IF NOT EXISTS paid_at timestamptz;
-- Refunds (event cancelled by the organiser, or paid after the place was
-- gone): Stripe's refund id once it answered.
ALTER TABLE app.registrations ADD COLUMN IF NOT EXISTS refund_id text;
ALTER TABLE app.registrations ADD COLUMN IF NOT EXISTS refunded_at timestamptz;
ALTER TABLE app.tickets ADD COLUMN IF NOT EXISTS cancelled_at timestamptz;
ALTER TABLE app.events ADD COLUMN IF NOT EXISTS cancelled_at timestamptz;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'registrations_hold_seconds_check'
                     AND conrelid = 'app.registrations'::regclass) THEN
        ALTER TABLE app.registrations ADD CONSTRAINT
            registrations_hold_seconds_check
            CHECK (hold_seconds IS NULL OR hold_seconds BETWEEN 1 AND 86400);
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS registrations_email_idx
    ON app.registrations (email, event_id);
CREATE INDEX IF NOT EXISTS registrations_payment_intent_idx
    ON app.registrations (payment_intent) WHERE payment_intent IS NOT NULL;
CREATE INDEX IF NOT EXISTS tickets_event_id_idx
    ON app.tickets (event_id, status);

-- Functions the jobs runner calls back with the answer of a `call` job
-- (sql/007_jobs_calls.sql makes the schema; repeated here harmlessly).
CREATE SCHEMA IF NOT EXISTS callbacks;


-- ---------------------------------------------------------------------
-- Mail templates
-- ---------------------------------------------------------------------

INSERT INTO jobs.mail_templates (name, subject, text, html)
VALUES (
    'registration_link',
    'Confirm your registration for {{event_title}}',
    E'Hello {{name}},\n\n'
    || E'please confirm your registration for "{{event_title}}" '
    || E'({{ticket_type}}), on {{starts_local}}, with this link:\n\n'
    || E'{{link}}\n\n'
    || E'It works once and expires in {{expires_minutes}} minutes.  If you '
    || E'did not register, ignore this message: nothing happens without '
    || E'the link.\n',
    E'<!DOCTYPE html>\n'
    || E'<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello {{name}},</p>\n'
    || E'<p>please confirm your registration for <b>{{event_title}}</b> '
    || E'({{ticket_type}}), on {{starts_local}}:</p>\n'
    || E'<p><a href="{{link}}">Confirm my registration</a></p>\n'
    || E'<p>It works once and expires in {{expires_minutes}} minutes.  If '
    || E'you did not register, ignore this message: nothing happens '
    || E'without the link.</p>\n'
    || E'</body></html>\n'
), (
    'ticket_confirmation',
    'Your ticket for {{event_title}}',
    E'Hello {{name}},\n\n'
    || E'your ticket for "{{event_title}}" is confirmed.\n\n'
    || E'  Ticket:  {{ticket_type}}\n'
    || E'  Starts:  {{starts_local}}\n'
    || E'  Ends:    {{ends_local}}\n'
    || E'  Time zone: {{time_zone}}\n'
    || E'  Ticket code: {{code}}\n\n'
    || E'Add it to your calendar: {{ics_link}}\n'
    || E'Your tickets and upcoming events: {{my_events_link}}\n',
    E'<!DOCTYPE html>\n'
    || E'<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello {{name}},</p>\n'
    || E'<p>your ticket for <b>{{event_title}}</b> is confirmed.</p>\n'
    || E'<table>\n'
    || E'<tr><td>Ticket</td><td>{{ticket_type}}</td></tr>\n'
    || E'<tr><td>Starts</td><td>{{starts_local}}</td></tr>\n'
    || E'<tr><td>Ends</td><td>{{ends_local}}</td></tr>\n'
    || E'<tr><td>Time zone</td><td>{{time_zone}}</td></tr>\n'
    || E'<tr><td>Ticket code</td><td>{{code}}</td></tr>\n'
    || E'</table>\n'
    || E'<p><a href="{{ics_link}}">Add to my calendar</a> &middot; '
    || E'<a href="{{my_events_link}}">My tickets and upcoming events</a></p>\n'
    || E'</body></html>\n'
), (
    'event_cancelled',
    'Cancelled: {{event_title}}',
    E'Hello {{name}},\n\n'
    || E'"{{event_title}}" ({{starts_local}}) was cancelled by its '
    || E'organiser and your ticket is no longer valid.\n\n'
    || E'{{refund_note}}\n',
    E'<!DOCTYPE html>\n'
    || E'<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello {{name}},</p>\n'
    || E'<p><b>{{event_title}}</b> ({{starts_local}}) was cancelled by its '
    || E'organiser and your ticket is no longer valid.</p>\n'
    || E'<p>{{refund_note}}</p>\n'
    || E'</body></html>\n'
)
ON CONFLICT (name) DO NOTHING;


-- ---------------------------------------------------------------------
-- Magic links shared by sign-in and registration
-- ---------------------------------------------------------------------

-- Rate-limits, stores and mails one magic link, as api.auth_request_link
-- (003) does, with the mail template and variables of the caller ("link"
-- and "expires_minutes" are added).  Returns NULL once the link is sent,
-- or, past the limits, the 429 answer (status and Retry-After are set:
-- return it as is, do not raise).  Nothing is counted for a refused
-- request.  The caller has checked the email, token and base_url.
CREATE OR REPLACE FUNCTION auth.send_link(email text, token text,
                                          client_ip inet, base_url text,
                                          return_path text,
                                          consent_version text,
                                          template text, vars jsonb,
                                          ttl_seconds int DEFAULT 900,
                                          per_email int DEFAULT 5,
                                          per_ip int DEFAULT 20,
                                          window_seconds int DEFAULT 900)
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ttl    int := coalesce(ttl_seconds, 900);
    v_window int := coalesce(window_seconds, 900);
    retry    int;
BEGIN
    retry := greatest(
        auth.rate_retry_after('link_email', email, per_email, v_window),
        auth.rate_retry_after('link_ip', host(client_ip), per_ip, v_window));

    IF retry IS NOT NULL THEN
        RETURN auth.too_many(retry,
            'Too many links were requested for this address. Please wait '
            || auth.wait_words(retry) || ' and try again.');
    END IF;

    PERFORM auth.rate_hit('link_email', email);
    PERFORM auth.rate_hit('link_ip', host(client_ip));

    INSERT INTO auth.magic_links (token_hash, email, consent_version,
                                  return_path, client_ip, expires_at)
    VALUES (sha256(convert_to(token, 'UTF8')), email, consent_version,
            return_path, client_ip, now() + v_ttl * interval '1 second');

    PERFORM jobs.enqueue('mail', jsonb_build_object(
        'to', email,
        'template', template,
        'vars', coalesce(vars, '{}'::jsonb) || jsonb_build_object(
            'link', rtrim(base_url, '/') || '/confirm.html#token=' || token,
            'expires_minutes', ceil(v_ttl / 60.0)::int)));

    RETURN NULL;
END
$$;


-- ---------------------------------------------------------------------
-- Helpers (schema app; not callable by nginx)
-- ---------------------------------------------------------------------

-- An email address from the body, lower-cased, with the syntax
-- api.auth_request_link accepts (<input type=email>, a dot in the domain,
-- at most 64 characters before "@"); 22023 naming the field otherwise.
CREATE OR REPLACE FUNCTION app.json_email(body jsonb, field text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
BEGIN
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'string'
       OR btrim(body->>field) = '' THEN
        PERFORM app.bad_field(field, 'Please enter your email address.');
    END IF;
    v := lower(btrim(body->>field));
    IF length(v) > 254
       OR v !~ ('^[a-z0-9.!#$%&''*+/=?^_`{|}~-]{1,64}@[a-z0-9]'
                '([a-z0-9-]{0,61}[a-z0-9])?'
                '(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$')
    THEN
        PERFORM app.bad_field(field, 'This does not look like an email '
                                     'address: check it for typing mistakes.');
    END IF;
    RETURN v;
END
$$;

-- A time as people read it where the event happens:
-- "Monday 10 March 2031, 10:00 (Europe/Paris)".
CREATE OR REPLACE FUNCTION app.local_time(ts timestamptz, time_zone text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(ts AT TIME ZONE time_zone, 'FMDay FMDD FMMonth YYYY, HH24:MI')
           || ' (' || time_zone || ')';
$$;

-- "12.50 EUR"
CREATE OR REPLACE FUNCTION app.money(amount_minor int, currency text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN coalesce(amount_minor, 0) = 0 THEN 'free'
                WHEN currency = 'JPY' THEN amount_minor || ' JPY'
                ELSE to_char(amount_minor / 100.0, 'FM999999990.00') || ' '
                     || currency
           END;
$$;

-- One place of the ticket type back (a hold released, a ticket cancelled).
CREATE OR REPLACE FUNCTION app.release_place(ticket_type_id bigint)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE app.ticket_types AS x
    SET sold = x.sold - 1
    WHERE x.id = release_place.ticket_type_id AND x.sold > 0;
$$;

-- Where a registration page and the participant's ticket list live.
CREATE OR REPLACE FUNCTION app.registration_url(base_url text, id bigint)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(rtrim(base_url, '/'), '') || '/registration.html?id=' || id;
$$;

CREATE OR REPLACE FUNCTION app.ics_path(code text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '/api/tickets/' || code || '/event.ics';
$$;

-- The sentence a participant reads about a registration's state.
CREATE OR REPLACE FUNCTION app.registration_message(r app.registrations,
                                                    event_title text,
                                                    ticket_type text,
                                                    time_zone text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE r.status
        WHEN 'pending' THEN
            'Check your mailbox: we sent a link to ' || r.email
            || ' to confirm your registration.'
        WHEN 'held' THEN
            CASE WHEN r.checkout_url IS NULL
                 THEN 'Your place is held. The payment page is being '
                      'prepared, one moment please.'
                 ELSE 'Your place is held until '
                      || to_char(r.hold_expires_at AT TIME ZONE time_zone,
                                 'HH24:MI')
                      || ' (' || time_zone || '). Complete the payment to '
                      'get your ticket.'
            END
        WHEN 'issued' THEN
            'Your ticket for "' || event_title || '" is confirmed.'
        WHEN 'sold_out' THEN
            coalesce(r.error, 'Sorry, "' || ticket_type || '" for "'
                              || event_title || '" is sold out.')
        WHEN 'cancelled' THEN
            coalesce(r.error, 'This registration was cancelled.')
        ELSE
            coalesce(r.error, CASE r.status
                WHEN 'expired' THEN 'This registration has expired.'
                ELSE 'This registration failed.' END)
    END;
$$;

-- A registration as its participant (and the organiser) sees it.
CREATE OR REPLACE FUNCTION app.registration_json(registration_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', r.id,
        'event_id', r.event_id,
        'status', r.status,
        'message', app.registration_message(r, e.title, t.name, e.time_zone),
        'email', r.email,
        'name', r.name,
        'event', json_build_object(
            'id', e.id, 'title', e.title, 'status', e.status,
            'starts_at', e.starts_at, 'ends_at', e.ends_at,
            'time_zone', e.time_zone),
        'ticket_type', json_build_object(
            'id', t.id, 'name', t.name, 'price_minor', t.price_minor,
            'currency', t.currency),
        'amount_minor', coalesce(r.amount_minor, t.price_minor),
        'currency', coalesce(r.currency, t.currency),
        'hold_expires_at', CASE WHEN r.status = 'held'
                                THEN r.hold_expires_at END,
        'checkout_url', CASE WHEN r.status = 'held' THEN r.checkout_url END,
        'ticket', (SELECT json_build_object(
                              'code', k.code, 'status', k.status,
                              'ics_url', app.ics_path(k.code))
                   FROM app.tickets AS k
                   WHERE k.registration_id = r.id),
        'error', CASE WHEN r.status IN ('failed', 'expired', 'sold_out',
                                        'cancelled') THEN r.error END,
        'refunded', r.refunded_at IS NOT NULL,
        'terms_version', r.terms_version,
        'consent_version', r.consent_version,
        'accepted_at', r.accepted_at,
        'created_at', r.created_at,
        'updated_at', r.updated_at)
    FROM app.registrations AS r
    JOIN app.events AS e ON e.id = r.event_id
    JOIN app.ticket_types AS t ON t.id = r.ticket_type_id
    WHERE r.id = registration_json.registration_id;
$$;


-- ---------------------------------------------------------------------
-- Stripe through the jobs runner (`call` jobs, sql/007_jobs_calls.sql)
-- ---------------------------------------------------------------------

-- A call to the Stripe API: the runner sends the form to the service
-- "stripe" of nginx.conf (platform_jobs_service: base URL and secret
-- key), then calls callbacks.<callback>(context, status, response).
CREATE OR REPLACE FUNCTION app.stripe_call(path text, form jsonb,
                                           idempotency_key text,
                                           callback text, context jsonb)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jobs.enqueue('call', jsonb_build_object(
        'service', 'stripe',
        'method', 'POST',
        'path', path,
        'form', form,
        'headers', jsonb_build_object('Idempotency-Key', idempotency_key),
        'callback', callback,
        'context', context));
$$;

-- Creates the Checkout Session of a held registration: a destination
-- charge (the whole price goes to the organiser's connected account, no
-- application fee).  Stripe refuses an expires_at less than 30 minutes
-- after the call, which retries may delay: the session is asked to last
-- 40 minutes at least, and so may outlive the hold.  The hold's end
-- expires it (app.release_hold), and a payment that still gets through
-- is handled by the webhook (app.checkout_paid).
CREATE OR REPLACE FUNCTION app.stripe_checkout(r app.registrations)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e   app.events;
    t   app.ticket_types;
    acc text;
    url text := app.registration_url(r.base_url, r.id);
BEGIN
    SELECT * INTO e FROM app.events AS x WHERE x.id = r.event_id;
    SELECT * INTO t FROM app.ticket_types AS x WHERE x.id = r.ticket_type_id;
    SELECT o.stripe_account INTO acc
    FROM app.organisations AS o WHERE o.id = e.organisation_id;

    RETURN app.stripe_call('/v1/checkout/sessions', jsonb_build_object(
        'mode', 'payment',
        'line_items[0][price_data][currency]', lower(r.currency),
        'line_items[0][price_data][unit_amount]', r.amount_minor,
        'line_items[0][price_data][product_data][name]',
            left(e.title || ' - ' || t.name, 250),
        'line_items[0][quantity]', 1,
        'payment_intent_data[transfer_data][destination]', acc,
        'payment_intent_data[metadata][registration_id]', r.id::text,
        'customer_email', r.email,
        'client_reference_id', r.id::text,
        'metadata[registration_id]', r.id::text,
        'metadata[event_id]', r.event_id::text,
        'success_url', url || '&session_id={CHECKOUT_SESSION_ID}',
        'cancel_url', url || '&cancelled=1',
        'expires_at', floor(extract(epoch FROM
                          greatest(r.hold_expires_at,
                                   now() + interval '40 minutes')))::bigint),
        'checkout-' || r.id, 'stripe_checkout_created',
        jsonb_build_object('registration_id', r.id));
END
$$;

-- A refund of the whole payment, the transfer to the organiser reversed.
CREATE OR REPLACE FUNCTION app.stripe_refund(r app.registrations)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.stripe_call('/v1/refunds', jsonb_build_object(
               'payment_intent', r.payment_intent,
               'reverse_transfer', true,
               'metadata[registration_id]', r.id::text),
           'refund-' || r.id, 'stripe_refund_created',
           jsonb_build_object('registration_id', r.id))
    WHERE r.payment_intent IS NOT NULL AND r.refund_id IS NULL;
$$;

-- Nobody can pay any more for a place that was given back.
CREATE OR REPLACE FUNCTION app.stripe_expire(r app.registrations)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.stripe_call('/v1/checkout/sessions/' || r.checkout_session_id
                           || '/expire', '{}'::jsonb,
                           'expire-' || r.checkout_session_id,
                           'stripe_checkout_expired',
                           jsonb_build_object('registration_id', r.id))
    WHERE r.checkout_session_id IS NOT NULL;
$$;


-- ---------------------------------------------------------------------
-- Issuing, holding, releasing
-- ---------------------------------------------------------------------

-- The ticket of a registration whose place is taken (free, or paid):
-- status issued, ticket row, confirmation mail.  Returns the ticket code.
CREATE OR REPLACE FUNCTION app.issue_ticket(registration_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r    app.registrations;
    e    app.events;
    t    app.ticket_types;
    v_code text;
BEGIN
    UPDATE app.registrations AS x
    SET status = 'issued', error = NULL, hold_expires_at = NULL,
        updated_at = now()
    WHERE x.id = issue_ticket.registration_id
    RETURNING * INTO r;

    SELECT * INTO e FROM app.events AS x WHERE x.id = r.event_id;
    SELECT * INTO t FROM app.ticket_types AS x WHERE x.id = r.ticket_type_id;

    INSERT INTO app.tickets (event_id, ticket_type_id, user_id,
                             registration_id)
    VALUES (r.event_id, r.ticket_type_id, r.user_id, r.id)
    RETURNING tickets.code INTO v_code;

    PERFORM jobs.enqueue('mail', jsonb_build_object(
        'to', r.email,
        'template', 'ticket_confirmation',
        'vars', jsonb_build_object(
            'name', r.name,
            'event_title', e.title,
            'ticket_type', t.name || CASE WHEN r.amount_minor > 0
                               THEN ' (' || app.money(r.amount_minor,
                                                      r.currency) || ')'
                               ELSE '' END,
            'starts_local', app.local_time(e.starts_at, e.time_zone),
            'ends_local', app.local_time(e.ends_at, e.time_zone),
            'time_zone', e.time_zone,
            'code', v_code,
            'ics_link', coalesce(rtrim(r.base_url, '/'), '')
                        || app.ics_path(v_code),
            'my_events_link', coalesce(rtrim(r.base_url, '/'), '')
                              || '/my-events.html')));

    RETURN v_code;
END
$$;

-- A held place given back: the registration becomes new_status with the
-- error sentence, the hold job is cancelled, an open Checkout Session is
-- expired at Stripe.  False when it was not held.
CREATE OR REPLACE FUNCTION app.release_hold(registration_id bigint,
                                            new_status text, error text,
                                            expire_session boolean DEFAULT true)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r app.registrations;
BEGIN
    UPDATE app.registrations AS x
    SET status = new_status, error = release_hold.error, updated_at = now()
    WHERE x.id = release_hold.registration_id AND x.status = 'held'
    RETURNING * INTO r;

    IF NOT FOUND THEN
        RETURN false;
    END IF;

    PERFORM app.release_place(r.ticket_type_id);
    PERFORM jobs.cancel('hold:' || r.id);

    IF expire_session THEN
        PERFORM app.stripe_expire(r);
    END IF;

    RETURN true;
END
$$;

-- Confirms one pending registration for a user whose address was proven:
-- free -> issued (or sold_out), paid -> held + Checkout job + hold job (or
-- sold_out); a person who already has a place for the event, or an event
-- closed meanwhile -> failed.  Returns the new status.
CREATE OR REPLACE FUNCTION app.registration_confirm(registration_id bigint,
                                                    user_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r   app.registrations;
    e   app.events;
    t   app.ticket_types;
    v_error text;
BEGIN
    -- The event first (shared with other confirmations), then the
    -- registration: the order an organiser cancelling the event takes
    -- them in (app.org_event's FOR UPDATE, then the registrations), so
    -- one waits for the other and no ticket is issued for an event whose
    -- cancellation has begun.
    SELECT * INTO e FROM app.events AS x
    WHERE x.id = (SELECT y.event_id FROM app.registrations AS y
                  WHERE y.id = registration_confirm.registration_id)
    FOR KEY SHARE;

    SELECT * INTO r FROM app.registrations AS x
    WHERE x.id = registration_confirm.registration_id
    FOR UPDATE;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF r.status <> 'pending' THEN
        RETURN r.status;
    END IF;

    SELECT * INTO t FROM app.ticket_types AS x WHERE x.id = r.ticket_type_id;

    UPDATE app.registrations AS x
    SET user_id = registration_confirm.user_id, confirmed_at = now(),
        updated_at = now()
    WHERE x.id = r.id;

    IF e.status <> 'published' OR e.ends_at <= now() THEN
        v_error := 'Registration for "' || e.title || '" is closed.';
    ELSIF EXISTS (SELECT 1 FROM app.tickets AS k
                  WHERE k.event_id = e.id
                    AND k.user_id = registration_confirm.user_id
                    AND k.status = 'valid')
       OR EXISTS (SELECT 1 FROM app.registrations AS x
                  WHERE x.event_id = e.id AND x.id <> r.id
                    AND x.user_id = registration_confirm.user_id
                    AND x.status = 'held')
    THEN
        v_error := 'You already have a place for "' || e.title || '".';
    ELSIF t.price_minor > 0
          AND (SELECT o.stripe_account FROM app.organisations AS o
               WHERE o.id = e.organisation_id) IS NULL THEN
        v_error := 'Paid tickets for "' || e.title || '" cannot be bought '
                   'at the moment.';
    END IF;

    IF v_error IS NOT NULL THEN
        UPDATE app.registrations AS x
        SET status = 'failed', error = v_error, updated_at = now()
        WHERE x.id = r.id;
        RETURN 'failed';
    END IF;

    IF NOT app.take_ticket(t.id) THEN
        UPDATE app.registrations AS x
        SET status = 'sold_out', updated_at = now(),
            error = 'Sorry, "' || t.name || '" for "' || e.title
                    || '" is sold out.'
        WHERE x.id = r.id;
        RETURN 'sold_out';
    END IF;

    IF t.price_minor = 0 THEN
        UPDATE app.registrations AS x
        SET amount_minor = 0, currency = t.currency
        WHERE x.id = r.id;
        PERFORM app.issue_ticket(r.id);
        RETURN 'issued';
    END IF;

    UPDATE app.registrations AS x
    SET status = 'held', amount_minor = t.price_minor, currency = t.currency,
        hold_expires_at = now() + coalesce(r.hold_seconds, 1800)
                                  * interval '1 second',
        error = NULL, updated_at = now()
    WHERE x.id = r.id
    RETURNING * INTO r;

    PERFORM app.stripe_checkout(r);
    PERFORM jobs.enqueue('sql', jsonb_build_object(
                'function', 'registration_hold_expire',
                'args', jsonb_build_object('registration_id', r.id)),
            run_at => r.hold_expires_at, key => 'hold:' || r.id);

    RETURN 'held';
END
$$;

-- Every pending registration of a proven address (the magic link was
-- confirmed): those of the last day are confirmed in order, older ones
-- have expired.  Returns their JSON, in order.
CREATE OR REPLACE FUNCTION app.registrations_confirm_pending(user_id bigint,
                                                             email text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids   bigint[];
    v_id  bigint;
    v_msg text;
BEGIN
    UPDATE app.registrations AS x
    SET status = 'expired', updated_at = now(),
        error = 'This registration was not confirmed in time. Please '
                'register again.'
    WHERE x.email = registrations_confirm_pending.email
      AND x.status = 'pending'
      AND x.created_at <= now() - interval '1 day';

    SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}') INTO ids
    FROM app.registrations AS x
    WHERE x.email = registrations_confirm_pending.email
      AND x.status = 'pending';

    -- Each in a subtransaction: whatever goes wrong with a registration,
    -- signing in still works (and the registration says it failed).
    FOREACH v_id IN ARRAY ids LOOP
        BEGIN
            PERFORM app.registration_confirm(v_id, user_id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
            RAISE WARNING 'registration % not confirmed: %', v_id, v_msg;
            UPDATE app.registrations AS x
            SET status = 'failed',
                user_id = registrations_confirm_pending.user_id,
                error = 'This registration could not be confirmed. Please '
                        'register again.',
                updated_at = now()
            WHERE x.id = v_id AND x.status = 'pending';
        END;
    END LOOP;

    RETURN (SELECT coalesce(jsonb_agg(app.registration_json(i)::jsonb
                                      ORDER BY i), '[]'::jsonb)
            FROM unnest(ids) AS i);
END
$$;


-- ---------------------------------------------------------------------
-- Calendar files (RFC 5545)
-- ---------------------------------------------------------------------

-- A TEXT value: backslash, semicolon, comma and line breaks escaped.
CREATE OR REPLACE FUNCTION app.ics_text(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT regexp_replace(
               replace(replace(replace(s, '\', '\\'), ';', '\;'), ',', '\,'),
               '\r\n|\r|\n', '\n', 'g');
$$;

-- A content line folded at 75 octets (RFC 5545 3.1): CRLF and a space
-- before the rest, never inside a UTF-8 character.  Ends with CRLF.
CREATE OR REPLACE FUNCTION app.ics_fold(line text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out   text := '';
    used  int := 0;
    room  int := 75;
    ch    text;
    n     int;
BEGIN
    IF octet_length(line) <= 75 THEN
        RETURN line || E'\r\n';
    END IF;

    FOREACH ch IN ARRAY regexp_split_to_array(line, '') LOOP
        n := octet_length(ch);
        IF used + n > room THEN
            out := out || E'\r\n ';
            used := 1;
        END IF;
        out := out || ch;
        used := used + n;
    END LOOP;

    RETURN out || E'\r\n';
END
$$;

-- 20310310T090000Z
CREATE OR REPLACE FUNCTION app.ics_time(ts timestamptz)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"Z"');
$$;

-- The VCALENDAR of one ticket's event.
CREATE OR REPLACE FUNCTION app.ticket_ics(ticket_id bigint, base_url text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.ics_fold('BEGIN:VCALENDAR')
        || app.ics_fold('VERSION:2.0')
        || app.ics_fold('PRODID:-//Platform//Events//EN')
        || app.ics_fold('CALSCALE:GREGORIAN')
        || app.ics_fold('METHOD:PUBLISH')
        || app.ics_fold('BEGIN:VEVENT')
        || app.ics_fold('UID:event-' || e.id || '-ticket-' || k.id || '@'
                        || coalesce(substring(base_url
                                              FROM '^https?://([^/:]+)'),
                                    'platform.invalid'))
        || app.ics_fold('DTSTAMP:' || app.ics_time(now()))
        || app.ics_fold('DTSTART:' || app.ics_time(e.starts_at))
        || app.ics_fold('DTEND:' || app.ics_time(e.ends_at))
        || app.ics_fold('SUMMARY:' || app.ics_text(e.title))
        || app.ics_fold('DESCRIPTION:' || app.ics_text(
               e.description
               || CASE WHEN e.description <> '' THEN E'\n\n' ELSE '' END
               || 'Ticket: ' || t.name || ' (' || k.code || ')'
               || coalesce(E'\nOrganised by ' || o.name, '')))
        || CASE WHEN base_url IS NOT NULL
                THEN app.ics_fold('URL:' || rtrim(base_url, '/')
                                  || '/event.html?id=' || e.id)
                ELSE '' END
        || app.ics_fold('STATUS:' || CASE WHEN e.status = 'cancelled'
                                            OR k.status = 'cancelled'
                                          THEN 'CANCELLED'
                                          ELSE 'CONFIRMED' END)
        || app.ics_fold('END:VEVENT')
        || app.ics_fold('END:VCALENDAR')
    FROM app.tickets AS k
    JOIN app.events AS e ON e.id = k.event_id
    JOIN app.ticket_types AS t ON t.id = k.ticket_type_id
    LEFT JOIN app.organisations AS o ON o.id = e.organisation_id
    WHERE k.id = ticket_ics.ticket_id;
$$;


-- ---------------------------------------------------------------------
-- Jobs: the end of a hold, Stripe's answers
-- ---------------------------------------------------------------------

-- SQL job 'hold:<id>' at hold_expires_at: a place still held is given
-- back (status expired) and its Checkout Session expired.
CREATE OR REPLACE FUNCTION maintenance.registration_hold_expire(args jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint := (args->>'registration_id')::bigint;
BEGIN
    PERFORM 1 FROM app.registrations AS x WHERE x.id = v_id FOR UPDATE;

    PERFORM app.release_hold(x.id, 'expired',
                'The time to pay ran out and the place was given back. '
                'Please register again.')
    FROM app.registrations AS x
    WHERE x.id = v_id AND x.status = 'held' AND x.hold_expires_at <= now();
END
$$;

-- POST /v1/checkout/sessions answered: status 200 -> the session's id and
-- URL are kept (the registration page redirects there); anything else
-- (0: no answer after the last attempt) -> the place is given back and
-- the registration failed.
CREATE OR REPLACE FUNCTION callbacks.stripe_checkout_created(context jsonb,
                                                             status int,
                                                             response text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r       app.registrations;
    session jsonb;
BEGIN
    SELECT * INTO r FROM app.registrations AS x
    WHERE x.id = (context->>'registration_id')::bigint
    FOR UPDATE;

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
       AND jsonb_typeof(session->'url') = 'string'
    THEN
        UPDATE app.registrations AS x
        SET checkout_session_id = session->>'id',
            checkout_url = session->>'url',
            payment_intent = coalesce(session->>'payment_intent',
                                      x.payment_intent),
            updated_at = now()
        WHERE x.id = r.id
        RETURNING * INTO r;

        -- The hold ended (or the event was cancelled) before Stripe
        -- answered: nobody should pay on this session.
        IF r.status <> 'held' THEN
            PERFORM app.stripe_expire(r);
        END IF;
        RETURN;
    END IF;

    PERFORM app.release_hold(r.id, 'failed',
                'The payment could not be started. Please try again in a '
                'few minutes.', false);
END
$$;

-- POST /v1/refunds answered: the refund id is recorded; a failure is
-- recorded in the error for the organiser to see (and handle in Stripe).
CREATE OR REPLACE FUNCTION callbacks.stripe_refund_created(context jsonb,
                                                           status int,
                                                           response text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refund jsonb;
BEGIN
    IF status BETWEEN 200 AND 299 THEN
        BEGIN
            refund := response::jsonb;
        EXCEPTION WHEN data_exception THEN
            refund := NULL;
        END;
    END IF;

    IF jsonb_typeof(refund->'id') = 'string' THEN
        UPDATE app.registrations AS x
        SET refund_id = refund->>'id', refunded_at = now(),
            updated_at = now()
        WHERE x.id = (context->>'registration_id')::bigint;
    ELSE
        UPDATE app.registrations AS x
        SET error = concat_ws(' ', x.error,
                              'The refund failed (Stripe answered '
                              || stripe_refund_created.status
                              || '): refund it in Stripe.'),
            updated_at = now()
        WHERE x.id = (context->>'registration_id')::bigint;
    END IF;
END
$$;

-- POST /v1/checkout/sessions/{id}/expire answered: nothing to record (a
-- session already completed or expired answers 400, and its webhook says
-- what happened).
CREATE OR REPLACE FUNCTION callbacks.stripe_checkout_expired(context jsonb,
                                                             status int,
                                                             response text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NULL;
END
$$;

-- A Checkout Session paid (checkout.session.completed with payment_status
-- paid, or checkout.session.async_payment_succeeded): the ticket is issued.
-- A hold that had already been given back takes a place again; if none is
-- left, or the event was cancelled meanwhile, the payment is refunded and
-- the registration says why.
CREATE OR REPLACE FUNCTION app.checkout_paid(session jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r app.registrations;
    e app.events;
    t app.ticket_types;
BEGIN
    SELECT * INTO r FROM app.registrations AS x
    WHERE x.checkout_session_id = session->>'id';

    -- The callback with the session may not have run yet.
    IF NOT FOUND AND session->'metadata'->>'registration_id' ~ '^[0-9]{1,18}$'
    THEN
        SELECT * INTO r FROM app.registrations AS x
        WHERE x.id = (session->'metadata'->>'registration_id')::bigint
          AND x.checkout_session_id IS NULL;
    END IF;

    IF r.id IS NULL THEN
        RETURN 'unknown session';
    END IF;

    -- The event, then the registration (as app.registration_confirm).
    SELECT * INTO e FROM app.events AS x WHERE x.id = r.event_id
    FOR KEY SHARE;
    SELECT * INTO r FROM app.registrations AS x WHERE x.id = r.id
    FOR UPDATE;

    UPDATE app.registrations AS x
    SET checkout_session_id = session->>'id',
        payment_intent = coalesce(session->>'payment_intent', x.payment_intent),
        paid_at = coalesce(x.paid_at, now()),
        amount_minor = CASE WHEN jsonb_typeof(session->'amount_total')
                                 = 'number'
                            THEN (session->>'amount_total')::int
                            ELSE x.amount_minor END,
        updated_at = now()
    WHERE x.id = r.id
    RETURNING * INTO r;

    SELECT * INTO t FROM app.ticket_types AS x WHERE x.id = r.ticket_type_id;

    IF r.status = 'issued' THEN
        RETURN 'already issued';
    END IF;

    IF r.status = 'held' THEN
        PERFORM jobs.cancel('hold:' || r.id);
        PERFORM app.issue_ticket(r.id);
        RETURN 'issued';
    END IF;

    -- Paid after the hold was given back (or after a cancellation).
    IF r.status IN ('expired', 'failed')
       AND e.status = 'published' AND e.ends_at > now()
       AND NOT EXISTS (SELECT 1 FROM app.tickets AS k
                       WHERE k.event_id = e.id AND k.user_id = r.user_id
                         AND k.status = 'valid')
       AND app.take_ticket(t.id)
    THEN
        PERFORM app.issue_ticket(r.id);
        RETURN 'issued late';
    END IF;

    UPDATE app.registrations AS x
    SET status = CASE WHEN x.status = 'cancelled' THEN 'cancelled'
                      ELSE 'failed' END,
        error = CASE WHEN e.status = 'cancelled'
                     THEN 'The event was cancelled: your payment is '
                          'refunded in full.'
                     ELSE 'Your payment arrived after your place was given '
                          'back and no place is left, so it is refunded '
                          'in full.' END,
        updated_at = now()
    WHERE x.id = r.id
    RETURNING * INTO r;
    PERFORM app.stripe_refund(r);

    RETURN 'refunded';
END
$$;

-- A Checkout Session that ended unpaid (checkout.session.expired,
-- checkout.session.async_payment_failed): the hold is given back.
CREATE OR REPLACE FUNCTION app.checkout_unpaid(session jsonb,
                                               new_status text,
                                               error text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT x.id INTO v_id FROM app.registrations AS x
    WHERE x.checkout_session_id = session->>'id'
    FOR UPDATE;

    IF v_id IS NULL THEN
        RETURN 'unknown session';
    END IF;

    IF app.release_hold(v_id, new_status, error, false) THEN
        RETURN 'released';
    END IF;
    RETURN 'not held';
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: registration (public)
-- ---------------------------------------------------------------------

-- POST /api/events/{id}/registrations (platform_auth optional), wired in
-- conf/api/registration.conf.  body {"ticket_type_id", "email", "name",
-- "accept_terms": true, "gdpr_consent": true}; terms_version and
-- consent_version are the texts the page showed (nginx.conf), recorded
-- with the registration.
--
-- 202 {"status":"pending","registration":{...}}: a link was mailed to the
-- address (the same answer whether or not it has an account or a ticket:
-- those are found out when the link is confirmed).  When the caller is
-- signed in as that address the registration is confirmed at once: 201
-- {"status":"issued"|"held","registration":{...}} or 409 with the error
-- and the registration (sold out, already a place).
-- 400 names the field; 404 an event that is not published; 409 an event
-- ended or cancelled, sales not open, the ticket type sold out; 429 past
-- the link limits (shared with sign-in).
CREATE OR REPLACE FUNCTION api.registration_create(
        event_id bigint, body jsonb, user_id bigint, token text,
        client_ip text, base_url text, terms_version text,
        consent_version text, hold_seconds int DEFAULT 1800,
        per_email int DEFAULT 5, per_ip int DEFAULT 20,
        ttl_seconds int DEFAULT 900)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_base   text := rtrim(base_url, '/');
    v_ip     inet := auth.to_inet(client_ip);
    v_hold   int := coalesce(hold_seconds, 1800);
    v_tt     int;
    v_email  text;
    v_name   text;
    v_user   text;
    e        app.events;
    t        app.ticket_types;
    r        app.registrations;
    limited  json;
    v_status text;
BEGIN
    -- Configuration (nginx.conf), not the client's doing.
    IF token IS NULL OR token !~ '^[A-Za-z0-9_-]{43}$'
       OR v_base IS NULL
       OR v_base !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$'
       OR terms_version IS NULL OR terms_version !~ '^[A-Za-z0-9._:-]{1,64}$'
       OR consent_version IS NULL
       OR consent_version !~ '^[A-Za-z0-9._:-]{1,64}$'
       OR v_hold NOT BETWEEN 1 AND 86400
    THEN
        RAISE EXCEPTION 'registration is not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'check token ($platform_random), base_url, '
                           'terms_version, consent_version, hold_seconds';
    END IF;

    -- The request.
    PERFORM app.check_fields(body, ARRAY['ticket_type_id', 'email', 'name',
                                         'accept_terms', 'gdpr_consent']);
    IF NOT body ? 'ticket_type_id' OR body->'ticket_type_id' = 'null' THEN
        PERFORM app.bad_field('ticket_type_id', 'Choose a ticket type.');
    END IF;
    v_tt := app.json_int(body, 'ticket_type_id', 1);
    v_email := app.json_email(body, 'email');
    IF NOT body ? 'name' THEN
        PERFORM app.bad_field('name', 'Please enter your name.');
    END IF;
    v_name := app.json_text(body, 'name', 200, 1);
    IF v_name ~ '[[:cntrl:]]' THEN
        PERFORM app.bad_field('name', 'name may not contain control '
                                      'characters.');
    END IF;
    IF body->'accept_terms' IS DISTINCT FROM 'true'::jsonb THEN
        PERFORM app.bad_field('accept_terms',
                              'Please accept the terms to register.');
    END IF;
    IF body->'gdpr_consent' IS DISTINCT FROM 'true'::jsonb THEN
        PERFORM app.bad_field('gdpr_consent',
                              'Please agree to the processing of your data '
                              'to register.');
    END IF;

    -- The event and ticket type.  The ticket type's row is not locked:
    -- the place is taken at confirmation (take_ticket), this is an early
    -- answer for the many who would otherwise wait for a link in vain.
    SELECT * INTO e FROM app.events AS x
    WHERE x.id = registration_create.event_id
      AND x.status IN ('published', 'cancelled');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;
    IF e.status = 'cancelled' THEN
        RAISE EXCEPTION 'This event was cancelled.' USING ERRCODE = 'PT409';
    END IF;
    IF e.ends_at <= now() THEN
        RAISE EXCEPTION 'This event has ended.' USING ERRCODE = 'PT409';
    END IF;

    SELECT * INTO t FROM app.ticket_types AS x
    WHERE x.id = v_tt AND x.event_id = e.id;
    IF NOT FOUND THEN
        PERFORM app.bad_field('ticket_type_id',
                              'This event has no such ticket type.');
    END IF;
    IF t.sales_start > now() THEN
        RAISE EXCEPTION 'Sales of "%" open on %.', t.name,
                        app.local_time(t.sales_start, e.time_zone)
            USING ERRCODE = 'PT409';
    END IF;
    IF t.sales_end <= now() THEN
        RAISE EXCEPTION 'Sales of "%" have ended.', t.name
            USING ERRCODE = 'PT409';
    END IF;
    IF t.sold >= t.quantity THEN
        RAISE EXCEPTION 'Sorry, "%" for "%" is sold out.', t.name, e.title
            USING ERRCODE = 'PT409';
    END IF;
    IF t.price_minor > 0
       AND (SELECT o.stripe_account FROM app.organisations AS o
            WHERE o.id = e.organisation_id) IS NULL THEN
        RAISE EXCEPTION 'Paid tickets for this event cannot be bought at '
                        'the moment.' USING ERRCODE = 'PT409';
    END IF;

    -- Signed in as this address: no link needed.
    IF user_id IS NOT NULL THEN
        SELECT u.email INTO v_user FROM auth.users AS u
        WHERE u.id = registration_create.user_id;
    END IF;

    IF v_user = v_email
       AND (EXISTS (SELECT 1 FROM app.tickets AS k
                    WHERE k.event_id = e.id
                      AND k.user_id = registration_create.user_id
                      AND k.status = 'valid')
            OR EXISTS (SELECT 1 FROM app.registrations AS x
                       WHERE x.event_id = e.id
                         AND x.user_id = registration_create.user_id
                         AND x.status = 'held'))
    THEN
        RAISE EXCEPTION 'You already have a place for "%".', e.title
            USING ERRCODE = 'PT409',
                  HINT = 'Your tickets are on the "My tickets" page.';
    END IF;

    -- A new registration replaces one still waiting for its link.
    UPDATE app.registrations AS x
    SET status = 'expired', updated_at = now(),
        error = 'Replaced by a newer registration.'
    WHERE x.email = v_email AND x.event_id = e.id AND x.status = 'pending';

    INSERT INTO app.registrations (event_id, ticket_type_id, email, name,
                                   terms_version, consent_version,
                                   client_ip, amount_minor, currency,
                                   hold_seconds, base_url)
    VALUES (e.id, t.id, v_email, v_name, terms_version, consent_version,
            v_ip, t.price_minor, t.currency, v_hold, v_base)
    RETURNING * INTO r;

    IF v_user = v_email THEN
        -- The same consent record a link would have made.
        IF NOT EXISTS (SELECT 1 FROM auth.consents AS c
                       WHERE c.user_id = registration_create.user_id
                         AND c.text_version = consent_version) THEN
            INSERT INTO auth.consents (user_id, text_version, client_ip)
            VALUES (registration_create.user_id, consent_version, v_ip);
        END IF;

        v_status := app.registration_confirm(r.id, registration_create.user_id);

        IF v_status IN ('issued', 'held') THEN
            PERFORM platform.set_status(201);
            RETURN json_build_object('status', v_status,
                                     'registration', app.registration_json(r.id));
        END IF;

        SELECT * INTO r FROM app.registrations AS x WHERE x.id = r.id;
        PERFORM platform.set_status(409);
        RETURN json_build_object(
            'error', json_build_object('code', v_status,
                                       'message', r.error),
            'registration', app.registration_json(r.id));
    END IF;

    limited := auth.send_link(v_email, token, v_ip, v_base,
                              '/registration.html?id=' || r.id,
                              consent_version, 'registration_link',
                              jsonb_build_object(
                                  'name', v_name,
                                  'event_title', e.title,
                                  'ticket_type', t.name,
                                  'starts_local',
                                  app.local_time(e.starts_at, e.time_zone)),
                              ttl_seconds, per_email, per_ip, 900);
    IF limited IS NOT NULL THEN
        -- Keep nothing of a refused request but its 429.
        DELETE FROM app.registrations AS x WHERE x.id = r.id;
        RETURN limited;
    END IF;

    PERFORM platform.set_status(202);
    RETURN json_build_object('status', 'pending',
                             'registration', app.registration_json(r.id));
END
$$;

-- The sign-in confirmation of 003, moved out of the way: api.auth_confirm
-- below calls it and then confirms the address's pending registrations in
-- the same transaction.
DO $$
BEGIN
    IF to_regprocedure('auth.confirm_link(jsonb, text, text, integer)') IS NULL
    THEN
        ALTER FUNCTION api.auth_confirm(jsonb, text, text, int)
            SET SCHEMA auth;
        ALTER FUNCTION auth.auth_confirm(jsonb, text, text, int)
            RENAME TO confirm_link;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION auth.confirm_link(jsonb, text, text, int)
    FROM PUBLIC, platform_app;

-- POST /api/auth/confirm: as before (auth.confirm_link: consumes the link,
-- signs in, answers {"status":"signed_in","user","new_user",
-- "return_path"}), plus "registrations": the address's registrations that
-- were pending, now confirmed ([] when there were none).  A link without
-- a return path of its own then returns to the first one's page.
CREATE OR REPLACE FUNCTION api.auth_confirm(body jsonb,
                                            client_ip text DEFAULT NULL,
                                            user_agent text DEFAULT NULL,
                                            ttl_seconds int DEFAULT 43200)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res  jsonb;
    regs jsonb;
BEGIN
    res := auth.confirm_link(body, client_ip, user_agent, ttl_seconds)::jsonb;

    regs := app.registrations_confirm_pending(
                (res->'user'->>'id')::bigint, res->'user'->>'email');

    IF jsonb_array_length(regs) > 0
       AND (SELECT m.return_path FROM auth.magic_links AS m
            WHERE m.token_hash = sha256(convert_to(body->>'token', 'UTF8')))
           IS NULL
    THEN
        res := jsonb_set(res, '{return_path}', to_jsonb(
                   '/registration.html?id=' || (regs->0->>'id')));
    END IF;

    RETURN (res || jsonb_build_object('registrations', regs))::json;
END
$$;

-- GET /api/registrations/{id} (platform_auth any): the caller's own
-- registration (by account, or by address while it is pending), else 404.
-- The registration page polls it until checkout_url (paid) or the ticket
-- (free) is there.
CREATE OR REPLACE FUNCTION api.registration_get(user_id bigint,
                                                registration_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM app.registrations AS r
        WHERE r.id = registration_get.registration_id
          AND (r.user_id = registration_get.user_id
               OR r.user_id IS NULL
                  AND r.email = (SELECT u.email FROM auth.users AS u
                                 WHERE u.id = registration_get.user_id)))
    THEN
        RAISE EXCEPTION 'No such registration.' USING ERRCODE = 'PT404';
    END IF;

    RETURN app.registration_json(registration_id);
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: tickets (participants)
-- ---------------------------------------------------------------------

-- GET /api/me/tickets (platform_auth any): {"upcoming": [...], "past":
-- [...]} tickets (valid and cancelled) with their events, soonest first
-- (past: latest first), and "registrations": those still pending or held.
CREATE OR REPLACE FUNCTION api.my_tickets(user_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email text;
    result  json;
BEGIN
    SELECT u.email INTO v_email FROM auth.users AS u
    WHERE u.id = my_tickets.user_id;
    IF v_email IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    WITH k AS (
        SELECT json_build_object(
                   'code', k.code,
                   'status', k.status,
                   'ics_url', app.ics_path(k.code),
                   'registration_id', k.registration_id,
                   'ticket_type', t.name,
                   'amount_minor', r.amount_minor,
                   'currency', r.currency,
                   'can_cancel', k.status = 'valid' AND e.starts_at > now()
                                 AND coalesce(r.amount_minor, 0) = 0,
                   'event', json_build_object(
                       'id', e.id, 'title', e.title, 'status', e.status,
                       'starts_at', e.starts_at, 'ends_at', e.ends_at,
                       'time_zone', e.time_zone,
                       'organisation', o.name)) AS j,
               e.ends_at > now() AS upcoming, e.starts_at, k.id
        FROM app.tickets AS k
        JOIN app.events AS e ON e.id = k.event_id
        JOIN app.ticket_types AS t ON t.id = k.ticket_type_id
        LEFT JOIN app.registrations AS r ON r.id = k.registration_id
        LEFT JOIN app.organisations AS o ON o.id = e.organisation_id
        WHERE k.user_id = my_tickets.user_id
    )
    SELECT json_build_object(
        'upcoming', coalesce((SELECT json_agg(j ORDER BY starts_at, id)
                              FROM k WHERE upcoming), '[]'::json),
        'past', coalesce((SELECT json_agg(j ORDER BY starts_at DESC, id)
                          FROM k WHERE NOT upcoming), '[]'::json),
        'registrations',
        coalesce((SELECT json_agg(app.registration_json(r.id) ORDER BY r.id)
                  FROM app.registrations AS r
                  WHERE r.status IN ('pending', 'held')
                    AND (r.user_id = my_tickets.user_id
                         OR r.user_id IS NULL AND r.email = v_email)),
                 '[]'::json))
    INTO result;

    RETURN result;
END
$$;

-- GET /api/tickets/{code}/event.ics (public: the code is 122 random bits
-- known to its holder): the event as an RFC 5545 calendar file, sent as
-- text/calendar with Content-Disposition attachment.  404 for an unknown
-- code.  A cancelled ticket or event gives STATUS:CANCELLED, so a
-- calendar that imported it can update.
CREATE OR REPLACE FUNCTION api.ticket_ics(code text, base_url text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF code ~ '^[0-9a-f]{32}$' THEN
        SELECT k.id INTO v_id FROM app.tickets AS k
        WHERE k.code = ticket_ics.code;
    END IF;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'No such ticket.' USING ERRCODE = 'PT404';
    END IF;

    PERFORM platform.set_header('Content-Type', 'text/calendar; charset=utf-8');
    PERFORM platform.set_header('Content-Disposition',
                                'attachment; filename="event.ics"');
    PERFORM platform.set_header('Cache-Control', 'private, no-cache');

    RETURN app.ticket_ics(v_id, base_url);
END
$$;

-- POST /api/tickets/{code}/cancel (platform_auth any): the holder gives
-- back a free ticket before the event starts; the place is free again.
-- Paid tickets are refunded through the organiser (409).  Someone else's
-- ticket: 404.
CREATE OR REPLACE FUNCTION api.ticket_cancel(user_id bigint, code text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k app.tickets;
    e app.events;
    r app.registrations;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    SELECT * INTO k FROM app.tickets AS x
    WHERE x.code = ticket_cancel.code AND x.user_id = ticket_cancel.user_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such ticket.' USING ERRCODE = 'PT404';
    END IF;

    SELECT * INTO e FROM app.events AS x WHERE x.id = k.event_id;
    SELECT * INTO r FROM app.registrations AS x WHERE x.id = k.registration_id
    FOR UPDATE;

    IF k.status = 'cancelled' THEN
        RETURN json_build_object('status', 'cancelled', 'code', k.code);
    END IF;
    IF e.starts_at <= now() THEN
        RAISE EXCEPTION 'The event has started: the ticket can no longer '
                        'be cancelled.' USING ERRCODE = 'PT409';
    END IF;
    IF coalesce(r.amount_minor, 0) > 0 THEN
        RAISE EXCEPTION 'Paid tickets are cancelled and refunded by the '
                        'organiser: please contact them.'
            USING ERRCODE = 'PT409';
    END IF;

    UPDATE app.tickets AS x SET status = 'cancelled', cancelled_at = now()
    WHERE x.id = k.id;
    UPDATE app.registrations AS x
    SET status = 'cancelled', error = 'You cancelled this ticket.',
        updated_at = now()
    WHERE x.id = k.registration_id;
    PERFORM app.release_place(k.ticket_type_id);

    RETURN json_build_object('status', 'cancelled', 'code', k.code);
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: Stripe webhook
-- ---------------------------------------------------------------------

-- POST /api/stripe/webhook: the module has verified the Stripe-Signature
-- over the raw body (platform_webhook_signature, 400 before SQL runs for
-- a bad or stale one) and passes its t= as signature_time.
--
-- Each event id is processed once (app.stripe_events):
--   same id, same t    a replay of a delivery already seen: 400, nothing
--   same id, other t   Stripe's redelivery (signed anew): 200
--                      {"received":true,"duplicate":true}, nothing done
--   new id             processed, 200 {"received":true,"type","outcome"}
-- Unknown event types are recorded and answered 200.  Everything slow
-- (mail, Stripe calls) is left to jobs, so the answer is fast.
CREATE OR REPLACE FUNCTION api.stripe_webhook(body jsonb,
                                              signature_time bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id     text;
    v_type   text;
    v_obj    jsonb;
    seen_t   bigint;
    outcome  text := 'ignored';
BEGIN
    IF signature_time IS NULL THEN
        RAISE EXCEPTION 'The webhook is not signed.' USING ERRCODE = '22023';
    END IF;

    IF body IS NULL OR jsonb_typeof(body) <> 'object'
       OR jsonb_typeof(body->'id') IS DISTINCT FROM 'string'
       OR jsonb_typeof(body->'type') IS DISTINCT FROM 'string'
       OR length(body->>'id') NOT BETWEEN 1 AND 255
    THEN
        RAISE EXCEPTION 'This is not a Stripe event.' USING ERRCODE = '22023',
              DETAIL = 'field: id';
    END IF;

    v_id := body->>'id';
    v_type := left(body->>'type', 200);
    v_obj := body->'data'->'object';

    INSERT INTO app.stripe_events (id, type, signature_time, payload)
    VALUES (v_id, v_type, signature_time, body)
    ON CONFLICT (id) DO NOTHING;

    IF NOT FOUND THEN
        SELECT s.signature_time INTO seen_t
        FROM app.stripe_events AS s WHERE s.id = v_id;

        IF seen_t = signature_time THEN
            RAISE EXCEPTION 'This webhook was replayed.'
                USING ERRCODE = '22023',
                      DETAIL = 'event ' || left(v_id, 100)
                               || ' was already received with this signature';
        END IF;

        RETURN json_build_object('received', true, 'duplicate', true);
    END IF;

    IF jsonb_typeof(v_obj) = 'object' THEN
        CASE v_type
        WHEN 'checkout.session.completed' THEN
            IF v_obj->>'payment_status' IN ('paid', 'no_payment_required') THEN
                outcome := app.checkout_paid(v_obj);
            ELSE
                outcome := 'awaiting payment';
            END IF;
        WHEN 'checkout.session.async_payment_succeeded' THEN
            outcome := app.checkout_paid(v_obj);
        WHEN 'checkout.session.expired' THEN
            outcome := app.checkout_unpaid(v_obj, 'expired',
                'The payment was not completed in time and the place was '
                'given back. Please register again.');
        WHEN 'checkout.session.async_payment_failed' THEN
            outcome := app.checkout_unpaid(v_obj, 'failed',
                'The payment failed and the place was given back.');
        ELSE
            NULL;
        END CASE;
    END IF;

    RETURN json_build_object('received', true, 'type', v_type,
                             'outcome', outcome);
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: organisers (platform_auth organiser org=$1)
-- ---------------------------------------------------------------------

-- PUT /api/orgs/{org}/stripe, body {"account": "acct_..."}: the connected
-- account paid tickets are paid to.  (Stripe Connect onboarding itself is
-- out of scope: the organiser pastes the id of an account they have.)
CREATE OR REPLACE FUNCTION api.org_stripe_set(org_id bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_acc text;
BEGIN
    PERFORM app.check_fields(body, ARRAY['account']);
    v_acc := app.json_text(body, 'account', 255, 1);
    IF v_acc !~ '^acct_[A-Za-z0-9]{1,250}$' THEN
        PERFORM app.bad_field('account', 'account must be a Stripe account '
                                         'id (acct_...).');
    END IF;

    UPDATE app.organisations AS o SET stripe_account = v_acc
    WHERE o.id = org_stripe_set.org_id;
    IF NOT FOUND OR org_id IS NULL THEN
        RAISE EXCEPTION 'No such organisation.' USING ERRCODE = 'PT404';
    END IF;

    RETURN json_build_object('org_id', org_id, 'stripe_account', v_acc);
END
$$;

-- GET /api/orgs/{org}/events/{id}/registrations: every registration of the
-- event with its consent record and ticket, and counts per status.
CREATE OR REPLACE FUNCTION api.event_registrations(org_id bigint,
                                                   event_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events;
BEGIN
    SELECT * INTO e FROM app.events AS x
    WHERE x.id = event_registrations.event_id
      AND x.organisation_id = event_registrations.org_id;
    IF NOT FOUND OR org_id IS NULL THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    RETURN json_build_object(
        'event', json_build_object('id', e.id, 'title', e.title,
                                   'status', e.status),
        'ticket_types',
        (SELECT coalesce(json_agg(app.ticket_type_json(t) ORDER BY t.id),
                         '[]'::json)
         FROM app.ticket_types AS t WHERE t.event_id = e.id),
        'counts',
        (SELECT coalesce(json_object_agg(s.status, s.n), '{}'::json)
         FROM (SELECT r.status, count(*) AS n FROM app.registrations AS r
               WHERE r.event_id = e.id GROUP BY r.status) AS s),
        'registrations',
        (SELECT coalesce(json_agg(json_build_object(
                    'id', r.id,
                    'name', r.name,
                    'email', r.email,
                    'status', r.status,
                    'ticket_type_id', r.ticket_type_id,
                    'amount_minor', r.amount_minor,
                    'currency', r.currency,
                    'terms_version', r.terms_version,
                    'consent_version', r.consent_version,
                    'accepted_at', r.accepted_at,
                    'confirmed_at', r.confirmed_at,
                    'paid_at', r.paid_at,
                    'payment_intent', r.payment_intent,
                    'refund_id', r.refund_id,
                    'refunded_at', r.refunded_at,
                    'error', r.error,
                    'ticket', (SELECT json_build_object('code', k.code,
                                                        'status', k.status)
                               FROM app.tickets AS k
                               WHERE k.registration_id = r.id),
                    'created_at', r.created_at) ORDER BY r.id), '[]'::json)
         FROM app.registrations AS r WHERE r.event_id = e.id));
END
$$;

-- POST /api/orgs/{org}/events/{id}/cancel: the event is cancelled (before
-- it ends; again is harmless): every valid ticket is cancelled and its
-- holder mailed, paid ones refunded through Stripe (reverse_transfer, so
-- the organiser's account pays it back); held places are given back and
-- their sessions expired, pending registrations expired.
CREATE OR REPLACE FUNCTION api.event_cancel(org_id bigint, event_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e        app.events := app.org_event(org_id, event_id);
    r        app.registrations;
    n_ticket int := 0;
    n_refund int := 0;
    msg      text := 'The organiser cancelled the event.';
BEGIN
    IF e.status = 'cancelled' THEN
        RETURN json_build_object('event', app.event_json(e),
                                 'tickets_cancelled', 0, 'refunds', 0);
    END IF;
    IF e.ends_at <= now() THEN
        RAISE EXCEPTION 'An event that has ended cannot be cancelled.'
            USING ERRCODE = 'PT409';
    END IF;

    UPDATE app.events AS x
    SET status = 'cancelled', cancelled_at = now(), updated_at = now()
    WHERE x.id = e.id
    RETURNING * INTO e;

    FOR r IN SELECT * FROM app.registrations AS x
             WHERE x.event_id = e.id AND x.status IN ('pending', 'held')
             ORDER BY x.id FOR UPDATE
    LOOP
        IF r.status = 'held' THEN
            PERFORM app.release_hold(r.id, 'cancelled', msg);
        ELSE
            -- (a registration without an account cannot be 'cancelled')
            UPDATE app.registrations AS x
            SET status = 'expired', error = msg, updated_at = now()
            WHERE x.id = r.id;
        END IF;
    END LOOP;

    FOR r IN SELECT x.* FROM app.registrations AS x
             JOIN app.tickets AS k ON k.registration_id = x.id
             WHERE x.event_id = e.id AND k.status = 'valid'
             ORDER BY x.id FOR UPDATE OF x
    LOOP
        UPDATE app.tickets AS k SET status = 'cancelled', cancelled_at = now()
        WHERE k.registration_id = r.id;
        UPDATE app.registrations AS x
        SET status = 'cancelled', error = msg, updated_at = now()
        WHERE x.id = r.id;
        PERFORM app.release_place(r.ticket_type_id);
        n_ticket := n_ticket + 1;

        IF r.payment_intent IS NOT NULL AND r.refund_id IS NULL THEN
            PERFORM app.stripe_refund(r);
            n_refund := n_refund + 1;
        END IF;

        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', r.email,
            'template', 'event_cancelled',
            'vars', jsonb_build_object(
                'name', r.name,
                'event_title', e.title,
                'starts_local', app.local_time(e.starts_at, e.time_zone),
                'refund_note', CASE WHEN r.payment_intent IS NOT NULL
                    THEN 'Your payment of '
                         || app.money(r.amount_minor, r.currency)
                         || ' is refunded in full to the card you paid '
                         'with; it may take a few days to appear.'
                    ELSE 'Your ticket was free: there is nothing to refund.'
                    END)));
    END LOOP;

    -- Tickets without a registration (none are made that way today).
    UPDATE app.tickets AS k SET status = 'cancelled', cancelled_at = now()
    WHERE k.event_id = e.id AND k.status = 'valid';

    RETURN json_build_object('event', app.event_json(e),
                             'tickets_cancelled', n_ticket,
                             'refunds', n_refund);
END
$$;


-- ---------------------------------------------------------------------
-- Privileges: helpers are not nginx's to call.
-- ---------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA app, auth, maintenance, callbacks
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.url_decode(text) TO platform_app;
GRANT EXECUTE ON FUNCTION app.business_types() TO platform_app;
GRANT EXECUTE ON FUNCTION auth.purge(int) TO platform_app;
REVOKE ALL ON FUNCTION auth.confirm_link(jsonb, text, text, int)
    FROM PUBLIC, platform_app;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api, platform TO platform_app;
