-- 004_jobs.sql - the jobs outbox: mail, outbound webhooks and SQL
-- maintenance, run by the nginx jobs runner (ngx_platform_jobs.c).
--
-- Applied by tools/migrate in one transaction.  Written to be harmless when
-- run again (IF NOT EXISTS, CREATE OR REPLACE, ON CONFLICT DO NOTHING).
--
-- Life of a job:
--
--   jobs.enqueue()  -> pending (run_at)
--   jobs.claim()    -> running (attempts + 1, locked_until = now + lease)
--   jobs.finish()   -> done | pending again at now + backoff | dead
--   jobs.cancel()   pending -> cancelled;  jobs.reschedule() moves run_at
--
-- A running job whose lease ran out (its worker died) is claimed again:
-- delivery is at least once.  A mail's Message-ID and a webhook's
-- X-Platform-Delivery header are fixed per job so a repeat is recognisable.
--
-- The runner cannot parse JSON, so jobs.claim() returns, per job, the
-- pieces ready to send: a complete RFC 5322 message and its envelope for
-- mail, the URL, headers (signature included) and body for a webhook, the
-- function name for SQL maintenance.
--
-- Every function that touches the tables is SECURITY DEFINER with a fixed
-- search_path: platform_app (nginx, and the api functions it calls) may
-- execute them but has no privileges on the tables themselves.

CREATE SCHEMA IF NOT EXISTS jobs;

-- Functions that SQL jobs may run: maintenance.<name>() or
-- maintenance.<name>(args jsonb).  Only migrations create functions here.
CREATE SCHEMA IF NOT EXISTS maintenance;

-- HMAC-SHA256 for webhook signatures.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

GRANT USAGE ON SCHEMA jobs TO platform_app;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS jobs.jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('mail', 'webhook', 'sql')),
    key           text CHECK (key <> '' AND length(key) <= 200),
    payload       jsonb NOT NULL,
    run_at        timestamptz NOT NULL DEFAULT now(),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'done', 'dead',
                                   'cancelled')),
    attempts      int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  int NOT NULL DEFAULT 8
                  CHECK (max_attempts BETWEEN 1 AND 100),
    last_error    text,
    locked_until  timestamptz,
    locked_by     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

-- A key names a job while it is not finished: a booking's reminder can be
-- cancelled or moved by key, and enqueueing it twice gives one job.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key_active
    ON jobs.jobs (key) WHERE state IN ('pending', 'running');

