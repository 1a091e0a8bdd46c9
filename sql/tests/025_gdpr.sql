-- pgTAP tests for sql/025_gdpr.sql (run by tools/sql-test): the registry
-- of personal data is complete (every table tied to a user is listed, the
-- export has a section for each), the request and its confirmation through
-- the sign-in link (and not through a voided one), the export's content,
-- the erasure's effects (tombstone, anonymous contributor id, chat and
-- engagement gone, epoch bumped), the audit, chat kept 25 days.

SELECT * FROM no_plan();

-- ------------------------------------------------------------ registry

-- Every table with a foreign key to auth.users, or a column holding an
-- address, is in gdpr.registry.
SELECT is(array_agg(DISTINCT t ORDER BY t), NULL,
          'every table tied to a person is in gdpr.registry')
FROM (SELECT c.conrelid::regclass::text AS t
      FROM pg_constraint AS c
      WHERE c.contype = 'f' AND c.confrelid = 'auth.users'::regclass
      UNION
      SELECT a.attrelid::regclass::text
      FROM pg_attribute AS a
      JOIN pg_class AS k ON k.oid = a.attrelid
      WHERE k.relkind IN ('r', 'p') AND NOT k.relispartition
        AND a.attnum > 0 AND NOT a.attisdropped
        AND a.attname ~ '(^|_)email$'
        AND k.relnamespace::regnamespace::text
            NOT IN ('pg_catalog', 'information_schema', 'gdpr')) AS x
WHERE t NOT IN (SELECT relation FROM gdpr.registry);

SELECT is(array_agg(relation), NULL, 'every registry entry is a table')
FROM gdpr.registry WHERE to_regclass(relation) IS NULL;

SELECT is(array_agg(r.relation ORDER BY r.relation), NULL,
          'the export has a section for every registry entry')
FROM gdpr.registry AS r
WHERE NOT gdpr.export_json(NULL, 'nobody@x.org') ? r.relation;

SELECT is(array_agg(p.proname::text ORDER BY p.proname)
              FILTER (WHERE NOT p.prosecdef
                      OR NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
          NULL, 'the endpoints are SECURITY DEFINER with a fixed search_path')
FROM pg_proc AS p
WHERE p.pronamespace = 'api'::regnamespace
  AND p.proname IN ('gdpr_request', 'gdpr_export', 'gdpr_requests_audit');

-- ---------------------------------------------------------------- set-up

CREATE TEMP TABLE ids (key text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql
AS $$ SELECT id FROM ids WHERE key = k $$;
CREATE FUNCTION pg_temp.tok(n int) RETURNS text LANGUAGE sql
AS $$ SELECT rpad('tok' || n, 43, 'x') $$;

WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id)
INSERT INTO ids SELECT 'o', id FROM o;
WITH e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           VALUES (pg_temp.id('o'), 'Hack', 'hackathon',
                   '2031-01-01T10:00:00Z', '2031-01-01T18:00:00Z')
           RETURNING id)
INSERT INTO ids SELECT 'ev', id FROM e;
WITH t AS (INSERT INTO app.ticket_types (event_id, name, quantity)
           VALUES (pg_temp.id('ev'), 'Seat', 10) RETURNING id)
INSERT INTO ids SELECT 'tt', id FROM t;
WITH u AS (INSERT INTO auth.users (email, display_name)
           VALUES ('pia@x.org', 'Pia'), ('paul@x.org', 'Paul')
           RETURNING id, email)
INSERT INTO ids SELECT split_part(email, '@', 1), id FROM u;
INSERT INTO auth.consents (user_id, text_version) VALUES (pg_temp.id('pia'), 'privacy-1');
WITH r AS (INSERT INTO app.registrations (event_id, ticket_type_id, email,
                                          name, user_id, status,
                                          terms_version, consent_version,
                                          client_ip)
           VALUES (pg_temp.id('ev'), pg_temp.id('tt'), 'pia@x.org', 'Pia P',
                   pg_temp.id('pia'), 'issued', 't-1', 'privacy-1',
                   '10.0.0.1')
           RETURNING id)
INSERT INTO ids SELECT 'reg', id FROM r;
INSERT INTO app.tickets (event_id, ticket_type_id, user_id, registration_id)
VALUES (pg_temp.id('ev'), pg_temp.id('tt'), pg_temp.id('pia'), pg_temp.id('reg')),
       (pg_temp.id('ev'), pg_temp.id('tt'), pg_temp.id('paul'), NULL);
