-- pgTAP tests for sql/021_rentals_channels.sql (run by tools/sql-test).
-- Sealing itself is nginx's (t/103-rentals-channels.t); here the SQL gets
-- values shaped as platform_seal makes them.

SELECT * FROM no_plan();

SELECT has_table('rentals', 'channel_kinds', 'rentals.channel_kinds exists');
SELECT has_table('rentals', 'channels', 'rentals.channels exists');
SELECT has_table('rentals', 'booking_errors', 'rentals.booking_errors exists');
SELECT ok((SELECT relrowsecurity FROM pg_class
           WHERE oid = 'rentals.channels'::regclass),
          'row-level security is on for channels');
SELECT ok((SELECT relrowsecurity FROM pg_class
           WHERE oid = 'rentals.booking_errors'::regclass),
          'and for booking errors');
SELECT set_eq($$SELECT name FROM rentals.channel_kinds$$,
              ARRAY['airbnb', 'booking_com'], 'two channel kinds');

CREATE FUNCTION pg_temp.field_of(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    d text;
    s text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, s = RETURNED_SQLSTATE;
    RETURN s || coalesce(' ' || substring(d FROM '^field: (\S+)'), '');
END
$$;

INSERT INTO auth.users (email) VALUES ('ann@channels.test'),
                                      ('bob@channels.test');

CREATE TEMP TABLE u AS
SELECT (SELECT id FROM auth.users WHERE email = 'ann@channels.test') AS ann,
       (SELECT id FROM auth.users WHERE email = 'bob@channels.test') AS bob,
       -- shaped like platform_seal's output (base64 of 24 + 16 + n bytes)
       translate(encode(decode(repeat('ab', 60), 'hex'), 'base64'), E'\n', '') AS s1,
       translate(encode(decode(repeat('cd', 60), 'hex'), 'base64'), E'\n', '') AS s2;
GRANT SELECT ON u TO platform_app, rentals_tenant;

SELECT api.rentals_signup('{"email":"ann@channels.test","business_name":"Ann","slug":"ann-ch"}',
                          ann, repeat('A', 43), '127.0.0.1', 'http://x.test')
FROM u;
SELECT api.rentals_signup('{"email":"bob@channels.test","business_name":"Bob","slug":"bob-ch"}',
                          bob, repeat('B', 43), '127.0.0.1', 'http://x.test')
FROM u;

SET LOCAL ROLE platform_app;

SELECT throws_ok($$SELECT * FROM rentals.channels$$, '42501', NULL,
                 'nginx cannot read the channels');

CREATE TEMP TABLE p AS
SELECT (api.owner_property_create(ann, '{"name":"Sea","capacity":4,"price_minor":10000,"currency":"EUR"}')::jsonb->>'id')::bigint AS pa,
       (api.owner_property_create(bob, '{"name":"Flat","capacity":2,"price_minor":8000,"currency":"EUR"}')::jsonb->>'id')::bigint AS pb
FROM u;

-- keys: only sealed objects are taken
SELECT is(pg_temp.field_of($$SELECT api.owner_channel_put((SELECT ann FROM u), 'airbnb', '{"api_key":"plain","webhook_secret":"plain"}')$$),
          '22023 api_key', 'a plain string is refused (nginx seals them)');
SELECT is(pg_temp.field_of($$SELECT api.owner_channel_put((SELECT ann FROM u), 'airbnb', jsonb_build_object('api_key', jsonb_build_object('sealed', (SELECT s1 FROM u), 'last4', '9876')))$$),
          '22023 webhook_secret', 'connecting needs the webhook secret');
SELECT is(pg_temp.field_of($$SELECT api.owner_channel_put((SELECT ann FROM u), 'vrbo', '{}')$$),
          'PT404', 'an unknown kind: 404');

SELECT is((api.owner_channel_put(ann, 'airbnb',
              jsonb_build_object(
                  'api_key', jsonb_build_object('sealed', s1, 'last4', '9876'),
                  'webhook_secret', jsonb_build_object('sealed', s2, 'last4', 'wxyz')))::jsonb
           -> 'api_key' ->> 'last4'), '9876', 'ann connects airbnb')
FROM u;
SELECT is(current_setting('response.status', true), '201', 'created: 201');

SELECT ok(position((SELECT s1 FROM u) IN api.owner_channels(ann)::text) = 0
          AND position((SELECT s2 FROM u) IN api.owner_channels(ann)::text) = 0,
          'the list shows no sealed value') FROM u;
SELECT is((SELECT count(*) FROM json_array_elements(api.owner_channels(bob) -> 'channels') c
           WHERE (c ->> 'connected')::boolean), 0::bigint,
          'bob sees no connected channel') FROM u;
SELECT is(pg_temp.field_of($$SELECT api.owner_channel_delete((SELECT bob FROM u), 'airbnb')$$),
          'PT404', 'bob cannot delete ann''s channel');

-- the webhook secret lookup, by slug or id
SELECT is(api.channel_webhook_secret('ann-ch', 'airbnb'), (SELECT s2 FROM u),
          'the sealed secret by slug');
RESET ROLE;
SELECT is(api.channel_webhook_secret(
              (SELECT business_id::text FROM rentals.owners o, u WHERE o.user_id = u.ann), 'airbnb'),
          (SELECT s2 FROM u), 'and by id');
SELECT is(api.channel_webhook_secret('bob-ch', 'airbnb'), NULL,
          'none for bob');
SELECT is(api.channel_webhook_secret('ann-ch', 'booking_com'), NULL,
          'none for a kind not connected');

-- inbound: created, duplicate, changed, cancelled
SELECT is((api.channel_webhook('ann-ch', 'airbnb', jsonb_build_object(
              'id', 'e1', 'type', 'booking.created',
              'booking', jsonb_build_object('id', 'R1', 'property_id', pa,
                  'check_in', current_date + 10, 'check_out', current_date + 12)))::jsonb
           ->> 'outcome'), 'created', 'created') FROM p;
SELECT is((api.channel_webhook('ann-ch', 'airbnb', jsonb_build_object(
              'id', 'e1', 'type', 'booking.created',
              'booking', jsonb_build_object('id', 'R1', 'property_id', pa,
                  'check_in', current_date + 10, 'check_out', current_date + 12)))::jsonb
           ->> 'duplicate'), 'true', 'the same event: duplicate') FROM p;
SELECT is((SELECT count(*) FROM rentals.bookings WHERE external_id = 'R1'),
          1::bigint, 'one booking');
SELECT is((api.channel_webhook('ann-ch', 'airbnb', jsonb_build_object(
              'id', 'e2', 'type', 'booking.changed',
              'booking', jsonb_build_object('id', 'R1', 'property_id', pa,
                  'check_in', current_date + 11, 'check_out', current_date + 14)))::jsonb
           ->> 'outcome'), 'changed', 'changed') FROM p;
SELECT is((SELECT stay FROM rentals.bookings WHERE external_id = 'R1'),
          daterange(current_date + 11, current_date + 14), 'new dates');
SELECT is(pg_temp.field_of(format($$SELECT api.channel_webhook('ann-ch', 'airbnb', '{"id":"e9","type":"booking.created","booking":{"id":"R9","property_id":%s,"check_in":"soon","check_out":"2030-01-01"}}')$$,
                                  (SELECT pa FROM p))),
          '22023 booking.check_in', 'a bad date names the field');
SELECT is(pg_temp.field_of(format($$SELECT api.channel_webhook('ann-ch', 'airbnb', '{"id":"e9","type":"booking.created","booking":{"id":"R9","property_id":%s,"check_in":"2030-01-01","check_out":"2030-01-05"}}')$$,
                                  (SELECT pb FROM p))),
          'PT404 booking.property_id', 'another business''s property: 404');

-- a conflict: a booking error and a mail to the owners
SELECT api.owner_booking_create(ann, pa, jsonb_build_object(
           'check_in', current_date + 20, 'check_out', current_date + 25,
           'kind', 'block'))
FROM u, p;
SELECT is((api.channel_webhook('ann-ch', 'airbnb', jsonb_build_object(
              'id', 'e3', 'type', 'booking.created',
              'booking', jsonb_build_object('id', 'R2', 'property_id', pa,
                  'check_in', current_date + 21, 'check_out', current_date + 23)))::jsonb
           ->> 'outcome'), 'conflict', 'overlapping: conflict') FROM p;
SELECT is((SELECT count(*) FROM rentals.booking_errors WHERE external_id = 'R2'),
          1::bigint, 'a booking error');
SELECT is((SELECT count(*) FROM rentals.bookings WHERE external_id = 'R2'),
          0::bigint, 'no booking');
SELECT ok(EXISTS (SELECT 1 FROM jobs.jobs WHERE kind = 'mail'
                  AND payload -> 'to' ? 'ann@channels.test'
                  AND payload ->> 'subject' LIKE 'Booking conflict%'),
          'the owners are mailed');

SELECT is((api.channel_webhook('ann-ch', 'airbnb', jsonb_build_object(
              'id', 'e4', 'type', 'booking.cancelled',
              'booking', jsonb_build_object('id', 'R1', 'property_id', pa)))::jsonb
           ->> 'outcome'), 'cancelled', 'cancelled') FROM p;
SELECT is((SELECT status FROM rentals.bookings WHERE external_id = 'R1'),
          'cancelled', 'the booking is cancelled');

-- booking errors: the owner's, resolved once
SELECT is(json_array_length(api.owner_booking_errors(ann) -> 'errors'), 1,
          'ann has one open error') FROM u;
SELECT is(json_array_length(api.owner_booking_errors(bob) -> 'errors'), 0,
          'bob none') FROM u;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_booking_error_resolve(%s, %s, '{}')$$,
                                  (SELECT bob FROM u),
                                  (SELECT id FROM rentals.booking_errors))),
          'PT404', 'bob cannot resolve it');
