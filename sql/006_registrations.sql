-- 006_registrations.sql - the tables of registration and tickets (issue 4):
-- who asked for a place, what they agreed to, how the place was paid for,
-- and the tickets issued.  The functions that fill them come in later
-- migrations (registration and Stripe, teams and submissions).
--
-- A registration is one person's request for one ticket type:
--
--   pending    waiting for the email address to be confirmed (magic link)
--   held       a paid place is held while the participant pays (Stripe
--              Checkout); hold_expires_at bounds it
--   issued     the ticket exists (tickets.registration_id)
--   sold_out   confirmed, but no place was left
--   expired    the confirmation link or the payment hold ran out
--   failed     the payment could not be started or was refused
--   cancelled  withdrawn by the participant or the organiser
--
-- A place is counted in ticket_types.sold while a registration is held or
-- issued, never otherwise; app.take_ticket() is the only way in.

CREATE TABLE IF NOT EXISTS app.registrations (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id            bigint NOT NULL
                        REFERENCES app.events (id) ON DELETE CASCADE,
    ticket_type_id      bigint NOT NULL
                        REFERENCES app.ticket_types (id) ON DELETE CASCADE,
    email               text NOT NULL
                        CONSTRAINT registrations_email_check
                        CHECK (email = lower(email) AND length(email) <= 254),
    name                text NOT NULL
                        CONSTRAINT registrations_name_check
                        CHECK (length(name) BETWEEN 1 AND 200),
    -- set when the email address is confirmed
    user_id             bigint REFERENCES auth.users (id) ON DELETE CASCADE,
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT registrations_status_check
                        CHECK (status IN ('pending', 'held', 'issued',
                                          'sold_out', 'expired', 'failed',
                                          'cancelled')),
    -- what the participant accepted, and when (GDPR: the record of consent)
    terms_version       text NOT NULL
                        CHECK (terms_version ~ '^[A-Za-z0-9._:-]{1,64}$'),
    consent_version     text NOT NULL
                        CHECK (consent_version ~ '^[A-Za-z0-9._:-]{1,64}$'),
    accepted_at         timestamptz NOT NULL DEFAULT now(),
    client_ip           inet,
    -- paid tickets: the price when the place was held, the Checkout Session
    amount_minor        int CHECK (amount_minor >= 0),
    currency            char(3),
    hold_expires_at     timestamptz,
    checkout_session_id text CONSTRAINT registrations_checkout_session_key
                             UNIQUE,
    checkout_url        text,
    payment_intent      text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT registrations_hold_check
        CHECK (status <> 'held' OR hold_expires_at IS NOT NULL),
    CONSTRAINT registrations_user_check
        CHECK (status IN ('pending', 'expired') OR user_id IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS registrations_email_pending_idx
    ON app.registrations (email) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS registrations_user_id_idx
    ON app.registrations (user_id, created_at);
CREATE INDEX IF NOT EXISTS registrations_event_id_idx
    ON app.registrations (event_id, status);
CREATE INDEX IF NOT EXISTS registrations_hold_idx
    ON app.registrations (hold_expires_at) WHERE status = 'held';

-- One valid ticket per person and event: registering twice gives one
-- ticket, and counting participants counts people.
CREATE TABLE IF NOT EXISTS app.tickets (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- unguessable (122 random bits), for the participant's links
    -- (calendar file, check-in)
    code            text NOT NULL
                    DEFAULT replace(pg_catalog.gen_random_uuid()::text, '-', '')
                    CONSTRAINT tickets_code_key UNIQUE,
    event_id        bigint NOT NULL
                    REFERENCES app.events (id) ON DELETE CASCADE,
    ticket_type_id  bigint NOT NULL
                    REFERENCES app.ticket_types (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL
                    REFERENCES auth.users (id) ON DELETE CASCADE,
    registration_id bigint CONSTRAINT tickets_registration_id_key UNIQUE
                    REFERENCES app.registrations (id) ON DELETE SET NULL,
    status          text NOT NULL DEFAULT 'valid'
                    CONSTRAINT tickets_status_check
                    CHECK (status IN ('valid', 'cancelled')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS tickets_event_user_valid_key
    ON app.tickets (event_id, user_id) WHERE status = 'valid';
CREATE INDEX IF NOT EXISTS tickets_user_id_idx
    ON app.tickets (user_id);

-- Stripe events seen by the webhook endpoint: each id is processed once.
-- signature_time is the t= of the delivery that was processed (a request
-- carrying the same id and t again is a replay; Stripe's own redeliveries
-- are signed anew).
CREATE TABLE IF NOT EXISTS app.stripe_events (
    id              text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    type            text NOT NULL,
    signature_time  bigint NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    payload         jsonb NOT NULL
);

REVOKE ALL ON app.registrations, app.tickets, app.stripe_events
    FROM PUBLIC, platform_app;
