-- pgTAP tests for sql/004_jobs.sql (run by tools/sql-test, see there).
--
-- The file runs in one transaction, so now() does not move: a job enqueued
-- for now() is due, a retry at now() + backoff is not.

SELECT * FROM no_plan();

-- Fast, known backoff for these tests: base 1 s (the default), cap 1 h.
UPDATE jobs.settings SET backoff_base_seconds = 1, backoff_max_seconds = 3600,
                         from_name = NULL, instance = 'inst1';

-- Test fixtures
CREATE TABLE public.t_maint (v text);

CREATE FUNCTION maintenance.t_touch(args jsonb) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.t_maint VALUES (args ->> 'v') $$;

CREATE FUNCTION maintenance.t_fail() RETURNS void
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'maintenance broke'; END $$;

CREATE FUNCTION public.t_outside() RETURNS void
LANGUAGE sql AS $$ SELECT $$;

INSERT INTO jobs.webhook_targets (name, url, secret, address)
VALUES ('crm', 'https://crm.example.com/hooks/in?x=1',
        'whsec_0123456789abcdef', '192.0.2.7'),
       ('local', 'http://127.0.0.1:9/hook', 'whsec_0123456789abcdef', NULL),
       ('v6', 'https://hooks.example.com:8443/in', 'whsec_0123456789abcdef',
        '2001:db8::5');

-- A job's row, for short assertions.
CREATE FUNCTION pg_temp.job(job_id bigint) RETURNS jobs.jobs
LANGUAGE sql AS $$ SELECT * FROM jobs.jobs WHERE id = job_id $$;

-- What is due, taken out of the way: these tests claim their own jobs.
CREATE FUNCTION pg_temp.claim_all() RETURNS SETOF jobs.jobs
LANGUAGE sql AS $$
    SELECT j.* FROM jobs.claim('t', 1000, 60, 'noreply@platform.test') c
    JOIN jobs.jobs j ON j.id = c.id
$$;


-- ---------------------------------------------------------------------
-- Schema, privileges
-- ---------------------------------------------------------------------

SELECT has_schema('jobs');
SELECT has_schema('maintenance');
SELECT has_table('jobs', 'jobs', 'jobs.jobs');
SELECT has_table('jobs', 'mail_templates', 'jobs.mail_templates');
SELECT has_table('jobs', 'webhook_targets', 'jobs.webhook_targets');
SELECT ok((SELECT count(*) FROM jobs.settings) = 1, 'one settings row');
SELECT ok(EXISTS (SELECT 1 FROM jobs.mail_templates WHERE name = 'magic_link'),
          'the magic_link template is seeded');

SELECT ok(has_function_privilege('platform_app',
              'jobs.enqueue(text, jsonb, timestamptz, text, int)', 'EXECUTE'),
          'platform_app may enqueue');
SELECT ok(has_function_privilege('platform_app',
              'jobs.claim(text, int, int, text)', 'EXECUTE'),
          'platform_app may claim');
SELECT ok(has_function_privilege('platform_app',
              'jobs.finish(bigint, boolean, text, int)', 'EXECUTE'),
          'platform_app may finish');
SELECT ok(has_function_privilege('platform_app', 'jobs.stats()', 'EXECUTE'),
          'platform_app may read stats');
SELECT ok(NOT has_table_privilege('platform_app', 'jobs.jobs', 'SELECT'),
          'platform_app cannot read jobs.jobs directly');
SELECT ok(NOT has_table_privilege('platform_app', 'jobs.webhook_targets',
                                  'SELECT'),
          'platform_app cannot read webhook secrets');
SELECT ok(NOT has_function_privilege('platform_app',
              'jobs.render_mail(bigint, jsonb, text, timestamptz)', 'EXECUTE'),
          'helpers are not callable by platform_app');


-- ---------------------------------------------------------------------
-- Rendering helpers
-- ---------------------------------------------------------------------

