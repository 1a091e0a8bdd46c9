-- pgTAP tests for sql/008_registration.sql (run by tools/sql-test: one
-- transaction, so now() is one instant throughout).

SELECT * FROM no_plan();

-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

CREATE FUNCTION pg_temp.reset_response() RETURNS void LANGUAGE sql AS $$
    SELECT set_config('response.status', '', true),
           set_config('response.headers', '', true),
           set_config('response.session', '', true);
$$;

-- A base64url token as $platform_random makes them (43 characters).
CREATE FUNCTION pg_temp.tok(n int) RETURNS text LANGUAGE sql AS $$
    SELECT rtrim(translate(encode(sha256(convert_to('reg token ' || n, 'UTF8')),
                                  'base64'), '+/', '-_'), '=');
$$;

-- POST /api/events/{ev}/registrations as nginx calls it.
CREATE FUNCTION pg_temp.reg(ev bigint, body jsonb, tok int,
                            uid bigint DEFAULT NULL,
                            hold int DEFAULT 1800)
RETURNS json LANGUAGE sql AS $$
    SELECT api.registration_create(ev, body, uid, pg_temp.tok(tok),
                                   '192.0.2.1', 'https://tickets.example.org',
                                   'terms-2', 'privacy-3', hold, 100, 1000);
$$;

CREATE FUNCTION pg_temp.body(tt bigint, email text, name text DEFAULT 'Ann')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('ticket_type_id', tt, 'email', email,
                              'name', name, 'accept_terms', true,
                              'gdpr_consent', true);
$$;

CREATE FUNCTION pg_temp.confirm(tok int) RETURNS json LANGUAGE sql AS $$
    SELECT api.auth_confirm(json_build_object('token', pg_temp.tok(tok))::jsonb,
                            '192.0.2.1', 'test');
$$;

-- The SQLSTATE and DETAIL of a statement, or 'no error'.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; d text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, d = PG_EXCEPTION_DETAIL;
    RETURN s || coalesce(' ' || nullif(d, ''), '');
END $$;

-- A Stripe event around a Checkout Session object.
CREATE FUNCTION pg_temp.event(id text, type text, session jsonb)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', id, 'object', 'event', 'type', type,
                              'created', 1800000000,
                              'data', jsonb_build_object('object', session));
$$;

-- ---------------------------------------------------------------------
-- Shape and privileges
-- ---------------------------------------------------------------------

SELECT has_function('api'::name, f::name) FROM unnest(ARRAY['registration_create',
    'registration_get', 'my_tickets', 'ticket_ics', 'ticket_cancel',
    'stripe_webhook', 'org_stripe_set', 'event_registrations',
    'event_cancel']) AS f;
SELECT has_function('api', 'auth_confirm',
                    ARRAY['jsonb', 'text', 'text', 'integer'],
                    'api.auth_confirm keeps its signature');
SELECT has_function('auth', 'confirm_link',
                    ARRAY['jsonb', 'text', 'text', 'integer'],
                    '003''s auth_confirm is auth.confirm_link');
SELECT ok(NOT has_function_privilege('platform_app',
              'auth.confirm_link(jsonb,text,text,integer)', 'EXECUTE'),
          'platform_app cannot call auth.confirm_link');
SELECT ok(NOT has_function_privilege('platform_app', f, 'EXECUTE'),
          f || ' is not nginx''s to call')
FROM unnest(ARRAY['app.issue_ticket(bigint)',
                  'app.registration_confirm(bigint,bigint)',
                  'app.release_place(bigint)',
                  'auth.send_link(text,text,inet,text,text,text,text,jsonb,integer,integer,integer,integer)',
                  'callbacks.stripe_checkout_created(jsonb,integer,text)',
                  'maintenance.registration_hold_expire(jsonb)']) AS f;
SELECT ok(has_function_privilege('platform_app',
              'api.stripe_webhook(jsonb,bigint)', 'EXECUTE'),
          'api.stripe_webhook is');
SELECT has_column('app', 'registrations', c, 'registrations.' || c)
FROM unnest(ARRAY['hold_seconds', 'base_url', 'confirmed_at', 'paid_at',
                  'refund_id', 'refunded_at']) AS c;
SELECT ok(EXISTS (SELECT 1 FROM jobs.mail_templates WHERE name = n),
          'mail template ' || n)
FROM unnest(ARRAY['registration_link', 'ticket_confirmation',
                  'event_cancelled']) AS n;

-- ---------------------------------------------------------------------
-- Fixtures
-- ---------------------------------------------------------------------

INSERT INTO app.organisations (name, stripe_account)
VALUES ('Org A', 'acct_1OrgA'), ('Org B', NULL);
INSERT INTO app.events (organisation_id, title, description, business_type,
                        starts_at, ends_at, time_zone, status)
SELECT o.id, v.title, v.descr, 'conference', now() + v.s, now() + v.e,
       'Europe/Paris', v.status
FROM (VALUES ('Org A', 'Rust; Conf, 2030', E'Talks, food;\nand a \\ backslash',
              interval '10 days', interval '11 days', 'published'),
             ('Org A', 'Draft', '', interval '10 days', interval '11 days', 'draft'),
             ('Org A', 'Over', '', interval '-3 days', interval '-2 days', 'published'),
             ('Org B', 'B Night', '', interval '20 days', interval '21 days', 'published'))
     AS v(org, title, descr, s, e, status)
