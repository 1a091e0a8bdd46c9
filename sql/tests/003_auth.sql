-- pgTAP tests for sql/003_auth.sql (run by tools/sql-test, see there).
--
-- The whole file is one transaction, so now() does not move: TOTP steps and
-- rate-limit windows are computed from it.

SELECT * FROM no_plan();

-- Settings the functions leave for the module; cleared between calls.
CREATE FUNCTION pg_temp.reset_response() RETURNS void LANGUAGE sql AS $$
    SELECT set_config('response.status', '', true),
           set_config('response.headers', '', true),
           set_config('response.session', '', true);
$$;

-- A base64url token as $platform_random makes them (43 characters).
CREATE FUNCTION pg_temp.tok(n int) RETURNS text LANGUAGE sql AS $$
    SELECT rtrim(translate(encode(sha256(convert_to('token ' || n, 'UTF8')),
                                  'base64'), '+/', '-_'), '=');
$$;

CREATE FUNCTION pg_temp.link(email text, n int, ip text DEFAULT '192.0.2.1',
                             per_email int DEFAULT 5, per_ip int DEFAULT 20)
RETURNS json LANGUAGE sql AS $$
    SELECT api.auth_request_link(
               json_build_object('email', email, 'consent_version', 'terms-1')::jsonb,
               pg_temp.tok(n), ip, 'https://platform.example', 900,
               per_email, per_ip, 900);
$$;

-- ---------------------------------------------------------------------
-- Schema
-- ---------------------------------------------------------------------

SELECT has_schema('auth');
SELECT has_extension('pgcrypto');
SELECT has_table('auth', t, 'auth.' || t)
FROM unnest(ARRAY['users', 'memberships', 'magic_links', 'consents',
                  'sessions', 'rate_events']) AS t;
SELECT has_index('auth', 'rate_events', 'rate_events_kind_key_at_idx',
                 ARRAY['kind', 'key', 'at'], 'index for rate limits');
SELECT has_function('platform', 'set_session',
                    ARRAY['bigint', 'boolean', 'integer']);
SELECT has_function('platform', 'clear_session', ARRAY['bigint']);
SELECT has_function('platform', 'session_epochs',
                    ARRAY['timestamp with time zone']);
SELECT has_function('api', 'auth_request_link',
                    ARRAY['jsonb', 'text', 'text', 'text', 'integer',
                          'integer', 'integer', 'integer']);
SELECT has_function('api', 'auth_confirm',
                    ARRAY['jsonb', 'text', 'text', 'integer']);

-- nginx's role reaches the tables only through the functions.
SELECT is((SELECT count(*)::int FROM information_schema.role_table_grants
           WHERE grantee IN ('platform_app', 'PUBLIC')
             AND table_schema = 'auth'),
          0, 'platform_app has no privileges on auth tables');
SELECT ok(NOT has_function_privilege('platform_app',
                                     'auth.totp_code(bytea,bigint,integer)',
                                     'EXECUTE'),
          'auth helpers are not callable by platform_app');
SELECT ok(has_function_privilege('platform_app', 'auth.purge(integer)',
                                 'EXECUTE'),
          'auth.purge is callable by platform_app (jobs runner)');

-- Constraints
SELECT throws_ok($$INSERT INTO auth.users (email) VALUES ('Upper@Example.org')$$,
                 '23514', NULL, 'emails are stored lower-cased');
INSERT INTO auth.users (email) VALUES ('m@example.org');
SELECT throws_ok($$INSERT INTO auth.users (email) VALUES ('m@example.org')$$,
                 '23505', NULL, 'one account per email');
SELECT throws_ok($$INSERT INTO auth.memberships (user_id, role, org_id)
                   SELECT id, 'guest', 1 FROM auth.users WHERE email = 'm@example.org'$$,
                 '23514', NULL, 'unknown role refused');
SELECT throws_ok($$INSERT INTO auth.memberships (user_id, role, org_id)
                   SELECT id, 'admin', 1 FROM auth.users WHERE email = 'm@example.org'$$,
                 '23514', NULL, 'admin has no organisation');
