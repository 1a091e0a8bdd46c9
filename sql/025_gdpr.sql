-- 025_gdpr.sql - GDPR requests: a copy of one's data, or its deletion
-- (issue 9 item 6; docs/gdpr.md).
--
--   POST /api/gdpr/requests      api.gdpr_request: {"email", "kind":
--        "export"|"delete"} -> 202 {"status":"sent"} whoever asks; a magic
--        link (auth.send_link, template gdpr_confirm) is mailed
--   the person confirms the link on /confirm.html (api.auth_confirm, not
--        changed here): a trigger on auth.magic_links sees *that* link
--        consumed and confirms the request and queues its job
--   sql job {"function": "gdpr_process", "args": {"request": N}}:
--        export -> gdpr.exports (JSON), mailed as a link with an expiry;
--        delete -> gdpr.erase: the account becomes an anonymous tombstone
--        (same id, so submissions keep an anonymous contributor id), its
--        personal rows deleted or anonymised, its epoch bumped (cookies die)
--   POST /api/gdpr/export        api.gdpr_export: {"token"} -> the JSON
--        file while it has not expired, 410 after
--   GET  /api/admin/gdpr/requests api.gdpr_requests_audit (platform admin)
--   sql job {"function": "gdpr_retention"} daily: chat kept 25 days,
--        expired exports and unconfirmed requests dropped
--
-- gdpr.registry lists every table that holds personal data and what
-- export and deletion do with it; sql/tests/025_gdpr.sql checks that every
-- table tied to a user (a foreign key to auth.users, an email column) is
-- listed and that the export has a section for each.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, ON CONFLICT, guarded DO.

CREATE SCHEMA IF NOT EXISTS gdpr;


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- What we hold about a person, where, and what each request does there.
CREATE TABLE IF NOT EXISTS gdpr.registry (
    relation      text PRIMARY KEY,
    identified_by text NOT NULL,
    on_delete     text NOT NULL
                  CONSTRAINT registry_on_delete_check
                  CHECK (on_delete IN ('delete', 'anonymise', 'keep')),
    why           text NOT NULL
);

CREATE TABLE IF NOT EXISTS gdpr.requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL
                 CONSTRAINT requests_kind_check
                 CHECK (kind IN ('export', 'delete')),
    -- The address while the request is open (and for exports until they
    -- expire); then NULL, the hash stays so an auditor can match it.
    email        text,
    email_hash   bytea NOT NULL,
    status       text NOT NULL DEFAULT 'received'
                 CONSTRAINT requests_status_check
                 CHECK (status IN ('received', 'confirmed', 'completed',
                                   'expired')),
    link_id      bigint,
    user_id      bigint,
    base_url     text NOT NULL,
    job_id       bigint,
    outcome      jsonb,
    received_at  timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    completed_at timestamptz
);

CREATE INDEX IF NOT EXISTS requests_link_id_idx ON gdpr.requests (link_id);
CREATE INDEX IF NOT EXISTS requests_received_at_idx
    ON gdpr.requests (received_at);

CREATE TABLE IF NOT EXISTS gdpr.exports (
    request_id    bigint PRIMARY KEY REFERENCES gdpr.requests (id)
                  ON DELETE CASCADE,
    token_hash    bytea NOT NULL CONSTRAINT exports_token_hash_key UNIQUE,
    body          jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    downloads     int NOT NULL DEFAULT 0,
    downloaded_at timestamptz
);

-- How long an export stays downloadable, how long after the request the
-- job runs (0: at once), how long chat is kept.
CREATE TABLE IF NOT EXISTS gdpr.settings (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    export_ttl        interval NOT NULL DEFAULT interval '7 days',
    chat_days         int NOT NULL DEFAULT 25 CHECK (chat_days >= 1)
);

INSERT INTO gdpr.settings DEFAULT VALUES ON CONFLICT DO NOTHING;


