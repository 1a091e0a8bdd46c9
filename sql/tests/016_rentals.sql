-- pgTAP tests for sql/016_rentals.sql and sql/017_rentals_bookings.sql
-- (run by tools/sql-test, see there).

SELECT * FROM no_plan();

SELECT has_table('rentals', 'businesses', 'rentals.businesses exists');
SELECT has_table('rentals', 'bookings', 'rentals.bookings exists');
SELECT ok(EXISTS (SELECT 1 FROM pg_constraint
                  WHERE conname = 'bookings_no_overlap' AND contype = 'x'),
          'bookings have the exclusion constraint');
SELECT ok((SELECT relrowsecurity FROM pg_class
           WHERE oid = 'rentals.properties'::regclass),
          'row-level security is on for properties');

-- The field a failing statement names (DETAIL 'field: x'), or its SQLSTATE.
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

INSERT INTO auth.users (email) VALUES ('ann@rentals.test'), ('bob@rentals.test'),
                                      ('guest@rentals.test');

CREATE TEMP TABLE u AS
SELECT (SELECT id FROM auth.users WHERE email = 'ann@rentals.test') AS ann,
       (SELECT id FROM auth.users WHERE email = 'bob@rentals.test') AS bob,
       (SELECT id FROM auth.users WHERE email = 'guest@rentals.test') AS guest,
       repeat('A', 43) AS tok;
GRANT SELECT ON u TO platform_app;

-- Sign-up signed in as the address: the business at once.
SELECT is((api.rentals_signup('{"email":"ann@rentals.test","business_name":"Ann Stays","slug":"ann-stays"}',
                              ann, tok, '127.0.0.1', 'http://x.test')::jsonb
           ->'business'->>'slug'), 'ann-stays', 'ann signs up: ann-stays')
FROM u;
SELECT is((api.rentals_signup('{"email":"bob@rentals.test","business_name":"Bob","slug":"bob-b"}',
                              bob, tok, '127.0.0.1', 'http://x.test')::jsonb
           ->>'status'), 'created', 'bob signs up')
FROM u;
SELECT is(pg_temp.field_of($$SELECT api.rentals_signup('{"email":"c@rentals.test","business_name":"C","slug":"Bad_Slug"}', NULL, repeat('A', 43), '127.0.0.1', 'http://x.test')$$),
          '22023 slug', 'a bad slug: 400 slug');
SELECT is(pg_temp.field_of($$SELECT api.rentals_signup('{"email":"c@rentals.test","business_name":"C","slug":"ann-stays"}', NULL, repeat('A', 43), '127.0.0.1', 'http://x.test')$$),
          'PT409 slug', 'a taken slug: 409 slug');
SELECT is(pg_temp.field_of($$SELECT api.rentals_signup('{"email":"c@rentals.test","business_name":"C","slug":"a--b"}', NULL, repeat('A', 43), '127.0.0.1', 'http://x.test')$$),
          '22023 slug', 'no double dash');

-- A pending sign-up completes when the link is confirmed.
SELECT is((api.rentals_signup('{"email":"guest@rentals.test","business_name":"G","slug":"g-site"}',
                              NULL, tok, '127.0.0.1', 'http://x.test')::jsonb->>'status'),
          'pending', 'signed out: pending, a link mailed')
FROM u;
SELECT is((rentals.on_confirm(guest, 'guest@rentals.test')->'business'->>'slug'),
          'g-site', 'confirming creates the business') FROM u;

SET LOCAL ROLE platform_app;

SELECT throws_ok($$SELECT * FROM rentals.properties$$, '42501', NULL,
                 'nginx cannot read the tables');

CREATE TEMP TABLE p AS
SELECT (api.owner_property_create(ann, '{"name":"Sea View","capacity":4,"price_minor":10000,"currency":"EUR","min_nights":2,"cleaning_fee_minor":5000,"key_box_location":"behind the gate"}')::jsonb->>'id')::bigint AS pa,
       (api.owner_property_create(bob, '{"name":"Bob Flat","capacity":2,"price_minor":8000,"currency":"EUR"}')::jsonb->>'id')::bigint AS pb