INSERT INTO auth.memberships (user_id, role)
SELECT id, 'admin' FROM auth.users WHERE email = 'm@example.org';
SELECT throws_ok($$INSERT INTO auth.memberships (user_id, role)
                   SELECT id, 'admin' FROM auth.users WHERE email = 'm@example.org'$$,
                 '23505', NULL, 'memberships are unique (NULL org included)');

-- ---------------------------------------------------------------------
-- Helpers: base32 (RFC 4648 test vectors), base64url, TOTP (RFC 6238)
-- ---------------------------------------------------------------------

SELECT is(auth.base32_encode(convert_to(i, 'UTF8')), o, 'base32 ' || quote_literal(i))
FROM (VALUES ('', ''), ('f', 'MY'), ('fo', 'MZXQ'), ('foo', 'MZXW6'),
             ('foob', 'MZXW6YQ'), ('fooba', 'MZXW6YTB'),
             ('foobar', 'MZXW6YTBOI')) AS v(i, o);
SELECT is(auth.base32_encode(convert_to('12345678901234567890', 'UTF8')),
          'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 'base32 of the RFC 6238 key');
SELECT is(auth.b64url_decode('_-8'), '\xffef'::bytea, 'base64url decode');
SELECT is(auth.b64url_decode('a+b'), NULL, 'base64url refuses "+"');

-- RFC 6238 appendix B, SHA1 (key "12345678901234567890"), 8 digits.
SELECT is(auth.totp_code(convert_to('12345678901234567890', 'UTF8'),
                         t / 30, 8), code, 'RFC 6238 T=' || t)
FROM (VALUES (59::bigint, '94287082'), (1111111109, '07081804'),
             (1111111111, '14050471'), (1234567890, '89005924'),
             (2000000000, '69279037'), (20000000000, '65353130')) AS v(t, code);
SELECT is(auth.totp_code(convert_to('12345678901234567890', 'UTF8'), 59 / 30),
          '287082', '6 digits are the last 6 of the 8');
SELECT is(auth.totp_code(convert_to('12345678901234567890', 'UTF8'),
                         1111111109 / 30),
          '081804', 'leading zeros are kept');

SELECT is(auth.uri_encode('a.b+c@ex-ample.org'), 'a.b%2Bc%40ex-ample.org',
          'uri_encode');
SELECT is(auth.to_inet('unix:'), NULL, 'to_inet: not an address');
SELECT is(auth.to_inet('::1'), '::1'::inet, 'to_inet: IPv6');

-- ---------------------------------------------------------------------
-- Session claims
-- ---------------------------------------------------------------------

INSERT INTO auth.users (email) VALUES ('claims@example.org');
INSERT INTO auth.memberships (user_id, role, org_id)
SELECT u.id, m.role, m.org_id
FROM auth.users AS u,
     (VALUES ('staff', 3::bigint), ('organiser', 12), ('admin', NULL),
             ('organiser', 7), ('owner', 7)) AS m(role, org_id)
WHERE u.email = 'claims@example.org';

CREATE TEMP TABLE ids AS
SELECT (SELECT id FROM auth.users WHERE email = 'claims@example.org') AS claims,
       (SELECT id FROM auth.users WHERE email = 'm@example.org') AS m;

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(platform.set_session((SELECT claims FROM ids)),
          format('u=%s;e=0;x=%s;f=0;r=participant,admin,organiser:7,organiser:12,owner:7,staff:3',
                 (SELECT claims FROM ids),
                 floor(extract(epoch FROM now()))::bigint + 43200),
          'claims: user, epoch, expiry (12 h), no second factor, roles in order');
SELECT is(current_setting('response.session'),
          format('u=%s;e=0;x=%s;f=0;r=participant,admin,organiser:7,organiser:12,owner:7,staff:3',
                 (SELECT claims FROM ids),
                 floor(extract(epoch FROM now()))::bigint + 43200),
          'set_session stores the claims in response.session');
SELECT matches(platform.set_session((SELECT claims FROM ids), true, 600),
               '^u=[0-9]+;e=0;x=[0-9]+;f=1;r=participant,', 'mfa => true: f=1');
SELECT is(split_part(split_part(current_setting('response.session'), ';x=', 2), ';', 1)::bigint,
          floor(extract(epoch FROM now()))::bigint + 600, 'ttl_seconds sets x');
SELECT is(platform.set_session((SELECT m FROM ids)),
          format('u=%s;e=0;x=%s;f=0;r=participant,admin', (SELECT m FROM ids),
                 floor(extract(epoch FROM now()))::bigint + 43200),
          'a role without organisation has no ":org"');
SELECT throws_ok($$SELECT platform.set_session(-1)$$, 'PT401', NULL,
                 'set_session: unknown user');
SELECT throws_ok($$SELECT platform.set_session(1, false, 10)$$, '22023', NULL,
                 'set_session: ttl below a minute refused');

-- clear_session / epochs
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(platform.clear_session((SELECT claims FROM ids)),
          format('-;u=%s;e=1', (SELECT claims FROM ids)),
          'clear_session bumps the epoch');
SELECT is(current_setting('response.session'),
          format('-;u=%s;e=1', (SELECT claims FROM ids)),
          'clear_session sets response.session to "-;u=..;e=.."');
SELECT ok((SELECT epoch = 1 AND epoch_changed_at IS NOT NULL
           FROM auth.users WHERE id = (SELECT claims FROM ids)),
          'epoch and epoch_changed_at stored');
SELECT matches(platform.set_session((SELECT claims FROM ids)), '^u=[0-9]+;e=1;',
               'new sessions carry the new epoch');
SELECT throws_ok($$SELECT platform.clear_session(-1)$$, 'PT401', NULL,
                 'clear_session: unknown user');

SELECT matches(platform.session_epochs(NULL),
               '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\|',
               'session_epochs: ISO 8601 UTC time first');
SELECT is(split_part(platform.session_epochs(NULL), '|', 1)::timestamptz,
          now(), 'session_epochs: the time is the server''s now()');
SELECT is(split_part(platform.session_epochs(NULL), '|', 2),
          (SELECT claims FROM ids) || ':1',
          'session_epochs(NULL): every user with epoch > 0');
SELECT is(split_part(platform.session_epochs(now() - interval '1 hour'), '|', 2),
          (SELECT claims FROM ids) || ':1',
          'session_epochs(since): changed after since');
SELECT is(split_part(platform.session_epochs(now() + interval '1 hour'), '|', 2),
          '', 'session_epochs(since): nothing newer');
UPDATE auth.users SET epoch = 4, epoch_changed_at = now()
WHERE id = (SELECT m FROM ids);
SELECT is(split_part(platform.session_epochs(now() - interval '1 hour'), '|', 2),
          format('%s:4,%s:1', (SELECT m FROM ids), (SELECT claims FROM ids)),
          'session_epochs: several users, by id');
SELECT is(split_part(platform.session_epochs(now() + interval '30 seconds'), '|', 2),
          format('%s:4,%s:1', (SELECT m FROM ids), (SELECT claims FROM ids)),
          'session_epochs looks back a minute before since (late commits)');

-- ---------------------------------------------------------------------
-- Magic links: request
-- ---------------------------------------------------------------------

-- The mail goes out through jobs.enqueue (sql/004_jobs.sql).

SET LOCAL ROLE platform_app;

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.auth_request_link(
              '{"email": " Alice@Example.ORG ", "consent_version": "terms-1",
                "return_path": "/events/7?x=1#top"}',
              pg_temp.tok(1), '192.0.2.1', 'https://platform.example/')::text,
          '{"status" : "sent"}', 'request a link: {"status":"sent"}');
