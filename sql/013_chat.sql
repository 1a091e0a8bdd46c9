-- 013_chat.sql - event chat (issue 5): who may join which room, the
-- messages persisted in batches by the nginx workers
-- (ngx_platform_chat.c), history pages, and the purge.
--
-- Rooms of an event: "main" (ticket holders), "team:<team id>" (the team's
-- members), "admin" (organisers).  Organisers of the event's organisation
-- may join every room.  The live rooms are in nginx's shared memory
-- (docs/chat.md); PostgreSQL decides authorization once per connection
-- and keeps the history.

CREATE TABLE IF NOT EXISTS app.chat_messages (
    event_id    bigint NOT NULL REFERENCES app.events (id) ON DELETE CASCADE,
    room        text NOT NULL
                CONSTRAINT chat_messages_room_check
                CHECK (room ~ '^(main|admin|team:[0-9]{1,19})$'),
    id          bigint NOT NULL CONSTRAINT chat_messages_id_check CHECK (id > 0),
    user_id     bigint REFERENCES auth.users (id) ON DELETE SET NULL,
    -- the name shown when the message was sent
    sender_name text NOT NULL
                CONSTRAINT chat_messages_sender_name_check
                CHECK (length(sender_name) <= 200),
    text        text NOT NULL
                CONSTRAINT chat_messages_text_check CHECK (length(text) <= 8000),
    created_at  timestamptz NOT NULL DEFAULT now(),

    -- message ids are per room (assigned by nginx, monotonic)
    CONSTRAINT chat_messages_pkey PRIMARY KEY (event_id, room, id)
);

-- the purge
CREATE INDEX IF NOT EXISTS chat_messages_created_at_idx
    ON app.chat_messages (created_at);

REVOKE ALL ON app.chat_messages FROM PUBLIC, platform_app;


