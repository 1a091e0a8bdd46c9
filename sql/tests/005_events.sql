-- pgTAP tests for sql/005_events.sql (run by tools/sql-test, see there).

SELECT * FROM no_plan();

SELECT has_table('app', 'organisations', 'app.organisations exists');
SELECT has_table('app', 'ticket_types', 'app.ticket_types exists');
SELECT has_column('app', 'events', c, 'app.events.' || c)
FROM unnest(ARRAY['cover_url', 'main_stage', 'breakouts', 'team_size',
                  'updated_at']) AS c;
SELECT has_index('app', 'events', 'events_title_trgm_idx',
                 'trigram index for the title search');
SELECT is((SELECT count(*)::int FROM pg_proc
           WHERE proname = 'events_upcoming'
             AND pronamespace = 'api'::regnamespace), 1,
          'one api.events_upcoming (no ambiguous overload)');

-- Constraints
INSERT INTO app.organisations (name) VALUES ('fixture org');
INSERT INTO app.events (organisation_id, title, business_type, starts_at, ends_at)
VALUES ((SELECT id FROM app.organisations WHERE name = 'fixture org'),
        'fixture', 'meetup', now() + interval '1 day', now() + interval '2 days');
SELECT throws_ok($$INSERT INTO app.ticket_types (event_id, name, quantity)
                   SELECT id, 'x', 0 FROM app.events WHERE title = 'fixture'$$,
                 '23514', NULL, 'quantity must be positive');
SELECT throws_ok($$INSERT INTO app.ticket_types (event_id, name, quantity, price_minor)
                   SELECT id, 'x', 1, 500 FROM app.events WHERE title = 'fixture'$$,
                 '23514', NULL, 'a price needs a currency');
SELECT throws_ok($$INSERT INTO app.ticket_types (event_id, name, quantity, price_minor, currency)
                   SELECT id, 'x', 1, 500, 'XXX' FROM app.events WHERE title = 'fixture'$$,
                 '23514', NULL, 'unknown currency refused');
SELECT throws_ok($$INSERT INTO app.ticket_types (event_id, name, quantity, sold)
                   SELECT id, 'x', 1, 2 FROM app.events WHERE title = 'fixture'$$,
                 '23514', NULL, 'sold <= quantity');

-- Users
INSERT INTO auth.users (email) VALUES ('ann@example.org'), ('bob@example.org');
CREATE TEMP TABLE ids AS
SELECT (SELECT id FROM auth.users WHERE email = 'ann@example.org') AS ann,
       (SELECT id FROM auth.users WHERE email = 'bob@example.org') AS bob;
GRANT SELECT ON ids TO platform_app;

SET LOCAL ROLE platform_app;

-- Organisations
SELECT throws_ok($$SELECT api.org_create((SELECT ann FROM ids), '{"name": ""}')$$,
                 '22023', 'name is required.', 'an organisation needs a name');
SELECT ok((api.org_create((SELECT ann FROM ids), '{"name": "Org A"}')->>'id') IS NOT NULL,
          'org_create answers the id');
SELECT is(current_setting('response.status'), '201', '201 Created');
RESET ROLE;
ALTER TABLE ids ADD COLUMN org_a bigint;
UPDATE ids SET org_a = (SELECT id FROM app.organisations WHERE name = 'Org A');
SET LOCAL ROLE platform_app;
SELECT matches(current_setting('response.session'),
               'r=[^;]*organiser:' || (SELECT org_a FROM ids),
               'the session is re-issued with the organiser membership');
SELECT lives_ok($$SELECT api.org_create((SELECT bob FROM ids), '{"name": "Org B"}')$$,
                'bob creates Org B');
RESET ROLE;
ALTER TABLE ids ADD COLUMN org_b bigint;
UPDATE ids SET org_b = (SELECT id FROM app.organisations WHERE name = 'Org B');
SET LOCAL ROLE platform_app;

SELECT throws_ok($$SELECT api.org_invite((SELECT bob FROM ids), (SELECT org_a FROM ids),
                                         '{"email": "x@example.org"}')$$,
                 'PT403', NULL, 'only organisers of the org invite');
SELECT throws_ok($$SELECT api.org_invite((SELECT ann FROM ids), (SELECT org_a FROM ids),
                                         '{"email": "nope"}')$$,
                 '22023', 'email is not a valid email address.', 'invite: bad email');
SELECT is(api.org_invite((SELECT ann FROM ids), (SELECT org_a FROM ids),
                         '{"email": "Carol@Example.org"}')->>'added', 'true',
          'carol invited');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM auth.memberships AS m
           JOIN auth.users AS u ON u.id = m.user_id
           WHERE u.email = 'carol@example.org' AND m.role = 'organiser'
             AND m.org_id = (SELECT org_a FROM ids)), 1,
          'carol is an organiser of Org A');
SELECT is((SELECT payload->>'subject' FROM jobs.jobs
           WHERE payload->>'to' = 'carol@example.org'),
          'You are now an organiser of Org A', 'the invite mail is queued');