SELECT is(current_setting('response.status'), '202', 'answered 202');

RESET ROLE;

SELECT is((SELECT row(email, consent_version, return_path, client_ip,
                      expires_at - created_at, used_at)::text
           FROM auth.magic_links WHERE token_hash = sha256(convert_to(pg_temp.tok(1), 'UTF8'))),
          row('alice@example.org', 'terms-1', '/events/7?x=1#top',
              '192.0.2.1'::inet, interval '15 minutes', NULL::timestamptz)::text,
          'the link is stored under sha256(token), email lower-cased, 15 min');
SELECT is((SELECT count(*)::int FROM auth.magic_links
           WHERE token_hash = convert_to(pg_temp.tok(1), 'UTF8')
              OR email::bytea = convert_to(pg_temp.tok(1), 'UTF8')),
          0, 'the token itself is not stored');
SELECT is((SELECT payload FROM jobs.jobs WHERE kind = 'mail'
           ORDER BY id DESC LIMIT 1),
          jsonb_build_object('to', 'alice@example.org',
                             'template', 'magic_link',
                             'vars', jsonb_build_object(
                                 'link', 'https://platform.example/confirm.html#token='
                                         || pg_temp.tok(1),
                                 'expires_minutes', 15)),
          'a mail job with the link is enqueued');