-- A message as the WebSocket sends it.
CREATE OR REPLACE FUNCTION app.chat_message_json(m app.chat_messages)
RETURNS json
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object(
        'type', 'message',
        'id', m.id,
        'room', m.room,
        'sender', json_build_object('id', m.user_id, 'name', m.sender_name,
                                    'avatar', NULL),
        'text', m.text,
        'time', to_char(m.created_at AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
$$;


-- The room a user asks for, or an error: PT401 (no user), PT404 (no such
-- event, or a team room of no team of the event), PT403 (not allowed).
-- {"room", "key", "event_id", "user": {"id", "name", "avatar"}, "role",
--  "last_id"}: key names the room in nginx's zone, last_id is the highest
-- message id persisted (ids continue from it when the room is not live).
CREATE OR REPLACE FUNCTION app.chat_room(user_id bigint, event_id bigint,
                                         room text)
RETURNS json
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e         app.events;
    v_room    text := coalesce(chat_room.room, 'main');
    v_team    bigint;
    v_mine    bigint;
    v_org     boolean;
    v_ticket  boolean;
    v_role    text;
    v_name    text;
BEGIN
    IF chat_room.user_id IS NULL THEN
        RAISE EXCEPTION 'Sign in to join the chat.' USING ERRCODE = 'PT401';
    END IF;

    SELECT * INTO e FROM app.events AS x WHERE x.id = chat_room.event_id;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    v_org := e.organisation_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM auth.memberships AS m
        WHERE m.user_id = chat_room.user_id
          AND m.org_id = e.organisation_id
          AND m.role IN ('organiser', 'owner'));

    v_ticket := EXISTS (
        SELECT 1 FROM app.tickets AS t
        WHERE t.event_id = e.id AND t.user_id = chat_room.user_id
          AND t.status = 'valid');

    SELECT tm.team_id INTO v_mine
    FROM app.team_members AS tm
    WHERE tm.event_id = e.id AND tm.user_id = chat_room.user_id;

    IF v_room = 'team' THEN
        IF v_mine IS NULL THEN
            RAISE EXCEPTION 'You are in no team of this event.'
                USING ERRCODE = 'PT403';
        END IF;
        v_room := 'team:' || v_mine;
    END IF;

    IF v_room = 'main' THEN
        IF NOT (v_ticket OR v_org) THEN
            RAISE EXCEPTION 'The chat is for ticket holders.'
                USING ERRCODE = 'PT403';
        END IF;

    ELSIF v_room = 'admin' THEN
        IF NOT v_org THEN
            RAISE EXCEPTION 'This room is for the organisers.'
                USING ERRCODE = 'PT403';
        END IF;

    ELSIF v_room ~ '^team:[0-9]{1,18}$' THEN
        v_team := substr(v_room, 6)::bigint;

        IF NOT EXISTS (SELECT 1 FROM app.teams AS t
                       WHERE t.id = v_team AND t.event_id = e.id)
        THEN
            RAISE EXCEPTION 'No such room.' USING ERRCODE = 'PT404';
        END IF;

        IF NOT (v_org OR (v_ticket AND v_mine IS NOT DISTINCT FROM v_team))
        THEN
            RAISE EXCEPTION 'This room is for another team.'
                USING ERRCODE = 'PT403';
        END IF;

    ELSE
        RAISE EXCEPTION 'No such room.' USING ERRCODE = 'PT404';
    END IF;

    v_role := CASE WHEN v_org THEN 'organiser' ELSE 'participant' END;

    SELECT coalesce(nullif(u.display_name, ''),
                    (SELECT r.name FROM app.tickets AS t
                     JOIN app.registrations AS r ON r.id = t.registration_id
                     WHERE t.event_id = e.id AND t.user_id = u.id
                       AND t.status = 'valid'
                     LIMIT 1),
                    'Participant ' || u.id)
    INTO v_name
    FROM auth.users AS u
    WHERE u.id = chat_room.user_id;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'Sign in to join the chat.' USING ERRCODE = 'PT401';
    END IF;

    RETURN json_build_object(
        'room', v_room,
        'key', e.id || ':' || v_room,
        'event_id', e.id,
        'user', json_build_object('id', chat_room.user_id,
                                  'name', left(v_name, 200),
                                  'avatar', NULL),
        'role', v_role,
        'last_id', coalesce((SELECT max(m.id) FROM app.chat_messages AS m
                             WHERE m.event_id = e.id AND m.room = v_room),
                            0));
END
$$;


-- nginx, at a WebSocket handshake on /ws/events/{id}?room=...:
--   SELECT api.chat_join($platform_user, event_id, room)
CREATE OR REPLACE FUNCTION api.chat_join(user_id bigint, event_id bigint,
                                         room text)
RETURNS json
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app.chat_room(user_id, event_id, room)
$$;


-- History: the messages of the room before id "before" (all when NULL),
-- the newest "lim" (1..100, default 20) of them, oldest first.
-- {"room", "messages": [...], "more": bool}
-- GET /api/events/{id}/chat/{room}/messages?before=&limit=
CREATE OR REPLACE FUNCTION api.chat_messages(user_id bigint, event_id bigint,
                                             room text, before bigint
                                                 DEFAULT NULL,
                                             lim int DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j      json := app.chat_room(user_id, event_id, room);
    v_room text := j ->> 'room';
    v_lim  int := coalesce(lim, 20);
    v_msgs json;
    v_more boolean;
BEGIN
    IF v_lim < 1 OR v_lim > 100 THEN
        RAISE EXCEPTION 'limit: from 1 to 100' USING ERRCODE = '22023';
    END IF;

    WITH page AS (
        SELECT m.*
        FROM app.chat_messages AS m
        WHERE m.event_id = chat_messages.event_id
          AND m.room = v_room
          AND (chat_messages.before IS NULL OR m.id < chat_messages.before)
        ORDER BY m.id DESC
        LIMIT v_lim + 1
    ), shown AS (
        SELECT * FROM page ORDER BY id DESC LIMIT v_lim
    )
    SELECT coalesce(json_agg(app.chat_message_json(s::app.chat_messages)
                             ORDER BY s.id), '[]'),
           (SELECT count(*) FROM page) > v_lim
    INTO v_msgs, v_more
    FROM shown AS s;

    RETURN json_build_object('room', v_room, 'messages', v_msgs,
                             'more', v_more);
END
$$;


-- nginx's batches: a JSON array of {"e": event, "r": room, "i": id,
-- "u": user, "n": name, "t": text, "at": time}, one statement per batch.
-- A message already stored (the same event, room and id) is skipped.
-- Only nginx calls it; no location may expose it.  The number stored.
CREATE OR REPLACE FUNCTION api.chat_store(batch jsonb)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    INSERT INTO app.chat_messages (event_id, room, id, user_id, sender_name,
                                   text, created_at)
    SELECT x.e, x.r, x.i, x.u, left(x.n, 200), left(x.t, 8000),
           coalesce(x.at, now())
    FROM jsonb_to_recordset(batch) AS x(e bigint, r text, i bigint,
                                        u bigint, n text, t text,
                                        at timestamptz)
    WHERE EXISTS (SELECT 1 FROM app.events AS ev WHERE ev.id = x.e)
    ON CONFLICT ON CONSTRAINT chat_messages_pkey DO NOTHING;

    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;


-- Jobs runner (sql job {"function": "chat_purge", "args": {"days": 25}}):
-- deletes messages older than "days" (default 25).  The number deleted.
CREATE OR REPLACE FUNCTION maintenance.chat_purge(args jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days int := coalesce((args ->> 'days')::int, 25);
    n      bigint;
BEGIN
    IF v_days < 1 THEN
        RAISE EXCEPTION 'days: at least 1' USING ERRCODE = '22023';
    END IF;

    DELETE FROM app.chat_messages
    WHERE created_at < now() - make_interval(days => v_days);

    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION app.chat_room(bigint, bigint, text),
                       app.chat_message_json(app.chat_messages),
                       maintenance.chat_purge(jsonb)
    FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    api.chat_join(bigint, bigint, text),
    api.chat_messages(bigint, bigint, text, bigint, int),
    api.chat_store(jsonb)
TO platform_app;
