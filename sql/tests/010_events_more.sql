-- pgTAP tests for sql/010_events_more.sql (run by tools/sql-test: one
-- transaction, so now() is one instant throughout): the event's capacity
-- across ticket types (take_ticket, the early answer, the sentence, the
-- trigger on capacity and publishing), GET /api/orgs/{org}, GET /api/meta
-- and the one list of currencies, teams in my tickets, the time zone of
-- my team, the "My events" hint, and the self-rescheduling sweep of stale
-- pending registrations.  (Concurrency: t/73-capacity.t.)

SELECT * FROM no_plan();

-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- SQLSTATE, DETAIL and MESSAGE (and HINT) of a statement, or 'no error'.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; d text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, d = PG_EXCEPTION_DETAIL;
    RETURN s || coalesce(' ' || nullif(d, ''), '');
END $$;

CREATE FUNCTION pg_temp.msg(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; h text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
    RETURN m || coalesce(' | ' || nullif(h, ''), '');
END $$;

CREATE FUNCTION pg_temp.tok(n int) RETURNS text LANGUAGE sql AS $$
    SELECT rtrim(translate(encode(sha256(convert_to('010 token ' || n, 'UTF8')),
                                  'base64'), '+/', '-_'), '=');
$$;

-- POST /api/events/{ev}/registrations as nginx calls it.
CREATE FUNCTION pg_temp.reg(ev bigint, tt bigint, email text, tok int,
                            uid bigint DEFAULT NULL)
RETURNS json LANGUAGE sql AS $$
    SELECT api.registration_create(ev,
               jsonb_build_object('ticket_type_id', tt, 'email', email,
                                  'name', 'P ' || tok, 'accept_terms', true,
                                  'gdpr_consent', true),
               uid, pg_temp.tok(tok), '192.0.2.1', 'https://tickets.example.org',
               'terms-1', 'privacy-1', 1800, 100, 1000);
$$;

-- ---------------------------------------------------------------------
-- Shape and privileges
-- ---------------------------------------------------------------------

SELECT has_function('api'::name, f::name) FROM unnest(ARRAY['org_get', 'meta']) AS f;
SELECT ok(has_function_privilege('platform_app', f, 'EXECUTE'),
          'platform_app may call ' || f)
FROM unnest(ARRAY['api.org_get(bigint)', 'api.meta()']) AS f;
SELECT ok(NOT has_function_privilege('platform_app', f, 'EXECUTE'),
          f || ' is not nginx''s to call')
FROM unnest(ARRAY['app.take_ticket(bigint)', 'app.currencies()',
                  'app.patch_function(regprocedure,text,text)',
                  'app.ticket_team(bigint,bigint)',
                  'jobs.enqueue_next(text,jsonb,timestamptz,text)',
                  'maintenance.registrations_expire()']) AS f;
SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the new endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.pronamespace = 'api'::regnamespace AND p.proname IN ('org_get', 'meta');
SELECT has_trigger('app', 'events', 'events_capacity_check',
                   'capacity is checked on app.events');

-- Patches recognise themselves: running one again changes nothing.
SELECT is(app.patch_function('api.my_team(bigint, bigint)',
                             'never there', $x$'time_zone', e.time_zone$x$),
          false, 'a patch already applied is not applied again');
SELECT is(pg_temp.err($$SELECT app.patch_function('api.meta()', 'not in it', 'zzz')$$),
          'P0001 not in it', 'a passage not found fails the migration');

-- ---------------------------------------------------------------------
-- Currencies: one list
-- ---------------------------------------------------------------------

SELECT is(cardinality(app.currencies()), 12, 'twelve currencies');
SELECT ok(pg_get_constraintdef(c.oid) LIKE '%app.currencies()%',
          'the ticket types'' CHECK calls app.currencies()')
FROM pg_constraint AS c
WHERE c.conname = 'ticket_types_currency_check'
  AND c.conrelid = 'app.ticket_types'::regclass;
SELECT is(app.currency_digits('JPY'), 0, 'JPY has no minor digits');
SELECT is(app.currency_digits('EUR'), 2, 'EUR has two');

-- ---------------------------------------------------------------------
-- Fixtures
-- ---------------------------------------------------------------------

INSERT INTO app.organisations (name, stripe_account)
VALUES ('Cap Org', 'acct_1CapOrg'), ('Other Org', NULL);
INSERT INTO auth.users (email) VALUES ('olga@example.org'), ('oscar@example.org'),
    ('ann@example.org'), ('bob@example.org');
INSERT INTO auth.memberships (user_id, role, org_id, created_at)
SELECT u.id, 'organiser', o.id, now() - v.ago
FROM (VALUES ('olga@example.org', interval '2 days'),
             ('oscar@example.org', interval '1 day')) AS v(email, ago)
JOIN auth.users AS u ON u.email = v.email
JOIN app.organisations AS o ON o.name = 'Cap Org';

INSERT INTO app.events (organisation_id, title, business_type, starts_at,
                        ends_at, time_zone, status, capacity)
SELECT o.id, v.title, 'meetup', now() + interval '10 days',
       now() + interval '11 days', 'Europe/Paris', v.status, v.cap
FROM (VALUES ('Cap', 'published', 3), ('Small draft', 'draft', 0))
     AS v(title, status, cap)
JOIN app.organisations AS o ON o.name = 'Cap Org';

INSERT INTO app.ticket_types (event_id, name, quantity, sold, currency)
SELECT e.id, v.name, v.q, v.sold, v.cur
FROM (VALUES ('Cap', 'Early', 2, 0, 'EUR'), ('Cap', 'Late', 2, 0, NULL),
             ('Small draft', 'D', 5, 1, NULL)) AS v(ev, name, q, sold, cur)
JOIN app.events AS e ON e.title = v.ev;

SELECT (SELECT id FROM app.organisations WHERE name = 'Cap Org') AS org,
       (SELECT id FROM app.organisations WHERE name = 'Other Org') AS org_b,
       (SELECT id FROM app.events WHERE title = 'Cap') AS ev,
       (SELECT id FROM app.events WHERE title = 'Small draft') AS ev_draft,
       (SELECT id FROM app.ticket_types WHERE name = 'Early') AS tt_a,
       (SELECT id FROM app.ticket_types WHERE name = 'Late') AS tt_b,
       (SELECT id FROM auth.users WHERE email = 'olga@example.org') AS olga,
       (SELECT id FROM auth.users WHERE email = 'oscar@example.org') AS oscar,
       (SELECT id FROM auth.users WHERE email = 'ann@example.org') AS ann,
       (SELECT id FROM auth.users WHERE email = 'bob@example.org') AS bob
\gset

SELECT is(left(pg_temp.err($$INSERT INTO app.ticket_types (event_id, name, quantity,
                          price_minor, currency) VALUES ($$ || :ev || $$, 'X', 1, 100, 'XYZ')$$), 5),
          '23514', 'a currency not in the list is refused by the table');
SELECT is(pg_temp.msg(format('SELECT api.ticket_type_create(%s, %s, %L)', :org, :ev,
                             '{"name": "X", "quantity": 1, "price_minor": 100, "currency": "XYZ"}')),
          'currency must be one of ' || array_to_string(app.currencies(), ', ') || '.',
          'and by the API, listing app.currencies()');
SELECT is((api.ticket_type_create(:org, :ev,
               '{"name": "Yen", "quantity": 1, "price_minor": 100, "currency": "jpy"}')
          ->>'currency'), 'JPY', 'a listed currency is accepted');
DELETE FROM app.ticket_types WHERE name = 'Yen';

-- ---------------------------------------------------------------------
-- Capacity: 3 places for two types of 2
-- ---------------------------------------------------------------------

SELECT is(app.take_ticket(:tt_a), true, 'Early 1: taken');
SELECT is(app.take_ticket(:tt_a), true, 'Early 2: taken');
SELECT is(app.take_ticket(:tt_a), false, 'Early 3: the type is sold out');
SELECT is((SELECT (t->>'remaining')::int
           FROM json_array_elements(api.event_get(:ev)->'ticket_types') AS t
           WHERE (t->>'id')::bigint = :tt_b), 1,
          'Late shows 1 remaining (the capacity leaves one, not two)');
SELECT is(app.take_ticket(:tt_b), true, 'Late 1: the last place of the event');
SELECT is(app.take_ticket(:tt_b), false, 'Late 2: refused, the event is full');
SELECT is((SELECT array_agg(sold ORDER BY name) FROM app.ticket_types WHERE event_id = :ev),
          ARRAY[2, 1], 'sold: 2 + 1 = the capacity');
SELECT is((SELECT array_agg((t->>'remaining')::int)
           FROM json_array_elements(api.event_get(:ev)->'ticket_types') AS t),
          ARRAY[0, 0], 'the public event shows nothing remaining');
SELECT is((api.org_event_get(:org, :ev)->>'taken')::int, 3,
          'the organiser sees 3 places taken');
SELECT is(app.sold_out_message(t, e), 'Sorry, "Cap" is sold out.',
          'the sentence names the event when the capacity ran out')
FROM app.ticket_types AS t JOIN app.events AS e ON e.id = t.event_id
WHERE t.id = :tt_b;

-- The organiser changes the capacity.
SELECT is(pg_temp.err(format('SELECT api.event_update(%s, %s, %L)', :org, :ev,
                             '{"capacity": 2}')),
          'PT409 field: capacity', 'a capacity below the 3 places taken: 409 naming capacity');
SELECT is(pg_temp.msg(format('SELECT api.event_update(%s, %s, %L)', :org, :ev,
                             '{"capacity": 2}')),
          'capacity cannot be below the 3 places already taken.', 'in a sentence');
SELECT is((api.event_update(:org, :ev, '{"capacity": 3}')->>'capacity')::int, 3,
          'the capacity at the places taken is accepted');
SELECT is((api.event_update(:org, :ev, '{"title": "Cap"}')->>'title'), 'Cap',
          'other fields change freely');
SELECT is((api.event_update(:org, :ev, '{"capacity": null}')->>'capacity'), NULL,
          'no capacity: unlimited');
SELECT is(app.take_ticket(:tt_b), true, 'unlimited: Late 2 taken');
SELECT app.release_place(:tt_b);
SELECT is((api.event_update(:org, :ev, '{"capacity": 3}')->>'capacity')::int, 3,
          'back to 3');

-- Publishing a draft whose capacity is below its places taken.
SELECT is(pg_temp.err(format('SELECT api.event_publish(%s, %s)', :org, :ev_draft)),
          'PT409 field: capacity', 'publishing with capacity below the places taken: 409');
UPDATE app.events SET capacity = 1 WHERE id = :ev_draft;
SELECT is(api.event_publish(:org, :ev_draft)->>'status', 'published',
          'with enough capacity it is published');

-- Registration: the early answer and the confirmation's sentence.
SELECT is(pg_temp.msg(format('SELECT pg_temp.reg(%s, %s, %L, 1)', :ev, :tt_b,
                             'late@example.org')),
          'Sorry, "Cap" is sold out.', 'registering for a full event: sold out, naming the event');
SELECT app.release_place(:tt_b);
SELECT is(pg_temp.reg(:ev, :tt_b, 'carl@example.org', 2)->>'status', 'pending',
          'a place is free again: carl registers');
SELECT is(pg_temp.reg(:ev, :tt_b, 'dora@example.org', 3)->>'status', 'pending',
          'and dora');
SELECT is(app.registration_confirm(r.id, :ann), 'issued', 'the first confirmation gets it')
FROM app.registrations AS r WHERE r.email = 'carl@example.org';
SELECT is(app.registration_confirm(r.id, :bob), 'sold_out', 'the second finds it gone')
FROM app.registrations AS r WHERE r.email = 'dora@example.org';
SELECT is(r.error, 'Sorry, "Cap" is sold out.', 'in a sentence naming the event')
FROM app.registrations AS r WHERE r.email = 'dora@example.org';

-- The hint of "you already have a place" (ann holds carl's ticket now;
-- signed in as herself she registers again).
UPDATE app.events SET capacity = NULL WHERE id = :ev;
SELECT is(pg_temp.msg(format('SELECT pg_temp.reg(%s, %s, %L, 4, %s)', :ev, :tt_b,
                             'ann@example.org', :ann)),
          'You already have a place for "Cap". | Your tickets are on the "My events" page.',
          'the hint names the "My events" page');

-- ---------------------------------------------------------------------
-- GET /api/orgs/{org}
-- ---------------------------------------------------------------------

SET LOCAL ROLE platform_app;
SELECT is(api.org_get(:org)::jsonb - 'created_at' - 'id',
          jsonb_build_object('name', 'Cap Org', 'stripe_account', 'acct_1CapOrg',
              'organisers', jsonb_build_array(
                  jsonb_build_object('user_id', :olga, 'email', 'olga@example.org'),
                  jsonb_build_object('user_id', :oscar, 'email', 'oscar@example.org'))),
          'the organisation with its Stripe account and organisers, in joining order');
SELECT is((api.org_get(:org_b)::jsonb)->'organisers', '[]'::jsonb,
          'an organisation without organisers');
SELECT is(pg_temp.err('SELECT api.org_get(987654321)'), 'PT404', 'an unknown one: 404');

-- ---------------------------------------------------------------------
-- GET /api/meta
-- ---------------------------------------------------------------------

SELECT is(ARRAY(SELECT json_array_elements_text(api.meta()->'business_types')),
          app.business_types(), 'business types from app.business_types()');
SELECT is(ARRAY(SELECT c->>'code' FROM json_array_elements(api.meta()->'currencies') AS c),
          ARRAY['EUR', 'USD', 'GBP', 'CHF', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK',
                'CAD', 'AUD', 'JPY'], 'currencies from app.currencies(), in order');
SELECT is((SELECT c::jsonb FROM json_array_elements(api.meta()->'currencies') AS c
           WHERE c->>'code' = 'JPY'),
          '{"code": "JPY", "digits": 0}'::jsonb, 'with the digits of the minor unit');
SELECT matches(current_setting('response.headers'), 'Cache-Control', 'cacheable');
RESET ROLE;

-- ---------------------------------------------------------------------
-- Teams in my tickets; the time zone of my team
-- ---------------------------------------------------------------------

INSERT INTO app.teams (event_id, number, name) VALUES (:ev, 1, 'Team 1');
INSERT INTO app.team_members (team_id, event_id, user_id)
SELECT t.id, :ev, :ann FROM app.teams AS t WHERE t.event_id = :ev;
SELECT id AS team FROM app.teams WHERE event_id = :ev \gset

SET LOCAL ROLE platform_app;
SELECT is((api.my_tickets(:ann)->'upcoming'->0->'team')::jsonb,
          jsonb_build_object('id', :team, 'name', 'Team 1'),
          'my tickets: the ticket carries its team');
SELECT is((api.my_team(:ann, :ev)->'event'->>'time_zone'), 'Europe/Paris',
          'my team: the event''s time zone');
RESET ROLE;

UPDATE app.tickets SET status = 'cancelled' WHERE user_id = :ann;
SET LOCAL ROLE platform_app;
SELECT is((api.my_tickets(:ann)->'upcoming'->0)::jsonb->>'status'
          || ' ' || ((api.my_tickets(:ann)->'upcoming'->0)::jsonb->'team')::text,
          'cancelled null', 'a cancelled ticket has no team');
RESET ROLE;

-- ---------------------------------------------------------------------
-- The sweep of stale pending registrations
-- ---------------------------------------------------------------------

SELECT is((SELECT count(*)::int FROM jobs.jobs
           WHERE key = 'maintenance:registrations_expire' AND state = 'pending'
             AND kind = 'sql' AND payload = '{"function": "registrations_expire"}'),
          1, 'the migration seeded the first run');
SELECT id AS seeded FROM jobs.jobs WHERE key = 'maintenance:registrations_expire' \gset
SELECT is(jobs.enqueue('sql', '{"function": "registrations_expire"}',
                       run_at => now(), key => 'maintenance:registrations_expire'),
          :seeded::bigint, 'seeding again changes nothing');

INSERT INTO app.registrations (event_id, ticket_type_id, email, name,
                               terms_version, consent_version, created_at)
VALUES (:ev, :tt_a, 'stale@example.org', 'Stale', 'terms-1', 'privacy-1',
        now() - interval '25 hours'),
       (:ev, :tt_a, 'fresh@example.org', 'Fresh', 'terms-1', 'privacy-1',
        now() - interval '23 hours');

-- As the runner does it: claimed (running, attempt 1), then run.
UPDATE jobs.jobs SET state = 'running', attempts = 1, run_at = now()
WHERE id = :seeded;
SELECT is(jobs.run_sql(:seeded, 1), NULL, 'the job runs without error');

SELECT is((SELECT row(status, error)::text FROM app.registrations
           WHERE email = 'stale@example.org'),
          row('expired', 'This registration was not confirmed in time. Please '
                         'register again.')::text,
          'a pending registration older than a day expired');
SELECT is((SELECT status FROM app.registrations WHERE email = 'fresh@example.org'),
          'pending', 'a younger one is left');
SELECT is((SELECT row(state, key)::text FROM jobs.jobs WHERE id = :seeded),
          row('done', NULL::text)::text, 'the run is done (it handed its key over)');
SELECT is((SELECT row(state, run_at)::text FROM jobs.jobs
           WHERE key = 'maintenance:registrations_expire' AND id <> :seeded),
          row('pending', now() + interval '1 hour')::text,
          'and the next run is pending an hour later, under the key');
SELECT is(maintenance.registrations_expire(), 0,
          'run by hand: nothing left to expire');
SELECT is((SELECT count(*)::int FROM jobs.jobs
           WHERE key = 'maintenance:registrations_expire'), 1,
          'and still one next run (the key dedupes outside a job)');

SELECT * FROM finish();