FROM u;

SELECT is(pg_temp.field_of($$SELECT api.owner_property_create((SELECT ann FROM u), '{"name":"x","capacity":0,"price_minor":1,"currency":"EUR"}')$$),
          '22023 capacity', 'capacity 0: 400 capacity');
SELECT is(pg_temp.field_of($$SELECT api.owner_property_create((SELECT ann FROM u), '{"name":"x","capacity":2,"price_minor":1,"currency":"XXX"}')$$),
          '22023 currency', 'unknown currency: 400 currency');
SELECT is(pg_temp.field_of($$SELECT api.owner_property_create((SELECT ann FROM u), '{"name":"x","capacity":2,"price_minor":1,"currency":"EUR","cleaning_minutes":600}')$$),
          '22023 cleaning_minutes', 'a cleaning window past check-in: 400');
SELECT is(pg_temp.field_of($$SELECT api.owner_property_create((SELECT ann FROM u), '{"name":"x","capacity":2,"price_minor":1,"currency":"EUR","check_in_time":"25:00"}')$$),
          '22023 check_in_time', 'a bad time: 400 check_in_time');

-- The tenant matrix: each owner endpoint, the other business's property.
SELECT is(pg_temp.field_of(format($$SELECT api.owner_property_get(%s, %s)$$, ann, pb)), 'PT404', 'get: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_property_update(%s, %s, '{"name":"mine"}')$$, ann, pb)), 'PT404', 'update: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_property_delete(%s, %s)$$, ann, pb)), 'PT404', 'delete: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_image_add(%s, %s, 'ab/' || repeat('ab', 32) || '.jpg', 'image/jpeg', 10)$$, ann, pb)), 'PT404', 'image add: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_images_order(%s, %s, '{"ids":[]}')$$, ann, pb)), 'PT404', 'image order: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_booking_create(%s, %s, '{"check_in":"2099-01-01","check_out":"2099-01-03"}')$$, ann, pb)), 'PT404', 'manual booking: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_bookings(%s, %s::text)$$, ann, pb)), 'PT404', 'bookings of the property: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_property_get(%s, %s)$$, guest, pa)), 'PT404', 'the third business: 404') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_properties(%s)$$, 0)), 'PT403', 'not an owner: 403');

SELECT is(json_array_length(api.owner_properties(ann)->'properties'), 1,
          'ann lists her property only') FROM u;
SELECT is(api.owner_property_get(ann, pa)::jsonb->>'key_box_location',
          'behind the gate', 'the owner sees the key box') FROM u, p;

-- Images: ordered, reordered.
SELECT is(api.owner_image_add(ann, pa, 'ab/' || repeat('ab', 32) || '.jpg', 'image/jpeg', 10)::jsonb->>'position',
          '0', 'first image at 0') FROM u, p;
SELECT is(api.owner_image_add(ann, pa, 'cd/' || repeat('cd', 32) || '.png', 'image/png', 10)::jsonb->'thumbnails'->>'w320',
          '/media/w320/cd/' || repeat('cd', 32) || '.png', 'thumbnail URLs') FROM u, p;
SELECT is((SELECT string_agg(e->>'url', ',' ORDER BY n)
           FROM json_array_elements(api.owner_images_order(ann, pa,
                    json_build_object('ids', (SELECT json_agg((x->>'id')::bigint ORDER BY (x->>'position')::int DESC)
                                              FROM json_array_elements(api.owner_property_get(ann, pa)->'images') AS x))::jsonb
                    )->'images') WITH ORDINALITY AS a(e, n)),
          '/media/cd/' || repeat('cd', 32) || '.png,/media/ab/' || repeat('ab', 32) || '.jpg',
          'reordered') FROM u, p;

