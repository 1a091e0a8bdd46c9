-- pgTAP tests for sql/002_events.sql (run by tools/sql-test, see there).

SELECT * FROM no_plan();

SELECT has_table('app', 'events', 'app.events exists');
SELECT has_index('app', 'events', 'events_published_starts_at_idx',
                 ARRAY['starts_at', 'id'], 'index for the public listing');

-- Constraints
SELECT throws_ok($$INSERT INTO app.events (title, business_type, starts_at, ends_at)
                   VALUES ('x', 'party', now(), now() + interval '1h')$$,
                 '23514', NULL, 'unknown business type refused');
SELECT throws_ok($$INSERT INTO app.events (title, business_type, starts_at, ends_at)
                   VALUES ('x', 'meetup', now(), now())$$,
                 '23514', NULL, 'ends_at must be after starts_at');
SELECT throws_ok($$INSERT INTO app.events (title, business_type, starts_at, ends_at)
                   VALUES ('x', 'meetup', now(), 'infinity')$$,
                 '23514', NULL, 'infinite times refused');
SELECT throws_ok($$INSERT INTO app.events (title, business_type, starts_at, ends_at, status)
                   VALUES ('x', 'meetup', now(), now() + interval '1h', 'live')$$,
                 '23514', NULL, 'unknown status refused');
SELECT throws_ok($$INSERT INTO app.events (title, business_type, starts_at, ends_at, capacity)
                   VALUES ('x', 'meetup', now(), now() + interval '1h', -1)$$,
                 '23514', NULL, 'negative capacity refused');

-- Data: 45 published upcoming events (every 10th is a draft), one past,
-- one in progress, two starting at the same moment.
INSERT INTO app.events (title, business_type, starts_at, ends_at, status)
SELECT 'Event ' || g,
       (ARRAY['conference', 'hackathon', 'meetup', 'workshop', 'webinar',
              'other'])[1 + g % 6],
       now() + g * interval '1 hour',
       now() + g * interval '1 hour' + interval '2 hours',
       CASE WHEN g % 10 = 0 THEN 'draft' ELSE 'published' END
FROM generate_series(1, 50) AS g;

INSERT INTO app.events (title, business_type, starts_at, ends_at, status)
VALUES ('past', 'meetup', now() - interval '3 days', now() - interval '2 days', 'published'),
       ('ongoing', 'meetup', now() - interval '1 hour', now() + interval '1 hour', 'published'),
       ('tie a', 'webinar', now() + interval '100 hours', now() + interval '101 hours', 'published'),
       ('tie b', 'webinar', now() + interval '100 hours', now() + interval '101 hours', 'published'),
       ('cancelled', 'meetup', now() + interval '5 hours', now() + interval '6 hours', 'cancelled');

SET LOCAL ROLE platform_app;

SELECT is(json_array_length(api.events_upcoming()->'items'), 20,
          'default page size is 20');
SELECT is(api.events_upcoming()->'items'->0->>'title', 'ongoing',
          'an event in progress comes first');
SELECT is(json_array_length(api.events_upcoming(NULL, 0)->'items'), 1,
          'lim 0 is clamped to 1');
SELECT is(json_array_length(api.events_upcoming(NULL, -5)->'items'), 1,
          'negative lim is clamped to 1');
SELECT is(json_array_length(api.events_upcoming(NULL, 1000)->'items'), 48,
          'lim 1000 is clamped to 100 (all 48 fit)');
SELECT is(json_typeof(api.events_upcoming(NULL, 100)->'next'), 'null',
          'no next cursor on the last page');
SELECT ok(api.events_upcoming(NULL, 5)->>'next' IS NOT NULL,
          'a next cursor when more remain');
SELECT is(json_array_length(api.events_upcoming(NULL, 100, 'hackathon')->'items'),
          (SELECT count(*)::int FROM app.events
           WHERE business_type = 'hackathon' AND status = 'published'
             AND ends_at > now()),
          'business type filter');
SELECT is((SELECT count(*)::int
           FROM json_array_elements(api.events_upcoming(NULL, 100)->'items') i
           WHERE i->>'title' IN ('past', 'cancelled', 'Event 10')),
          0, 'past, cancelled and draft events are not listed');
SELECT is((SELECT array_agg(k ORDER BY k)
           FROM json_object_keys(api.events_upcoming(NULL, 1)->'items'->0) k),
          ARRAY['business_type', 'ends_at', 'id', 'starts_at', 'time_zone',
                'title'],
          'listing item fields');

-- Walking every page with lim 7 visits each event once, in order.
CREATE TEMP TABLE walk (n int, item json);
DO $$
DECLARE
    page json;
    cur  text;
    n    int := 0;
BEGIN
    LOOP
        page := api.events_upcoming(cur, 7);
        INSERT INTO walk
        SELECT n * 100 + o, i
        FROM json_array_elements(page->'items') WITH ORDINALITY AS t(i, o);
        cur := page->>'next';
        n := n + 1;
        EXIT WHEN cur IS NULL OR n > 20;
    END LOOP;
END
$$;
SELECT is((SELECT count(*)::int FROM walk), 48, 'the walk sees 48 items');
SELECT is((SELECT count(DISTINCT item->>'id')::int FROM walk), 48,
          'no item twice (ties on starts_at included)');
SELECT ok((SELECT bool_and(ok) FROM (
               SELECT (item->>'starts_at')::timestamptz
                      >= lag((item->>'starts_at')::timestamptz)
                             OVER (ORDER BY n) IS NOT FALSE AS ok
               FROM walk) s),
          'pages come in starts_at order');

SELECT throws_ok($$SELECT api.events_upcoming('not a cursor')$$, '22023',
                 'malformed pagination cursor', 'malformed cursor: 22023');
SELECT throws_ok($$SELECT api.events_upcoming(NULL, 5, 'party')$$, '22023',
                 'unknown business type', 'unknown business type: 22023');

-- One event
SELECT is((api.event_get((SELECT id FROM app.events WHERE title = 'Event 1'))
           ->>'title'), 'Event 1', 'event_get returns a published event');
SELECT is((api.event_get((SELECT id FROM app.events WHERE title = 'cancelled'))
           ->>'status'), 'cancelled', 'event_get returns a cancelled event');
SELECT ok(api.event_get((SELECT id FROM app.events WHERE title = 'Event 10'))
          IS NULL, 'event_get hides drafts');
SELECT ok(api.event_get(-1) IS NULL, 'event_get of a missing id is NULL');

-- nginx's role reads but does not write
SELECT throws_ok($$INSERT INTO app.events (title, business_type, starts_at, ends_at)
                   VALUES ('x', 'meetup', now(), now() + interval '1h')$$,
                 '42501', NULL, 'platform_app cannot insert events directly');
RESET ROLE;

SELECT * FROM finish();
