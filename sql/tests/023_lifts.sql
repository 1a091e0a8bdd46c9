-- pgTAP tests for sql/023_lifts_storage.sql (and 024_lifts_alerts.sql):
-- rollups against the raw readings, a late backlog folded in, a run being
-- idempotent; the retention's candidates and the archive bookkeeping; the
-- repeating jobs being scheduled.

SELECT * FROM no_plan();

CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Rollup Org')
           RETURNING id)
INSERT INTO ids SELECT 'org', id FROM o;
WITH b AS (INSERT INTO lifts.buildings (org_id, name)
           SELECT id, 'Tower' FROM ids WHERE name = 'org' RETURNING id)
INSERT INTO ids SELECT 'tower', id FROM b;
WITH l AS (INSERT INTO lifts.lifts (org_id, building_id, serial, model, floors)
           SELECT (SELECT id FROM ids WHERE name = 'org'),
                  (SELECT id FROM ids WHERE name = 'tower'),
                  'RU-' || g, 'M', 20
           FROM generate_series(1, 3) AS g RETURNING id, serial)
INSERT INTO ids SELECT lower(serial), id FROM l;

-- Readings of lift L from SINCE, one every STEP for N, kinds in turn
-- trip, door, fault, status; floors 0 -> seq % 7; temperature seq % 40.
CREATE FUNCTION pg_temp.feed(l bigint, first_seq int, n int,
                             since timestamptz, step interval)
RETURNS text LANGUAGE sql AS $$
    SELECT lifts.ingest(array_agg(l), array_agg(0), array_agg(s::bigint),
        array_agg((extract(epoch FROM since + step * (s - first_seq))
                   * 1000)::bigint),
        array_agg((ARRAY['trip', 'door', 'fault', 'status'])[s % 4 + 1]),
        array_agg(CASE WHEN s % 4 = 0 THEN 0 END),
        array_agg(CASE WHEN s % 4 = 0 THEN s % 7 END),
        array_agg(NULL::text), array_agg(NULL::int),
        array_agg(((s % 40) - 5)::real),
        array_agg(CASE WHEN s % 4 = 2 THEN 'E1' END),
        array_agg(s::bigint), array_agg(NULL::bigint), array_agg(NULL::bigint),
        array_agg(NULL::bigint), array_agg(NULL::bigint))
    FROM generate_series(first_seq, first_seq + n - 1) AS s;
$$;

-- The hourly rollup computed straight from the raw readings.
CREATE FUNCTION pg_temp.expected_hourly()
RETURNS TABLE (lift_id bigint, hour timestamptz, readings bigint,
               trips bigint, floors bigint, doors bigint, faults bigint,
               tmin real, tmax real)
LANGUAGE sql AS $$
    SELECT lift_id, date_trunc('hour', ts, 'UTC'), count(*),
           count(*) FILTER (WHERE kind = 'trip'),
           coalesce(sum(abs(floor_to - floor_from))
                        FILTER (WHERE kind = 'trip'), 0),
           count(*) FILTER (WHERE kind = 'door'),
           count(*) FILTER (WHERE kind = 'fault'),
           min(temperature), max(temperature)
    FROM lifts.readings GROUP BY 1, 2;
$$;

CREATE FUNCTION pg_temp.actual_hourly()
RETURNS TABLE (lift_id bigint, hour timestamptz, readings bigint,
               trips bigint, floors bigint, doors bigint, faults bigint,
               tmin real, tmax real)
LANGUAGE sql AS $$
    SELECT lift_id, hour, readings, trips, floors_travelled, door_cycles,
           faults, temp_min, temp_max
    FROM lifts.rollup_hourly;
$$;

CREATE FUNCTION pg_temp.expected_daily()
RETURNS TABLE (lift_id bigint, day date, readings bigint, trips bigint,
               floors bigint, doors bigint, faults bigint, tmin real,
               tmax real, hours bigint)
LANGUAGE sql AS $$
    SELECT lift_id, (ts AT TIME ZONE 'UTC')::date, count(*),
           count(*) FILTER (WHERE kind = 'trip'),
           coalesce(sum(abs(floor_to - floor_from))
                        FILTER (WHERE kind = 'trip'), 0),
           count(*) FILTER (WHERE kind = 'door'),
           count(*) FILTER (WHERE kind = 'fault'),
           min(temperature), max(temperature),
           count(DISTINCT date_trunc('hour', ts, 'UTC'))
    FROM lifts.readings GROUP BY 1, 2;