SELECT ok(jobs.valid_address('a.b+c@example.com'), 'valid address');
SELECT ok(NOT jobs.valid_address('a b@example.com'), 'a space is refused');
SELECT ok(NOT jobs.valid_address(E'a@example.com\r\nBcc: x@y.z'),
          'CR LF in an address is refused');
SELECT ok(NOT jobs.valid_address('<a@example.com>'), 'brackets are refused');
SELECT ok(NOT jobs.valid_address('a@'), 'no domain is refused');

SELECT is(jobs.html_escape('<a href="x">&''</a>'),
          '&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;', 'html_escape');

SELECT is(jobs.render('Hi {{name}}, {{ n }}!', '{"name": "<b>", "n": 3}',
                      false),
          'Hi <b>, 3!', 'render: text substitution');
SELECT is(jobs.render('<p>{{name}}</p>', '{"name": "<b>&"}', true),
          '<p>&lt;b&gt;&amp;</p>', 'render: html escapes values');
SELECT is(jobs.render('{{a}}', '{"a": "{{b}}", "b": "x"}', false), '{{b}}',
          'render: values are not substituted again');
SELECT is(jobs.render('no vars, {{ unclosed', NULL, false),
          'no vars, {{ unclosed', 'render: an unclosed brace stays');
SELECT throws_ok($$SELECT jobs.render('{{missing}}', '{}', false)$$,
                 '22023', NULL, 'render: a missing variable is an error');

SELECT is(jobs.header_text('Hello world'), 'Hello world',
          'header_text: ASCII as is');
SELECT is(jobs.header_text(E'Hello\r\nBcc: x@y.z'), 'Hello Bcc: x@y.z',
          'header_text: no header injection');
SELECT matches(jobs.header_text('Grüße'), '^=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=$',
               'header_text: non-ASCII as an encoded word');
SELECT is(convert_from(decode(substring(jobs.header_text('Grüße')
                                        FROM 11 FOR 12), 'base64'), 'UTF8'),
          'Grüße', 'header_text: the encoded word decodes');
SELECT ok((SELECT bool_and(length(w) <= 76)
           FROM regexp_split_to_table(jobs.header_text(repeat('é', 100)),
                                      E'\r\n') w),
          'header_text: long text folds into words of at most 75');
SELECT is((SELECT string_agg(convert_from(decode(substring(btrim(w) FROM 11
                                                           FOR length(btrim(w))
                                                               - 12),
                                                 'base64'), 'UTF8'), ''
                             ORDER BY n)
           FROM regexp_split_to_table(jobs.header_text(repeat('é€', 50)),
                                      E'\r\n') WITH ORDINALITY AS x(w, n)),
          repeat('é€', 50),
          'header_text: words split between characters, never inside one');
SELECT is(jobs.header_name('Platform Team'), '"Platform Team"',
          'header_name: ASCII is quoted');
SELECT is(jobs.header_name('Say "hi"'), '"Say \"hi\""',
          'header_name: quotes are escaped');


-- ---------------------------------------------------------------------
-- enqueue: validation
-- ---------------------------------------------------------------------

SELECT throws_ok($$SELECT jobs.enqueue('fax', '{}')$$, '22023', NULL,
                 'an unknown kind is refused');
SELECT throws_ok($$SELECT jobs.enqueue('mail',
                     '{"subject": "x", "text": "y"}')$$,
                 '22023', NULL, 'mail without "to" is refused');
SELECT throws_ok($$SELECT jobs.enqueue('mail',
                     '{"to": "not an address", "subject": "x", "text": "y"}')$$,
                 '22023', NULL, 'a bad address is refused');
SELECT throws_ok($$SELECT jobs.enqueue('mail',
                     '{"to": ["a@example.com", 5],
                       "subject": "x", "text": "y"}')$$,
                 '22023', NULL, 'a non-string recipient is refused');