JOIN app.organisations AS o ON o.name = v.org;

INSERT INTO app.ticket_types (event_id, name, quantity, price_minor, currency,
                              sales_start, sales_end)
SELECT e.id, v.name, v.q, v.price, v.cur, now() + v.ss, now() + v.se
FROM (VALUES ('Rust; Conf, 2030', 'Free', 2, 0, NULL, NULL::interval, NULL::interval),
             ('Rust; Conf, 2030', 'VIP', 1, 2500, 'EUR', NULL, NULL),
             ('Rust; Conf, 2030', 'Later', 5, 0, NULL, interval '1 day', NULL),
             ('Rust; Conf, 2030', 'Gone', 5, 0, NULL, interval '-2 days', interval '-1 day'),
             ('Rust; Conf, 2030', 'Supporter', 2, 5000, 'EUR', NULL, NULL),
             ('Draft', 'D', 5, 0, NULL, NULL, NULL),
             ('Over', 'O', 5, 0, NULL, NULL, NULL),
             ('B Night', 'Seat', 5, 0, NULL, NULL, NULL),
             ('B Night', 'BPaid', 5, 1000, 'EUR', NULL, NULL))
     AS v(ev, name, q, price, cur, ss, se)
JOIN app.events AS e ON e.title = v.ev;

SELECT (SELECT id FROM app.organisations WHERE name = 'Org A') AS org_a,
       (SELECT id FROM app.organisations WHERE name = 'Org B') AS org_b,
       (SELECT id FROM app.events WHERE title = 'Rust; Conf, 2030') AS ev,
       (SELECT id FROM app.events WHERE title = 'Draft') AS ev_draft,
       (SELECT id FROM app.events WHERE title = 'Over') AS ev_over,
       (SELECT id FROM app.events WHERE title = 'B Night') AS ev_b,
       (SELECT id FROM app.ticket_types WHERE name = 'Free') AS tt_free,
       (SELECT id FROM app.ticket_types WHERE name = 'VIP') AS tt_vip,
       (SELECT id FROM app.ticket_types WHERE name = 'Later') AS tt_later,
       (SELECT id FROM app.ticket_types WHERE name = 'Gone') AS tt_gone,
       (SELECT id FROM app.ticket_types WHERE name = 'Supporter') AS tt_sup,
       (SELECT id FROM app.ticket_types WHERE name = 'D') AS tt_draft,
       (SELECT id FROM app.ticket_types WHERE name = 'O') AS tt_over,
       (SELECT id FROM app.ticket_types WHERE name = 'Seat') AS tt_b,
       (SELECT id FROM app.ticket_types WHERE name = 'BPaid') AS tt_bpaid
\gset

-- ---------------------------------------------------------------------
-- Registration: validation names the field
-- ---------------------------------------------------------------------

SET LOCAL ROLE platform_app;

SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 1)', :ev, b)),
          '22023 field: ' || f, 'registration: ' || why)
FROM (VALUES
    ('body', '[1]', 'not an object'),
    ('colour', jsonb_build_object('ticket_type_id', 1, 'colour', 'red'), 'an unknown field'),
    ('ticket_type_id', '{"email": "a@example.org", "name": "A", "accept_terms": true, "gdpr_consent": true}', 'no ticket type'),
    ('ticket_type_id', pg_temp.body(:tt_free, 'a@example.org') || '{"ticket_type_id": "x"}', 'a ticket type that is not a number'),
    ('ticket_type_id', pg_temp.body(:tt_b, 'a@example.org'), 'another event''s ticket type'),
    ('email', pg_temp.body(:tt_free, 'not-an-email'), 'a malformed email'),
    ('email', pg_temp.body(:tt_free, repeat('x', 65) || '@example.org'), 'an over-long local part'),
    ('email', pg_temp.body(:tt_free, '') , 'an empty email'),
    ('name', pg_temp.body(:tt_free, 'a@example.org', ''), 'an empty name'),
    ('name', pg_temp.body(:tt_free, 'a@example.org', repeat('n', 201)), 'a name over 200 characters'),
    ('name', pg_temp.body(:tt_free, 'a@example.org', E'A\u0007B'), 'a name with control characters'),
    ('accept_terms', pg_temp.body(:tt_free, 'a@example.org') || '{"accept_terms": false}', 'terms not accepted'),
    ('gdpr_consent', pg_temp.body(:tt_free, 'a@example.org') - 'gdpr_consent', 'no GDPR consent'),
    ('gdpr_consent', pg_temp.body(:tt_free, 'a@example.org') || '{"gdpr_consent": "yes"}', 'consent that is not true')
) AS v(f, b, why);

SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 1)', e, pg_temp.body(t, 'a@example.org'))),
          code, 'registration: ' || why)
FROM (VALUES (:ev_draft, :tt_draft, 'PT404', 'a draft event is 404'),
             (12345678, :tt_free, 'PT404', 'an unknown event is 404'),
             (:ev_over, :tt_over, 'PT409', 'an event that ended is 409'),
             (:ev, :tt_later, 'PT409', 'sales not open yet: 409'),
             (:ev, :tt_gone, 'PT409', 'sales over: 409')) AS v(e, t, code, why);

SELECT is(pg_temp.err($$SELECT api.registration_create(1, '{}', NULL, 'short', '192.0.2.1',
                        'https://x.example.org', 'terms-1', 'privacy-1')$$),
          'PT500 check token ($platform_random), base_url, terms_version, consent_version, hold_seconds',
          'a token that is not $platform_random is a configuration error');
