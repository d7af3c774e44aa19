-- Certification changes and tocilizumab stock reports: values in range and from a registered site.
-- Only the columns the expectations read (every row of the scope is in the frame).
SELECT e.status, e.doses_on_hand,
       EXISTS (SELECT 1 FROM known s WHERE s.event_type = 'site_registered'
               AND s.product = e.product AND s.site_id = e.site_id) AS site_registered
FROM scoped e
WHERE e.event_type IN ('site_certification_changed', 'tocilizumab_stock_reported')