SELECT throws_ok($$SELECT jobs.enqueue('mail',
                     '{"to": "a@example.com", "template": "nope"}')$$,
                 '22023', NULL, 'an unknown template is refused');
SELECT throws_ok($$SELECT jobs.enqueue('mail',
                     '{"to": "a@example.com", "template": "magic_link",
                       "vars": {"link": "x"}}')$$,
                 '22023', NULL, 'a missing template variable is refused');
SELECT throws_ok($$SELECT jobs.enqueue('mail', '{"to": "a@example.com"}')$$,
                 '22023', NULL, 'mail without template or subject is refused');
SELECT throws_ok($$SELECT jobs.enqueue('webhook',
                     '{"target": "nope", "body": {}}')$$,
                 '22023', NULL, 'an unknown webhook target is refused');
SELECT throws_ok($$SELECT jobs.enqueue('webhook', '{"target": "crm"}')$$,
                 '22023', NULL, 'a webhook without body is refused');
SELECT throws_ok($$SELECT jobs.enqueue('sql', '{"function": "t_outside"}')$$,
                 '22023', NULL, 'a function outside maintenance is refused');
SELECT throws_ok($$SELECT jobs.enqueue('sql', '{"function": "t_touch"}')$$,
                 '22023', NULL, 'a function needing args is refused without');
SELECT throws_ok($$SELECT jobs.enqueue('sql',
                     '{"function": "t_fail; DROP TABLE x"}')$$,
                 '22023', NULL, 'a function name is an identifier');
SELECT throws_ok($$SELECT jobs.enqueue('sql', '{"function": "t_fail"}',
                                       max_attempts => 0)$$,
                 '22023', NULL, 'max_attempts 0 is refused');
SELECT throws_ok($$SELECT jobs.enqueue('sql', '{"function": "t_fail"}',
                                       key => '')$$,
                 '22023', NULL, 'an empty key is refused');


-- ---------------------------------------------------------------------
-- enqueue, claim, finish: mail
-- ---------------------------------------------------------------------

SELECT jobs.enqueue('mail', jsonb_build_object(
           'to', 'ann@example.com', 'template', 'magic_link',
           'vars', jsonb_build_object(
               'link', 'https://platform.test/confirm.html#token=a&b<c>',
               'expires_minutes', 15)))
    AS mail_id \gset

SELECT jobs.enqueue('mail', '{"to": "later@example.com", "subject": "x",
                              "text": "y"}', now() + interval '1 hour')
    AS later_id \gset

SELECT is((pg_temp.job(:mail_id)).state, 'pending', 'enqueued: pending');
SELECT is((pg_temp.job(:mail_id)).attempts, 0, 'enqueued: no attempts');
SELECT is((pg_temp.job(:mail_id)).max_attempts, 8, 'max_attempts default 8');

CREATE TEMP TABLE claimed AS
SELECT * FROM jobs.claim('host/1', 10, 60, 'noreply@platform.test');

SELECT is((SELECT count(*) FROM claimed WHERE id = :mail_id), 1::bigint,
          'claim returns the due job');
SELECT is((SELECT count(*) FROM claimed WHERE id = :later_id), 0::bigint,
          'claim leaves a job that is not due');
SELECT is((pg_temp.job(:mail_id)).state, 'running', 'claimed: running');
SELECT is((pg_temp.job(:mail_id)).attempts, 1, 'claimed: attempts 1');
SELECT is((pg_temp.job(:mail_id)).locked_until, now() + interval '60 s',
          'claimed: locked for the lease');
SELECT is((pg_temp.job(:mail_id)).locked_by, 'host/1', 'claimed: by whom');
SELECT is((SELECT attempt FROM claimed WHERE id = :mail_id), 1,
          'claim returns the attempt');
SELECT is((SELECT count(*) FROM jobs.claim('host/2', 10, 60, 'x@y.z')),
          0::bigint, 'a running job is not claimed twice');

