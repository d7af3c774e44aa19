-- Training attempts: score range, and references to a registered HCP and a released material version.
-- Only the columns the expectations read (every row of the scope is in the frame).
SELECT t.score, t.passed,
       EXISTS (SELECT 1 FROM known h WHERE h.event_type = 'hcp_registered' AND h.product = t.product
               AND h.site_id = t.site_id AND h.hcp_id = t.hcp_id) AS hcp_registered_at_site,
       EXISTS (SELECT 1 FROM known m WHERE m.event_type = 'material_version_released' AND m.product = t.product
               AND m.material_id = t.material_id AND m.version = t.material_version) AS material_version_released
FROM scoped t
WHERE t.event_type = 'training_completed'
