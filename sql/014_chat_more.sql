-- 014_chat_more.sql - event chat, continued (issue 5): help requests,
-- engagement (connections, minutes connected, messages sent per
-- participant), and api.chat_store counting messages.  docs/chat.md.
--
-- Written by the nginx workers (ngx_platform_chat.c) through the async
-- pool: help requests one statement per press (rate limited), engagement
-- in batches per worker (api.chat_engagement_store), messages in the
-- existing batches (api.chat_store).  Read by organisers over REST
-- (conf/api/chat.conf).  A later analytics issue builds on the three
-- engagement tables; they are kept plain on purpose.


-- ---------------------------------------------------------------- help

CREATE TABLE IF NOT EXISTS app.help_requests (
    id          bigserial PRIMARY KEY,
    event_id    bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    -- the user's team when the request was made (null: none)
    team_id     bigint REFERENCES app.teams (id) ON DELETE SET NULL,
    -- the room the request came from
    room        text NOT NULL
                CONSTRAINT help_requests_room_check
                CHECK (room ~ '^(main|team:[0-9]{1,19})$'),
    text        text NOT NULL DEFAULT ''
                CONSTRAINT help_requests_text_check
                CHECK (length(text) <= 8000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    cleared_at  timestamptz,
    cleared_by  bigint REFERENCES auth.users (id) ON DELETE SET NULL
);

-- at most one open request per user and event: a second press updates it
CREATE UNIQUE INDEX IF NOT EXISTS help_requests_open_idx
    ON app.help_requests (event_id, user_id) WHERE cleared_at IS NULL;

CREATE INDEX IF NOT EXISTS help_requests_event_idx
    ON app.help_requests (event_id, created_at);

REVOKE ALL ON app.help_requests FROM PUBLIC, platform_app;


-- ---------------------------------------------------------------- engagement

-- one row per WebSocket connection; key is made by the worker
-- ("<pid>-<worker start>-<n>"), closed_at set by the close's batch or by
-- maintenance.chat_connections_close (no beat for a while)
CREATE TABLE IF NOT EXISTS app.chat_connections (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL
                CONSTRAINT chat_connections_key_key UNIQUE
                CONSTRAINT chat_connections_key_check
                CHECK (length(key) <= 100),
    event_id    bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    room        text NOT NULL,
    opened_at   timestamptz NOT NULL,
    closed_at   timestamptz
);

CREATE INDEX IF NOT EXISTS chat_connections_event_idx
    ON app.chat_connections (event_id, user_id);
CREATE INDEX IF NOT EXISTS chat_connections_open_idx
    ON app.chat_connections (opened_at) WHERE closed_at IS NULL;

-- the minutes a participant was connected (any room, any number of
-- sockets: one row per minute)
CREATE TABLE IF NOT EXISTS app.engagement_minutes (
    event_id    bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    minute      timestamptz NOT NULL,
    CONSTRAINT engagement_minutes_pkey PRIMARY KEY (event_id, user_id, minute)
);

-- messages sent per participant
CREATE TABLE IF NOT EXISTS app.engagement_counters (
    event_id    bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    messages    bigint NOT NULL DEFAULT 0,
    last_message_at timestamptz,
    CONSTRAINT engagement_counters_pkey PRIMARY KEY (event_id, user_id)
);

REVOKE ALL ON app.chat_connections, app.engagement_minutes,
              app.engagement_counters FROM PUBLIC, platform_app;


-- ---------------------------------------------------------------- helpers

-- organiser or owner of the event's organisation; PT401/PT404/PT403
CREATE OR REPLACE FUNCTION app.chat_organiser_check(user_id bigint,
                                                    event_id bigint)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_org bigint;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'Sign in first.' USING ERRCODE = 'PT401';
    END IF;

    SELECT e.organisation_id INTO v_org
    FROM app.events AS e WHERE e.id = chat_organiser_check.event_id;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    IF v_org IS NULL OR NOT EXISTS (
        SELECT 1 FROM auth.memberships AS m
        WHERE m.user_id = chat_organiser_check.user_id
          AND m.org_id = v_org AND m.role IN ('organiser', 'owner'))
    THEN
        RAISE EXCEPTION 'This is for the event''s organisers.'
            USING ERRCODE = 'PT403';
    END IF;
END
$$;


-- a user as the chat shows them: {"id", "name", "avatar"} (the name as in
-- app.chat_room)
CREATE OR REPLACE FUNCTION app.chat_user_json(user_id bigint, event_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', u.id,
        'name', left(coalesce(nullif(u.display_name, ''),
                              (SELECT r.name FROM app.tickets AS t
                               JOIN app.registrations AS r
                                 ON r.id = t.registration_id
                               WHERE t.event_id = chat_user_json.event_id
                                 AND t.user_id = u.id AND t.status = 'valid'
                               LIMIT 1),
                              'Participant ' || u.id), 200),
        'avatar', NULL)
    FROM auth.users AS u
    WHERE u.id = chat_user_json.user_id
$$;


CREATE OR REPLACE FUNCTION app.chat_time(t timestamptz)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;


-- a help request as the admin room and REST show it
CREATE OR REPLACE FUNCTION app.help_request_json(h app.help_requests)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'id', h.id,
        'user', app.chat_user_json(h.user_id, h.event_id),
        'team_id', h.team_id,
        'room', h.room,
        'text', h.text,
        'time', app.chat_time(h.created_at),
        'updated_at', app.chat_time(h.updated_at),
        'cleared_at', app.chat_time(h.cleared_at),
        'cleared_by', CASE WHEN h.cleared_by IS NOT NULL
                           THEN app.chat_user_json(h.cleared_by, h.event_id)
                      END)
