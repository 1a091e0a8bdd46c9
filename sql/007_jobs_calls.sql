-- 007_jobs_calls.sql - a fourth kind of job, "call": an authenticated HTTP
-- API call (the Stripe API first, channel and CRM APIs later) whose answer
-- goes back to SQL.
--
-- Applied by tools/migrate in one transaction; harmless when run again.
--
-- A call names a service that nginx.conf defines (platform_jobs_service
-- NAME URL bearer=FILE ...: the base URL, the API key, extra headers), so
-- keys never enter the database.  SQL gives the method, the path, the form
-- or JSON body and headers such as Idempotency-Key; the runner sends it and
-- hands the answer to jobs.finish_call(), which calls the job's callback,
-- callbacks.<name>(context jsonb, status int, response text), in the same
-- transaction that records the outcome:
--
--   2xx, or 4xx but 408 and 429   a final answer: the callback runs; the
--                                 job is done when it succeeds
--   no answer (status 0), 408,    retried with the backoff of jobs.finish;
--   429, 5xx, anything else       on the last attempt the callback runs
--                                 (so the application can give up) and
--                                 the job is dead
--   the callback raises           the attempt failed: retried (the call is
--                                 made again: give it an Idempotency-Key)
--
-- Changes to 004_jobs.sql: kind "call" in jobs.jobs, jobs.check_payload()
-- knows it, jobs.claim() returns two more columns (service, method).

-- Functions called with a call job's answer.  Only migrations create
-- functions here: platform_app has no rights on the schema.
CREATE SCHEMA IF NOT EXISTS callbacks;
REVOKE ALL ON SCHEMA callbacks FROM PUBLIC;


-- ---------------------------------------------------------------------
-- The kind
-- ---------------------------------------------------------------------

DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint c
               WHERE c.conrelid = 'jobs.jobs'::regclass
                 AND c.conname = 'jobs_kind_check'
                 AND pg_get_constraintdef(c.oid) !~ '''call''')
    THEN
        ALTER TABLE jobs.jobs DROP CONSTRAINT jobs_kind_check;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_constraint c
                   WHERE c.conrelid = 'jobs.jobs'::regclass
                     AND c.conname = 'jobs_kind_check')
    THEN
        ALTER TABLE jobs.jobs ADD CONSTRAINT jobs_kind_check
            CHECK (kind IN ('mail', 'webhook', 'sql', 'call'));
    END IF;
END
$do$;


-- ---------------------------------------------------------------------
-- Rendering a call
-- ---------------------------------------------------------------------

