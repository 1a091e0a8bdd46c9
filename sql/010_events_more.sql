-- 010_events_more.sql - the gaps the pages and the review found in the
-- events issue (issue 4):
--
--   * the event's capacity (app.events.capacity, NULL = unlimited) bounds
--     the places held or issued across all its ticket types, under
--     concurrency (app.take_ticket replaced; a trigger refuses a capacity
--     below the places taken, 409 naming capacity);
--   * GET /api/orgs/{org} (api.org_get): the organisation, its Stripe
--     account and organisers;
--   * GET /api/meta (api.meta): business types and currencies, from their
--     single SQL sources (app.business_types(), app.currencies() -- the
--     ticket types' CHECK now calls the latter);
--   * GET /api/me/tickets: each ticket's team; GET /api/events/{id}/team:
--     the event's time zone;
--   * the "already have a place" hint names the "My events" page;
--   * maintenance.registrations_expire(): pending registrations whose link
--     ran out are expired every hour by a self-rescheduling `sql` job.
--
-- Folding, not copying: small changes to large functions of 005, 008 and
-- 009 are made by app.patch_function below, which rewrites one exact
-- passage of the function's current definition (pg_get_functiondef) and
-- fails the migration when the passage is not there exactly once.  Each
-- patch names the function, the passage and why; the full text of those
-- functions stays where it was written.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, catalog-guarded DO blocks,
-- patches that recognise their own result.


-- ---------------------------------------------------------------------
-- Patching a function in place
-- ---------------------------------------------------------------------

-- Replaces the passage OLD by NEW in the definition of FN and re-creates
-- it (CREATE OR REPLACE keeps its owner and privileges).  Nothing is done
-- when NEW is already there (a re-run); an OLD found other than exactly
-- once is an error, so a function that changed under the patch is noticed
-- when migrating, not at run time.
CREATE OR REPLACE FUNCTION app.patch_function(fn regprocedure, old text,
                                              new text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    def text := pg_get_functiondef(fn);
    n   int;
BEGIN
    IF position(new IN def) > 0 THEN
        RETURN false;
    END IF;
    n := (length(def) - length(replace(def, old, ''))) / length(old);
    IF n <> 1 THEN
        RAISE EXCEPTION 'cannot patch %: the passage occurs % times', fn, n
            USING DETAIL = left(old, 200);
    END IF;
    EXECUTE replace(def, old, new);
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION app.patch_function(regprocedure, text, text)
    FROM PUBLIC;


-- ---------------------------------------------------------------------
-- Currencies: one list
-- ---------------------------------------------------------------------

-- The currencies ticket types may be priced in (ISO 4217).  The CHECK on
-- app.ticket_types, app.ticket_type_apply's check and message, and
-- GET /api/meta all read this list.
CREATE OR REPLACE FUNCTION app.currencies()
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['EUR', 'USD', 'GBP', 'CHF', 'SEK', 'NOK', 'DKK', 'PLN',
                 'CZK', 'CAD', 'AUD', 'JPY']
$$;

-- Digits after the decimal point of a currency's minor unit (price_minor
-- is in minor units: 2500 EUR = 25.00 EUR, 2500 JPY = 2500 JPY).
CREATE OR REPLACE FUNCTION app.currency_digits(currency text)
RETURNS int
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN currency = 'JPY' THEN 0 ELSE 2 END
$$;

-- The table's CHECK (005 spelt the list out) now calls app.currencies().
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'ticket_types_currency_check'
                     AND conrelid = 'app.ticket_types'::regclass
                     AND pg_get_constraintdef(oid) LIKE '%currencies()%')
    THEN
        ALTER TABLE app.ticket_types
            DROP CONSTRAINT IF EXISTS ticket_types_currency_check;
        ALTER TABLE app.ticket_types ADD CONSTRAINT ticket_types_currency_check
            CHECK (currency = ANY (app.currencies()));
    END IF;
END
$$;