SELECT is(pg_temp.err(format($$SELECT api.registration_create(%s, %L, NULL, %L, '192.0.2.1',
                        'https://x.example.org', 'terms 1', 'privacy-1')$$,
                        :ev, pg_temp.body(:tt_free, 'a@example.org'), pg_temp.tok(1))),
          'PT500 check token ($platform_random), base_url, terms_version, consent_version, hold_seconds',
          'a malformed terms version too');

-- ---------------------------------------------------------------------
-- Free ticket: register, link, confirm, ticket
-- ---------------------------------------------------------------------

SELECT pg_temp.reset_response() \g /dev/null
SELECT is((SELECT r->>'status' || ' ' || (r->'registration'->>'status') || ' '
                  || (r->'registration'->>'email')
           FROM pg_temp.reg(:ev, pg_temp.body(:tt_free, ' Ann@Example.org '), 1) AS r),
          'pending pending ann@example.org', 'registered: pending, address lower-cased');
SELECT is(current_setting('response.status'), '202', '202 Accepted');

RESET ROLE;
SELECT is((SELECT row(r.terms_version, r.consent_version, r.client_ip,
                      r.hold_seconds, r.base_url, r.user_id)::text
           FROM app.registrations AS r WHERE r.email = 'ann@example.org'),
          row('terms-2', 'privacy-3', '192.0.2.1'::inet, 1800,
              'https://tickets.example.org', NULL::bigint)::text,
          'consent recorded with the registration');
SELECT is((SELECT row(m.return_path, m.consent_version)::text FROM auth.magic_links AS m
           WHERE m.email = 'ann@example.org'),
          row('/registration.html?id=' || (SELECT id FROM app.registrations
                                           WHERE email = 'ann@example.org'),
              'privacy-3')::text,
          'a magic link returning to the registration page');
SELECT is((SELECT payload->'vars'->>'event_title' || ' | ' || (payload->'vars'->>'ticket_type')
                  || ' | ' || (payload->'vars'->>'link')
           FROM jobs.jobs WHERE payload->>'template' = 'registration_link'
             AND payload->>'to' = 'ann@example.org'),
          'Rust; Conf, 2030 | Free | https://tickets.example.org/confirm.html#token='
          || pg_temp.tok(1),
          'the registration_link mail names the event and carries the link');
SELECT is((SELECT count(*)::int FROM auth.users WHERE email = 'ann@example.org'), 0,
          'no account before confirmation');
SET LOCAL ROLE platform_app;

RESET ROLE;
SELECT id AS reg_ann FROM app.registrations WHERE email = 'ann@example.org' \gset
SET LOCAL ROLE platform_app;

SELECT is((SELECT r->>'status' || ' ' || (r->'registrations'->0->>'status') || ' '
                  || (r->>'return_path') || ' ' || json_array_length(r->'registrations')
           FROM pg_temp.confirm(1) AS r),
          'signed_in issued /registration.html?id=' || :reg_ann || ' 1',
          'confirmed: signed in, the ticket issued, back to the registration page');
SELECT matches(current_setting('response.session'), '^u=[0-9]+;', 'the session is issued');

RESET ROLE;
SELECT id AS ann FROM auth.users WHERE email = 'ann@example.org' \gset
SELECT is((SELECT row(r.status, r.user_id, k.status, k.user_id, k.event_id)::text
           FROM app.registrations AS r JOIN app.tickets AS k ON k.registration_id = r.id
           WHERE r.id = :reg_ann),
          row('issued', :ann, 'valid', :ann, :ev)::text, 'a valid ticket for ann');
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_free), 1, 'one place taken');
SELECT is((SELECT text_version FROM auth.consents WHERE user_id = :ann), 'privacy-3',
          'GDPR consent recorded with the account');
SELECT code AS ann_code FROM app.tickets WHERE registration_id = :reg_ann \gset
SELECT is((SELECT payload->'vars'->>'event_title' || ' | '
                  || (payload->'vars'->>'starts_local') || ' | '
                  || (payload->'vars'->>'ics_link') || ' | '
                  || (payload->'vars'->>'my_events_link')
           FROM jobs.jobs WHERE payload->>'template' = 'ticket_confirmation'
             AND payload->>'to' = 'ann@example.org'),
          'Rust; Conf, 2030 | '
          || app.local_time(now() + interval '10 days', 'Europe/Paris')
          || ' | https://tickets.example.org/api/tickets/' || :'ann_code'
          || '/event.ics | https://tickets.example.org/my-events.html',
          'the confirmation mail: event, local time, calendar and my-events links');
SELECT matches(app.local_time('2031-03-10T09:00:00Z', 'Europe/Paris'),
               '^Monday 10 March 2031, 10:00 \(Europe/Paris\)$',
               'local_time: in the event''s time zone');
SET LOCAL ROLE platform_app;

SELECT is(api.registration_get(:ann, :reg_ann)->'ticket'->>'code', :'ann_code',
          'registration_get: the ticket');
SELECT is(pg_temp.err(format('SELECT api.registration_get(%s, %s)', :ann + 1000, :reg_ann)),
          'PT404', 'registration_get: someone else''s registration is 404');