$$;

CREATE FUNCTION pg_temp.actual_daily()
RETURNS TABLE (lift_id bigint, day date, readings bigint, trips bigint,
               floors bigint, doors bigint, faults bigint, tmin real,
               tmax real, hours bigint)
LANGUAGE sql AS $$
    SELECT lift_id, day, readings, trips, floors_travelled, door_cycles,
           faults, temp_min, temp_max, hours_reporting
    FROM lifts.rollup_daily;
$$;

-- ---------------------------------------------------------------- jobs

SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key = k AND state = 'pending' AND kind = 'sql'), 1::bigint,
          k || ' is scheduled')
FROM unnest(ARRAY['maintenance:lifts_rollup',
                  'maintenance:lifts_retention']) AS k;

-- ---------------------------------------------------------------- rollups

-- Three hours of lift 1 (every 30 s), two of lift 2 (every 45 s), ending
-- now.
SELECT is(pg_temp.feed((SELECT id FROM ids WHERE name = 'ru-1'), 1, 360,
                       now() - interval '3 hours', interval '30 seconds'),
          repeat('a', 360), 'lift 1: 360 readings stored');
SELECT is(pg_temp.feed((SELECT id FROM ids WHERE name = 'ru-2'), 1, 160,
                       now() - interval '2 hours', interval '45 seconds'),
          repeat('a', 160), 'lift 2: 160 readings stored');

SELECT ok((maintenance.lifts_rollup() ->> 'hours')::int >= 5,
          'the rollup job writes the hours touched');

SELECT set_eq('SELECT * FROM pg_temp.actual_hourly()',
              'SELECT * FROM pg_temp.expected_hourly()',
              'hourly rollups equal the raw readings');
SELECT set_eq('SELECT * FROM pg_temp.actual_daily()',
              'SELECT * FROM pg_temp.expected_daily()',
              'daily rollups equal the raw readings');
SELECT is((SELECT sum(trips) FROM lifts.rollup_daily
           WHERE lift_id = (SELECT id FROM ids WHERE name = 'ru-1')),
          90::bigint, 'lift 1: 90 trips (one reading in four)');

-- A backlog: lift 3 was offline for two days and sends them now, and lift
-- 1 a late reading within an hour already rolled up.
SELECT is(pg_temp.feed((SELECT id FROM ids WHERE name = 'ru-3'), 1, 576,
                       date_trunc('hour', now() - interval '2 days', 'UTC'),
                       interval '5 minutes'),
          repeat('a', 576), 'lift 3: a two-day backlog stored');
SELECT is(pg_temp.feed((SELECT id FROM ids WHERE name = 'ru-1'), 10000, 4,
                       date_trunc('hour', now() - interval '2 hours', 'UTC')
                           + interval '1 minute', interval '1 second'),
          'aaaa', 'lift 1: late readings in an old hour');

SELECT lives_ok('SELECT maintenance.lifts_rollup()', 'the job runs again');

SELECT set_eq('SELECT * FROM pg_temp.actual_hourly()',
              'SELECT * FROM pg_temp.expected_hourly()',
              'after the backlog: hourly rollups equal the raw readings');
SELECT set_eq('SELECT * FROM pg_temp.actual_daily()',
              'SELECT * FROM pg_temp.expected_daily()',
              'after the backlog: daily rollups equal the raw readings');
SELECT is((SELECT sum(hours_reporting) FROM lifts.rollup_daily
           WHERE lift_id = (SELECT id FROM ids WHERE name = 'ru-3')),
          48::bigint, 'lift 3 reported in 48 hours');

-- duplicates change nothing
SELECT is(pg_temp.feed((SELECT id FROM ids WHERE name = 'ru-1'), 1, 360,
                       now() - interval '3 hours', interval '30 seconds'),
          repeat('d', 360), 'lift 1 resends: duplicates');
SELECT lives_ok('SELECT maintenance.lifts_rollup()', 'a third run');
SELECT set_eq('SELECT * FROM pg_temp.actual_hourly()',
              'SELECT * FROM pg_temp.expected_hourly()',
              'duplicates change no rollup');

SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key = 'maintenance:lifts_rollup' AND state = 'pending'),
          1::bigint, 'one next run of the rollup job pending');

-- ---------------------------------------------------------------- retention

