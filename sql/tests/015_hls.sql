-- pgTAP tests for sql/015_hls.sql (run by tools/sql-test): the ingest key
-- (made on first look, checked, rotated), the recording flag, who may
-- watch, the stream state, privileges.

SELECT * FROM no_plan();

SELECT has_table('app', 'hls_streams', 'app.hls_streams exists');
SELECT ok(NOT has_table_privilege('platform_app', 'app.hls_streams', p),
          'platform_app has no ' || p || ' on app.hls_streams')
FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p;
SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.pronamespace = 'api'::regnamespace AND p.proname LIKE 'hls\_%';

-- ---------------------------------------------------------------- set-up

CREATE TEMP TABLE ids (key text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql
AS $$ SELECT id FROM ids WHERE key = k $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org'), ('Other')
           RETURNING id, name)
INSERT INTO ids SELECT lower(name), id FROM o;
WITH e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           VALUES (pg_temp.id('org'), 'Live', 'conference',
                   '2031-01-01T10:00:00Z', '2031-01-01T18:00:00Z')
           RETURNING id)
INSERT INTO ids SELECT 'ev', id FROM e;
WITH t AS (INSERT INTO app.ticket_types (event_id, name, quantity)
           VALUES (pg_temp.id('ev'), 'Seat', 10) RETURNING id)
INSERT INTO ids SELECT 'tt', id FROM t;
WITH u AS (INSERT INTO auth.users (email)
           VALUES ('boss@x.org'), ('p1@x.org'), ('out@x.org')
           RETURNING id, email)
INSERT INTO ids SELECT split_part(email, '@', 1), id FROM u;
INSERT INTO auth.memberships (user_id, role, org_id)
VALUES (pg_temp.id('boss'), 'organiser', pg_temp.id('org'));
INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
VALUES (pg_temp.id('ev'), pg_temp.id('tt'), pg_temp.id('p1'));

-- ---------------------------------------------------------------- ingest key

SELECT throws_ok(format('SELECT api.hls_ingest_check(%s, ''Bearer x'')',
                        pg_temp.id('ev')),
                 'PT403', NULL, 'no stream yet: 403');

SELECT throws_ok(format('SELECT api.hls_ingest_get(%s, %s)',
                        pg_temp.id('other'), pg_temp.id('ev')),
                 'PT404', NULL, 'another organisation: 404');

CREATE TEMP TABLE k AS
SELECT api.hls_ingest_get(pg_temp.id('org'), pg_temp.id('ev'))::jsonb AS j;

SELECT matches((SELECT j->>'ingest_key' FROM k), '^[0-9a-f]{64}$',
               'a 64-digit key is made on first look');
SELECT is((SELECT j->>'ingest_url' FROM k),
          '/live/' || pg_temp.id('ev') || '/index.m3u8', 'the ingest URL');
SELECT is(api.hls_ingest_get(pg_temp.id('org'), pg_temp.id('ev'))::jsonb
              ->>'ingest_key',
          (SELECT j->>'ingest_key' FROM k), 'the same key the second time');

SELECT is(api.hls_ingest_check(pg_temp.id('ev'),
                               'Bearer ' || (SELECT j->>'ingest_key' FROM k))
              ::jsonb,
          jsonb_build_object('event_id', pg_temp.id('ev'), 'record', false),
          'the right key passes');
SELECT is(current_setting('response.headers', true),
          E'X-HLS-Record: 0\n', 'X-HLS-Record: 0');
SELECT throws_ok(format('SELECT api.hls_ingest_check(%s, NULL)',
                        pg_temp.id('ev')), 'PT401', NULL, 'no key: 401');
SELECT throws_ok(format('SELECT api.hls_ingest_check(%s, ''Bearer nope'')',
                        pg_temp.id('ev')), 'PT403', NULL, 'wrong key: 403');
SELECT throws_ok(format('SELECT api.hls_ingest_check(%s, %L)',
                        pg_temp.id('ev') + 1,
                        'Bearer ' || (SELECT j->>'ingest_key' FROM k)),
                 'PT403', NULL, 'the key of another event: 403');

SELECT isnt(api.hls_ingest_rotate(pg_temp.id('org'), pg_temp.id('ev'))::jsonb
                ->>'ingest_key',
            (SELECT j->>'ingest_key' FROM k), 'rotation makes a new key');
SELECT throws_ok(format('SELECT api.hls_ingest_check(%s, %L)',
                        pg_temp.id('ev'),
                        'Bearer ' || (SELECT j->>'ingest_key' FROM k)),
                 'PT403', NULL, 'the old key is refused');

SELECT is(api.hls_ingest_update(pg_temp.id('org'), pg_temp.id('ev'),
                                '{"record": true}')::jsonb->'record',
          'true'::jsonb, 'recording on');
SELECT throws_ok(format('SELECT api.hls_ingest_update(%s, %s, ''{"record": 1}'')',
                        pg_temp.id('org'), pg_temp.id('ev')),
                 '22023', 'record must be true or false.', 'record: bool');
SELECT throws_ok(format('SELECT api.hls_ingest_update(%s, %s, ''{"x": 1}'')',
                        pg_temp.id('org'), pg_temp.id('ev')),
                 '22023', NULL, 'unknown field refused');

-- ---------------------------------------------------------------- watching

SELECT throws_ok(format('SELECT api.hls_watch_check(NULL, %s)',
                        pg_temp.id('ev')), 'PT401', NULL, 'no user: 401');
SELECT throws_ok(format('SELECT api.hls_watch_check(%s, %s)',
                        pg_temp.id('out'), pg_temp.id('ev')),
                 'PT403', NULL, 'no ticket: 403');
SELECT throws_ok(format('SELECT api.hls_watch_check(%s, 0)',
                        pg_temp.id('p1')), 'PT404', NULL, 'no event: 404');
SELECT lives_ok(format('SELECT api.hls_watch_check(%s, %s)',
                       pg_temp.id('p1'), pg_temp.id('ev')),
                'a ticket holder may watch');
SELECT lives_ok(format('SELECT api.hls_watch_check(%s, %s)',
                       pg_temp.id('boss'), pg_temp.id('ev')),
                'an organiser may watch');

SELECT is(api.hls_stream_state(pg_temp.id('p1'), pg_temp.id('ev'), true,
                               false, '2000000000.abc_-')::jsonb,
          jsonb_build_object(
              'watch', true,
              'live', true,
              'playlist', '/live/' || pg_temp.id('ev') || '/index.m3u8',
              'signed_playlist', '/live/' || pg_temp.id('ev')
                                 || '/s/2000000000.abc_-/index.m3u8',
              'expires', to_timestamp(2000000000),
              'recording', NULL),
          'the stream state');
SELECT is(api.hls_stream_state(pg_temp.id('p1'), pg_temp.id('ev'), false,
                               true, NULL)::jsonb->>'recording',
          '/live/' || pg_temp.id('ev') || '/vod.m3u8', 'the recording');
SELECT is(api.hls_stream_state(pg_temp.id('out'), pg_temp.id('ev'), true,
                               true, '1.x')::jsonb,
          '{"watch": false, "live": false, "playlist": null,
            "signed_playlist": null, "expires": null, "recording": null}',
          'no ticket: watch false, no state, no token');
SELECT throws_ok(format('SELECT api.hls_stream_state(NULL, %s, true, true, NULL)',
                        pg_temp.id('ev')), 'PT401', NULL, 'signed out: 401');

SELECT * FROM finish();
