-- 003_auth.sql - users, memberships, magic links, consent, rate limits,
-- TOTP and session claims (docs/auth-and-jobs.md).
--
-- Schema "auth" holds the tables.  nginx (platform_app) has no rights on
-- them: it reaches them only through the api.* and platform.* functions
-- below, which are SECURITY DEFINER with a fixed search_path.  SQL never
-- sees session key material: a function only states the claims of the
-- session to issue (the setting response.session), the module seals them.
--
-- Errors: RAISE ... USING ERRCODE = 'PTnnn' answers status nnn with the
-- message, 22023 answers 400.  Answers that must carry headers (429 with
-- Retry-After) or must keep what the function wrote (a failed TOTP attempt
-- counts towards the limit) are returned normally with platform.set_status:
-- an exception rolls back the transaction-local settings and the writes.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA IF NOT EXISTS auth;

GRANT USAGE ON SCHEMA auth TO platform_app;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS auth.users (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email            text NOT NULL
                     CONSTRAINT users_email_key UNIQUE
                     CONSTRAINT users_email_check
                     CHECK (email = lower(email) AND length(email) <= 254),
    display_name     text CONSTRAINT users_display_name_check
                          CHECK (length(display_name) <= 200),
    -- Bumped by logout / sign out everywhere: cookies with a lower epoch
    -- are refused by the module.
    epoch            int NOT NULL DEFAULT 0,
    epoch_changed_at timestamptz,
    -- TOTP (RFC 6238, HMAC-SHA1, 6 digits, 30 s): the 20-byte key, whether
    -- a code was verified since enrolment, the last step accepted.
    totp_secret      bytea CONSTRAINT users_totp_secret_check
                           CHECK (length(totp_secret) = 20),
    totp_enabled     boolean NOT NULL DEFAULT false,
    totp_last_step   bigint,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- platform.session_epochs walks users whose epoch changed recently.
CREATE INDEX IF NOT EXISTS users_epoch_changed_at_idx
    ON auth.users (epoch_changed_at)
    WHERE epoch_changed_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS auth.memberships (
    user_id    bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    role       text NOT NULL
               CONSTRAINT memberships_role_check
               CHECK (role IN ('organiser', 'owner', 'staff', 'admin')),
    org_id     bigint,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT memberships_key UNIQUE NULLS NOT DISTINCT (user_id, role, org_id),
    CONSTRAINT memberships_admin_check CHECK (role <> 'admin' OR org_id IS NULL)
);

CREATE TABLE IF NOT EXISTS auth.magic_links (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- sha256 of the token; the token itself is only in the mail.
    token_hash      bytea NOT NULL
                    CONSTRAINT magic_links_token_hash_key UNIQUE
                    CONSTRAINT magic_links_token_hash_check
                    CHECK (length(token_hash) = 32),
    email           text NOT NULL,
    consent_version text,
    return_path     text,
    client_ip       inet,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);

CREATE INDEX IF NOT EXISTS magic_links_expires_at_idx
    ON auth.magic_links (expires_at);
CREATE INDEX IF NOT EXISTS magic_links_email_idx
    ON auth.magic_links (email) WHERE used_at IS NULL;

CREATE TABLE IF NOT EXISTS auth.consents (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    text_version text NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    client_ip    inet
);

CREATE INDEX IF NOT EXISTS consents_user_id_idx ON auth.consents (user_id);

-- Sessions issued by auth_confirm, for the account page.  The cookie is the
-- session; a row is valid while its epoch is the user's and it has not
-- expired.
CREATE TABLE IF NOT EXISTS auth.sessions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    client_ip  inet,
    user_agent text,
    epoch      int NOT NULL
);

CREATE INDEX IF NOT EXISTS sessions_user_id_idx
    ON auth.sessions (user_id, created_at);

