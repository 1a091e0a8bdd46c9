-- pgTAP tests for sql/007_jobs_calls.sql (run by tools/sql-test): call
-- jobs, their payload, claiming them, and jobs.finish_call().
--
-- The file runs in one transaction, so now() does not move: a job enqueued
-- for now() is due, a retry at now() + backoff is not.

SELECT * FROM no_plan();

UPDATE jobs.settings SET backoff_base_seconds = 1, backoff_max_seconds = 3600;

-- Test fixtures: a callback that records what it got, one that records
-- then raises, one with the wrong signature.
CREATE TABLE public.t_answers (context jsonb, status int, response text);

CREATE FUNCTION callbacks.t_store(context jsonb, status int, response text)
RETURNS void LANGUAGE sql
AS $$ INSERT INTO public.t_answers VALUES (context, status, response) $$;

CREATE FUNCTION callbacks.t_raise(context jsonb, status int, response text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.t_answers VALUES (context, status, response);
    RAISE EXCEPTION 'booking % is gone', context ->> 'n';
END
$$;

CREATE FUNCTION callbacks.t_wrong(context jsonb) RETURNS void
LANGUAGE sql AS $$ SELECT $$;

CREATE FUNCTION pg_temp.job(job_id bigint) RETURNS jobs.jobs
LANGUAGE sql AS $$ SELECT * FROM jobs.jobs WHERE id = job_id $$;

CREATE FUNCTION pg_temp.answers(n int) RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(status || ':' || coalesce(response, '<null>'), ',')
    FROM public.t_answers WHERE context ->> 'n' = n::text
$$;

-- A valid payload, changed by a patch.
CREATE FUNCTION pg_temp.call(patch jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql AS $$
    SELECT '{"service": "stripe", "method": "POST",
             "path": "/v1/checkout/sessions",
             "form": {"mode": "payment"},
             "headers": {"Idempotency-Key": "reg-1"},
             "callback": "t_store", "context": {"n": 0}}'::jsonb || patch
$$;

CREATE FUNCTION pg_temp.refused(patch jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobs.enqueue('call', pg_temp.call(patch));
    RETURN false;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN true;
END
$$;

CREATE FUNCTION pg_temp.refused_without(field text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobs.enqueue('call', pg_temp.call() - field);
    RETURN false;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN true;
END
$$;


-- ---------------------------------------------------------------------
-- Schema, privileges
-- ---------------------------------------------------------------------

SELECT has_schema('callbacks');
SELECT ok(NOT has_schema_privilege('platform_app', 'callbacks', 'USAGE'),
          'platform_app has no rights on schema callbacks');
SELECT ok(NOT has_schema_privilege('platform_app', 'callbacks', 'CREATE'),
          '... and cannot create callbacks');
SELECT ok(has_function_privilege('platform_app',
              'jobs.finish_call(bigint, int, int, text, text)', 'EXECUTE'),
          'platform_app may finish calls');
SELECT ok(has_function_privilege('platform_app',
              'jobs.claim(text, int, int, text)', 'EXECUTE'),
          'platform_app may still claim');
SELECT ok(NOT has_function_privilege('platform_app',
              'jobs.render_call(jsonb)', 'EXECUTE'),
          'helpers are not callable by platform_app');
SELECT ok(pg_get_constraintdef((SELECT oid FROM pg_constraint
                                WHERE conname = 'jobs_kind_check'))
          ~ '''call''', 'jobs.jobs allows kind call');


-- ---------------------------------------------------------------------
-- Form encoding
-- ---------------------------------------------------------------------

SELECT is(jobs.form_encode('{}'), '', 'form: empty');
SELECT is(jobs.form_encode('{"a": "x y", "b": "A-Z_a.z~0"}'),
          'a=x%20y&b=A-Z_a.z~0', 'form: unreserved kept, space %20');
SELECT is(jobs.form_encode('{"line_items[0][price_data][currency]": "eur"}'),
          'line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=eur',
          'form: brackets encoded');
SELECT is(jobs.form_encode('{"m": "Zoë & co=1/2+3%"}'),
          'm=Zo%C3%AB%20%26%20co%3D1%2F2%2B3%25', 'form: UTF-8 and reserved');
SELECT is(jobs.form_encode('{"n": 2500, "f": 1.5, "t": true, "o": false}'),
          'f=1.5&n=2500&o=false&t=true', 'form: numbers, booleans; key order');
SELECT is(jobs.form_encode('{"b": "1", "a[1]": "2", "a[0]": "3", "B": "4"}'),
          'B=4&a%5B0%5D=3&a%5B1%5D=2&b=1', 'form: byte order of the keys');
SELECT throws_ok($$SELECT jobs.form_encode('{"a": {"b": 1}}')$$, '22023',
                 NULL, 'form: a nested object is refused');
SELECT throws_ok($$SELECT jobs.form_encode('{"a": [1]}')$$, '22023', NULL,
                 'form: an array is refused');
SELECT throws_ok($$SELECT jobs.form_encode('{"a": null}')$$, '22023', NULL,
                 'form: null is refused');
SELECT throws_ok($$SELECT jobs.form_encode('[]')$$, '22023', NULL,
                 'form: not an object');


-- ---------------------------------------------------------------------
-- Payloads: refused at enqueue with 22023
-- ---------------------------------------------------------------------

SELECT ok(jobs.enqueue('call', pg_temp.call()) > 0, 'a valid call enqueues');
DELETE FROM jobs.jobs;

SELECT ok(pg_temp.refused('{"service": "Stripe"}'), 'service: capitals');
SELECT ok(pg_temp.refused('{"service": ""}'), 'service: empty');
SELECT ok(pg_temp.refused('{"service": "a-b"}'), 'service: a dash');
SELECT ok(pg_temp.refused(jsonb_build_object('service', repeat('s', 33))),
          'service: 33 characters');
SELECT ok(pg_temp.refused('{"service": 1}'), 'service: a number');
SELECT ok(pg_temp.refused_without('service'), 'service: missing');
SELECT ok(pg_temp.refused('{"method": "HEAD"}'), 'method: HEAD');
SELECT ok(pg_temp.refused('{"method": "post"}'), 'method: lower case');
SELECT ok(pg_temp.refused_without('method'), 'method: missing');
SELECT ok(pg_temp.refused('{"path": "v1/x"}'), 'path: no leading /');
SELECT ok(pg_temp.refused('{"path": "/v1/a b"}'), 'path: a space');
SELECT ok(pg_temp.refused(jsonb_build_object('path', E'/v1/\n')),
          'path: a control character');
SELECT ok(pg_temp.refused('{"path": "/v1/é"}'), 'path: not ASCII');
SELECT ok(pg_temp.refused(jsonb_build_object('path', '/' || repeat('a', 2000))),
          'path: 2001 characters');
SELECT ok(NOT pg_temp.refused(jsonb_build_object('path',
                                                 '/' || repeat('a', 1999))),
          'path: 2000 characters are fine');
SELECT ok(pg_temp.refused('{"form": {"a": {"b": 1}}}'), 'form: nested');
SELECT ok(pg_temp.refused('{"form": {"a": null}}'), 'form: a null value');
SELECT ok(pg_temp.refused('{"form": "a=1"}'), 'form: a string');
SELECT ok(pg_temp.refused('{"json": {"a": 1}}'), 'form and json together');
SELECT ok(pg_temp.refused('{"method": "GET", "json": {"a": 1}}'),
          'json with GET');
SELECT ok(pg_temp.refused('{"callback": "t_missing"}'), 'an unknown callback');
SELECT ok(pg_temp.refused('{"callback": "t_wrong"}'),
          'a callback with another signature');
SELECT ok(pg_temp.refused('{"callback": "T-bad"}'), 'a callback name');
SELECT ok(pg_temp.refused('{"headers": {"Authorization": "Bearer x"}}'),
          'header: Authorization is the service''s');
SELECT ok(pg_temp.refused('{"headers": {"content-length": "1"}}'),
          'header: Content-Length');
SELECT ok(pg_temp.refused('{"headers": {"Bad Name": "x"}}'),
          'header: a name with a space');
SELECT ok(pg_temp.refused(jsonb_build_object('headers', jsonb_build_object(
                              'X-A', E'x\r\nX-Injected: 1'))),
          'header: a value with CR LF');
SELECT ok(pg_temp.refused('{"headers": {"X-A": 1}}'), 'header: a number');
SELECT ok(pg_temp.refused('{"headers": {"X-A": ""}}'), 'header: empty');
SELECT ok(pg_temp.refused('{"headers": ["X-A: 1"]}'), 'headers: an array');
SELECT ok(pg_temp.refused('{"calback": "t_store"}'), 'an unknown field');
SELECT throws_ok($$SELECT jobs.enqueue('call', '[]')$$, '22023', NULL,
                 'not an object');
SELECT throws_like($$SELECT jobs.enqueue('call', pg_temp.call(
                        '{"service": "Stripe"}'))$$,
                   '%"service"%', 'the message names the field');


-- ---------------------------------------------------------------------
-- Claiming
-- ---------------------------------------------------------------------

DELETE FROM jobs.jobs;

SELECT jobs.enqueue('call', pg_temp.call(
    '{"form": {"mode": "payment", "line_items[0][quantity]": 1},
      "headers": {"Idempotency-Key": "reg-7", "Stripe-Version": "2024-06-20"},
      "context": {"n": 1}}')) AS post_id \gset
SELECT jobs.enqueue('call', pg_temp.call(
    '{"method": "GET", "path": "/v1/checkout/sessions/cs_1?a=1",
      "form": {"expand[]": "payment_intent"}}') - 'headers')
    AS get_id \gset
SELECT jobs.enqueue('call', pg_temp.call('{"method": "DELETE",
                                           "path": "/v1/x"}')
                            - 'form' - 'headers') AS del_id \gset
SELECT jobs.enqueue('call', pg_temp.call('{"method": "PUT", "json": [1, "a"]}')
                            - 'form' - 'headers') AS put_id \gset
SELECT jobs.enqueue('call', pg_temp.call() - 'form' - 'headers')
    AS bare_id \gset

CREATE TEMP TABLE calls AS SELECT * FROM jobs.claim('host/1', 10, 60, NULL);

SELECT is((SELECT count(*) FROM calls), 5::bigint, 'claim returns the calls');
SELECT is((SELECT row(kind, service, method, url, resolve, attempt)::text
           FROM calls WHERE id = :post_id),
          row('call', 'stripe', 'POST', '/v1/checkout/sessions', NULL::text,
              1)::text,
          'claim: kind, service, method, path as url, no resolve');
SELECT is((SELECT headers FROM calls WHERE id = :post_id),
          E'Content-Type: application/x-www-form-urlencoded\n'
          'Idempotency-Key: reg-7\nStripe-Version: 2024-06-20',
          'claim: headers, Content-Type first');
SELECT is((SELECT body FROM calls WHERE id = :post_id),
          'line_items%5B0%5D%5Bquantity%5D=1&mode=payment',
          'claim: the form as the body');
SELECT is((SELECT row(url, body, headers)::text FROM calls
           WHERE id = :get_id),
          row('/v1/checkout/sessions/cs_1?a=1&expand%5B%5D=payment_intent',
              NULL::text, '')::text,
          'claim: GET, the form added to the query string, no body');
SELECT is((SELECT row(method, url, body)::text FROM calls
           WHERE id = :del_id),
          row('DELETE', '/v1/x', NULL::text)::text, 'claim: DELETE, no body');
SELECT is((SELECT row(method, body, headers)::text FROM calls
           WHERE id = :put_id),
          row('PUT', '[1, "a"]', 'Content-Type: application/json')::text,
          'claim: PUT with JSON');
SELECT is((SELECT row(body, headers)::text FROM calls WHERE id = :bare_id),
          row('', 'Content-Type: application/x-www-form-urlencoded')::text,
          'claim: POST without a form: an empty one');
SELECT is((SELECT row(mail_from, message, sql_function)::text FROM calls
           WHERE id = :post_id),
          row(NULL::text, NULL::text, NULL::text)::text,
          'claim: the other kinds'' columns are NULL');

-- A callback dropped after enqueue: dead at claim, not sent.
CREATE FUNCTION callbacks.t_gone(context jsonb, status int, response text)
RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT jobs.enqueue('call', pg_temp.call('{"callback": "t_gone"}'))
    AS gone_id \gset
DROP FUNCTION callbacks.t_gone(jsonb, int, text);

SELECT is((SELECT count(*) FROM jobs.claim('host/1', 10, 60, NULL)
           WHERE id = :gone_id), 0::bigint,
          'a call whose callback is gone is not returned');
SELECT is((pg_temp.job(:gone_id)).state, 'dead', '... it is dead');
SELECT matches((pg_temp.job(:gone_id)).last_error,
               '^cannot be sent: .*callback', '... saying why');


-- ---------------------------------------------------------------------
-- finish_call
-- ---------------------------------------------------------------------

-- 2xx: the callback runs, the job is done.
SELECT is(jobs.finish_call(:post_id, 1, 200, '{"id": "cs_1"}', NULL), NULL,
          '2xx: NULL (done)');
SELECT is((pg_temp.job(:post_id)).state, 'done', '2xx: done');
SELECT is(pg_temp.answers(1), '200:{"id": "cs_1"}',
          '2xx: the callback got the status and the response');
SELECT is(jobs.finish_call(:post_id, 1, 200, '{}', NULL), 'not claimed',
          'a second answer for the attempt changes nothing');
SELECT is(pg_temp.answers(1), '200:{"id": "cs_1"}',
          '... the callback ran once');

-- Without a callback.
SELECT is(jobs.finish_call(:del_id, 1, 204, '', NULL), NULL,
          'no callback, 2xx: done');
SELECT is((pg_temp.job(:del_id)).state, 'done', '... done');

-- A wrong attempt number.
SELECT is(jobs.finish_call(:bare_id, 2, 200, '', NULL), 'not claimed',
          'another attempt: not claimed');
SELECT is((pg_temp.job(:bare_id)).state, 'running', '... still running');

-- 5xx with attempts left: retried with backoff, no callback.
UPDATE jobs.jobs SET payload = payload || '{"context": {"n": 2}}'
WHERE id = :bare_id;
SELECT is(jobs.finish_call(:bare_id, 1, 500, 'oops', NULL), 'HTTP status 500',
          '500: the error');
SELECT is((SELECT row(state, last_error, run_at)::text FROM jobs.jobs
           WHERE id = :bare_id),
          row('pending', 'HTTP status 500', now() + interval '2 s')::text,
          '500 with attempts left: pending again after the backoff');
SELECT is(pg_temp.answers(2), NULL, '500 with attempts left: no callback');

-- 429 and 408 and no answer are retried the same way.
UPDATE jobs.jobs SET state = 'running', attempts = 2 WHERE id = :bare_id;
SELECT is(jobs.finish_call(:bare_id, 2, 429, '', NULL), 'HTTP status 429',
          '429: retried');
UPDATE jobs.jobs SET state = 'running', attempts = 3 WHERE id = :bare_id;
SELECT is(jobs.finish_call(:bare_id, 3, 0, NULL, 'Connection refused'),
          'Connection refused', 'no answer: retried with the error');
SELECT is((pg_temp.job(:bare_id)).last_error, 'Connection refused',
          '... last_error');
SELECT is(pg_temp.answers(2), NULL, '... no callback');

-- The last attempt: the callback runs with what there was; the job dies.
UPDATE jobs.jobs SET state = 'running', attempts = 8 WHERE id = :bare_id;
SELECT is(jobs.finish_call(:bare_id, 8, 503, 'busy', NULL), 'HTTP status 503',
          'last attempt, 503: the error');
SELECT is((pg_temp.job(:bare_id)).state, 'dead', '... dead');
SELECT is(pg_temp.answers(2), '503:busy',
          '... the callback ran with the status and the response');

SELECT jobs.enqueue('call', pg_temp.call('{"context": {"n": 3}}'),
                    max_attempts => 1) AS last_id \gset
UPDATE jobs.jobs SET state = 'running', attempts = 1 WHERE id = :last_id;
SELECT is(jobs.finish_call(:last_id, 1, 0, NULL, 'timed out'), 'timed out',
          'last attempt, no answer');
SELECT is(pg_temp.answers(3), '0:timed out',
          '... the callback got status 0 and the error as the response');
SELECT is((pg_temp.job(:last_id)).state, 'dead', '... dead');

-- A 4xx answer is final.
SELECT jobs.enqueue('call', pg_temp.call('{"context": {"n": 4}}'))
    AS four_id \gset
UPDATE jobs.jobs SET state = 'running', attempts = 1 WHERE id = :four_id;
SELECT is(jobs.finish_call(:four_id, 1, 402, '{"error": {}}', NULL), NULL,
          '402: done');
SELECT is((SELECT row(state, last_error)::text FROM jobs.jobs
           WHERE id = :four_id),
          row('done', 'HTTP status 402')::text,
          '402: done, the status kept in last_error');
SELECT is(pg_temp.answers(4), '402:{"error": {}}', '402: the callback ran');

-- A callback that raises: its work is undone, the attempt is retried.
SELECT jobs.enqueue('call', pg_temp.call('{"callback": "t_raise",
                                           "context": {"n": 5}}'))
    AS raise_id \gset
UPDATE jobs.jobs SET state = 'running', attempts = 1 WHERE id = :raise_id;
SELECT matches(jobs.finish_call(:raise_id, 1, 200, '{}', NULL),
               '^callback callbacks.t_raise failed: booking 5 is gone',
               'a callback raising: the error');
SELECT is((pg_temp.job(:raise_id)).state, 'pending', '... retried');
SELECT matches((pg_temp.job(:raise_id)).last_error, 'booking 5 is gone',
               '... last_error');
SELECT is(pg_temp.answers(5), NULL, '... what it did is undone');

UPDATE jobs.jobs SET state = 'running', attempts = 8 WHERE id = :raise_id;
SELECT matches(jobs.finish_call(:raise_id, 8, 500, 'x', NULL),
               'booking 5 is gone \(after HTTP status 500\)$',
               'raising on the last attempt: both errors');
SELECT is((pg_temp.job(:raise_id)).state, 'dead', '... dead');

-- Only call jobs.
SELECT jobs.enqueue('sql', '{"function": "auth_purge"}') AS sql_id \gset
UPDATE jobs.jobs SET state = 'running', attempts = 1 WHERE id = :sql_id;
SELECT is(jobs.finish_call(:sql_id, 1, 200, '', NULL), 'not claimed',
          'finish_call of another kind: not claimed');


SELECT * FROM finish();
