-- pgTAP tests for sql/009_teams.sql (run by tools/sql-test, see there):
-- balanced random splits by count and by size (uneven numbers included),
-- splitting again, moves, the deadline, submissions, the team link by
-- address, validation naming the field, and tenant isolation.

SELECT * FROM no_plan();

-- ---------------------------------------------------------------- schema

SELECT has_table('app', t, 'app.' || t || ' exists')
FROM unnest(ARRAY['teams', 'team_members', 'submissions']) AS t;
SELECT has_column('app', 'events', 'submission_deadline',
                  'app.events.submission_deadline');
SELECT col_is_unique('app', 'teams', ARRAY['event_id', 'number'],
                     'team numbers are unique per event');
SELECT col_is_unique('app', 'team_members', ARRAY['event_id', 'user_id'],
                     'one team per person and event');
SELECT col_is_unique('app', 'submissions', ARRAY['team_id'],
                     'one submission per team');
SELECT ok(NOT has_table_privilege('platform_app', 'app.' || t, p),
          'platform_app has no ' || p || ' on app.' || t)
FROM unnest(ARRAY['teams', 'team_members', 'submissions']) AS t,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p;
SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.pronamespace = 'api'::regnamespace
  AND p.proname IN ('teams_split', 'teams_get', 'team_move',
                    'submission_deadline_set', 'submissions_list',
                    'team_link_request', 'my_team', 'team_submission_put');
SELECT is((SELECT count(*)::int FROM jobs.mail_templates
           WHERE name = 'team_assigned'), 1, 'mail template team_assigned');
SELECT ok(app.valid_email(e), 'valid email: ' || e)
FROM unnest(ARRAY['ann@example.org', 'a.b+c@mail.example.co.uk']) AS e;
SELECT ok(NOT app.valid_email(e), 'invalid email: ' || e)
FROM unnest(ARRAY['nope', 'ann@localhost', 'a b@example.org', '@example.org',
                  'ann@example.org,bob@example.org', repeat('x', 65) || '@example.org',
                  'ann@-example.org']) AS e;

-- ---------------------------------------------------------------- fixtures

CREATE TEMP TABLE ids (k text PRIMARY KEY, v bigint NOT NULL);
GRANT SELECT ON ids TO platform_app;
CREATE FUNCTION pg_temp.id(key text) RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT v FROM ids WHERE k = key $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org A'), ('Org B')
           RETURNING id, name)
INSERT INTO ids SELECT CASE name WHEN 'Org A' THEN 'org_a' ELSE 'org_b' END, id
FROM o;