-- application/x-www-form-urlencoded text of a flat object whose values are
-- strings, numbers or booleans (true, false), keys and values
-- percent-encoded but for RFC 3986 unreserved characters, in byte order of
-- the keys:  {"a[0]": "x y", "n": 2}  ->  a%5B0%5D=x%20y&n=2
CREATE OR REPLACE FUNCTION jobs.form_encode(form jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, jobs
AS $$
BEGIN
    IF jsonb_typeof(form) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'call "form" must be an object'
            USING ERRCODE = '22023';
    END IF;

    IF EXISTS (SELECT 1 FROM jsonb_each(form) e
               WHERE e.key = ''
                  OR jsonb_typeof(e.value) NOT IN ('string', 'number',
                                                   'boolean'))
    THEN
        RAISE EXCEPTION 'call "form" needs names and values that are '
                        'strings, numbers or booleans'
            USING ERRCODE = '22023';
    END IF;

    RETURN (SELECT coalesce(string_agg(auth.uri_encode(e.key) || '='
                                       || auth.uri_encode(e.value #>> '{}'),
                                       '&' ORDER BY e.key COLLATE "C"), '')
            FROM jsonb_each(form) e);
END
$$;

-- The request of a call job, checked (22023 on anything the runner could
-- not send).  payload:
--
--   {"service": "stripe",                    a platform_jobs_service
--    "method": "POST",                       GET POST PUT PATCH DELETE
--    "path": "/v1/checkout/sessions",        appended to the service's URL
--    "form": {"mode": "payment", ...}        or "json": any JSON
--    "headers": {"Idempotency-Key": "..."},  optional
--    "callback": "stripe_checkout",          optional: callbacks.<name>
--    "context": {...}}                       optional: for the callback
--
-- path: the path (and query) to send; a "form" of a GET or DELETE is its
-- query string.  headers: "Name: value" lines (LF-separated), the
-- Content-Type of the body first.  body: the form (also empty) or the
-- JSON text; NULL for GET and DELETE.
CREATE OR REPLACE FUNCTION jobs.render_call(payload jsonb,
                                            OUT service text,
                                            OUT method text,
                                            OUT path text,
                                            OUT headers text,
                                            OUT body text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    k      text;
    h      record;
    form   text;
    cb     text;
    lines  text[] := '{}';
BEGIN
    IF jsonb_typeof(payload) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'call payload must be an object'
            USING ERRCODE = '22023';
    END IF;

    FOR k IN SELECT jsonb_object_keys(payload) LOOP
        IF k NOT IN ('service', 'method', 'path', 'form', 'json', 'headers',
                     'callback', 'context')
        THEN
            RAISE EXCEPTION 'unknown field "%" in a call payload', left(k, 64)
                USING ERRCODE = '22023',
                      HINT = 'fields are service, method, path, form, '
                             'json, headers, callback and context';
        END IF;
    END LOOP;

    service := payload ->> 'service';

    IF jsonb_typeof(payload -> 'service') IS DISTINCT FROM 'string'
       OR service !~ '^[a-z0-9_]{1,32}$'
    THEN
        RAISE EXCEPTION 'call needs "service": 1 to 32 characters a-z, 0-9 '
                        'or _ naming a platform_jobs_service'
            USING ERRCODE = '22023';
    END IF;

    method := payload ->> 'method';

    IF jsonb_typeof(payload -> 'method') IS DISTINCT FROM 'string'
       OR method NOT IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')
    THEN
        RAISE EXCEPTION 'call needs "method": GET, POST, PUT, PATCH or DELETE'
            USING ERRCODE = '22023';
    END IF;

    path := payload ->> 'path';

    IF jsonb_typeof(payload -> 'path') IS DISTINCT FROM 'string'
       OR path !~ '^/[\x21-\x7E]*$' OR length(path) > 2000
    THEN
        RAISE EXCEPTION 'call needs "path": up to 2000 printable ASCII '
                        'characters starting with "/", without spaces'
            USING ERRCODE = '22023';
    END IF;

    -- the body, or the query string

    IF payload ? 'form' AND payload ? 'json' THEN
        RAISE EXCEPTION 'a call has "form" or "json", not both'
            USING ERRCODE = '22023';
    END IF;

    IF method IN ('GET', 'DELETE') THEN
        IF payload ? 'json' THEN
            RAISE EXCEPTION 'a % call has no body: give its parameters as '
                            '"form" (the query string)', method
                USING ERRCODE = '22023';
        END IF;

        IF payload ? 'form' THEN
            form := jobs.form_encode(payload -> 'form');

            IF form <> '' THEN
                path := path || CASE WHEN strpos(path, '?') > 0 THEN '&'
                                     ELSE '?' END || form;
            END IF;
        END IF;

    ELSIF payload ? 'json' THEN
        body := (payload -> 'json')::text;
        lines := lines || 'Content-Type: application/json'::text;

    ELSE
        body := CASE WHEN payload ? 'form'
                     THEN jobs.form_encode(payload -> 'form')
                     ELSE ''
                END;
        lines := lines
                 || 'Content-Type: application/x-www-form-urlencoded'::text;
    END IF;

    IF length(path) > 8000 OR octet_length(body) > 1048576 THEN
        RAISE EXCEPTION 'a call''s query string is limited to 8000 '
                        'characters, its body to 1 MB'
            USING ERRCODE = '22023';
    END IF;

    -- headers: a token for a name, printable ASCII for a value; those
    -- the runner or the service decide are refused

    IF payload ? 'headers' THEN
        IF jsonb_typeof(payload -> 'headers') <> 'object'
           OR (SELECT count(*) FROM jsonb_object_keys(payload -> 'headers'))
              > 20
        THEN
            RAISE EXCEPTION 'call "headers" must be an object of at most 20 '
                            'headers'
                USING ERRCODE = '22023';
        END IF;

        FOR h IN SELECT e.key, e.value FROM jsonb_each(payload -> 'headers') e
                 ORDER BY e.key COLLATE "C"
        LOOP
            IF h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,64}$'
               OR lower(h.key) IN ('authorization', 'host', 'content-type',
                                   'content-length', 'transfer-encoding',
                                   'connection', 'expect')
            THEN
                RAISE EXCEPTION 'call header name "%" is not allowed',
                                left(h.key, 64)
                    USING ERRCODE = '22023';
            END IF;

            IF jsonb_typeof(h.value) <> 'string'
               OR (h.value #>> '{}')
                  !~ '^[\x21-\x7E]([\x20-\x7E]*[\x21-\x7E])?$'
               OR length(h.value #>> '{}') > 1000
            THEN
                RAISE EXCEPTION 'call header "%" needs a string of 1 to 1000 '
                                'printable ASCII characters', h.key
                    USING ERRCODE = '22023';
            END IF;

            lines := lines || (h.key || ': ' || (h.value #>> '{}'));
        END LOOP;
    END IF;

    headers := array_to_string(lines, E'\n');

    -- the callback must exist with its signature

    IF payload ? 'callback' THEN
        cb := payload ->> 'callback';

        IF jsonb_typeof(payload -> 'callback') IS DISTINCT FROM 'string'
           OR cb !~ '^[a-z_][a-z0-9_]{0,62}$'
           OR NOT EXISTS (
               SELECT 1 FROM pg_proc p
               WHERE p.pronamespace = 'callbacks'::regnamespace
                 AND p.proname = cb
                 AND p.prokind = 'f'
                 AND p.pronargs = 3
                 AND p.proargtypes[0] = 'jsonb'::regtype
                 AND p.proargtypes[1] = 'int4'::regtype
                 AND p.proargtypes[2] = 'text'::regtype)
        THEN
            RAISE EXCEPTION 'call "callback" must name a function '
                            'callbacks.<name>(context jsonb, status int, '
                            'response text)'
                USING ERRCODE = '22023';
        END IF;
    END IF;
END
$$;


-- ---------------------------------------------------------------------
-- The queue (004's functions, knowing the new kind)
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION jobs.check_payload(kind text, payload jsonb)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    fn  text;
BEGIN
    CASE kind
    WHEN 'mail' THEN
        PERFORM jobs.render_mail(0, payload, 'check@example.com');

    WHEN 'webhook' THEN
        PERFORM jobs.render_webhook(0, payload);

    WHEN 'call' THEN
        PERFORM jobs.render_call(payload);

    WHEN 'sql' THEN
        fn := payload ->> 'function';

        IF fn IS NULL OR fn !~ '^[a-z_][a-z0-9_]{0,62}$'
           OR NOT EXISTS (
               SELECT 1 FROM pg_proc p
               WHERE p.pronamespace = 'maintenance'::regnamespace
                 AND p.proname = fn
                 AND p.prokind = 'f'
                 AND (p.pronargs = 0 AND NOT payload ? 'args'
                      OR p.pronargs = 1 AND payload ? 'args'
                         AND p.proargtypes[0] = 'jsonb'::regtype))
        THEN
            RAISE EXCEPTION 'sql job needs "function": a function of schema '
                            'maintenance taking no arguments (or one jsonb, '
                            'given as "args")'
                USING ERRCODE = '22023';
        END IF;

    ELSE
        RAISE EXCEPTION 'unknown job kind "%"', left(coalesce(kind, ''), 50)
            USING ERRCODE = '22023',
                  HINT = 'kinds are mail, webhook, sql and call';
    END CASE;
END
$$;

-- jobs.claim() as in 004, with two more columns for calls: service and
-- method (url is the path, headers and body as rendered by
-- jobs.render_call).  Its result type changes, so it is made anew.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc p
               WHERE p.oid = to_regprocedure(
                                 'jobs.claim(text, int, int, text)')
                 AND NOT 'method' = ANY (p.proargnames))
    THEN
        DROP FUNCTION jobs.claim(text, int, int, text);
    END IF;
END
$do$;

CREATE OR REPLACE FUNCTION jobs.claim(worker text, n int, lease_seconds int,
                                      sender text DEFAULT NULL)
RETURNS TABLE (id bigint, kind text, attempt int,
               mail_from text, rcpt_to text, message text,
               url text, headers text, body text, resolve text,
               sql_function text, service text, method text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
#variable_conflict use_column
DECLARE
    ids   bigint[];
    more  bigint[];
    j     jobs.jobs;
    w     record;
BEGIN
    IF n IS NULL OR n < 1 OR n > 1000
       OR lease_seconds IS NULL OR lease_seconds < 1
    THEN
        RAISE EXCEPTION 'claim needs 1 <= n <= 1000 and lease_seconds >= 1'
            USING ERRCODE = '22023';
    END IF;

    -- leases that ran out
    SELECT coalesce(array_agg(x.id), '{}') INTO ids
    FROM (SELECT jj.id FROM jobs.jobs jj
          WHERE jj.state = 'running' AND jj.locked_until < now()
          ORDER BY jj.locked_until
          LIMIT n
          FOR UPDATE SKIP LOCKED) x;

    UPDATE jobs.jobs jj
    SET state = 'dead', finished_at = now(), locked_until = NULL,
        last_error = 'lease expired on the last attempt'
                     || coalesce(' (before: ' || left(jj.last_error, 500)
                                 || ')', '')
    WHERE jj.id = ANY (ids) AND jj.attempts >= jj.max_attempts;

    SELECT coalesce(array_agg(jj.id), '{}') INTO ids
    FROM jobs.jobs jj
    WHERE jj.id = ANY (ids) AND jj.state = 'running';

    -- due jobs
    IF cardinality(ids) < n THEN
        SELECT coalesce(array_agg(x.id), '{}') INTO more
        FROM (SELECT jj.id FROM jobs.jobs jj
              WHERE jj.state = 'pending' AND jj.run_at <= now()
              ORDER BY jj.run_at, jj.id
              LIMIT n - cardinality(ids)
              FOR UPDATE SKIP LOCKED) x;

        ids := ids || more;
    END IF;

    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;

    UPDATE jobs.jobs jj
    SET state = 'running', attempts = jj.attempts + 1,
        locked_until = now() + make_interval(secs => lease_seconds),
        locked_by = left(worker, 200)
    WHERE jj.id = ANY (ids);

    FOR j IN SELECT * FROM jobs.jobs jj WHERE jj.id = ANY (ids)
             ORDER BY jj.run_at, jj.id
    LOOP
        id := j.id;
        kind := j.kind;
        attempt := j.attempts;
        mail_from := NULL;
        rcpt_to := NULL;
        message := NULL;
        url := NULL;
        headers := NULL;
        body := NULL;
        resolve := NULL;
        sql_function := NULL;
        service := NULL;
        method := NULL;

        BEGIN
            CASE j.kind
            WHEN 'mail' THEN
                mail_from := sender;
                rcpt_to := array_to_string(jobs.mail_recipients(j.payload),
                                           E'\n');
                message := jobs.render_mail(j.id, j.payload, sender);

            WHEN 'webhook' THEN
                SELECT * INTO w FROM jobs.render_webhook(j.id, j.payload);
                url := w.url;
                headers := w.headers;
                body := w.body;
                resolve := w.resolve;

            WHEN 'call' THEN
                SELECT * INTO w FROM jobs.render_call(j.payload);
                service := w.service;
                method := w.method;
                url := w.path;
                headers := w.headers;
                body := w.body;

            ELSE
                PERFORM jobs.check_payload(j.kind, j.payload);
                sql_function := j.payload ->> 'function';
            END CASE;

        EXCEPTION WHEN OTHERS THEN
            UPDATE jobs.jobs jj
            SET state = 'dead', finished_at = now(), locked_until = NULL,
                last_error = left('cannot be sent: ' || SQLERRM, 2000)
            WHERE jj.id = j.id;

            CONTINUE;
        END;

        RETURN NEXT;
    END LOOP;
END
$$;


-- ---------------------------------------------------------------------
-- The answer
-- ---------------------------------------------------------------------

-- Records the outcome of a call's attempt, in one transaction with its
-- callback (see the head of this file).  status: the HTTP status, 0 when
-- there was no answer (connection, TLS, timeout, a response larger than
-- platform_jobs_response_max_size, a service nginx does not know), then
-- error says why.  The callback gets (context, status, response): the
-- response body as text, or for status 0 the error.  It runs in a
-- subtransaction: when it raises, its changes are undone and the attempt
-- fails.  Returns NULL when the job is done, else the error recorded in
-- last_error ("not claimed" when this attempt of the job is not running:
-- nothing changed).
CREATE OR REPLACE FUNCTION jobs.finish_call(job_id bigint,
                                            claimed_attempt int,
                                            status int,
                                            response text,
                                            error text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    j         jobs.jobs;
    final     boolean;
    failure   text;
    callback  text;
BEGIN
    SELECT * INTO j FROM jobs.jobs jj
    WHERE jj.id = job_id AND jj.kind = 'call' AND jj.state = 'running'
      AND jj.attempts = claimed_attempt
    FOR UPDATE;

    IF NOT FOUND THEN
        RETURN 'not claimed';
    END IF;

    status := coalesce(status, 0);

    -- a final answer: retrying could not change it
    final := status BETWEEN 200 AND 299
             OR status BETWEEN 400 AND 499 AND status NOT IN (408, 429);

    failure := CASE WHEN status = 0
                    THEN left(coalesce(nullif(error, ''), 'no answer'), 1000)
                    WHEN status NOT BETWEEN 200 AND 299
                    THEN 'HTTP status ' || status
               END;

    IF NOT final AND j.attempts < j.max_attempts THEN
        PERFORM jobs.finish(job_id, false, failure, claimed_attempt);
        RETURN failure;
    END IF;

    callback := j.payload ->> 'callback';

    IF callback IS NOT NULL THEN
        BEGIN
            EXECUTE format('SELECT callbacks.%I($1, $2, $3)', callback)
                USING j.payload -> 'context', status,
                      CASE WHEN status = 0 THEN failure ELSE response END;

        EXCEPTION WHEN OTHERS THEN
            failure := left('callback callbacks.' || callback || ' failed: '
                            || SQLERRM, 1000)
                       || coalesce(' (after ' || failure || ')', '');
            final := false;
        END;
    END IF;

    IF NOT final THEN
        -- retried, or dead after the last attempt
        PERFORM jobs.finish(job_id, false, failure, claimed_attempt);
        RETURN failure;
    END IF;

    -- done; a 4xx answer stays visible in last_error
    UPDATE jobs.jobs jj SET last_error = coalesce(failure, jj.last_error)
    WHERE jj.id = job_id;

    PERFORM jobs.finish(job_id, true, NULL, claimed_attempt);

    RETURN NULL;
END
$$;


-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA jobs FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    jobs.claim(text, int, int, text),
    jobs.finish_call(bigint, int, int, text, text)
TO platform_app;
