-- 026_analytics.sql - exports for organisers (issue 9 item 5, first part;
-- docs/analytics.md).
--
--   GET /api/events/{id}/participants.csv
--       platform_csv_export api.participants_csv($platform_user, $1)
--       (ngx_platform_export.c): the module calls the function once per
--       page and streams each page's CSV text to the client before asking
--       for the next, so neither PostgreSQL nor nginx builds the file.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE.

-- Pages are read by (event_id, id): keyset, no OFFSET.
CREATE INDEX IF NOT EXISTS tickets_event_id_id_idx
    ON app.tickets (event_id, id);

-- One CSV field (RFC 4180): quoted when it holds a comma, a double quote,
-- CR or LF, with its double quotes doubled; NULL is the empty field.
CREATE OR REPLACE FUNCTION app.csv_field(v text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
               WHEN v IS NULL THEN ''
               WHEN v ~ '[",\r\n]' THEN '"' || replace(v, '"', '""') || '"'
               ELSE v
           END;
$$;

-- A time in UTC, ISO 8601, as CSV readers and spreadsheets take it.
CREATE OR REPLACE FUNCTION app.csv_time(ts timestamptz)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
$$;

-- GET /api/events/{id}/participants.csv (platform_auth organiser):
--   api.participants_csv(user_id, event_id, after, rows)
-- One page of the event's participants (everyone holding a ticket, valid
-- or cancelled), by ticket id after AFTER (0: the first page, which starts
-- with the header row), at most ROWS rows.  chunk: the page's CSV text,
-- lines ended by CRLF; next: the AFTER of the following page, NULL after
-- the last.  404 when the caller is not an organiser of the event's
-- organisation (or there is no such event).
--
-- Columns: ticket_code, name, email, ticket_type, ticket_status, team,
-- registered_at, amount_minor, currency, user_id.
CREATE OR REPLACE FUNCTION api.participants_csv(user_id bigint,
                                                event_id bigint,
                                                after bigint,
                                                "rows" int)
RETURNS TABLE (chunk text, next bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_org bigint;
BEGIN
    IF participants_csv.user_id IS NULL THEN
        RAISE EXCEPTION 'Please sign in first.' USING ERRCODE = 'PT401';
    END IF;

    IF participants_csv."rows" IS NULL
       OR participants_csv."rows" NOT BETWEEN 1 AND 100000
       OR participants_csv.after IS NULL OR participants_csv.after < 0
    THEN
        RAISE EXCEPTION 'the export is not configured correctly'
            USING ERRCODE = 'PT500';
    END IF;

    SELECT ev.organisation_id INTO v_org
    FROM app.events AS ev
    WHERE ev.id = participants_csv.event_id;

    IF NOT FOUND
       OR NOT EXISTS (SELECT 1 FROM auth.memberships AS m
                      WHERE m.user_id = participants_csv.user_id
                        AND m.role = 'organiser' AND m.org_id = v_org)
    THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    RETURN QUERY
    WITH page AS (
        SELECT t.id,
               concat_ws(',',
                   app.csv_field(t.code),
                   app.csv_field(coalesce(r.name, u.display_name)),
                   app.csv_field(coalesce(r.email, u.email)),
                   app.csv_field(tt.name),
                   app.csv_field(t.status),
                   app.csv_field(tm.name),
                   app.csv_field(app.csv_time(coalesce(r.created_at,
                                                       t.created_at))),
                   app.csv_field(r.amount_minor::text),
                   app.csv_field(r.currency::text),
                   app.csv_field(t.user_id::text)) || E'\r\n' AS line
        FROM app.tickets AS t
        JOIN auth.users AS u ON u.id = t.user_id
        JOIN app.ticket_types AS tt ON tt.id = t.ticket_type_id
        LEFT JOIN app.registrations AS r ON r.id = t.registration_id
        LEFT JOIN app.team_members AS m
               ON m.event_id = t.event_id AND m.user_id = t.user_id
        LEFT JOIN app.teams AS tm ON tm.id = m.team_id
        WHERE t.event_id = participants_csv.event_id
          AND t.id > participants_csv.after
        ORDER BY t.id
        LIMIT participants_csv."rows")
    SELECT CASE WHEN participants_csv.after = 0
                THEN 'ticket_code,name,email,ticket_type,ticket_status,team,'
                     'registered_at,amount_minor,currency,user_id' || E'\r\n'
                ELSE '' END
           || coalesce(string_agg(p.line, '' ORDER BY p.id), ''),
           CASE WHEN count(*) = participants_csv."rows" THEN max(p.id) END
    FROM page AS p;
END
$$;

REVOKE ALL ON FUNCTION api.participants_csv(bigint, bigint, bigint, int)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.participants_csv(bigint, bigint, bigint, int)
    TO platform_app;


-- ---------------------------------------------------------------------
-- Engagement score (issue 9 item 2)
-- ---------------------------------------------------------------------

-- Connected minutes from the heartbeat rows (app.engagement_minutes: one
-- row per person and minute with a beat, duplicates impossible, so a
-- reconnect within a minute counts once): every minute with a beat, plus
-- the minutes between two beats when the gap is at most GAP_MINUTES
-- (missed beats of a person who stayed), a longer gap counting nothing.
--
--   beats at 10:00 10:01 10:03 10:10  (gap 2)  -> 10:00..10:03 = 4, +1 = 5
CREATE OR REPLACE FUNCTION app.connected_minutes(event_id bigint,
                                                 user_id bigint,
                                                 gap_minutes int DEFAULT 2)
RETURNS int
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(CASE
               WHEN d.prev IS NULL THEN 1
               WHEN d.minute - d.prev <= make_interval(mins => gap_minutes + 1)
                   THEN (extract(epoch FROM d.minute - d.prev) / 60)::int
               ELSE 1
           END), 0)::int
    FROM (SELECT m.minute,
                 lag(m.minute) OVER (ORDER BY m.minute) AS prev
          FROM app.engagement_minutes AS m
          WHERE m.event_id = connected_minutes.event_id
            AND m.user_id = connected_minutes.user_id) AS d;
