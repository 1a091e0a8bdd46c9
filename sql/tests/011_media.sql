-- pgTAP tests for sql/011_media.sql (run by tools/sql-test, see there).

SELECT * FROM no_plan();

SELECT has_table('app', 'media', 'app.media exists');
SELECT has_column('app', 'events', 'cover_media_id', 'app.events.cover_media_id');

INSERT INTO app.organisations (name) VALUES ('media org a'), ('media org b');
INSERT INTO app.events (organisation_id, title, business_type, starts_at, ends_at)
SELECT id, 'media fixture', 'meetup', now() + interval '1 day',
       now() + interval '2 days'
FROM app.organisations WHERE name = 'media org a';

CREATE TEMP TABLE ids AS
SELECT (SELECT id FROM app.organisations WHERE name = 'media org a') AS org_a,
       (SELECT id FROM app.organisations WHERE name = 'media org b') AS org_b,
       (SELECT id FROM app.events WHERE title = 'media fixture') AS ev,
       repeat('ab', 32) AS sha;
GRANT SELECT ON ids TO platform_app;

-- Constraints
SELECT throws_ok($$INSERT INTO app.media (organisation_id, sha256, name, content_type, size)
                   SELECT org_a, sha, 'ab/' || sha || '.png', 'image/jpeg', 10 FROM ids$$,
                 '23514', NULL, 'the extension follows the type');
SELECT throws_ok($$INSERT INTO app.media (organisation_id, sha256, name, content_type, size)
                   SELECT org_a, sha, 'ab/' || sha || '.gif', 'image/gif', 10 FROM ids$$,
                 '23514', NULL, 'only JPEG, PNG and WebP');
SELECT throws_ok($$INSERT INTO app.media (organisation_id, sha256, name, content_type, size)
                   SELECT org_a, sha, 'cd/' || sha || '.jpg', 'image/jpeg', 10 FROM ids$$,
                 '23514', NULL, 'the directory is the hash''s first two digits');

SET LOCAL ROLE platform_app;

SELECT throws_ok($$SELECT * FROM app.media$$, '42501', NULL,
                 'nginx cannot read app.media directly');
SELECT throws_ok($$SELECT maintenance.media_purge()$$, '42501', NULL,
                 'nor run the purge');

SELECT is(api.event_cover_set((SELECT org_a FROM ids), (SELECT ev FROM ids),
                              'ab/' || (SELECT sha FROM ids) || '.jpg',
                              'image/jpeg', 1234, 640, 480)->>'cover_url',
          '/media/ab/' || (SELECT sha FROM ids) || '.jpg',
          'event_cover_set: cover_url is derived');
SELECT is(api.event_cover_set((SELECT org_a FROM ids), (SELECT ev FROM ids),
                              'ab/' || (SELECT sha FROM ids) || '.jpg',
                              'image/jpeg', 1234, NULL, NULL)->>'cover_url',
          '/media/ab/' || (SELECT sha FROM ids) || '.jpg',
          'the same image again');
SELECT throws_ok($$SELECT api.event_cover_set((SELECT org_b FROM ids), (SELECT ev FROM ids),
                              'ab/' || (SELECT sha FROM ids) || '.jpg',
                              'image/jpeg', 1234, NULL, NULL)$$,
                 'PT404', NULL, 'another organisation''s event: 404');
SELECT throws_ok($$SELECT api.event_cover_set((SELECT org_a FROM ids), (SELECT ev FROM ids),
                              NULL, NULL, NULL, NULL, NULL)$$,
                 '22023', NULL, 'no uploaded image: 400');

RESET ROLE;
SELECT is((SELECT count(*)::int FROM app.media), 1, 'one media row for the image');
SELECT is((SELECT width || 'x' || height FROM app.media), '640x480',
          'dimensions kept');
SELECT is((SELECT m.name FROM app.events AS e JOIN app.media AS m
           ON m.id = e.cover_media_id WHERE e.id = (SELECT ev FROM ids)),
          'ab/' || (SELECT sha FROM ids) || '.jpg', 'the event refers to it');

UPDATE app.media SET created_at = now() - interval '2 days';
SELECT is(maintenance.media_purge()->>'deleted', '0', 'a cover in use is kept');

SET LOCAL ROLE platform_app;
SELECT is(api.event_cover_delete((SELECT org_a FROM ids), (SELECT ev FROM ids))->>'cover_url',
          NULL, 'event_cover_delete');
RESET ROLE;
SELECT is(maintenance.media_purge()->>'deleted', '1', 'then the row is purged');

-- A cover_url set otherwise drops the media reference.
SET LOCAL ROLE platform_app;
SELECT lives_ok($$SELECT api.event_cover_set((SELECT org_a FROM ids), (SELECT ev FROM ids),
                              'ab/' || (SELECT sha FROM ids) || '.png',
                              'image/png', 99, NULL, NULL)$$, 'a PNG cover');
SELECT is(api.event_update((SELECT org_a FROM ids), (SELECT ev FROM ids),
                           '{"cover_url": "https://example.org/x.png"}')->>'cover_url',
          'https://example.org/x.png', 'PATCH cover_url');
RESET ROLE;
SELECT is((SELECT cover_media_id FROM app.events WHERE id = (SELECT ev FROM ids)),
          NULL, 'the media reference is dropped');
SELECT is((SELECT count(*)::int FROM maintenance.media_names()), 1,
          'media_names lists the stored names');

SELECT * FROM finish();