CREATE FUNCTION pg_temp.event(key text, org text, team_size int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE ev bigint;
BEGIN
    INSERT INTO app.events (organisation_id, title, business_type, starts_at,
                            ends_at, status, breakouts, team_size)
    VALUES (pg_temp.id(org), 'Event ' || key, 'hackathon',
            now() + interval '1 day', now() + interval '3 days', 'published',
            true, team_size)
    RETURNING id INTO ev;
    INSERT INTO app.ticket_types (event_id, name, quantity)
    VALUES (ev, 'Free', 1000);
    INSERT INTO ids VALUES (key, ev);
    RETURN ev;
END $$;

-- A valid ticket for the address (the account is made if needed); with a
-- name, through an issued registration, as 008's flow leaves it.
CREATE FUNCTION pg_temp.participant(p_ev bigint, p_email text, p_name text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE uid bigint; tt bigint; rid bigint;
BEGIN
    INSERT INTO auth.users AS u (email) VALUES (p_email)
    ON CONFLICT ON CONSTRAINT users_email_key DO UPDATE SET email = u.email
    RETURNING u.id INTO uid;
    SELECT t.id INTO tt FROM app.ticket_types AS t WHERE t.event_id = p_ev;
    IF p_name IS NOT NULL THEN
        INSERT INTO app.registrations (event_id, ticket_type_id, email, name,
                                       user_id, status, terms_version,
                                       consent_version)
        VALUES (p_ev, tt, p_email, p_name, uid, 'issued', 'terms-1', 'c-1')
        RETURNING id INTO rid;
    END IF;
    INSERT INTO app.tickets (event_id, ticket_type_id, user_id, registration_id)
    VALUES (p_ev, tt, uid, rid);
    RETURN uid;
END $$;

DO $$
BEGIN
    PERFORM pg_temp.event('ev_a', 'org_a', 3);      -- 10 participants
    PERFORM pg_temp.event('ev_b', 'org_b', 2);      -- Org B's, 2 participants
    PERFORM pg_temp.event('ev_empty', 'org_a', NULL);
    PERFORM pg_temp.event('ev_n', 'org_a', NULL);   -- for the split matrix
END $$;

INSERT INTO ids
SELECT 'a' || lpad(i::text, 2, '0'),
       pg_temp.participant(pg_temp.id('ev_a'),
                           'a' || lpad(i::text, 2, '0') || '@example.org',
                           CASE WHEN i < 10 THEN 'Person ' || lpad(i::text, 2, '0') END)
FROM generate_series(1, 10) AS i;
UPDATE auth.users SET display_name = 'Display Ten' WHERE email = 'a10@example.org';
INSERT INTO ids VALUES
    ('b01', pg_temp.participant(pg_temp.id('ev_b'), 'b01@example.org', 'Bea')),
    ('b02', pg_temp.participant(pg_temp.id('ev_b'), 'b02@example.org', 'Ben'));
-- an account with no ticket for ev_a
INSERT INTO auth.users (email) VALUES ('nobody@example.org');
INSERT INTO ids SELECT 'nobody', id FROM auth.users WHERE email = 'nobody@example.org';
DO $$
BEGIN
    PERFORM pg_temp.participant(pg_temp.id('ev_n'), 'n' || i || '@example.org', NULL)
    FROM generate_series(1, 13) AS i;
END $$;

CREATE FUNCTION pg_temp.detail_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $$;

-- Team sizes of an event, in team order.
CREATE FUNCTION pg_temp.sizes(ev bigint) RETURNS int[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(n ORDER BY number), '{}')
    FROM (SELECT t.number, count(m.user_id)::int AS n
          FROM app.teams AS t
          LEFT JOIN app.team_members AS m ON m.team_id = t.id
          WHERE t.event_id = ev
          GROUP BY t.number) AS x
$$;

-- The sizes a balanced split of n people into k teams has (the first
-- n % k teams get one more).
CREATE FUNCTION pg_temp.balanced(n int, k int) RETURNS int[] LANGUAGE sql AS $$
    SELECT array_agg(n / k + CASE WHEN i <= n % k THEN 1 ELSE 0 END ORDER BY i)
    FROM generate_series(1, k) AS i
$$;

CREATE FUNCTION pg_temp.mails(tpl text) RETURNS int LANGUAGE sql AS $$
    SELECT count(*)::int FROM jobs.jobs
    WHERE kind = 'mail' AND payload->>'template' = tpl
$$;

-- ---------------------------------------------------------------- validation

SET LOCAL ROLE platform_app;

SELECT is(pg_temp.detail_of(format('SELECT api.teams_split(%s, %s, %L, %L)',
              pg_temp.id('org_a'), pg_temp.id('ev_a'), b, 'http://t.example')),
          'field: ' || f, 'teams_split: ' || why)
FROM (VALUES
    ('body', NULL, 'no body'),
    ('body', '[1]', 'not an object'),
    ('colour', '{"by": "count", "value": 2, "colour": "red"}', 'unknown field'),
    ('by', '{"by": "teams", "value": 2}', 'by neither count nor size'),
    ('by', '{"by": 1, "value": 2}', 'by not a string'),
    ('value', '{"by": "count", "value": 0}', 'value 0'),
    ('value', '{"by": "count", "value": 10001}', 'value over 10000'),
    ('value', '{"by": "size", "value": -3}', 'negative value'),
    ('value', '{"by": "size", "value": 2.5}', 'fractional value'),
    ('value', '{"by": "size", "value": "3"}', 'value as a string'),
    ('value', '{"by": "count"}', 'count without value'),
    ('force', '{"by": "count", "value": 2, "force": "yes"}', 'force not a boolean')
) AS v(f, b, why);

SELECT is(pg_temp.detail_of(format('SELECT api.teams_split(%s, %s, %L, %L)',
              pg_temp.id('org_a'), pg_temp.id('ev_empty'), '{"by": "size"}',
              'http://t.example')),
          'field: value', 'teams_split: by size needs a value when the event has no team size');
SELECT throws_ok(format('SELECT api.teams_split(%s, %s, %L, %L)',
                        pg_temp.id('org_a'), pg_temp.id('ev_empty'),
                        '{"by": "count", "value": 2}', 'http://t.example'),
                 'PT409', 'Nobody holds a ticket for this event yet: there is no one to split into teams.',
                 'teams_split: no participants is 409 with a sentence');
SELECT throws_ok(format('SELECT api.teams_split(%s, %s, %L, %L)',
                        pg_temp.id('org_a'), pg_temp.id('ev_a'),
                        '{"by": "count", "value": 2}', 'javascript:alert(1)'),
                 'PT500', NULL, 'teams_split: a bad base_url is a configuration error');

-- ---------------------------------------------------------------- split

DO $$ BEGIN PERFORM set_config('response.status', '', true); END $$;
SELECT is(json_array_length(api.teams_split(pg_temp.id('org_a'), pg_temp.id('ev_a'),
              '{"by": "count", "value": 3}', 'http://t.example/')->'teams'),
          3, 'split by count 3: three teams');
SELECT is(current_setting('response.status'), '201', '201 Created');
RESET ROLE;

SELECT is(pg_temp.sizes(pg_temp.id('ev_a')), ARRAY[4, 3, 3],
          '10 people in 3 teams: 4, 3, 3');
SELECT is((SELECT array_agg(name ORDER BY number) FROM app.teams
           WHERE event_id = pg_temp.id('ev_a')),
          ARRAY['Team 1', 'Team 2', 'Team 3'], 'named Team 1, Team 2, Team 3');
SELECT is((SELECT count(DISTINCT user_id)::int FROM app.team_members
           WHERE event_id = pg_temp.id('ev_a')), 10, 'everyone is in a team');
SELECT is(pg_temp.mails('team_assigned'), 10, 'ten team mails queued');
SELECT is((SELECT count(DISTINCT payload->>'to')::int FROM jobs.jobs
           WHERE payload->>'template' = 'team_assigned'), 10,
          'one to each participant');
SELECT is((SELECT DISTINCT payload->'vars'->>'link' FROM jobs.jobs
           WHERE payload->>'template' = 'team_assigned'),
          'http://t.example/team.html?event=' || pg_temp.id('ev_a'),
          'the link is <public url>/team.html?event=<id>');
SELECT is((SELECT payload->'vars'->>'event_title' FROM jobs.jobs
           WHERE payload->>'to' = 'a01@example.org'), 'Event ev_a',
          'the mail names the event');
SELECT is((SELECT payload->'vars'->>'team_name' FROM jobs.jobs
           WHERE payload->>'to' = 'a01@example.org'),
          (SELECT t.name FROM app.teams AS t
           JOIN app.team_members AS m ON m.team_id = t.id
           WHERE m.user_id = pg_temp.id('a01')), 'and the team');
-- the teammates are the other members, by name, in name order
SELECT is((SELECT payload->'vars'->>'teammates' FROM jobs.jobs
           WHERE payload->>'to' = 'a01@example.org'),
          (SELECT string_agg(p.name, ', ' ORDER BY p.name)
           FROM app.team_members AS m
           JOIN app.event_participants(pg_temp.id('ev_a')) AS p ON p.user_id = m.user_id
           WHERE m.team_id = (SELECT team_id FROM app.team_members
                              WHERE user_id = pg_temp.id('a01'))
             AND m.user_id <> pg_temp.id('a01')),
          'and the teammates'' names');
SELECT doesnt_match((SELECT string_agg(payload->'vars'->>'teammates', ' ') FROM jobs.jobs
               WHERE payload->>'template' = 'team_assigned'), '@',
              'no email address among the teammates');
SELECT ok((SELECT bool_and(jobs.render_mail(id, payload, 'noreply@example.org') LIKE '%Event ev_a%')
           FROM jobs.jobs WHERE payload->>'template' = 'team_assigned'),
          'the mails render');
SELECT is((SELECT name FROM app.event_participants(pg_temp.id('ev_a'))
           WHERE user_id = pg_temp.id('a10')), 'Display Ten',
          'without a registration the display name is used');
SELECT is((SELECT name FROM app.event_participants(pg_temp.id('ev_a'))
           WHERE user_id = pg_temp.id('a03')), 'Person 03',
          'the name comes from the registration');

-- Randomness: two splits of the same people do not always agree.
CREATE TEMP TABLE split1 AS
SELECT user_id, (SELECT number FROM app.teams WHERE id = team_id) AS number
FROM app.team_members WHERE event_id = pg_temp.id('ev_a');
CREATE TEMP TABLE old_teams AS
SELECT id FROM app.teams WHERE event_id = pg_temp.id('ev_a');

-- Default: by size, the event's team_size (3).
SET LOCAL ROLE platform_app;
SELECT is(json_array_length(api.teams_split(pg_temp.id('org_a'), pg_temp.id('ev_a'),
              '{}', 'http://t.example')->'teams'),
          4, 'split again by the event''s team size 3: four teams');
RESET ROLE;
SELECT is(pg_temp.sizes(pg_temp.id('ev_a')), ARRAY[3, 3, 2, 2],
          '10 people in teams of at most 3: 3, 3, 2, 2');
SELECT is((SELECT count(*)::int FROM app.teams
           WHERE id IN (SELECT id FROM old_teams)), 0,
          'splitting again replaces the teams');
SELECT is(pg_temp.mails('team_assigned'), 20, 'and mails everyone again');

-- The matrix: n people (13, 10, 7, 2, 1) split every way; sizes balanced
-- as expected.
CREATE FUNCTION pg_temp.keep(ev bigint, n int) RETURNS void LANGUAGE sql AS $$
    UPDATE app.tickets AS t
    SET status = CASE WHEN r.rn <= n THEN 'valid' ELSE 'cancelled' END
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn
          FROM app.tickets WHERE event_id = ev) AS r
    WHERE r.id = t.id;
$$;
CREATE TEMP TABLE matrix (n int, how text, val int, expect int[], got int[]);
DO $$
DECLARE
    ev bigint := pg_temp.id('ev_n');
    n int;
    c record;
BEGIN
    FOREACH n IN ARRAY ARRAY[13, 10, 7, 2, 1] LOOP
        PERFORM pg_temp.keep(ev, n);
        FOR c IN SELECT * FROM (VALUES ('count', 1), ('count', 2), ('count', 3),
                                       ('count', 4), ('count', 5), ('count', 13),
                                       ('count', 20), ('size', 1), ('size', 2),
                                       ('size', 3), ('size', 4), ('size', 5),
                                       ('size', 6), ('size', 13), ('size', 10000))
                                AS v(how, val)
        LOOP
            PERFORM api.teams_split(pg_temp.id('org_a'), ev,
                                    jsonb_build_object('by', c.how, 'value', c.val),
                                    'http://t.example');
            INSERT INTO matrix VALUES (n, c.how, c.val,
                pg_temp.balanced(n, CASE c.how WHEN 'count' THEN least(c.val, n)
                                              ELSE ceil(n::numeric / c.val)::int END),
                pg_temp.sizes(ev));
        END LOOP;
    END LOOP;
    PERFORM pg_temp.keep(ev, 13);
END $$;
SELECT is(got, expect, format('%s people by %s %s: %s', n, how, val, expect))
FROM matrix ORDER BY n DESC, how, val;
SELECT ok((SELECT bool_and(array_length(got, 1) = CASE how WHEN 'count' THEN least(val, n)
                                                  ELSE ceil(n::numeric / val)::int END
                           AND (SELECT max(x) - min(x) FROM unnest(got) AS x) <= 1
                           AND (how = 'count' OR (SELECT max(x) FROM unnest(got) AS x) <= val)
                           AND (SELECT sum(x) FROM unnest(got) AS x) = n)
           FROM matrix),
          'every split: the asked count or size, sizes differ by at most one, everyone placed');

-- Random: over 20 splits of 10 people, a01 is not always with the same people.
CREATE TEMP TABLE mates (k int, mates text);
DO $$
BEGIN
    FOR i IN 1 .. 20 LOOP
        PERFORM api.teams_split(pg_temp.id('org_a'), pg_temp.id('ev_a'),
                                '{"by": "count", "value": 2}', 'http://t.example');
        INSERT INTO mates
        SELECT i, string_agg(m.user_id::text, ',' ORDER BY m.user_id)
        FROM app.team_members AS m
        WHERE m.team_id = (SELECT team_id FROM app.team_members
                           WHERE user_id = pg_temp.id('a01'));
    END LOOP;
END $$;
SELECT cmp_ok((SELECT count(DISTINCT mates)::int FROM mates), '>', 1,
              'the split is random');

-- ---------------------------------------------------------------- organiser view

DO $$
BEGIN
    PERFORM api.teams_split(pg_temp.id('org_a'), pg_temp.id('ev_a'),
                            '{"by": "count", "value": 3}', 'http://t.example');
END $$;
CREATE TEMP TABLE team_of AS
SELECT m.user_id, m.team_id, t.number FROM app.team_members AS m
JOIN app.teams AS t ON t.id = m.team_id WHERE m.event_id = pg_temp.id('ev_a');
GRANT SELECT ON team_of TO platform_app;
INSERT INTO ids SELECT 'team_n', min(id) FROM app.teams WHERE event_id = pg_temp.id('ev_n');

SET LOCAL ROLE platform_app;
SELECT is((SELECT count(*)::int
           FROM json_array_elements(api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'teams') AS t,
                json_array_elements(t->'members') AS m), 10,
          'teams_get lists every member');
SELECT is((api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'teams'->0->'members'->0)::jsonb
              ?& ARRAY['user_id', 'name', 'email'], true,
          'members with id, name and email');
SELECT is(json_array_length(api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'unassigned'),
          0, 'nobody unassigned');
SELECT is((api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_empty')))::jsonb
              - 'closes_at' - 'event_id',
          '{"teams": [], "team_size": null, "unassigned": [], "participants": 0,
            "submission_deadline": null}'::jsonb,
          'an event without teams');

-- ---------------------------------------------------------------- moves

SELECT is(pg_temp.detail_of(format('SELECT api.team_move(%s, %s, %L, %L)',
              pg_temp.id('org_a'), pg_temp.id('ev_a'), b, 'http://t.example')),
          'field: ' || f, 'team_move: ' || why)
FROM (VALUES
    ('body', NULL, 'no body'),
    ('user_id', '{"team_id": null}', 'no user_id'),
    ('user_id', '{"user_id": "7", "team_id": null}', 'user_id a string'),
    ('user_id', '{"user_id": 0, "team_id": null}', 'user_id 0'),
    ('team_id', format('{"user_id": %s}', pg_temp.id('a01')), 'no team_id'),
    ('team_id', format('{"user_id": %s, "team_id": 1.5}', pg_temp.id('a01')), 'team_id fractional'),
    ('user_id', format('{"user_id": %s, "team_id": null}', pg_temp.id('nobody')),
     'someone without a ticket'),
    ('user_id', format('{"user_id": %s, "team_id": null}', pg_temp.id('b01')),
     'a participant of another org''s event'),
    ('team_id', format('{"user_id": %s, "team_id": %s}', pg_temp.id('a01'),
                       pg_temp.id('team_n')),
     'a team of another event'),
    ('team_id', format('{"user_id": %s, "team_id": 999999999}', pg_temp.id('a01')),
     'a team that does not exist'),
    ('extra', format('{"user_id": %s, "team_id": null, "extra": 1}', pg_temp.id('a01')),
     'unknown field')
) AS v(f, b, why);

RESET ROLE;
CREATE TEMP TABLE before_move AS SELECT pg_temp.mails('team_assigned') AS n;
GRANT SELECT ON before_move TO platform_app;
CREATE FUNCTION pg_temp.move(who text, number int) RETURNS json LANGUAGE sql AS $$
    SELECT api.team_move(pg_temp.id('org_a'), pg_temp.id('ev_a'),
               jsonb_build_object('user_id', pg_temp.id(who),
                                  'team_id', (SELECT t.team_id FROM team_of AS t
                                              WHERE t.number = move.number
                                              LIMIT 1)),
               'http://t.example')
$$;
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.move('a01', NULL)::jsonb,
          jsonb_build_object('user_id', pg_temp.id('a01'), 'team', NULL, 'moved', true),
          'team_id null takes a01 out of their team');