SELECT is((SELECT kind FROM claimed WHERE id = :mail_id), 'mail', 'kind');
SELECT is((SELECT mail_from FROM claimed WHERE id = :mail_id),
          'noreply@platform.test', 'envelope sender is the one passed');
SELECT is((SELECT rcpt_to FROM claimed WHERE id = :mail_id),
          'ann@example.com', 'envelope recipient');

SELECT (SELECT message FROM claimed WHERE id = :mail_id) AS msg \gset

SELECT matches(:'msg'::text,
               E'^Date: [A-Z][a-z]{2}, \\d{2} [A-Z][a-z]{2} \\d{4} '
                    || E'\\d{2}:\\d{2}:\\d{2} \\+0000\r\n',
               'message: Date first, RFC 5322 form');
SELECT matches(:'msg'::text, E'\r\nFrom: noreply@platform.test\r\n',
               'message: From');
SELECT matches(:'msg'::text, E'\r\nTo: ann@example.com\r\n', 'message: To');
SELECT matches(:'msg'::text, E'\r\nSubject: Your sign-in link\r\n',
               'message: Subject from the template');
SELECT matches(:'msg'::text, E'\r\nMessage-ID: <job-' || :mail_id
                       || E'\\.inst1@platform\\.test>\r\n',
               'message: Message-ID fixed per job');
SELECT matches(:'msg'::text, E'\r\nContent-Type: multipart/alternative; '
                    || E'boundary="=_platform_job_' || :mail_id || E'"\r\n',
               'message: multipart/alternative');
SELECT ok(strpos(:'msg', E'\r\n\r\n') > 0, 'message: headers end');
SELECT ok(:'msg'::text !~ E'[^\r]\n', 'message: every line ends in CRLF');
SELECT ok((SELECT bool_and(length(l) <= 998)
           FROM regexp_split_to_table(:'msg', E'\r\n') l),
          'message: no line longer than 998');

-- The parts, decoded.
SELECT (regexp_match(:'msg', E'text/plain; charset=UTF-8\r\n'
                          || E'Content-Transfer-Encoding: base64\r\n\r\n'
                          || E'([A-Za-z0-9+/=\r\n]+?)\r\n--'))[1] AS text64,
       (regexp_match(:'msg', E'text/html; charset=UTF-8\r\n'
                          || E'Content-Transfer-Encoding: base64\r\n\r\n'
                          || E'([A-Za-z0-9+/=\r\n]+?)\r\n--'))[1] AS html64
\gset

SELECT ok(strpos(convert_from(decode(replace(:'text64', E'\r\n', ''),
                                     'base64'), 'UTF8'),
                 'https://platform.test/confirm.html#token=a&b<c>') > 0,
          'text part: the link as is');
SELECT ok(strpos(convert_from(decode(replace(:'text64', E'\r\n', ''),
                                     'base64'), 'UTF8'),
                 'expires in 15 minutes') > 0,
          'text part: a number variable');
SELECT ok(strpos(convert_from(decode(replace(:'html64', E'\r\n', ''),
                                     'base64'), 'UTF8'),
                 'href="https://platform.test/confirm.html#token=a&amp;b&lt;'
                 || 'c&gt;"') > 0,
          'html part: the link HTML-escaped');

-- A mail without template: several recipients, non-ASCII subject, no html.
SELECT jobs.enqueue('mail', '{"to": ["a@example.com", "b@example.org"],
                              "subject": "Grüße aus München",
                              "text": "plain\nbody", "from_name": "Plätform",
                              "reply_to": "help@platform.test"}')
    AS plain_id \gset

SELECT message AS msg2, rcpt_to AS rcpt2
FROM jobs.claim('host/1', 10, 60, 'noreply@platform.test') \gset

SELECT is(:'rcpt2'::text, E'a@example.com\nb@example.org',
          'recipients: one per line');
SELECT matches(:'msg2'::text, E'\r\nTo: a@example.com,\r\n b@example.org\r\n',
               'To: all recipients');
