-- Envelope of every event (the events table), one row per stored event in scope. Only what the expectations
-- read, each as a per-row value or fact (the frame of 4 M events must stay small: GX fingerprints it row by row).
-- event_id_present: the id itself is 4 M unique strings and the expectation asks only whether it is there.
-- content_key: the event's facts without its id and delivery times, so a fact re-sent under a new event_id
-- (which the store cannot deduplicate) shows up as a repeated key. A 64-bit hash of the fields themselves (NULL
-- and position aware): equal facts always get equal keys; two different facts share one with probability
-- ~ n^2 / 2^65 (5e-7 at 4 M rows), which could only count a duplicate too many, never hide one.
SELECT e.event_id IS NOT NULL AS event_id_present, e.schema_version, e.product, e.site_id, e.occurred_at,
       -- the contract's own table of event types and topics (the loader's `contract_topics`, generated from the
       -- event classes): an unknown type and a type on the wrong topic are two different failures
       c.event_type IS NOT NULL AS event_type_in_contract,
       coalesce(c.topic = e.topic, false) AS topic_matches_type,
       -- minutes the event claims to lie ahead of the moment it reached us (clock skew, bad source times);
       -- microsecond arithmetic, not epoch(interval): the same number, without building an interval per row
       (epoch_us(e.occurred_at) - epoch_us(least(e.known_at, e.ingested_at))) / 1e6 / 60.0 AS future_minutes,
       -- minutes from occurrence to the source system's record (negative: recorded before it happened)
       (epoch_us(e.recorded_at) - epoch_us(e.occurred_at)) / 1e6 / 60.0 AS record_lag_minutes,
       hash(e.event_type, e.product, e.site_id, e.occurred_at, e.patient_ref, e.hcp_id, e.ae_id, e.lot_id,
            e.material_id, e.version, e.visit_no, e.status, e.grade, e.doses_on_hand, e.score, e.regulator,
            e.report_kind, e.term, e.role, e.material_version, e.recipient_kind, e.recipient_id, e.channel,
            e.assessment_id, e.respondent_kind, e.respondent_id, e.key_messages, e.key_messages_correct,
            e.audit_id, e.finding_id, e.severity, e.area, e.verified, e.kind, e.within_proximity) AS content_key
FROM scoped e
LEFT JOIN contract_topics c ON c.event_type = e.event_type