-- app.ticket_type_apply (005): the check and its message from the list.
SELECT app.patch_function('app.ticket_type_apply(app.ticket_types, jsonb)',
$old$              OR upper(body->>'currency') <> ALL (ARRAY['EUR', 'USD', 'GBP',
                     'CHF', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK', 'CAD', 'AUD',
                     'JPY']) THEN
            PERFORM app.bad_field('currency',
                'currency must be one of EUR, USD, GBP, CHF, SEK, NOK, DKK, '
                'PLN, CZK, CAD, AUD, JPY.');$old$,
$new$              OR upper(body->>'currency') <> ALL (app.currencies()) THEN
            PERFORM app.bad_field('currency', 'currency must be one of '
                || array_to_string(app.currencies(), ', ') || '.');$new$);


-- ---------------------------------------------------------------------
-- Capacity
-- ---------------------------------------------------------------------

-- Places held or issued across the event's ticket types.
CREATE OR REPLACE FUNCTION app.event_taken(event_id bigint)
RETURNS int
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(t.sold), 0)::int
    FROM app.ticket_types AS t
    WHERE t.event_id = event_taken.event_id;
$$;

-- Places of the ticket type that can still be taken: its own remaining
-- quantity, bounded by what the event's capacity leaves.  An answer for
-- the pages, not a promise: app.take_ticket decides.
CREATE OR REPLACE FUNCTION app.places_left(t app.ticket_types)
RETURNS int
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT greatest(0, least(t.quantity - t.sold,
                             e.capacity - app.event_taken(e.id)))
    FROM app.events AS e
    WHERE e.id = t.event_id;
$$;