INSERT INTO gdpr.registry (relation, identified_by, on_delete, why) VALUES
 ('auth.users', 'id', 'anonymise',
  'the account: email and name erased, the id stays as an anonymous tombstone '
  '(submissions, tickets and teams keep pointing at it); epoch bumped'),
 ('auth.memberships', 'user_id', 'delete', 'roles in organisations'),
 ('auth.consents', 'user_id', 'delete', 'consent records'),
 ('auth.sessions', 'user_id', 'delete', 'sign-ins: address, browser'),
 ('auth.magic_links', 'email', 'delete', 'links mailed to the address'),
 ('auth.rate_events', 'key = email', 'delete', 'rate limit counts by address'),
 ('app.registrations', 'user_id or email', 'anonymise',
  'name, email and address replaced; amounts, refunds stay for the '
  'organiser''s accounts'),
 ('app.tickets', 'user_id', 'keep', 'ticket codes of the anonymous id'),
 ('app.team_members', 'user_id', 'keep', 'the anonymous id stays in its team'),
 ('app.submissions', 'submitted_by, updated_by', 'keep',
  'team work: the contributor id is the anonymous tombstone'),
 ('app.chat_messages', 'user_id', 'delete', 'messages the person wrote'),
 ('app.help_requests', 'user_id (cleared_by)', 'delete',
  'their help requests; as the organiser who cleared one: set to NULL'),
 ('app.chat_connections', 'user_id', 'delete', 'chat connections'),
 ('app.engagement_minutes', 'user_id', 'delete', 'minutes connected'),
 ('app.engagement_counters', 'user_id', 'delete', 'messages counted'),
 ('rentals.bookings', 'guest_user_id or guest_email (created_by)',
  'anonymise', 'stays as a guest: name and email erased, dates and amounts '
  'stay for the owner''s accounts'),
 ('rentals.signups', 'email', 'delete', 'rental business sign-ups'),
 ('rentals.owners', 'user_id (invited_by)', 'delete',
  'owner of a rental business; as the inviter: set to NULL'),
 ('rentals.properties', 'cleaner_email', 'keep',
  'a cleaner''s address entered by an owner: not an account, not matched'),
 ('jobs.jobs', 'payload to = email', 'delete',
  'mails queued or sent to the address (not the running job)'),
 ('gdpr.requests', 'email', 'anonymise',
  'the request itself: the address is dropped, its hash and times stay '
  'for the audit')
ON CONFLICT (relation) DO UPDATE
SET identified_by = EXCLUDED.identified_by, on_delete = EXCLUDED.on_delete,
    why = EXCLUDED.why;


-- ---------------------------------------------------------------------
-- Mail
-- ---------------------------------------------------------------------

INSERT INTO jobs.mail_templates (name, subject, text, html) VALUES
('gdpr_confirm', 'Confirm your request: {{what}}',
 E'Hello,\n\nsomeone (we hope you) asked for {{what}} for this address.\n\n'
 || E'To confirm it is you, open this link within {{expires_minutes}} '
 || E'minutes and press the button:\n\n{{link}}\n\n'
 || E'If you did not ask, ignore this mail: nothing will happen.\n',
 E'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n'
 || E'<p>Hello,</p>\n<p>someone (we hope you) asked for {{what}} for this '
 || E'address.</p>\n<p>To confirm it is you, open this link within '
 || E'{{expires_minutes}} minutes and press the button:</p>\n'
 || E'<p><a href="{{link}}">{{link}}</a></p>\n'
 || E'<p>If you did not ask, ignore this mail: nothing will happen.</p>\n'
 || E'</body></html>\n'),
('gdpr_export_ready', 'A copy of your data is ready',
 E'Hello,\n\nthe copy of the data we hold about you is ready. Download it '
 || E'(a JSON file) from this link before {{expires}}:\n\n{{link}}\n',
 E'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n'
 || E'<p>Hello,</p>\n<p>the copy of the data we hold about you is ready. '
 || E'Download it (a JSON file) from this link before {{expires}}:</p>\n'
 || E'<p><a href="{{link}}">{{link}}</a></p>\n</body></html>\n'),
('gdpr_deleted', 'Your account and data were deleted',
 E'Hello,\n\nas you asked, your account and the data we held about you '
 || E'were deleted on {{date}}. Team work you contributed to stays with '
 || E'your team under an anonymous id.\n',
 E'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n'
 || E'<p>Hello,</p>\n<p>as you asked, your account and the data we held '
 || E'about you were deleted on {{date}}. Team work you contributed to '
 || E'stays with your team under an anonymous id.</p>\n</body></html>\n')
ON CONFLICT (name) DO UPDATE
SET subject = EXCLUDED.subject, text = EXCLUDED.text, html = EXCLUDED.html;