-- Quotes and their validation.
SELECT is(api.rentals_quote('ann-stays', pa, (current_date + 10)::text, (current_date + 13)::text, '2')::jsonb->>'total_minor',
          '35000', '3 nights x 100.00 + 50.00 cleaning') FROM p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_quote('ann-stays', %s, '%s', '%s')$$, pa, current_date + 13, current_date + 10)),
          '22023 check_out', 'reversed: 400 check_out') FROM p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_quote('ann-stays', %s, '%s', '%s')$$, pa, current_date - 3, current_date + 1)),
          '22023 check_in', 'past: 400 check_in') FROM p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_quote('ann-stays', %s, '%s', '%s')$$, pa, current_date + 3, current_date + 4)),
          '22023 check_out', 'one night under the minimum: 400 check_out') FROM p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_quote('ann-stays', %s, '%s', '%s', '5')$$, pa, current_date + 3, current_date + 6)),
          '22023 guests', 'over capacity: 400 guests') FROM p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_quote('ann-stays', %s, 'soon', '%s')$$, pa, current_date + 6)),
          '22023 check_in', 'not a date: 400 check_in') FROM p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_quote('bob-b', %s, '%s', '%s')$$, pa, current_date + 3, current_date + 6)),
          'PT404', 'another business''s property under a slug: 404') FROM p;

-- Bookings: the constraint, back to back.
SELECT is(api.rentals_book('ann-stays', pa,
              jsonb_build_object('email', 'guest@rentals.test', 'name', 'Gus',
                                 'check_in', current_date + 10,
                                 'check_out', current_date + 13, 'guests', 2),
              guest, tok, '127.0.0.1', 'http://x.test')::jsonb->>'status',
          'held', 'a guest signed in books: held') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.rentals_book('ann-stays', %s, '{"email":"z@rentals.test","name":"Z","check_in":"%s","check_out":"%s"}', NULL, repeat('A', 43), '127.0.0.1', 'http://x.test')$$, pa, current_date + 11, current_date + 14)),
          'PT409 check_in', 'overlapping: 409 check_in') FROM p;
SELECT is(api.rentals_book('ann-stays', pa,
              jsonb_build_object('email', 'z@rentals.test', 'name', 'Z',
                                 'check_in', current_date + 13,
                                 'check_out', current_date + 15),
              NULL, repeat('B', 43), '127.0.0.1', 'http://x.test')::jsonb->>'status',
          'held', 'back to back: the check-out day is bookable') FROM u, p;
SELECT is(api.owner_booking_create(ann, pa, jsonb_build_object(
              'check_in', current_date + 20, 'check_out', current_date + 25,
              'kind', 'block'))::jsonb->>'status',
          'confirmed', 'the owner blocks dates') FROM u, p;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_booking_create(%s, %s, '{"check_in":"%s","check_out":"%s","source":"airbnb"}')$$, ann, pa, current_date + 24, current_date + 26)),
          'PT409 check_in', 'a channel booking over it: 409') FROM u, p;
SELECT is(json_array_length(api.owner_bookings(ann)->'bookings'), 3,
          'ann sees three bookings') FROM u;
SELECT is(json_array_length(api.owner_bookings(bob)->'bookings'), 0,
          'bob sees none of them') FROM u;
SELECT is(pg_temp.field_of(format($$SELECT api.owner_booking_cancel(%s, %s)$$, bob,
              (SELECT (x->>'id') FROM json_array_elements(api.owner_bookings(ann)->'bookings') AS x LIMIT 1))),
          'PT404', 'bob cannot cancel ann''s booking') FROM u;
SELECT is(json_array_length(api.my_bookings(guest)->'upcoming'), 1,
          'the guest sees their own booking') FROM u;

RESET ROLE;

