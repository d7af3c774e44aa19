-- Envelope of every event (the events table), one row per stored event in scope. Only what the expectations
-- read, each as a per-row value or fact (the frame of 4 M events must stay small: GX fingerprints it row by row).
-- event_id_present: the id itself is 4 M unique strings and the expectation asks only whether it is there.
-- content_key: the event's facts without its id and delivery times, so a fact re-sent under a new event_id
-- (which the store cannot deduplicate) shows up as a repeated key. A 64-bit hash of the fields themselves (NULL
-- and position aware): equal facts always get equal keys; two different facts share one with probability
-- ~ n^2 / 2^65 (5e-7 at 4 M rows), which could only count a duplicate too many, never hide one.
SELECT event_id IS NOT NULL AS event_id_present, event_type, schema_version, product, site_id, occurred_at,
       CASE event_type
         WHEN 'site_registered' THEN 'rmm.site' WHEN 'site_certification_changed' THEN 'rmm.site'
         WHEN 'tocilizumab_stock_reported' THEN 'rmm.site'
         WHEN 'material_version_released' THEN 'rmm.training' WHEN 'hcp_registered' THEN 'rmm.training'
         WHEN 'training_completed' THEN 'rmm.training' WHEN 'patient_education_completed' THEN 'rmm.training'
         WHEN 'product_received' THEN 'rmm.infusion' WHEN 'product_thawed' THEN 'rmm.infusion'
         WHEN 'infusion_administered' THEN 'rmm.infusion' WHEN 'alert_card_issued' THEN 'rmm.infusion'
         WHEN 'ltfu_visit' THEN 'rmm.infusion'
         ELSE 'rmm.ae' END = topic AS topic_matches_type,
       -- minutes the event claims to lie ahead of the moment it reached us (clock skew, bad source times);
       -- microsecond arithmetic, not epoch(interval): the same number, without building an interval per row
       (epoch_us(occurred_at) - epoch_us(least(known_at, ingested_at))) / 1e6 / 60.0 AS future_minutes,
       -- minutes from occurrence to the source system's record (negative: recorded before it happened)
       (epoch_us(recorded_at) - epoch_us(occurred_at)) / 1e6 / 60.0 AS record_lag_minutes,
       hash(event_type, product, site_id, occurred_at, patient_ref, hcp_id, ae_id, lot_id, material_id, version,
            visit_no, status, grade, doses_on_hand, score, regulator, report_kind, term, role) AS content_key
FROM scoped