SELECT is(pg_temp.move('a01', 3)::jsonb - 'user_id',
          jsonb_build_object('team', jsonb_build_object(
                                 'id', (SELECT team_id FROM team_of WHERE number = 3 LIMIT 1),
                                 'number', 3, 'name', 'Team 3'),
                             'moved', true),
          'a01 into Team 3: the answer names the team');
SELECT is(pg_temp.move('a01', 1)->'team'->>'name', 'Team 1', 'a01 moved on to Team 1');
SELECT is(pg_temp.move('a01', 1)->>'moved', 'false',
          'moving into the same team changes nothing');
RESET ROLE;
SELECT is((SELECT t.number FROM app.team_members AS m JOIN app.teams AS t ON t.id = m.team_id
           WHERE m.user_id = pg_temp.id('a01') AND m.event_id = pg_temp.id('ev_a')),
          1, 'a01 is in Team 1');
SELECT is(pg_temp.mails('team_assigned') - (SELECT n FROM before_move), 2,
          'a01 was mailed for each change of team, not for leaving or staying');
SELECT is((SELECT payload->'vars'->>'team_name' FROM jobs.jobs
           WHERE payload->>'to' = 'a01@example.org' ORDER BY id DESC LIMIT 1),
          'Team 1', 'the last mail names Team 1');
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.move('a02', NULL)->>'moved', 'true', 'a02 out of their team');
SELECT is((api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'unassigned'->0->>'user_id')::bigint,
          pg_temp.id('a02'), 'a02 is listed as unassigned');