-- What jobs.claim() and jobs.stats() scan.
CREATE INDEX IF NOT EXISTS jobs_due
    ON jobs.jobs (run_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_leased
    ON jobs.jobs (locked_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_dead
    ON jobs.jobs (finished_at) WHERE state = 'dead';

-- Mail templates: {{name}} is replaced by vars->>'name' (HTML-escaped in
-- the html part).  html may be NULL (then the mail is text only).
CREATE TABLE IF NOT EXISTS jobs.mail_templates (
    name     text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,64}$'),
    subject  text NOT NULL,
    text     text NOT NULL,
    html     text
);

INSERT INTO jobs.mail_templates (name, subject, text, html)
VALUES (
    'magic_link',
    'Your sign-in link',
    E'Hello,\n\n'
    || E'use this link to sign in:\n\n'
    || E'{{link}}\n\n'
    || E'It works once and expires in {{expires_minutes}} minutes.  If you '
    || E'did not ask to sign in, ignore this message: nothing happens '
    || E'without the link.\n',
    E'<!DOCTYPE html>\n'
    || E'<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello,</p>\n'
    || E'<p>use this link to sign in:</p>\n'
    || E'<p><a href="{{link}}">Sign in</a></p>\n'
    || E'<p>It works once and expires in {{expires_minutes}} minutes.  If '
    || E'you did not ask to sign in, ignore this message: nothing happens '
    || E'without the link.</p>\n'
    || E'</body></html>\n'
)
ON CONFLICT (name) DO NOTHING;

-- Outbound webhook endpoints.  A webhook job names its target; the body is
-- signed with the target's secret.  address: where to connect when url
-- names a host (nginx workers never resolve names), e.g. '203.0.113.7'.
CREATE TABLE IF NOT EXISTS jobs.webhook_targets (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    url         text NOT NULL
                CHECK (url ~ '^https?://[^/?#@\s]+(/[^\s]*)?$'
                       AND length(url) <= 2000),
    secret      text NOT NULL CHECK (length(secret) >= 16),
    address     inet,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Retry policy: a failed attempt n (1, 2, ...) is retried after
-- least(backoff_base_seconds * 2^n, backoff_max_seconds).  One row.
CREATE TABLE IF NOT EXISTS jobs.settings (
    one                   boolean PRIMARY KEY DEFAULT true CHECK (one),
    backoff_base_seconds  double precision NOT NULL DEFAULT 1
                          CHECK (backoff_base_seconds > 0),
    backoff_max_seconds   double precision NOT NULL DEFAULT 3600
                          CHECK (backoff_max_seconds > 0),
    from_name             text CHECK (from_name !~ '[\x01-\x1F\x7F]'),
    -- in every Message-ID (<job-<id>.<instance>@<sender's domain>>), so
    -- two databases sending as one domain never repeat each other's
    instance              text NOT NULL
                          DEFAULT substr(md5(random()::text), 1, 10)
                          CHECK (instance ~ '^[A-Za-z0-9]{1,32}$')
);

INSERT INTO jobs.settings (one) VALUES (true) ON CONFLICT DO NOTHING;


-- ---------------------------------------------------------------------
-- Rendering helpers (pure functions)
-- ---------------------------------------------------------------------

-- An addr-spec we are willing to put in an envelope and a header: ASCII,
-- no quoting, no comments, no spaces or control characters.
CREATE OR REPLACE FUNCTION jobs.valid_address(address text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE STRICT
AS $$
    SELECT length(address) <= 254
           AND address ~ ('^[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]{1,64}'
                          '@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
                          '(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$');
$$;

CREATE OR REPLACE FUNCTION jobs.html_escape(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
AS $$
    SELECT replace(replace(replace(replace(replace(s,
               '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'),
               '''', '&#39;');
$$;

-- Replaces each {{name}} in tpl by vars->>'name' (a JSON string, number or
-- boolean), HTML-escaped when html is true.  A missing variable is an
-- error (22023): a mail with a hole in it is not sent.
CREATE OR REPLACE FUNCTION jobs.render(tpl text, vars jsonb, html boolean)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
AS $$
DECLARE
    res   text := '';
    rest  text := tpl;
    i     int;
    j     int;
    name  text;
    val   text;
BEGIN
    IF tpl IS NULL THEN
        RETURN NULL;
    END IF;

    LOOP
        i := strpos(rest, '{{');
        EXIT WHEN i = 0;

        j := strpos(substr(rest, i + 2), '}}');
        EXIT WHEN j = 0;

        name := btrim(substr(rest, i + 2, j - 1));

        IF vars IS NULL OR NOT vars ? name
           OR jsonb_typeof(vars -> name) NOT IN ('string', 'number', 'boolean')
        THEN
            RAISE EXCEPTION 'template variable "%" is missing', name
                USING ERRCODE = '22023';
        END IF;

        val := vars ->> name;

        IF html THEN
            val := jobs.html_escape(val);
        END IF;

        res := res || substr(rest, 1, i - 1) || val;
        rest := substr(rest, i + 2 + j + 1);
    END LOOP;

    RETURN res || rest;
END
$$;

-- A header value: control characters become spaces; text that is not
-- plain printable ASCII is sent as RFC 2047 encoded words (UTF-8, base64,
-- at most 75 characters each, folded onto continuation lines).
CREATE OR REPLACE FUNCTION jobs.header_text(s text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT
AS $$
DECLARE
    clean  text;
    words  text[] := '{}';
    chunk  text := '';
    ch     text;
BEGIN
    clean := btrim(regexp_replace(s, '[\x01-\x1F\x7F]+', ' ', 'g'));

    IF clean ~ '^[\x20-\x7E]*$' AND strpos(clean, '=?') = 0 THEN
        RETURN clean;
    END IF;

    -- 45 bytes of UTF-8 are 60 characters of base64: 72 with the wrapper.
    FOREACH ch IN ARRAY regexp_split_to_array(clean, '') LOOP
        IF octet_length(chunk) + octet_length(ch) > 45 THEN
            words := words || ('=?UTF-8?B?'
                               || encode(convert_to(chunk, 'UTF8'), 'base64')
                               || '?=');
            chunk := '';
        END IF;

        chunk := chunk || ch;
    END LOOP;

    IF chunk <> '' THEN
        words := words || ('=?UTF-8?B?'
                           || encode(convert_to(chunk, 'UTF8'), 'base64')
                           || '?=');
    END IF;

    RETURN array_to_string(words, E'\r\n ');
END
$$;

-- A display name for From: a quoted string, or encoded words.
CREATE OR REPLACE FUNCTION jobs.header_name(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
AS $$
    SELECT CASE
           WHEN t ~ '^[\x20-\x7E]*$' AND strpos(t, '=?') = 0
           THEN '"' || replace(replace(t, '\', '\\'), '"', '\"') || '"'
           ELSE jobs.header_text(t)
           END
    FROM (SELECT btrim(regexp_replace(s, '[\x01-\x1F\x7F]+', ' ', 'g'))
                 AS t) n;
$$;

-- Text for a MIME part: CRLF line ends, base64 in lines of 76.
CREATE OR REPLACE FUNCTION jobs.mime_base64(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
AS $$
    SELECT replace(encode(convert_to(
               replace(replace(s, E'\r\n', E'\n'), E'\n', E'\r\n'), 'UTF8'),
               'base64'), E'\n', E'\r\n');
$$;

-- The recipients of a mail payload: "to" is an address or an array of
-- them (1 to 50).  Raises 22023 for anything else.
CREATE OR REPLACE FUNCTION jobs.mail_recipients(payload jsonb)
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
AS $$
DECLARE
    rcpt  text[];
    a     text;
BEGIN
    CASE jsonb_typeof(payload -> 'to')
    WHEN 'string' THEN
        rcpt := ARRAY[payload ->> 'to'];
    WHEN 'array' THEN
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(payload -> 'to') e
                   WHERE jsonb_typeof(e) <> 'string')
        THEN
            RAISE EXCEPTION 'mail "to" must hold addresses'
                USING ERRCODE = '22023';
        END IF;

        rcpt := ARRAY(SELECT jsonb_array_elements_text(payload -> 'to'));
    ELSE
        RAISE EXCEPTION 'mail needs "to"' USING ERRCODE = '22023';
    END CASE;

    IF cardinality(rcpt) < 1 OR cardinality(rcpt) > 50 THEN
        RAISE EXCEPTION 'mail needs 1 to 50 recipients'
            USING ERRCODE = '22023';
    END IF;

    FOREACH a IN ARRAY rcpt LOOP
        IF NOT jobs.valid_address(a) THEN
            RAISE EXCEPTION 'invalid mail address "%"', left(a, 100)
                USING ERRCODE = '22023';
        END IF;
    END LOOP;

    RETURN rcpt;
END
$$;

-- The complete RFC 5322 message of a mail job.  payload:
--   {"to": "a@example.com" | [...], "template": "magic_link", "vars": {...}}
-- or, without a template, {"to": ..., "subject": ..., "text": ...,
-- "html": ...}; optional "from_name", "reply_to".  mail_from is the
-- configured sender (platform_smtp_from).
CREATE OR REPLACE FUNCTION jobs.render_mail(job_id bigint, payload jsonb,
                                            mail_from text,
                                            at timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    rcpt      text[];
    tpl       jobs.mail_templates;
    vars      jsonb := payload -> 'vars';
    subject   text;
    body      text;
    html      text;
    from_name text;
    reply_to  text;
    domain    text;
    instance  text;
    boundary  text;
    head      text;
BEGIN
    IF jsonb_typeof(payload) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'mail payload must be an object'
            USING ERRCODE = '22023';
    END IF;

    IF mail_from IS NULL OR NOT jobs.valid_address(mail_from) THEN
        RAISE EXCEPTION 'invalid sender address "%"',
                        left(coalesce(mail_from, ''), 100)
            USING ERRCODE = '22023';
    END IF;

    rcpt := jobs.mail_recipients(payload);

    IF vars IS NOT NULL AND jsonb_typeof(vars) <> 'object' THEN
        RAISE EXCEPTION 'mail "vars" must be an object'
            USING ERRCODE = '22023';
    END IF;

    IF payload ? 'template' THEN
        SELECT * INTO tpl FROM jobs.mail_templates t
        WHERE t.name = payload ->> 'template';

        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown mail template "%"',
                            left(payload ->> 'template', 100)
                USING ERRCODE = '22023';
        END IF;

        subject := jobs.render(tpl.subject, vars, false);
        body := jobs.render(tpl.text, vars, false);
        html := jobs.render(tpl.html, vars, true);

    ELSE
        subject := payload ->> 'subject';
        body := payload ->> 'text';
        html := payload ->> 'html';

        IF subject IS NULL OR (body IS NULL AND html IS NULL) THEN
            RAISE EXCEPTION 'mail needs "template", or "subject" and '
                            '"text" or "html"'
                USING ERRCODE = '22023';
        END IF;
    END IF;

    subject := left(subject, 900);
    body := coalesce(body, '');

    SELECT s.from_name, s.instance INTO from_name, instance
    FROM jobs.settings s;

    from_name := coalesce(payload ->> 'from_name', from_name);
    reply_to := payload ->> 'reply_to';

    IF reply_to IS NOT NULL AND NOT jobs.valid_address(reply_to) THEN
        RAISE EXCEPTION 'invalid reply_to address' USING ERRCODE = '22023';
    END IF;

    domain := split_part(mail_from, '@', 2);

    head := 'Date: '
            || to_char(at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS')
            || E' +0000\r\n'
            || 'From: '
            || CASE WHEN from_name IS NOT NULL AND btrim(from_name) <> ''
                    THEN jobs.header_name(from_name) || ' <' || mail_from
                         || '>'
                    ELSE mail_from
               END || E'\r\n'
            || 'To: ' || array_to_string(rcpt, E',\r\n ') || E'\r\n'
            || CASE WHEN reply_to IS NOT NULL
                    THEN 'Reply-To: ' || reply_to || E'\r\n'
                    ELSE ''
               END
            || 'Subject: ' || jobs.header_text(subject) || E'\r\n'
            || 'Message-ID: <job-' || job_id || '.' || instance || '@' || domain
            || E'>\r\n'
            || E'MIME-Version: 1.0\r\n'
            || E'Auto-Submitted: auto-generated\r\n';

    IF html IS NULL THEN
        RETURN head
               || E'Content-Type: text/plain; charset=UTF-8\r\n'
               || E'Content-Transfer-Encoding: base64\r\n'
               || E'\r\n'
               || jobs.mime_base64(body) || E'\r\n';
    END IF;

    -- "=_" never occurs in base64 text, so the boundary cannot either.
    boundary := '=_platform_job_' || job_id;

    RETURN head
           || 'Content-Type: multipart/alternative; boundary="' || boundary
           || E'"\r\n'
           || E'\r\n'
           || '--' || boundary || E'\r\n'
           || E'Content-Type: text/plain; charset=UTF-8\r\n'
           || E'Content-Transfer-Encoding: base64\r\n'
           || E'\r\n'
           || jobs.mime_base64(body) || E'\r\n'
           || '--' || boundary || E'\r\n'
           || E'Content-Type: text/html; charset=UTF-8\r\n'
           || E'Content-Transfer-Encoding: base64\r\n'
           || E'\r\n'
           || jobs.mime_base64(html) || E'\r\n'
           || '--' || boundary || E'--\r\n';
END
$$;

-- HMAC-SHA256 in hex.  pgcrypto may live in any schema (another migration
-- may have created it first): the wrapper is made with its qualified name.
DO $do$
DECLARE
    s text;
BEGIN
    SELECT n.nspname INTO s
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pgcrypto';

    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION jobs.hmac_sha256_hex(data text, key text)
        RETURNS text
        LANGUAGE sql
        IMMUTABLE STRICT
        AS $b$
            SELECT pg_catalog.encode(%I.hmac(pg_catalog.convert_to(data,
                                                                'UTF8'),
                                             pg_catalog.convert_to(key,
                                                                'UTF8'),
                                             'sha256'), 'hex');
        $b$
    $f$, s);
END
$do$;

-- The pieces of a webhook job.  payload: {"target": "<name>", "body": any
-- JSON (sent as is; a JSON string is sent as its text), "content_type"?}.
-- headers: one "Name: value" per line (LF-separated), the signature
-- among them:  X-Platform-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
-- "<t>.<body>" with the target's secret>.  resolve: "host:port:address"
-- for libcurl when the URL names a host, else NULL.
CREATE OR REPLACE FUNCTION jobs.render_webhook(job_id bigint, payload jsonb,
                                               at timestamptz DEFAULT now(),
                                               OUT url text,
                                               OUT headers text,
                                               OUT body text,
                                               OUT resolve text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    target  jobs.webhook_targets;
    ts      text;
    ctype   text;
    m       text[];
BEGIN
    IF jsonb_typeof(payload) IS DISTINCT FROM 'object'
       OR jsonb_typeof(payload -> 'target') IS DISTINCT FROM 'string'
       OR NOT payload ? 'body'
    THEN
        RAISE EXCEPTION 'webhook payload needs "target" and "body"'
            USING ERRCODE = '22023';
    END IF;

    SELECT * INTO target FROM jobs.webhook_targets w
    WHERE w.name = payload ->> 'target';

    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown webhook target "%"',
                        left(payload ->> 'target', 100)
            USING ERRCODE = '22023';
    END IF;

    ctype := coalesce(payload ->> 'content_type', 'application/json');

    IF ctype !~ '^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(; ?[ -~]*)?$'
       OR length(ctype) > 200
    THEN
        RAISE EXCEPTION 'invalid webhook content_type' USING ERRCODE = '22023';
    END IF;

    body := CASE WHEN jsonb_typeof(payload -> 'body') = 'string'
                 THEN payload ->> 'body'
                 ELSE (payload -> 'body')::text
            END;

    ts := extract(epoch FROM at)::bigint::text;
    url := target.url;

    headers := 'Content-Type: ' || ctype || E'\n'
               || 'X-Platform-Delivery: ' || job_id || E'\n'
               || 'X-Platform-Signature: t=' || ts || ',v1='
               || jobs.hmac_sha256_hex(ts || '.' || body, target.secret);

    -- scheme, host (a name, an IPv4 address or [IPv6]), port
    m := regexp_match(url, '^(https?)://([^/:?#\[\]]+|\[[0-9A-Fa-f:.]+\])'
                           '(?::([0-9]{1,5}))?');

    IF m IS NULL THEN
        RAISE EXCEPTION 'invalid webhook url' USING ERRCODE = '22023';
    END IF;

    resolve := NULL;

    IF target.address IS NOT NULL
       AND m[2] !~ '^\[' AND m[2] !~ '^[0-9.]+$'
    THEN
        resolve := m[2] || ':'
                   || coalesce(m[3], CASE m[1] WHEN 'https' THEN '443'
                                               ELSE '80' END)
                   || ':'
                   || CASE WHEN family(target.address) = 6
                           THEN '[' || host(target.address) || ']'
                           ELSE host(target.address)
                      END;
    END IF;
END
$$;


-- ---------------------------------------------------------------------
-- The queue
-- ---------------------------------------------------------------------

-- Checks a payload for its kind (22023 on anything the runner could not
-- send), so mistakes show at enqueue time, not as dead jobs.
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
                  HINT = 'kinds are mail, webhook and sql';
    END CASE;
END
$$;

-- A new job; its id.  With a key that names a job not yet finished, that
-- job's id is returned and nothing changes (use jobs.reschedule to move
-- it): enqueueing is idempotent per key.
CREATE OR REPLACE FUNCTION jobs.enqueue(kind text, payload jsonb,
                                        run_at timestamptz DEFAULT now(),
                                        key text DEFAULT NULL,
                                        max_attempts int DEFAULT 8)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
#variable_conflict use_column
DECLARE
    new_id  bigint;
BEGIN
    PERFORM jobs.check_payload(enqueue.kind, enqueue.payload);

    IF enqueue.max_attempts IS NULL OR enqueue.max_attempts < 1
       OR enqueue.max_attempts > 100
    THEN
        RAISE EXCEPTION 'max_attempts must be from 1 to 100'
            USING ERRCODE = '22023';
    END IF;

    IF enqueue.key = '' OR length(enqueue.key) > 200 THEN
        RAISE EXCEPTION 'a job key has 1 to 200 characters'
            USING ERRCODE = '22023';
    END IF;

    INSERT INTO jobs.jobs AS j (kind, payload, run_at, key, max_attempts)
    VALUES (enqueue.kind, enqueue.payload, coalesce(enqueue.run_at, now()),
            enqueue.key, enqueue.max_attempts)
    ON CONFLICT (key) WHERE state IN ('pending', 'running') DO NOTHING
    RETURNING j.id INTO new_id;

    IF new_id IS NULL THEN
        SELECT j.id INTO new_id FROM jobs.jobs j
        WHERE j.key = enqueue.key AND j.state IN ('pending', 'running');
    END IF;

    RETURN new_id;
END
$$;

-- Cancels the pending job with this key; false when there is none (a job
-- already running or finished cannot be cancelled).
CREATE OR REPLACE FUNCTION jobs.cancel(key text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
BEGIN
    UPDATE jobs.jobs j
    SET state = 'cancelled', finished_at = now()
    WHERE j.key = cancel.key AND j.state = 'pending';

    RETURN FOUND;
END
$$;

-- Moves the pending job with this key to run_at; false when there is none.
CREATE OR REPLACE FUNCTION jobs.reschedule(key text, run_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
BEGIN
    IF reschedule.run_at IS NULL THEN
        RAISE EXCEPTION 'run_at is required' USING ERRCODE = '22023';
    END IF;

    UPDATE jobs.jobs j
    SET run_at = reschedule.run_at
    WHERE j.key = reschedule.key AND j.state = 'pending';

    RETURN FOUND;
END
$$;

-- A dead job (see jobs.jobs where state = 'dead', last_error) is tried
-- again from scratch; false when the job is not dead.
CREATE OR REPLACE FUNCTION jobs.retry(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
BEGIN
    UPDATE jobs.jobs j
    SET state = 'pending', attempts = 0, run_at = now(), finished_at = NULL
    WHERE j.id = job_id AND j.state = 'dead';

    RETURN FOUND;
END
$$;

-- Claims up to n jobs for a worker: due pending jobs and running jobs
-- whose lease ran out (their worker died), oldest first; several runners
-- share the queue (FOR UPDATE SKIP LOCKED).  Each becomes running with
-- attempts + 1 and locked_until = now + lease_seconds, and is returned
-- ready to send (see the header of this file).  A job that cannot be
-- rendered is dead at once (retrying cannot help), and so is a job whose
-- lease ran out on its last attempt.
CREATE OR REPLACE FUNCTION jobs.claim(worker text, n int, lease_seconds int,
                                      sender text DEFAULT NULL)
RETURNS TABLE (id bigint, kind text, attempt int,
               mail_from text, rcpt_to text, message text,
               url text, headers text, body text, resolve text,
               sql_function text)
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

-- Records the outcome of an attempt: done; or, on failure, pending again
-- after the backoff (see jobs.settings), or dead after max_attempts.
-- locked_by keeps the runner of the last attempt.
-- With claimed_attempt, only that attempt of a running job is finished (a
-- late answer for a job claimed again by another worker changes nothing).
-- Returns the new state, or NULL when nothing was changed.
CREATE OR REPLACE FUNCTION jobs.finish(job_id bigint, ok boolean,
                                       error text DEFAULT NULL,
                                       claimed_attempt int DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    s         jobs.settings;
    new_state text;
BEGIN
    SELECT * INTO s FROM jobs.settings;

    UPDATE jobs.jobs j
    SET state = CASE WHEN ok THEN 'done'
                     WHEN j.attempts >= j.max_attempts THEN 'dead'
                     ELSE 'pending'
                END,
        run_at = CASE WHEN ok OR j.attempts >= j.max_attempts THEN j.run_at
                      ELSE now() + make_interval(secs => least(
                               coalesce(s.backoff_base_seconds, 1)
                                   * power(2, least(j.attempts, 40)),
                               coalesce(s.backoff_max_seconds, 3600)))
                 END,
        last_error = CASE WHEN ok THEN j.last_error
                          ELSE left(coalesce(error, 'failed'), 2000)
                     END,
        finished_at = CASE WHEN ok OR j.attempts >= j.max_attempts
                           THEN now()
                      END,
        locked_until = NULL
    WHERE j.id = job_id AND j.state = 'running'
      AND (claimed_attempt IS NULL OR j.attempts = claimed_attempt)
    RETURNING j.state INTO new_state;

    RETURN new_state;
END
$$;

-- Runs a claimed SQL job: maintenance.<function>() (or (args jsonb)) in a
-- subtransaction, and records the outcome in the same transaction, so a
-- maintenance run is done exactly when its effects are committed.  Returns
-- NULL on success, else the error.  Bounded by the pool's query_timeout.
CREATE OR REPLACE FUNCTION jobs.run_sql(job_id bigint, claimed_attempt int)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
DECLARE
    j    jobs.jobs;
    err  text;
BEGIN
    SELECT * INTO j FROM jobs.jobs jj
    WHERE jj.id = job_id AND jj.kind = 'sql' AND jj.state = 'running'
      AND jj.attempts = claimed_attempt
    FOR UPDATE;

    IF NOT FOUND THEN
        RETURN 'not claimed';
    END IF;

    BEGIN
        PERFORM jobs.check_payload(j.kind, j.payload);

        IF j.payload ? 'args' THEN
            EXECUTE format('SELECT maintenance.%I($1)',
                           j.payload ->> 'function')
                USING j.payload -> 'args';
        ELSE
            EXECUTE format('SELECT maintenance.%I()',
                           j.payload ->> 'function');
        END IF;

    EXCEPTION WHEN OTHERS THEN
        err := SQLERRM;
    END;

    PERFORM jobs.finish(job_id, err IS NULL, err, claimed_attempt);

    RETURN err;
END
$$;

-- The queue at a glance (the runner polls it for platform_status):
-- due pending jobs, running jobs, pending jobs that failed before, dead
-- jobs, and how long the oldest due job has waited.
CREATE OR REPLACE FUNCTION jobs.stats(OUT due bigint, OUT running bigint,
                                      OUT retrying bigint, OUT dead bigint,
                                      OUT oldest_due_age_seconds
                                          double precision)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, jobs
AS $$
    SELECT (SELECT count(*) FROM jobs.jobs j
            WHERE j.state = 'pending' AND j.run_at <= now()),
           (SELECT count(*) FROM jobs.jobs j WHERE j.state = 'running'),
           (SELECT count(*) FROM jobs.jobs j
            WHERE j.state = 'pending' AND j.attempts > 0),
           (SELECT count(*) FROM jobs.jobs j WHERE j.state = 'dead'),
           coalesce((SELECT extract(epoch FROM now() - min(j.run_at))
                     FROM jobs.jobs j
                     WHERE j.state = 'pending' AND j.run_at <= now()),
                    0)::double precision;
$$;


-- ---------------------------------------------------------------------
-- Privileges: nginx (platform_app) calls these; the tables stay closed.
-- ---------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA jobs FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    jobs.enqueue(text, jsonb, timestamptz, text, int),
    jobs.cancel(text),
    jobs.reschedule(text, timestamptz),
    jobs.retry(bigint),
    jobs.claim(text, int, int, text),
    jobs.finish(bigint, boolean, text, int),
    jobs.run_sql(bigint, int),
    jobs.stats()
TO platform_app;
