-- 024_lifts_alerts.sql - lift telemetry, alerts and the query API (issue 8
-- items 7 and 8): the latest status of each lift kept by lifts.ingest,
-- alert rules per lift, building, organisation or all evaluated as data
-- arrives (in the ingest statement's transaction, set-based), a silence
-- rule on a timer, notifications by mail and webhook through the jobs
-- runner, alert history; staff endpoints for rules, status, time series
-- with downsampling, rollups and alerts.  See docs/telemetry.md
-- ("Alerts", "Query API").
--
-- lifts.ingest (018) is replaced here with the same signature (nginx's
-- call does not change): after storing, it upserts lifts.status for the
-- lifts of the batch, and, only when enabled rules exist for the
-- metrics evaluated at ingest, evaluates them for those lifts.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, guarded seeds.


-- ---------------------------------------------------------------------
-- Latest status per lift
-- ---------------------------------------------------------------------

-- The newest reading (by device time) of each lift; temperature and the
-- counters keep their last known value when the newest reading has none.
CREATE TABLE IF NOT EXISTS lifts.status (
    lift_id      bigint PRIMARY KEY REFERENCES lifts.lifts (id)
                 ON DELETE CASCADE,
    seq          bigint NOT NULL,
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    kind         text NOT NULL,
    floor        smallint,
    direction    text,
    load_kg      int,
    temperature  real,
    fault_code   text,
    trips        bigint,
    floors       bigint,
    door_cycles  bigint,
    faults       bigint,
    run_seconds  bigint
);

-- Every batch updates its lifts' rows and no indexed column: with room
-- left on each page the updates are HOT (no index entry, pruned on the
-- page), so the table stays small without waiting for vacuum.
ALTER TABLE lifts.status SET (fillfactor = 50);


-- ---------------------------------------------------------------------
-- Rules and alerts
-- ---------------------------------------------------------------------

-- metric:
--   trips, floors, door_cycles, faults, run_seconds   the lift's cumulative
--                                   counters (latest)          at ingest
--   temperature                     latest temperature, °C     at ingest
--   faults_per_hour                 fault readings in the current UTC
--                                   hour (rollup)              rollup job
--   silence                         seconds since the last reading was
--                                   received (threshold N: "no reading for
--                                   N seconds"; comparison '>')  timer job
-- scope: 'lift' (lift_id), 'building' (building_id), 'org' (org_id), or
-- 'all' (every lift of every organisation; org_id NULL: made in SQL by
-- the operator, not by an organisation's staff).
CREATE TABLE IF NOT EXISTS lifts.alert_rules (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       bigint REFERENCES app.organisations (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope        text NOT NULL
                 CHECK (scope IN ('lift', 'building', 'org', 'all')),
    lift_id      bigint REFERENCES lifts.lifts (id) ON DELETE CASCADE,
    building_id  bigint REFERENCES lifts.buildings (id) ON DELETE CASCADE,
    metric       text NOT NULL
                 CHECK (metric IN ('trips', 'floors', 'door_cycles',
                                   'faults', 'run_seconds', 'temperature',
                                   'faults_per_hour', 'silence')),
    comparison   text NOT NULL CHECK (comparison IN ('>', '>=', '<', '<=')),
    threshold    double precision NOT NULL,
    emails       text[] NOT NULL DEFAULT '{}'
                 CHECK (cardinality(emails) <= 20),
    webhook      text REFERENCES jobs.webhook_targets (name)
                 ON DELETE SET NULL,
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_scope_target_check CHECK (
        (scope = 'all' AND org_id IS NULL AND lift_id IS NULL
         AND building_id IS NULL)
        OR (scope = 'org' AND org_id IS NOT NULL AND lift_id IS NULL
            AND building_id IS NULL)
        OR (scope = 'building' AND org_id IS NOT NULL AND lift_id IS NULL
            AND building_id IS NOT NULL)
        OR (scope = 'lift' AND org_id IS NOT NULL AND lift_id IS NOT NULL
            AND building_id IS NULL))
);

CREATE INDEX IF NOT EXISTS alert_rules_org_id_idx
    ON lifts.alert_rules (org_id);

-- One row per firing: fired once, open while resolved_at is NULL (at most
-- one open per rule and lift), then resolved; the rows are the history.
CREATE TABLE IF NOT EXISTS lifts.alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES lifts.alert_rules (id)
                    ON DELETE CASCADE,
    lift_id         bigint NOT NULL REFERENCES lifts.lifts (id)
                    ON DELETE CASCADE,
    fired_at        timestamptz NOT NULL DEFAULT now(),
    fired_value     double precision,
    resolved_at     timestamptz,
    resolved_value  double precision
);

CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_key
    ON lifts.alerts (rule_id, lift_id) WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS alerts_lift_id_idx
    ON lifts.alerts (lift_id, fired_at);

ALTER TABLE lifts.settings
    ADD COLUMN IF NOT EXISTS silence_interval interval NOT NULL
        DEFAULT '30 seconds' CHECK (silence_interval >= interval '1 second');

-- Mail and webhook jobs for the alerts that fired or resolved.  EVENTS:
-- rows (alert id, 'fired' | 'resolved').
CREATE OR REPLACE FUNCTION lifts.notify(alert_ids bigint[], event text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a  record;
    b  jsonb;
BEGIN
    FOR a IN SELECT x.id, x.lift_id, x.fired_at, x.resolved_at,
                    x.fired_value, x.resolved_value, r.id AS rule_id,
                    r.name, r.metric, r.comparison, r.threshold, r.emails,
                    r.webhook, l.serial, bl.name AS building
             FROM lifts.alerts AS x
             JOIN lifts.alert_rules AS r ON r.id = x.rule_id
             JOIN lifts.lifts AS l ON l.id = x.lift_id
             JOIN lifts.buildings AS bl ON bl.id = l.building_id
             WHERE x.id = ANY (alert_ids)
             ORDER BY x.id
    LOOP
        b := jsonb_build_object(
            'event', 'lift_alert.' || event, 'alert', a.id,
            'rule', a.rule_id, 'name', a.name, 'metric', a.metric,
            'comparison', a.comparison, 'threshold', a.threshold,
            'lift', a.lift_id, 'serial', a.serial, 'building', a.building,
            'value', CASE event WHEN 'fired' THEN a.fired_value
                                ELSE a.resolved_value END,
            'at', CASE event WHEN 'fired' THEN a.fired_at
                             ELSE a.resolved_at END);
        IF cardinality(a.emails) > 0 THEN
            PERFORM jobs.enqueue('mail', jsonb_build_object(
                'to', to_jsonb(a.emails),
                'subject', format('[%s] %s: lift %s (%s)',
                                  upper(event), a.name, a.serial,
                                  a.building),
                'text', format(E'Alert "%s" %s for lift %s in %s.\n\n'
                               'Condition: %s %s %s\nValue: %s\nAt: %s\n',
                               a.name, event, a.serial, a.building,
                               a.metric, a.comparison, a.threshold,
                               b->>'value', b->>'at')));
        END IF;
        IF a.webhook IS NOT NULL THEN
            PERFORM jobs.enqueue('webhook', jsonb_build_object(
                'target', a.webhook, 'body', b));
        END IF;
    END LOOP;
END
$$;

-- Evaluates the enabled rules of METRICS for the lifts LIFT_IDS (NULL: all
-- lifts): an alert fires for each (rule, lift) whose condition holds and
-- has no open alert, an open alert resolves when its condition no longer
-- holds (a value not known, e.g. no temperature yet, changes nothing).
-- Notifications are enqueued in the same transaction.  Returns the number
-- of alerts fired and resolved.
CREATE OR REPLACE FUNCTION lifts.evaluate(lift_ids bigint[], metrics text[])
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fired     bigint[];
    resolved  bigint[];
BEGIN
    IF lift_ids IS NULL THEN
        lift_ids := ARRAY(SELECT l.id FROM lifts.lifts AS l);
    END IF;

    WITH v AS (
        SELECT r.id AS rule_id, l.id AS lift_id, r.comparison, r.threshold,
               CASE r.metric
               WHEN 'trips' THEN s.trips::float8
               WHEN 'floors' THEN s.floors::float8
               WHEN 'door_cycles' THEN s.door_cycles::float8
               WHEN 'faults' THEN s.faults::float8
               WHEN 'run_seconds' THEN s.run_seconds::float8
               WHEN 'temperature' THEN s.temperature::float8
               WHEN 'faults_per_hour' THEN
                   coalesce((SELECT h.faults FROM lifts.rollup_hourly AS h
                             WHERE h.lift_id = l.id
                               AND h.hour = date_trunc('hour', now(), 'UTC')),
                            0)::float8
               WHEN 'silence' THEN
                   extract(epoch FROM now()
                           - coalesce(s.received_at, l.enrolled_at))::float8
               END AS value
        FROM (SELECT DISTINCT q.id FROM unnest(lift_ids) AS q(id)) AS q
        JOIN lifts.lifts AS l ON l.id = q.id
        LEFT JOIN lifts.status AS s ON s.lift_id = l.id
        JOIN lifts.alert_rules AS r
          ON r.enabled AND r.metric = ANY (metrics)
         AND (r.scope = 'all'
              OR r.org_id = l.org_id
                 AND (r.scope = 'org'
                      OR r.scope = 'building' AND r.building_id = l.building_id
                      OR r.scope = 'lift' AND r.lift_id = l.id))
    ), e AS (
        SELECT v.*, CASE v.comparison
                    WHEN '>' THEN v.value > v.threshold
                    WHEN '>=' THEN v.value >= v.threshold
                    WHEN '<' THEN v.value < v.threshold
                    WHEN '<=' THEN v.value <= v.threshold
                    END AS holds
        FROM v
        WHERE v.value IS NOT NULL
    ), f AS (
        INSERT INTO lifts.alerts AS a (rule_id, lift_id, fired_value)
        SELECT e.rule_id, e.lift_id, e.value FROM e
        WHERE e.holds
        ORDER BY e.rule_id, e.lift_id
        ON CONFLICT (rule_id, lift_id) WHERE resolved_at IS NULL DO NOTHING
        RETURNING a.id
    ), r AS (
        UPDATE lifts.alerts AS a
        SET resolved_at = now(), resolved_value = e.value
        FROM e
        WHERE a.rule_id = e.rule_id AND a.lift_id = e.lift_id
          AND a.resolved_at IS NULL AND NOT e.holds
        RETURNING a.id
    )
    SELECT (SELECT array_agg(f.id) FROM f), (SELECT array_agg(r.id) FROM r)
    INTO fired, resolved;

    IF fired IS NOT NULL THEN
        PERFORM lifts.notify(fired, 'fired');
    END IF;
    IF resolved IS NOT NULL THEN
        PERFORM lifts.notify(resolved, 'resolved');
    END IF;
    RETURN coalesce(cardinality(fired), 0) + coalesce(cardinality(resolved), 0);
END
$$;

-- The metrics evaluated in the ingest transaction (silence too: a lift
-- that reports again resolves its silence alert at once).
CREATE OR REPLACE FUNCTION lifts.ingest_metrics()
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['trips', 'floors', 'door_cycles', 'faults', 'run_seconds',
                 'temperature', 'silence'];
$$;

-- Called at the end of each rollup run (023's lifts.after_rollup):
-- faults_per_hour for the lifts that reported since the watermark and
-- those with an open alert of that metric (the hour may have passed).
CREATE OR REPLACE FUNCTION lifts.alerts_after_rollup(since timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM lifts.alert_rules AS r
                   WHERE r.enabled AND r.metric = 'faults_per_hour') THEN
        RETURN;
    END IF;
    PERFORM lifts.evaluate(ARRAY(
        SELECT s.lift_id FROM lifts.status AS s WHERE s.received_at > since
        UNION
        SELECT a.lift_id FROM lifts.alerts AS a
        JOIN lifts.alert_rules AS r ON r.id = a.rule_id
        WHERE a.resolved_at IS NULL AND r.metric = 'faults_per_hour'),
        ARRAY['faults_per_hour']);
END
$$;

-- SQL job {"function": "lifts_silence"}, key maintenance:lifts_silence,
-- every silence_interval (30 s): the silence rules over all lifts.
CREATE OR REPLACE FUNCTION maintenance.lifts_silence()
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n  int := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM lifts.alert_rules AS r
               WHERE r.enabled AND r.metric = 'silence') THEN
        n := lifts.evaluate(NULL, ARRAY['silence']);
    END IF;
    PERFORM jobs.enqueue_next('sql', '{"function": "lifts_silence"}',
                              now() + (SELECT s.silence_interval
                                       FROM lifts.settings AS s),
                              'maintenance:lifts_silence');
    RETURN json_build_object('changed', n);
END
$$;


-- ---------------------------------------------------------------------
-- Ingest, again: the status and the alerts
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION lifts.ingest(lift bigint[], gen int[],
    seq bigint[], ts_ms bigint[], kind text[], floor_from int[],
    floor_to int[], direction text[], load_kg int[], temperature real[],
    fault_code text[], trips bigint[], floors bigint[],
    door_cycles bigint[], faults bigint[], run_seconds bigint[])
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      date;
    result text;
    stored bigint[];
BEGIN
    FOR d IN SELECT DISTINCT (to_timestamp(t / 1000.0) AT TIME ZONE 'UTC')::date
             FROM unnest(ts_ms) AS t
    LOOP
        PERFORM lifts.ensure_partition(d);
    END LOOP;

    WITH r AS (
        SELECT u.*, to_timestamp(u.t / 1000.0) AS at,
               (l.id IS NOT NULL) AS valid,
               row_number() OVER (PARTITION BY u.l, u.s, u.t
                                  ORDER BY u.i) AS nth
        FROM unnest(lift, gen, seq, ts_ms, kind, floor_from, floor_to,
                    direction, load_kg, temperature, fault_code, trips,
                    floors, door_cycles, faults, run_seconds)
             WITH ORDINALITY
             AS u(l, g, s, t, k, ff, ft, dir, ld, tmp, fc, c1, c2, c3, c4,
                  c5, i)
        LEFT JOIN lifts.lifts AS l
               ON l.id = u.l AND l.token_generation = u.g
    ), ins AS (
        INSERT INTO lifts.readings AS x (lift_id, seq, ts, kind, floor_from,
            floor_to, direction, load_kg, temperature, fault_code, trips,
            floors, door_cycles, faults, run_seconds)
        SELECT r.l, r.s, r.at, r.k, r.ff, r.ft, r.dir, r.ld, r.tmp, r.fc,
               r.c1, r.c2, r.c3, r.c4, r.c5
        FROM r
        WHERE r.valid AND r.nth = 1
        ON CONFLICT DO NOTHING
        RETURNING x.*
    ), st AS (
        INSERT INTO lifts.status AS s (lift_id, seq, ts, received_at, kind,
            floor, direction, load_kg, temperature, fault_code, trips,
            floors, door_cycles, faults, run_seconds)
        SELECT DISTINCT ON (ins.lift_id) ins.lift_id, ins.seq, ins.ts,
               ins.received_at, ins.kind, coalesce(ins.floor_to,
               ins.floor_from), ins.direction, ins.load_kg,
               ins.temperature, ins.fault_code, ins.trips, ins.floors,
               ins.door_cycles, ins.faults, ins.run_seconds
        FROM ins
        ORDER BY ins.lift_id, ins.ts DESC, ins.seq DESC
        ON CONFLICT (lift_id) DO UPDATE
        SET received_at = excluded.received_at,
            seq = CASE WHEN excluded.ts >= s.ts THEN excluded.seq ELSE s.seq END,
            kind = CASE WHEN excluded.ts >= s.ts THEN excluded.kind ELSE s.kind END,
            floor = CASE WHEN excluded.ts >= s.ts
                         THEN coalesce(excluded.floor, s.floor) ELSE s.floor END,
            direction = CASE WHEN excluded.ts >= s.ts THEN excluded.direction
                             ELSE s.direction END,
            load_kg = CASE WHEN excluded.ts >= s.ts THEN excluded.load_kg
                           ELSE s.load_kg END,
            temperature = CASE WHEN excluded.ts >= s.ts
                               THEN coalesce(excluded.temperature, s.temperature)
                               ELSE s.temperature END,
            fault_code = CASE WHEN excluded.ts >= s.ts THEN excluded.fault_code
                              ELSE s.fault_code END,
            trips = CASE WHEN excluded.ts >= s.ts
                         THEN coalesce(excluded.trips, s.trips) ELSE s.trips END,
            floors = CASE WHEN excluded.ts >= s.ts
                          THEN coalesce(excluded.floors, s.floors) ELSE s.floors END,
            door_cycles = CASE WHEN excluded.ts >= s.ts
                               THEN coalesce(excluded.door_cycles, s.door_cycles)
                               ELSE s.door_cycles END,
            faults = CASE WHEN excluded.ts >= s.ts
                          THEN coalesce(excluded.faults, s.faults) ELSE s.faults END,
            run_seconds = CASE WHEN excluded.ts >= s.ts
                               THEN coalesce(excluded.run_seconds, s.run_seconds)
                               ELSE s.run_seconds END,
            ts = greatest(excluded.ts, s.ts)
    )
    SELECT string_agg(CASE WHEN NOT r.valid THEN 'r'
                           WHEN r.nth = 1 AND ins.lift_id IS NOT NULL THEN 'a'
                           ELSE 'd' END, '' ORDER BY r.i),
           array_agg(DISTINCT ins.lift_id)
    INTO result, stored
    FROM r
    LEFT JOIN ins ON ins.lift_id = r.l AND ins.seq = r.s AND ins.ts = r.at;

    -- The lifts with a reading stored: their status rows are locked by
    -- this transaction (in lift order), so two batches of one lift
    -- evaluate its alerts one after the other.
    IF stored[1] IS NOT NULL
       AND EXISTS (SELECT 1 FROM lifts.alert_rules AS x
                   WHERE x.enabled AND x.metric = ANY (lifts.ingest_metrics()))
    THEN
        PERFORM lifts.evaluate(array_remove(stored, NULL),
                               lifts.ingest_metrics());
    END IF;

    RETURN coalesce(result, '');
END
$$;


-- ---------------------------------------------------------------------
-- Staff endpoints: rules
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION lifts.rule_json(r lifts.alert_rules)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('id', r.id, 'name', r.name, 'scope', r.scope,
        'lift_id', r.lift_id, 'building_id', r.building_id,
        'metric', r.metric, 'comparison', r.comparison,
        'threshold', r.threshold, 'emails', r.emails,
        'webhook', r.webhook, 'enabled', r.enabled,
        'firing', (SELECT count(*) FROM lifts.alerts AS a
                   WHERE a.rule_id = r.id AND a.resolved_at IS NULL),
        'created_at', r.created_at);
$$;

-- Checks a rule's body (all fields when creating, those given otherwise)
-- against the current row R (NULL when creating) and returns the row to
-- store.
CREATE OR REPLACE FUNCTION lifts.check_rule(org bigint, body jsonb,
                                            r lifts.alert_rules)
RETURNS lifts.alert_rules
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    creating boolean := r.id IS NULL;
    k        text;
    e        text;
    lift     jsonb;
    bldg     jsonb;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        PERFORM app.bad_field('body', 'The body must be a JSON object.');
    END IF;
    FOR k IN SELECT jsonb_object_keys(body) LOOP
        IF k NOT IN ('name', 'scope', 'lift_id', 'building_id', 'metric',
                     'comparison', 'threshold', 'emails', 'webhook',
                     'enabled') THEN
            PERFORM app.bad_field(k, 'Unknown field.');
        END IF;
    END LOOP;
    r.org_id := org;

    IF creating OR body ? 'name' THEN
        IF jsonb_typeof(body->'name') IS DISTINCT FROM 'string'
           OR length(btrim(body->>'name')) NOT BETWEEN 1 AND 200 THEN
            PERFORM app.bad_field('name', 'A name of 1 to 200 characters is needed.');
        END IF;
        r.name := btrim(body->>'name');
    END IF;
    IF creating OR body ? 'scope' THEN
        IF body->>'scope' IS NULL
           OR body->>'scope' NOT IN ('lift', 'building', 'org') THEN
            PERFORM app.bad_field('scope', 'The scope is "lift", "building" or "org".');
        END IF;
        r.scope := body->>'scope';
    END IF;
    -- the lift or building: from the body, else the rule's own
    lift := CASE WHEN body ? 'lift_id' THEN body->'lift_id'
                 ELSE to_jsonb(r.lift_id) END;
    bldg := CASE WHEN body ? 'building_id' THEN body->'building_id'
                 ELSE to_jsonb(r.building_id) END;
    r.lift_id := NULL;
    r.building_id := NULL;
    IF r.scope = 'lift' THEN
        IF jsonb_typeof(lift) IS DISTINCT FROM 'number'
           OR lift #>> '{}' !~ '^[0-9]{1,18}$'
           OR NOT EXISTS (SELECT 1 FROM lifts.lifts AS l
                          WHERE l.id = (lift #>> '{}')::bigint
                            AND l.org_id = org) THEN
            PERFORM app.bad_field('lift_id', 'No such lift.');
        END IF;
        r.lift_id := (lift #>> '{}')::bigint;
    ELSIF r.scope = 'building' THEN
        IF jsonb_typeof(bldg) IS DISTINCT FROM 'number'
           OR bldg #>> '{}' !~ '^[0-9]{1,18}$'
           OR NOT EXISTS (SELECT 1 FROM lifts.buildings AS b
                          WHERE b.id = (bldg #>> '{}')::bigint
                            AND b.org_id = org) THEN
            PERFORM app.bad_field('building_id', 'No such building.');
        END IF;
        r.building_id := (bldg #>> '{}')::bigint;
    END IF;
    IF creating OR body ? 'metric' THEN
        IF body->>'metric' IS NULL
           OR body->>'metric' NOT IN ('trips', 'floors', 'door_cycles',
                                      'faults', 'run_seconds', 'temperature',
                                      'faults_per_hour', 'silence') THEN
            PERFORM app.bad_field('metric', 'The metric is one of trips, floors, door_cycles, faults, run_seconds, temperature, faults_per_hour, silence.');
        END IF;
        r.metric := body->>'metric';
    END IF;
    IF creating OR body ? 'comparison' THEN
        IF body->>'comparison' IS NULL
           OR body->>'comparison' NOT IN ('>', '>=', '<', '<=') THEN
            PERFORM app.bad_field('comparison', 'The comparison is ">", ">=", "<" or "<=".');
        END IF;
        r.comparison := body->>'comparison';
    END IF;
    IF creating OR body ? 'threshold' THEN
        IF jsonb_typeof(body->'threshold') IS DISTINCT FROM 'number'
           OR abs((body->>'threshold')::float8) > 1e15 THEN
            PERFORM app.bad_field('threshold', 'The threshold is a number.');
        END IF;
        r.threshold := (body->>'threshold')::float8;
    END IF;
    IF r.metric = 'silence' AND (r.comparison <> '>' OR r.threshold < 1) THEN
        PERFORM app.bad_field('threshold', 'A silence rule is "> N" seconds, N at least 1.');
    END IF;
    IF creating OR body ? 'emails' THEN
        IF body ? 'emails' AND jsonb_typeof(body->'emails') <> 'null' THEN
            IF jsonb_typeof(body->'emails') <> 'array'
               OR jsonb_array_length(body->'emails') > 20 THEN
                PERFORM app.bad_field('emails', 'Up to 20 addresses.');
            END IF;
            FOR e IN SELECT x FROM jsonb_array_elements(body->'emails') AS x LOOP
                IF e !~ '^"' OR NOT jobs.valid_address(e::jsonb #>> '{}') THEN
                    PERFORM app.bad_field('emails', 'Not a mail address: ' || left(e, 100));
                END IF;
            END LOOP;
            r.emails := ARRAY(SELECT jsonb_array_elements_text(body->'emails'));
        ELSE
            r.emails := '{}';
        END IF;
    END IF;
    IF creating OR body ? 'webhook' THEN
        IF body ? 'webhook' AND jsonb_typeof(body->'webhook') <> 'null' THEN
            IF jsonb_typeof(body->'webhook') <> 'string'
               OR NOT EXISTS (SELECT 1 FROM jobs.webhook_targets AS w
                              WHERE w.name = body->>'webhook') THEN
                PERFORM app.bad_field('webhook', 'No such webhook target.');
            END IF;
            r.webhook := body->>'webhook';
        ELSE
            r.webhook := NULL;
        END IF;
    END IF;
    IF creating OR body ? 'enabled' THEN
        IF body ? 'enabled' AND jsonb_typeof(body->'enabled') <> 'boolean' THEN
            PERFORM app.bad_field('enabled', 'enabled is true or false.');
        END IF;
        r.enabled := coalesce((body->>'enabled')::boolean, true);
    END IF;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION api.lift_rules_list(org bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(json_agg(lifts.rule_json(r) ORDER BY r.id), '[]')
    FROM lifts.alert_rules AS r
    WHERE r.org_id = org;
$$;

CREATE OR REPLACE FUNCTION api.lift_rule_create(org bigint, body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r lifts.alert_rules;
BEGIN
    r := lifts.check_rule(org, body, NULL::lifts.alert_rules);
    INSERT INTO lifts.alert_rules (org_id, name, scope, lift_id, building_id,
                                   metric, comparison, threshold, emails,
                                   webhook, enabled)
    VALUES (org, r.name, r.scope, r.lift_id, r.building_id, r.metric,
            r.comparison, r.threshold, r.emails, r.webhook, r.enabled)
    RETURNING * INTO r;
    PERFORM platform.set_status(201);
    RETURN lifts.rule_json(r);
END
$$;

CREATE OR REPLACE FUNCTION api.lift_rule_get(org bigint, id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifts.rule_json(r) FROM lifts.alert_rules AS r
    WHERE r.id = lift_rule_get.id AND r.org_id = org;
$$;

-- Changing a rule resolves its open alerts (the condition they fired on
-- is no longer the rule's); the next data fires them again if it holds.
CREATE OR REPLACE FUNCTION api.lift_rule_update(org bigint, id bigint,
                                                body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r lifts.alert_rules;
BEGIN
    SELECT * INTO r FROM lifts.alert_rules AS x
    WHERE x.id = lift_rule_update.id AND x.org_id = org FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    r := lifts.check_rule(org, body, r);
    UPDATE lifts.alert_rules AS x
    SET name = r.name, scope = r.scope, lift_id = r.lift_id,
        building_id = r.building_id, metric = r.metric,
        comparison = r.comparison, threshold = r.threshold,
        emails = r.emails, webhook = r.webhook, enabled = r.enabled
    WHERE x.id = r.id
    RETURNING * INTO r;
    UPDATE lifts.alerts AS a SET resolved_at = now()
    WHERE a.rule_id = r.id AND a.resolved_at IS NULL;
    RETURN lifts.rule_json(r);
END
$$;

-- Deleting a rule deletes its alert history too.
CREATE OR REPLACE FUNCTION api.lift_rule_delete(org bigint, id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM lifts.alert_rules AS r
    WHERE r.id = lift_rule_delete.id AND r.org_id = org;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN json_build_object('deleted', id);
END
$$;


-- ---------------------------------------------------------------------
-- Staff endpoints: queries
-- ---------------------------------------------------------------------

-- A query parameter that is a time: ISO 8601 (with a zone) or Unix
-- milliseconds; NULL when absent; 400 naming FIELD otherwise.
CREATE OR REPLACE FUNCTION lifts.arg_time(v text, field text)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR v = '' THEN
        RETURN NULL;
    END IF;
    v := app.url_decode(v);
    IF v ~ '^[0-9]{1,15}$' THEN
        RETURN to_timestamp(v::bigint / 1000.0);
    END IF;
    IF v ~ '^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?)?(Z|[+-]\d\d(:?\d\d)?)?$' THEN
        BEGIN
            RETURN v::timestamptz;
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END IF;
    PERFORM app.bad_field(field, field || ' is an ISO 8601 time or Unix milliseconds.');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION lifts.status_json(l lifts.lifts, s lifts.status)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'lift', l.id, 'serial', l.serial, 'building_id', l.building_id,
        'model', l.model, 'floors', l.floors,
        'last_reading', CASE WHEN s.lift_id IS NOT NULL THEN
            json_build_object('seq', s.seq, 'ts', s.ts,
                'received_at', s.received_at, 'kind', s.kind,
                'floor', s.floor, 'direction', s.direction,
                'load', s.load_kg, 'temperature', s.temperature,
                'fault_code', s.fault_code,
                'counters', json_build_object('trips', s.trips,
                    'floors', s.floors, 'door_cycles', s.door_cycles,
                    'faults', s.faults, 'run_seconds', s.run_seconds))
            END,
        'silent_seconds', CASE WHEN s.lift_id IS NOT NULL THEN
            floor(extract(epoch FROM now() - s.received_at)) END,
        'alerts', (SELECT coalesce(json_agg(json_build_object(
                       'id', a.id, 'rule', a.rule_id, 'name', r.name,
                       'metric', r.metric, 'fired_at', a.fired_at,
                       'value', a.fired_value) ORDER BY a.id), '[]')
                   FROM lifts.alerts AS a
                   JOIN lifts.alert_rules AS r ON r.id = a.rule_id
                   WHERE a.lift_id = l.id AND a.resolved_at IS NULL));
$$;

CREATE OR REPLACE FUNCTION api.lift_status(org bigint, id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifts.status_json(l, s)
    FROM lifts.lifts AS l
    LEFT JOIN lifts.status AS s ON s.lift_id = l.id
    WHERE l.id = lift_status.id AND l.org_id = org;
$$;

CREATE OR REPLACE FUNCTION api.lift_building_status(org bigint, id bigint)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('building', lifts.building_json(b),
        'lifts', (SELECT coalesce(json_agg(lifts.status_json(l, s)
                                           ORDER BY l.serial), '[]')
                  FROM lifts.lifts AS l
                  LEFT JOIN lifts.status AS s ON s.lift_id = l.id
                  WHERE l.building_id = b.id))
    FROM lifts.buildings AS b
    WHERE b.id = lift_building_status.id AND b.org_id = org;
$$;

-- Readings of a lift from FROM to TO (default: the last 24 hours; at most
-- 31 days) in POINTS buckets of equal width (default 200, 1..2000): per
-- bucket the readings, trips, door cycles and faults counted, min/avg/max
-- temperature, and the last counters.  Empty buckets are left out.
CREATE OR REPLACE FUNCTION api.lift_series(org bigint, id bigint,
                                           from_arg text, to_arg text,
                                           points_arg text)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t0     timestamptz := lifts.arg_time(from_arg, 'from');
    t1     timestamptz := lifts.arg_time(to_arg, 'to');
    n      int;
    width  double precision;
    out    json;
BEGIN
    IF points_arg IS NULL OR points_arg = '' THEN
        n := 200;
    ELSIF points_arg !~ '^[0-9]{1,4}$' OR points_arg::int NOT BETWEEN 1 AND 2000 THEN
        PERFORM app.bad_field('points', 'points is a whole number from 1 to 2000.');
    ELSE
        n := points_arg::int;
    END IF;
    t1 := coalesce(t1, now());
    t0 := coalesce(t0, t1 - interval '1 day');
    IF t1 <= t0 THEN
        PERFORM app.bad_field('to', 'to must be after from.');
    END IF;
    IF t1 - t0 > interval '31 days' THEN
        PERFORM app.bad_field('from', 'At most 31 days at a time (use the rollups for longer).');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM lifts.lifts AS l
                   WHERE l.id = lift_series.id AND l.org_id = org) THEN
        RETURN NULL;
    END IF;
    width := extract(epoch FROM t1 - t0) / n;

    SELECT json_build_object('lift', lift_series.id, 'from', t0, 'to', t1,
        'points', n, 'bucket_seconds', width,
        'series', coalesce(json_agg(json_build_object(
            't', to_timestamp(extract(epoch FROM t0) + b.k * width),
            'readings', b.readings, 'trips', b.trips,
            'door_cycles', b.doors, 'faults', b.faults,
            'temp_min', b.tmin, 'temp_avg', round(b.tavg::numeric, 2),
            'temp_max', b.tmax, 'counters', b.counters) ORDER BY b.k), '[]'))
    INTO out
    FROM (SELECT least(floor(extract(epoch FROM r.ts - t0) / width)::int, n - 1) AS k,
                 count(*) AS readings,
                 count(*) FILTER (WHERE r.kind = 'trip') AS trips,
                 count(*) FILTER (WHERE r.kind = 'door') AS doors,
                 count(*) FILTER (WHERE r.kind = 'fault') AS faults,
                 min(r.temperature) AS tmin, avg(r.temperature) AS tavg,
                 max(r.temperature) AS tmax,
                 (array_agg(json_build_object('trips', r.trips,
                      'floors', r.floors, 'door_cycles', r.door_cycles,
                      'faults', r.faults, 'run_seconds', r.run_seconds)
                      ORDER BY r.ts DESC)
                  FILTER (WHERE r.trips IS NOT NULL OR r.floors IS NOT NULL
                          OR r.door_cycles IS NOT NULL OR r.faults IS NOT NULL
                          OR r.run_seconds IS NOT NULL))[1] AS counters
          FROM lifts.readings AS r
          WHERE r.lift_id = lift_series.id AND r.ts >= t0 AND r.ts < t1
          GROUP BY 1) AS b;
    RETURN out;
END
$$;

-- Hourly (period=hour, at most 93 days) or daily (period=day, default)
-- rollups of a lift from FROM to TO (default: the last 30 days).
CREATE OR REPLACE FUNCTION api.lift_rollups(org bigint, id bigint,
                                            period text, from_arg text,
                                            to_arg text)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t0   timestamptz := lifts.arg_time(from_arg, 'from');
    t1   timestamptz := lifts.arg_time(to_arg, 'to');
    out  json;
BEGIN
    period := coalesce(nullif(period, ''), 'day');
    IF period NOT IN ('hour', 'day') THEN
        PERFORM app.bad_field('period', 'period is "hour" or "day".');
    END IF;
    t1 := coalesce(t1, now());
    t0 := coalesce(t0, t1 - interval '30 days');
    IF t1 <= t0 THEN
        PERFORM app.bad_field('to', 'to must be after from.');
    END IF;
    IF period = 'hour' AND t1 - t0 > interval '93 days'
       OR t1 - t0 > interval '6 years' THEN
        PERFORM app.bad_field('from', 'Too long a range for this period.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM lifts.lifts AS l
                   WHERE l.id = lift_rollups.id AND l.org_id = org) THEN
        RETURN NULL;
    END IF;

    IF period = 'hour' THEN
        SELECT coalesce(json_agg(json_build_object('hour', h.hour,
                   'readings', h.readings, 'trips', h.trips,
                   'floors_travelled', h.floors_travelled,
                   'door_cycles', h.door_cycles, 'faults', h.faults,
                   'temp_min', h.temp_min, 'temp_max', h.temp_max)
                   ORDER BY h.hour), '[]')
        INTO out
        FROM lifts.rollup_hourly AS h
        WHERE h.lift_id = lift_rollups.id AND h.hour >= t0 AND h.hour < t1;
    ELSE
        SELECT coalesce(json_agg(json_build_object('day', d.day,
                   'readings', d.readings, 'trips', d.trips,
                   'floors_travelled', d.floors_travelled,
                   'door_cycles', d.door_cycles, 'faults', d.faults,
                   'temp_min', d.temp_min, 'temp_max', d.temp_max,
                   'hours_reporting', d.hours_reporting)
                   ORDER BY d.day), '[]')
        INTO out
        FROM lifts.rollup_daily AS d
        WHERE d.lift_id = lift_rollups.id
          AND d.day >= (t0 AT TIME ZONE 'UTC')::date
          AND d.day <= (t1 AT TIME ZONE 'UTC')::date;
    END IF;
    RETURN json_build_object('lift', id, 'period', period, 'from', t0,
                             'to', t1, 'rows', out);
END
$$;

-- Alert history of the organisation's lifts, newest first: ?lift=N,
-- ?state=firing|resolved, ?limit (100, at most 1000).
CREATE OR REPLACE FUNCTION api.lift_alerts(org bigint, lift_arg text,
                                           state text, limit_arg text)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim  int := 100;
    lid  bigint;
    out  json;
BEGIN
    IF lift_arg IS NOT NULL AND lift_arg <> '' THEN
        IF lift_arg !~ '^[0-9]{1,18}$' THEN
            PERFORM app.bad_field('lift', 'lift is a lift id.');
        END IF;
        lid := lift_arg::bigint;
    END IF;
    IF state IS NOT NULL AND state <> ''
       AND state NOT IN ('firing', 'resolved') THEN
        PERFORM app.bad_field('state', 'state is "firing" or "resolved".');
    END IF;
    IF limit_arg IS NOT NULL AND limit_arg <> '' THEN
        IF limit_arg !~ '^[0-9]{1,4}$' OR limit_arg::int NOT BETWEEN 1 AND 1000 THEN
            PERFORM app.bad_field('limit', 'limit is from 1 to 1000.');
        END IF;
        lim := limit_arg::int;
    END IF;

    SELECT coalesce(json_agg(x.j ORDER BY x.id DESC), '[]') INTO out
    FROM (SELECT a.id, json_build_object('id', a.id, 'rule', a.rule_id,
                     'name', r.name, 'metric', r.metric,
                     'comparison', r.comparison, 'threshold', r.threshold,
                     'lift', a.lift_id, 'serial', l.serial,
                     'building_id', l.building_id,
                     'state', CASE WHEN a.resolved_at IS NULL THEN 'firing'
                                   ELSE 'resolved' END,
                     'fired_at', a.fired_at, 'fired_value', a.fired_value,
                     'resolved_at', a.resolved_at,
                     'resolved_value', a.resolved_value) AS j
          FROM lifts.alerts AS a
          JOIN lifts.lifts AS l ON l.id = a.lift_id
          JOIN lifts.alert_rules AS r ON r.id = a.rule_id
          WHERE l.org_id = org
            AND (lid IS NULL OR a.lift_id = lid)
            AND (state IS NULL OR state = ''
                 OR (state = 'firing') = (a.resolved_at IS NULL))
          ORDER BY a.id DESC
          LIMIT lim) AS x;
    RETURN out;
END
$$;


-- ---------------------------------------------------------------------
-- Privileges and the timer
-- ---------------------------------------------------------------------

REVOKE ALL ON FUNCTION lifts.notify(bigint[], text),
    lifts.evaluate(bigint[], text[]), lifts.ingest_metrics(),
    lifts.alerts_after_rollup(timestamptz), maintenance.lifts_silence(),
    lifts.rule_json(lifts.alert_rules),
    lifts.check_rule(bigint, jsonb, lifts.alert_rules),
    lifts.arg_time(text, text), lifts.status_json(lifts.lifts, lifts.status)
    FROM PUBLIC;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'api.lift_rules_list(bigint)',
        'api.lift_rule_create(bigint, jsonb)',
        'api.lift_rule_get(bigint, bigint)',
        'api.lift_rule_update(bigint, bigint, jsonb)',
        'api.lift_rule_delete(bigint, bigint)',
        'api.lift_status(bigint, bigint)',
        'api.lift_building_status(bigint, bigint)',
        'api.lift_series(bigint, bigint, text, text, text)',
        'api.lift_rollups(bigint, bigint, text, text, text)',
        'api.lift_alerts(bigint, text, text, text)']
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO platform_app', f);
    END LOOP;
END
$$;

-- Lifts that reported before this migration have no status yet: their
-- newest reading (re-runnable: only lifts without a row).
INSERT INTO lifts.status (lift_id, seq, ts, received_at, kind, floor,
                          direction, load_kg, temperature, fault_code,
                          trips, floors, door_cycles, faults, run_seconds)
SELECT DISTINCT ON (r.lift_id) r.lift_id, r.seq, r.ts, r.received_at,
       r.kind, coalesce(r.floor_to, r.floor_from), r.direction, r.load_kg,
       r.temperature, r.fault_code, r.trips, r.floors, r.door_cycles,
       r.faults, r.run_seconds
FROM lifts.readings AS r
JOIN lifts.lifts AS l ON l.id = r.lift_id
WHERE NOT EXISTS (SELECT 1 FROM lifts.status AS s WHERE s.lift_id = r.lift_id)
ORDER BY r.lift_id, r.ts DESC, r.seq DESC
ON CONFLICT DO NOTHING;

SELECT jobs.enqueue('sql', '{"function": "lifts_silence"}',
                    run_at => now(), key => 'maintenance:lifts_silence');