RESET ROLE;
SELECT throws_ok(format('INSERT INTO app.team_members (team_id, event_id, user_id) '
                        'SELECT id, event_id, %s FROM app.teams '
                        'WHERE event_id = %s AND number = 2',
                        pg_temp.id('a01'), pg_temp.id('ev_a')),
                 '23505', NULL, 'a person cannot be in two teams of an event');
SELECT throws_ok(format('INSERT INTO app.team_members (team_id, event_id, user_id) '
                        'SELECT id, %s, %s FROM app.teams '
                        'WHERE event_id = %s LIMIT 1',
                        pg_temp.id('ev_a'), pg_temp.id('b01'), pg_temp.id('ev_n')),
                 '23503', NULL, 'a membership names a team of its own event');
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.move('a02', 2)->>'moved', 'true', 'a02 into Team 2');
RESET ROLE;

-- A ticket that is cancelled takes its holder out of the team.
UPDATE app.tickets SET status = 'cancelled'
WHERE event_id = pg_temp.id('ev_a') AND user_id = pg_temp.id('a09');
SELECT is((SELECT count(*)::int FROM app.team_members
           WHERE user_id = pg_temp.id('a09')), 0,
          'a cancelled ticket leaves the team');
UPDATE app.tickets SET status = 'valid'
WHERE event_id = pg_temp.id('ev_a') AND user_id = pg_temp.id('a09');
SELECT is((SELECT (api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'unassigned'->0->>'user_id')::bigint),
          pg_temp.id('a09'), 'valid again: a participant in no team');