$$;

-- The score: connected minutes + messages / 2 (at most 500 points from
-- messages) + 30 per submission of the person's team.  Five hours and
-- 400 messages: 300 + 200 = 500; three minutes and nothing: 3.
CREATE OR REPLACE FUNCTION app.engagement_score(minutes int, messages bigint,
                                                submissions int)
RETURNS numeric
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT round(coalesce(minutes, 0)
                 + least(coalesce(messages, 0), 1000) / 2.0
                 + 30 * coalesce(submissions, 0), 1);
$$;

-- GET /api/orgs/{org}/events/{id}/engagement/scores?sort&limit&offset
--   (platform_auth organiser org=$1)
-- {"event_id", "formula", "total", "sort", "participants": [{"user_id",
-- "name", "minutes", "messages", "submissions", "score"}]}: ticket holders
-- and anyone with engagement rows, sorted by sort (score, minutes,
-- messages, submissions: highest first; name: A to Z), then by user id.
CREATE OR REPLACE FUNCTION api.engagement_scores(org_id bigint,
                                                 event_id bigint,
                                                 sort text DEFAULT NULL,
                                                 lim int DEFAULT NULL,
                                                 "offset" int DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sort text := coalesce(sort, 'score');
    v_lim  int := coalesce(lim, 100);
    v_off  int := coalesce(engagement_scores."offset", 0);
    v_ev   bigint;
BEGIN
    SELECT e.id INTO v_ev FROM app.events AS e
    WHERE e.id = engagement_scores.event_id
      AND e.organisation_id = engagement_scores.org_id;
    IF v_ev IS NULL THEN
        RAISE EXCEPTION 'No such event.' USING ERRCODE = 'PT404';
    END IF;

    IF v_sort NOT IN ('score', 'minutes', 'messages', 'submissions', 'name')
    THEN
        PERFORM app.bad_field('sort', 'sort is one of score, minutes, '
                                      'messages, submissions, name.');
    END IF;
    IF v_lim NOT BETWEEN 1 AND 1000 THEN
        PERFORM app.bad_field('limit', 'limit is from 1 to 1000.');
    END IF;
    IF v_off < 0 THEN
        PERFORM app.bad_field('offset', 'offset is 0 or more.');
    END IF;

    RETURN (
    WITH who AS (
        SELECT t.user_id FROM app.tickets AS t
        WHERE t.event_id = v_ev AND t.status = 'valid'
        UNION
        SELECT m.user_id FROM app.engagement_minutes AS m
        WHERE m.event_id = v_ev
        UNION
        SELECT c.user_id FROM app.engagement_counters AS c
        WHERE c.event_id = v_ev
    ), per AS (
        SELECT w.user_id,
               coalesce(u.display_name,
                        (SELECT r.name FROM app.registrations AS r
                         WHERE r.event_id = v_ev AND r.user_id = w.user_id
                         ORDER BY r.id DESC LIMIT 1), '') AS name,
               app.connected_minutes(v_ev, w.user_id) AS minutes,
               coalesce((SELECT c.messages FROM app.engagement_counters AS c
                         WHERE c.event_id = v_ev AND c.user_id = w.user_id),
                        0) AS messages,
               (SELECT count(*)::int FROM app.submissions AS s
                JOIN app.team_members AS tm ON tm.team_id = s.team_id
                WHERE s.event_id = v_ev AND tm.user_id = w.user_id)
                   AS submissions
        FROM who AS w
        JOIN auth.users AS u ON u.id = w.user_id
    ), scored AS (
        SELECT p.*, app.engagement_score(p.minutes, p.messages,
                                         p.submissions) AS score
        FROM per AS p
    ), ordered AS (
        SELECT s.*, row_number() OVER (ORDER BY
                   CASE v_sort WHEN 'score' THEN s.score
                               WHEN 'minutes' THEN s.minutes
                               WHEN 'messages' THEN s.messages
                               WHEN 'submissions' THEN s.submissions
                   END DESC NULLS LAST,
                   CASE WHEN v_sort = 'name' THEN lower(s.name) END,
                   s.user_id) AS n
        FROM scored AS s
    )
    SELECT json_build_object(
               'event_id', v_ev,
               'formula', 'score = connected minutes + min(messages, 1000) / 2 '
                          '+ 30 x team submissions; connected minutes count '
                          'each minute with a heartbeat and gaps of up to 2 '
                          'missed minutes between beats',
               'sort', v_sort,
               'total', (SELECT count(*) FROM ordered),
               'participants', coalesce(json_agg(json_build_object(
                   'user_id', o.user_id, 'name', o.name,
                   'minutes', o.minutes, 'messages', o.messages,
                   'submissions', o.submissions, 'score', o.score)
                   ORDER BY o.n)
                   FILTER (WHERE o.n > v_off AND o.n <= v_off + v_lim),
                   '[]'))
    FROM ordered AS o);
END
$$;

REVOKE ALL ON FUNCTION app.connected_minutes(bigint, bigint, int),
                       app.engagement_score(int, bigint, int)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api.engagement_scores(bigint, bigint, text, int, int)
    TO platform_app;
