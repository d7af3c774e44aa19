-- Long-term follow-up visits: status and numbering, and the patient was infused.
-- Only the columns the expectations read (every row of the scope is in the frame).
SELECT v.visit_no, v.status, v.due_at,
       EXISTS (SELECT 1 FROM known i WHERE i.event_type = 'infusion_administered'
               AND i.product = v.product AND i.patient_ref = v.patient_ref) AS patient_infused
FROM scoped v
WHERE v.event_type = 'ltfu_visit'
