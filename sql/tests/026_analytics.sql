-- pgTAP tests for sql/026_analytics.sql (run by tools/sql-test): CSV
-- fields (RFC 4180), participants_csv pages (header once, keys, the last
-- page, tenancy), heartbeat arithmetic (gaps, reconnects), the engagement
-- score and its sorted endpoint.

SELECT * FROM no_plan();

-- ------------------------------------------------------------ csv_field

SELECT is(app.csv_field('plain'), 'plain', 'csv: plain as is');
SELECT is(app.csv_field('a,b'), '"a,b"', 'csv: a comma is quoted');
SELECT is(app.csv_field('say "hi"'), '"say ""hi"""', 'csv: quotes doubled');
SELECT is(app.csv_field(E'a\nb'), E'"a\nb"', 'csv: LF quoted');
SELECT is(app.csv_field(E'a\rb'), E'"a\rb"', 'csv: CR quoted');
SELECT is(app.csv_field(NULL), '', 'csv: NULL is empty');
SELECT is(app.csv_field('Zoë 日本'), 'Zoë 日本', 'csv: UTF-8 as is');

-- --------------------------------------------------------------- set-up

CREATE TEMP TABLE ids (key text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql
AS $$ SELECT id FROM ids WHERE key = k $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org'), ('Other')
           RETURNING id, name)
INSERT INTO ids SELECT lower(name), id FROM o;
WITH e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           VALUES (pg_temp.id('org'), 'Hack', 'hackathon',
                   '2031-01-01T10:00:00Z', '2031-01-01T18:00:00Z')
           RETURNING id)
INSERT INTO ids SELECT 'ev', id FROM e;
WITH t AS (INSERT INTO app.ticket_types (event_id, name, quantity)
           VALUES (pg_temp.id('ev'), 'Seat', 100) RETURNING id)
INSERT INTO ids SELECT 'tt', id FROM t;
WITH u AS (INSERT INTO auth.users (email, display_name)
           VALUES ('boss@x.org', 'Boss'), ('rival@x.org', 'Rival'),
                  ('stay@x.org', 'Stayer'), ('left@x.org', 'Leaver'),
                  ('mid@x.org', 'Middle')
           RETURNING id, email)
INSERT INTO ids SELECT split_part(email, '@', 1), id FROM u;
INSERT INTO auth.memberships (user_id, role, org_id)
VALUES (pg_temp.id('boss'), 'organiser', pg_temp.id('org')),
       (pg_temp.id('rival'), 'organiser', pg_temp.id('other'));
INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
SELECT pg_temp.id('ev'), pg_temp.id('tt'), pg_temp.id(k)
FROM unnest(ARRAY['stay', 'left', 'mid']) AS k;

-- ---------------------------------------------------------------- pages

SELECT ok((SELECT chunk LIKE 'ticket_code,name,email,%' || E'\r\n%'
                  AND next IS NOT NULL
           FROM api.participants_csv(pg_temp.id('boss'), pg_temp.id('ev'), 0, 2)),
          'page 1: the header, and a next key');
SELECT is((SELECT array_length(string_to_array(rtrim(chunk, E'\r\n'), E'\r\n'), 1)
           FROM api.participants_csv(pg_temp.id('boss'), pg_temp.id('ev'), 0, 2)),
          3, 'page 1: header + 2 rows');
SELECT ok((SELECT chunk NOT LIKE 'ticket_code%' AND next IS NULL
                  AND chunk LIKE '%Middle%'
           FROM api.participants_csv(pg_temp.id('boss'), pg_temp.id('ev'),
                (SELECT next FROM api.participants_csv(pg_temp.id('boss'),
                                     pg_temp.id('ev'), 0, 2)), 2)),
          'page 2: no header, the last row, no next key');
SELECT throws_ok(format('SELECT * FROM api.participants_csv(%s, %s, 0, 10)',
                        pg_temp.id('rival'), pg_temp.id('ev')),
                 'PT404', NULL, 'another organisation''s organiser: 404');
SELECT throws_ok(format('SELECT * FROM api.participants_csv(%s, %s, 0, 10)',
                        pg_temp.id('stay'), pg_temp.id('ev')),
                 'PT404', NULL, 'a participant: 404');

-- --------------------------------------------------- heartbeat arithmetic

