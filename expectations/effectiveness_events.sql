-- The effectiveness evidence of contract v1.1 (material distributions, knowledge assessments, audit findings,
-- CAPA closures, post-infusion contacts): does each refer to things the KPIs can find. One row per event in
-- scope; a check that does not apply to an event's type is NULL there (GX skips NULLs in these expectations).
SELECT e.event_type,
       EXISTS (SELECT 1 FROM known s WHERE s.event_type = 'site_registered'
               AND s.product = e.product AND s.site_id = e.site_id) AS site_registered,
       -- material_reach looks for the distribution under the recipient site's id
       CASE WHEN e.event_type = 'material_distributed' AND e.recipient_kind = 'site' THEN
           EXISTS (SELECT 1 FROM known s WHERE s.event_type = 'site_registered'
                   AND s.product = e.product AND s.site_id = e.recipient_id) END AS recipient_site_registered,
       CASE WHEN e.event_type IN ('material_distributed', 'knowledge_assessed') THEN
           EXISTS (SELECT 1 FROM known m WHERE m.event_type = 'material_version_released' AND m.product = e.product
                   AND m.material_id = e.material_id AND m.version = e.material_version) END
           AS material_version_released,
       -- a closure of a finding never raised cannot close anything: capa_on_time keeps the real finding open
       CASE WHEN e.event_type = 'capa_closed' THEN f.raised_at IS NOT NULL END AS capa_finding_known,
       CASE WHEN e.event_type = 'capa_closed' AND f.raised_at IS NOT NULL THEN e.occurred_at >= f.raised_at END
           AS capa_not_before_finding,
       -- a contact under a mistyped pseudonym leaves the real patient's monitoring day empty
       CASE WHEN e.event_type = 'post_infusion_contact' THEN
           EXISTS (SELECT 1 FROM known i WHERE i.event_type = 'infusion_administered' AND i.product = e.product
                   AND i.patient_ref = e.patient_ref AND i.occurred_at <= e.occurred_at) END AS contact_after_infusion
FROM scoped e
LEFT JOIN (SELECT product, finding_id, min(occurred_at) AS raised_at FROM known
           WHERE event_type = 'audit_finding_raised' GROUP BY ALL) f
       ON e.event_type = 'capa_closed' AND f.product = e.product AND f.finding_id = e.finding_id
WHERE e.event_type IN ('material_distributed', 'knowledge_assessed', 'audit_finding_raised', 'capa_closed',
                       'post_infusion_contact')