-- Signed in as the same address: no link, an answer at once.
SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 2, %s)', :ev,
                             pg_temp.body(:tt_free, 'ann@example.org'), :ann)),
          'PT409', 'signed in with a ticket already: 409');
-- Anonymously: the same 202 as for anyone (no ticket-holding is
-- revealed), and the confirmation says so.
SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_free, 'ann@example.org'), 3)->>'status',
          'pending', 'anonymous second registration: 202 pending');
SELECT is((SELECT (r->'registrations'->0->>'status') || ': ' || (r->'registrations'->0->>'error')
           FROM pg_temp.confirm(3) AS r),
          'failed: You already have a place for "Rust; Conf, 2030".',
          'its confirmation fails with a sentence');

-- ---------------------------------------------------------------------
-- Sold out: counting never passes the quantity
-- ---------------------------------------------------------------------

SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_free, 'bob@example.org', 'Bob'), 10)->>'status',
          'pending', 'bob registers for the last free place');
SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_free, 'cy@example.org', 'Cy'), 11)->>'status',
          'pending', 'cy too');
SELECT is(pg_temp.confirm(10)->'registrations'->0->>'status', 'issued', 'bob gets it');
SELECT is(pg_temp.confirm(11)->'registrations'->0->>'message',
          'Sorry, "Free" for "Rust; Conf, 2030" is sold out.',
          'cy: sold out, in a sentence');
SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 12)', :ev,
                             pg_temp.body(:tt_free, 'dee@example.org'))),
          'PT409', 'sold out: registering is refused early (409)');
RESET ROLE;
SELECT is((SELECT sold || '/' || quantity FROM app.ticket_types WHERE id = :tt_free),
          '2/2', 'sold = quantity, no more');
SELECT is(app.take_ticket(:tt_free), false, 'take_ticket refuses past the quantity');
SELECT throws_ok(format('UPDATE app.ticket_types SET sold = 3 WHERE id = %s', :tt_free),
                 '23514', NULL, 'the table refuses sold > quantity');
SET LOCAL ROLE platform_app;

-- A participant gives back a free ticket: the place is free again.
SELECT is(pg_temp.err(format('SELECT api.ticket_cancel(%s, %L)', :ann + 1000, :'ann_code')),
          'PT404', 'someone else''s ticket: 404');
SELECT is(api.ticket_cancel(:ann, :'ann_code')->>'status', 'cancelled',
          'ann cancels her free ticket');
SELECT is((SELECT t->>'remaining' FROM json_array_elements(api.event_get(:ev)->'ticket_types') AS t
           WHERE (t->>'id')::bigint = :tt_free), '1',
          'one place free again');
SELECT is(api.my_tickets(:ann)->'upcoming'->0->>'status', 'cancelled',
          'my tickets shows it cancelled');

-- A plain sign-in link confirms the address's pending registrations too,
-- and then returns to the registration's page.
SELECT r->'registration'->>'id' AS reg_sam
FROM pg_temp.reg(:ev, pg_temp.body(:tt_free, 'sam@example.org', 'Sam'), 50) AS r \gset
SELECT is(api.auth_request_link('{"email": "sam@example.org"}', pg_temp.tok(51),
                                '192.0.2.1', 'https://tickets.example.org')->>'status',
          'sent', 'sam registers, then asks for a sign-in link instead');
SELECT is((SELECT (r->'registrations'->0->>'status') || ' ' || (r->>'return_path')
           FROM pg_temp.confirm(51) AS r),
          'issued /registration.html?id=' || :reg_sam,
          'signing in confirms the registration and returns to its page');
SELECT is(pg_temp.err(format('SELECT pg_temp.confirm(%s)', 50)), 'PT410',
          'the registration''s own link is void now');

-- ---------------------------------------------------------------------
-- Paid ticket: hold, Checkout Session, webhook
-- ---------------------------------------------------------------------

SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_vip, 'pat@example.org', 'Pat'), 20)->>'status',
          'pending', 'pat registers for the paid ticket');
SELECT is((SELECT (r->'registrations'->0->>'status') || ' '
                  || (r->'registrations'->0->>'amount_minor') || ' '
                  || (r->'registrations'->0->>'currency')
           FROM pg_temp.confirm(20) AS r),
          'held 2500 EUR', 'confirmed: the place is held at the price');

RESET ROLE;
SELECT id AS reg_pat, user_id AS pat FROM app.registrations WHERE email = 'pat@example.org' \gset
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_vip), 1, 'the held place counts');
SELECT is((SELECT hold_expires_at - now() FROM app.registrations WHERE id = :reg_pat),
          interval '30 minutes', 'held for hold_seconds');
SELECT is((SELECT payload - 'form' FROM jobs.jobs WHERE kind = 'call'
             AND payload->'context'->>'registration_id' = :'reg_pat'::text),
          jsonb_build_object('service', 'stripe', 'method', 'POST',
                             'path', '/v1/checkout/sessions',
                             'headers', jsonb_build_object('Idempotency-Key',
                                                           'checkout-' || :reg_pat),
                             'callback', 'stripe_checkout_created',
                             'context', jsonb_build_object('registration_id', :reg_pat)),
          'a call job to create the Checkout Session');
