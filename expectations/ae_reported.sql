-- Each regulatory AE report: does it refer to an AE the MAH became aware of (day 0 of the reporting clock)
-- and to a known onset, and was it filed no earlier than that awareness. Only the columns the expectations read
-- (every row of the scope is in the frame); each AE's first awareness is looked up once, not per report.
SELECT a.ae_id, a.regulator, a.report_kind,
       w.day0 IS NOT NULL AS ae_has_awareness,
       EXISTS (SELECT 1 FROM known o WHERE o.event_type = 'ae_onset'
               AND o.product = a.product AND o.ae_id = a.ae_id) AS ae_has_onset,
       (epoch_us(a.occurred_at) - epoch_us(w.day0)) / 1e6 / 86400.0 AS days_after_awareness
FROM scoped a
LEFT JOIN (SELECT product, ae_id, min(occurred_at) AS day0 FROM known WHERE event_type = 'ae_awareness'
           GROUP BY ALL) w ON w.product = a.product AND w.ae_id = a.ae_id
WHERE a.event_type = 'ae_reported'