INSERT INTO app.engagement_minutes (event_id, user_id, minute)
SELECT pg_temp.id('ev'), pg_temp.id('mid'), m::timestamptz
FROM unnest(ARRAY['2031-01-01T10:00Z', '2031-01-01T10:01Z',
                  '2031-01-01T10:03Z', '2031-01-01T10:10Z']) AS m;
SELECT is(app.connected_minutes(pg_temp.id('ev'), pg_temp.id('mid')), 5,
          'beats 10:00 10:01 10:03 10:10: 10:00-10:03 (one missed beat) + 10:10');
SELECT is(app.connected_minutes(pg_temp.id('ev'), pg_temp.id('mid'), 0), 4,
          'without gap tolerance: the beats only');
SELECT is(app.connected_minutes(pg_temp.id('ev'), pg_temp.id('mid'), 10), 11,
          'a long tolerance spans the 7-minute gap');
SELECT is(app.connected_minutes(pg_temp.id('ev'), pg_temp.id('left')), 0,
          'no beats: 0');

-- five hours, with a reconnect (the same minute twice is one row) and two
-- missed beats
INSERT INTO app.engagement_minutes (event_id, user_id, minute)
SELECT pg_temp.id('ev'), pg_temp.id('stay'),
       '2031-01-01T10:00Z'::timestamptz + n * interval '1 minute'
FROM generate_series(0, 299) AS n
WHERE n NOT IN (100, 200)
ON CONFLICT DO NOTHING;
INSERT INTO app.engagement_minutes (event_id, user_id, minute)
VALUES (pg_temp.id('ev'), pg_temp.id('stay'), '2031-01-01T10:05Z')
ON CONFLICT DO NOTHING;
SELECT is(app.connected_minutes(pg_temp.id('ev'), pg_temp.id('stay')), 300,
          'five hours with a reconnect and missed beats: 300 minutes');
INSERT INTO app.engagement_minutes (event_id, user_id, minute)
SELECT pg_temp.id('ev'), pg_temp.id('left'),
       '2031-01-01T10:00Z'::timestamptz + n * interval '1 minute'
FROM generate_series(0, 2) AS n;
INSERT INTO app.engagement_counters (event_id, user_id, messages)
VALUES (pg_temp.id('ev'), pg_temp.id('stay'), 400);

-- ---------------------------------------------------------------- score

SELECT is(app.engagement_score(300, 400, 0), 500.0, 'score: 300 + 400/2');
SELECT is(app.engagement_score(3, 0, 0), 3.0, 'score: three minutes');
SELECT is(app.engagement_score(0, 5000, 1), 530.0,
          'score: messages capped at 1000, 30 per submission');

SELECT api.engagement_scores(pg_temp.id('org'), pg_temp.id('ev'))::jsonb AS s \gset
SELECT is((SELECT array_agg(e->>'name' ORDER BY ord)
           FROM jsonb_array_elements((:'s'::jsonb)->'participants')
                WITH ORDINALITY AS x(e, ord)),
          ARRAY['Stayer', 'Middle', 'Leaver'], 'sorted by score');
SELECT is(((:'s'::jsonb)->'participants'->0->>'score')::numeric, 500.0,
          'the stayer: 500');
SELECT is(((:'s'::jsonb)->'participants'->2->>'minutes')::int, 3,
          'the leaver: 3 minutes');
SELECT is((SELECT array_agg(e->>'name' ORDER BY ord)
           FROM jsonb_array_elements(api.engagement_scores(pg_temp.id('org'),
                    pg_temp.id('ev'), 'name')::jsonb->'participants')
                WITH ORDINALITY AS x(e, ord)),
          ARRAY['Leaver', 'Middle', 'Stayer'], 'sorted by name');
SELECT is(jsonb_array_length(api.engagement_scores(pg_temp.id('org'),
              pg_temp.id('ev'), 'score', 1, 1)::jsonb->'participants'), 1,
          'limit and offset');
SELECT throws_ok(format('SELECT api.engagement_scores(%s, %s, ''x'')',
                        pg_temp.id('org'), pg_temp.id('ev')),
                 '22023', NULL, 'a bad sort: 400');
SELECT throws_ok(format('SELECT api.engagement_scores(%s, %s)',
                        pg_temp.id('other'), pg_temp.id('ev')),
                 'PT404', NULL, 'another organisation''s event: 404');

SELECT * FROM finish();
