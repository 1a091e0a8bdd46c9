-- 011_media.sql - uploaded images (docs/media.md) and the event cover.
--
-- nginx stores an upload (platform_upload: type sniffed from the bytes,
-- named by its SHA-256) before the query runs; app.media records it for
-- one organisation.  The file's name is "<2 hex>/<64 hex>.<ext>" below the
-- media directory, served at /media/<name> (thumbnails at
-- /media/w320/<name> and /media/w960/<name>).  An event's cover is a media
-- row; app.events.cover_url is kept derived ('/media/' || name) so every
-- event JSON shows it without change.  A media row nothing refers to is
-- removed by maintenance.media_purge(), and a file no row names by the
-- sweep described in docs/media.md.


-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS app.media (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id bigint NOT NULL
                    REFERENCES app.organisations (id) ON DELETE CASCADE,
    sha256          text NOT NULL
                    CONSTRAINT media_sha256_check
                    CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    name            text NOT NULL,
    content_type    text NOT NULL
                    CONSTRAINT media_content_type_check
                    CHECK (content_type IN ('image/jpeg', 'image/png',
                                            'image/webp')),
    size            bigint NOT NULL CONSTRAINT media_size_check
                    CHECK (size > 0),
    width           int CONSTRAINT media_width_check CHECK (width > 0),
    height          int CONSTRAINT media_height_check CHECK (height > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),

    -- the name is the content's: <first 2 hex>/<sha256>.<ext of the type>
    CONSTRAINT media_name_check
        CHECK (name = substr(sha256, 1, 2) || '/' || sha256 || '.'
                      || CASE content_type WHEN 'image/jpeg' THEN 'jpg'
                                           WHEN 'image/png' THEN 'png'
                                           ELSE 'webp' END),
    -- one row per organisation and file: the same image twice is one row
    CONSTRAINT media_organisation_name_key UNIQUE (organisation_id, name)
);

CREATE INDEX IF NOT EXISTS media_name_idx ON app.media (name);

ALTER TABLE app.events ADD COLUMN IF NOT EXISTS cover_media_id bigint;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'events_cover_media_id_fkey'
                     AND conrelid = 'app.events'::regclass) THEN
        ALTER TABLE app.events ADD CONSTRAINT events_cover_media_id_fkey
            FOREIGN KEY (cover_media_id) REFERENCES app.media (id)
            ON DELETE SET NULL;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS events_cover_media_id_idx
    ON app.events (cover_media_id) WHERE cover_media_id IS NOT NULL;

REVOKE ALL ON app.media FROM PUBLIC, platform_app;


-- A cover_url written otherwise (PATCH with an address, or null) drops the
-- uploaded cover; api.event_cover_set changes both at once.
CREATE OR REPLACE FUNCTION app.events_cover_media_sync()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.cover_url IS DISTINCT FROM OLD.cover_url
       AND NEW.cover_media_id IS NOT DISTINCT FROM OLD.cover_media_id THEN
        NEW.cover_media_id := NULL;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS events_cover_media_sync ON app.events;
CREATE TRIGGER events_cover_media_sync
    BEFORE UPDATE OF cover_url ON app.events
    FOR EACH ROW EXECUTE FUNCTION app.events_cover_media_sync();


-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- The organisation's row for a file nginx stored (the same file again:
-- the same row).
CREATE OR REPLACE FUNCTION app.media_record(org_id bigint, name text,
                                            content_type text, size bigint,
                                            width int, height int)
RETURNS app.media
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m app.media;
BEGIN
    IF name IS NULL OR name !~ '^[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|webp)$'
    THEN
        -- only a location without platform_upload gets here
        RAISE EXCEPTION 'No uploaded image.' USING ERRCODE = '22023',
            DETAIL = 'field: file';
    END IF;

    INSERT INTO app.media AS x (organisation_id, sha256, name, content_type,
                                size, width, height)
    VALUES (org_id, substr(name, 4, 64), name, content_type, size,
            nullif(width, 0), nullif(height, 0))
    ON CONFLICT ON CONSTRAINT media_organisation_name_key
    DO UPDATE SET width = coalesce(x.width, EXCLUDED.width),
                  height = coalesce(x.height, EXCLUDED.height)
    RETURNING * INTO m;

    RETURN m;
END
$$;


-- ---------------------------------------------------------------------
-- Endpoints
-- ---------------------------------------------------------------------

-- PUT /api/orgs/{org}/events/{id}/cover: the body is the image (stored by
-- platform_upload); the event's cover becomes it.
CREATE OR REPLACE FUNCTION api.event_cover_set(org_id bigint, event_id bigint,
                                               name text, content_type text,
                                               size bigint, width int DEFAULT NULL,
                                               height int DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
    m app.media;
BEGIN
    IF e.status = 'cancelled' THEN
        RAISE EXCEPTION 'A cancelled event cannot be changed.'
            USING ERRCODE = 'PT409';
    END IF;

    m := app.media_record(org_id, name, content_type, size, width, height);

    UPDATE app.events AS x
    SET cover_media_id = m.id, cover_url = '/media/' || m.name,
        updated_at = now()
    WHERE x.id = e.id
    RETURNING * INTO e;

    RETURN app.event_json(e);
END
$$;

-- DELETE /api/orgs/{org}/events/{id}/cover
CREATE OR REPLACE FUNCTION api.event_cover_delete(org_id bigint,
                                                  event_id bigint)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e app.events := app.org_event(org_id, event_id);
BEGIN
    IF e.status = 'cancelled' THEN
        RAISE EXCEPTION 'A cancelled event cannot be changed.'
            USING ERRCODE = 'PT409';
    END IF;

    UPDATE app.events AS x
    SET cover_media_id = NULL, cover_url = NULL, updated_at = now()
    WHERE x.id = e.id
    RETURNING * INTO e;

    RETURN app.event_json(e);
END
$$;


-- ---------------------------------------------------------------------
-- Maintenance
-- ---------------------------------------------------------------------

-- Media rows nothing refers to any more (no event's cover), older than a
-- day (an upload whose query is still to use it is younger): deleted.
-- Returns {"deleted": n}.  The files themselves: the sweep in docs/media.md
-- removes files no row names (maintenance.media_names()).
CREATE OR REPLACE FUNCTION maintenance.media_purge()
RETURNS json
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM app.media AS m
        WHERE m.created_at < now() - interval '1 day'
          AND NOT EXISTS (SELECT 1 FROM app.events AS e
                          WHERE e.cover_media_id = m.id)
        RETURNING 1
    )
    SELECT json_build_object('deleted', count(*)) FROM gone;
$$;

-- The names of the files some row refers to (for the file sweep).
CREATE OR REPLACE FUNCTION maintenance.media_names()
RETURNS SETOF text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT m.name FROM app.media AS m ORDER BY 1;
$$;


-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION app.events_cover_media_sync(),
    app.media_record(bigint, text, text, bigint, int, int),
    maintenance.media_purge(), maintenance.media_names()
    FROM PUBLIC, platform_app;

GRANT EXECUTE ON FUNCTION
    api.event_cover_set(bigint, bigint, text, text, bigint, int, int),
    api.event_cover_delete(bigint, bigint)
    TO platform_app;
