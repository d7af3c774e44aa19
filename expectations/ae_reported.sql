-- Each regulatory AE report: does it refer to an AE the MAH became aware of (day 0 of the reporting clock)
-- and to a known onset, and was it filed no earlier than that awareness.
SELECT a.event_id, a.product, a.site_id, a.ae_id, a.regulator, a.report_kind,
       EXISTS (SELECT 1 FROM known w WHERE w.event_type = 'ae_awareness'
               AND w.product = a.product AND w.ae_id = a.ae_id) AS ae_has_awareness,
       EXISTS (SELECT 1 FROM known o WHERE o.event_type = 'ae_onset'
               AND o.product = a.product AND o.ae_id = a.ae_id) AS ae_has_onset,
       epoch(a.occurred_at - (SELECT min(w.occurred_at) FROM known w WHERE w.event_type = 'ae_awareness'
                              AND w.product = a.product AND w.ae_id = a.ae_id)) / 86400.0 AS days_after_awareness
FROM scoped a
WHERE a.event_type = 'ae_reported'