-- ---------------------------------------------------------------------
-- The request and its confirmation
-- ---------------------------------------------------------------------

-- POST /api/gdpr/requests
--   api.gdpr_request(body => $platform_body::jsonb, token => $platform_random,
--                    client_ip => $remote_addr, base_url => $platform_public_url,
--                    per_email, per_ip)
-- body {"email", "kind": "export" | "delete"}.  202 {"status":"sent"} for
-- any well-formed address, known or not; 400 naming "email" or "kind";
-- 429 past the link limits (shared with sign-in).
CREATE OR REPLACE FUNCTION api.gdpr_request(body jsonb, token text,
                                            client_ip text, base_url text,
                                            per_email int DEFAULT 5,
                                            per_ip int DEFAULT 20)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email text;
    v_kind  text;
    v_base  text := rtrim(base_url, '/');
    limited json;
    k       text;
BEGIN
    IF token IS NULL OR token !~ '^[A-Za-z0-9_-]{43}$'
       OR v_base IS NULL
       OR v_base !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$'
    THEN
        RAISE EXCEPTION 'privacy requests are not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'token must be $platform_random, base_url an http(s) URL';
    END IF;

    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        RAISE EXCEPTION 'Send a JSON object with your email address and '
                        'the kind of request.'
            USING ERRCODE = '22023',
                  HINT = '{"email": "you@example.org", "kind": "export"}';
    END IF;

    FOR k IN SELECT jsonb_object_keys(body) LOOP
        IF k NOT IN ('email', 'kind') THEN
            PERFORM app.bad_field(k, 'Unknown field "' || left(k, 64) || '".');
        END IF;
    END LOOP;

    v_email := app.json_email(body, 'email');

    v_kind := body->>'kind';
    IF jsonb_typeof(body->'kind') IS DISTINCT FROM 'string'
       OR v_kind NOT IN ('export', 'delete')
    THEN
        PERFORM app.bad_field('kind', 'Choose "export" (a copy of your '
                                      'data) or "delete".');
    END IF;

    limited := auth.send_link(
        v_email, token, auth.to_inet(client_ip), v_base,
        '/privacy.html?confirmed=' || v_kind, NULL, 'gdpr_confirm',
        jsonb_build_object('what', CASE v_kind
            WHEN 'export' THEN 'a copy of the data we hold about you'
            ELSE 'the deletion of your account and data' END),
        900, per_email, per_ip, 900);

    IF limited IS NOT NULL THEN
        RETURN limited;
    END IF;

    INSERT INTO gdpr.requests (kind, email, email_hash, link_id, base_url)
    SELECT v_kind, v_email, sha256(convert_to(v_email, 'UTF8')), m.id, v_base
    FROM auth.magic_links AS m
    WHERE m.token_hash = sha256(convert_to(token, 'UTF8'));

    PERFORM platform.set_status(202);
    RETURN json_build_object('status', 'sent');
END
$$;

-- The hook: api.auth_confirm (003 via 008, patched by 017) is not
-- touched.  auth.confirm_link first consumes the link it was given (an
-- UPDATE of one row), then voids the address's other unused links (an
-- UPDATE of used_at as well).  The first link of an address marked used
-- in a transaction is therefore the one consumed (a confirmation is one
-- request, one transaction); only that one confirms a request, so a
-- privacy link voided by an ordinary sign-in confirms nothing.
CREATE OR REPLACE FUNCTION gdpr.on_link_used()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r gdpr.requests;
BEGIN
    -- The voiding that follows a consumption is for the same address.
    IF current_setting('gdpr.link_seen', true) = NEW.email THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('gdpr.link_seen', NEW.email, true);

    FOR r IN UPDATE gdpr.requests AS q
             SET status = 'confirmed', confirmed_at = now()
             WHERE q.link_id = NEW.id AND q.status = 'received'
             RETURNING q.*
    LOOP
        UPDATE gdpr.requests AS q
        SET job_id = jobs.enqueue('sql', jsonb_build_object(
                         'function', 'gdpr_process',
                         'args', jsonb_build_object('request', r.id)),
                         now(), 'gdpr:' || r.id)
        WHERE q.id = r.id;
    END LOOP;

    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = 'magic_links_gdpr'
                     AND tgrelid = 'auth.magic_links'::regclass)
    THEN
        CREATE TRIGGER magic_links_gdpr
            AFTER UPDATE OF used_at ON auth.magic_links
            FOR EACH ROW
            WHEN (OLD.used_at IS NULL AND NEW.used_at IS NOT NULL)
            EXECUTE FUNCTION gdpr.on_link_used();
    END IF;
