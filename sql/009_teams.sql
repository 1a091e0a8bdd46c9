-- 009_teams.sql - breakout teams and team submissions (issue 4, items 8
-- and 9).
--
-- The participants of an event are the users holding a valid ticket
-- (app.tickets, 006).  An organiser splits them at random into balanced
-- teams ("Team 1", "Team 2", ...; sizes differ by at most one), moves
-- people between teams, and sets the event's submission deadline; each
-- member is mailed the link to the team page (template team_assigned) and
-- may ask for it again by address.  A team has at most one submission
-- (title, link, description), which its members create and change until
-- the deadline (no deadline: until the event ends).
--
-- A team's id does not change while the team exists (the chat's team room
-- is keyed by it); splitting again replaces every team of the event with
-- new ones.
--
-- Organiser endpoints take the organisation from the session
-- ($platform_org, checked by `platform_auth organiser org=$1`) and check
-- that the event belongs to it: someone else's event is 404.  Bad input is
-- 22023 (400) with DETAIL 'field: <name>' (app.bad_field).  nginx's role
-- platform_app has no rights on the tables; the api functions are
-- SECURITY DEFINER with a fixed search_path.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, catalog-guarded DO blocks.


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- Submissions are accepted while now() < coalesce(submission_deadline,
-- ends_at).
ALTER TABLE app.events
    ADD COLUMN IF NOT EXISTS submission_deadline timestamptz;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'events_submission_deadline_check'
                     AND conrelid = 'app.events'::regclass) THEN
        ALTER TABLE app.events ADD CONSTRAINT events_submission_deadline_check
            CHECK (submission_deadline IS NULL
                   OR isfinite(submission_deadline));
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS app.teams (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    number     int NOT NULL
               CONSTRAINT teams_number_check CHECK (number BETWEEN 1 AND 10000),
    name       text NOT NULL
               CONSTRAINT teams_name_check CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT teams_event_number_key UNIQUE (event_id, number),
    -- target of the members' and submissions' (team, event) foreign keys:
    -- a row can only name a team of its own event
    CONSTRAINT teams_id_event_key UNIQUE (id, event_id)
);