-- One place of the ticket type, if the type and the event have one left:
-- true when taken.  Replaces 005's version, which knew only the type's
-- quantity.  Every place is taken here (app.registration_confirm, and
-- app.checkout_paid for a payment after its hold ended, both in 008).
--
-- Concurrency: the EVENT ROW's lock serialises every taker of the event.
-- It is taken FOR NO KEY UPDATE, which conflicts with itself (and with
-- the FOR UPDATE of app.org_event, so an organiser changing the capacity
-- or cancelling waits, and is waited for), but not with the FOR KEY SHARE
-- the callers already hold on the same row (so a caller upgrades its own
-- lock without waiting for other confirmations merely holding KEY SHARE).
-- The lock is held to the end of the transaction, so a place taken here
-- is committed (or rolled back) before the next taker of the event gets
-- the lock; the sum of sold is read by a statement that starts after the
-- lock is granted, and the functions run under READ COMMITTED (the
-- platform's default), so each statement sees every place committed
-- before it: no two takers both see the last place.  The ticket type's
-- own bound stays the UPDATE's `sold < quantity` on its row (and the
-- table's CHECK).  Places are given back (app.release_place) without the
-- lock: a count going down never lets a place too many in.
CREATE OR REPLACE FUNCTION app.take_ticket(ticket_type_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event    bigint;
    v_capacity int;
BEGIN
    SELECT t.event_id INTO v_event
    FROM app.ticket_types AS t WHERE t.id = take_ticket.ticket_type_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    SELECT e.capacity INTO v_capacity
    FROM app.events AS e WHERE e.id = v_event
    FOR NO KEY UPDATE;

    IF v_capacity IS NOT NULL AND app.event_taken(v_event) >= v_capacity THEN
        RETURN false;
    END IF;

    UPDATE app.ticket_types AS x
    SET sold = x.sold + 1
    WHERE x.id = take_ticket.ticket_type_id
      AND x.sold < x.quantity;

    RETURN FOUND;
END
$$;

-- The sentence for a registration that found no place: the event's when
-- its capacity is what ran out, else the ticket type's.
CREATE OR REPLACE FUNCTION app.sold_out_message(t app.ticket_types,
                                                e app.events)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN x.capacity IS NOT NULL
             AND app.event_taken(x.id) >= x.capacity
        THEN 'Sorry, "' || x.title || '" is sold out.'
        ELSE 'Sorry, "' || t.name || '" for "' || x.title || '" is sold out.'
    END
    FROM app.events AS x
    WHERE x.id = e.id;
$$;

-- A capacity below the places already taken is refused, whoever changes
-- it (PATCH of the event, or publishing a draft whose capacity is too
-- small): 409 naming capacity.  The row being updated is locked before a
-- BEFORE trigger runs, and app.take_ticket takes that lock, so the count
-- read here cannot grow until this transaction ends.
CREATE OR REPLACE FUNCTION app.events_capacity_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    IF NEW.capacity IS NOT NULL
       AND (NEW.capacity IS DISTINCT FROM OLD.capacity
            OR NEW.status = 'published' AND OLD.status <> 'published')
    THEN
        n := app.event_taken(NEW.id);
        IF NEW.capacity < n THEN
            RAISE EXCEPTION 'capacity cannot be below the % places already '
                            'taken.', n
                USING ERRCODE = 'PT409', DETAIL = 'field: capacity';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER events_capacity_check
    BEFORE UPDATE OF capacity, status ON app.events
    FOR EACH ROW EXECUTE FUNCTION app.events_capacity_check();

-- api.registration_create (008): the early "sold out" answer also when the
-- event is full, and the hint names the page as the site does.
SELECT app.patch_function(
    'api.registration_create(bigint, jsonb, bigint, text, text, text, text, '
    'text, int, int, int, int)',
$old$    IF t.sold >= t.quantity THEN
        RAISE EXCEPTION 'Sorry, "%" for "%" is sold out.', t.name, e.title
            USING ERRCODE = 'PT409';$old$,
$new$    IF app.places_left(t) <= 0 THEN
        RAISE EXCEPTION '%', app.sold_out_message(t, e)
            USING ERRCODE = 'PT409';$new$);

SELECT app.patch_function(
    'api.registration_create(bigint, jsonb, bigint, text, text, text, text, '
    'text, int, int, int, int)',
$old$'Your tickets are on the "My tickets" page.'$old$,
$new$'Your tickets are on the "My events" page.'$new$);

-- app.registration_confirm (008): the sold-out sentence says which ran out.
SELECT app.patch_function('app.registration_confirm(bigint, bigint)',
$old$            error = 'Sorry, "' || t.name || '" for "' || e.title
                    || '" is sold out.'$old$,
$new$            error = app.sold_out_message(t, e)$new$);

-- api.event_get (005): a ticket type's remaining places count the event's
-- capacity too.
SELECT app.patch_function('api.event_get(bigint)',
$old$                           'remaining', t.quantity - t.sold,$old$,
$new$                           'remaining', app.places_left(t),$new$);

-- app.event_json (005, the organiser's view): the places taken, beside
-- the capacity.
SELECT app.patch_function('app.event_json(app.events)',
$old$        'capacity', e.capacity,$old$,
$new$        'capacity', e.capacity,
        'taken', app.event_taken(e.id),$new$);


-- ---------------------------------------------------------------------
-- Teams in my tickets, the time zone on the team page
-- ---------------------------------------------------------------------

-- The user's team in the event ({"id", "name"}), or NULL: the team a
-- participant holding a valid ticket is in (as api.my_team finds it).
CREATE OR REPLACE FUNCTION app.ticket_team(event_id bigint, user_id bigint)
RETURNS json
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT json_build_object('id', x.id, 'name', x.name)
    FROM app.team_members AS m
    JOIN app.teams AS x ON x.id = m.team_id
    WHERE m.event_id = ticket_team.event_id
      AND m.user_id = ticket_team.user_id
      AND app.is_participant(m.event_id, m.user_id);
$$;

-- api.my_tickets (008): each ticket with its team.
SELECT app.patch_function('api.my_tickets(bigint)',
$old$                   'can_cancel', k.status = 'valid'$old$,
$new$                   'team', app.ticket_team(k.event_id, k.user_id),
                   'can_cancel', k.status = 'valid'$new$);

-- api.my_team (009): the event's time zone, so the team page needs no
-- second request.
SELECT app.patch_function('api.my_team(bigint, bigint)',
$old$                                   'ends_at', e.ends_at),$old$,
$new$                                   'ends_at', e.ends_at,
                                   'time_zone', e.time_zone),$new$);


-- ---------------------------------------------------------------------
-- Endpoints
-- ---------------------------------------------------------------------

-- GET /api/orgs/{org} (platform_auth organiser org=$1):
--   api.org_get($platform_org::bigint)
-- {"id", "name", "stripe_account", "organisers": [{"user_id", "email"}],
-- "created_at"}; organisers in the order they joined.
CREATE OR REPLACE FUNCTION api.org_get(org_id bigint)
RETURNS json
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o app.organisations;
BEGIN
    SELECT * INTO o FROM app.organisations AS x WHERE x.id = org_get.org_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such organisation.' USING ERRCODE = 'PT404';
    END IF;

    RETURN json_build_object(
        'id', o.id,
        'name', o.name,
        'stripe_account', o.stripe_account,
        'organisers',
        (SELECT coalesce(json_agg(json_build_object('user_id', u.id,
                                                    'email', u.email)
                                  ORDER BY m.created_at, u.id), '[]'::json)
         FROM auth.memberships AS m
         JOIN auth.users AS u ON u.id = m.user_id
         WHERE m.org_id = o.id AND m.role = 'organiser'),
        'created_at', o.created_at);
END
$$;

-- GET /api/meta (public): the fixed lists the pages offer, from their
-- single sources: {"business_types": ["conference", ...], "currencies":
-- [{"code": "EUR", "digits": 2}, ...]} (digits: of the minor unit).
CREATE OR REPLACE FUNCTION api.meta()
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM platform.set_header('Cache-Control', 'public, max-age=300');
    RETURN json_build_object(
        'business_types', to_json(app.business_types()),
        'currencies',
        (SELECT json_agg(json_build_object('code', c,
                                           'digits', app.currency_digits(c))
                         ORDER BY n)
         FROM unnest(app.currencies()) WITH ORDINALITY AS x(c, n)));
END
$$;


-- ---------------------------------------------------------------------
-- Stale pending registrations: a self-rescheduling maintenance job
-- ---------------------------------------------------------------------

-- Enqueues the next run of a repeating job under KEY.  Called by the job
-- itself while it runs: the running job still holds KEY (keys are unique
-- among pending and running jobs, and jobs.enqueue answers the holder's id
-- without enqueueing anything), so the running job hands the key over
-- first; it is finished by id as usual.  Outside a job it is
-- jobs.enqueue.  docs/auth-and-jobs.md ("Repeating jobs").
CREATE OR REPLACE FUNCTION jobs.enqueue_next(kind text, payload jsonb,
                                             run_at timestamptz, key text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE jobs.jobs AS j SET key = NULL
    WHERE j.key = enqueue_next.key AND j.state = 'running';

    RETURN jobs.enqueue(kind, payload, run_at, key);
END
$$;

REVOKE ALL ON FUNCTION jobs.enqueue_next(text, jsonb, timestamptz, text)
    FROM PUBLIC;

-- SQL job {"function": "registrations_expire"}, key
-- maintenance:registrations_expire, every hour: pending registrations
-- whose link ran out (older than a day: a link confirms the address's
-- pending registrations of the last day, app.registrations_confirm_pending)
-- are expired with the sentence that function gives them.  Rows locked by
-- a confirmation or a cancellation at that moment are skipped (the next
-- run gets them).  Returns how many were expired; then enqueues its next
-- run.
CREATE OR REPLACE FUNCTION maintenance.registrations_expire()
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    UPDATE app.registrations AS x
    SET status = 'expired', updated_at = now(),
        error = 'This registration was not confirmed in time. Please '
                'register again.'
    WHERE x.id IN (SELECT y.id FROM app.registrations AS y
                   WHERE y.status = 'pending'
                     AND y.created_at <= now() - interval '1 day'
                   ORDER BY y.id
                   FOR UPDATE SKIP LOCKED)
      AND x.status = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;

    PERFORM jobs.enqueue_next('sql', '{"function": "registrations_expire"}',
                              now() + interval '1 hour',
                              'maintenance:registrations_expire');
    RETURN n;
END
$$;

CREATE INDEX IF NOT EXISTS registrations_pending_created_idx
    ON app.registrations (created_at) WHERE status = 'pending';

-- The first run (a pending one already there is kept: jobs.enqueue with
-- its key changes nothing).
SELECT jobs.enqueue('sql', '{"function": "registrations_expire"}',
                    run_at => now() + interval '1 hour',
                    key => 'maintenance:registrations_expire');


-- ---------------------------------------------------------------------
-- Privileges: helpers are not nginx's to call.
-- ---------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA app, maintenance FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.url_decode(text) TO platform_app;
GRANT EXECUTE ON FUNCTION app.business_types() TO platform_app;
GRANT EXECUTE ON FUNCTION api.org_get(bigint), api.meta() TO platform_app;