CREATE TEMP TABLE ids_ann AS SELECT business_id FROM rentals.owners
WHERE user_id = (SELECT ann FROM u);
CREATE TEMP TABLE ids_bob AS SELECT business_id FROM rentals.owners
WHERE user_id = (SELECT bob FROM u);
GRANT SELECT ON ids_ann, ids_bob TO rentals_tenant;
-- (the api calls above left the last caller's business set)
SET LOCAL rentals.business = '';
GRANT SELECT ON u TO rentals_tenant;

-- Row-level security itself: the tenant role without a business sees
-- nothing; with one, that business only.
SET LOCAL ROLE rentals_tenant;
SELECT is((SELECT count(*) FROM rentals.properties), 0::bigint,
          'no business chosen: no rows');
DO $$ BEGIN
    PERFORM set_config('rentals.business',
                       (SELECT business_id::text FROM ids_bob), true);
END $$;
SELECT is((SELECT count(*) FROM rentals.properties), 1::bigint,
          'bob''s business: one property');
SELECT is((SELECT count(*) FROM rentals.bookings), 0::bigint,
          'and none of ann''s bookings');
SELECT throws_ok(format($$INSERT INTO rentals.properties (business_id, name, capacity, price_minor, currency)
                          VALUES (%s, 'sneaky', 1, 1, 'EUR')$$,
                        (SELECT business_id FROM ids_ann)),
                 '42501', NULL, 'writing into another business is refused');
RESET ROLE;

-- Hold expiry and the webhook dispatch.
UPDATE rentals.bookings SET hold_expires_at = now() - interval '1 second'
WHERE guest_email = 'z@rentals.test';
SELECT maintenance.booking_hold_expire(jsonb_build_object('booking_id', id))
FROM rentals.bookings WHERE guest_email = 'z@rentals.test';
SELECT is((SELECT status FROM rentals.bookings WHERE guest_email = 'z@rentals.test'),
          'expired', 'the hold ran out: expired');

-- A hold whose job has not run does not block the next guest.
SELECT api.rentals_book('ann-stays', pa,
           jsonb_build_object('email', 'late@rentals.test', 'name', 'L',
                              'check_in', current_date + 40,
                              'check_out', current_date + 42),
           NULL, repeat('C', 43), '127.0.0.1', 'http://x.test')
FROM p \g /dev/null
UPDATE rentals.bookings SET hold_expires_at = now() - interval '1 second'
WHERE guest_email = 'late@rentals.test';
SELECT is(api.rentals_quote('ann-stays', pa, (current_date + 40)::text,
                            (current_date + 42)::text)::jsonb->>'available',
          'true', 'a stale hold: the quote says available') FROM p;
SELECT is(api.rentals_book('ann-stays', pa,
              jsonb_build_object('email', 'next@rentals.test', 'name', 'N',
                                 'check_in', current_date + 40,
                                 'check_out', current_date + 42),
              NULL, repeat('D', 43), '127.0.0.1', 'http://x.test')::jsonb->>'status',
          'held', 'and the dates can be booked') FROM p;
SELECT is((SELECT status FROM rentals.bookings WHERE guest_email = 'late@rentals.test'),
          'expired', 'the stale hold was expired on the way');

SELECT is(app.checkout_paid(jsonb_build_object(
              'id', 'cs_test_1', 'payment_intent', 'pi_1', 'amount_total', 35000,
              'metadata', jsonb_build_object('kind', 'booking', 'booking_id',
                  (SELECT id::text FROM rentals.bookings WHERE guest_email = 'guest@rentals.test')))),
          'confirmed', 'a paid session of kind booking confirms the booking');
SELECT is((SELECT count(*) FROM jobs.jobs WHERE kind = 'mail'
           AND payload->>'to' = 'guest@rentals.test'
           AND payload->>'subject' LIKE 'Booking confirmed%'), 1::bigint,
          'and mails the guest');
SELECT is(app.checkout_paid('{"id": "cs_unknown", "metadata": {}}'),
          'unknown session', 'registrations still handled by 008');

SELECT * FROM finish();
