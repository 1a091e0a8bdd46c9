-- pgTAP tests for sql/013_chat.sql (run by tools/sql-test, see there): who
-- may join which room, batches, history pages, the purge, privileges.

SELECT * FROM no_plan();

SELECT has_table('app', 'chat_messages', 'app.chat_messages exists');
SELECT col_is_pk('app', 'chat_messages', ARRAY['event_id', 'room', 'id'],
                 'primary key (event_id, room, id)');
SELECT has_index('app', 'chat_messages', 'chat_messages_created_at_idx',
                 'an index for the purge');
SELECT ok(NOT has_table_privilege('platform_app', 'app.chat_messages', p),
          'platform_app has no ' || p || ' on app.chat_messages')
FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p;
SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.pronamespace = 'api'::regnamespace
  AND p.proname IN ('chat_join', 'chat_messages', 'chat_store');

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
                  ('p2@x.org', NULL), ('out@x.org', 'Out')
           RETURNING id, email)
INSERT INTO ids SELECT split_part(email, '@', 1), id FROM u;
INSERT INTO auth.memberships (user_id, role, org_id)
VALUES (pg_temp.id('org'), 'organiser', pg_temp.id('o'));
INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
SELECT pg_temp.id('ev'), pg_temp.id('tt'), pg_temp.id(k)
FROM unnest(ARRAY['p1', 'p2']) AS k;
WITH t AS (INSERT INTO app.teams (event_id, number, name)
           VALUES (pg_temp.id('ev'), 1, 'One'), (pg_temp.id('ev'), 2, 'Two')
           RETURNING id, number)
INSERT INTO ids SELECT 'team' || number, id FROM t;
INSERT INTO app.team_members (team_id, event_id, user_id)
VALUES (pg_temp.id('team1'), pg_temp.id('ev'), pg_temp.id('p1'));

-- ---------------------------------------------------------------- join

SELECT throws_ok(format('SELECT api.chat_join(NULL, %s, ''main'')',
                        pg_temp.id('ev')), 'PT401', NULL, 'no user: 401');
SELECT throws_ok(format('SELECT api.chat_join(%s, 0, ''main'')',
                        pg_temp.id('p1')), 'PT404', NULL, 'no event: 404');
SELECT throws_ok(format('SELECT api.chat_join(%s, %s, ''main'')',
                        pg_temp.id('out'), pg_temp.id('ev')),
                 'PT403', NULL, 'no ticket: 403');
SELECT throws_ok(format('SELECT api.chat_join(%s, %s, ''admin'')',
                        pg_temp.id('p1'), pg_temp.id('ev')),
                 'PT403', NULL, 'participant: admin 403');
SELECT throws_ok(format('SELECT api.chat_join(%s, %s, ''team:%s'')',
                        pg_temp.id('p1'), pg_temp.id('ev'),
                        pg_temp.id('team2')),
                 'PT403', NULL, 'another team: 403');
SELECT throws_ok(format('SELECT api.chat_join(%s, %s, ''team'')',
                        pg_temp.id('p2'), pg_temp.id('ev')),
                 'PT403', NULL, 'no team: 403');
SELECT throws_ok(format('SELECT api.chat_join(%s, %s, ''lobby'')',
                        pg_temp.id('p1'), pg_temp.id('ev')),
                 'PT404', NULL, 'unknown room: 404');

SELECT is(api.chat_join(pg_temp.id('p1'), pg_temp.id('ev'), 'team')::jsonb
              - 'user',
          jsonb_build_object('room', 'team:' || pg_temp.id('team1'),
                             'key', pg_temp.id('ev') || ':team:'
                                    || pg_temp.id('team1'),
                             'event_id', pg_temp.id('ev'),
                             'role', 'participant', 'last_id', 0),
          'team: the own team''s room');
SELECT is(api.chat_join(pg_temp.id('p2'), pg_temp.id('ev'), NULL)
              -> 'user' ->> 'name',
          'Participant ' || pg_temp.id('p2'), 'no display name: a neutral one');
SELECT is(api.chat_join(pg_temp.id('org'), pg_temp.id('ev'), 'admin')
              ->> 'role', 'organiser', 'organiser: admin');
