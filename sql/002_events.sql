-- 002_events.sql - the events table (minimal; the events issue extends it)
-- and the public listing endpoints.
--
-- Domain tables live in schema "app"; nginx (platform_app) only reaches them
-- through api.* functions and the grants below.

CREATE SCHEMA IF NOT EXISTS app;

GRANT USAGE ON SCHEMA app TO platform_app;

CREATE TABLE IF NOT EXISTS app.events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id bigint,
    title           text NOT NULL,
    description     text NOT NULL DEFAULT '',
    -- Keep in step with the list checked in api.events_upcoming.
    business_type   text NOT NULL
                    CONSTRAINT events_business_type_check
                    CHECK (business_type IN ('conference', 'hackathon',
                                             'meetup', 'workshop',
                                             'webinar', 'other')),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    time_zone       text NOT NULL DEFAULT 'UTC',
    capacity        int CONSTRAINT events_capacity_check
                        CHECK (capacity IS NULL OR capacity >= 0),
    status          text NOT NULL DEFAULT 'draft'
                    CONSTRAINT events_status_check
                    CHECK (status IN ('draft', 'published', 'cancelled')),
    created_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT events_time_check
        CHECK (isfinite(starts_at) AND isfinite(ends_at)
               AND ends_at > starts_at)
);

-- The public listing walks published events by (starts_at, id).
CREATE INDEX IF NOT EXISTS events_published_starts_at_idx
    ON app.events (starts_at, id)
    WHERE status = 'published';

GRANT SELECT ON app.events TO platform_app;


-- GET /api/events?after=&limit=&type=
--
-- Upcoming (not yet ended) published events, soonest first:
--   {"items": [{"id", "title", "business_type", "starts_at", "ends_at",
--               "time_zone"}, ...],
--    "next": "<cursor>" | null}
-- "next" is passed back as "after" for the following page.  lim is clamped
-- to 1..100 (default 20).  A malformed cursor or an unknown business type
-- raises 22023 (answered 400).
CREATE OR REPLACE FUNCTION api.events_upcoming(after text DEFAULT NULL,
                                               lim int DEFAULT 20,
                                               business_type text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    n       int := least(greatest(coalesce(lim, 20), 1), 100);
    c_start timestamptz := '-infinity';
    c_id    bigint := 0;
    result  json;
BEGIN
    IF events_upcoming.business_type IS NOT NULL
       AND events_upcoming.business_type <> ALL (ARRAY['conference',
               'hackathon', 'meetup', 'workshop', 'webinar', 'other'])
    THEN
        RAISE EXCEPTION 'unknown business type'
            USING ERRCODE = '22023',
                  HINT = 'use one of conference, hackathon, meetup, '
                         'workshop, webinar, other';
    END IF;

    IF after IS NOT NULL THEN
        SELECT c.ts, c.id INTO c_start, c_id
        FROM platform.cursor_decode(after) AS c;
    END IF;

    -- One row more than the page tells whether there is a next page.
    WITH page AS (
        SELECT e.id, e.title, e.business_type, e.starts_at, e.ends_at,
               e.time_zone,
               row_number() OVER (ORDER BY e.starts_at, e.id) AS rn
        FROM (SELECT *
              FROM app.events AS ev
              WHERE ev.status = 'published'
                AND ev.ends_at > now()
                AND (ev.starts_at, ev.id) > (c_start, c_id)
                AND (events_upcoming.business_type IS NULL
                     OR ev.business_type = events_upcoming.business_type)
              ORDER BY ev.starts_at, ev.id
              LIMIT n + 1) AS e
    )
    SELECT json_build_object(
               'items',
               coalesce(json_agg(json_build_object(
                            'id', p.id,
                            'title', p.title,
                            'business_type', p.business_type,
                            'starts_at', p.starts_at,
                            'ends_at', p.ends_at,
                            'time_zone', p.time_zone)
                        ORDER BY p.rn) FILTER (WHERE p.rn <= n),
                        '[]'::json),
               'next',
               CASE WHEN count(*) > n THEN
                   platform.cursor_encode(
                       max(p.starts_at) FILTER (WHERE p.rn = n),
                       max(p.id) FILTER (WHERE p.rn = n))
               END)
    INTO result
    FROM page AS p;

    RETURN result;
END
$$;


-- GET /api/events/{id}: one event as JSON, or NULL (404).  Drafts are the
-- organiser's business: only published and cancelled events are public.
CREATE OR REPLACE FUNCTION api.event_get(id bigint)
RETURNS json
LANGUAGE sql
STABLE
AS $$
    SELECT json_build_object(
               'id', e.id,
               'organisation_id', e.organisation_id,
               'title', e.title,
               'description', e.description,
               'business_type', e.business_type,
               'starts_at', e.starts_at,
               'ends_at', e.ends_at,
               'time_zone', e.time_zone,
               'capacity', e.capacity,
               'status', e.status)
    FROM app.events AS e
    WHERE e.id = event_get.id
      AND e.status IN ('published', 'cancelled');
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api, platform TO platform_app;