WITH t AS (INSERT INTO app.teams (event_id, number, name)
           VALUES (pg_temp.id('ev'), 1, 'One') RETURNING id)
INSERT INTO ids SELECT 'team', id FROM t;
INSERT INTO app.team_members (team_id, event_id, user_id)
SELECT pg_temp.id('team'), pg_temp.id('ev'), pg_temp.id(k)
FROM unnest(ARRAY['pia', 'paul']) AS k;
WITH s AS (INSERT INTO app.submissions (team_id, event_id, title, link,
                                        submitted_by, updated_by)
           VALUES (pg_temp.id('team'), pg_temp.id('ev'), 'Work',
                   'https://x.org', pg_temp.id('pia'), pg_temp.id('paul'))
           RETURNING id)
INSERT INTO ids SELECT 'sub', id FROM s;
INSERT INTO app.chat_messages (event_id, room, id, user_id, sender_name, text,
                               created_at)
VALUES (pg_temp.id('ev'), 'main', 1, pg_temp.id('pia'), 'Pia', 'hello', now()),
       (pg_temp.id('ev'), 'main', 2, pg_temp.id('paul'), 'Paul', 'hi', now()),
       (pg_temp.id('ev'), 'main', 3, pg_temp.id('paul'), 'Paul', 'old',
        now() - interval '26 days');
INSERT INTO app.engagement_minutes (event_id, user_id, minute)
SELECT pg_temp.id('ev'), pg_temp.id('pia'),
       date_trunc('minute', now()) - n * interval '1 minute'
FROM generate_series(0, 4) AS n;
INSERT INTO app.engagement_counters (event_id, user_id, messages)
VALUES (pg_temp.id('ev'), pg_temp.id('pia'), 1);
INSERT INTO app.help_requests (event_id, user_id, room, text)
VALUES (pg_temp.id('ev'), pg_temp.id('pia'), 'main', 'stuck');

-- ------------------------------------------------------------- request

SET LOCAL ROLE platform_app;
SELECT is(api.gdpr_request('{"email": "Pia@x.org", "kind": "export"}',
                           pg_temp.tok(1), '127.0.0.1', 'http://h.test')::jsonb,
          '{"status": "sent"}', 'request: 202 sent');
SELECT is(api.gdpr_request('{"email": "nobody@x.org", "kind": "delete"}',
                           pg_temp.tok(2), '127.0.0.1', 'http://h.test')::jsonb,
          '{"status": "sent"}', 'request for an unknown address: the same');
SELECT throws_ok($$SELECT api.gdpr_request('{"email": "pia@x.org",
                   "kind": "all"}', pg_temp.tok(3), '127.0.0.1',
                   'http://h.test')$$, '22023', NULL, 'bad kind: 400');
SELECT throws_ok($$SELECT api.gdpr_request('{"email": "pia@",
                   "kind": "export"}', pg_temp.tok(3), '127.0.0.1',
                   'http://h.test')$$, '22023', NULL, 'bad email: 400');
SELECT throws_ok($$SELECT api.gdpr_request('{"email": "pia@x.org",
                   "kind": "export", "x": 1}', pg_temp.tok(3), '127.0.0.1',
                   'http://h.test')$$, '22023', NULL, 'unknown field: 400');
RESET ROLE;

SELECT is((SELECT array_agg(status || ':' || kind ORDER BY id)
           FROM gdpr.requests), ARRAY['received:export', 'received:delete'],
          'two requests received');
SELECT is((SELECT payload->>'template' || ' ' || (payload->'vars'->>'link')
           FROM jobs.jobs WHERE payload->>'to' = 'pia@x.org'
           ORDER BY id DESC LIMIT 1),
          'gdpr_confirm http://h.test/confirm.html#token=' || pg_temp.tok(1),
          'the confirmation link is mailed');

-- A sign-in link confirmed voids the privacy link: nothing confirmed.
SELECT lives_ok($$SELECT api.auth_request_link('{"email": "nobody@x.org"}',
                   pg_temp.tok(4), '127.0.0.1', 'http://h.test')$$,
                'an ordinary sign-in link for the second address');
SELECT lives_ok($$SELECT api.auth_confirm(jsonb_build_object('token',
                   pg_temp.tok(4)))$$, 'confirmed');
SELECT is((SELECT status FROM gdpr.requests WHERE kind = 'delete'),
          'received', 'a privacy link voided by a sign-in confirms nothing');

