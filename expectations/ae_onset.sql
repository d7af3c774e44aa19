-- AE onsets: coded term, grade and grading scale; an AE (product, ae_id) should have one onset.
-- Only the columns the expectations read (every row of the scope is in the frame).
SELECT product || '/' || ae_id AS ae_key, term, grade, grading_scale, serious
FROM scoped
WHERE event_type = 'ae_onset'
