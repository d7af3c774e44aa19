-- Each infusion with the facts a KPI needs about it: is its site registered, is the infusing HCP registered
-- at that site, was the infused lot received there. Lookups use every event known at the as-of time.
-- Only the columns the expectations read (every row of the scope is in the frame).
SELECT i.patient_ref, i.lot_id, i.hcp_id, i.dose_within_spec,
       EXISTS (SELECT 1 FROM known s WHERE s.event_type = 'site_registered'
               AND s.product = i.product AND s.site_id = i.site_id) AS site_registered,
       EXISTS (SELECT 1 FROM known h WHERE h.event_type = 'hcp_registered'
               AND h.product = i.product AND h.site_id = i.site_id AND h.hcp_id = i.hcp_id) AS hcp_registered_at_site,
       EXISTS (SELECT 1 FROM known r WHERE r.event_type = 'product_received' AND r.product = i.product
               AND r.site_id = i.site_id AND r.lot_id = i.lot_id) AS lot_received_at_site
FROM scoped i
WHERE i.event_type = 'infusion_administered'