SELECT is((SELECT count(*)::int FROM auth.users WHERE email = 'alice@example.org'),
          0, 'no account before the link is confirmed');

-- Known and unknown addresses get the same answer.
SELECT pg_temp.reset_response() \g /dev/null
CREATE TEMP TABLE same AS
SELECT pg_temp.link('m@example.org', 2)::text || ' '
       || current_setting('response.status') || ' '
       || current_setting('response.headers') AS r;
SELECT pg_temp.reset_response() \g /dev/null
INSERT INTO same
SELECT pg_temp.link('nobody@example.org', 3)::text || ' '
       || current_setting('response.status') || ' '
       || current_setting('response.headers');
SELECT is((SELECT array_agg(DISTINCT r) FROM same),
          ARRAY['{"status" : "sent"} 202 '],
          'known and unknown emails: same status, headers and body');

-- Bad input: 22023 (400); configuration mistakes: PT500.
SELECT throws_ok(format($$SELECT api.auth_request_link(%L, %L, '192.0.2.1', 'https://p.example')$$,
                        b, pg_temp.tok(9)),
                 '22023', NULL, 'refused: ' || b)
FROM unnest(ARRAY['{}', '[]', 'null', '{"email": 5}', '{"email": ""}',
                  '{"email": "no-at-sign"}', '{"email": "a@b"}',
                  '{"email": "a b@example.org"}',
                  '{"email": "a@example.org\r\nBcc: x@example.org"}',
                  '{"email": "\"a\"@example.org"}',
                  '{"email": "a,b@example.org"}',
                  '{"email": "a@-example.org"}',
                  '{"email": "' || repeat('a', 65) || '@example.org"}',
                  '{"email": "a@example.org", "consent_version": 1}',
                  '{"email": "a@example.org", "consent_version": "a b"}',
                  '{"email": "a@example.org", "return_path": "//evil.example/"}',
                  '{"email": "a@example.org", "return_path": "/\\evil.example"}',
                  '{"email": "a@example.org", "return_path": "https://evil.example/"}',
                  '{"email": "a@example.org", "return_path": "account.html"}',
                  '{"email": "a@example.org", "return_path": "/a b"}',
                  '{"email": "a@example.org", "return_path": "/a\nb"}']) AS b;
SELECT throws_ok(format($$SELECT api.auth_request_link(NULL, %L, '192.0.2.1', 'https://p.example')$$,
                        pg_temp.tok(9)),
                 '22023', NULL, 'refused: no body');
SELECT throws_ok(format($$SELECT api.auth_request_link('{"email":"a@example.org"}', %L, '192.0.2.1', %L)$$,
                        t, u),
                 'PT500', 'sign-in is not configured correctly', 'misconfigured: ' || d)
FROM (VALUES (NULL, 'https://p.example', 'no token'),
             ('short', 'https://p.example', 'short token'),
             (pg_temp.tok(9), NULL, 'no base_url'),
             (pg_temp.tok(9), 'javascript:alert(1)', 'base_url not http(s)'),
             (pg_temp.tok(9), 'https://p.example/"><x', 'base_url with quotes'))
     AS v(t, u, d);