CREATE TABLE IF NOT EXISTS app.team_members (
    team_id  bigint NOT NULL,
    event_id bigint NOT NULL,
    user_id  bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    added_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT team_members_pkey PRIMARY KEY (team_id, user_id),
    -- a person is in at most one team per event
    CONSTRAINT team_members_event_user_key UNIQUE (event_id, user_id),
    CONSTRAINT team_members_team_fkey FOREIGN KEY (team_id, event_id)
        REFERENCES app.teams (id, event_id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS team_members_user_id_idx
    ON app.team_members (user_id);

CREATE TABLE IF NOT EXISTS app.submissions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- one per team
    team_id      bigint NOT NULL CONSTRAINT submissions_team_id_key UNIQUE,
    event_id     bigint NOT NULL,
    title        text NOT NULL
                 CONSTRAINT submissions_title_check
                 CHECK (length(title) BETWEEN 1 AND 200),
    link         text NOT NULL
                 CONSTRAINT submissions_link_check
                 CHECK (length(link) <= 2000
                        AND link ~ '^https?://[^[:space:][:cntrl:]]+$'),
    description  text NOT NULL DEFAULT ''
                 CONSTRAINT submissions_description_check
                 CHECK (length(description) <= 10000),
    -- who created it, who saved it last
    submitted_by bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    updated_by   bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT submissions_team_fkey FOREIGN KEY (team_id, event_id)
        REFERENCES app.teams (id, event_id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS submissions_event_id_idx
    ON app.submissions (event_id);

REVOKE ALL ON app.teams, app.team_members, app.submissions
    FROM PUBLIC, platform_app;


-- ---------------------------------------------------------------------
-- Helpers (schema app, not callable by nginx)
-- ---------------------------------------------------------------------

-- An email address as api.auth_request_link accepts it (003): the syntax
-- of <input type=email>, a dot in the domain, at most 64 characters before
-- the "@" and 254 in all.  jobs.valid_address (004) is that syntax with an
-- optional dot, so only the dot is checked here: one regex, not three.
CREATE OR REPLACE FUNCTION app.valid_email(address text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jobs.valid_address(address)
           AND strpos(split_part(address, '@', 2), '.') > 0;
$$;

-- $platform_public_url checked, without a trailing "/"; a value that is
-- not an http(s) origin (and optional path) is a configuration error.
CREATE OR REPLACE FUNCTION app.public_base(base_url text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := rtrim(base_url, '/');
BEGIN
    IF v IS NULL
       OR v !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$'
    THEN
        RAISE EXCEPTION 'team links are not configured correctly'
            USING ERRCODE = 'PT500',
                  DETAIL = 'base_url must be $platform_public_url';
    END IF;
    RETURN v;
END
$$;

-- The organisation's event (not locked, for reads), or 404.
CREATE OR REPLACE FUNCTION app.org_event_read(org_id bigint, event_id bigint)
RETURNS app.events
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events;
BEGIN
    SELECT * INTO e
    FROM app.events AS x
    WHERE x.id = org_event_read.event_id
      AND x.organisation_id = org_event_read.org_id;

    IF NOT FOUND OR org_id IS NULL THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    RETURN e;
END
$$;

-- The name a person goes by in an event: the name on the registration of
-- their valid ticket, else their latest registration for the event, else
-- the account's display name, else "Participant <id>" -- never the email
-- address, which teammates must not see.  NULL for NULL.
CREATE OR REPLACE FUNCTION app.person_name(event_id bigint, user_id bigint)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN person_name.user_id IS NOT NULL THEN coalesce(
               (SELECT r.name
                FROM app.tickets AS t
                JOIN app.registrations AS r ON r.id = t.registration_id
                WHERE t.event_id = person_name.event_id
                  AND t.user_id = person_name.user_id
                  AND t.status = 'valid'),
               (SELECT r2.name FROM app.registrations AS r2
                WHERE r2.event_id = person_name.event_id
                  AND r2.user_id = person_name.user_id
                ORDER BY r2.created_at DESC, r2.id DESC
                LIMIT 1),
               (SELECT u.display_name FROM auth.users AS u
                WHERE u.id = person_name.user_id),
               'Participant ' || person_name.user_id)
           END;
$$;

-- The participants of an event: the holders of a valid ticket, with their
-- name (app.person_name) and email address.
CREATE OR REPLACE FUNCTION app.event_participants(event_id bigint)
RETURNS TABLE (user_id bigint, name text, email text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.user_id, app.person_name(t.event_id, t.user_id), u.email
    FROM app.tickets AS t
    JOIN auth.users AS u ON u.id = t.user_id
    WHERE t.event_id = event_participants.event_id
      AND t.status = 'valid';
$$;

-- Whether the user holds a valid ticket for the event.
CREATE OR REPLACE FUNCTION app.is_participant(event_id bigint, user_id bigint)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM app.tickets AS t
                   WHERE t.event_id = is_participant.event_id
                     AND t.user_id = is_participant.user_id
                     AND t.status = 'valid');
$$;

-- "Ann, Bob and Carl"-style list for a mail: "A, B, C", the first 50
-- names then "and N more"; "nobody else yet" for none.
CREATE OR REPLACE FUNCTION app.name_list(names text[])
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
               WHEN coalesce(cardinality(names), 0) = 0 THEN 'nobody else yet'
               WHEN cardinality(names) <= 50 THEN array_to_string(names, ', ')
               ELSE array_to_string(names[1:50], ', ') || ' and '
                    || (cardinality(names) - 50) || ' more'
           END;
$$;

-- When submissions close: the deadline, else the end of the event.
CREATE OR REPLACE FUNCTION app.submissions_close_at(e app.events)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(e.submission_deadline, e.ends_at);
$$;

-- Mails each member of the event's teams (or, with only_user, that
-- member alone) the link to the team page: template team_assigned.
-- Returns how many mails were queued.
CREATE OR REPLACE FUNCTION app.mail_team_links(event_id bigint, base text,
                                               only_user bigint DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events;
    n int;
BEGIN
    SELECT * INTO e FROM app.events AS x
    WHERE x.id = mail_team_links.event_id;

    -- The members concerned (everyone, or only_user's team), named.
    WITH p AS (
        SELECT m.team_id, m.user_id, u.email,
               app.person_name(e.id, m.user_id) AS name
        FROM app.team_members AS m
        JOIN auth.users AS u ON u.id = m.user_id
        WHERE m.event_id = e.id
          AND app.is_participant(e.id, m.user_id)
          AND (only_user IS NULL
               OR m.team_id = (SELECT m2.team_id
                               FROM app.team_members AS m2
                               WHERE m2.event_id = e.id
                                 AND m2.user_id = only_user))
    ), mem AS (
        SELECT p.team_id, p.user_id, p.name, p.email,
               row_number() OVER w AS i,
               array_agg(p.name) OVER w_all AS names
        FROM p
        WINDOW w AS (PARTITION BY p.team_id ORDER BY p.name, p.user_id),
               w_all AS (w ROWS BETWEEN UNBOUNDED PRECEDING
                                AND UNBOUNDED FOLLOWING)
    )
    SELECT count(jobs.enqueue('mail', jsonb_build_object(
               'to', mem.email,
               'template', 'team_assigned',
               'vars', jsonb_build_object(
                   'name', mem.name,
                   'event_title', e.title,
                   'team_name', t.name,
                   'link', base || '/team.html?event=' || e.id,
                   'teammates', app.name_list(mem.names[:mem.i - 1]
                                              || mem.names[mem.i + 1:])))))
    INTO n
    FROM mem
    JOIN app.teams AS t ON t.id = mem.team_id
    WHERE only_user IS NULL OR mem.user_id = only_user;

    RETURN n;
END
$$;

-- A submission as members and organisers see it.
CREATE OR REPLACE FUNCTION app.submission_json(s app.submissions)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.id IS NOT NULL THEN json_build_object(
        'id', s.id,
        'title', s.title,
        'link', s.link,
        'description', s.description,
        'submitted_by', app.person_name(s.event_id, s.submitted_by),
        'updated_by', app.person_name(s.event_id, s.updated_by),
        'created_at', s.created_at,
        'updated_at', s.updated_at)
    END;
$$;

-- The organiser's view of an event's teams: every team with its members
-- (id, name, email) and submission summary, and the participants in no
-- team.
CREATE OR REPLACE FUNCTION app.teams_json(e app.events)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH p AS (
        SELECT * FROM app.event_participants(e.id)
    ), members AS (
        SELECT m.team_id,
               json_agg(json_build_object('user_id', p.user_id,
                                          'name', p.name,
                                          'email', p.email)
                        ORDER BY p.name, p.user_id) AS list,
               count(*) AS n
        FROM app.team_members AS m
        JOIN p ON p.user_id = m.user_id
        WHERE m.event_id = e.id
        GROUP BY m.team_id
    )
    SELECT json_build_object(
        'event_id', e.id,
        'team_size', e.team_size,
        'submission_deadline', e.submission_deadline,
        'closes_at', app.submissions_close_at(e),
        'participants', (SELECT count(*) FROM p),
        'teams',
        (SELECT coalesce(json_agg(json_build_object(
                    'id', t.id,
                    'number', t.number,
                    'name', t.name,
                    'created_at', t.created_at,
                    'size', coalesce(mb.n, 0),
                    'members', coalesce(mb.list, '[]'::json),
                    'submission',
                    CASE WHEN s.id IS NOT NULL THEN json_build_object(
                        'id', s.id,
                        'title', s.title,
                        'link', s.link,
                        'updated_at', s.updated_at)
                    END) ORDER BY t.number), '[]'::json)
         FROM app.teams AS t
         LEFT JOIN members AS mb ON mb.team_id = t.id
         LEFT JOIN app.submissions AS s ON s.team_id = t.id
         WHERE t.event_id = e.id),
        'unassigned',
        (SELECT coalesce(json_agg(json_build_object('user_id', p.user_id,
                                                    'name', p.name,
                                                    'email', p.email)
                                  ORDER BY p.name, p.user_id), '[]'::json)
         FROM p
         WHERE NOT EXISTS (SELECT 1 FROM app.team_members AS m
                           WHERE m.event_id = e.id
                             AND m.user_id = p.user_id)));
$$;

-- A JSON id (a whole number >= 1) from the body, NULL for JSON null.
CREATE OR REPLACE FUNCTION app.json_id(body jsonb, field text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body->field = 'null'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(body->field) IS DISTINCT FROM 'number' THEN
        PERFORM app.bad_field(field, field || ' must be an id (a whole '
                                     'number of at least 1).');
    END IF;
    IF (body->>field)::numeric <> trunc((body->>field)::numeric)
       OR (body->>field)::numeric NOT BETWEEN 1 AND 9223372036854775807
    THEN
        PERFORM app.bad_field(field, field || ' must be an id (a whole '
                                     'number of at least 1).');
    END IF;
    RETURN (body->>field)::bigint;
END
$$;

-- A ticket that stops being valid takes its holder out of the event's
-- team (only valid ticket holders are participants).
CREATE OR REPLACE FUNCTION app.tickets_leave_team()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.status = 'valid'
       AND (TG_OP = 'DELETE' OR NEW.status <> 'valid'
            OR NEW.user_id <> OLD.user_id OR NEW.event_id <> OLD.event_id)
       AND NOT app.is_participant(OLD.event_id, OLD.user_id)
    THEN
        DELETE FROM app.team_members AS m
        WHERE m.event_id = OLD.event_id AND m.user_id = OLD.user_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER tickets_leave_team
    AFTER UPDATE OR DELETE ON app.tickets
    FOR EACH ROW EXECUTE FUNCTION app.tickets_leave_team();

REVOKE EXECUTE ON FUNCTION
    app.valid_email(text),
    app.public_base(text),
    app.org_event_read(bigint, bigint),
    app.event_participants(bigint),
    app.person_name(bigint, bigint),
    app.is_participant(bigint, bigint),
    app.name_list(text[]),
    app.submissions_close_at(app.events),
    app.mail_team_links(bigint, text, bigint),
    app.submission_json(app.submissions),
    app.teams_json(app.events),
    app.json_id(jsonb, text),
    app.tickets_leave_team()
FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Mail template
-- ---------------------------------------------------------------------

-- vars: name, event_title, team_name, link, teammates
INSERT INTO jobs.mail_templates (name, subject, text, html)
VALUES (
    'team_assigned',
    'Your team for {{event_title}}: {{team_name}}',
    E'Hello {{name}},\n\n'
    || E'you are in {{team_name}} for "{{event_title}}".\n\n'
    || E'Your teammates: {{teammates}}.\n\n'
    || E'Your team''s page, where you also hand in your work (sign in with '
    || E'this address):\n\n'
    || E'{{link}}\n',
    E'<!DOCTYPE html>\n'
    || E'<html><body style="font-family: sans-serif">\n'
    || E'<p>Hello {{name}},</p>\n'
    || E'<p>you are in <strong>{{team_name}}</strong> for '
    || E'&ldquo;{{event_title}}&rdquo;.</p>\n'
    || E'<p>Your teammates: {{teammates}}.</p>\n'
    || E'<p><a href="{{link}}">Your team''s page</a>, where you also hand in '
    || E'your work (sign in with this address).</p>\n'
    || E'</body></html>\n'
)
ON CONFLICT (name) DO NOTHING;


-- ---------------------------------------------------------------------
-- Endpoints: organisers (platform_auth organiser org=$1)
-- ---------------------------------------------------------------------

-- POST /api/orgs/{org}/events/{id}/teams
--   api.teams_split($platform_org::bigint, $2::bigint,
--                   $platform_body::jsonb, $platform_public_url)
-- body {"by": "count"|"size" (default "size"), "value": 1..10000 (default
-- for "size": the event's team_size), "force": bool}.  Splits the current
-- participants at random into balanced teams (sizes differ by at most
-- one; never more teams than participants, never a team above "size"),
-- replacing the teams there were; mails every member the team link.
-- 201 with the teams (as GET).  409 when nobody holds a ticket, and when a
-- team has a submission (it would be deleted) unless "force": true.
CREATE OR REPLACE FUNCTION api.teams_split(org_id bigint, event_id bigint,
                                           body jsonb, base_url text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e        app.events := app.org_event(org_id, event_id);
    v_base   text := app.public_base(base_url);
    v_by     text := 'size';
    v_value  int;
    v_force  boolean := false;
    n        int;
    k        int;
    blockers text;
BEGIN
    PERFORM app.check_fields(body, ARRAY['by', 'value', 'force']);

    IF body ? 'by' THEN
        IF jsonb_typeof(body->'by') IS DISTINCT FROM 'string'
           OR body->>'by' NOT IN ('count', 'size') THEN
            PERFORM app.bad_field('by', 'by must be "count" or "size".');
        END IF;
        v_by := body->>'by';
    END IF;

    IF body ? 'value' AND body->'value' <> 'null'::jsonb THEN
        IF jsonb_typeof(body->'value') <> 'number' THEN
            PERFORM app.bad_field('value',
                'value must be a whole number from 1 to 10000.');
        END IF;
        IF (body->>'value')::numeric <> trunc((body->>'value')::numeric)
           OR (body->>'value')::numeric NOT BETWEEN 1 AND 10000 THEN
            PERFORM app.bad_field('value',
                'value must be a whole number from 1 to 10000.');
        END IF;
        v_value := (body->>'value')::int;
    ELSIF v_by = 'size' AND coalesce(e.team_size, 0) > 0 THEN
        v_value := e.team_size;
    ELSIF v_by = 'count' THEN
        PERFORM app.bad_field('value', 'value (the number of teams) is required.');
    ELSE
        PERFORM app.bad_field('value', 'value (the team size) is required: '
                                       'the event has no team size.');
    END IF;

    IF body ? 'force' THEN
        v_force := app.json_bool(body, 'force');
    END IF;

    -- Lock the teams first: a member saving a submission meanwhile is
    -- waited for, and seen below.
    PERFORM 1 FROM app.teams AS t WHERE t.event_id = e.id FOR UPDATE;

    SELECT string_agg(t.name, ', ' ORDER BY t.number) INTO blockers
    FROM app.submissions AS s
    JOIN app.teams AS t ON t.id = s.team_id
    WHERE s.event_id = e.id;

    IF blockers IS NOT NULL AND NOT v_force THEN
        RAISE EXCEPTION 'Teams have already submitted work (%): splitting '
                        'again would delete their submissions.',
                        left(blockers, 200)
            USING ERRCODE = 'PT409',
                  HINT = 'Send "force": true to split anyway.';
    END IF;

    SELECT count(*) INTO n FROM app.event_participants(e.id);
    IF n = 0 THEN
        RAISE EXCEPTION 'Nobody holds a ticket for this event yet: there is '
                        'no one to split into teams.'
            USING ERRCODE = 'PT409';
    END IF;

    k := CASE v_by WHEN 'count' THEN least(v_value, n)
                   ELSE ceil(n::numeric / v_value)::int END;

    -- Members and submissions go with their teams (ON DELETE CASCADE).
    DELETE FROM app.teams AS t WHERE t.event_id = e.id;

    INSERT INTO app.teams (event_id, number, name)
    SELECT e.id, g, 'Team ' || g FROM generate_series(1, k) AS g;

    -- Shuffle, then deal round-robin: team sizes differ by at most one.
    INSERT INTO app.team_members (team_id, event_id, user_id)
    SELECT t.id, e.id, s.user_id
    FROM (SELECT p.user_id, row_number() OVER (ORDER BY random()) AS rn
          FROM app.event_participants(e.id) AS p) AS s
    JOIN app.teams AS t
      ON t.event_id = e.id AND t.number = ((s.rn - 1) % k) + 1;

    PERFORM app.mail_team_links(e.id, v_base);

    PERFORM platform.set_status(201);
    RETURN app.teams_json(e);
END
$$;

-- GET /api/orgs/{org}/events/{id}/teams
--   api.teams_get($platform_org::bigint, $2::bigint)
-- {"event_id", "team_size", "submission_deadline", "closes_at",
--  "participants", "teams": [{"id", "number", "name", "created_at", "size",
--  "members": [{"user_id", "name", "email"}], "submission": {"id", "title",
--  "link", "updated_at"} | null}], "unassigned": [{"user_id", "name",
--  "email"}]}
CREATE OR REPLACE FUNCTION api.teams_get(org_id bigint, event_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN app.teams_json(app.org_event_read(org_id, event_id));
END
$$;

-- POST /api/orgs/{org}/events/{id}/teams/moves
--   api.team_move($platform_org::bigint, $2::bigint, $platform_body::jsonb,
--                 $platform_public_url)
-- body {"user_id", "team_id"} (team_id null: out of any team).  The person
-- must hold a valid ticket for the event (else 400 user_id), the team must
-- be one of the event's (else 400 team_id).  A person who changes team is
-- mailed the new team's link.  {"user_id", "team": {"id", "number",
-- "name"} | null, "moved": bool}
CREATE OR REPLACE FUNCTION api.team_move(org_id bigint, event_id bigint,
                                         body jsonb, base_url text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e      app.events := app.org_event(org_id, event_id);
    v_base text := app.public_base(base_url);
    v_user bigint;
    v_team bigint;
    t      app.teams;
    old    bigint;
BEGIN
    PERFORM app.check_fields(body, ARRAY['user_id', 'team_id']);

    IF NOT body ? 'user_id' OR body->'user_id' = 'null'::jsonb THEN
        PERFORM app.bad_field('user_id', 'user_id is required.');
    END IF;
    v_user := app.json_id(body, 'user_id');

    IF NOT body ? 'team_id' THEN
        PERFORM app.bad_field('team_id', 'team_id is required (null takes '
                                         'the person out of their team).');
    END IF;
    v_team := app.json_id(body, 'team_id');

    IF NOT app.is_participant(e.id, v_user) THEN
        PERFORM app.bad_field('user_id', 'user_id does not hold a ticket '
                                         'for this event.');
    END IF;

    IF v_team IS NOT NULL THEN
        SELECT * INTO t FROM app.teams AS x
        WHERE x.id = v_team AND x.event_id = e.id;
        IF NOT FOUND THEN
            PERFORM app.bad_field('team_id', 'team_id is not a team of this '
                                             'event.');
        END IF;
    END IF;

    SELECT m.team_id INTO old FROM app.team_members AS m
    WHERE m.event_id = e.id AND m.user_id = v_user;

    IF old IS DISTINCT FROM v_team THEN
        DELETE FROM app.team_members AS m
        WHERE m.event_id = e.id AND m.user_id = v_user;

        IF v_team IS NOT NULL THEN
            INSERT INTO app.team_members (team_id, event_id, user_id)
            VALUES (v_team, e.id, v_user);
            PERFORM app.mail_team_links(e.id, v_base, v_user);
        END IF;
    END IF;

    RETURN json_build_object(
        'user_id', v_user,
        'team', CASE WHEN v_team IS NOT NULL THEN json_build_object(
                    'id', t.id, 'number', t.number, 'name', t.name) END,
        'moved', old IS DISTINCT FROM v_team);
END
$$;

-- PUT /api/orgs/{org}/events/{id}/submission-deadline
--   api.submission_deadline_set($platform_org::bigint, $2::bigint,
--                               $platform_body::jsonb)
-- body {"deadline": ISO 8601 date and time | null}.  {"event_id",
-- "submission_deadline", "closes_at", "open"}
CREATE OR REPLACE FUNCTION api.submission_deadline_set(org_id bigint,
                                                       event_id bigint,
                                                       body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
    v timestamptz;
BEGIN
    PERFORM app.check_fields(body, ARRAY['deadline']);

    IF NOT body ? 'deadline' THEN
        PERFORM app.bad_field('deadline', 'deadline is required (null '
                                          'removes it).');
    END IF;
    IF body->'deadline' <> 'null'::jsonb THEN
        v := app.json_time(body, 'deadline');
    END IF;

    UPDATE app.events AS x
    SET submission_deadline = v, updated_at = now()
    WHERE x.id = e.id
    RETURNING * INTO e;

    RETURN json_build_object(
        'event_id', e.id,
        'submission_deadline', e.submission_deadline,
        'closes_at', app.submissions_close_at(e),
        'open', now() < app.submissions_close_at(e));
END
$$;

-- GET /api/orgs/{org}/events/{id}/submissions
--   api.submissions_list($platform_org::bigint, $2::bigint)
-- {"event_id", "submission_deadline", "closes_at", "open", "submissions":
--  [{"id", "title", "link", "description", "submitted_by", "updated_by"
--  (names), "created_at", "updated_at", "team": {"id", "number", "name",
--  "members": [{"user_id", "name", "email"}]}}]} in team order.
CREATE OR REPLACE FUNCTION api.submissions_list(org_id bigint,
                                                event_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e      app.events := app.org_event_read(org_id, event_id);
    result json;
BEGIN
    WITH p AS (
        SELECT * FROM app.event_participants(e.id)
    ), members AS (
        SELECT m.team_id,
               json_agg(json_build_object('user_id', p.user_id,
                                          'name', p.name,
                                          'email', p.email)
                        ORDER BY p.name, p.user_id) AS list
        FROM app.team_members AS m
        JOIN p ON p.user_id = m.user_id
        WHERE m.event_id = e.id
        GROUP BY m.team_id
    )
    SELECT json_build_object(
        'event_id', e.id,
        'submission_deadline', e.submission_deadline,
        'closes_at', app.submissions_close_at(e),
        'open', now() < app.submissions_close_at(e),
        'submissions',
        coalesce(json_agg(json_build_object(
                     'id', s.id,
                     'title', s.title,
                     'link', s.link,
                     'description', s.description,
                     'submitted_by', app.person_name(e.id, s.submitted_by),
                     'updated_by', app.person_name(e.id, s.updated_by),
                     'created_at', s.created_at,
                     'updated_at', s.updated_at,
                     'team', json_build_object(
                         'id', t.id,
                         'number', t.number,
                         'name', t.name,
                         'members', coalesce(mb.list, '[]'::json)))
                 ORDER BY t.number) FILTER (WHERE s.id IS NOT NULL),
                 '[]'::json))
    INTO result
    FROM (SELECT 1) AS one
    LEFT JOIN app.submissions AS s ON s.event_id = e.id
    LEFT JOIN app.teams AS t ON t.id = s.team_id
    LEFT JOIN members AS mb ON mb.team_id = s.team_id;

    RETURN result;
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints: participants
-- ---------------------------------------------------------------------

-- POST /api/events/{id}/team-link (no session needed)
--   api.team_link_request(event_id => $1::bigint,
--       body => $platform_body::jsonb, client_ip => $remote_addr,
--       base_url => $platform_public_url,
--       per_email => $platform_links_per_email::int,
--       per_ip => $platform_links_per_ip::int)
-- body {"email"}.  When the address holds a valid ticket for the event and
-- is in a team, its team link is mailed again.  Always 202
-- {"status":"sent"} (whether someone registered does not leak); 400 for a
-- malformed address; 429 + Retry-After past per_email / per_ip requests
-- per window_seconds (counted apart from sign-in links).
CREATE OR REPLACE FUNCTION api.team_link_request(event_id bigint,
                                                 body jsonb,
                                                 client_ip text,
                                                 base_url text,
                                                 per_email int DEFAULT 5,
                                                 per_ip int DEFAULT 20,
                                                 window_seconds int DEFAULT 900)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_base   text := app.public_base(base_url);
    v_ip     inet := auth.to_inet(client_ip);
    v_window int := coalesce(window_seconds, 900);
    v_email  text;
    v_user   bigint;
    retry    int;
BEGIN
    IF v_window NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'team links are not configured correctly'
            USING ERRCODE = 'PT500', DETAIL = 'check window_seconds';
    END IF;

    PERFORM app.check_fields(body, ARRAY['email']);
    IF NOT body ? 'email' THEN
        PERFORM app.bad_field('email', 'Please enter your email address.');
    END IF;
    v_email := lower(app.json_text(body, 'email', 254, 1));
    IF NOT app.valid_email(v_email) THEN
        PERFORM app.bad_field('email', 'This does not look like an email '
                                       'address.');
    END IF;

    -- Limits.  Nothing is counted for a refused request.
    retry := greatest(
        auth.rate_retry_after('team_link_email', v_email, per_email, v_window),
        auth.rate_retry_after('team_link_ip', host(v_ip), per_ip, v_window));

    IF retry IS NOT NULL THEN
        RETURN auth.too_many(retry,
            'Too many team links were requested. Please wait '
            || auth.wait_words(retry) || ' and try again.');
    END IF;

    PERFORM auth.rate_hit('team_link_email', v_email);
    PERFORM auth.rate_hit('team_link_ip', host(v_ip));

    SELECT u.id INTO v_user FROM auth.users AS u WHERE u.email = v_email;

    IF v_user IS NOT NULL
       AND app.is_participant(team_link_request.event_id, v_user)
       AND EXISTS (SELECT 1 FROM app.team_members AS m
                   WHERE m.event_id = team_link_request.event_id
                     AND m.user_id = v_user)
    THEN
        PERFORM app.mail_team_links(team_link_request.event_id, v_base,
                                    v_user);
    END IF;

    PERFORM platform.set_status(202);
    RETURN json_build_object('status', 'sent');
END
$$;

-- GET /api/events/{id}/team (platform_auth any)
--   api.my_team($platform_user::bigint, $1::bigint)
-- The caller's team in the event: {"event": {"id", "title", "starts_at",
-- "ends_at"}, "team": {"id", "number", "name", "members": [{"name",
-- "you"}]}, "submission": {...} | null, "submission_deadline",
-- "closes_at", "editable"}.  404 when the caller is in no team of it.
CREATE OR REPLACE FUNCTION api.my_team(user_id bigint, event_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t app.teams;
    e app.events;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    SELECT x.* INTO t
    FROM app.team_members AS m
    JOIN app.teams AS x ON x.id = m.team_id
    WHERE m.event_id = my_team.event_id
      AND m.user_id = my_team.user_id
      AND app.is_participant(m.event_id, m.user_id);

    IF NOT FOUND THEN
        RAISE EXCEPTION 'You are not in a team of this event.'
            USING ERRCODE = 'PT404';
    END IF;

    SELECT * INTO e FROM app.events AS x WHERE x.id = t.event_id;

    RETURN json_build_object(
        'event', json_build_object('id', e.id, 'title', e.title,
                                   'starts_at', e.starts_at,
                                   'ends_at', e.ends_at),
        'team', json_build_object(
            'id', t.id,
            'number', t.number,
            'name', t.name,
            'members',
            (SELECT coalesce(json_agg(json_build_object(
                                 'name', p.name,
                                 'you', p.user_id = my_team.user_id)
                             ORDER BY p.name, p.user_id), '[]'::json)
             FROM (SELECT m.user_id, app.person_name(e.id, m.user_id) AS name
                   FROM app.team_members AS m
                   WHERE m.team_id = t.id
                     AND app.is_participant(e.id, m.user_id)) AS p)),
        'submission', (SELECT app.submission_json(s)
                       FROM app.submissions AS s WHERE s.team_id = t.id),
        'submission_deadline', e.submission_deadline,
        'closes_at', app.submissions_close_at(e),
        'editable', now() < app.submissions_close_at(e));
END
$$;

-- PUT /api/events/{id}/team/submission (platform_auth any)
--   api.team_submission_put($platform_user::bigint, $1::bigint,
--                           $platform_body::jsonb)
-- body {"title" (1..200), "link" (http(s), up to 2000), "description"
-- (optional, up to 10000)}.  Creates (201) or replaces (200) the caller's
-- team's submission while submissions are open; 404 when the caller is in
-- no team of the event, 409 after the deadline.  Answers the submission.
CREATE OR REPLACE FUNCTION api.team_submission_put(user_id bigint,
                                                   event_id bigint,
                                                   body jsonb)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t       app.teams;
    e       app.events;
    s       app.submissions;
    v_title text;
    v_link  text;
    v_desc  text := '';
    created boolean;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    -- The team row is locked: edits by teammates, and a new split, wait
    -- for each other.
    SELECT x.* INTO t
    FROM app.team_members AS m
    JOIN app.teams AS x ON x.id = m.team_id
    WHERE m.event_id = team_submission_put.event_id
      AND m.user_id = team_submission_put.user_id
      AND app.is_participant(m.event_id, m.user_id)
    FOR UPDATE OF x;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'You are not in a team of this event.'
            USING ERRCODE = 'PT404';
    END IF;

    SELECT * INTO e FROM app.events AS x WHERE x.id = t.event_id;

    IF now() >= app.submissions_close_at(e) THEN
        RAISE EXCEPTION 'The submission deadline has passed.'
            USING ERRCODE = 'PT409';
    END IF;

    PERFORM app.check_fields(body, ARRAY['title', 'link', 'description']);
    v_title := app.json_text(body, 'title', 200, 1);
    v_link := app.json_text(body, 'link', 2000, 1);
    IF v_link !~ '^https?://[^[:space:][:cntrl:]]+$' THEN
        PERFORM app.bad_field('link', 'link must be an http(s) address.');
    END IF;
    IF body ? 'description' AND body->'description' <> 'null'::jsonb THEN
        v_desc := app.json_text(body, 'description', 10000);
    END IF;

    -- (the team row lock makes this check and the upsert one step)
    created := NOT EXISTS (SELECT 1 FROM app.submissions AS x
                           WHERE x.team_id = t.id);

    INSERT INTO app.submissions AS x (team_id, event_id, title, link,
                                      description, submitted_by, updated_by)
    VALUES (t.id, t.event_id, v_title, v_link, v_desc,
            team_submission_put.user_id, team_submission_put.user_id)
    ON CONFLICT (team_id) DO UPDATE
    SET title = excluded.title, link = excluded.link,
        description = excluded.description,
        updated_by = excluded.updated_by, updated_at = now()
    RETURNING x.* INTO s;

    IF created THEN
        PERFORM platform.set_status(201);
    END IF;

    RETURN app.submission_json(s);
END
$$;

GRANT EXECUTE ON FUNCTION
    api.teams_split(bigint, bigint, jsonb, text),
    api.teams_get(bigint, bigint),
    api.team_move(bigint, bigint, jsonb, text),
    api.submission_deadline_set(bigint, bigint, jsonb),
    api.submissions_list(bigint, bigint),
    api.team_link_request(bigint, jsonb, text, text, int, int, int),
    api.my_team(bigint, bigint),
    api.team_submission_put(bigint, bigint, jsonb)
TO platform_app;