END
$$;


-- ---------------------------------------------------------------------
-- Export
-- ---------------------------------------------------------------------

-- Everything held about the person: one key per gdpr.registry relation
-- (the test checks it), rows as JSON.  USER_ID may be NULL (an address
-- without an account still has links, registrations, bookings...).
CREATE OR REPLACE FUNCTION gdpr.export_json(user_id bigint, email text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u   bigint := export_json.user_id;
    e   text := export_json.email;
    out jsonb;
BEGIN
    out := jsonb_build_object(
        'format', 'platform-gdpr-export-1',
        'generated_at', now(),
        'subject', jsonb_build_object('user_id', u, 'email', e),
        'auth.users', (SELECT to_jsonb(x) - 'totp_secret' - 'totp_last_step'
                       FROM auth.users AS x WHERE x.id = u),
        'auth.memberships', (SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]')
                             FROM auth.memberships AS x WHERE x.user_id = u),
        'auth.consents', (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id),
                                          '[]')
                          FROM auth.consents AS x WHERE x.user_id = u),
        'auth.sessions', (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id),
                                          '[]')
                          FROM auth.sessions AS x WHERE x.user_id = u),
        'auth.magic_links', (SELECT coalesce(jsonb_agg(
                                 to_jsonb(x) - 'token_hash' ORDER BY x.id), '[]')
                             FROM auth.magic_links AS x WHERE x.email = e),
        'auth.rate_events', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                                       ORDER BY x.at), '[]')
                             FROM auth.rate_events AS x WHERE x.key = e),
        'app.registrations', (SELECT coalesce(jsonb_agg(
                                  to_jsonb(x) - 'checkout_session_id'
                                  || jsonb_build_object('event_title',
                                         (SELECT v.title FROM app.events AS v
                                          WHERE v.id = x.event_id))
                                  ORDER BY x.id), '[]')
                              FROM app.registrations AS x
                              WHERE x.user_id = u OR x.email = e),
        'app.tickets', (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id),
                                        '[]')
                        FROM app.tickets AS x WHERE x.user_id = u),
        'app.team_members', (SELECT coalesce(jsonb_agg(
                                 to_jsonb(x) || jsonb_build_object(
                                     'team_name', t.name)
                                 ORDER BY x.added_at), '[]')
                             FROM app.team_members AS x
                             JOIN app.teams AS t ON t.id = x.team_id
                             WHERE x.user_id = u),
        'app.submissions', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                                      ORDER BY x.id), '[]')
                            FROM app.submissions AS x
                            WHERE x.submitted_by = u OR x.updated_by = u
                               OR x.team_id IN (SELECT m.team_id
                                                FROM app.team_members AS m
                                                WHERE m.user_id = u)),
        'app.chat_messages', (SELECT coalesce(jsonb_agg(
                                  to_jsonb(x) - 'relay_key'
                                  ORDER BY x.created_at, x.id), '[]')
                              FROM app.chat_messages AS x
                              WHERE x.user_id = u),
        'app.help_requests', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                                        ORDER BY x.id), '[]')
                              FROM app.help_requests AS x
                              WHERE x.user_id = u OR x.cleared_by = u),
        'app.chat_connections', (SELECT coalesce(jsonb_agg(
                                     to_jsonb(x) - 'key' ORDER BY x.id), '[]')
                                 FROM app.chat_connections AS x
                                 WHERE x.user_id = u),
        'app.engagement_minutes', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                       ORDER BY x.event_id, x.minute), '[]')
                                   FROM app.engagement_minutes AS x
                                   WHERE x.user_id = u),
        'app.engagement_counters', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                        ORDER BY x.event_id), '[]')
                                    FROM app.engagement_counters AS x
                                    WHERE x.user_id = u),
        'rentals.bookings', (SELECT coalesce(jsonb_agg(
                                 to_jsonb(x) - 'checkout_session_id'
                                 ORDER BY x.id), '[]')
                             FROM rentals.bookings AS x
                             WHERE x.guest_user_id = u OR x.guest_email = e
                                OR x.created_by = u),
        'rentals.signups', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                                      ORDER BY x.id), '[]')
                            FROM rentals.signups AS x WHERE x.email = e),
        'rentals.owners', (SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]')
                           FROM rentals.owners AS x
                           WHERE x.user_id = u OR x.invited_by = u),
        'rentals.properties', '[]'::jsonb,
        'jobs.jobs', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                          'id', x.id, 'template', x.payload->>'template',
                          'state', x.state, 'created_at', x.created_at,
                          'finished_at', x.finished_at) ORDER BY x.id), '[]')
                      FROM jobs.jobs AS x
                      WHERE x.kind = 'mail' AND x.payload->>'to' = e),
        'gdpr.requests', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                              'id', x.id, 'kind', x.kind, 'status', x.status,
                              'received_at', x.received_at,
                              'confirmed_at', x.confirmed_at,
                              'completed_at', x.completed_at)
                              ORDER BY x.id), '[]')
                          FROM gdpr.requests AS x
                          WHERE x.email_hash = sha256(convert_to(e, 'UTF8'))));

    RETURN out;