SET LOCAL ROLE platform_app;

-- Events: validation names the field
CREATE FUNCTION pg_temp.detail_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $$;

SELECT is(pg_temp.detail_of(format($$SELECT api.event_create(%s, %L)$$, (SELECT org_a FROM ids), b)),
          'field: ' || f, 'event_create: bad ' || f)
FROM (VALUES
    ('title', '{"title": "", "business_type": "meetup", "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-01T12:00Z"}'),
    ('title', json_build_object('title', repeat('x', 201), 'business_type', 'meetup', 'starts_at', '2030-01-01T10:00Z', 'ends_at', '2030-01-01T12:00Z')::text),
    ('description', json_build_object('title', 't', 'description', repeat('x', 10001), 'business_type', 'meetup', 'starts_at', '2030-01-01T10:00Z', 'ends_at', '2030-01-01T12:00Z')::text),
    ('business_type', '{"title": "t", "business_type": "party", "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-01T12:00Z"}'),
    ('starts_at', '{"title": "t", "business_type": "meetup", "starts_at": "2030-02-30", "ends_at": "2030-01-01T12:00Z"}'),
    ('ends_at', '{"title": "t", "business_type": "meetup", "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-01T09:00Z"}'),
    ('capacity', '{"title": "t", "business_type": "meetup", "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-01T12:00Z", "capacity": -1}'),
    ('time_zone', '{"title": "t", "business_type": "meetup", "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-01T12:00Z", "time_zone": "Mars/Olympus"}'),
    ('colour', '{"title": "t", "business_type": "meetup", "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-01T12:00Z", "colour": "red"}')
) AS v(f, b);

SELECT is(api.event_create((SELECT org_a FROM ids),
            '{"title": "Rust 100% Conf_2030", "business_type": "conference",
              "starts_at": "2030-01-01T10:00Z", "ends_at": "2030-01-02T18:00Z",
              "time_zone": "Europe/Paris", "main_stage": true, "team_size": 4}')->>'status',
          'draft', 'event_create: a draft');
RESET ROLE;
ALTER TABLE ids ADD COLUMN ev bigint;
UPDATE ids SET ev = (SELECT id FROM app.events WHERE title = 'Rust 100% Conf_2030');
SET LOCAL ROLE platform_app;

SELECT ok(api.event_get((SELECT ev FROM ids)) IS NULL, 'a draft is not public');
SELECT is(json_array_length(api.org_events((SELECT org_a FROM ids))->'current'), 1,
          'org_events lists the draft');
SELECT is(json_array_length(api.org_events((SELECT org_b FROM ids))->'current'), 0,
          'not in Org B''s list');

-- Tenant isolation: someone else's event is 404
SELECT throws_ok($$SELECT api.event_update((SELECT org_b FROM ids), (SELECT ev FROM ids), '{"title": "mine"}')$$,
                 'PT404', 'No such event.', 'update of another org''s event: 404');
SELECT throws_ok($$SELECT api.event_publish((SELECT org_b FROM ids), (SELECT ev FROM ids))$$,
                 'PT404', 'No such event.', 'publish of another org''s event: 404');
SELECT throws_ok($$SELECT api.ticket_type_create((SELECT org_b FROM ids), (SELECT ev FROM ids), '{"name": "x", "quantity": 1}')$$,
                 'PT404', 'No such event.', 'ticket type on another org''s event: 404');
SELECT ok(api.org_event_get((SELECT org_b FROM ids), (SELECT ev FROM ids)) IS NULL,
          'org_event_get of another org''s event: NULL (404)');

-- Publish rules
SELECT is(pg_temp.detail_of(format('SELECT api.event_publish(%s, %s)', (SELECT org_a FROM ids), (SELECT ev FROM ids))),
          'field: ticket_types', 'publish needs a ticket type');
SELECT is(api.ticket_type_create((SELECT org_a FROM ids), (SELECT ev FROM ids),
            '{"name": "Standard", "price_minor": 2500, "currency": "eur", "quantity": 50}')->>'currency',
          'EUR', 'paid ticket type created');
SELECT is(pg_temp.detail_of(format('SELECT api.ticket_type_create(%s, %s, %L)', (SELECT org_a FROM ids), (SELECT ev FROM ids),
            '{"name": "x", "price_minor": 100, "quantity": 5}')),
          'field: currency', 'a price needs a currency');
SELECT is(pg_temp.detail_of(format('SELECT api.ticket_type_create(%s, %s, %L)', (SELECT org_a FROM ids), (SELECT ev FROM ids),
            '{"name": "x", "quantity": 0}')),
          'field: quantity', 'quantity must be positive');
SELECT is(pg_temp.detail_of(format('SELECT api.event_publish(%s, %s)', (SELECT org_a FROM ids), (SELECT ev FROM ids))),
          'field: stripe_account', 'paid tickets need a Stripe account');
