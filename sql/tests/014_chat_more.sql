-- pgTAP tests for sql/014_chat_more.sql (run by tools/sql-test): help
-- requests (one open per user and event, clearing, lists, who may),
-- engagement batches (connections, minutes, idempotence), messages counted
-- by api.chat_store, the engagement report, stale connections, privileges.

SELECT * FROM no_plan();

SELECT has_table('app', t, 'app.' || t || ' exists')
FROM unnest(ARRAY['help_requests', 'chat_connections', 'engagement_minutes',
                  'engagement_counters']) AS t;
SELECT col_is_pk('app', 'engagement_minutes',
                 ARRAY['event_id', 'user_id', 'minute'],
                 'engagement_minutes: one row per minute');
SELECT has_index('app', 'help_requests', 'help_requests_open_idx',
                 'one open request per user and event');
SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.pronamespace = 'api'::regnamespace
  AND p.proname IN ('chat_help', 'chat_help_clear', 'chat_help_list',
                    'chat_engagement_store', 'event_engagement',
                    'chat_store');

-- ---------------------------------------------------------------- set-up

CREATE TEMP TABLE ids (key text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql
AS $$ SELECT id FROM ids WHERE key = k $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id)
INSERT INTO ids SELECT 'o', id FROM o;
WITH e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           VALUES (pg_temp.id('o'), 'Chat', 'hackathon',
                   '2031-01-01T10:00:00Z', '2031-01-01T18:00:00Z')
           RETURNING id)
INSERT INTO ids SELECT 'ev', id FROM e;
WITH t AS (INSERT INTO app.ticket_types (event_id, name, quantity)
           VALUES (pg_temp.id('ev'), 'Seat', 10) RETURNING id)
INSERT INTO ids SELECT 'tt', id FROM t;
WITH u AS (INSERT INTO auth.users (email, display_name)
           VALUES ('org@x.org', 'Olga'), ('p1@x.org', 'Pia'),
                  ('p2@x.org', 'Paul'), ('out@x.org', 'Out')
           RETURNING id, email)
INSERT INTO ids SELECT split_part(email, '@', 1), id FROM u;
INSERT INTO auth.memberships (user_id, role, org_id)
VALUES (pg_temp.id('org'), 'organiser', pg_temp.id('o'));
INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
SELECT pg_temp.id('ev'), pg_temp.id('tt'), pg_temp.id(k)
FROM unnest(ARRAY['p1', 'p2']) AS k;
WITH t AS (INSERT INTO app.teams (event_id, number, name)
           VALUES (pg_temp.id('ev'), 1, 'One') RETURNING id)
INSERT INTO ids SELECT 'team1', id FROM t;
INSERT INTO app.team_members (team_id, event_id, user_id)
VALUES (pg_temp.id('team1'), pg_temp.id('ev'), pg_temp.id('p1'));

-- ---------------------------------------------------------------- help

SELECT throws_ok(format('SELECT api.chat_help(%s, %s, ''main'', ''x'')',
                        pg_temp.id('out'), pg_temp.id('ev')),
                 'PT403', NULL, 'help: no ticket, no help');
SELECT throws_ok(format('SELECT api.chat_help(%s, %s, ''admin'', ''x'')',
                        pg_temp.id('org'), pg_temp.id('ev')),
                 'PT403', NULL, 'help: not from the admin room');

SELECT api.chat_help(pg_temp.id('p1'), pg_temp.id('ev'), 'team', 'stuck')
    AS h1 \gset
SELECT is((:'h1'::jsonb) - 'id' - 'time' - 'updated_at',
          jsonb_build_object('user', jsonb_build_object(
                                 'id', pg_temp.id('p1'), 'name', 'Pia',
                                 'avatar', NULL),
                             'team_id', pg_temp.id('team1'),
                             'room', 'team:' || pg_temp.id('team1'),
                             'text', 'stuck', 'cleared_at', NULL,
                             'cleared_by', NULL),
          'help: the request, its team and room');
SELECT is((api.chat_help(pg_temp.id('p1'), pg_temp.id('ev'), 'main',
                         'still stuck') ->> 'id')::bigint,
          (:'h1'::jsonb ->> 'id')::bigint,
          'a second press updates the open request');
SELECT is((SELECT text || ' ' || room FROM app.help_requests
           WHERE user_id = pg_temp.id('p1')), 'still stuck main',
          'with the new text and room');
