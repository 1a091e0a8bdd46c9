-- pgTAP tests for sql/020_chat_relay.sql (run by tools/sql-test): batches
-- from the hosts numbered per room without gaps, stored once, unknown
-- events skipped, the channel checked, what nginx may call.

SELECT * FROM no_plan();

SELECT has_function('api', 'chat_relay', ARRAY['jsonb', 'text'],
                    'api.chat_relay(jsonb, text) exists');
SELECT ok(p.prosecdef
          AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'],
          'SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.oid = 'api.chat_relay(jsonb, text)'::regprocedure;

CREATE TEMP TABLE ids (key text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql
AS $$ SELECT id FROM ids WHERE key = k $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id)
INSERT INTO ids SELECT 'o', id FROM o;
WITH e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           VALUES (pg_temp.id('o'), 'Relay', 'hackathon',
                   '2031-01-01T10:00:00Z', '2031-01-01T18:00:00Z')
           RETURNING id)
INSERT INTO ids SELECT 'ev', id FROM e;
WITH u AS (INSERT INTO auth.users (email, display_name)
           VALUES ('p1@x.org', 'Pia') RETURNING id)
INSERT INTO ids SELECT 'u', id FROM u;

CREATE FUNCTION pg_temp.msg(r text, t text) RETURNS jsonb LANGUAGE sql
AS $$
    SELECT jsonb_build_object('e', pg_temp.id('ev'), 'r', r, 'i', 0,
                              'u', pg_temp.id('u'), 'n', 'Pia',
                              's', jsonb_build_object('id', pg_temp.id('u'),
                                                      'name', 'Pia',
                                                      'avatar', NULL),
                              't', t, 'at', '2031-01-01T10:00:00.000Z')
$$;

-- a batch of two hosts' worth of messages in two rooms
SELECT is(api.chat_relay(jsonb_build_array(
              pg_temp.msg('main', 'one'), pg_temp.msg('main', 'two'),
              pg_temp.msg('team:1', 'team one'),
              pg_temp.msg('main', 'three'),
              jsonb_build_object('e', 0, 'r', 'main', 'i', 0, 'u', NULL,
                                 'n', 'Gone', 's', '{}'::jsonb, 't', 'x',
                                 'at', '2031-01-01T10:00:00.000Z')),
              'platform_chat'),
          4, 'four stored, the unknown event skipped');

SELECT results_eq(
    format($$SELECT room, id, text FROM app.chat_messages
             WHERE event_id = %s ORDER BY room, id$$, pg_temp.id('ev')),
    $$VALUES ('main', 1::bigint, 'one'), ('main', 2::bigint, 'two'),
             ('main', 3::bigint, 'three'), ('team:1', 1::bigint, 'team one')$$,
    'numbered per room from 1, in batch order');

SELECT is(api.chat_relay(jsonb_build_array(pg_temp.msg('main', 'four')),
                         'platform_chat'),
          1, 'a later batch');
SELECT is((SELECT max(id) FROM app.chat_messages
           WHERE event_id = pg_temp.id('ev') AND room = 'main'),
          4::bigint, 'goes on from the stored ids');

SELECT is((SELECT created_at FROM app.chat_messages
           WHERE event_id = pg_temp.id('ev') AND room = 'main' AND id = 4),
          '2031-01-01T10:00:00Z'::timestamptz, 'the time the host gave');

-- the same batch sent again (its outcome was unknown): nothing twice
SELECT is(api.chat_relay(jsonb_build_array(
              pg_temp.msg('main', 'five') || '{"x": "00ff-1"}',
              pg_temp.msg('main', 'six') || '{"x": "00ff-2"}'),
              'platform_chat'),
          2, 'a batch with keys');
SELECT is(api.chat_relay(jsonb_build_array(
              pg_temp.msg('main', 'five') || '{"x": "00ff-1"}',
              pg_temp.msg('main', 'six') || '{"x": "00ff-2"}',
              pg_temp.msg('main', 'seven') || '{"x": "00ff-3"}'),
              'platform_chat'),
          1, 'sent again with one more: only the new one is stored');
SELECT is((SELECT string_agg(text, ',' ORDER BY id) FROM app.chat_messages
           WHERE event_id = pg_temp.id('ev') AND room = 'main' AND id > 4),
          'five,six,seven', 'each once, in order');
SELECT is((SELECT messages FROM app.engagement_counters
           WHERE event_id = pg_temp.id('ev') AND user_id = pg_temp.id('u')),
          8::bigint, 'messages counted per participant (both rooms), once each');

SELECT throws_ok($$SELECT api.chat_relay('[]', 'Bad Channel')$$, '22023',
                 NULL, 'an invalid channel is refused');
SELECT is(api.chat_relay('[]', 'platform_chat'), 0, 'an empty batch');

SET ROLE platform_app;
SELECT lives_ok($$SELECT api.chat_relay('[]', 'platform_chat')$$,
                'nginx may relay');
RESET ROLE;

SELECT * FROM finish();
