-- pgTAP tests for sql/018_lifts.sql (run by tools/sql-test, see there): the
-- registry and its tenant isolation, validation naming the field, the
-- device flow's states (pending, slow_down with the interval growing,
-- denied, expired, issued once), the token's layout, partitions made ahead
-- and on demand, and lifts.ingest's outcomes (stored, duplicate within and
-- across batches, refused for a revoked generation or an unknown lift).

SELECT * FROM no_plan();

-- ---------------------------------------------------------------- schema

SELECT has_table('lifts', t, 'lifts.' || t || ' exists')
FROM unnest(ARRAY['buildings', 'lifts', 'device_authorizations',
                  'readings']) AS t;
SELECT is((SELECT relkind::text FROM pg_class
           WHERE oid = 'lifts.readings'::regclass), 'p',
          'readings is partitioned');
SELECT col_is_unique('lifts', 'readings', ARRAY['lift_id', 'seq', 'ts'],
                     'readings are unique by lift, seq and ts');
SELECT ok(NOT has_table_privilege('platform_app', 'lifts.' || t, p),
          'platform_app has no ' || p || ' on lifts.' || t)
FROM unnest(ARRAY['buildings', 'lifts', 'device_authorizations',
                  'readings']) AS t,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p;
SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE (p.pronamespace = 'api'::regnamespace
       AND (p.proname LIKE 'lift%' OR p.proname LIKE 'device%'))
   OR (p.pronamespace = 'lifts'::regnamespace AND p.proname = 'ingest');
SELECT ok(has_function_privilege('platform_app',
          'lifts.ingest(bigint[], int[], bigint[], bigint[], text[], int[], '
          'int[], text[], int[], real[], text[], bigint[], bigint[], '
          'bigint[], bigint[], bigint[])', 'EXECUTE'),
          'nginx may call lifts.ingest');
SELECT ok(NOT has_function_privilege('platform_app',
          'lifts.ensure_partition(date)', 'EXECUTE'),
          'but not make partitions itself');
SELECT has_function('maintenance', f, 'maintenance.' || f || ' for SQL jobs')
FROM unnest(ARRAY['lifts_partitions', 'lifts_purge']) AS f;

-- ---------------------------------------------------------------- partitions

SELECT is((SELECT count(*)::int FROM pg_inherits
           WHERE inhparent = 'lifts.readings'::regclass
             AND inhrelid::regclass::text = 'lifts.readings_'
                 || to_char((now() AT TIME ZONE 'UTC')::date + d, 'YYYYMMDD')),
          1, 'a partition for today + ' || d)
FROM generate_series(-1, 7) AS d;
SELECT is(lifts.create_partitions(1, 7), 0, 'made ahead: nothing to add');
SELECT is(lifts.create_partitions(0, 9), 2, 'two more days ahead');
SELECT ok(lifts.ensure_partition(date '2020-02-29'), 'a past day on demand');
SELECT ok(NOT lifts.ensure_partition(date '2020-02-29'), 'only once');
SELECT is((SELECT pg_get_expr(relpartbound, oid) FROM pg_class
           WHERE oid = 'lifts.readings_20200229'::regclass),
          'FOR VALUES FROM (''2020-02-29 00:00:00+00'') TO (''2020-03-01 00:00:00+00'')',
          'bounds: one UTC day')
FROM (SELECT set_config('timezone', 'UTC', true)) AS x;
SELECT ok((maintenance.lifts_partitions()->>'created') IS NOT NULL,
          'maintenance.lifts_partitions answers');

-- ---------------------------------------------------------------- fixtures

CREATE TEMP TABLE ids (k text PRIMARY KEY, v bigint NOT NULL);
GRANT SELECT ON ids TO platform_app;
CREATE FUNCTION pg_temp.id(key text) RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT v FROM ids WHERE k = key $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org A'), ('Org B')
           RETURNING id, name)
INSERT INTO ids SELECT CASE name WHEN 'Org A' THEN 'org_a' ELSE 'org_b' END, id
FROM o;

-- ---------------------------------------------------------------- registry

SET ROLE platform_app;

SELECT throws_ok(format('SELECT api.lift_building_create(%s, %L)',
                        pg_temp.id('org_a'), '{"name": ""}'),
                 '22023', NULL, 'empty building name: 22023');

SELECT is((api.lift_building_create(pg_temp.id('org_a'),
           '{"name": "Tower", "address": "1 Main St"}')->>'name'), 'Tower',
          'building created');