SELECT is(pg_temp.move('a09', 3)->>'moved', 'true', 'a09 back into Team 3');
DELETE FROM team_of;
INSERT INTO team_of
SELECT m.user_id, m.team_id, t.number FROM app.team_members AS m
JOIN app.teams AS t ON t.id = m.team_id WHERE m.event_id = pg_temp.id('ev_a');

-- ---------------------------------------------------------------- participant view

SET LOCAL ROLE platform_app;
SELECT is(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->'team'->>'name',
          'Team 1', 'my_team: the caller''s team');
SELECT is((SELECT array_agg(DISTINCT k ORDER BY k)
           FROM json_array_elements(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))
                                    ->'team'->'members') AS m,
                json_object_keys(m) AS k),
          ARRAY['name', 'you'], 'members: names only, no email or id');
SELECT is((SELECT count(*)::int
           FROM json_array_elements(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))
                                    ->'team'->'members') AS m
           WHERE (m->>'you')::boolean AND m->>'name' = 'Person 01'), 1,
          'the caller is marked');
SELECT is(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->>'editable', 'true',
          'editable: no deadline, the event has not ended');
SELECT ok(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->'submission' IS NULL
          OR json_typeof(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->'submission') = 'null',
          'no submission yet');
SELECT throws_ok(format('SELECT api.my_team(%s, %s)', pg_temp.id('b01'), pg_temp.id('ev_a')),
                 'PT404', 'You are not in a team of this event.',
                 'my_team: a participant of another event: 404');
SELECT throws_ok(format('SELECT api.my_team(%s, %s)', pg_temp.id('nobody'), pg_temp.id('ev_a')),
                 'PT404', NULL, 'my_team: no ticket: 404');
SELECT throws_ok(format('SELECT api.my_team(NULL, %s)', pg_temp.id('ev_a')),
                 'PT401', NULL, 'my_team: no session: 401');

-- ---------------------------------------------------------------- submissions

SELECT is(pg_temp.detail_of(format('SELECT api.team_submission_put(%s, %s, %L)',
              pg_temp.id('a01'), pg_temp.id('ev_a'), b)),
          'field: ' || f, 'team_submission_put: ' || why)
FROM (VALUES
    ('body', NULL, 'no body'),
    ('title', '{"link": "https://x.example"}', 'no title'),
    ('title', '{"title": "  ", "link": "https://x.example"}', 'blank title'),
    ('title', json_build_object('title', repeat('t', 201), 'link', 'https://x.example')::text,
     'title over 200 characters'),
    ('link', '{"title": "T"}', 'no link'),
    ('link', '{"title": "T", "link": "ftp://x.example"}', 'link not http(s)'),
    ('link', '{"title": "T", "link": "https://x.example/a b"}', 'link with a space'),
    ('link', json_build_object('title', 'T', 'link', 'https://x.example/' || repeat('a', 1990))::text,
     'link over 2000 characters'),
    ('description', json_build_object('title', 'T', 'link', 'https://x.example',
                                      'description', repeat('d', 10001))::text,
     'description over 10000 characters'),
    ('description', '{"title": "T", "link": "https://x.example", "description": 5}',
     'description not a string'),
    ('team', '{"title": "T", "link": "https://x.example", "team": 2}', 'unknown field')
) AS v(f, b, why);