SELECT is((SELECT (payload->'form') - 'expires_at'::text FROM jobs.jobs WHERE kind = 'call'
             AND payload->'context'->>'registration_id' = :'reg_pat'::text),
          jsonb_build_object(
              'mode', 'payment',
              'line_items[0][price_data][currency]', 'eur',
              'line_items[0][price_data][unit_amount]', 2500,
              'line_items[0][price_data][product_data][name]', 'Rust; Conf, 2030 - VIP',
              'line_items[0][quantity]', 1,
              'payment_intent_data[transfer_data][destination]', 'acct_1OrgA',
              'payment_intent_data[metadata][registration_id]', :'reg_pat'::text,
              'customer_email', 'pat@example.org',
              'client_reference_id', :'reg_pat'::text,
              'metadata[registration_id]', :'reg_pat'::text,
              'metadata[event_id]', :'ev'::text,
              'success_url', 'https://tickets.example.org/registration.html?id='
                             || :reg_pat || '&session_id={CHECKOUT_SESSION_ID}',
              'cancel_url', 'https://tickets.example.org/registration.html?id='
                            || :reg_pat || '&cancelled=1'),
          'a destination charge to the organiser''s account, no application fee');
SELECT ok((SELECT (payload->'form'->>'expires_at')::bigint
                  >= extract(epoch FROM now() + interval '30 minutes')
           FROM jobs.jobs WHERE kind = 'call'
             AND payload->'context'->>'registration_id' = :'reg_pat'::text),
          'expires_at at least 30 minutes ahead (Stripe''s minimum)');
SELECT is((SELECT run_at - now() || ' ' || (payload->>'function')
           FROM jobs.jobs WHERE key = 'hold:' || :reg_pat AND state = 'pending'),
          '00:30:00 registration_hold_expire', 'the hold job at the end of the hold');

-- Stripe answers the create.
SELECT lives_ok(format($$SELECT callbacks.stripe_checkout_created(%L, 200, %L)$$,
                       jsonb_build_object('registration_id', :reg_pat),
                       '{"id": "cs_test_pat", "object": "checkout.session", '
                       '"url": "https://pay.example/cs_test_pat", "payment_intent": null}'),
                'the callback takes the session');
SET LOCAL ROLE platform_app;
SELECT is(api.registration_get(:pat, :reg_pat)->>'checkout_url',
          'https://pay.example/cs_test_pat', 'registration_get: checkout_url');
SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 21, %s)', :ev,
                             pg_temp.body(:tt_sup, 'pat@example.org'), :pat)),
          'PT409', 'a held place counts as a place: registering again is 409');

-- The webhook: paid.
SELECT is(api.stripe_webhook(pg_temp.event('evt_pat', 'checkout.session.completed',
              '{"id": "cs_test_pat", "object": "checkout.session", "payment_status": "paid",
                "status": "complete", "amount_total": 2500, "currency": "eur",
                "payment_intent": "pi_pat"}'), 1800000000)->>'outcome',
          'issued', 'checkout.session.completed: the ticket is issued');
SELECT is(api.registration_get(:pat, :reg_pat)->>'status', 'issued', 'status issued');
SELECT is(pg_temp.err($$SELECT api.stripe_webhook(pg_temp.event('evt_pat',
              'checkout.session.completed', '{"id": "cs_test_pat",
              "payment_status": "paid"}'), 1800000000)$$),
          '22023 event evt_pat was already received with this signature',
          'the same event with the same t again: a replay, 400');
SELECT is(api.stripe_webhook(pg_temp.event('evt_pat', 'checkout.session.completed',
              '{"id": "cs_test_pat", "payment_status": "paid"}'), 1800000060)::jsonb,
          '{"received": true, "duplicate": true}',
          'the same event with another t: Stripe''s redelivery, 200 duplicate');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM app.tickets WHERE registration_id = :reg_pat), 1,
          'one ticket, whatever the deliveries');
SELECT is((SELECT state FROM jobs.jobs WHERE key = 'hold:' || :reg_pat), 'cancelled',
          'the hold job is cancelled');
SELECT is((SELECT payment_intent || ' ' || (paid_at IS NOT NULL)
           FROM app.registrations WHERE id = :reg_pat), 'pi_pat true',
          'the payment is recorded');
SELECT is((SELECT count(*)::int FROM jobs.jobs WHERE payload->>'template' = 'ticket_confirmation'
             AND payload->>'to' = 'pat@example.org'), 1,
          'one confirmation mail');
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_vip), 1, 'still one place sold');
SET LOCAL ROLE platform_app;

SELECT is(pg_temp.err($$SELECT api.stripe_webhook('{"type": "x"}', 1800000000)$$),
          '22023 field: id', 'an event without an id: 400');
SELECT is(pg_temp.err($$SELECT api.stripe_webhook(pg_temp.event('evt_nosig', 'x', '{}'), NULL)$$),
          '22023', 'without a verified signature time: 400');
SELECT is(api.stripe_webhook(pg_temp.event('evt_other', 'customer.created', '{"id": "cus_1"}'),
                             1800000000)->>'outcome',
          'ignored', 'an event type we do not handle: 200, ignored');
SELECT is(api.stripe_webhook(pg_temp.event('evt_unknown', 'checkout.session.completed',
              '{"id": "cs_test_nobody", "payment_status": "paid"}'), 1800000000)->>'outcome',
          'unknown session', 'a session that is not ours: 200, nothing done');

-- ---------------------------------------------------------------------
-- Holds that end: expiry job, expired session, failed create
-- ---------------------------------------------------------------------

SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_sup, 'hal@example.org', 'Hal'), 30, NULL, 60)->>'status',
          'pending', 'hal registers (a 60 s hold)');
