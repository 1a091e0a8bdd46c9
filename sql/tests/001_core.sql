-- pgTAP tests for sql/001_core.sql (run by tools/sql-test, see there).

SELECT * FROM no_plan();

-- Schemas, role, grants
SELECT has_schema('api');
SELECT has_schema('platform');
SELECT has_role('platform_app');
SELECT isnt_superuser('platform_app');
SELECT has_table('public', 'platform_migrations', 'migrations are recorded');
SELECT has_table('platform', 'instance', 'platform.instance exists');
SELECT ok((SELECT count(*) FROM platform.instance WHERE key = 'created_at') = 1,
          'platform.instance is seeded');

-- platform.set_status
SELECT lives_ok($$SELECT platform.set_status(201)$$, 'set_status(201)');
SELECT is(current_setting('response.status'), '201',
          'set_status sets response.status');
SELECT throws_ok($$SELECT platform.set_status(99)$$, '22023', NULL,
                 'set_status(99) is refused');
SELECT throws_ok($$SELECT platform.set_status(600)$$, '22023', NULL,
                 'set_status(600) is refused');
SELECT throws_ok($$SELECT platform.set_status(NULL)$$, '22023', NULL,
                 'set_status(NULL) is refused');

-- platform.set_header: one "Name: value\n" line per call
SELECT set_config('response.headers', '', true);
SELECT lives_ok($$SELECT platform.set_header('Location', '/api/events/7')$$,
                'set_header Location');
SELECT lives_ok($$SELECT platform.set_header('X-Tab', E'a\tb')$$,
                'a TAB in a value is allowed');
SELECT is(current_setting('response.headers'),
          E'Location: /api/events/7\nX-Tab: a\tb\n',
          'headers accumulate one line each');
SELECT throws_ok($$SELECT platform.set_header('Bad Name', 'x')$$, '22023',
                 NULL, 'a space in a header name is refused');
SELECT throws_ok($$SELECT platform.set_header('', 'x')$$, '22023', NULL,
                 'an empty header name is refused');
SELECT throws_ok($$SELECT platform.set_header('X-Colon:', 'x')$$, '22023',
                 NULL, 'a colon in a header name is refused');
SELECT throws_ok($$SELECT platform.set_header('X', E'a\r\nSet-Cookie: y')$$,
                 '22023', NULL, 'CR LF in a value is refused');
SELECT throws_ok($$SELECT platform.set_header('X', E'a\nb')$$, '22023', NULL,
                 'LF in a value is refused');
SELECT throws_ok($$SELECT platform.set_header('X', NULL)$$, '22023', NULL,
                 'a NULL value is refused');

-- Cursors: round trip, URL-safe, malformed input refused
SELECT is((SELECT row(c.ts, c.id)::text
           FROM platform.cursor_decode(platform.cursor_encode(
                    '2031-05-06 07:08:09.123456+00', 9007199254740993)) c),
          row('2031-05-06 07:08:09.123456+00'::timestamptz,
              9007199254740993::bigint)::text,
          'cursor round trip keeps microseconds and large ids');
SELECT is((SELECT c.ts FROM platform.cursor_decode(platform.cursor_encode(
                    '1969-12-31 23:59:59.5+00', 1)) c),
          '1969-12-31 23:59:59.5+00'::timestamptz,
          'cursor round trip before 1970');
SELECT matches(platform.cursor_encode(now(), 123), '^[A-Za-z0-9_-]+$',
               'a cursor is URL-safe');
SELECT throws_ok(format('SELECT platform.cursor_decode(%L)', c), '22023',
                 'malformed pagination cursor',
                 'malformed cursor ' || quote_literal(left(c, 20)))
FROM unnest(ARRAY['garbage!', 'x', 'AAAA', '====', repeat('A', 100),
                  translate(encode(convert_to('1.2.3', 'UTF8'), 'base64'),
                            '+/=', '-_'),
                  rtrim(encode(convert_to('abc.1', 'UTF8'), 'base64'), '='),
                  rtrim(encode(convert_to('99999999999999999999.1', 'UTF8'),
                               'base64'), '=')]) AS c;

-- Endpoints
SELECT is((api.health()->>'status'), 'ok', 'health: status ok');
SELECT is((api.health()->>'database'), current_database()::text,
          'health: database');
SELECT is((api.health()->>'schema_version')::int,
          (SELECT max(version) FROM public.platform_migrations),
          'health: schema_version is the last migration');
SELECT ok((api.health()->>'time') IS NOT NULL, 'health: time');
SELECT is((api.version()->>'api_version')::int, 1, 'version: api_version');

-- nginx's role can call them
SET LOCAL ROLE platform_app;
SELECT lives_ok($$SELECT api.health(), api.version()$$,
                'platform_app calls api.health and api.version');
SELECT lives_ok($$SELECT platform.set_status(204)$$,
                'platform_app calls platform helpers');
RESET ROLE;

SELECT * FROM finish();
