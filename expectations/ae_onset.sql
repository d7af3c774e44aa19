-- AE onsets: coded term, grade and grading scale; an AE (product, ae_id) should have one onset.
SELECT event_id, product, site_id, product || '/' || ae_id AS ae_key, term, grade, grading_scale, serious
FROM scoped
WHERE event_type = 'ae_onset'