SELECT is(api.chat_help(pg_temp.id('p2'), pg_temp.id('ev'), 'main', NULL)
              ->> 'text', '', 'no text: empty');
SELECT is(api.chat_help(pg_temp.id('p2'), pg_temp.id('ev'), 'main', NULL)
              ->> 'team_id', NULL, 'no team: null');

SELECT throws_ok(format('SELECT api.chat_help_list(%s, %s)',
                        pg_temp.id('p1'), pg_temp.id('ev')),
                 'PT403', NULL, 'list: participants 403');
SELECT throws_ok(format('SELECT api.chat_help_list(NULL, %s)',
                        pg_temp.id('ev')), 'PT401', NULL, 'list: 401');
SELECT is(ARRAY(SELECT x -> 'user' ->> 'name' FROM json_array_elements(
              api.chat_help_list(pg_temp.id('org'), pg_temp.id('ev'))
                  -> 'requests') AS x),
          ARRAY['Pia', 'Paul'], 'list: open requests, oldest first');

SELECT throws_ok(format('SELECT api.chat_help_clear(%s, %s, %s)',
                        pg_temp.id('p2'), pg_temp.id('ev'),
                        :'h1'::jsonb ->> 'id'),
                 'PT403', NULL, 'clear: participants 403');
SELECT throws_ok(format('SELECT api.chat_help_clear(%s, %s, 0)',
                        pg_temp.id('org'), pg_temp.id('ev')),
                 'PT404', NULL, 'clear: no such request 404');
SELECT is(api.chat_help_clear(pg_temp.id('org'), pg_temp.id('ev'),
                              (:'h1'::jsonb ->> 'id')::bigint)::jsonb
              - 'cleared_at',
          jsonb_build_object('id', (:'h1'::jsonb ->> 'id')::bigint,
                             'by', jsonb_build_object(
                                 'id', pg_temp.id('org'), 'name', 'Olga',
                                 'avatar', NULL),
                             'user_id', pg_temp.id('p1'), 'room', 'main'),
          'clear: by whom, the participant and room');
SELECT lives_ok(format('SELECT api.chat_help_clear(%s, %s, %s)',
                       pg_temp.id('org'), pg_temp.id('ev'),
                       :'h1'::jsonb ->> 'id'),
                'clear again: no error');
SELECT is(json_array_length(api.chat_help_list(pg_temp.id('org'),
                                               pg_temp.id('ev'))
                            -> 'requests'), 1, 'one open left');
SELECT is(json_array_length(api.chat_help_list(pg_temp.id('org'),
                                               pg_temp.id('ev'), true)
                            -> 'requests'), 2, 'all: two');
SELECT isnt((api.chat_help(pg_temp.id('p1'), pg_temp.id('ev'), 'main',
                           'again') ->> 'id')::bigint,
            (:'h1'::jsonb ->> 'id')::bigint,
            'after a clear, a press opens a new request');

-- ---------------------------------------------------------------- engagement

SELECT is(api.chat_engagement_store(jsonb_build_array(
    jsonb_build_object('k', 'o', 'c', 'w1-1', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'main',
                       'at', '2031-01-01T10:00:10Z'),
    jsonb_build_object('k', 'o', 'c', 'w1-2', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'team:1',
                       'at', '2031-01-01T10:00:20Z'),
    jsonb_build_object('k', 'b', 'c', 'w1-1', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'main',
                       'at', '2031-01-01T10:01:10Z'),
    jsonb_build_object('k', 'b', 'c', 'w1-2', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'main',
                       'at', '2031-01-01T10:01:20Z'),
    jsonb_build_object('k', 'c', 'c', 'w1-2', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'main',
                       'at', '2031-01-01T10:01:30Z'),
    jsonb_build_object('k', 'o', 'c', 'w1-3', 'e', 0,
                       'u', pg_temp.id('p1'), 'r', 'main'))),
          5, 'a batch: items of no event skipped');
SELECT is((SELECT count(*) FROM app.chat_connections
           WHERE user_id = pg_temp.id('p1')), 2::bigint, 'two connections');
SELECT is((SELECT closed_at FROM app.chat_connections WHERE key = 'w1-2'),
          '2031-01-01T10:01:30Z'::timestamptz,
          'opened and closed in one batch: closed');