END
$$;


-- ---------------------------------------------------------------------
-- Deletion
-- ---------------------------------------------------------------------

-- Erases the person (the account USER_ID, may be NULL, and the address
-- EMAIL) as gdpr.registry says.  Returns rows touched per relation.
CREATE OR REPLACE FUNCTION gdpr.erase(user_id bigint, email text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u    bigint := erase.user_id;
    e    text := erase.email;
    anon text := 'erased-' || coalesce(erase.user_id::text, 'x')
                 || '@erased.invalid';
    out  jsonb := '{}';
    n    bigint;
BEGIN
    DELETE FROM app.chat_messages AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('app.chat_messages', n);

    DELETE FROM app.help_requests AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE app.help_requests AS x SET cleared_by = NULL WHERE x.cleared_by = u;
    out := out || jsonb_build_object('app.help_requests', n);

    DELETE FROM app.chat_connections AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('app.chat_connections', n);

    DELETE FROM app.engagement_minutes AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('app.engagement_minutes', n);

    DELETE FROM app.engagement_counters AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('app.engagement_counters', n);

    UPDATE app.registrations AS x
    SET name = 'Deleted participant',
        email = 'erased-r' || x.id || '@erased.invalid',
        client_ip = NULL, checkout_url = NULL, base_url = NULL
    WHERE x.user_id = u OR x.email = e;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('app.registrations', n);

    UPDATE rentals.bookings AS x
    SET guest_name = CASE WHEN x.guest_name IS NOT NULL
                          THEN 'Deleted guest' END,
        guest_email = NULL, checkout_url = NULL, base_url = NULL
    WHERE x.guest_user_id = u OR x.guest_email = e;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('rentals.bookings', n);

    DELETE FROM rentals.signups AS x WHERE x.email = e;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('rentals.signups', n);

    UPDATE rentals.owners AS x SET invited_by = NULL WHERE x.invited_by = u;
    DELETE FROM rentals.owners AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('rentals.owners', n);

    DELETE FROM auth.memberships AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('auth.memberships', n);

    DELETE FROM auth.consents AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('auth.consents', n);

    DELETE FROM auth.sessions AS x WHERE x.user_id = u;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('auth.sessions', n);

    DELETE FROM auth.magic_links AS x WHERE x.email = e;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('auth.magic_links', n);

    DELETE FROM auth.rate_events AS x WHERE x.key = e;
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('auth.rate_events', n);

    DELETE FROM jobs.jobs AS x
    WHERE x.kind = 'mail' AND x.payload->>'to' = e AND x.state <> 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    out := out || jsonb_build_object('jobs.jobs', n);

    -- The tombstone.  The epoch goes up (clock_timestamp, as
    -- platform.clear_session does) so every host's session poll refuses
    -- the person's cookies within platform_session_epoch_poll.
    IF u IS NOT NULL THEN
        UPDATE auth.users AS x
        SET email = anon, display_name = NULL, totp_secret = NULL,
            totp_enabled = false, totp_last_step = NULL,
            epoch = x.epoch + 1, epoch_changed_at = clock_timestamp()
        WHERE x.id = u;
        GET DIAGNOSTICS n = ROW_COUNT;
        out := out || jsonb_build_object('auth.users', n);
    END IF;

    RETURN out;
END
$$;


-- ---------------------------------------------------------------------
-- The job
-- ---------------------------------------------------------------------

-- sql job {"function": "gdpr_process", "args": {"request": N}}, queued
-- when the request is confirmed.  One transaction: the export stored and
-- its mail queued, or the erasure done and its mail queued.
CREATE OR REPLACE FUNCTION maintenance.gdpr_process(args jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     gdpr.requests;
    s     gdpr.settings;
    v_uid bigint;
    token text;
    res   jsonb;
BEGIN
    SELECT * INTO r FROM gdpr.requests AS q
    WHERE q.id = (args->>'request')::bigint
    FOR UPDATE;

    IF NOT FOUND OR r.status <> 'confirmed' THEN
        RETURN jsonb_build_object('skipped', true);
    END IF;

    SELECT * INTO s FROM gdpr.settings;
    SELECT x.id INTO v_uid FROM auth.users AS x WHERE x.email = r.email;

    IF r.kind = 'export' THEN
        token := rtrim(translate(encode(public.gen_random_bytes(32), 'base64'),
                                 '+/', '-_'), '=');
        INSERT INTO gdpr.exports (request_id, token_hash, body, expires_at)
        VALUES (r.id, sha256(convert_to(token, 'UTF8')),
                gdpr.export_json(v_uid, r.email), now() + s.export_ttl);

        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', r.email, 'template', 'gdpr_export_ready',
            'vars', jsonb_build_object(
                'link', r.base_url || '/privacy.html#export=' || token,
                'expires', to_char((now() + s.export_ttl) AT TIME ZONE 'UTC',
                                   'FMDD FMMonth YYYY, HH24:MI "UTC"'))));
        res := jsonb_build_object('expires_at', now() + s.export_ttl);
    ELSE
        res := gdpr.erase(v_uid, r.email);

        PERFORM jobs.enqueue('mail', jsonb_build_object(
            'to', r.email, 'template', 'gdpr_deleted',
            'vars', jsonb_build_object(
                'date', to_char(now() AT TIME ZONE 'UTC',
                                'FMDD FMMonth YYYY, HH24:MI "UTC"'))));

        -- Every request from this address: the address goes, the hash
        -- stays for the audit.
        UPDATE gdpr.requests AS q
        SET email = NULL,
            status = CASE WHEN q.status = 'received' THEN 'expired'
                          ELSE q.status END
        WHERE q.email_hash = r.email_hash AND q.id <> r.id;
        DELETE FROM gdpr.exports AS x
        WHERE x.request_id IN (SELECT q.id FROM gdpr.requests AS q
                               WHERE q.email_hash = r.email_hash);
    END IF;

    UPDATE gdpr.requests AS q
    SET status = 'completed', completed_at = now(), user_id = v_uid,
        outcome = res,
        email = CASE WHEN r.kind = 'delete' THEN NULL ELSE q.email END
    WHERE q.id = r.id;

    RETURN res;