SELECT ok(api.owner_booking_error_resolve(ann, (SELECT id FROM rentals.booking_errors),
                                          '{"resolution":"moved"}')::jsonb ? 'resolved_at',
          'ann resolves it') FROM u;
SELECT is(json_array_length(api.owner_booking_errors(ann) -> 'errors'), 0,
          'none open') FROM u;

-- outbound: changes queue one keyed push per property
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key = 'channel-push:' || (SELECT pa FROM p)
             AND state = 'pending'), 1::bigint,
          'many changes: one pending push');
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key = 'channel-push:' || (SELECT pb FROM p)), 0::bigint,
          'no push for a business without channels');
UPDATE rentals.properties SET name = 'Sea 2' WHERE id = (SELECT pa FROM p);
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key LIKE 'channel-push:%' AND state = 'pending'), 1::bigint,
          'a property change joins it');

SELECT maintenance.channel_push(jsonb_build_object('property_id', pa)) FROM p;
SELECT is((SELECT payload -> 'headers' ->> 'X-Api-Key' FROM jobs.jobs
           WHERE kind = 'call' ORDER BY id DESC LIMIT 1),
          'sealed:' || (SELECT s1 FROM u), 'the call carries the sealed key');
SELECT is((SELECT payload ->> 'service' FROM jobs.jobs
           WHERE kind = 'call' ORDER BY id DESC LIMIT 1),
          'channel_airbnb', 'to the kind''s service');