SELECT is((SELECT count(*) FROM app.engagement_minutes
           WHERE user_id = pg_temp.id('p1')), 2::bigint,
          'two sockets, two minutes: two rows');
SELECT is(api.chat_engagement_store(jsonb_build_array(
    jsonb_build_object('k', 'o', 'c', 'w1-1', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'main',
                       'at', '2031-01-01T10:00:10Z'),
    jsonb_build_object('k', 'c', 'c', 'w1-1', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p1'), 'r', 'main',
                       'at', '2031-01-01T10:02:05Z'))),
          2, 'a batch sent again, and a close');
SELECT is((SELECT count(*) || ' ' || count(closed_at)
           FROM app.chat_connections WHERE user_id = pg_temp.id('p1')),
          '2 2', 'no duplicate row, both closed');
SELECT is((SELECT count(*) FROM app.engagement_minutes
           WHERE user_id = pg_temp.id('p1')), 3::bigint, 'three minutes');

SELECT is(api.chat_store(jsonb_agg(jsonb_build_object(
              'e', pg_temp.id('ev'), 'r', 'main', 'i', n,
              'u', pg_temp.id(CASE WHEN n <= 3 THEN 'p1' ELSE 'p2' END),
              'n', 'x', 't', 'm' || n))), 5, 'chat_store: 5 messages')
FROM generate_series(1, 5) AS n;
SELECT is(api.chat_store(jsonb_build_array(jsonb_build_object(
              'e', pg_temp.id('ev'), 'r', 'main', 'i', 1,
              'u', pg_temp.id('p1'), 'n', 'x', 't', 'm1'))), 0,
          'chat_store: a repeat is not stored');
SELECT is((SELECT array_agg(messages ORDER BY user_id)
           FROM app.engagement_counters WHERE event_id = pg_temp.id('ev')),
          ARRAY[3, 2]::bigint[], 'messages counted per participant, once');

SELECT throws_ok(format('SELECT api.event_engagement(%s, %s)',
                        pg_temp.id('p1'), pg_temp.id('ev')),
                 'PT403', NULL, 'engagement: participants 403');
SELECT is((SELECT x::jsonb - 'user'
           FROM json_array_elements(api.event_engagement(
                    pg_temp.id('org'), pg_temp.id('ev')) -> 'participants')
                AS x
           WHERE (x -> 'user' ->> 'id')::bigint = pg_temp.id('p1')),
          jsonb_build_object('minutes', 3, 'messages', 3, 'connections', 2,
                             'first_seen', '2031-01-01T10:00:00.000Z',
                             'last_seen', '2031-01-01T10:02:05.000Z'),
          'engagement of p1: minutes, messages, connections, seen');
SELECT is(json_array_length(api.event_engagement(pg_temp.id('org'),
                                                 pg_temp.id('ev'))
                            -> 'participants'), 2,
          'p2 is listed for messages alone');

-- stale connections
SELECT api.chat_engagement_store(jsonb_build_array(
    jsonb_build_object('k', 'o', 'c', 'w2-1', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('p2'), 'r', 'main',
                       'at', now() - interval '10 minutes'),
    jsonb_build_object('k', 'o', 'c', 'w2-2', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('org'), 'r', 'admin',
                       'at', now() - interval '10 minutes'),
    jsonb_build_object('k', 'b', 'c', 'w2-2', 'e', pg_temp.id('ev'),
                       'u', pg_temp.id('org'), 'r', 'admin',
                       'at', now())));
SELECT lives_ok($$SELECT jobs.check_payload('sql',
                    '{"function": "chat_connections_close", "args": {}}')$$,
                'chat_connections_close is a valid sql job');
SELECT is(maintenance.chat_connections_close('{}'), 1::bigint,
          'stale: the one without a recent beat is closed');
SELECT is((SELECT closed_at IS NULL FROM app.chat_connections
           WHERE key = 'w2-2'), true, 'the one with beats stays open');

-- ---------------------------------------------------------------- privileges

SET ROLE platform_app;
SELECT throws_ok('SELECT count(*) FROM app.help_requests', '42501', NULL,
                 'nginx cannot read help_requests');
SELECT throws_ok('SELECT count(*) FROM app.engagement_minutes', '42501',
                 NULL, 'nor engagement_minutes');
SELECT lives_ok('SELECT api.chat_engagement_store(''[]'')',
                'nginx can store engagement');
RESET ROLE;

SELECT * FROM finish();
