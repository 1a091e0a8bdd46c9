-- 023_lifts_storage.sql - lift telemetry, storage for five years (issue 8
-- item 6): hourly and daily rollups per lift maintained incrementally by a
-- repeating `sql` job, and the retention of raw partitions (archived to
-- gzip files with a manifest by tools/lifts-archive, restorable by
-- tools/lifts-restore).  See docs/telemetry.md ("Rollups", "Retention and
-- archival").
--
-- Rollups.  maintenance.lifts_rollup() runs every rollup_interval (a
-- minute) and recomputes, from the raw readings, every (lift, hour) that
-- received a reading since its watermark (minus rollup_overlap, so a
-- batch that committed after an earlier run began is not missed), then
-- the (lift, day) rows of those hours from the hourly ones.  A late
-- backlog is folded in: its readings have a recent received_at whatever
-- their ts.  received_at is found through a BRIN index (rows are appended
-- in received_at order, so the index is a few pages and costs ingest next
-- to nothing); ingest itself is not touched.  Recomputing whole hours
-- makes a run idempotent: running twice, or over an overlap, changes
-- nothing.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, guarded seeds.


-- ---------------------------------------------------------------------
-- Settings (one row)
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS lifts.settings (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- raw partitions whose day ended longer ago are archived and dropped;
    -- more than the ingest window (platform_ingest_window, 30 days), so a
    -- partition is never archived while a lift may still write to it
    raw_retention     interval NOT NULL DEFAULT '90 days'
                      CHECK (raw_retention >= interval '1 day'),
    rollup_retention  interval NOT NULL DEFAULT '5 years'
                      CHECK (rollup_retention >= interval '1 day'),
    rollup_interval   interval NOT NULL DEFAULT '1 minute'
                      CHECK (rollup_interval >= interval '1 second'),
    -- longer than an ingest statement can take (the pool's query_timeout)
    rollup_overlap    interval NOT NULL DEFAULT '2 minutes'
                      CHECK (rollup_overlap >= interval '0'),
    -- a restored partition is kept this long before it is archived again
    restore_keep      interval NOT NULL DEFAULT '7 days',
    rollup_watermark  timestamptz NOT NULL DEFAULT '-infinity'
);

INSERT INTO lifts.settings (one) VALUES (true) ON CONFLICT DO NOTHING;

-- What the rollup job finds readings by (and the query API by time).
CREATE INDEX IF NOT EXISTS readings_received_at_brin
    ON lifts.readings USING brin (received_at);
CREATE INDEX IF NOT EXISTS readings_ts_brin
    ON lifts.readings USING brin (ts);


-- ---------------------------------------------------------------------
-- Rollups
-- ---------------------------------------------------------------------

-- One row per lift and UTC hour with at least one reading.  trips, door
-- cycles and faults count readings of that kind; floors_travelled sums
-- |floor_to - floor_from| of the trips; temperatures over every reading
-- that has one.
CREATE TABLE IF NOT EXISTS lifts.rollup_hourly (
    lift_id           bigint NOT NULL,
    hour              timestamptz NOT NULL,
    readings          int NOT NULL,
    trips             int NOT NULL,
    floors_travelled  bigint NOT NULL,
    door_cycles       int NOT NULL,
    faults            int NOT NULL,
    temp_min          real,
    temp_max          real,
    PRIMARY KEY (lift_id, hour)
);

CREATE INDEX IF NOT EXISTS rollup_hourly_hour_brin
    ON lifts.rollup_hourly USING brin (hour);

-- One row per lift and UTC day: sums of its hours; hours_reporting is how
-- many hours of the day had a reading.
CREATE TABLE IF NOT EXISTS lifts.rollup_daily (
    lift_id           bigint NOT NULL,
    day               date NOT NULL,
    readings          int NOT NULL,
    trips             int NOT NULL,
    floors_travelled  bigint NOT NULL,
    door_cycles       int NOT NULL,
    faults            int NOT NULL,
    temp_min          real,
    temp_max          real,
    hours_reporting   int NOT NULL,
    PRIMARY KEY (lift_id, day)
);

CREATE INDEX IF NOT EXISTS rollup_daily_day_brin
    ON lifts.rollup_daily USING brin (day);

-- Recomputes the hours of the readings received after SINCE, and their
-- days.  Returns the (lift, hour) rows written.  Hour by hour, each
-- joined with the lifts touched in it: the hours of a steady stream are
-- the current one or two (all lifts: the ts BRIN and a hash join), those
-- of a backlog few lifts each (the lifts' index).
CREATE OR REPLACE FUNCTION lifts.rollup(since timestamptz)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h      timestamptz;
    n      int;
    total  int := 0;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS lifts_rollup_touched (
        lift_id bigint, hour timestamptz) ON COMMIT DROP;
    TRUNCATE lifts_rollup_touched;

    INSERT INTO lifts_rollup_touched
    SELECT DISTINCT r.lift_id, date_trunc('hour', r.ts, 'UTC')
    FROM lifts.readings AS r
    WHERE r.received_at > since;

    ANALYZE lifts_rollup_touched;

    FOR h IN SELECT DISTINCT t.hour FROM lifts_rollup_touched AS t
    LOOP
        INSERT INTO lifts.rollup_hourly AS x
        SELECT r.lift_id, h, count(*),
               count(*) FILTER (WHERE r.kind = 'trip'),
               coalesce(sum(abs(r.floor_to - r.floor_from))
                            FILTER (WHERE r.kind = 'trip'), 0),
               count(*) FILTER (WHERE r.kind = 'door'),
               count(*) FILTER (WHERE r.kind = 'fault'),
               min(r.temperature), max(r.temperature)
        FROM lifts.readings AS r
        JOIN lifts_rollup_touched AS t
          ON t.lift_id = r.lift_id AND t.hour = h
        WHERE r.ts >= h AND r.ts < h + interval '1 hour'
        GROUP BY r.lift_id
        ORDER BY r.lift_id
        ON CONFLICT (lift_id, hour) DO UPDATE
        SET readings = excluded.readings, trips = excluded.trips,
            floors_travelled = excluded.floors_travelled,
            door_cycles = excluded.door_cycles, faults = excluded.faults,
            temp_min = excluded.temp_min, temp_max = excluded.temp_max;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;

    INSERT INTO lifts.rollup_daily AS x
    SELECT y.lift_id, d.day, sum(y.readings), sum(y.trips),
           sum(y.floors_travelled), sum(y.door_cycles), sum(y.faults),
           min(y.temp_min), max(y.temp_max), count(*)
    FROM (SELECT DISTINCT t.lift_id, (t.hour AT TIME ZONE 'UTC')::date AS day
          FROM lifts_rollup_touched AS t) AS d
    JOIN lifts.rollup_hourly AS y
      ON y.lift_id = d.lift_id
     AND y.hour >= d.day::timestamp AT TIME ZONE 'UTC'
     AND y.hour < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY y.lift_id, d.day
    ORDER BY y.lift_id, d.day
    ON CONFLICT (lift_id, day) DO UPDATE
    SET readings = excluded.readings, trips = excluded.trips,
        floors_travelled = excluded.floors_travelled,
        door_cycles = excluded.door_cycles, faults = excluded.faults,
        temp_min = excluded.temp_min, temp_max = excluded.temp_max,
        hours_reporting = excluded.hours_reporting;

    PERFORM lifts.after_rollup(since);

    RETURN total;
END
$$;

-- Called at the end of each rollup run (024 evaluates the alert rules
-- over rollups there).
CREATE OR REPLACE FUNCTION lifts.after_rollup(since timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regprocedure('lifts.alerts_after_rollup(timestamptz)') IS NOT NULL THEN
        EXECUTE 'SELECT lifts.alerts_after_rollup($1)' USING since;
    END IF;
END
$$;

-- SQL job {"function": "lifts_rollup"}, key maintenance:lifts_rollup,
-- every rollup_interval.  One run at a time (the settings row is locked),
-- the watermark moves to the start of this run's transaction.
CREATE OR REPLACE FUNCTION maintenance.lifts_rollup()
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s  lifts.settings;
    n  int;
BEGIN
    SELECT * INTO s FROM lifts.settings FOR UPDATE;

    n := lifts.rollup(s.rollup_watermark - s.rollup_overlap);

    UPDATE lifts.settings SET rollup_watermark = now();

    PERFORM jobs.enqueue_next('sql', '{"function": "lifts_rollup"}',
                              now() + s.rollup_interval,
                              'maintenance:lifts_rollup');
    RETURN json_build_object('hours', n);
END
$$;


-- ---------------------------------------------------------------------
-- Retention and archival
-- ---------------------------------------------------------------------

-- The manifest: one row per archived partition (also appended as a JSON
-- line to manifest.jsonl beside the files by tools/lifts-archive).
CREATE TABLE IF NOT EXISTS lifts.archives (
    partition    text PRIMARY KEY CHECK (partition ~ '^readings_[0-9]{8}$'),
    day          date NOT NULL,
    file         text NOT NULL,
    rows         bigint NOT NULL CHECK (rows >= 0),
    bytes        bigint NOT NULL,
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    min_ts       timestamptz,
    max_ts       timestamptz,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    restored_at  timestamptz
);

-- The day of a partition named readings_YYYYMMDD.
CREATE OR REPLACE FUNCTION lifts.partition_day(name text)
RETURNS date
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_date(substr(name, 10), 'YYYYMMDD')
    WHERE name ~ '^readings_[0-9]{8}$';
$$;

-- Raw partitions due for archival: their whole day is older than
-- raw_retention (as of AT), not restored within restore_keep.
CREATE OR REPLACE FUNCTION lifts.archive_candidates(at timestamptz DEFAULT now())
RETURNS TABLE (partition text, day date)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.relname::text, lifts.partition_day(c.relname)
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    CROSS JOIN lifts.settings AS s
    WHERE i.inhparent = 'lifts.readings'::regclass
      AND c.relname ~ '^readings_[0-9]{8}$'
      AND (lifts.partition_day(c.relname) + 1)::timestamp AT TIME ZONE 'UTC'
          <= at - s.raw_retention
      AND NOT EXISTS (SELECT 1 FROM lifts.archives AS a
                      WHERE a.partition = c.relname
                        AND a.restored_at > at - s.restore_keep)
    ORDER BY 2;
$$;

-- Called by tools/lifts-archive in the transaction that copied the
-- partition out (after LOCK ... SHARE, so nothing was added since): checks
-- the count, records the manifest row, detaches and drops the partition.
CREATE OR REPLACE FUNCTION lifts.archive_done(part text, file text,
                                              nrows bigint, nbytes bigint,
                                              sha text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    have   bigint;
    lo     timestamptz;
    hi     timestamptz;
BEGIN
    IF lifts.partition_day(part) IS NULL
       OR to_regclass('lifts.' || part) IS NULL THEN
        RAISE EXCEPTION 'no partition lifts.%', part USING ERRCODE = '22023';
    END IF;

    EXECUTE format('SELECT count(*), min(ts), max(ts) FROM lifts.%I', part)
        INTO have, lo, hi;
    IF have <> nrows THEN
        RAISE EXCEPTION 'lifts.% has % rows, the file %', part, have, nrows
            USING ERRCODE = '22023';
    END IF;

    INSERT INTO lifts.archives AS a (partition, day, file, rows, bytes,
                                     sha256, min_ts, max_ts)
    VALUES (part, lifts.partition_day(part), file, nrows, nbytes, sha, lo,
            hi)
    ON CONFLICT (partition) DO UPDATE
    SET file = excluded.file, rows = excluded.rows, bytes = excluded.bytes,
        sha256 = excluded.sha256, min_ts = excluded.min_ts,
        max_ts = excluded.max_ts, archived_at = now(), restored_at = NULL;

    EXECUTE format('ALTER TABLE lifts.readings DETACH PARTITION lifts.%I',
                   part);
    EXECUTE format('DROP TABLE lifts.%I', part);
END
$$;

-- Called by tools/lifts-restore after it loaded the file into the
-- (re-created) partition: checks the count against the manifest.
CREATE OR REPLACE FUNCTION lifts.restore_done(part text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a     lifts.archives;
    have  bigint;
BEGIN
    SELECT * INTO a FROM lifts.archives AS x WHERE x.partition = part
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lifts.% was not archived', part
            USING ERRCODE = '22023';
    END IF;

    EXECUTE format('SELECT count(*) FROM lifts.%I', part) INTO have;
    IF have <> a.rows THEN
        RAISE EXCEPTION 'lifts.% has % rows after the restore, the manifest %',
                        part, have, a.rows USING ERRCODE = '22023';
    END IF;

    UPDATE lifts.archives AS x SET restored_at = now()
    WHERE x.partition = part;
    RETURN have;
END
$$;

-- SQL job {"function": "lifts_retention"}, key maintenance:lifts_retention,
-- daily: rollups older than rollup_retention are deleted, partitions are
-- made a week ahead (lifts_partitions), and the raw partitions due for
-- archival are reported (the job's result; tools/lifts-archive, run by
-- cron as the database owner, archives them: writing files is not the
-- application role's to do).
CREATE OR REPLACE FUNCTION maintenance.lifts_retention()
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s      lifts.settings;
    hours  bigint;
    days   bigint;
    due    json;
BEGIN
    SELECT * INTO s FROM lifts.settings;

    DELETE FROM lifts.rollup_hourly
    WHERE hour < now() - s.rollup_retention;
    GET DIAGNOSTICS hours = ROW_COUNT;

    DELETE FROM lifts.rollup_daily
    WHERE day < ((now() - s.rollup_retention) AT TIME ZONE 'UTC')::date;
    GET DIAGNOSTICS days = ROW_COUNT;

    PERFORM lifts.create_partitions(1, 7);
    PERFORM maintenance.lifts_purge();

    SELECT coalesce(json_agg(c.partition), '[]') INTO due
    FROM lifts.archive_candidates() AS c;

    PERFORM jobs.enqueue_next('sql', '{"function": "lifts_retention"}',
                              date_trunc('day', now(), 'UTC')
                                  + interval '1 day 10 minutes',
                              'maintenance:lifts_retention');
    RETURN json_build_object('rollup_hours_deleted', hours,
                             'rollup_days_deleted', days,
                             'archive_due', due);
END
$$;

REVOKE ALL ON FUNCTION lifts.rollup(timestamptz),
    lifts.after_rollup(timestamptz), maintenance.lifts_rollup(),
    lifts.partition_day(text), lifts.archive_candidates(timestamptz),
    lifts.archive_done(text, text, bigint, bigint, text),
    lifts.restore_done(text), maintenance.lifts_retention()
    FROM PUBLIC;

-- The first runs (a pending one is kept: enqueue with its key changes
-- nothing).
SELECT jobs.enqueue('sql', '{"function": "lifts_rollup"}',
                    run_at => now(), key => 'maintenance:lifts_rollup');
SELECT jobs.enqueue('sql', '{"function": "lifts_retention"}',
                    run_at => now(), key => 'maintenance:lifts_retention');
