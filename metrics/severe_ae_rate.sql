-- Shared by severe_crs_rate and severe_icans_rate (their yml say `sql: severe_ae_rate.sql`); the AE term comes
-- from the KPI's `params.term` (CRS or ICANS).
-- Unit: each patient's first infusion (the shared first_infusion model), once 30 d have passed at as-of;
-- anchor = that infusion (product/site from it).
-- "Success" (counted in the numerator; lower is better): an observation of grade >= 3 -- an ae_onset or
-- ae_grade_changed of an AE whose ae_onset has the term -- for the patient with occurred_at in
-- [first infusion, first infusion + 30 d]. Pending while as-of < first infusion + 30 d, whatever is seen so far.
with grades as (
    -- the AE observations that can lie in a 30-day window of a first infusion of the period
    select g.product, g.patient_ref, g.ae_id, g.grade, g.grading_scale, g.occurred_at, g.seq
    from known_events g
    where g.event_type in ('ae_onset', 'ae_grade_changed')
      and ($anchor_from is null or g.occurred_at >= $anchor_from)
      and ($anchor_to is null or g.occurred_at <= $anchor_to::timestamptz + interval 31 day)
),
term_aes as (
    select e.product, e.ae_id
    from known_events e join params p on p.product = e.product
    where e.event_type = 'ae_onset' and e.term = p.term
),
observations as (
    select g.*
    from grades g
    semi join term_aes a on a.product = g.product and a.ae_id = g.ae_id
),
in_window as (
    -- the observations within each first infusion's 30 days, keyed by the infusion's seq (one per patient here)
    select f.seq, o.grade, o.grading_scale, o.occurred_at, o.seq as obs_seq
    from first_infusion f
    join observations o on o.product = f.product and o.patient_ref = f.patient_ref
        and o.occurred_at between f.occurred_at and f.occurred_at + interval 30 day
),
highest_grades as (
    -- grouped by that integer seq, which hashes far cheaper than the infusion's string columns
    select seq, max(grade) as max_grade
    from in_window
    group by seq
),
first_severe as (
    -- the first observation of grade >= 3 (ties: first stored): a window over the few severe rows instead of
    -- arg_min with a (time, seq) struct key, which built a struct for every observation
    select seq, grade as severe_grade, grading_scale as severe_scale, occurred_at as severe_at
    from in_window
    where grade >= 3
    qualify row_number() over (partition by seq order by occurred_at, obs_seq) = 1
),
judged as (
    select f.*, p.term, s.severe_at, s.severe_grade, s.severe_scale, h.max_grade
    from first_infusion f
    join params p on p.product = f.product
    left join highest_grades h using (seq)
    left join first_severe s using (seq)
)
select product, site_id, occurred_at as anchor_at,
       case when $as_of < occurred_at + interval 30 day then 'pending'
            when severe_at is not null then 'success'
            else 'failure' end as outcome,
       patient_ref as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id, severe_scale,
       case when occurred_at + interval 30 day > $as_of then occurred_at + interval 30 day end as recheck_at,
       case
           when severe_at is not null then
               term || ' grade ' || severe_grade || ' (' || severe_scale || ') at ' || strftime(severe_at, '%Y-%m-%d %H:%MZ')
               || ', ' || printf('%.1f', (epoch(severe_at) - epoch(occurred_at)) / 86400.0) || ' d after first infusion at '
               || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
               || case when $as_of < occurred_at + interval 30 day then
                       '; 30-day observation open until ' || strftime(occurred_at + interval 30 day, '%Y-%m-%d %H:%MZ')
                       else '' end
           when $as_of < occurred_at + interval 30 day then
               'first infusion at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || '; no ' || term || ' grade >= 3 so far'
               || case when max_grade is null then '' else ' (highest grade ' || max_grade || ')' end
               || '; 30-day observation open until ' || strftime(occurred_at + interval 30 day, '%Y-%m-%d %H:%MZ')
           else
               case when max_grade is null then 'no ' || term else 'highest ' || term || ' grade ' || max_grade end
               || ' within 30 d of first infusion at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       end as detail
from judged
