-- pgTAP tests for sql/022_rentals_comms.sql (run by tools/sql-test): the
-- keyed mail jobs a booking gets, key codes, the iCal export and parser,
-- the import keeping the last good blocks, announcements' spacing, and
-- tenant isolation of the new endpoints.

SELECT * FROM no_plan();

CREATE FUNCTION pg_temp.field_of(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    d text;
    s text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, s = RETURNED_SQLSTATE;
    RETURN s || coalesce(' ' || substring(d FROM '^field: (\S+)'), '');
END
$$;

CREATE FUNCTION pg_temp.parse_error(feed text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM * FROM rentals.ical_parse(feed, 'UTC');
    RETURN 'ok';
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN SQLERRM;
END
$$;

INSERT INTO auth.users (email) VALUES ('ann@comms.test'), ('bob@comms.test');

CREATE TEMP TABLE u AS
SELECT (SELECT id FROM auth.users WHERE email = 'ann@comms.test') AS ann,
       (SELECT id FROM auth.users WHERE email = 'bob@comms.test') AS bob,
       repeat('A', 43) AS tok;
GRANT SELECT ON u TO platform_app;

SELECT api.rentals_signup('{"email":"ann@comms.test","business_name":"Ann","slug":"ann-comms"}',
                          ann, tok, '127.0.0.1', 'http://x.test') FROM u;
SELECT api.rentals_signup('{"email":"bob@comms.test","business_name":"Bob","slug":"bob-comms"}',
                          bob, tok, '127.0.0.1', 'http://x.test') FROM u;

SET LOCAL ROLE platform_app;

CREATE TEMP TABLE p AS
SELECT (api.owner_property_create(ann, '{"name":"Sea View","capacity":4,"price_minor":10000,"currency":"EUR","cleaner_email":"clean@comms.test","key_box_location":"left of the door","time_zone":"Europe/Paris"}')::jsonb->>'id')::bigint AS pa,
       (api.owner_property_create(bob, '{"name":"Bob Flat","capacity":2,"price_minor":8000,"currency":"EUR"}')::jsonb->>'id')::bigint AS pb
FROM u;

-- ------------------------------------------------------------ scheduling

CREATE TEMP TABLE bk AS
SELECT (api.owner_booking_create(ann, pa, json_build_object(
            'check_in', (now() AT TIME ZONE 'Europe/Paris')::date + 10,
            'check_out', (now() AT TIME ZONE 'Europe/Paris')::date + 13,
            'guest_email', 'guest@comms.test', 'guest_name', 'Gus')::jsonb)
        ::jsonb->>'id')::bigint AS id
FROM u, p;

RESET ROLE;

SELECT is((SELECT count(*) FROM jobs.jobs WHERE key LIKE 'booking:' || bk.id || ':%'
           AND state = 'pending')::int, 3, 'a confirmed booking: three keyed jobs')
FROM bk;
SELECT is((SELECT run_at FROM jobs.jobs WHERE key = 'booking:' || bk.id || ':welcome'
           AND state = 'pending'),
          ((now() AT TIME ZONE 'Europe/Paris')::date + 10 + time '15:00')
              AT TIME ZONE 'Europe/Paris' - interval '24 hours',
          'the welcome: 24 h before check-in, in the property''s zone')
FROM bk;
SELECT is((SELECT run_at FROM jobs.jobs WHERE key = 'booking:' || bk.id || ':cleaner'
           AND state = 'pending'),
          ((now() AT TIME ZONE 'Europe/Paris')::date + 13 + time '10:00')
              AT TIME ZONE 'Europe/Paris',
          'the cleaner: at check-out time')
FROM bk;
SELECT is((SELECT run_at FROM jobs.jobs WHERE key = 'booking:' || bk.id || ':reminder'
           AND state = 'pending'),
          ((now() AT TIME ZONE 'Europe/Paris')::date + 10 + time '15:00')
              AT TIME ZONE 'Europe/Paris' - interval '3 days',
          'the reminder: 3 days before')
FROM bk;
SELECT is((SELECT count(*) FROM jobs.jobs WHERE kind = 'mail'
           AND payload->>'to' = 'guest@comms.test'
           AND payload->>'subject' LIKE 'Booking confirmed%')::int, 1,
          'a manual booking with an address: a confirmation mail');

-- a date change moves them
UPDATE rentals.bookings SET stay = daterange(lower(stay) + 1, upper(stay) + 1)
WHERE id = (SELECT id FROM bk);
SELECT is((SELECT run_at FROM jobs.jobs WHERE key = 'booking:' || bk.id || ':cleaner'
           AND state = 'pending'),
          ((now() AT TIME ZONE 'Europe/Paris')::date + 14 + time '10:00')
              AT TIME ZONE 'Europe/Paris',
          'a date change moves the cleaner''s mail')
FROM bk;
SELECT is((SELECT count(*) FROM jobs.jobs WHERE key LIKE 'booking:' || bk.id || ':%')::int,
          3, 'moved, not added') FROM bk;

-- a block gets none; a cancellation removes them
SET LOCAL ROLE platform_app;
SELECT api.owner_booking_create(ann, pa, json_build_object(
           'check_in', (now() AT TIME ZONE 'Europe/Paris')::date + 30,
           'check_out', (now() AT TIME ZONE 'Europe/Paris')::date + 31,
           'kind', 'block')::jsonb) FROM u, p;
SELECT api.owner_booking_cancel(ann, bk.id) FROM u, bk;
RESET ROLE;
SELECT is((SELECT count(*) FROM jobs.jobs WHERE key LIKE 'booking:' || bk.id || ':%'
           AND state = 'pending')::int, 0, 'cancelled: no mail left pending')
FROM bk;
SELECT is((SELECT count(*) FROM jobs.jobs j JOIN rentals.bookings b
             ON j.key LIKE 'booking:' || b.id || ':%'
           WHERE b.kind = 'block')::int, 0, 'a block gets no mails');

-- the mail job renders with the key code
UPDATE rentals.bookings SET status = 'confirmed', cancelled_at = NULL
WHERE id = (SELECT id FROM bk);
SELECT maintenance.rentals_booking_mail(jsonb_build_object('booking_id', bk.id,
                                                           'what', 'welcome'))
FROM bk;
SELECT ok((SELECT payload->'vars'->>'key_code' ~ '^\d{6}$'
           AND payload->'vars'->>'key_box_location' = 'left of the door'
           FROM jobs.jobs WHERE payload->>'template' = 'rentals_welcome'),
          'the welcome carries a six-digit code and the key box');
SELECT ok(jobs.render_mail(j.id, j.payload, 'noreply@x.test') LIKE '%Welcome to Sea View%',
          'the welcome renders')
FROM jobs.jobs j WHERE payload->>'template' = 'rentals_welcome';

-- ------------------------------------------------------------ key codes

SET LOCAL ROLE platform_app;
SELECT api.owner_key_code_rotate(ann, pa) FROM u, p;
SELECT api.owner_key_code_rotate(ann, pa) FROM u, p;
SELECT api.owner_key_code_rotate(ann, pa) FROM u, p;
SELECT api.owner_key_code_rotate(ann, pa) FROM u, p;
SELECT is(json_array_length(api.owner_key_codes(ann, pa)->'codes'), 4,
          'five codes made, four kept') FROM u, p;
SELECT is(api.owner_key_codes(ann, pa)->>'current',
          api.owner_key_codes(ann, pa)->'codes'->0->>'code',
          'the newest rotation is current') FROM u, p;
SELECT is(pg_temp.field_of($$SELECT api.owner_key_codes((SELECT bob FROM u), (SELECT pa FROM p))$$),
          'PT404', 'another business''s key codes: 404');
SELECT is(pg_temp.field_of($$SELECT api.owner_key_code_rotate((SELECT bob FROM u), (SELECT pa FROM p))$$),
          'PT404', 'another business''s rotation: 404');
RESET ROLE;
SELECT is((SELECT count(*) FROM jobs.jobs WHERE payload->>'template' = 'rentals_key_rotated'
           AND payload->>'to' = 'clean@comms.test')::int, 4,
          'each rotation is mailed to the cleaner');

-- ------------------------------------------------------------ iCal export

SET LOCAL ROLE platform_app;
CREATE TEMP TABLE ic AS
SELECT api.owner_ical(ann, pa, 'http://x.test')->>'export_url' AS url FROM u, p;
SELECT ok(url ~ '^http://x\.test/ical/[0-9a-f]{32}\.ics$', 'a secret feed address')
FROM ic;
SELECT is(pg_temp.field_of($$SELECT api.owner_ical((SELECT bob FROM u), (SELECT pa FROM p))$$),
          'PT404', 'another business''s feed address: 404');
CREATE TEMP TABLE ics AS
SELECT api.rentals_ical(substring(url FROM '/ical/([0-9a-f]{32})\.ics$'), 'http://x.test') AS t
FROM ic;
SELECT ok(t LIKE E'BEGIN:VCALENDAR\r\n%END:VCALENDAR\r\n', 'a calendar, CRLF') FROM ics;
SELECT ok(t ~ ('DTSTART;VALUE=DATE:' || to_char((now() AT TIME ZONE 'Europe/Paris')::date + 11, 'YYYYMMDD')),
          'the stay, all day') FROM ics;
SELECT ok(t ~ ('DTEND;VALUE=DATE:' || to_char((now() AT TIME ZONE 'Europe/Paris')::date + 14, 'YYYYMMDD')),
          'exclusive end: the check-out day') FROM ics;
SELECT ok(t LIKE '%SUMMARY:Not available%' AND t LIKE '%SUMMARY:Reserved%'
          AND t NOT LIKE '%Gus%', 'blocks and bookings, no guest details') FROM ics;
SELECT is(pg_temp.field_of($$SELECT api.rentals_ical(repeat('0', 32))$$), 'PT404',
          'an unknown token: 404');
SELECT ok((api.owner_ical_rotate(ann, pa, 'http://x.test')->>'export_url') <> ic.url,
          'rotated: a new address') FROM u, p, ic;
SELECT is(pg_temp.field_of(format('SELECT api.rentals_ical(%L)',
                                  substring(url FROM '/ical/([0-9a-f]{32})\.ics$'))),
          'PT404', 'the old address is gone') FROM ic;
RESET ROLE;

-- the export parses back to the same dates
SELECT is((SELECT array_agg(stay ORDER BY stay) FROM rentals.ical_parse(
               rentals.property_ics((SELECT pa FROM p), 'http://x.test'), 'Europe/Paris')),
          (SELECT array_agg(stay ORDER BY stay) FROM rentals.bookings
           WHERE property_id = (SELECT pa FROM p) AND status = 'confirmed'),
          'export -> parse: the same stays');

-- ------------------------------------------------------------ parser

SELECT is((SELECT array_agg(stay::text || ' ' || uid ORDER BY uid) FROM rentals.ical_parse(
    E'BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:a@x\nDTSTART;VALUE=DATE:20300105\n'
    || E'DTEND;VALUE=DATE:20300108\nSUMMARY:Reserved\nEND:VEVENT\n'
    || E'BEGIN:VEVENT\nUID:b\r\n  @x\nDTSTART:20300110T140000Z\nDTEND:20300112T100000Z\nEND:VEVENT\n'
    || E'BEGIN:VEVENT\nUID:c@x\nDTSTART;TZID=America/New_York:20300120T220000\n'
    || E'DTEND;TZID=America/New_York:20300121T220000\nEND:VEVENT\n'
    || E'BEGIN:VEVENT\nUID:d@x\nDTSTART:20300201\nDURATION:P2D\nEND:VEVENT\n'
    || E'BEGIN:VEVENT\nUID:e@x\nDTSTART:20300301\nSTATUS:CANCELLED\nEND:VEVENT\n'
    || E'END:VCALENDAR\n', 'UTC')),
    ARRAY['[2030-01-05,2030-01-08) a@x', '[2030-01-10,2030-01-12) b @x',
          '[2030-01-21,2030-01-22) c@x', '[2030-02-01,2030-02-03) d@x'],
    'LF, folded lines, DATE, UTC, TZID, DURATION; cancelled left out');
SELECT is((SELECT count(*) FROM rentals.ical_parse(
    E'BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20300105\r\nDTEND:20300107\r\n'
    || E'SEQUENCE:1\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20300105\r\n'
    || E'DTEND:20300106\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n', 'UTC'))::int, 1,
    'a repeated UID is one event');
SELECT is(pg_temp.parse_error('<html>Not found</html>'),
          'not an iCalendar file (no BEGIN:VCALENDAR)', 'HTML: refused');
SELECT is(pg_temp.parse_error(E'BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:20300105\n'),
          'the VEVENT of line 2 is not closed (the file is cut short)', 'cut short: refused');
SELECT is(pg_temp.parse_error(E'BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:2030-01-05\nEND:VEVENT\nEND:VCALENDAR\n'),
          'the VEVENT of line 2 has a DTSTART that is not a date or date-time: "2030-01-05"',
          'a bad date: refused');
SELECT is(pg_temp.parse_error(E'BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:20300231\nEND:VEVENT\nEND:VCALENDAR\n'),
          'the VEVENT of line 2 has a DTSTART that is not a date or date-time: "20300231"',
          'an impossible date: refused');

-- ------------------------------------------------------------ import

INSERT INTO rentals.ical_hosts (origin, service) VALUES ('http://feeds.test', 'ical_test');
SET LOCAL ROLE platform_app;
SELECT is(pg_temp.field_of($$SELECT api.owner_ical_feed_add((SELECT ann FROM u), (SELECT pa FROM p), '{"channel":"airbnb","url":"https://unknown.test/x.ics"}')$$),
          '22023 url', 'a host the platform cannot reach: 400 url');
SELECT is(pg_temp.field_of($$SELECT api.owner_ical_feed_add((SELECT ann FROM u), (SELECT pa FROM p), '{"channel":"vrbo","url":"http://feeds.test/x.ics"}')$$),
          '22023 channel', 'an unknown channel: 400 channel');
SELECT is(pg_temp.field_of($$SELECT api.owner_ical_feed_add((SELECT bob FROM u), (SELECT pa FROM p), '{"channel":"airbnb","url":"http://feeds.test/x.ics"}')$$),
          'PT404', 'a feed on another business''s property: 404');
CREATE TEMP TABLE fd AS
SELECT (api.owner_ical_feed_add(ann, pa, '{"channel":"airbnb","url":"http://feeds.test/cal/1.ics?s=abc"}')::jsonb->>'id')::bigint AS id
FROM u, p;
RESET ROLE;
SELECT is((SELECT payload->>'path' || ' ' || (payload->>'service') FROM jobs.jobs
           WHERE key = 'ical-feed:' || fd.id AND state = 'pending'),
          '/cal/1.ics?s=abc ical_test', 'the import is a GET call through the host''s service')
FROM fd;

-- a good answer: blocks
SELECT callbacks.rentals_ical_fetched(jsonb_build_object('feed_id', fd.id), 200,
    E'BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:r1\nDTSTART;VALUE=DATE:'
    || to_char(current_date + 40, 'YYYYMMDD') || E'\nDTEND;VALUE=DATE:'
    || to_char(current_date + 43, 'YYYYMMDD') || E'\nSUMMARY:Reserved\nEND:VEVENT\n'
    || E'BEGIN:VEVENT\nUID:r2\nDTSTART;VALUE=DATE:'
    || to_char(current_date + 42, 'YYYYMMDD') || E'\nDTEND;VALUE=DATE:'
    || to_char(current_date + 45, 'YYYYMMDD') || E'\nSUMMARY:Not available\nEND:VEVENT\n'
    || E'END:VCALENDAR\n')
FROM fd;
SELECT is((SELECT array_agg(stay::text || ' ' || external_id) FROM rentals.bookings
           WHERE ical_feed_id = fd.id AND status = 'confirmed'),
          ARRAY[daterange(current_date + 40, current_date + 45)::text || ' r1'],
          'overlapping events: one block') FROM fd;
SELECT is((SELECT status FROM rentals.ical_feeds WHERE id = fd.id), 'ok', 'feed ok') FROM fd;

-- a malformed answer: failed, the blocks kept
SELECT callbacks.rentals_ical_fetched(jsonb_build_object('feed_id', fd.id), 200,
                                      E'BEGIN:VCALENDAR\nBEGIN:VEVENT\n') FROM fd;
SELECT is((SELECT status || ': ' || last_error FROM rentals.ical_feeds WHERE id = fd.id),
          'failed: the VEVENT of line 2 is not closed (the file is cut short)',
          'malformed: failed with the reason') FROM fd;
SELECT is((SELECT count(*) FROM rentals.bookings WHERE ical_feed_id = fd.id
           AND status = 'confirmed')::int, 1, 'the last good blocks are kept') FROM fd;
SELECT callbacks.rentals_ical_fetched(jsonb_build_object('feed_id', fd.id), 404, 'nope')
FROM fd;
SELECT is((SELECT last_error FROM rentals.ical_feeds WHERE id = fd.id),
          'the feed answered HTTP status 404', 'an HTTP error: failed') FROM fd;

-- an empty calendar: the block goes
SELECT callbacks.rentals_ical_fetched(jsonb_build_object('feed_id', fd.id), 200,
                                      E'BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n') FROM fd;
SELECT is((SELECT count(*) FROM rentals.bookings WHERE ical_feed_id = fd.id
           AND status = 'confirmed')::int, 0, 'gone from the feed: cancelled') FROM fd;
SELECT is((SELECT count(*) FROM jobs.jobs WHERE key = 'ical-feed:' || fd.id
           AND state = 'pending')::int, 1, 'the next import is queued') FROM fd;

-- ------------------------------------------------------------ announce

INSERT INTO rentals.bookings (business_id, property_id, stay, status, kind,
                              guest_email, confirmed_at)
SELECT b.business_id, b.id, daterange(current_date - 20 - i, current_date - 18 - i),
       'confirmed', 'booking', CASE WHEN i = 3 THEN 'Past1@comms.test'
                                    ELSE 'past' || i || '@comms.test' END, now()
FROM rentals.properties b, generate_series(1, 3) i WHERE b.id = (SELECT pa FROM p)
  AND i IN (1, 3);
INSERT INTO rentals.bookings (business_id, property_id, stay, status, kind,
                              guest_email, confirmed_at)
SELECT b.business_id, b.id, daterange(current_date - 40, current_date - 38),
       'confirmed', 'booking', 'past2@comms.test', now()
FROM rentals.properties b WHERE b.id = (SELECT pa FROM p);
UPDATE rentals.comms_settings SET announce_next_at = NULL;
DELETE FROM jobs.jobs WHERE payload->>'subject' = 'Free next week';

SET LOCAL ROLE platform_app;
SELECT is(pg_temp.field_of($$SELECT api.owner_announce((SELECT ann FROM u), (SELECT pa FROM p), '{"subject":""}', 2)$$),
          '22023 subject', 'an empty subject: 400 subject');
SELECT is(pg_temp.field_of($$SELECT api.owner_announce((SELECT bob FROM u), (SELECT pa FROM p), '{"subject":"x","text":"y"}', 2)$$),
          'PT404', 'another business''s property: 404');
SELECT is((api.owner_announce(ann, pa, '{"subject":"Free next week","text":"Come back!"}', 2)
           ->>'recipients')::int, 2, 'distinct past guests: two') FROM u, p;
RESET ROLE;
SELECT is((SELECT max(run_at) - min(run_at) FROM jobs.jobs
           WHERE payload->>'subject' = 'Free next week'),
          interval '0.5 seconds', 'spaced at 2 per second');
SELECT is((SELECT array_agg(payload->>'to' ORDER BY run_at) FROM jobs.jobs
           WHERE payload->>'subject' = 'Free next week'),
          ARRAY['past2@comms.test', 'past1@comms.test'], 'oldest stay first, one per address');

SELECT * FROM finish();