RESET ROLE;
INSERT INTO ids SELECT 'tower', id FROM lifts.buildings WHERE name = 'Tower';
SET ROLE platform_app;

SELECT is((api.lift_create(pg_temp.id('org_a'),
           json_build_object('serial', 'SN-1', 'model', 'M', 'floors', 10,
                             'building_id', pg_temp.id('tower'))::jsonb)
           ->>'serial'), 'SN-1', 'lift created');
RESET ROLE;
INSERT INTO ids SELECT 'sn1', id FROM lifts.lifts WHERE serial = 'SN-1';
SET ROLE platform_app;

SELECT throws_like(format('SELECT api.lift_create(%s, %L)', pg_temp.id('org_b'),
                          json_build_object('serial', 'SN-2', 'model', 'M',
                                            'floors', 10, 'building_id',
                                            pg_temp.id('tower'))),
                   '%building%', 'another organisation''s building is refused');
SELECT is(api.lift_get(pg_temp.id('org_b'), pg_temp.id('sn1'))::text, NULL,
          'another organisation does not see the lift');
SELECT is(api.lift_delete(pg_temp.id('org_b'), pg_temp.id('sn1'))::text, NULL,
          'nor delete it');
SELECT is(api.lift_revoke(pg_temp.id('org_b'), pg_temp.id('sn1'))::text, NULL,
          'nor revoke its tokens');
SELECT is(json_array_length(api.lifts_list(pg_temp.id('org_b'))), 0,
          'nor list it');
SELECT is(json_array_length(api.lifts_list(pg_temp.id('org_a'))), 1,
          'its own organisation does');

-- ---------------------------------------------------------------- device flow

RESET ROLE;
SELECT ok(lifts.new_user_code() ~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$',
          'user codes: 8 of the 20 letters')
FROM generate_series(1, 20);
SELECT is(lifts.normalise_user_code(' wdjb-mjht '), 'WDJBMJHT',
          'user codes as typed: case, dash and spaces ignored');
SET ROLE platform_app;

SELECT is(api.device_authorize('{"serial": "SN-1"}', repeat('a', 43),
                               'http://x')->>'device_code', repeat('a', 43),
          'authorize: the device code is $platform_random');
SELECT throws_ok($$SELECT api.device_authorize('{"serial": "SN-1"}', 'short', 'http://x')$$,
                 'PT500', NULL, 'authorize without a proper random: PT500');
SELECT is(api.device_authorize('{"serial": 5}', repeat('b', 43), 'x')->>'error',
          'invalid_request', 'a serial that is not text: invalid_request');

SELECT is(api.device_token(json_build_object('device_code', repeat('a', 43))::jsonb,
                           repeat('0f', 32))->>'error',
          'authorization_pending', 'pending');
SELECT is(current_setting('response.status'), '400', 'with 400');
SELECT is(api.device_token(json_build_object('device_code', repeat('a', 43))::jsonb,
                           repeat('0f', 32))->>'error',
          'slow_down', 'too fast: slow_down');
RESET ROLE;
SELECT is((SELECT poll_interval FROM lifts.device_authorizations
           WHERE serial = 'SN-1'), 10, 'the interval grew by 5 s');
SET ROLE platform_app;
SELECT throws_ok($$SELECT api.device_token('{"device_code": "x"}', 'nothex')$$,
                 'PT500', NULL, 'token without the key: PT500');

RESET ROLE;
SELECT set_config('test.code', (SELECT user_code FROM lifts.device_authorizations
                                WHERE serial = 'SN-1'), false);
SET ROLE platform_app;
SELECT throws_ok(format('SELECT api.device_approve(%s, 1, %L)', pg_temp.id('org_b'),
                        json_build_object('user_code', current_setting('test.code'),
                                          'lift', pg_temp.id('sn1'))),
                 '22023', NULL, 'approving for another organisation''s lift: 22023');
SELECT is((api.device_approve(pg_temp.id('org_a'), 1,
           json_build_object('user_code', current_setting('test.code'),
                             'lift', pg_temp.id('sn1'))::jsonb)->>'approved'),
          'true', 'approved');
RESET ROLE;
UPDATE lifts.device_authorizations SET last_poll_at = now() - interval '1 hour';
SELECT set_config('test.token', lifts.device_token(pg_temp.id('sn1'), 1,
                                                   repeat('0f', 32)), false);
SET ROLE platform_app;

SELECT is(api.device_token(json_build_object('device_code', repeat('a', 43))::jsonb,
                           repeat('0f', 32))->>'access_token',
          current_setting('test.token'), 'the token, for generation 1');