SELECT is(pg_temp.confirm(30)->'registrations'->0->>'status', 'held', 'held');
RESET ROLE;
SELECT id AS reg_hal FROM app.registrations WHERE email = 'hal@example.org' \gset
SELECT is((SELECT run_at - now() FROM jobs.jobs WHERE key = 'hold:' || :reg_hal),
          interval '60 seconds', 'the hold job follows hold_seconds');
SELECT callbacks.stripe_checkout_created(jsonb_build_object('registration_id', :reg_hal), 200,
       '{"id": "cs_test_hal", "url": "https://pay.example/cs_test_hal"}') \g /dev/null
SELECT maintenance.registration_hold_expire(jsonb_build_object('registration_id', :reg_hal)) \g /dev/null
SELECT is((SELECT status FROM app.registrations WHERE id = :reg_hal), 'held',
          'the hold job before the hold ends changes nothing');
UPDATE app.registrations SET hold_expires_at = now() - interval '1 second' WHERE id = :reg_hal;
SELECT maintenance.registration_hold_expire(jsonb_build_object('registration_id', :reg_hal)) \g /dev/null
SELECT is((SELECT status FROM app.registrations WHERE id = :reg_hal), 'expired',
          'the hold job releases the place');
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_sup), 0, 'the place came back');
SELECT is((SELECT payload->>'path' || ' ' || (payload->'headers'->>'Idempotency-Key')
           FROM jobs.jobs WHERE kind = 'call' AND payload->>'callback' = 'stripe_checkout_expired'),
          '/v1/checkout/sessions/cs_test_hal/expire expire-cs_test_hal',
          'and the Checkout Session is expired at Stripe');

-- Paid anyway (in the moment before Stripe expired it): a place is taken
-- again when one is left.
SET LOCAL ROLE platform_app;
SELECT is(api.stripe_webhook(pg_temp.event('evt_hal', 'checkout.session.completed',
              '{"id": "cs_test_hal", "payment_status": "paid", "payment_intent": "pi_hal"}'),
              1800000000)->>'outcome',
          'issued late', 'paid after the hold ended, a place left: issued');
RESET ROLE;
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_sup), 1, 'the place is taken again');

-- checkout.session.expired releases a hold.
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_sup, 'exp@example.org', 'Ex'), 31)->>'status',
          'pending', 'exp registers');
SELECT is(pg_temp.confirm(31)->'registrations'->0->>'status', 'held', 'held');
RESET ROLE;
SELECT id AS reg_exp FROM app.registrations WHERE email = 'exp@example.org' \gset
SELECT callbacks.stripe_checkout_created(jsonb_build_object('registration_id', :reg_exp), 200,
       '{"id": "cs_test_exp", "url": "https://pay.example/cs_test_exp"}') \g /dev/null
SELECT is((SELECT sold || '/' || quantity FROM app.ticket_types WHERE id = :tt_sup), '2/2',
          'Supporter is full');
SET LOCAL ROLE platform_app;
SELECT is(api.stripe_webhook(pg_temp.event('evt_exp', 'checkout.session.expired',
              '{"id": "cs_test_exp", "status": "expired", "payment_status": "unpaid"}'),
              1800000000)->>'outcome',
          'released', 'checkout.session.expired: the hold is released');
RESET ROLE;
SELECT is((SELECT status || ' ' || sold FROM app.registrations, app.ticket_types AS t
           WHERE app.registrations.id = :reg_exp AND t.id = :tt_sup),
          'expired 1', 'expired, the place back');
SELECT is((SELECT state FROM jobs.jobs WHERE key = 'hold:' || :reg_exp), 'cancelled',
          'its hold job is cancelled');

-- A late payment when nothing is left: refunded.
UPDATE app.ticket_types SET quantity = 1 WHERE id = :tt_sup;
SET LOCAL ROLE platform_app;
SELECT is(api.stripe_webhook(pg_temp.event('evt_exp_paid', 'checkout.session.completed',
              '{"id": "cs_test_exp", "payment_status": "paid", "payment_intent": "pi_exp"}'),
              1800000000)->>'outcome',
          'refunded', 'paid after the hold ended, sold out: refunded');
RESET ROLE;
SELECT is((SELECT status FROM app.registrations WHERE id = :reg_exp), 'failed', 'failed');
SELECT is((SELECT payload->'form' FROM jobs.jobs WHERE kind = 'call'
             AND payload->>'path' = '/v1/refunds'
             AND payload->'context'->>'registration_id' = :'reg_exp'::text),
          jsonb_build_object('payment_intent', 'pi_exp', 'reverse_transfer', true,
                             'metadata[registration_id]', :'reg_exp'::text),
          'a refund with the transfer reversed');
SELECT is((SELECT sold || '/' || quantity FROM app.ticket_types WHERE id = :tt_sup), '1/1',
          'never more sold than the quantity');

-- Stripe refuses the create: failed, place back.
UPDATE app.ticket_types SET quantity = 3 WHERE id = :tt_sup;
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_sup, 'fay@example.org', 'Fay'), 32)->>'status',
          'pending', 'fay registers');
SELECT is(pg_temp.confirm(32)->'registrations'->0->>'status', 'held', 'held');
RESET ROLE;
SELECT id AS reg_fay FROM app.registrations WHERE email = 'fay@example.org' \gset
SELECT callbacks.stripe_checkout_created(jsonb_build_object('registration_id', :reg_fay), 400,
       '{"error": {"type": "invalid_request_error", "message": "No such destination"}}') \g /dev/null