SELECT matches(:'msg2'::text, E'\r\nSubject: =\\?UTF-8\\?B\\?',
               'Subject: RFC 2047 encoded');
SELECT matches(:'msg2'::text, E'\r\nFrom: =\\?UTF-8\\?B\\?[^?]+\\?= '
                     || E'<noreply@platform\\.test>\r\n',
               'From: encoded display name and the sender');
SELECT matches(:'msg2'::text, E'\r\nReply-To: help@platform.test\r\n',
               'Reply-To');
SELECT matches(:'msg2'::text,
               E'\r\nContent-Type: text/plain; charset=UTF-8\r\n',
               'text only: a single text/plain part');
SELECT ok(:'msg2'::text ~ E'\r\n$', 'the message ends with CRLF');

-- finish: success
SELECT is(jobs.finish(:mail_id, true, NULL, 1), 'done', 'finish ok: done');
SELECT is((pg_temp.job(:mail_id)).finished_at, now(), 'done: finished_at');
SELECT is((pg_temp.job(:mail_id)).locked_until, NULL, 'done: unlocked');
SELECT is(jobs.finish(:mail_id, false, 'late', 1), NULL,
          'finish of a job not running changes nothing');
SELECT is((pg_temp.job(:mail_id)).state, 'done', 'still done');


-- ---------------------------------------------------------------------
-- Retries, backoff, dead
-- ---------------------------------------------------------------------

SELECT jobs.enqueue('mail', '{"to": "r@example.com", "subject": "retry",
                              "text": "x"}', max_attempts => 3)
    AS retry_id \gset

SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :retry_id),
          1::bigint, 'retry job claimed (attempt 1)');
SELECT is(jobs.finish(:retry_id, false, 'connection refused', 2), NULL,
          'finish of another attempt changes nothing');
SELECT is((pg_temp.job(:retry_id)).state, 'running',
          'still running after a stale finish');
SELECT is(jobs.finish(:retry_id, false, 'connection refused', 1), 'pending',
          'a failed attempt: pending again');
SELECT is((pg_temp.job(:retry_id)).run_at, now() + interval '2 s',
          'backoff after attempt 1: 2 s');
SELECT is((pg_temp.job(:retry_id)).last_error, 'connection refused',
          'last_error recorded');
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :retry_id),
          0::bigint, 'not claimed before its backoff is over');

UPDATE jobs.jobs SET run_at = now() WHERE id = :retry_id;
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :retry_id),
          1::bigint, 'claimed again when due (attempt 2)');
SELECT is(jobs.finish(:retry_id, false, 'again'), 'pending',
          'attempt 2 failed (no attempt given)');
SELECT is((pg_temp.job(:retry_id)).run_at, now() + interval '4 s',
          'backoff after attempt 2: 4 s');

UPDATE jobs.jobs SET run_at = now() WHERE id = :retry_id;
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :retry_id),
          1::bigint, 'attempt 3');
SELECT is(jobs.finish(:retry_id, false, 'third'), 'dead',
          'dead after max_attempts');
SELECT is((pg_temp.job(:retry_id)).finished_at, now(), 'dead: finished_at');
SELECT is((pg_temp.job(:retry_id)).attempts, 3, 'dead: 3 attempts');

SELECT ok(jobs.retry(:retry_id), 'retry() a dead job');
SELECT is((pg_temp.job(:retry_id)).state, 'pending', 'retried: pending');
SELECT is((pg_temp.job(:retry_id)).attempts, 0, 'retried: attempts reset');
SELECT ok(NOT jobs.retry(:retry_id), 'retry() of a job not dead: false');

-- The cap and the settings
SELECT jobs.enqueue('mail', '{"to": "c@example.com", "subject": "cap",
                              "text": "x"}', max_attempts => 100)
    AS cap_id \gset