END
$$;

-- sql job {"function": "gdpr_retention"}, key maintenance:gdpr_retention,
-- daily: chat messages older than gdpr.settings.chat_days (25) go
-- (maintenance.chat_purge of 013, which nothing scheduled before), exports
-- past their expiry lose their file, requests never confirmed within a day
-- expire and lose their address, the "deleted" mails' job rows (which
-- hold the address) go after a day.
CREATE OR REPLACE FUNCTION maintenance.gdpr_retention()
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days int := (SELECT s.chat_days FROM gdpr.settings AS s);
    n_chat bigint;
    n_exp  bigint;
    n_req  bigint;
    n_mail bigint;
BEGIN
    n_chat := maintenance.chat_purge(jsonb_build_object('days', v_days));

    DELETE FROM gdpr.exports AS x WHERE x.expires_at < now();
    GET DIAGNOSTICS n_exp = ROW_COUNT;
    UPDATE gdpr.requests AS q SET email = NULL
    WHERE q.kind = 'export' AND q.status = 'completed' AND q.email IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM gdpr.exports AS x
                      WHERE x.request_id = q.id);

    UPDATE gdpr.requests AS q SET status = 'expired', email = NULL
    WHERE q.status = 'received' AND q.received_at < now() - interval '1 day';
    GET DIAGNOSTICS n_req = ROW_COUNT;

    DELETE FROM jobs.jobs AS j
    WHERE j.kind = 'mail' AND j.payload->>'template' = 'gdpr_deleted'
      AND j.state IN ('done', 'dead', 'cancelled')
      AND j.finished_at < now() - interval '1 day';
    GET DIAGNOSTICS n_mail = ROW_COUNT;

    PERFORM jobs.enqueue_next('sql', '{"function": "gdpr_retention"}',
                              now() + interval '1 day',
                              'maintenance:gdpr_retention');

    RETURN jsonb_build_object('chat_messages', n_chat, 'exports', n_exp,
                              'requests_expired', n_req, 'mails', n_mail);