SELECT is((SELECT status || ': ' || error FROM app.registrations WHERE id = :reg_fay),
          'failed: The payment could not be started. Please try again in a few minutes.',
          'Stripe refused the create: failed, with a sentence');
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_sup), 1, 'the place came back');
SELECT is((SELECT state FROM jobs.jobs WHERE key = 'hold:' || :reg_fay), 'cancelled',
          'its hold job is cancelled');

-- ---------------------------------------------------------------------
-- Calendar file
-- ---------------------------------------------------------------------

SELECT is(app.ics_text(E'a,b;c\\d\ne\r\nf'), E'a\\,b\\;c\\\\d\\ne\\nf',
          'ics_text escapes , ; \ and line breaks');
SELECT is(app.ics_fold('SUMMARY:short'), E'SUMMARY:short\r\n', 'short lines stay');
SELECT ok(NOT EXISTS (SELECT 1 FROM regexp_split_to_table(
              rtrim(app.ics_fold('DESCRIPTION:' || repeat('é€x', 60)), E'\r\n'), E'\r\n') AS l
          WHERE octet_length(l) > 75),
          'folded lines have at most 75 octets (multi-byte text)');
SELECT is(replace(app.ics_fold('DESCRIPTION:' || repeat('é€x', 60)), E'\r\n ', ''),
          'DESCRIPTION:' || repeat('é€x', 60) || E'\r\n',
          'unfolding gives the line back (no character split)');
SELECT is(app.ics_fold(repeat('a', 76)), repeat('a', 75) || E'\r\n a\r\n',
          'folding at exactly 75 octets');

SET LOCAL ROLE platform_app;
SELECT pg_temp.reset_response() \g /dev/null
SELECT api.ticket_ics(:'ann_code', 'https://tickets.example.org') AS ics \gset
SELECT is(current_setting('response.headers'),
          E'Content-Type: text/calendar; charset=utf-8\n'
          || E'Content-Disposition: attachment; filename="event.ics"\n'
          || E'Cache-Control: private, no-cache\n',
          'ticket_ics: text/calendar, as an attachment');
SELECT ok(:'ics' ~ E'^BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:[^\r]+\r\n'
          AND :'ics' ~ E'\r\nEND:VCALENDAR\r\n$', 'a VCALENDAR with CRLF line ends');
SELECT ok(strpos(:'ics', E'\r\nSUMMARY:Rust\\; Conf\\, 2030\r\n') > 0, 'SUMMARY escaped');
SELECT ok(:'ics' ~ (E'\r\nDTSTART:' || to_char((now() + interval '10 days') AT TIME ZONE 'UTC',
                                             'YYYYMMDD"T"HH24MISS"Z"') || E'\r\n'),
          'DTSTART in UTC');
SELECT ok(:'ics' ~ E'\r\nDTSTART:[0-9]{8}T[0-9]{6}Z\r\nDTEND:[0-9]{8}T[0-9]{6}Z\r\n',
          'DTSTART and DTEND with Z');
SELECT ok(:'ics' ~ E'\r\nUID:event-[0-9]+-ticket-[0-9]+@tickets\\.example\\.org\r\n',
          'UID');
SELECT ok(:'ics' ~ E'\r\nDTSTAMP:[0-9]{8}T[0-9]{6}Z\r\n', 'DTSTAMP');
SELECT ok(strpos(replace(:'ics', E'\r\n ', ''),
                 E'\r\nDESCRIPTION:Talks\\, food\\;\\nand a \\\\ backslash\\n\\nTicket: Free') > 0,
          'DESCRIPTION escaped');
SELECT ok(:'ics' ~ E'\r\nSTATUS:CANCELLED\r\n', 'a cancelled ticket: STATUS:CANCELLED');
SELECT ok(:'ics' ~ E'\r\nURL:https://tickets\\.example\\.org/event\\.html\\?id=[0-9]+\r\n', 'URL');
SELECT is(pg_temp.err($$SELECT api.ticket_ics('00000000000000000000000000000000', NULL)$$),
          'PT404', 'an unknown code: 404');
SELECT is(pg_temp.err($$SELECT api.ticket_ics('../etc', NULL)$$),
          'PT404', 'a malformed code: 404');

-- ---------------------------------------------------------------------
-- My tickets
-- ---------------------------------------------------------------------

RESET ROLE;
SELECT code AS pat_code FROM app.tickets WHERE registration_id = :reg_pat \gset
SET LOCAL ROLE platform_app;

SELECT is((SELECT json_array_length(t->'upcoming') || ' ' || (t->'upcoming'->0->'event'->>'title')
                  || ' ' || (t->'upcoming'->0->>'ticket_type') || ' '
                  || (t->'upcoming'->0->>'ics_url')
           FROM api.my_tickets(:pat) AS t),
          '1 Rust; Conf, 2030 VIP /api/tickets/'
          || :'pat_code' || '/event.ics',
          'my_tickets: the upcoming event with its ics URL');
SELECT is(pg_temp.err(format('SELECT api.ticket_cancel(%s, %L)', :pat, :'pat_code')),
          'PT409', 'a paid ticket is cancelled by the organiser, not here');