SELECT is(api.device_token(json_build_object('device_code', repeat('a', 43))::jsonb,
                           repeat('0f', 32))->>'error',
          'invalid_grant', 'issued once');
RESET ROLE;

SELECT is(length(lifts.device_token(1, 0, repeat('00', 32))), 63,
          'a token is 63 characters');
SELECT is(substr(decode(translate(substr(lifts.device_token(258, 7,
                 repeat('00', 32)), 5) || '=', '-_', '+/'), 'base64'), 1, 12),
          '\x000000000000010200000007'::bytea,
          'it starts with the lift id and the generation, big-endian');
SELECT is(substr(decode(translate(substr(lifts.device_token(258, 7,
                 repeat('00', 32)), 5) || '=', '-_', '+/'), 'base64'), 13),
          hmac(convert_to('lift-token-v1', 'UTF8') || '\x000000000000010200000007'::bytea,
               decode(repeat('00', 32), 'hex'), 'sha256'),
          'then HMAC-SHA-256 of a label and those 12 bytes');

-- ---------------------------------------------------------------- ingest

CREATE FUNCTION pg_temp.ing(lift bigint[], gen int[], seq bigint[], ts bigint[])
RETURNS text LANGUAGE sql AS $$
    SELECT lifts.ingest(lift, gen, seq, ts,
        array_fill('trip'::text, ARRAY[cardinality(lift)]),
        array_fill(NULL::int, ARRAY[cardinality(lift)]),
        array_fill(NULL::int, ARRAY[cardinality(lift)]),
        array_fill(NULL::text, ARRAY[cardinality(lift)]),
        array_fill(NULL::int, ARRAY[cardinality(lift)]),
        array_fill(NULL::real, ARRAY[cardinality(lift)]),
        array_fill(NULL::text, ARRAY[cardinality(lift)]),
        array_fill(NULL::bigint, ARRAY[cardinality(lift)]),
        array_fill(NULL::bigint, ARRAY[cardinality(lift)]),
        array_fill(NULL::bigint, ARRAY[cardinality(lift)]),
        array_fill(NULL::bigint, ARRAY[cardinality(lift)]),
        array_fill(NULL::bigint, ARRAY[cardinality(lift)]))
$$;

SELECT set_config('test.now', (extract(epoch FROM now()) * 1000)::bigint::text,
                  false);

SELECT is(pg_temp.ing(ARRAY[pg_temp.id('sn1'), pg_temp.id('sn1'),
                            pg_temp.id('sn1'), pg_temp.id('sn1'), 999999],
                      ARRAY[1, 1, 1, 0, 1],
                      ARRAY[1, 2, 1, 3, 1],
                      ARRAY[current_setting('test.now')::bigint,
                            current_setting('test.now')::bigint,
                            current_setting('test.now')::bigint,
                            current_setting('test.now')::bigint,
                            current_setting('test.now')::bigint]),
          'aadrr', 'stored, stored, duplicate in the batch, old generation, '
                   'no such lift');
SELECT is(pg_temp.ing(ARRAY[pg_temp.id('sn1'), pg_temp.id('sn1')],
                      ARRAY[1, 1], ARRAY[1, 1],
                      ARRAY[current_setting('test.now')::bigint,
                            current_setting('test.now')::bigint + 1]),
          'da', 'the same seq again: duplicate; with another ts: stored');
SELECT is((SELECT count(*)::int FROM lifts.readings), 3, 'three rows');
SELECT is(pg_temp.ing(ARRAY[pg_temp.id('sn1')], ARRAY[1], ARRAY[9],
                      ARRAY[(extract(epoch FROM timestamptz '2019-06-01 12:00Z')
                             * 1000)::bigint]),
          'a', 'a day without a partition gets one');
SELECT ok(to_regclass('lifts.readings_20190601') IS NOT NULL, 'made on demand');
SELECT is(pg_temp.ing('{}', '{}', '{}', '{}'), '', 'an empty batch');

SELECT is((api.lift_revoke(pg_temp.id('org_a'), pg_temp.id('sn1'))
           ->>'token_generation'), '2', 'revoke: generation + 1');
SELECT is(pg_temp.ing(ARRAY[pg_temp.id('sn1')], ARRAY[1], ARRAY[50],
                      ARRAY[current_setting('test.now')::bigint]),
          'r', 'the revoked generation is refused');

SELECT is(maintenance.lifts_purge()->>'device_authorizations', '0',
          'purge: nothing old yet');

SELECT * FROM finish();