DO $$ BEGIN PERFORM set_config('response.status', '', true); END $$;
SELECT is(api.team_submission_put(pg_temp.id('a01'), pg_temp.id('ev_a'),
              '{"title": "Robot", "link": "https://git.example/robot",
                "description": "It walks."}')::jsonb
              - 'id' - 'created_at' - 'updated_at',
          '{"title": "Robot", "link": "https://git.example/robot", "description": "It walks.",
            "submitted_by": "Person 01", "updated_by": "Person 01"}'::jsonb,
          'a01 submits for Team 1');
SELECT is(current_setting('response.status'), '201', '201 for a new submission');
DO $$ BEGIN PERFORM set_config('response.status', '', true); END $$;
SELECT is(api.team_submission_put((SELECT user_id FROM team_of
                                   WHERE number = 1 AND user_id <> pg_temp.id('a01')
                                   ORDER BY user_id LIMIT 1),
                                  pg_temp.id('ev_a'),
              '{"title": "Robot v2", "link": "http://git.example/robot2"}')->>'description',
          '', 'a teammate replaces it (description optional)');
SELECT is(current_setting('response.status'), '', '200 for a change');
SELECT is(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->'submission'->>'title',
          'Robot v2', 'my_team shows the submission');
SELECT is(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->'submission'->>'submitted_by',
          'Person 01', 'submitted_by stays the first author');
-- A member of Team 2 writes Team 2's submission, never Team 1's.
SELECT is(api.team_submission_put((SELECT user_id FROM team_of WHERE number = 2
                                   ORDER BY user_id LIMIT 1),
                                  pg_temp.id('ev_a'),
              '{"title": "Team 2 work", "link": "https://x.example/2"}')->>'title',
          'Team 2 work', 'a Team 2 member submits');
SELECT is(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->'submission'->>'title',
          'Robot v2', 'Team 1''s submission is untouched');
SELECT throws_ok(format('SELECT api.team_submission_put(%s, %s, %L)', pg_temp.id('b01'),
                        pg_temp.id('ev_a'), '{"title": "Mine", "link": "https://x.example"}'),
                 'PT404', 'You are not in a team of this event.',
                 'a participant of another event cannot submit for ev_a');
SELECT throws_ok(format('SELECT api.team_submission_put(%s, %s, %L)', pg_temp.id('a01'),
                        pg_temp.id('ev_b'), '{"title": "Mine", "link": "https://x.example"}'),
                 'PT404', NULL, 'nor can a01 submit to Org B''s event');

-- Organisers list them.
SELECT is((SELECT array_agg(s->>'title' || ' by ' || (s->'team'->>'name') ORDER BY 1)
           FROM json_array_elements(api.submissions_list(pg_temp.id('org_a'),
                                                         pg_temp.id('ev_a'))->'submissions') AS s),
          ARRAY['Robot v2 by Team 1', 'Team 2 work by Team 2'],
          'submissions_list: each with its team');
SELECT is((SELECT json_array_length(s->'team'->'members')
           FROM json_array_elements(api.submissions_list(pg_temp.id('org_a'),
                                                         pg_temp.id('ev_a'))->'submissions') AS s
           WHERE s->'team'->>'name' = 'Team 1'),
          (SELECT count(*)::int FROM team_of WHERE number = 1),
          'and its members');