UPDATE jobs.jobs SET attempts = 20 WHERE id = :cap_id;
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :cap_id),
          1::bigint, 'claimed at attempt 21');
SELECT is(jobs.finish(:cap_id, false, 'x'), 'pending', 'attempt 21 failed');
SELECT is((pg_temp.job(:cap_id)).run_at, now() + interval '1 hour',
          'backoff capped at 1 h');

UPDATE jobs.settings SET backoff_base_seconds = 0.05;
UPDATE jobs.jobs SET run_at = now(), attempts = 2 WHERE id = :cap_id;
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :cap_id),
          1::bigint, 'claimed at attempt 3');
SELECT is(jobs.finish(:cap_id, false, 'x'), 'pending', 'attempt 3 failed');
SELECT is((pg_temp.job(:cap_id)).run_at, now() + interval '0.4 s',
          'backoff base from jobs.settings: 0.05 * 2^3');
UPDATE jobs.settings SET backoff_base_seconds = 1;


-- ---------------------------------------------------------------------
-- Leases
-- ---------------------------------------------------------------------

SELECT jobs.enqueue('mail', '{"to": "l@example.com", "subject": "lease",
                              "text": "x"}', max_attempts => 2)
    AS lease_id \gset

SELECT message AS lease_msg1 FROM pg_temp.claim_all() j
JOIN LATERAL (SELECT jobs.render_mail(j.id, j.payload,
                                      'noreply@platform.test') AS message) m
    ON true
WHERE j.id = :lease_id \gset

-- its worker died: the lease runs out
UPDATE jobs.jobs SET locked_until = now() - interval '1 s'
WHERE id = :lease_id;

SELECT message AS lease_msg2, attempt AS lease_attempt
FROM jobs.claim('host/3', 10, 30, 'noreply@platform.test')
WHERE id = :lease_id \gset

SELECT is(:lease_attempt, 2, 'a job whose lease ran out is claimed again');
SELECT is((pg_temp.job(:lease_id)).locked_by, 'host/3', 'by the new worker');
SELECT is((regexp_match(:'lease_msg2', 'Message-ID: [^\r]+'))[1],
          (regexp_match(:'lease_msg1', 'Message-ID: [^\r]+'))[1],
          'the repeat has the same Message-ID');

UPDATE jobs.jobs SET locked_until = now() - interval '1 s'
WHERE id = :lease_id;

SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :lease_id),
          0::bigint, 'a lease that ran out on the last attempt: not claimed');
SELECT is((pg_temp.job(:lease_id)).state, 'dead', '... but dead');
SELECT matches((pg_temp.job(:lease_id)).last_error, 'lease expired',
               '... saying why');


-- ---------------------------------------------------------------------
-- Keys: idempotent enqueue, cancel, reschedule
-- ---------------------------------------------------------------------

SELECT jobs.enqueue('mail', '{"to": "k@example.com", "subject": "k",
                              "text": "x"}', now() + interval '1 day',
                    'reminder:7') AS key_id \gset

SELECT is(jobs.enqueue('mail', '{"to": "k@example.com", "subject": "other",
                                 "text": "x"}', now(), 'reminder:7'),
          :key_id::bigint, 'enqueue with an active key returns that job');
SELECT is((SELECT count(*) FROM jobs.jobs WHERE key = 'reminder:7'),
          1::bigint, '... and adds none');

SELECT ok(jobs.reschedule('reminder:7', now() - interval '1 s'),
          'reschedule by key');
SELECT is((pg_temp.job(:key_id)).run_at, now() - interval '1 s',
          'rescheduled run_at');
SELECT ok(NOT jobs.reschedule('nope', now()), 'reschedule of no job: false');

SELECT ok(jobs.cancel('reminder:7'), 'cancel by key');
SELECT is((pg_temp.job(:key_id)).state, 'cancelled', 'cancelled');
SELECT ok(NOT jobs.cancel('reminder:7'), 'cancel again: false');
SELECT ok(NOT jobs.reschedule('reminder:7', now()),
          'a cancelled job cannot be rescheduled');
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :key_id),
          0::bigint, 'a cancelled job is not claimed');