SELECT is((SELECT count(*) FROM lifts.archive_candidates()), 0::bigint,
          'nothing is older than 90 days yet');
SELECT ok(lifts.ensure_partition((now() - interval '100 days')::date),
          'a partition 100 days old');
SELECT is((SELECT array_agg(partition) FROM lifts.archive_candidates()),
          ARRAY['readings_' || to_char(now() - interval '100 days',
                                       'YYYYMMDD')],
          'a partition 100 days old is due');
UPDATE lifts.settings SET raw_retention = '101 days';
SELECT is((SELECT count(*) FROM lifts.archive_candidates()), 0::bigint,
          'not with a retention of 101 days');
UPDATE lifts.settings SET raw_retention = '90 days';

SELECT throws_ok(format('SELECT lifts.archive_done(%L, %L, 5, 20, %L)',
                        'readings_' || to_char(now() - interval '100 days',
                                               'YYYYMMDD'),
                        'x.csv.gz', repeat('a', 64)),
                 '22023', NULL, 'a count that does not match is refused');
SELECT lives_ok(format('SELECT lifts.archive_done(%L, %L, 0, 20, %L)',
                       'readings_' || to_char(now() - interval '100 days',
                                              'YYYYMMDD'),
                       'x.csv.gz', repeat('a', 64)),
                'archived');
SELECT is(to_regclass('lifts.readings_' || to_char(now() - interval '100 days',
                                                   'YYYYMMDD')),
          NULL, 'and dropped');
SELECT is((SELECT rows FROM lifts.archives), 0::bigint, 'manifest row');

SELECT ok((maintenance.lifts_retention() -> 'archive_due') IS NOT NULL,
          'the retention job runs');
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key = 'maintenance:lifts_retention' AND state = 'pending'),
          1::bigint, 'one next run of the retention job pending');


-- ---------------------------------------------------------------- alerts

-- One reading of lift L now + OFFSET seconds: kind, temperature, trips.
CREATE FUNCTION pg_temp.one(l text, s int, k text, temp real, trips bigint)
RETURNS text LANGUAGE sql AS $$
    SELECT lifts.ingest(ARRAY[(SELECT id FROM ids WHERE name = l)], ARRAY[0],
        ARRAY[s::bigint],
        ARRAY[(extract(epoch FROM now()) * 1000)::bigint + s],
        ARRAY[k], ARRAY[NULL::int], ARRAY[NULL::int], ARRAY[NULL::text],
        ARRAY[NULL::int], ARRAY[temp],
        ARRAY[CASE WHEN k = 'fault' THEN 'E9' END], ARRAY[trips],
        ARRAY[NULL::bigint], ARRAY[NULL::bigint], ARRAY[NULL::bigint],
        ARRAY[NULL::bigint]);
$$;

INSERT INTO jobs.webhook_targets (name, url, secret)
VALUES ('ops', 'http://127.0.0.1:9/hook', 'sixteen-chars-secret');

SELECT is((api.lift_rule_create((SELECT id FROM ids WHERE name = 'org'),
    jsonb_build_object('name', 'Hot', 'scope', 'lift',
                       'lift_id', (SELECT id FROM ids WHERE name = 'ru-1'),
                       'metric', 'temperature', 'comparison', '>',
                       'threshold', 50, 'emails', '["ops@example.com"]'::jsonb,
                       'webhook', 'ops')) ->> 'metric'),
          'temperature', 'a temperature rule for lift 1');
INSERT INTO ids SELECT 'hot', max(id) FROM lifts.alert_rules;

SELECT throws_ok($$SELECT api.lift_rule_create(
    (SELECT id FROM ids WHERE name = 'org'),
    '{"name": "x", "scope": "lift", "lift_id": 999999, "metric": "trips",
      "comparison": ">", "threshold": 1}')$$, '22023', NULL,
    'a rule for an unknown lift: 400');
SELECT throws_ok($$SELECT api.lift_rule_create(
    (SELECT id FROM ids WHERE name = 'org'),
    '{"name": "x", "scope": "org", "metric": "speed",
      "comparison": ">", "threshold": 1}')$$, '22023', NULL,
    'an unknown metric: 400');
SELECT throws_ok($$SELECT api.lift_rule_create(
    (SELECT id FROM ids WHERE name = 'org'),
    '{"name": "x", "scope": "all", "metric": "trips",
      "comparison": ">", "threshold": 1}')$$, '22023', NULL,
    'staff cannot make a rule for all lifts');