-- The privacy link itself confirms its request and queues the job.
SELECT is((api.auth_confirm(jsonb_build_object('token', pg_temp.tok(1)))
           ->>'return_path'), '/privacy.html?confirmed=export',
          'confirming returns to the privacy page');
SELECT is((SELECT status FROM gdpr.requests WHERE kind = 'export'),
          'confirmed', 'the export request is confirmed');
SELECT is((SELECT payload FROM jobs.jobs j JOIN gdpr.requests q
           ON q.job_id = j.id WHERE q.kind = 'export'),
          jsonb_build_object('function', 'gdpr_process', 'args',
              jsonb_build_object('request', (SELECT id FROM gdpr.requests
                                             WHERE kind = 'export'))),
          'its job is queued');

-- ---------------------------------------------------------------- export

SELECT maintenance.gdpr_process(jsonb_build_object('request',
           (SELECT id FROM gdpr.requests WHERE kind = 'export')));
SELECT is((SELECT status FROM gdpr.requests WHERE kind = 'export'),
          'completed', 'export: completed');
SELECT ok((SELECT completed_at IS NOT NULL AND received_at <= confirmed_at
                  AND confirmed_at <= completed_at
           FROM gdpr.requests WHERE kind = 'export'), 'export: times recorded');
SELECT alike((SELECT payload->'vars'->>'link' FROM jobs.jobs
             WHERE payload->>'template' = 'gdpr_export_ready'),
            'http://h.test/privacy.html#export=%', 'export: link mailed');

SELECT substr(payload->'vars'->>'link', length('http://h.test/privacy.html#export=') + 1)
    AS etok FROM jobs.jobs WHERE payload->>'template' = 'gdpr_export_ready' \gset

SET LOCAL ROLE platform_app;
SELECT api.gdpr_export(jsonb_build_object('token', :'etok'))::jsonb AS ex \gset
SELECT throws_ok($$SELECT api.gdpr_export('{"token": "nope"}')$$, 'PT410',
                 NULL, 'an unknown token: 410');
RESET ROLE;

SELECT is((:'ex'::jsonb)->'auth.users'->>'email', 'pia@x.org', 'export: profile');
SELECT is(jsonb_array_length((:'ex'::jsonb)->'auth.consents'), 1, 'export: consents');
SELECT is((:'ex'::jsonb)->'app.registrations'->0->>'name', 'Pia P',
          'export: registrations');
SELECT is(jsonb_array_length((:'ex'::jsonb)->'app.tickets'), 1, 'export: tickets');
SELECT is((:'ex'::jsonb)->'app.team_members'->0->>'team_name', 'One',
          'export: team memberships');
SELECT is((:'ex'::jsonb)->'app.submissions'->0->>'title', 'Work',
          'export: submissions contributed to');
SELECT is((:'ex'::jsonb)->'app.chat_messages'->0->>'text', 'hello',
          'export: their chat messages only');
SELECT is(jsonb_array_length((:'ex'::jsonb)->'app.chat_messages'), 1,
          'export: not others'' messages');
SELECT is(jsonb_array_length((:'ex'::jsonb)->'app.engagement_minutes'), 5,
          'export: engagement minutes');
SELECT is(jsonb_array_length((:'ex'::jsonb)->'app.help_requests'), 1,
          'export: help requests');
SELECT ok(NOT ((:'ex'::jsonb)->'auth.users') ? 'totp_secret',
          'export: no secrets');

UPDATE gdpr.exports SET expires_at = now() - interval '1 second';
SET LOCAL ROLE platform_app;
SELECT throws_ok(format('SELECT api.gdpr_export(%L)',
                        jsonb_build_object('token', :'etok')),
                 'PT410', NULL, 'an expired export: 410');
RESET ROLE;

-- ---------------------------------------------------------------- delete

SET LOCAL ROLE platform_app;
SELECT api.gdpr_request('{"email": "pia@x.org", "kind": "delete"}',
                        pg_temp.tok(5), '127.0.0.1', 'http://h.test');
RESET ROLE;
-- A new request, a new transaction in real life: what the trigger keeps
-- for the transaction is reset here since this file is one transaction.
SELECT set_config('gdpr.link_seen', '', true);
SELECT api.auth_confirm(jsonb_build_object('token', pg_temp.tok(5)));
SELECT epoch AS epoch0 FROM auth.users WHERE id = pg_temp.id('pia') \gset
SELECT maintenance.gdpr_process(jsonb_build_object('request',
           (SELECT max(id) FROM gdpr.requests WHERE kind = 'delete')));