END
$$;

REVOKE ALL ON FUNCTION gdpr.on_link_used(), gdpr.export_json(bigint, text),
                       gdpr.erase(bigint, text),
                       maintenance.gdpr_process(jsonb),
                       maintenance.gdpr_retention()
    FROM PUBLIC;

DO $$
BEGIN
    PERFORM jobs.enqueue('sql', '{"function": "gdpr_retention"}',
                         now() + interval '1 hour',
                         'maintenance:gdpr_retention');
END
$$;


-- ---------------------------------------------------------------------
-- Download and audit
-- ---------------------------------------------------------------------

-- POST /api/gdpr/export  body {"token"}: the export file (JSON, served as
-- an attachment) while it has not expired; unknown, expired and erased
-- tokens all answer 410.  Downloading again before the expiry is allowed.
CREATE OR REPLACE FUNCTION api.gdpr_export(body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_token text;
    v_body  jsonb;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object'
       OR jsonb_typeof(body->'token') IS DISTINCT FROM 'string'
    THEN
        PERFORM app.bad_field('token', 'Send the token from the link.');
    END IF;
    v_token := body->>'token';

    IF v_token ~ '^[A-Za-z0-9_-]{43}$' THEN
        UPDATE gdpr.exports AS x
        SET downloads = x.downloads + 1, downloaded_at = now()
        WHERE x.token_hash = sha256(convert_to(v_token, 'UTF8'))
          AND x.expires_at > now() AND x.body IS NOT NULL
        RETURNING x.body INTO v_body;
    END IF;

    IF v_body IS NULL THEN
        RAISE EXCEPTION 'This download link has expired or is not valid.'
            USING ERRCODE = 'PT410',
                  HINT = 'Ask for a new copy on the privacy page.';
    END IF;

    PERFORM platform.set_header('Content-Disposition',
                                'attachment; filename="my-data.json"');
    PERFORM platform.set_header('Cache-Control', 'no-store');
    RETURN v_body::json;
END
$$;

-- GET /api/admin/gdpr/requests?limit (platform_auth admin): every request,
-- newest first, with when it was received, confirmed and completed, the
-- 30-day deadline, and the address only while it is still held.
CREATE OR REPLACE FUNCTION api.gdpr_requests_audit(user_id bigint,
                                                   lim int DEFAULT 200)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;
    IF lim IS NOT NULL AND lim NOT BETWEEN 1 AND 10000 THEN
        PERFORM app.bad_field('limit', 'limit is from 1 to 10000.');
    END IF;

    RETURN json_build_object(
        'requests', (SELECT coalesce(json_agg(json_build_object(
                         'id', q.id, 'kind', q.kind, 'status', q.status,
                         'email', q.email,
                         'email_sha256', encode(q.email_hash, 'hex'),
                         'user_id', q.user_id,
                         'received_at', q.received_at,
                         'confirmed_at', q.confirmed_at,
                         'completed_at', q.completed_at,
                         'due_by', q.received_at + interval '30 days',
                         'overdue', q.status = 'confirmed'
                                    AND now() > q.received_at
                                                + interval '30 days',
                         'outcome', q.outcome) ORDER BY q.id DESC), '[]')
                     FROM (SELECT * FROM gdpr.requests AS x
                           ORDER BY x.id DESC
                           LIMIT coalesce(lim, 200)) AS q));
END
$$;

GRANT EXECUTE ON FUNCTION
    api.gdpr_request(jsonb, text, text, text, int, int),
    api.gdpr_export(jsonb),
    api.gdpr_requests_audit(bigint, int)
TO platform_app;