SELECT is(api.chat_join(pg_temp.id('org'), pg_temp.id('ev'),
                        'team:' || pg_temp.id('team2')) ->> 'room',
          'team:' || pg_temp.id('team2'), 'organiser: any team room');

-- ---------------------------------------------------------------- store, pages

SELECT is(api.chat_store(jsonb_agg(jsonb_build_object(
              'e', pg_temp.id('ev'), 'r', 'main', 'i', n,
              'u', pg_temp.id('p1'), 'n', 'Pia', 't', 'm' || n,
              'at', '2030-01-01T00:00:00Z'::timestamptz
                    + make_interval(secs => n)))),
          25, 'a batch of 25 in one statement')
FROM generate_series(1, 25) AS n;
SELECT is(api.chat_store(jsonb_build_array(jsonb_build_object(
              'e', pg_temp.id('ev'), 'r', 'main', 'i', 25, 'u', NULL,
              'n', 'X', 't', 'again'))),
          0, 'a message already stored is skipped');
SELECT is((api.chat_join(pg_temp.id('p1'), pg_temp.id('ev'), 'main')
               ->> 'last_id')::int, 25, 'last_id: the highest stored');

SELECT is(ARRAY(SELECT (x ->> 'id')::int FROM json_array_elements(
              api.chat_messages(pg_temp.id('p1'), pg_temp.id('ev'), 'main')
                  -> 'messages') AS x),
          ARRAY(SELECT generate_series(6, 25)), 'default page: the last 20');
SELECT is(api.chat_messages(pg_temp.id('p1'), pg_temp.id('ev'), 'main',
                            6, 3)::jsonb,
          jsonb_build_object('room', 'main', 'more', true, 'messages',
              (SELECT jsonb_agg(jsonb_build_object(
                   'type', 'message', 'id', n, 'room', 'main',
                   'sender', jsonb_build_object('id', pg_temp.id('p1'),
                                                'name', 'Pia',
                                                'avatar', NULL),
                   'text', 'm' || n,
                   'time', '2030-01-01T00:00:' || lpad(n::text, 2, '0')
                           || '.000Z') ORDER BY n)
               FROM generate_series(3, 5) AS n)),
          'before=6, limit=3: 3..5, the live shape');
SELECT is(api.chat_messages(pg_temp.id('p1'), pg_temp.id('ev'), 'main',
                            3, 5) ->> 'more', 'false', 'the first page');
SELECT throws_ok(format('SELECT api.chat_messages(%s, %s, ''main'', NULL, 101)',
                        pg_temp.id('p1'), pg_temp.id('ev')),
                 '22023', NULL, 'limit over 100');
SELECT throws_ok(format('SELECT api.chat_messages(%s, %s, ''main'')',
                        pg_temp.id('out'), pg_temp.id('ev')),
                 'PT403', NULL, 'pages: the same rules');

-- ---------------------------------------------------------------- purge

UPDATE app.chat_messages SET created_at = now() - interval '26 days'
WHERE id <= 10;
SELECT lives_ok($$SELECT jobs.check_payload('sql',
                    '{"function": "chat_purge", "args": {}}')$$,
                'chat_purge is a valid sql job');
SELECT is(maintenance.chat_purge('{"days": 30}'), 0::bigint, 'days 30: none');
SELECT is(maintenance.chat_purge('{}'), 10::bigint, 'default 25 days: 10');
SELECT is((SELECT count(*) FROM app.chat_messages), 15::bigint, '15 left');

-- ---------------------------------------------------------------- privileges

SELECT format('SELECT api.chat_join(%s, %s, ''main'')', pg_temp.id('p1'),
              pg_temp.id('ev')) AS join_sql \gset
SET ROLE platform_app;
SELECT throws_ok('SELECT count(*) FROM app.chat_messages', '42501', NULL,
                 'nginx cannot read the table');
SELECT throws_ok($$SELECT maintenance.chat_purge('{}')$$, '42501', NULL,
                 'nginx cannot purge');
SELECT lives_ok(:'join_sql', 'nginx can join');
RESET ROLE;

SELECT * FROM finish();