SELECT lives_ok($$SELECT api.auth_request_link('{"email": "ok@example.org", "consent_version": null, "return_path": null}',
                                               pg_temp.tok(10), 'unix:', 'http://127.0.0.1:8080')$$,
                'optional fields may be null; a non-IP client address is fine');

-- Rate limits: per email and per address, nothing counted when refused.
SELECT pg_temp.reset_response() \g /dev/null
SELECT is((SELECT array_agg(pg_temp.link('rate@example.org', 100 + i, '198.51.100.' || i, 3)::text
                            || ' ' || current_setting('response.status') ORDER BY i)
           FROM generate_series(1, 3) AS i),
          array_fill('{"status" : "sent"} 202'::text, ARRAY[3]),
          'per_email 3: three links');
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(pg_temp.link('Rate@example.org', 104, '198.51.100.99', 3)->'error'->>'code',
          'rate_limited', 'the fourth is refused (same address in other case)');
SELECT is(current_setting('response.status'), '429', '429');
SELECT is(current_setting('response.headers'), E'Retry-After: 900\n',
          'Retry-After: until the oldest counted request leaves the window');
SELECT is(pg_temp.link('rate@example.org', 105, '198.51.100.99', 3)->'error'->>'message',
          'Too many sign-in links were requested. Please wait 15 minutes and try again.',
          'the message is a sentence');
SELECT is((SELECT count(*)::int FROM auth.magic_links WHERE email = 'rate@example.org'),
          3, 'no link stored when refused');
SELECT is((SELECT count(*)::int FROM auth.rate_events WHERE key = 'rate@example.org'),
          3, 'refused requests are not counted');
-- Move one event out of the window and one 10 minutes back.
UPDATE auth.rate_events SET at = at - interval '30 minutes'
WHERE ctid = (SELECT min(ctid) FROM auth.rate_events
              WHERE key = 'rate@example.org' AND at = now());
UPDATE auth.rate_events SET at = at - interval '10 minutes'
WHERE ctid = (SELECT min(ctid) FROM auth.rate_events
              WHERE key = 'rate@example.org' AND at = now());
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(pg_temp.link('rate@example.org', 106, '198.51.100.99', 3)::text,
          '{"status" : "sent"}', 'an event out of the window frees a slot');
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(pg_temp.link('rate@example.org', 107, '198.51.100.99', 3)->'error'->>'code',
          'rate_limited', 'then full again');
SELECT is(current_setting('response.headers'), E'Retry-After: 300\n',
          'Retry-After counts from the oldest event still in the window');

SELECT pg_temp.reset_response() \g /dev/null
SELECT is((SELECT array_agg(current_setting('response.status') ORDER BY i)
           FROM generate_series(1, 4) AS i,
                LATERAL pg_temp.link('ip' || i || '@example.org', 200 + i,
                                     '203.0.113.5', 5, 3) AS r),
          ARRAY['202', '202', '202', '429'], 'per_ip 3: the fourth address is refused');
SELECT is(pg_temp.link('ip9@example.org', 209, '203.0.113.6', 5, 3)::text,
          '{"status" : "sent"}', 'another address is not');

-- ---------------------------------------------------------------------
-- Magic links: confirm
-- ---------------------------------------------------------------------

SET LOCAL ROLE platform_app;

SELECT pg_temp.reset_response() \g /dev/null
SELECT is((SELECT (r->>'status') || ' ' || (r->'user'->>'email') || ' '
                  || (r->>'new_user') || ' ' || (r->>'return_path')
           FROM api.auth_confirm(json_build_object('token', pg_temp.tok(1))::jsonb,
                                 '192.0.2.7', 'Mozilla/5.0 test') AS r),
          'signed_in alice@example.org true /events/7?x=1#top',
          'confirm: signed in, new account, return path');
SELECT matches(current_setting('response.session'),
               '^u=[0-9]+;e=0;x=[0-9]+;f=0;r=participant$',
               'confirm issues the session');

RESET ROLE;

CREATE TEMP VIEW alice AS SELECT * FROM auth.users WHERE email = 'alice@example.org';
-- platform_app cannot read temporary tables of postgres: psql variables.
SELECT id AS alice_id FROM alice \gset