SELECT is((SELECT email || ' ' || coalesce(display_name, '-')
           FROM auth.users WHERE id = pg_temp.id('pia')),
          'erased-' || pg_temp.id('pia') || '@erased.invalid -',
          'delete: the account is an anonymous tombstone');
SELECT cmp_ok((SELECT epoch FROM auth.users WHERE id = pg_temp.id('pia')),
              '>', :epoch0, 'delete: the epoch went up (sessions end)');
SELECT alike(platform.session_epochs(now() - interval '1 second'),
            '%' || pg_temp.id('pia') || ':%',
            'delete: the session poll reports the user');
SELECT is((SELECT submitted_by FROM app.submissions WHERE id = pg_temp.id('sub')),
          pg_temp.id('pia'), 'delete: the submission keeps the anonymous id');
SELECT is((SELECT count(*) FROM app.chat_messages
           WHERE user_id = pg_temp.id('pia')), 0::bigint,
          'delete: their chat messages are gone');
SELECT is((SELECT count(*) FROM app.chat_messages), 2::bigint,
          'delete: others'' stay');
SELECT is((SELECT count(*) FROM app.engagement_minutes
           WHERE user_id = pg_temp.id('pia'))
          + (SELECT count(*) FROM app.engagement_counters
             WHERE user_id = pg_temp.id('pia'))
          + (SELECT count(*) FROM app.help_requests
             WHERE user_id = pg_temp.id('pia')), 0::bigint,
          'delete: engagement and help requests gone');
SELECT is((SELECT count(*) FROM auth.consents WHERE user_id = pg_temp.id('pia'))
          + (SELECT count(*) FROM auth.sessions WHERE user_id = pg_temp.id('pia'))
          + (SELECT count(*) FROM auth.magic_links WHERE email = 'pia@x.org'),
          0::bigint, 'delete: consents, sessions, links gone');
SELECT ok((SELECT client_ip IS NULL AND email NOT LIKE '%x.org'
           FROM app.registrations WHERE id = pg_temp.id('reg')),
          'delete: registration anonymised (no address, no email)');
SELECT is((SELECT name FROM app.registrations WHERE id = pg_temp.id('reg')),
          'Deleted participant', 'delete: registration name replaced');
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE payload->>'to' = 'pia@x.org'
             AND payload->>'template' <> 'gdpr_deleted'), 0::bigint,
          'delete: mail jobs to the address gone');
SELECT is((SELECT count(*) FROM jobs.jobs
           WHERE payload->>'template' = 'gdpr_deleted'
             AND payload->>'to' = 'pia@x.org'), 1::bigint,
          'delete: the person is told');
SELECT is((SELECT count(*) FROM gdpr.requests WHERE email = 'pia@x.org'),
          0::bigint, 'delete: the requests no longer hold the address');
SELECT is((SELECT count(*) FROM gdpr.requests
           WHERE email_hash = sha256('pia@x.org'::bytea)), 2::bigint,
          'delete: their hash stays for the audit');
SELECT is((SELECT count(*) FROM gdpr.exports), 0::bigint,
          'delete: the export is gone');
SELECT is(jsonb_array_length(gdpr.export_json(NULL, 'pia@x.org')
                             ->'app.registrations'), 0,
          'delete: nothing left under the address');

-- ---------------------------------------------------------------- audit

INSERT INTO auth.memberships (user_id, role) VALUES (pg_temp.id('paul'), 'admin');
SELECT pg_temp.id('paul') AS paul \gset
SET LOCAL ROLE platform_app;
SELECT is((SELECT count(*) FROM json_array_elements(
               api.gdpr_requests_audit(:paul)->'requests')),
          3::bigint, 'audit: every request');
SELECT ok((SELECT bool_and(e ? 'received_at' AND e ? 'completed_at'
                           AND e ? 'due_by')
           FROM jsonb_array_elements(
               api.gdpr_requests_audit(:paul)::jsonb
               ->'requests') AS e), 'audit: times and deadline');
RESET ROLE;

-- ----------------------------------------------------- chat kept 25 days

SELECT ok(EXISTS (SELECT 1 FROM jobs.jobs WHERE key = 'maintenance:gdpr_retention'
                  AND state = 'pending'), 'retention: scheduled');
SELECT is((maintenance.gdpr_retention()->>'chat_messages')::int, 1,
          'retention: the message older than 25 days goes');
SELECT is((SELECT count(*) FROM app.chat_messages), 1::bigint,
          'retention: the recent one stays');

SELECT * FROM finish();