RESET ROLE;
UPDATE app.organisations SET stripe_account = 'acct_test' WHERE id = (SELECT org_a FROM ids);
UPDATE app.events SET starts_at = now() - interval '1 hour' WHERE id = (SELECT ev FROM ids);
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.detail_of(format('SELECT api.event_publish(%s, %s)', (SELECT org_a FROM ids), (SELECT ev FROM ids))),
          'field: starts_at', 'an event in the past cannot be published');
SELECT is(api.event_update((SELECT org_a FROM ids), (SELECT ev FROM ids),
            '{"starts_at": "2030-01-01T10:00Z"}')->>'title',
          'Rust 100% Conf_2030', 'event_update keeps the fields not sent');
SELECT is(api.event_publish((SELECT org_a FROM ids), (SELECT ev FROM ids))->>'status',
          'published', 'published');

-- Public listing and detail
SELECT is(api.event_get((SELECT ev FROM ids))->>'organisation', 'Org A',
          'event_get: organisation name');
SELECT is(api.event_get((SELECT ev FROM ids))->'ticket_types'->0->>'remaining', '50',
          'event_get: ticket types with remaining');
SELECT is(json_array_length(api.events_upcoming(q => 'rust')->'items'), 1, 'q: found');
SELECT is(json_array_length(api.events_upcoming(q => '100%25')->'items'), 1, 'q: %-decoded');
SELECT is(json_array_length(api.events_upcoming(q => '100%')->'items'), 1, 'q: a lone % is literal');
SELECT is(json_array_length(api.events_upcoming(q => '0%25 C')->'items'), 1, 'q: % is not a wildcard');
SELECT is(json_array_length(api.events_upcoming(q => 'Rust%')->'items'), 0, 'q: % matched literally');
SELECT is(json_array_length(api.events_upcoming(q => 'f_2')->'items'), 1, 'q: _ matched literally');
SELECT is(json_array_length(api.events_upcoming(q => 'f__')->'items'), 0, 'q: _ is not a wildcard');
SELECT is(json_array_length(api.events_upcoming(from_date => '2030-01-02')->'items'), 1,
          'from: overlapping events');
SELECT is(json_array_length(api.events_upcoming(from_date => '2030-01-03')->'items'), 0,
          'from: after the end');
SELECT is(json_array_length(api.events_upcoming(to_date => '2029-12-31')->'items'), 0,
          'to: before the start');
SELECT is(json_array_length(api.events_upcoming(NULL, 20, 'conference', '2030-01-01', '2030-01-01')->'items'), 1,
          'positional call with all filters');
SELECT throws_ok($$SELECT api.events_upcoming(from_date => '2030-01-02', to_date => '2030-01-01')$$,
                 '22023', 'to is before from', 'to before from: 400');

-- Ticket type update / delete
RESET ROLE;
ALTER TABLE ids ADD COLUMN tt bigint;
UPDATE ids SET tt = (SELECT id FROM app.ticket_types WHERE name = 'Standard');
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.detail_of(format('SELECT api.ticket_type_update(%s, %s, %s, %L)', (SELECT org_a FROM ids), (SELECT ev FROM ids),
            (SELECT tt FROM ids), '{"currency": "XYZ"}')),
          'field: currency', 'ticket_type_update: unknown currency');
SELECT is(api.ticket_type_update((SELECT org_a FROM ids), (SELECT ev FROM ids),
            (SELECT tt FROM ids), '{"quantity": 2}')->>'quantity',
          '2', 'ticket_type_update');
RESET ROLE;

-- take_ticket: never more than quantity
SELECT is(app.take_ticket(id), true, 'take 1') FROM app.ticket_types WHERE name = 'Standard';
SELECT is(app.take_ticket(id), true, 'take 2') FROM app.ticket_types WHERE name = 'Standard';
SELECT is(app.take_ticket(id), false, 'sold out') FROM app.ticket_types WHERE name = 'Standard';
SELECT is(sold, 2, 'sold = quantity') FROM app.ticket_types WHERE name = 'Standard';
SELECT is(app.take_ticket(-1), false, 'unknown type: false');

SET LOCAL ROLE platform_app;
SELECT is(pg_temp.detail_of(format('SELECT api.ticket_type_update(%s, %s, %s, %L)', (SELECT org_a FROM ids), (SELECT ev FROM ids),
            (SELECT tt FROM ids), '{"quantity": 1}')),
          'field: quantity', 'quantity cannot go below sold');
SELECT throws_ok(format('SELECT api.ticket_type_delete(%s, %s, %s)', (SELECT org_a FROM ids), (SELECT ev FROM ids),
                        (SELECT tt FROM ids)),
                 'PT409', NULL, 'a ticket type with sales cannot be deleted');
SELECT throws_ok($$SELECT app.take_ticket(1)$$, '42501', NULL,
                 'nginx cannot call take_ticket');
SELECT throws_ok($$SELECT * FROM app.ticket_types$$, '42501', NULL,
                 'nginx cannot read ticket_types');
RESET ROLE;

SELECT is(app.url_decode('a+b%20c%C3%A9%'), 'a b cé%', 'url_decode');

SELECT * FROM finish();