SELECT is(pg_temp.one('ru-1', 20001, 'status', 20, NULL), 'a', 'cool');
SELECT is((SELECT count(*) FROM lifts.alerts), 0::bigint, 'nothing fires');
SELECT is(pg_temp.one('ru-1', 20002, 'status', 60, NULL), 'a', 'hot');
SELECT is((SELECT count(*) FROM lifts.alerts WHERE resolved_at IS NULL),
          1::bigint, 'the alert fires');
SELECT is(pg_temp.one('ru-1', 20003, 'status', 70, NULL), 'a', 'hotter');
SELECT is((SELECT count(*) FROM lifts.alerts), 1::bigint,
          'it fires once and stays firing');
SELECT is((SELECT count(*) FROM jobs.jobs WHERE kind = 'mail'
           AND payload->>'subject' LIKE '[FIRED] Hot%'), 1::bigint,
          'one mail');
SELECT is((SELECT count(*) FROM jobs.jobs WHERE kind = 'webhook'
           AND payload->'body'->>'event' = 'lift_alert.fired'), 1::bigint,
          'one webhook');
SELECT is(pg_temp.one('ru-2', 20003, 'status', 90, NULL), 'a',
          'another lift, hot');
SELECT is((SELECT count(*) FROM lifts.alerts), 1::bigint,
          'a lift-scoped rule is only that lift''s');
SELECT is(pg_temp.one('ru-1', 20004, 'status', 30, NULL), 'a', 'cool again');
SELECT is((SELECT count(*) FROM lifts.alerts WHERE resolved_at IS NOT NULL
           AND resolved_value = 30), 1::bigint, 'resolved');
SELECT is((SELECT count(*) FROM jobs.jobs WHERE kind = 'mail'
           AND payload->>'subject' LIKE '[RESOLVED] Hot%'), 1::bigint,
          'a mail says so');
SELECT is(pg_temp.one('ru-1', 20005, 'status', 55, NULL), 'a', 'hot again');
SELECT is((SELECT count(*) FROM lifts.alerts), 2::bigint,
          'a new alert (history keeps the first)');

-- the cumulative counter, organisation-wide
SELECT lives_ok(format($$SELECT api.lift_rule_create(%s,
    '{"name": "Million", "scope": "org", "metric": "trips",
      "comparison": ">", "threshold": 1000000}')$$,
    (SELECT id FROM ids WHERE name = 'org')), 'an elevations rule');
SELECT is(pg_temp.one('ru-2', 20010, 'trip', NULL, 999999), 'a',
          'lift 2 at 999,999');
SELECT is((SELECT count(*) FROM lifts.alerts AS a JOIN lifts.alert_rules AS r
           ON r.id = a.rule_id WHERE r.name = 'Million'), 0::bigint,
          'not yet');
SELECT is(pg_temp.one('ru-2', 20011, 'status', NULL, NULL), 'a',
          'a reading without counters');
SELECT is(pg_temp.one('ru-2', 20012, 'trip', NULL, 1000001), 'a',
          'lift 2 at 1,000,001');
SELECT is((SELECT fired_value FROM lifts.alerts AS a JOIN lifts.alert_rules
           AS r ON r.id = a.rule_id WHERE r.name = 'Million'), 1000001::float8,
          'elevations over a million: fired');

-- faults per hour, with the rollup
SELECT lives_ok(format($$SELECT api.lift_rule_create(%s,
    '{"name": "Faulty", "scope": "building", "building_id": %s,
      "metric": "faults_per_hour", "comparison": ">=", "threshold": 3}')$$,
    (SELECT id FROM ids WHERE name = 'org'),
    (SELECT id FROM ids WHERE name = 'tower')), 'a faults-per-hour rule');
SELECT is(string_agg(pg_temp.one('ru-3', 30000 + g, 'fault', NULL, NULL), ''),
          'aaa', 'three faults')
FROM generate_series(1, 3) AS g;
SELECT lives_ok('SELECT maintenance.lifts_rollup()', 'rollup');
SELECT is((SELECT count(*) FROM lifts.alerts AS a JOIN lifts.alert_rules AS r
           ON r.id = a.rule_id WHERE r.name = 'Faulty'
           AND a.lift_id = (SELECT id FROM ids WHERE name = 'ru-3')),
          1::bigint, 'three faults this hour: fired');

