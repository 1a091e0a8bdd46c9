-- 012_events_fixes.sql - two corrections to the registration functions of
-- 008, made with app.patch_function (010) so their text stays in one place.
--
-- 1. Lock order.  Confirming an address's pending registrations locks each
--    registration's event row (app.take_ticket).  Taken in registration id
--    order, two addresses confirming registrations for the same two events
--    could lock them in opposite orders and deadlock; in event order they
--    cannot (every transaction takes event locks in ascending event id).
--
-- 2. One email syntax.  app.json_email repeated the regular expression of
--    api.auth_request_link; it now asks app.valid_email (009), which is
--    jobs.valid_address plus a dot in the domain: the same addresses, once
--    lower-cased.
--
-- Re-runnable: each patch recognises its own result.

SELECT app.patch_function(
    'app.registrations_confirm_pending(bigint, text)',
    'SELECT coalesce(array_agg(x.id ORDER BY x.id), ''{}'') INTO ids',
    'SELECT coalesce(array_agg(x.id ORDER BY x.event_id, x.id), ''{}'') '
    'INTO ids');

SELECT app.patch_function(
    'app.json_email(jsonb, text)',
    $old$    IF length(v) > 254
       OR v !~ ('^[a-z0-9.!#$%&''*+/=?^_`{|}~-]{1,64}@[a-z0-9]'
                '([a-z0-9-]{0,61}[a-z0-9])?'
                '(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$')
    THEN$old$,
    $new$    IF NOT app.valid_email(v) THEN$new$);
