-- 028_gdpr_channels.sql - the GDPR registry (025) learns the table the
-- rentals channels added in 021: booking errors hold the guest's name and
-- address of a channel booking that could not be placed.  Exported and
-- anonymised like the bookings themselves (docs/gdpr.md).

INSERT INTO gdpr.registry (relation, identified_by, on_delete, why) VALUES
 ('rentals.booking_errors', 'guest_email (resolved_by)', 'anonymise',
  'channel bookings that conflicted: the guest''s name and email erased, '
  'the dates stay for the owner; as the owner who resolved one: set to NULL')
ON CONFLICT (relation) DO UPDATE
SET identified_by = EXCLUDED.identified_by, on_delete = EXCLUDED.on_delete,
    why = EXCLUDED.why;

SELECT app.patch_function('gdpr.export_json(bigint, text)',
$old$        'rentals.properties', '[]'::jsonb,$old$,
$new$        'rentals.properties', '[]'::jsonb,
        'rentals.booking_errors', (SELECT coalesce(jsonb_agg(to_jsonb(x)
                                                   ORDER BY x.id), '[]')
                                   FROM rentals.booking_errors AS x
                                   WHERE x.guest_email = e
                                      OR x.resolved_by = u),$new$);

SELECT app.patch_function('gdpr.erase(bigint, text)',
$old$    DELETE FROM rentals.signups AS x WHERE x.email = e;$old$,
$new$    UPDATE rentals.booking_errors AS x
    SET guest_name = CASE WHEN x.guest_name IS NOT NULL
                          THEN 'Deleted guest' END,
        guest_email = NULL
    WHERE x.guest_email = e;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE rentals.booking_errors AS x SET resolved_by = NULL
    WHERE x.resolved_by = u;
    out := out || jsonb_build_object('rentals.booking_errors', n);

    DELETE FROM rentals.signups AS x WHERE x.email = e;$new$);
