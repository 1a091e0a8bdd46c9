-- 020_chat_relay.sql - chat across hosts (issue 5, item 8): with
-- `platform_chat_zone ... relay=CHANNEL` every nginx host sends its
-- workers' publishes here in batches; PostgreSQL numbers them per room,
-- stores them and NOTIFYs each one on CHANNEL.  Every worker of every host
-- LISTENs on its pool (ngx_platform_pg_listen) and appends what it hears
-- to its zone's ring, skipping ids it already has: each message is
-- delivered once per client whatever the number of hosts and workers
-- (docs/chat.md, "Across hosts").
--
-- Ids stay per room, monotonic and without gaps across hosts: a
-- transaction-scoped advisory lock per room serializes the numbering, and
-- since it is held until commit, notifications of one room arrive in id
-- order.


-- A worker sends a batch again when it does not know whether the last try
-- was stored (a connection lost at commit): each relayed message carries
-- the sending worker's key, and a key already stored is skipped.
ALTER TABLE app.chat_messages ADD COLUMN IF NOT EXISTS relay_key text;
CREATE UNIQUE INDEX IF NOT EXISTS chat_messages_relay_key_idx
    ON app.chat_messages (relay_key) WHERE relay_key IS NOT NULL;


-- The batch: [{"e": event, "r": room, "i": 0, "u": user, "n": name,
--              "s": sender as shown (JSON object), "t": text,
--              "at": "2026-11-23T19:26:37.123Z",
--              "x": "<worker's random origin>-<n>"}, ...] in publish order.
-- Messages of events that no longer exist are skipped.  A notification is
-- {"k": zone key, "i": id, "u": user, "m": the message as clients get it};
-- one that would not fit in a NOTIFY payload (8000 bytes) carries no "m"
-- (the message is in the history; receivers skip it and count it).
-- Messages are counted per participant as api.chat_store does (014).
-- Returns the number stored.
CREATE OR REPLACE FUNCTION api.chat_relay(batch jsonb, channel text)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x        record;
    v_id     bigint;
    v_key    text;
    v_frame  text;
    v_note   text;
    n        int := 0;
BEGIN
    IF channel !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'channel: lowercase letters, digits and _'
            USING ERRCODE = '22023';
    END IF;

    FOR x IN
        SELECT m.e, m.r, m.u, m.n, m.s, m.t, m.at, m.x
        FROM jsonb_array_elements(batch) WITH ORDINALITY AS b(v, o),
             jsonb_to_record(b.v) AS m(e bigint, r text, u bigint, n text,
                                       s jsonb, t text, at text, x text)
        ORDER BY b.o
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM app.events AS ev
                                  WHERE ev.id = x.e);
        CONTINUE WHEN x.x IS NOT NULL
                      AND EXISTS (SELECT 1 FROM app.chat_messages AS cm
                                  WHERE cm.relay_key = x.x);

        v_key := x.e || ':' || x.r;

        PERFORM pg_advisory_xact_lock(hashtextextended('chat:' || v_key, 0));

        SELECT coalesce(max(cm.id), 0) + 1 INTO v_id
        FROM app.chat_messages AS cm
        WHERE cm.event_id = x.e AND cm.room = x.r;

        INSERT INTO app.chat_messages (event_id, room, id, user_id,
                                       sender_name, text, created_at,
                                       relay_key)
        VALUES (x.e, x.r, v_id, x.u, left(x.n, 200), left(x.t, 8000),
                coalesce(x.at::timestamptz, now()), x.x);

        n := n + 1;

        IF x.u IS NOT NULL
           AND EXISTS (SELECT 1 FROM auth.users AS u WHERE u.id = x.u)
        THEN
            INSERT INTO app.engagement_counters AS c (event_id, user_id,
                                                      messages,
                                                      last_message_at)
            VALUES (x.e, x.u, 1, coalesce(x.at::timestamptz, now()))
            ON CONFLICT ON CONSTRAINT engagement_counters_pkey
            DO UPDATE SET messages = c.messages + 1,
                          last_message_at = greatest(c.last_message_at,
                                                     excluded.last_message_at);
        END IF;

        -- json (not jsonb): the fields in the order clients know
        v_frame := json_build_object('type', 'message', 'id', v_id,
                                     'room', x.r, 'sender', x.s::json,
                                     'text', x.t, 'time', x.at)::text;

        v_note := json_build_object('k', v_key, 'i', v_id, 'u', x.u,
                                    'm', v_frame::json)::text;

        IF octet_length(v_note) >= 8000 THEN
            v_note := json_build_object('k', v_key, 'i', v_id,
                                        'u', x.u)::text;
        END IF;

        PERFORM pg_notify(channel, v_note);
    END LOOP;

    RETURN n;
END
$$;

GRANT EXECUTE ON FUNCTION api.chat_relay(jsonb, text) TO platform_app;