-- One row per counted event: kind 'link_email', 'link_ip', 'totp'.
CREATE TABLE IF NOT EXISTS auth.rate_events (
    kind text NOT NULL,
    key  text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS rate_events_kind_key_at_idx
    ON auth.rate_events (kind, key, at);


-- ---------------------------------------------------------------------
-- Helpers (schema auth; not callable by nginx except auth.purge)
-- ---------------------------------------------------------------------

-- base64url (no padding) to bytes; NULL for anything else.
CREATE OR REPLACE FUNCTION auth.b64url_decode(s text)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s ~ '^[A-Za-z0-9_-]*$' AND length(s) % 4 <> 1 THEN
               decode(translate(s, '-_', '+/')
                      || repeat('=', (4 - length(s) % 4) % 4), 'base64')
           END;
$$;

-- RFC 4648 base32, upper case, without padding.
CREATE OR REPLACE FUNCTION auth.base32_encode(data bytea)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alphabet constant text := 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
    out      text := '';
    buf      bigint := 0;
    bits     int := 0;
BEGIN
    FOR i IN 0 .. length(data) - 1 LOOP
        buf := (buf << 8) | get_byte(data, i);
        bits := bits + 8;
        WHILE bits >= 5 LOOP
            out := out || substr(alphabet, ((buf >> (bits - 5)) & 31)::int + 1, 1);
            bits := bits - 5;
        END LOOP;
        buf := buf & ((1::bigint << bits) - 1);
    END LOOP;

    IF bits > 0 THEN
        out := out || substr(alphabet, ((buf << (5 - bits)) & 31)::int + 1, 1);
    END IF;

    RETURN out;
END
$$;

-- Percent-encoding of everything but RFC 3986 unreserved characters.
CREATE OR REPLACE FUNCTION auth.uri_encode(s text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(
               CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90
                         OR b BETWEEN 97 AND 122 OR b IN (45, 46, 95, 126)
                    THEN chr(b)
                    ELSE '%' || upper(lpad(to_hex(b), 2, '0'))
               END, '' ORDER BY i), '')
    FROM (SELECT i, get_byte(convert_to(s, 'UTF8'), i) AS b
          FROM generate_series(0, octet_length(convert_to(s, 'UTF8')) - 1)
               AS i) AS t;
$$;

-- RFC 4226 HOTP value of one TOTP time step (RFC 6238: step = unix time
-- / 30), HMAC-SHA1, as a zero-padded decimal string of `digits` digits.
CREATE OR REPLACE FUNCTION auth.totp_code(key bytea, step bigint,
                                          digits int DEFAULT 6)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    h   bytea := hmac(int8send(step), key, 'sha1');
    o   int := get_byte(h, 19) & 15;
    bin bigint;
BEGIN
    IF digits NOT BETWEEN 6 AND 9 THEN
        RAISE EXCEPTION 'TOTP codes have 6 to 9 digits' USING ERRCODE = '22023';
    END IF;

    bin := ((get_byte(h, o) & 127)::bigint << 24)
         | (get_byte(h, o + 1)::bigint << 16)
         | (get_byte(h, o + 2)::bigint << 8)
         | get_byte(h, o + 3)::bigint;

    RETURN lpad((bin % power(10, digits)::bigint)::text, digits, '0');
END
$$;

-- Rate limits: a sliding window of counted events per (kind, key).
-- rate_retry_after: NULL while fewer than `lim` events fall in the last
-- `window_seconds`, otherwise the seconds until one leaves the window.
-- The caller then adds its own event with rate_hit when it goes ahead.  A
-- transaction-level advisory lock per (kind, key) keeps two concurrent
-- requests from both passing the last free slot.
CREATE OR REPLACE FUNCTION auth.rate_retry_after(kind text, key text, lim int,
                                                 window_seconds int)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    edge timestamptz;
BEGIN
    IF key IS NULL OR lim IS NULL THEN
        RETURN NULL;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended(kind || ':' || key, 3));

    -- The lim-th newest event in the window: once it is out, one fits.
    SELECT e.at INTO edge
    FROM auth.rate_events AS e
    WHERE e.kind = rate_retry_after.kind
      AND e.key = rate_retry_after.key
      AND e.at > now() - window_seconds * interval '1 second'
    ORDER BY e.at DESC
    OFFSET greatest(lim, 1) - 1
    LIMIT 1;

    IF lim > 0 AND edge IS NULL THEN
        RETURN NULL;
    END IF;

    RETURN greatest(1, ceil(extract(epoch FROM
               coalesce(edge, now()) + window_seconds * interval '1 second'
               - now()))::int);