SELECT isnt(jobs.enqueue('mail', '{"to": "k@example.com", "subject": "k2",
                                   "text": "x"}', now() + interval '1 day',
                         'reminder:7'),
            :key_id::bigint, 'the key is free again after cancel');

SELECT jobs.enqueue('mail', '{"to": "k@example.com", "subject": "run",
                              "text": "x"}', now(), 'running:1')
    AS run_key_id \gset
SELECT is((SELECT count(*) FROM pg_temp.claim_all() WHERE id = :run_key_id),
          1::bigint, 'claimed a keyed job');
SELECT ok(NOT jobs.cancel('running:1'), 'a running job cannot be cancelled');


-- ---------------------------------------------------------------------
-- Webhooks
-- ---------------------------------------------------------------------

SELECT jobs.enqueue('webhook', '{"target": "crm", "body": {"b": 1, "a": "ü"}}')
    AS hook_id \gset
SELECT jobs.enqueue('webhook', '{"target": "local", "body": "raw=1&x=2",
                                 "content_type":
                                     "application/x-www-form-urlencoded"}')
    AS hook2_id \gset
SELECT jobs.enqueue('webhook', '{"target": "v6", "body": [1, 2]}')
    AS hook3_id \gset

CREATE TEMP TABLE hooks AS SELECT * FROM jobs.claim('host/1', 10, 60, NULL);

SELECT is((SELECT url FROM hooks WHERE id = :hook_id),
          'https://crm.example.com/hooks/in?x=1', 'webhook: url');
SELECT is((SELECT body FROM hooks WHERE id = :hook_id), '{"a": "ü", "b": 1}',
          'webhook: body is the JSON text');
SELECT is((SELECT body FROM hooks WHERE id = :hook2_id), 'raw=1&x=2',
          'webhook: a JSON string body is sent as its text');
SELECT matches((SELECT headers FROM hooks WHERE id = :hook2_id),
               '^Content-Type: application/x-www-form-urlencoded\n',
               'webhook: content_type');
SELECT matches((SELECT headers FROM hooks WHERE id = :hook_id),
               E'(^|\n)X-Platform-Delivery: ' || :hook_id || E'(\n|$)',
               'webhook: X-Platform-Delivery is the job id');
SELECT is((SELECT resolve FROM hooks WHERE id = :hook_id),
          'crm.example.com:443:192.0.2.7', 'webhook: resolve for a name');
SELECT is((SELECT resolve FROM hooks WHERE id = :hook2_id), NULL,
          'webhook: no resolve for a numeric host');
SELECT is((SELECT resolve FROM hooks WHERE id = :hook3_id),
          'hooks.example.com:8443:[2001:db8::5]', 'webhook: IPv6 address');

SELECT m[1] AS sig_t, m[2] AS sig_v1, body AS sig_body
FROM (SELECT body, regexp_match(headers, 'X-Platform-Signature: '
                                         't=(\d+),v1=([0-9a-f]{64})') AS m
      FROM hooks WHERE id = :hook_id) x \gset

SELECT is(:'sig_t'::text, extract(epoch FROM now())::bigint::text,
          'signature: t is the time of the claim');
SELECT is(:'sig_v1'::text,
          encode(hmac(convert_to(:'sig_t' || '.' || :'sig_body', 'UTF8'),
                      convert_to('whsec_0123456789abcdef', 'UTF8'),
                      'sha256'), 'hex'),
          'signature: HMAC-SHA256 of "t.body" with the secret');


-- ---------------------------------------------------------------------
-- SQL maintenance
-- ---------------------------------------------------------------------

SELECT jobs.enqueue('sql', '{"function": "t_touch", "args": {"v": "one"}}')
    AS sql_id \gset