-- ---------------------------------------------------------------------
-- Organisers: Stripe account, registrations, isolation, cancelling
-- ---------------------------------------------------------------------

SELECT is(pg_temp.err(format($$SELECT api.org_stripe_set(%s, '{"account": "acct 1"}')$$, :org_b)),
          '22023 field: account', 'org_stripe_set: the account id is checked');
SELECT is(pg_temp.err(format($$SELECT api.org_stripe_set(%s, '{"acct": "acct_1"}')$$, :org_b)),
          '22023 field: acct', 'org_stripe_set: unknown field');
SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 60)', :ev_b,
                             pg_temp.body(:tt_bpaid, 'vic@example.org'))),
          'PT409', 'paid tickets without a Stripe account: 409');
SELECT is(api.org_stripe_set(:org_b, '{"account": "acct_1OrgB"}')->>'stripe_account',
          'acct_1OrgB', 'org_stripe_set');
SELECT is(pg_temp.reg(:ev_b, pg_temp.body(:tt_bpaid, 'vic@example.org'), 61)->>'status',
          'pending', 'vic registers for a paid ticket of Org B');
RESET ROLE;
UPDATE app.organisations SET stripe_account = NULL WHERE id = :org_b;
SET LOCAL ROLE platform_app;
SELECT is((SELECT r->>'status' || ' ' || (r->'registrations'->0->>'status') || ': '
                  || (r->'registrations'->0->>'error')
           FROM pg_temp.confirm(61) AS r),
          'signed_in failed: Paid tickets for "B Night" cannot be bought at the moment.',
          'the account gone meanwhile: signed in, the registration failed, no place held');
RESET ROLE;
SELECT is((SELECT sold FROM app.ticket_types WHERE id = :tt_bpaid), 0, 'nothing held');
UPDATE app.organisations SET stripe_account = 'acct_1OrgB' WHERE id = :org_b;
SET LOCAL ROLE platform_app;

SELECT is(pg_temp.err(format('SELECT api.event_registrations(%s, %s)', :org_b, :ev)),
          'PT404', 'another organisation''s event: 404');
SELECT is(pg_temp.err(format('SELECT api.event_cancel(%s, %s)', :org_b, :ev)),
          'PT404', 'cancelling another organisation''s event: 404');
SELECT is((SELECT (r->'counts'->>'issued') || ' ' || (r->'counts'->>'sold_out') || ' '
                  || json_array_length(r->'registrations')
           FROM api.event_registrations(:org_a, :ev) AS r),
          '4 1 9', 'event_registrations: everyone, with counts per status');
SELECT is((SELECT x->>'consent_version' || ' ' || (x->>'terms_version')
           FROM json_array_elements(api.event_registrations(:org_a, :ev)->'registrations') AS x
           WHERE x->>'email' = 'pat@example.org'),
          'privacy-3 terms-2', 'with the consent record');

SELECT is(pg_temp.reg(:ev, pg_temp.body(:tt_sup, 'late@example.org', 'Late'), 40)->>'status',
          'pending', 'someone still pending');

SELECT is((SELECT (r->>'tickets_cancelled') || ' ' || (r->>'refunds') || ' ' || (r->'event'->>'status')
           FROM api.event_cancel(:org_a, :ev) AS r),
          '4 2 cancelled', 'the organiser cancels the event: 4 tickets, 2 refunds');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM app.tickets WHERE event_id = :ev AND status = 'valid'), 0,
          'no valid ticket left');
SELECT is((SELECT string_agg(payload->>'to', ' ' ORDER BY payload->>'to') FROM jobs.jobs
           WHERE payload->>'template' = 'event_cancelled'),
          'bob@example.org hal@example.org pat@example.org sam@example.org',
          'each holder is mailed');
SELECT is((SELECT payload->'vars'->>'refund_note' FROM jobs.jobs
           WHERE payload->>'template' = 'event_cancelled' AND payload->>'to' = 'pat@example.org'),
          'Your payment of 25.00 EUR is refunded in full to the card you paid with; '
          'it may take a few days to appear.', 'the paid one hears of the refund');
SELECT is((SELECT string_agg(payload->'form'->>'payment_intent', ' ' ORDER BY id) FROM jobs.jobs
           WHERE kind = 'call' AND payload->>'path' = '/v1/refunds'),
          'pi_exp pi_pat pi_hal', 'refund calls for the paid tickets');
SELECT is((SELECT status || ': ' || error FROM app.registrations WHERE email = 'late@example.org'),
          'expired: The organiser cancelled the event.',
          'the pending registration has expired, saying why');
SELECT callbacks.stripe_refund_created(jsonb_build_object('registration_id', :reg_pat), 200,
       '{"id": "re_pat", "object": "refund", "status": "succeeded"}') \g /dev/null
SELECT is((SELECT refund_id || ' ' || (refunded_at IS NOT NULL) FROM app.registrations
           WHERE id = :reg_pat), 're_pat true', 'the refund is recorded');
SET LOCAL ROLE platform_app;
SELECT is(api.registration_get(:pat, :reg_pat)->>'refunded', 'true',
          'the participant sees it refunded');
SELECT is(pg_temp.err(format('SELECT pg_temp.reg(%s, %L, 41)', :ev,
                             pg_temp.body(:tt_sup, 'new@example.org'))),
          'PT409', 'a cancelled event takes no registrations');
RESET ROLE;

SELECT * FROM finish();