SELECT is(api.teams_get(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'teams'->0->'submission'->>'title',
          'Robot v2', 'teams_get: submission summary');

-- Splitting again would delete them: 409 unless forced.
SELECT throws_ok(format('SELECT api.teams_split(%s, %s, %L, %L)', pg_temp.id('org_a'),
                        pg_temp.id('ev_a'), '{"by": "count", "value": 2}', 'http://t.example'),
                 'PT409', 'Teams have already submitted work (Team 1, Team 2): splitting again would delete their submissions.',
                 're-split with submissions: 409 naming the teams');

-- ---------------------------------------------------------------- deadline

SELECT is(pg_temp.detail_of(format('SELECT api.submission_deadline_set(%s, %s, %L)',
              pg_temp.id('org_a'), pg_temp.id('ev_a'), b)),
          'field: ' || f, 'submission_deadline_set: ' || why)
FROM (VALUES
    ('body', NULL, 'no body'),
    ('deadline', '{}', 'no deadline field'),
    ('deadline', '{"deadline": "soon"}', 'not a time'),
    ('deadline', '{"deadline": 5}', 'a number'),
    ('deadline', '{"deadline": "infinity"}', 'infinity'),
    ('when', '{"deadline": null, "when": 1}', 'unknown field')
) AS v(f, b, why);

SELECT is((api.submission_deadline_set(pg_temp.id('org_a'), pg_temp.id('ev_a'),
               jsonb_build_object('deadline', now() + interval '1 hour'))->>'open')::boolean,
          true, 'deadline in an hour: open');
SELECT is((api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->>'submission_deadline')::timestamptz,
          now() + interval '1 hour', 'my_team shows the deadline');
SELECT lives_ok(format('SELECT api.team_submission_put(%s, %s, %L)', pg_temp.id('a01'),
                       pg_temp.id('ev_a'), '{"title": "Robot v3", "link": "https://x.example/3"}'),
                'editable before the deadline');
SELECT is((api.submission_deadline_set(pg_temp.id('org_a'), pg_temp.id('ev_a'),
               jsonb_build_object('deadline', now() - interval '1 second'))->>'open')::boolean,
          false, 'deadline passed: closed');
SELECT is(api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->>'editable', 'false',
          'my_team: not editable');
SELECT throws_ok(format('SELECT api.team_submission_put(%s, %s, %L)', pg_temp.id('a01'),
                        pg_temp.id('ev_a'), '{"title": "Late", "link": "https://x.example/4"}'),
                 'PT409', 'The submission deadline has passed.',
                 'after the deadline: 409 with a sentence');
SELECT throws_ok(format('SELECT api.team_submission_put(%s, %s, %L)', pg_temp.id('a01'),
                        pg_temp.id('ev_a'), '{"title": ""}'),
                 'PT409', 'The submission deadline has passed.',
                 'the deadline is reported before the fields');
SELECT is(api.submission_deadline_set(pg_temp.id('org_a'), pg_temp.id('ev_a'),
              '{"deadline": null}')->>'submission_deadline', NULL,
          'deadline removed');
SELECT is((api.my_team(pg_temp.id('a01'), pg_temp.id('ev_a'))->>'closes_at')::timestamptz,
          now() + interval '3 days', 'without a deadline submissions close when the event ends');
RESET ROLE;
UPDATE app.events SET starts_at = now() - interval '2 days', ends_at = now() - interval '1 day'
WHERE id = pg_temp.id('ev_a');
SET LOCAL ROLE platform_app;
SELECT throws_ok(format('SELECT api.team_submission_put(%s, %s, %L)', pg_temp.id('a01'),
                        pg_temp.id('ev_a'), '{"title": "Late", "link": "https://x.example/4"}'),
                 'PT409', 'The submission deadline has passed.',
                 'no deadline and the event is over: 409');
SELECT is(api.submissions_list(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'submissions'->0->>'title',
          'Robot v3', 'the last accepted version stays');
RESET ROLE;
UPDATE app.events SET starts_at = now() + interval '1 day', ends_at = now() + interval '3 days'
WHERE id = pg_temp.id('ev_a');

-- ---------------------------------------------------------------- team link by address

CREATE FUNCTION pg_temp.resend(email text, ip text, per_email int DEFAULT 5)
RETURNS json LANGUAGE sql AS $$
    SELECT api.team_link_request(pg_temp.id('ev_a'), jsonb_build_object('email', email),
                                 ip, 'http://t.example', per_email, 20)
$$;
CREATE TEMP TABLE before_resend AS SELECT pg_temp.mails('team_assigned') AS n;
GRANT SELECT ON before_resend TO platform_app;
SET LOCAL ROLE platform_app;

DO $$ BEGIN PERFORM set_config('response.status', '', true); END $$;
SELECT is(pg_temp.resend('A03@Example.org', '192.0.2.1')::text, '{"status" : "sent"}',
          'known address: sent');
SELECT is(current_setting('response.status'), '202', '202');
DO $$ BEGIN PERFORM set_config('response.status', '', true); END $$;
SELECT is(pg_temp.resend('stranger@example.org', '192.0.2.1')::text, '{"status" : "sent"}',
          'unknown address: the same answer');
SELECT is(current_setting('response.status'), '202', 'the same 202');
SELECT is(pg_temp.resend('b01@example.org', '192.0.2.1')::text, '{"status" : "sent"}',
          'another event''s participant: the same answer');
SELECT is(pg_temp.resend('nobody@example.org', '192.0.2.1')::text, '{"status" : "sent"}',
          'an account without a ticket: the same answer');
RESET ROLE;
SELECT is(pg_temp.mails('team_assigned') - (SELECT n FROM before_resend), 1,
          'only the known participant got a mail');
SELECT is((SELECT payload->>'to' FROM jobs.jobs ORDER BY id DESC LIMIT 1),
          'a03@example.org', 'to that address');
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.detail_of(format('SELECT api.team_link_request(%s, %L, %L, %L)',
              pg_temp.id('ev_a'), b, '192.0.2.1', 'http://t.example')),
          'field: ' || f, 'team_link_request: ' || why)
FROM (VALUES
    ('body', NULL, 'no body'),
    ('email', '{}', 'no email'),
    ('email', '{"email": ""}', 'empty email'),
    ('email', '{"email": "nope"}', 'not an address'),
    ('email', '{"email": "a@b"}', 'no dot in the domain'),
    ('email', '{"email": 7}', 'not a string'),
    ('email', json_build_object('email', repeat('a', 250) || '@x.org')::text, 'too long'),
    ('name', '{"email": "a@example.org", "name": "x"}', 'unknown field')
) AS v(f, b, why);

-- Rate limits: per address, then per client address.
SELECT is((SELECT array_agg(coalesce(pg_temp.resend('A04@example.org', '192.0.2.' || (10 + i), 3)
                                     ->'error'->>'code', 'sent') ORDER BY i)
           FROM generate_series(1, 4) AS i),
          ARRAY['sent', 'sent', 'sent', 'rate_limited'],
          'per address: the fourth in the window is refused');
SELECT is(current_setting('response.status'), '429', '429');
SELECT matches(current_setting('response.headers'), 'Retry-After: [0-9]+',
               'with Retry-After');
SELECT is((SELECT array_agg(coalesce(pg_temp.resend('x' || i || '@example.org', '198.51.100.7')
                                     ->'error'->>'code', 'sent') ORDER BY i)
           FROM generate_series(1, 21) AS i)
          [19:21],
          ARRAY['sent', 'sent', 'rate_limited'],
          'per client address: the 21st is refused');
SELECT alike(pg_temp.resend('x99@example.org', '198.51.100.7')->'error'->>'message',
            'Too many team links were requested. Please wait %',
            'with a sentence');

-- ---------------------------------------------------------------- isolation

-- Org B's organiser, on every Org A endpoint: 404, and nothing changes.
RESET ROLE;
CREATE TEMP TABLE snapshot AS
SELECT (SELECT json_agg(t ORDER BY t.id)::text FROM app.teams AS t) AS teams,
       (SELECT json_agg(m ORDER BY m.user_id)::text FROM app.team_members AS m) AS members,
       (SELECT json_agg(s ORDER BY s.id)::text FROM app.submissions AS s) AS subs,
       (SELECT submission_deadline FROM app.events WHERE id = pg_temp.id('ev_a'))::text
           AS deadline;
SET LOCAL ROLE platform_app;
SELECT throws_ok(format(q, pg_temp.id('org_b'), pg_temp.id('ev_a'), pg_temp.id('a01'),
                        (SELECT team_id FROM team_of WHERE number = 2 LIMIT 1)),
                 'PT404', 'No such event.', 'Org B: ' || what || ' of Org A''s event is 404')
FROM (VALUES
    ('teams_get', 'SELECT api.teams_get(%s, %s)'),
    ('teams_split', 'SELECT api.teams_split(%s, %s, ''{"by": "count", "value": 2, "force": true}'', ''http://t.example'')'),
    ('team_move', 'SELECT api.team_move(%s, %s, ''{"user_id": %s, "team_id": %s}'', ''http://t.example'')'),
    ('submission_deadline_set', 'SELECT api.submission_deadline_set(%s, %s, ''{"deadline": null}'')'),
    ('submissions_list', 'SELECT api.submissions_list(%s, %s)')
) AS v(what, q);
-- and Org A on Org B's event
SELECT throws_ok(format(q, pg_temp.id('org_a'), pg_temp.id('ev_b'), pg_temp.id('b01')),
                 'PT404', 'No such event.', 'Org A: ' || what || ' of Org B''s event is 404')
FROM (VALUES
    ('teams_get', 'SELECT api.teams_get(%s, %s)'),
    ('teams_split', 'SELECT api.teams_split(%s, %s, ''{"by": "count", "value": 2}'', ''http://t.example'')'),
    ('team_move', 'SELECT api.team_move(%s, %s, ''{"user_id": %s, "team_id": null}'', ''http://t.example'')'),
    ('submission_deadline_set', 'SELECT api.submission_deadline_set(%s, %s, ''{"deadline": null}'')'),
    ('submissions_list', 'SELECT api.submissions_list(%s, %s)')
) AS v(what, q);
SELECT throws_ok(format('SELECT api.teams_get(NULL, %s)', pg_temp.id('ev_a')),
                 'PT404', NULL, 'no organisation: 404');
RESET ROLE;
SELECT is((SELECT json_agg(t ORDER BY t.id)::text FROM app.teams AS t), (SELECT teams FROM snapshot),
          'teams unchanged');
SELECT is((SELECT json_agg(m ORDER BY m.user_id)::text FROM app.team_members AS m),
          (SELECT members FROM snapshot), 'members unchanged');
SELECT is((SELECT json_agg(s ORDER BY s.id)::text FROM app.submissions AS s),
          (SELECT subs FROM snapshot), 'submissions unchanged');
SELECT is((SELECT submission_deadline::text FROM app.events WHERE id = pg_temp.id('ev_a')),
          (SELECT deadline FROM snapshot), 'deadline unchanged');

-- Org B splits its own event: its teams are its own.
SET LOCAL ROLE platform_app;
SELECT is(json_array_length(api.teams_split(pg_temp.id('org_b'), pg_temp.id('ev_b'), '{}',
                                            'http://t.example')->'teams'),
          1, 'Org B splits its event by its team size (2): one team');
SELECT is((SELECT array_agg(m->>'email' ORDER BY m->>'email')
           FROM json_array_elements(api.teams_get(pg_temp.id('org_b'), pg_temp.id('ev_b'))
                                    ->'teams'->0->'members') AS m),
          ARRAY['b01@example.org', 'b02@example.org'], 'with its own participants only');

-- Forced re-split deletes the submissions.
SELECT is(json_array_length(api.teams_split(pg_temp.id('org_a'), pg_temp.id('ev_a'),
              '{"by": "count", "value": 2, "force": true}', 'http://t.example')->'teams'),
          2, 'a forced re-split goes ahead');
SELECT is(json_array_length(api.submissions_list(pg_temp.id('org_a'), pg_temp.id('ev_a'))->'submissions'),
          0, 'and the submissions went with the old teams');

-- nginx reaches nothing but the endpoints.
SELECT throws_ok('SELECT * FROM app.teams', '42501', NULL, 'nginx cannot read app.teams');
SELECT throws_ok('SELECT * FROM app.submissions', '42501', NULL,
                 'nginx cannot read app.submissions');
SELECT throws_ok(format('SELECT app.mail_team_links(%s, %L)', pg_temp.id('ev_a'), 'http://x'),
                 '42501', NULL, 'nginx cannot call the helpers');
RESET ROLE;

SELECT * FROM finish();