SELECT jobs.enqueue('sql', '{"function": "t_fail"}', max_attempts => 2)
    AS sqlf_id \gset

CREATE TEMP TABLE sqls AS SELECT * FROM jobs.claim('host/1', 10, 60, NULL);

SELECT is((SELECT sql_function FROM sqls WHERE id = :sql_id), 't_touch',
          'sql job: the function name');
SELECT is(jobs.run_sql(:sql_id, 1), NULL, 'run_sql: success is NULL');
SELECT is((pg_temp.job(:sql_id)).state, 'done', 'run_sql: done');
SELECT is((SELECT v FROM public.t_maint), 'one', 'run_sql: it ran, with args');
SELECT is(jobs.run_sql(:sql_id, 1), 'not claimed',
          'run_sql of a job not running does nothing');
SELECT is((SELECT count(*) FROM public.t_maint), 1::bigint, '... ran once');

SELECT is(jobs.run_sql(:sqlf_id, 1), 'maintenance broke',
          'run_sql: the error');
SELECT is((pg_temp.job(:sqlf_id)).state, 'pending', 'run_sql failed: retry');
SELECT is((pg_temp.job(:sqlf_id)).last_error, 'maintenance broke',
          'run_sql failed: last_error');


-- ---------------------------------------------------------------------
-- A job that cannot be rendered is dead at claim, the others still run
-- ---------------------------------------------------------------------

INSERT INTO jobs.jobs (kind, payload) VALUES ('mail', '{"to": "x y"}')
RETURNING id AS bad_id \gset
SELECT jobs.enqueue('mail', '{"to": "ok@example.com", "subject": "s",
                              "text": "t"}') AS good_id \gset

CREATE TEMP TABLE mixed AS SELECT * FROM jobs.claim('host/1', 10, 60,
                                                    'noreply@platform.test');

SELECT is((SELECT count(*) FROM mixed WHERE id = :bad_id), 0::bigint,
          'a broken job is not returned');
SELECT is((SELECT count(*) FROM mixed WHERE id = :good_id), 1::bigint,
          'the good one is');
SELECT is((pg_temp.job(:bad_id)).state, 'dead', 'the broken job is dead');
SELECT matches((pg_temp.job(:bad_id)).last_error, '^cannot be sent: ',
               '... with the reason');

SELECT throws_ok($$SELECT * FROM jobs.claim('w', 0, 60)$$, '22023', NULL,
                 'claim n = 0 is refused');


-- ---------------------------------------------------------------------
-- stats
-- ---------------------------------------------------------------------

DELETE FROM jobs.jobs;

CREATE TEMP TABLE stats_jobs AS
SELECT jobs.enqueue('mail', '{"to": "s@example.com", "subject": "s",
                              "text": "t"}', now() + d) AS id
FROM unnest(ARRAY[interval '-90 s', interval '-10 s', interval '1 hour']) d;
INSERT INTO jobs.jobs (kind, payload, state, attempts, locked_until)
VALUES ('mail', '{}', 'running', 1, now() + interval '1 minute');
INSERT INTO jobs.jobs (kind, payload, state, attempts, run_at)
VALUES ('mail', '{}', 'pending', 2, now() + interval '1 minute');
INSERT INTO jobs.jobs (kind, payload, state, attempts)
VALUES ('mail', '{}', 'dead', 8), ('mail', '{}', 'dead', 8),
       ('mail', '{}', 'done', 1), ('mail', '{}', 'cancelled', 0);

SELECT is((SELECT row(s.*)::text FROM jobs.stats() s),
          row(2::bigint, 1::bigint, 1::bigint, 2::bigint, 90::float8)::text,
          'stats: due, running, retrying, dead, oldest due age');

DELETE FROM jobs.jobs;
SELECT is((SELECT oldest_due_age_seconds FROM jobs.stats()), 0::float8,
          'stats: age 0 when nothing is due');


SELECT * FROM finish();