SELECT is((SELECT jsonb_array_length(payload -> 'json' -> 'unavailable')
           FROM jobs.jobs WHERE kind = 'call' ORDER BY id DESC LIMIT 1),
          1, 'the block is unavailable, the cancelled stay is not');
SELECT throws_ok($$SELECT callbacks.channel_push('{"business_id":1,"kind":"airbnb"}', 500, '')$$,
                 'P0001', NULL, 'a failed push raises (retried, then dead)');

-- dead letters
UPDATE jobs.jobs SET state = 'dead', attempts = 8, last_error = 'HTTP status 500',
                     finished_at = now()
WHERE id = (SELECT max(id) FROM jobs.jobs WHERE kind = 'call');
CREATE TEMP TABLE dead AS SELECT max(id) AS id FROM jobs.jobs WHERE kind = 'call';
GRANT SELECT ON dead TO platform_app;
SET LOCAL ROLE platform_app;
SELECT is(json_array_length(api.owner_channel_dead(ann) -> 'dead'), 1,
          'ann sees the dead push') FROM u;
SELECT is(json_array_length(api.owner_channel_dead(bob) -> 'dead'), 0,
          'bob does not') FROM u;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_channel_retry(%s, %s)$$,
                                  (SELECT bob FROM u),
                                  (SELECT id FROM dead))),
          'PT404', 'bob cannot retry it');
SELECT is((api.owner_channel_retry(ann, (SELECT id FROM dead))::jsonb ->> 'retried'),
          'true', 'ann retries it') FROM u;
RESET ROLE;
SELECT is((SELECT state FROM jobs.jobs WHERE id = (SELECT id FROM dead)),
          'pending', 'pending again');

-- row-level security on the new tables
CREATE TEMP TABLE ids AS
SELECT (SELECT business_id FROM rentals.owners, u WHERE user_id = u.ann) AS ann_b,
       (SELECT business_id FROM rentals.owners, u WHERE user_id = u.bob) AS bob_b;
GRANT SELECT ON ids TO rentals_tenant;
SET LOCAL rentals.business = '';
SET LOCAL ROLE rentals_tenant;
SELECT is((SELECT count(*) FROM rentals.channels), 0::bigint,
          'no business chosen: no channels');
DO $$ BEGIN
    PERFORM set_config('rentals.business', (SELECT bob_b::text FROM ids), true);
END $$;
SELECT is((SELECT count(*) FROM rentals.channels), 0::bigint,
          'bob''s business: none of ann''s channels');
SELECT is((SELECT count(*) FROM rentals.booking_errors), 0::bigint,
          'nor her booking errors');
SELECT throws_ok(format($$INSERT INTO rentals.channels (business_id, kind, api_key_sealed, api_key_last4, webhook_secret_sealed)
                          VALUES (%s, 'booking_com', %L, 'x', %L)$$,
                        (SELECT ann_b FROM ids), (SELECT s1 FROM u), (SELECT s1 FROM u)),
                 '42501', NULL, 'writing into another business is refused');
RESET ROLE;

SELECT * FROM finish();