$$;


-- ---------------------------------------------------------------- help API

-- A participant's press in a room (main, team:<id>) they were admitted to:
-- the open request, created or updated.  nginx, from an open WebSocket:
--   SELECT api.chat_help(user, event, room, text)
CREATE OR REPLACE FUNCTION api.chat_help(user_id bigint, event_id bigint,
                                         room text, text text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j       json := app.chat_room(chat_help.user_id, chat_help.event_id,
                                  chat_help.room);
    v_room  text := j ->> 'room';
    v_team  bigint;
    h       app.help_requests;
BEGIN
    IF v_room = 'admin' THEN
        RAISE EXCEPTION 'Help requests come from the main or a team room.'
            USING ERRCODE = 'PT403';
    END IF;

    IF length(coalesce(chat_help.text, '')) > 8000 THEN
        RAISE EXCEPTION 'text: at most 8000 characters'
            USING ERRCODE = '22023';
    END IF;

    SELECT tm.team_id INTO v_team
    FROM app.team_members AS tm
    WHERE tm.event_id = chat_help.event_id AND tm.user_id = chat_help.user_id;

    INSERT INTO app.help_requests AS x (event_id, user_id, team_id, room,
                                        text)
    VALUES (chat_help.event_id, chat_help.user_id, v_team, v_room,
            coalesce(chat_help.text, ''))
    ON CONFLICT (event_id, user_id) WHERE cleared_at IS NULL
    DO UPDATE SET text = excluded.text, room = excluded.room,
                  team_id = excluded.team_id, updated_at = now()
    RETURNING * INTO h;

    RETURN app.help_request_json(h);
END
$$;


-- An organiser clears a request of the event (again: no change).
-- {"id", "by": {user}, "user_id", "room", "cleared_at"}
-- POST /api/events/{id}/help/{rid}/clear, and the admin room's help_clear
CREATE OR REPLACE FUNCTION api.chat_help_clear(user_id bigint,
                                               event_id bigint,
                                               request_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h app.help_requests;
BEGIN
    PERFORM app.chat_organiser_check(user_id, event_id);

    UPDATE app.help_requests AS x
    SET cleared_at = now(), cleared_by = chat_help_clear.user_id
    WHERE x.id = request_id AND x.event_id = chat_help_clear.event_id
      AND x.cleared_at IS NULL
    RETURNING * INTO h;

    IF NOT FOUND THEN
        SELECT * INTO h FROM app.help_requests AS x
        WHERE x.id = request_id AND x.event_id = chat_help_clear.event_id;

        IF NOT FOUND THEN
            RAISE EXCEPTION 'No such help request.' USING ERRCODE = 'PT404';
        END IF;
    END IF;

    RETURN json_build_object(
        'id', h.id,
        'by', app.chat_user_json(h.cleared_by, h.event_id),
        'user_id', h.user_id,
        'room', h.room,
        'cleared_at', app.chat_time(h.cleared_at));
END
$$;


-- The event's requests, oldest first: the open ones, all with "all".
-- {"event_id", "requests": [...]}    GET /api/events/{id}/help[?all=1]
CREATE OR REPLACE FUNCTION api.chat_help_list(user_id bigint,
                                              event_id bigint,
                                              "all" boolean DEFAULT false)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM app.chat_organiser_check(user_id, event_id);

    RETURN json_build_object(
        'event_id', event_id,
        'requests', coalesce((
            SELECT json_agg(app.help_request_json(h)
                            ORDER BY h.created_at, h.id)
            FROM app.help_requests AS h
            WHERE h.event_id = chat_help_list.event_id
              AND (coalesce(chat_help_list."all", false)
                   OR h.cleared_at IS NULL)), '[]'));
END
$$;


-- ------------------------------------------------------- engagement API

-- nginx's engagement batches: a JSON array of
--   {"k": "o" (opened) | "c" (closed) | "b" (beat), "c": connection key,
--    "e": event, "u": user, "r": room, "at": time}
-- Opened rows are inserted (again: skipped), closed ones get closed_at,
-- and every item marks its minute as connected.  Items of a deleted event
-- or user are skipped.  Only nginx calls it.  The number of items.
CREATE OR REPLACE FUNCTION api.chat_engagement_store(batch jsonb)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    -- one statement: an open and its close in the same batch make one row
    -- (the UPDATE does not see the INSERT's rows)
    WITH b AS (
        SELECT x.k, x.c, x.e, x.u, x.r, coalesce(x.at, now()) AS at
        FROM jsonb_to_recordset(batch) AS x(k text, c text, e bigint,
                                            u bigint, r text,
                                            at timestamptz)
        WHERE EXISTS (SELECT 1 FROM app.events AS ev WHERE ev.id = x.e)
          AND EXISTS (SELECT 1 FROM auth.users AS us WHERE us.id = x.u)
    ), opened AS (
        INSERT INTO app.chat_connections (key, event_id, user_id, room,
                                          opened_at, closed_at)
        SELECT DISTINCT ON (b.c) b.c, b.e, b.u, coalesce(b.r, ''), b.at,
               (SELECT max(b2.at) FROM b AS b2
                WHERE b2.k = 'c' AND b2.c = b.c)
        FROM b
        WHERE b.k = 'o' AND b.c IS NOT NULL
        ORDER BY b.c, b.at
        ON CONFLICT ON CONSTRAINT chat_connections_key_key DO NOTHING
        RETURNING 1
    ), closed AS (
        UPDATE app.chat_connections AS cn
        SET closed_at = greatest(b.at, cn.opened_at)
        FROM b
        WHERE b.k = 'c' AND cn.key = b.c AND cn.closed_at IS NULL
        RETURNING 1
    ), minutes AS (
        INSERT INTO app.engagement_minutes (event_id, user_id, minute)
        SELECT DISTINCT b.e, b.u, date_trunc('minute', b.at)
        FROM b
        ON CONFLICT ON CONSTRAINT engagement_minutes_pkey DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO n FROM b;

    RETURN n;
END
$$;


-- messages are counted per participant in the same statement that stores
-- them (replaces 013's version)
CREATE OR REPLACE FUNCTION api.chat_store(batch jsonb)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    WITH ins AS (
        INSERT INTO app.chat_messages (event_id, room, id, user_id,
                                       sender_name, text, created_at)
        SELECT x.e, x.r, x.i, x.u, left(x.n, 200), left(x.t, 8000),
               coalesce(x.at, now())
        FROM jsonb_to_recordset(batch) AS x(e bigint, r text, i bigint,
                                            u bigint, n text, t text,
                                            at timestamptz)
        WHERE EXISTS (SELECT 1 FROM app.events AS ev WHERE ev.id = x.e)
        ON CONFLICT ON CONSTRAINT chat_messages_pkey DO NOTHING
        RETURNING event_id, user_id, created_at
    ), counted AS (
        INSERT INTO app.engagement_counters AS c (event_id, user_id,
                                                  messages, last_message_at)
        SELECT i.event_id, i.user_id, count(*), max(i.created_at)
        FROM ins AS i
        WHERE i.user_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = i.user_id)
        GROUP BY i.event_id, i.user_id
        ON CONFLICT ON CONSTRAINT engagement_counters_pkey
        DO UPDATE SET messages = c.messages + excluded.messages,
                      last_message_at = greatest(c.last_message_at,
                                                 excluded.last_message_at)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM ins;

    RETURN n;
END
$$;


-- Per participant of the event (anyone who connected or wrote): minutes
-- connected, messages sent, first and last seen.  Organisers.
-- {"event_id", "participants": [{"user": {...}, "minutes", "messages",
--   "connections", "first_seen", "last_seen"}]}, most minutes first.
-- GET /api/events/{id}/engagement
CREATE OR REPLACE FUNCTION api.event_engagement(user_id bigint,
                                                event_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v json;
BEGIN
    PERFORM app.chat_organiser_check(user_id, event_id);

    WITH who AS (
        SELECT m.user_id FROM app.engagement_minutes AS m
        WHERE m.event_id = event_engagement.event_id
        UNION
        SELECT c.user_id FROM app.engagement_counters AS c
        WHERE c.event_id = event_engagement.event_id
        UNION
        SELECT cn.user_id FROM app.chat_connections AS cn
        WHERE cn.event_id = event_engagement.event_id
    ), per AS (
        SELECT w.user_id,
               (SELECT count(*) FROM app.engagement_minutes AS m
                WHERE m.event_id = event_engagement.event_id
                  AND m.user_id = w.user_id) AS minutes,
               coalesce((SELECT c.messages FROM app.engagement_counters AS c
                         WHERE c.event_id = event_engagement.event_id
                           AND c.user_id = w.user_id), 0) AS messages,
               (SELECT count(*) FROM app.chat_connections AS cn
                WHERE cn.event_id = event_engagement.event_id
                  AND cn.user_id = w.user_id) AS connections,
               (SELECT least(min(cn.opened_at),
                             (SELECT min(m.minute)
                              FROM app.engagement_minutes AS m
                              WHERE m.event_id = event_engagement.event_id
                                AND m.user_id = w.user_id))
                FROM app.chat_connections AS cn
                WHERE cn.event_id = event_engagement.event_id
                  AND cn.user_id = w.user_id) AS first_seen,
               (SELECT greatest(max(coalesce(cn.closed_at, cn.opened_at)),
                                (SELECT max(m.minute)
                                 FROM app.engagement_minutes AS m
                                 WHERE m.event_id = event_engagement.event_id
                                   AND m.user_id = w.user_id),
                                (SELECT c.last_message_at
                                 FROM app.engagement_counters AS c
                                 WHERE c.event_id = event_engagement.event_id
                                   AND c.user_id = w.user_id))
                FROM app.chat_connections AS cn
                WHERE cn.event_id = event_engagement.event_id
                  AND cn.user_id = w.user_id) AS last_seen
        FROM who AS w
    )
    SELECT coalesce(json_agg(json_build_object(
               'user', app.chat_user_json(p.user_id, event_engagement.event_id),
               'minutes', p.minutes,
               'messages', p.messages,
               'connections', p.connections,
               'first_seen', app.chat_time(p.first_seen),
               'last_seen', app.chat_time(p.last_seen))
           ORDER BY p.minutes DESC, p.user_id), '[]')
    INTO v
    FROM per AS p;

    RETURN json_build_object('event_id', event_id, 'participants', v);
END
$$;


-- Jobs runner (sql job {"function": "chat_connections_close",
-- "args": {"minutes": 3}}): connections still open without a beat of their
-- user in the event for "minutes" (a worker that died) get closed_at, the
-- end of the last minute seen.  The number closed.
CREATE OR REPLACE FUNCTION maintenance.chat_connections_close(args jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_min int := coalesce((args ->> 'minutes')::int, 3);
    n     bigint;
BEGIN
    IF v_min < 1 THEN
        RAISE EXCEPTION 'minutes: at least 1' USING ERRCODE = '22023';
    END IF;

    UPDATE app.chat_connections AS cn
    SET closed_at = least(now(), greatest(cn.opened_at, coalesce(
            (SELECT max(m.minute) + interval '1 minute'
             FROM app.engagement_minutes AS m
             WHERE m.event_id = cn.event_id AND m.user_id = cn.user_id),
            cn.opened_at)))
    WHERE cn.closed_at IS NULL
      AND cn.opened_at < now() - make_interval(mins => v_min)
      AND NOT EXISTS (
          SELECT 1 FROM app.engagement_minutes AS m
          WHERE m.event_id = cn.event_id AND m.user_id = cn.user_id
            AND m.minute >= date_trunc('minute',
                                       now() - make_interval(mins => v_min)));

    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;


REVOKE ALL ON FUNCTION app.chat_organiser_check(bigint, bigint),
                       app.chat_user_json(bigint, bigint),
                       app.chat_time(timestamptz),
                       app.help_request_json(app.help_requests),
                       maintenance.chat_connections_close(jsonb)
    FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    api.chat_help(bigint, bigint, text, text),
    api.chat_help_clear(bigint, bigint, bigint),
    api.chat_help_list(bigint, bigint, boolean),
    api.chat_engagement_store(jsonb),
    api.event_engagement(bigint, bigint)
TO platform_app;
