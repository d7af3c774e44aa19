-- Envelope of every event (the events table), one row per stored event in scope.
-- content_key: the event's facts without its id and delivery times, so a fact re-sent under a new event_id
-- (which the store cannot deduplicate) shows up as a repeated key.
SELECT event_id, event_type, topic, schema_version, product, site_id, occurred_at, known_at,
       CASE event_type
         WHEN 'site_registered' THEN 'rmm.site' WHEN 'site_certification_changed' THEN 'rmm.site'
         WHEN 'tocilizumab_stock_reported' THEN 'rmm.site'
         WHEN 'material_version_released' THEN 'rmm.training' WHEN 'hcp_registered' THEN 'rmm.training'
         WHEN 'training_completed' THEN 'rmm.training' WHEN 'patient_education_completed' THEN 'rmm.training'
         WHEN 'product_received' THEN 'rmm.infusion' WHEN 'product_thawed' THEN 'rmm.infusion'
         WHEN 'infusion_administered' THEN 'rmm.infusion' WHEN 'alert_card_issued' THEN 'rmm.infusion'
         WHEN 'ltfu_visit' THEN 'rmm.infusion'
         ELSE 'rmm.ae' END = topic AS topic_matches_type,
       -- minutes the event claims to lie ahead of the moment it reached us (clock skew, bad source times)
       epoch(occurred_at - least(known_at, ingested_at)) / 60.0 AS future_minutes,
       -- minutes from occurrence to the source system's record (negative: recorded before it happened)
       CASE WHEN recorded_at IS NOT NULL THEN epoch(recorded_at - occurred_at) / 60.0 END AS record_lag_minutes,
       md5(concat_ws('|', event_type, product, site_id, CAST(occurred_at AS VARCHAR), patient_ref, hcp_id, ae_id,
                     lot_id, material_id, CAST(version AS VARCHAR), CAST(visit_no AS VARCHAR), status,
                     CAST(grade AS VARCHAR), CAST(doses_on_hand AS VARCHAR), CAST(score AS VARCHAR), regulator,
                     report_kind, term, role)) AS content_key
FROM scoped