SELECT is((SELECT row(text_version, client_ip)::text FROM auth.consents
           WHERE user_id = :alice_id),
          row('terms-1', '192.0.2.7'::inet)::text, 'consent recorded');
SELECT is((SELECT row(client_ip, user_agent, epoch, expires_at - created_at)::text
           FROM auth.sessions WHERE user_id = :alice_id),
          row('192.0.2.7'::inet, 'Mozilla/5.0 test', 0, interval '12 hours')::text,
          'session recorded');

SELECT throws_ok(format($$SELECT api.auth_confirm(%L, '192.0.2.7', 'x')$$,
                        json_build_object('token', pg_temp.tok(1))),
                 'PT410',
                 'This sign-in link is no longer valid: it was already used or has expired.',
                 'a link works once');
SELECT throws_ok(format($$SELECT api.auth_confirm(%L, '192.0.2.7', 'x')$$,
                        json_build_object('token', pg_temp.tok(999))),
                 'PT410',
                 'This sign-in link is no longer valid: it was already used or has expired.',
                 'unknown token: the same 410');
SELECT throws_ok($$SELECT api.auth_confirm('{"token": "short"}', '192.0.2.7', 'x')$$,
                 'PT410', NULL, 'malformed token: 410');
SELECT throws_ok($$SELECT api.auth_confirm('{"tok": "x"}', '192.0.2.7', 'x')$$,
                 '22023', NULL, 'no token: 400');
SELECT throws_ok($$SELECT api.auth_confirm(NULL, '192.0.2.7', 'x')$$,
                 '22023', NULL, 'no body: 400');

-- Expiry
UPDATE auth.magic_links SET expires_at = now() - interval '1 second'
WHERE token_hash = sha256(convert_to(pg_temp.tok(3), 'UTF8'));
SELECT throws_ok(format($$SELECT api.auth_confirm(%L, '192.0.2.7', 'x')$$,
                        json_build_object('token', pg_temp.tok(3))),
                 'PT410', NULL, 'an expired link: 410');

-- A known account: no new user, consent not repeated, other links void.
SELECT pg_temp.link('alice@example.org', 20), pg_temp.link('alice@example.org', 21) \g /dev/null
SELECT pg_temp.reset_response() \g /dev/null
SELECT is((SELECT (r->>'new_user') || ' ' || (r->>'return_path')
           FROM api.auth_confirm(json_build_object('token', pg_temp.tok(21))::jsonb,
                                 '192.0.2.8', NULL) AS r),
          'false /account.html', 'second sign-in: same account, default return path');
SELECT is((SELECT count(*)::int FROM auth.consents WHERE user_id = :alice_id),
          1, 'the same consent version is recorded once');
SELECT is((SELECT count(*)::int FROM auth.sessions WHERE user_id = :alice_id),
          2, 'two sessions');
SELECT throws_ok(format($$SELECT api.auth_confirm(%L, '192.0.2.7', 'x')$$,
                        json_build_object('token', pg_temp.tok(20))),
                 'PT410', NULL, 'confirming one link voids the others to that address');

-- ---------------------------------------------------------------------
-- me, logout
-- ---------------------------------------------------------------------

INSERT INTO auth.memberships (user_id, role, org_id)
VALUES (:alice_id, 'organiser', 12);

SET LOCAL ROLE platform_app;

SELECT is((SELECT array_agg(k ORDER BY k) FROM json_object_keys(api.me(:alice_id)) AS k),
          ARRAY['consents', 'created_at', 'display_name', 'email', 'id',
                'memberships', 'mfa', 'roles', 'sessions', 'staff', 'totp'],
          'me: fields');
SELECT is(api.me(:alice_id)->>'email', 'alice@example.org', 'me: email');
SELECT is(api.me(:alice_id)->'roles'->>1, 'organiser:12', 'me: roles');
SELECT is(api.me(:alice_id)->'memberships'->0->>'org_id', '12',
          'me: memberships');
