-- Unit: each CRS episode (product + ae_id with an ae_onset of term CRS) whose grade reaches >= 2;
-- anchor t2 = the first time its grade is >= 2 (ae_onset or ae_grade_changed); product/site from the ae_onset.
-- Success: a tocilizumab_administered for the patient (same ae_id, or no ae_id) in [onset, t2 + 120 min].
-- Pending while as-of < t2 + 120 min and none.
with onsets as (
    select product, site_id, ae_id, patient_ref, occurred_at as onset_at
    from known_events where event_type = 'ae_onset' and term = 'CRS'
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
grades as (
    select product, ae_id, grade, occurred_at
    from known_events where event_type in ('ae_onset', 'ae_grade_changed')
),
episodes as (
    select o.*, min(g.occurred_at) as t2
    from onsets o join grades g on g.product = o.product and g.ae_id = o.ae_id and g.grade >= 2
    group by all
),
doses as (
    select product, patient_ref, ae_id, occurred_at
    from known_events where event_type = 'tocilizumab_administered'
),
judged as (
    select e.*,
           min(d.occurred_at) filter (where d.occurred_at <= e.t2 + interval 120 minute) as dose_in_window,
           min(d.occurred_at) as first_dose
    from episodes e
    left join doses d on d.product = e.product and d.patient_ref = e.patient_ref
        and (d.ae_id is null or d.ae_id = e.ae_id) and d.occurred_at >= e.onset_at
    group by all
)
select product, site_id, t2 as anchor_at,
       case when dose_in_window is not null then 'success'
            when $as_of < t2 + interval 120 minute then 'pending'
            else 'failure' end as outcome,
       ae_id as unit_id, patient_ref, null::varchar as hcp_id, ae_id, null::varchar as lot_id,
       case when first_dose is not null and (dose_in_window is not null or $as_of >= t2 + interval 120 minute)
            then greatest(0, (epoch(first_dose) - epoch(t2)) / 60.0) end as minutes,
       case
           when dose_in_window is not null then
               'tocilizumab ' || round(greatest(0, (epoch(dose_in_window) - epoch(t2)) / 60.0))::bigint
               || ' min after grade >=2 at ' || strftime(t2, '%Y-%m-%d %H:%MZ')
           when $as_of < t2 + interval 120 minute then
               'grade >=2 at ' || strftime(t2, '%Y-%m-%d %H:%MZ') || '; tocilizumab due by '
               || strftime(t2 + interval 120 minute, '%Y-%m-%d %H:%MZ')
           when first_dose is not null then
               'tocilizumab ' || round((epoch(first_dose) - epoch(t2)) / 60.0)::bigint
               || ' min after grade >=2 at ' || strftime(t2, '%Y-%m-%d %H:%MZ') || ' (limit 120 min)'
           else
               'no tocilizumab within 120 min of grade >=2 at ' || strftime(t2, '%Y-%m-%d %H:%MZ')
       end as detail
from judged