END
$$;

CREATE OR REPLACE FUNCTION auth.rate_hit(kind text, key text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO auth.rate_events (kind, key)
    SELECT rate_hit.kind, rate_hit.key
    WHERE rate_hit.key IS NOT NULL;
$$;

-- The 429 answer: status, Retry-After and a JSON error body, returned
-- normally so the settings survive.
CREATE OR REPLACE FUNCTION auth.too_many(retry_after int, message text)
RETURNS json
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM platform.set_status(429);
    PERFORM platform.set_header('Retry-After', retry_after::text);
    RETURN json_build_object('error', json_build_object(
               'code', 'rate_limited',
               'message', message,
               'retry_after', retry_after));
END
$$;

-- "in 1 minute", "in 14 minutes", "in 30 seconds"
CREATE OR REPLACE FUNCTION auth.wait_words(seconds int)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
               WHEN seconds < 60 THEN
                   seconds || CASE WHEN seconds = 1 THEN ' second'
                                   ELSE ' seconds' END
               ELSE
                   ceil(seconds / 60.0)::int
                   || CASE WHEN ceil(seconds / 60.0) = 1 THEN ' minute'
                           ELSE ' minutes' END
           END;
$$;

-- Text to inet, NULL when it is not an address (e.g. "unix:").
CREATE OR REPLACE FUNCTION auth.to_inet(s text)
RETURNS inet
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF s IS NULL OR s !~ '^[0-9A-Fa-f.:]{2,45}$' THEN
        RETURN NULL;
    END IF;
    RETURN s::inet;
EXCEPTION
    WHEN invalid_text_representation THEN
        RETURN NULL;
END
$$;

-- The roles a user's session carries: participant, then each membership as
-- "role:org" (or "role" without an organisation), ordered.
CREATE OR REPLACE FUNCTION auth.roles_of(user_id bigint)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['participant']
           || coalesce(array_agg(m.role || coalesce(':' || m.org_id, '')
                                 ORDER BY m.role, m.org_id NULLS FIRST),
                       '{}')
    FROM auth.memberships AS m
    WHERE m.user_id = roles_of.user_id;
$$;

-- Housekeeping for the jobs runner: old rate events, used or expired magic
-- links, expired sessions.  Returns how many rows of each went.
CREATE OR REPLACE FUNCTION auth.purge(keep_seconds int DEFAULT 86400)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - greatest(coalesce(keep_seconds, 86400), 0)
                                  * interval '1 second';
    n_rate  bigint;
    n_links bigint;
    n_sess  bigint;
BEGIN
    -- No window is longer than a day.
    DELETE FROM auth.rate_events
    WHERE at < least(cutoff, now() - interval '1 day');
    GET DIAGNOSTICS n_rate = ROW_COUNT;

    DELETE FROM auth.magic_links
    WHERE (used_at IS NOT NULL AND used_at < cutoff)
       OR expires_at < cutoff;
    GET DIAGNOSTICS n_links = ROW_COUNT;

    DELETE FROM auth.sessions AS s
    WHERE s.expires_at < cutoff
       OR s.epoch < (SELECT u.epoch FROM auth.users AS u
                     WHERE u.id = s.user_id);
    GET DIAGNOSTICS n_sess = ROW_COUNT;

    RETURN json_build_object('rate_events', n_rate, 'magic_links', n_links,
                             'sessions', n_sess);
END
$$;


-- The jobs runner runs SQL jobs as maintenance.<name>() (sql/004_jobs.sql):
--   jobs.enqueue('sql', '{"function": "auth_purge"}')
CREATE SCHEMA IF NOT EXISTS maintenance;

CREATE OR REPLACE FUNCTION maintenance.auth_purge()
RETURNS json
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT auth.purge();
$$;

REVOKE ALL ON FUNCTION maintenance.auth_purge() FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Sessions (SQL -> module): response.session
-- ---------------------------------------------------------------------

-- platform.set_session(user_id, mfa => false, ttl_seconds => 43200):
-- the module seals the claims
--   u=<id>;e=<epoch>;x=<unix expiry>;f=<0|1>;r=<roles>
-- into the platform_session cookie after the call.  Returns the claims.
CREATE OR REPLACE FUNCTION platform.set_session(user_id bigint,
                                                mfa boolean DEFAULT false,
                                                ttl_seconds int DEFAULT 43200)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_epoch int;
    claims  text;
BEGIN
    -- The module refuses cookies that live longer than
    -- platform_session_max_age (default 30 days).
    IF ttl_seconds IS NULL OR ttl_seconds NOT BETWEEN 60 AND 30 * 86400 THEN
        RAISE EXCEPTION 'session lifetime out of range'
            USING ERRCODE = '22023',
                  HINT = 'ttl_seconds is from 60 to 2592000 (30 days)';
    END IF;

    SELECT u.epoch INTO v_epoch
    FROM auth.users AS u
    WHERE u.id = set_session.user_id;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such user' USING ERRCODE = 'PT401';
    END IF;

    claims := format('u=%s;e=%s;x=%s;f=%s;r=%s',
                     set_session.user_id, v_epoch,
                     floor(extract(epoch FROM now()))::bigint + ttl_seconds,
                     CASE WHEN mfa THEN 1 ELSE 0 END,
                     array_to_string(auth.roles_of(set_session.user_id), ','));

    -- The module seals at most 1024 bytes of claims (a cookie holds about
    -- 4 kB); say so here rather than fail there.
    IF octet_length(claims) > 1024 THEN
        RAISE EXCEPTION 'too many memberships for one session'
            USING ERRCODE = 'PT500';
    END IF;

    PERFORM set_config('response.session', claims, true);
    RETURN claims;
END
$$;

-- platform.clear_session(user_id): ends every session of the user (the
-- epoch goes up) and has the module expire the cookie and record the new
-- epoch at once.  Returns what it set.
CREATE OR REPLACE FUNCTION platform.clear_session(user_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_epoch int;
    value   text;
BEGIN
    -- clock_timestamp(): as close to the commit as we can get, so a poll of
    -- session_epochs running meanwhile misses as little as possible (it
    -- also looks back a minute, see there).
    UPDATE auth.users AS u
    SET epoch = u.epoch + 1,
        epoch_changed_at = clock_timestamp()
    WHERE u.id = clear_session.user_id
    RETURNING u.epoch INTO v_epoch;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such user' USING ERRCODE = 'PT401';
    END IF;

    value := format('-;u=%s;e=%s', clear_session.user_id, v_epoch);
    PERFORM set_config('response.session', value, true);
    RETURN value;
END
$$;

-- platform.session_epochs(since): what the module's epoch poll asks.
--   '<now, ISO 8601 UTC>|<user>:<epoch>,<user>:<epoch>...'
-- Users whose epoch changed after `since` (NULL: every user whose epoch is
-- above 0).  The first part is passed back as `since` next time.  Because
-- a logout whose transaction began before a poll may commit after it, the
-- look-back starts a minute before `since`: users can repeat across polls
-- (the module keeps the highest epoch, so that is harmless).
CREATE OR REPLACE FUNCTION platform.session_epochs(since timestamptz)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(now() AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           || '|'
           || coalesce((SELECT string_agg(u.id || ':' || u.epoch, ','
                                          ORDER BY u.id)
                        FROM auth.users AS u
                        WHERE CASE WHEN since IS NULL THEN u.epoch > 0
                                   ELSE u.epoch_changed_at
                                        > since - interval '1 minute'
                              END),
                       '');
$$;


-- ---------------------------------------------------------------------
-- Endpoints: magic links
-- ---------------------------------------------------------------------

-- POST /api/auth/link
--   api.auth_request_link(body => $platform_body::jsonb,
--                         token => $platform_random,
--                         client_ip => $remote_addr,
--                         base_url => https://example.org)
-- body {"email", "consent_version"?, "return_path"?}.  Answers 202
-- {"status":"sent"} whether or not the email has an account (a link for a
-- new email creates the account when confirmed); 400 for a malformed
-- email, consent version or return path; 429 + Retry-After past the limits
-- (per_email / per_ip links per window_seconds).
CREATE OR REPLACE FUNCTION api.auth_request_link(body jsonb,
                                                 token text,
                                                 client_ip text,
                                                 base_url text,
                                                 ttl_seconds int DEFAULT 900,
                                                 per_email int DEFAULT 5,
                                                 per_ip int DEFAULT 20,
                                                 window_seconds int DEFAULT 900)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email   text;
    v_consent text;
    v_return  text;
    v_ip      inet := auth.to_inet(client_ip);
    v_base    text := rtrim(base_url, '/');
    v_ttl     int := coalesce(ttl_seconds, 900);
    v_window  int := coalesce(window_seconds, 900);
    retry     int;
    link      text;
BEGIN
    -- Configuration (nginx.conf), not the client's doing.
    IF token IS NULL OR token !~ '^[A-Za-z0-9_-]{43}$' THEN
        RAISE EXCEPTION 'sign-in is not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'token must be $platform_random (43 base64url characters)';
    END IF;

    IF v_base IS NULL
       OR v_base !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$'
       OR v_ttl NOT BETWEEN 60 AND 86400
       OR v_window NOT BETWEEN 1 AND 86400
    THEN
        RAISE EXCEPTION 'sign-in is not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'check base_url, ttl_seconds and window_seconds';
    END IF;

    -- The request.
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        RAISE EXCEPTION 'Send a JSON object with your email address.'
            USING ERRCODE = '22023',
                  HINT = '{"email": "you@example.org"}';
    END IF;

    IF jsonb_typeof(body->'email') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'Please enter your email address.'
            USING ERRCODE = '22023';
    END IF;

    v_email := lower(btrim(body->>'email'));

    -- The syntax browsers accept in <input type=email> (WHATWG HTML), with
    -- a dot in the domain and at most 64 characters before the "@" (what
    -- jobs.valid_address takes): no spaces, quotes, commas or control
    -- characters, so it is safe in a mail header.
    IF length(v_email) > 254
       OR v_email !~ ('^[a-z0-9.!#$%&''*+/=?^_`{|}~-]{1,64}@[a-z0-9]'
                      '([a-z0-9-]{0,61}[a-z0-9])?'
                      '(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$')
    THEN
        RAISE EXCEPTION 'This does not look like an email address.'
            USING ERRCODE = '22023',
                  HINT = 'Check the address for typing mistakes.';
    END IF;

    IF body ? 'consent_version' AND body->'consent_version' <> 'null' THEN
        v_consent := body->>'consent_version';
        IF jsonb_typeof(body->'consent_version') <> 'string'
           OR v_consent !~ '^[A-Za-z0-9._:-]{1,64}$'
        THEN
            RAISE EXCEPTION 'The consent version is not valid.'
                USING ERRCODE = '22023',
                      HINT = 'up to 64 letters, digits, ".", "_", ":" or "-"';
        END IF;
    END IF;

    IF body ? 'return_path' AND body->'return_path' <> 'null' THEN
        v_return := body->>'return_path';
        -- A path on this site: "/" then no "/" or "\" (which browsers
        -- read as another host, "//evil.example"), no spaces or controls.
        IF jsonb_typeof(body->'return_path') <> 'string'
           OR length(v_return) > 512
           OR v_return !~ '^/([^/\\[:space:][:cntrl:]][^\\[:space:][:cntrl:]]*)?$'
        THEN
            RAISE EXCEPTION 'The return path must be a path on this site.'
                USING ERRCODE = '22023',
                      HINT = 'for example "/account.html"';
        END IF;
    END IF;

    -- Limits.  Nothing is counted for a refused request.
    retry := greatest(
        auth.rate_retry_after('link_email', v_email, per_email, v_window),
        auth.rate_retry_after('link_ip', host(v_ip), per_ip, v_window));

    IF retry IS NOT NULL THEN
        RETURN auth.too_many(retry,
            'Too many sign-in links were requested. Please wait '
            || auth.wait_words(retry) || ' and try again.');
    END IF;

    PERFORM auth.rate_hit('link_email', v_email);
    PERFORM auth.rate_hit('link_ip', host(v_ip));

    INSERT INTO auth.magic_links (token_hash, email, consent_version,
                                  return_path, client_ip, expires_at)
    VALUES (sha256(convert_to(token, 'UTF8')), v_email, v_consent, v_return,
            v_ip, now() + v_ttl * interval '1 second');

    link := v_base || '/confirm.html#token=' || token;

    PERFORM jobs.enqueue('mail',
                         jsonb_build_object(
                             'to', v_email,
                             'template', 'magic_link',
                             'vars', jsonb_build_object(
                                 'link', link,
                                 'expires_minutes', ceil(v_ttl / 60.0)::int)));

    PERFORM platform.set_status(202);
    RETURN json_build_object('status', 'sent');
END
$$;

-- POST /api/auth/confirm
--   api.auth_confirm(body => $platform_body::jsonb,
--                    client_ip => $remote_addr,
--                    user_agent => $http_user_agent)
-- body {"token"}.  Consumes the link (once, before it expires), creates the
-- account for a new email, records consent and the session, and issues
-- the session cookie.  Answers {"status":"signed_in", "user": {...},
-- "new_user", "return_path"}; an unknown, used or expired token is 410.
CREATE OR REPLACE FUNCTION api.auth_confirm(body jsonb,
                                            client_ip text DEFAULT NULL,
                                            user_agent text DEFAULT NULL,
                                            ttl_seconds int DEFAULT 43200)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_token   text;
    v_ip      inet := auth.to_inet(client_ip);
    v_ttl     int := coalesce(ttl_seconds, 43200);
    l_id      bigint;
    l_email   text;
    l_consent text;
    l_return  text;
    u         record;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object'
       OR jsonb_typeof(body->'token') IS DISTINCT FROM 'string'
    THEN
        RAISE EXCEPTION 'Send a JSON object with the token from the link.'
            USING ERRCODE = '22023',
                  HINT = '{"token": "..."}';
    END IF;

    v_token := body->>'token';

    -- One statement: of two concurrent confirmations only one gets the row.
    IF v_token ~ '^[A-Za-z0-9_-]{43}$' THEN
        UPDATE auth.magic_links AS m
        SET used_at = now()
        WHERE m.token_hash = sha256(convert_to(v_token, 'UTF8'))
          AND m.used_at IS NULL
          AND m.expires_at > now()
        RETURNING m.id, m.email, m.consent_version, m.return_path
        INTO l_id, l_email, l_consent, l_return;
    END IF;

    IF l_id IS NULL THEN
        RAISE EXCEPTION 'This sign-in link is no longer valid: it was '
                        'already used or has expired.'
            USING ERRCODE = 'PT410',
                  HINT = 'Request a new link on the sign-in page.';
    END IF;

    INSERT INTO auth.users AS x (email)
    VALUES (l_email)
    ON CONFLICT (email) DO UPDATE SET email = x.email
    RETURNING x.id, x.email, x.epoch, (x.xmax = 0) AS created
    INTO u;

    -- The other links sent to this address are no use any more.
    UPDATE auth.magic_links AS m
    SET used_at = now()
    WHERE m.email = l_email
      AND m.used_at IS NULL
      AND m.id <> l_id;

    IF l_consent IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM auth.consents AS c
                       WHERE c.user_id = u.id
                         AND c.text_version = l_consent)
    THEN
        INSERT INTO auth.consents (user_id, text_version, client_ip)
        VALUES (u.id, l_consent, v_ip);
    END IF;

    INSERT INTO auth.sessions (user_id, expires_at, client_ip, user_agent,
                               epoch)
    VALUES (u.id, now() + v_ttl * interval '1 second', v_ip,
            left(user_agent, 512), u.epoch);

    PERFORM platform.set_session(u.id, false, v_ttl);

    RETURN json_build_object(
        'status', 'signed_in',
        'user', json_build_object('id', u.id, 'email', u.email),
        'new_user', u.created,
        'return_path', coalesce(l_return, '/account.html'));
END
$$;

-- POST /api/auth/logout (platform_auth any): every session of the user
-- ends (epoch + 1), this one's cookie is expired.
CREATE OR REPLACE FUNCTION api.auth_logout(user_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    PERFORM platform.clear_session(user_id);
    RETURN json_build_object('status', 'signed_out');
END
$$;

-- GET /api/me (platform_auth any):
--   api.me($platform_user::bigint, $platform_mfa::boolean)
-- The account: email, roles, memberships, sessions still valid, consents,
-- TOTP state and (when passed) whether this session did the second factor.
CREATE OR REPLACE FUNCTION api.me(user_id bigint, mfa boolean DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result json;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    SELECT json_build_object(
               'id', u.id,
               'email', u.email,
               'display_name', u.display_name,
               'created_at', u.created_at,
               'roles', to_json(auth.roles_of(u.id)),
               'memberships',
               (SELECT coalesce(json_agg(json_build_object(
                                    'role', m.role, 'org_id', m.org_id)
                                ORDER BY m.role, m.org_id NULLS FIRST),
                                '[]'::json)
                FROM auth.memberships AS m
                WHERE m.user_id = u.id),
               'sessions',
               (SELECT coalesce(json_agg(json_build_object(
                                    'id', s.id,
                                    'created_at', s.created_at,
                                    'expires_at', s.expires_at,
                                    'client_ip', host(s.client_ip),
                                    'user_agent', s.user_agent)
                                ORDER BY s.created_at DESC, s.id DESC),
                                '[]'::json)
                FROM auth.sessions AS s
                WHERE s.user_id = u.id
                  AND s.epoch = u.epoch
                  AND s.expires_at > now()),
               'consents',
               (SELECT coalesce(json_agg(json_build_object(
                                    'version', c.text_version,
                                    'accepted_at', c.accepted_at)
                                ORDER BY c.accepted_at, c.id),
                                '[]'::json)
                FROM auth.consents AS c
                WHERE c.user_id = u.id),
               'totp', json_build_object(
                   'enrolled', u.totp_secret IS NOT NULL,
                   'enabled', u.totp_enabled),
               'staff', EXISTS (SELECT 1 FROM auth.memberships AS m
                                WHERE m.user_id = u.id AND m.role = 'staff'),
               'mfa', me.mfa)
    INTO result
    FROM auth.users AS u
    WHERE u.id = me.user_id;

    IF result IS NULL THEN
        -- The account is gone (deleted) while the cookie lives on.
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    RETURN result;
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: TOTP (second factor, required for staff)
-- ---------------------------------------------------------------------

-- POST /api/auth/totp/enrol (platform_auth any):
--   api.totp_enrol($platform_user::bigint, $platform_random, $platform_mfa::boolean)
-- Stores a new key (the first 20 bytes of the 32 random ones) and returns
-- {"uri": "otpauth://totp/...", "secret": "<base32>"}.  The key is in use
-- once api.totp_verify accepted a code.  Replacing a verified key needs a
-- session that did the second factor (403 otherwise).
CREATE OR REPLACE FUNCTION api.totp_enrol(user_id bigint, secret text,
                                          mfa boolean DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key     bytea;
    v_email   text;
    v_enabled boolean;
    v_b32     text;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    IF secret IS NULL OR secret !~ '^[A-Za-z0-9_-]{43}$' THEN
        RAISE EXCEPTION 'two-factor set-up is not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'secret must be $platform_random (43 base64url characters)';
    END IF;

    SELECT u.email, u.totp_enabled INTO v_email, v_enabled
    FROM auth.users AS u
    WHERE u.id = totp_enrol.user_id
    FOR UPDATE;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    IF v_enabled AND mfa IS NOT TRUE THEN
        RAISE EXCEPTION 'Two-factor authentication is already set up. Enter '
                        'a code from your app first to replace it.'
            USING ERRCODE = 'PT403';
    END IF;

    v_key := substring(auth.b64url_decode(secret) FROM 1 FOR 20);
    v_b32 := auth.base32_encode(v_key);

    UPDATE auth.users AS u
    SET totp_secret = v_key,
        totp_enabled = false,
        totp_last_step = NULL
    WHERE u.id = totp_enrol.user_id;

    RETURN json_build_object(
        'uri', 'otpauth://totp/Platform:' || auth.uri_encode(v_email)
               || '?secret=' || v_b32
               || '&issuer=Platform&algorithm=SHA1&digits=6&period=30',
        'secret', v_b32);
END
$$;

-- POST /api/auth/totp/verify (platform_auth any):
--   api.totp_verify($platform_user::bigint, $platform_body)
-- code is the 6 digits, or (since a platform_query argument is a value, not
-- an expression) the request body {"code": "123456"} as it came.  Accepts
-- the code of the current 30 s step or the one before or after; a step once
-- accepted (or an earlier one) is refused.  Success enables TOTP and
-- re-issues the session with the second factor done.  A wrong or replayed
-- code is 400 and counted: after 5 failures in 15 minutes, 429.
CREATE OR REPLACE FUNCTION api.totp_verify(user_id bigint, code text,
                                           ttl_seconds int DEFAULT 43200)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_code  text := code;
    u       record;
    now_s   bigint := floor(extract(epoch FROM now()) / 30)::bigint;
    matched bigint;
    retry   int;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    -- A JSON body {"code": "123456"} or the bare code.
    IF v_code ~ '^\s*\{' THEN
        BEGIN
            v_code := v_code::jsonb->>'code';
        EXCEPTION
            WHEN invalid_text_representation THEN
                v_code := NULL;
        END;
    END IF;

    v_code := regexp_replace(coalesce(v_code, ''), '\s', '', 'g');

    IF v_code !~ '^[0-9]{6}$' THEN
        RAISE EXCEPTION 'Enter the 6-digit code shown in your authenticator app.'
            USING ERRCODE = '22023';
    END IF;

    SELECT x.id, x.totp_secret, x.totp_last_step INTO u
    FROM auth.users AS x
    WHERE x.id = totp_verify.user_id
    FOR UPDATE;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    IF u.totp_secret IS NULL THEN
        RAISE EXCEPTION 'Two-factor authentication is not set up yet.'
            USING ERRCODE = 'PT409',
                  HINT = 'Set it up on your account page first.';
    END IF;

    retry := auth.rate_retry_after('totp', u.id::text, 5, 900);
    IF retry IS NOT NULL THEN
        RETURN auth.too_many(retry,
            'Too many wrong codes. Please wait ' || auth.wait_words(retry)
            || ' and try again.');
    END IF;

    SELECT s INTO matched
    FROM unnest(ARRAY[now_s, now_s - 1, now_s + 1]) AS s
    WHERE auth.totp_code(u.totp_secret, s) = v_code
    LIMIT 1;

    IF matched IS NULL OR matched <= u.totp_last_step THEN
        PERFORM auth.rate_hit('totp', u.id::text);
        PERFORM platform.set_status(400);
        RETURN json_build_object('error', CASE
            WHEN matched IS NULL THEN json_build_object(
                'code', 'totp_invalid',
                'message', 'That code is not right. Check that the clock of '
                           'your device is correct and enter the current code.')
            ELSE json_build_object(
                'code', 'totp_replayed',
                'message', 'This code was already used. Wait for the next '
                           'code and enter that one.')
            END);
    END IF;

    UPDATE auth.users AS x
    SET totp_enabled = true,
        totp_last_step = matched
    WHERE x.id = u.id;

    PERFORM platform.set_session(u.id, true, coalesce(ttl_seconds, 43200));

    RETURN json_build_object('status', 'verified', 'totp_enabled', true);
END
$$;


-- ---------------------------------------------------------------------
-- Grants.  Tables: nothing for nginx.  Functions in api/platform: callable
-- (default privileges of 001); auth helpers: only purge.
-- ---------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA auth FROM PUBLIC, platform_app;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA auth FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.purge(int) TO platform_app;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api, platform TO platform_app;