SELECT is(json_array_length(api.me(:alice_id)->'sessions'), 2,
          'me: sessions');
SELECT is(api.me(:alice_id)->'sessions'->0->>'client_ip', '192.0.2.8',
          'me: newest session first');
SELECT is(api.me(:alice_id, true)->>'mfa', 'true', 'me: mfa passed through');
SELECT is(api.me(:alice_id)->'totp'->>'enabled', 'false', 'me: totp state');
SELECT throws_ok($$SELECT api.me(NULL)$$, 'PT401', NULL, 'me without a user: 401');
SELECT throws_ok($$SELECT api.me(-5)$$, 'PT401', NULL, 'me for a deleted user: 401');

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.auth_logout(:alice_id)::text, '{"status" : "signed_out"}',
          'logout');
SELECT is(current_setting('response.session'),
          format('-;u=%s;e=1', :alice_id), 'logout clears the session');
SELECT is(json_array_length(api.me(:alice_id)->'sessions'), 0,
          'after logout no session is listed');
SELECT throws_ok($$SELECT api.auth_logout(NULL)$$, 'PT401', NULL, 'logout without a user: 401');

RESET ROLE;

-- ---------------------------------------------------------------------
-- TOTP
-- ---------------------------------------------------------------------

-- The key is the first 20 of the 32 bytes of $platform_random.
CREATE TEMP TABLE enrol AS
SELECT api.totp_enrol(:alice_id, pg_temp.tok(50)) AS r;

SELECT is((SELECT totp_secret FROM alice),
          substring(sha256(convert_to('token 50', 'UTF8')) FROM 1 FOR 20),
          'totp_enrol stores the first 20 bytes of the secret');
SELECT is((SELECT r->>'secret' FROM enrol),
          auth.base32_encode(substring(sha256(convert_to('token 50', 'UTF8')) FROM 1 FOR 20)),
          'the secret is shown in base32');
SELECT is(length((SELECT r->>'secret' FROM enrol)), 32, '32 base32 characters');
SELECT is((SELECT r->>'uri' FROM enrol),
          'otpauth://totp/Platform:alice%40example.org?secret='
          || (SELECT r->>'secret' FROM enrol)
          || '&issuer=Platform&algorithm=SHA1&digits=6&period=30',
          'the otpauth URI');
SELECT is((SELECT totp_enabled FROM alice), false, 'not enabled before a code is verified');
SELECT throws_ok($$SELECT api.totp_enrol(1, 'short')$$, 'PT500', NULL,
                 'totp_enrol: a bad secret is a configuration error');

-- Codes of the steps around now (as platform_app cannot call the helper).
SELECT auth.totp_code(k, s - 1) AS code_prev, auth.totp_code(k, s) AS code_now,
       auth.totp_code(k, s + 1) AS code_next, auth.totp_code(k, s + 2) AS code_next2
FROM (SELECT floor(extract(epoch FROM now()) / 30)::bigint AS s,
             totp_secret AS k FROM alice) AS t \gset

SET LOCAL ROLE platform_app;

SELECT throws_ok(format($$SELECT api.totp_verify(%s, %L)$$, :alice_id, c),
                 '22023', 'Enter the 6-digit code shown in your authenticator app.',
                 'malformed code ' || quote_nullable(c))
FROM unnest(ARRAY['12345', '1234567', 'abcdef', '', NULL, '{"code": 5}', '{x']) AS c;

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          :'code_next2')
              ->'error'->>'code',
          'totp_invalid', 'a code two steps ahead is refused');
SELECT is(current_setting('response.status'), '400', 'wrong code: 400');
SELECT is(current_setting('response.session'), '', 'wrong code: no session');

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          :'code_prev')::text,
          '{"status" : "verified", "totp_enabled" : true}',
          'the previous step''s code is accepted');
SELECT matches(current_setting('response.session'),
               '^u=[0-9]+;e=1;x=[0-9]+;f=1;r=participant,organiser:12$',
               'success re-issues the session with f=1');

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          :'code_prev')
              ->'error'->>'code',
          'totp_replayed', 'the same code again is refused');