-- silence
SELECT lives_ok(format($$SELECT api.lift_rule_create(%s,
    '{"name": "Quiet", "scope": "org", "metric": "silence",
      "comparison": ">", "threshold": 600}')$$,
    (SELECT id FROM ids WHERE name = 'org')), 'a silence rule');
UPDATE lifts.status SET received_at = now() - interval '1 hour'
WHERE lift_id = (SELECT id FROM ids WHERE name = 'ru-3');
SELECT lives_ok('SELECT maintenance.lifts_silence()', 'the timer');
SELECT is((SELECT array_agg(a.lift_id) FROM lifts.alerts AS a
           JOIN lifts.alert_rules AS r ON r.id = a.rule_id
           WHERE r.name = 'Quiet' AND a.resolved_at IS NULL),
          ARRAY[(SELECT id FROM ids WHERE name = 'ru-3')],
          'silent for an hour: fired for lift 3 only');
SELECT is(pg_temp.one('ru-3', 40000, 'status', NULL, NULL), 'a',
          'lift 3 reports');
SELECT is((SELECT count(*) FROM lifts.alerts AS a
           JOIN lifts.alert_rules AS r ON r.id = a.rule_id
           WHERE r.name = 'Quiet' AND a.resolved_at IS NULL), 0::bigint,
          'resolved at once');
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE key = 'maintenance:lifts_silence' AND state = 'pending'),
          1::bigint, 'the silence timer is scheduled');

-- ---------------------------------------------------------------- queries

SELECT is((api.lift_status((SELECT id FROM ids WHERE name = 'org'),
                           (SELECT id FROM ids WHERE name = 'ru-2'))
           -> 'last_reading' -> 'counters' ->> 'trips'), '1000001',
          'status: the latest counters');
SELECT ok(api.lift_status((SELECT id FROM ids WHERE name = 'org') + 1000,
                          (SELECT id FROM ids WHERE name = 'ru-2')) IS NULL,
          'status of another organisation''s lift: NULL (404)');
SELECT is(json_array_length(api.lift_building_status(
              (SELECT id FROM ids WHERE name = 'org'),
              (SELECT id FROM ids WHERE name = 'tower')) -> 'lifts'), 3,
          'building status: three lifts');
SELECT is((SELECT sum((p->>'readings')::int)::int FROM json_array_elements(
              api.lift_series((SELECT id FROM ids WHERE name = 'org'),
                              (SELECT id FROM ids WHERE name = 'ru-3'),
                              (extract(epoch FROM now() - interval '3 days')
                               * 1000)::bigint::text,
                              (extract(epoch FROM now() + interval '1 hour')
                               * 1000)::bigint::text, '10') -> 'series') AS p),
          (SELECT count(*)::int FROM lifts.readings
           WHERE lift_id = (SELECT id FROM ids WHERE name = 'ru-3')),
          'the series counts every reading');
SELECT ok(json_array_length(
              api.lift_series((SELECT id FROM ids WHERE name = 'org'),
                              (SELECT id FROM ids WHERE name = 'ru-3'),
                              (extract(epoch FROM now() - interval '3 days')
                               * 1000)::bigint::text,
                              (extract(epoch FROM now() + interval '1 hour')
                               * 1000)::bigint::text, '10') -> 'series') <= 10,
          'in at most 10 points');
SELECT throws_ok($$SELECT api.lift_series(1, 1, 'yesterday', NULL, NULL)$$,
                 '22023', NULL, 'a bad from: 400');
SELECT throws_ok($$SELECT api.lift_series(1, 1, NULL, NULL, '0')$$,
                 '22023', NULL, 'points 0: 400');
SELECT is(json_array_length(api.lift_rollups(
              (SELECT id FROM ids WHERE name = 'org'),
              (SELECT id FROM ids WHERE name = 'ru-3'), 'day', NULL, NULL)
              -> 'rows'), 3, 'three days of rollups for lift 3');
SELECT is(json_array_length(api.lift_alerts(
              (SELECT id FROM ids WHERE name = 'org'), NULL, 'firing', NULL)),
          (SELECT count(*)::int FROM lifts.alerts WHERE resolved_at IS NULL),
          'firing alerts listed');
SELECT is(json_array_length(api.lift_alerts(
              (SELECT id FROM ids WHERE name = 'org') + 1000, NULL, NULL,
              NULL)), 0, 'none for another organisation');

SELECT * FROM finish();