SELECT is(current_setting('response.status'), '400', 'replay: 400');
SELECT is(current_setting('response.session'), '', 'replay: no session');

SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          ' ' || substr(:'code_now', 1, 3)
                          || ' ' || substr(:'code_now', 4))
              ->>'status',
          'verified', 'the current step, spaces ignored');
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          json_build_object('code', :'code_next')::text)
              ->>'status',
          'verified', 'the next step, as a JSON body');
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          :'code_now')
              ->'error'->>'code',
          'totp_replayed', 'a step before the last accepted one is refused');

-- Three failures so far (wrong, replayed, replayed): two more, then 429.
SELECT pg_temp.reset_response() \g /dev/null
SELECT is((SELECT array_agg(current_setting('response.status') ORDER BY i)
           FROM generate_series(1, 3) AS i,
                -- (an argument depending on i, or the call is made once)
                LATERAL api.totp_verify(:alice_id,
                            CASE WHEN lpad(i::text, 6, '0')
                                      IN (:'code_prev', :'code_now', :'code_next')
                                 THEN '999999' ELSE lpad(i::text, 6, '0') END) AS r),
          ARRAY['400', '400', '429'], 'five failures in 15 minutes, then 429');
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id, '000000')->'error'->>'code',
          'rate_limited', 'rate_limited');
SELECT is(current_setting('response.headers'), E'Retry-After: 900\n',
          'with Retry-After');
SELECT pg_temp.reset_response() \g /dev/null
SELECT is(api.totp_verify(:alice_id,
                          :'code_next')
              ->'error'->>'code',
          'rate_limited', 'even a right code waits');

-- Replacing a verified key needs a session with the second factor.
SELECT throws_ok(format($$SELECT api.totp_enrol(%s, %L)$$, :alice_id, pg_temp.tok(51)),
                 'PT403', NULL, 'totp_enrol: enabled key, no second factor: 403');
SELECT lives_ok(format($$SELECT api.totp_enrol(%s, %L, true)$$, :alice_id, pg_temp.tok(51)),
                'totp_enrol: with the second factor done, a new key');

RESET ROLE;

SELECT is((SELECT row(totp_enabled, totp_last_step)::text FROM alice),
          row(false, NULL::bigint)::text, 'a new key starts unverified');
SELECT throws_ok(format($$SELECT api.totp_verify(%s, '123456')$$,
                        (SELECT m FROM ids)),
                 'PT409', NULL, 'totp_verify without enrolment: 409');

-- ---------------------------------------------------------------------
-- purge
-- ---------------------------------------------------------------------

UPDATE auth.rate_events SET at = now() - interval '2 days'
WHERE key = 'rate@example.org';
UPDATE auth.magic_links SET used_at = now() - interval '2 days'
WHERE token_hash = sha256(convert_to(pg_temp.tok(1), 'UTF8'));
UPDATE auth.magic_links SET expires_at = now() - interval '2 days'
WHERE token_hash = sha256(convert_to(pg_temp.tok(2), 'UTF8'));

SET LOCAL ROLE platform_app;
SELECT is((SELECT (r->>'rate_events')::int > 0 AND (r->>'magic_links')::int = 2
                  AND (r->>'sessions')::int = 2
           FROM auth.purge() AS r),
          true, 'purge: old rate events, old used/expired links, ended sessions');
RESET ROLE;

SELECT is((SELECT count(*)::int FROM auth.rate_events WHERE key = 'rate@example.org'),
          0, 'old rate events are gone');
SELECT is((SELECT count(*)::int FROM auth.magic_links
           WHERE token_hash IN (sha256(convert_to(pg_temp.tok(1), 'UTF8')),
                                sha256(convert_to(pg_temp.tok(2), 'UTF8')))),
          0, 'old links are gone');
SELECT ok((SELECT count(*) FROM auth.magic_links WHERE used_at IS NULL) > 0,
          'pending links stay');
SELECT is(maintenance.auth_purge()->>'magic_links', '0',
          'maintenance.auth_purge() for the jobs runner');

SELECT * FROM finish();
