-- Unit: each CRS episode (product + ae_id with an ae_onset of term CRS) whose grade reaches >= 2;
-- anchor t2 = the first time its grade is >= 2 (ae_onset or ae_grade_changed); product/site from the ae_onset.
-- Success: a tocilizumab_administered for the patient (same ae_id, or no ae_id) in [onset, t2 + 120 min].
-- Pending while as-of < t2 + 120 min and none.
-- Pruning ($anchor_from/$anchor_to): an AE's t2 lies in the period iff it has a grade >= 2 there and none before
-- the period's start (an anti-join on the keys of earlier grades >= 2, no window over all history); only the
-- period's grades are joined to the CRS onsets, and doses are read for the resulting episodes only.
with crs_onsets as (
    select product, site_id, ae_id, patient_ref, occurred_at, seq
    from known_events
    where event_type = 'ae_onset' and term = 'CRS'
),
period_grades as (
    -- the grades >= 2 within the period: an AE's t2 if it had none before
    select product, ae_id, occurred_at
    from known_events
    where event_type in ('ae_onset', 'ae_grade_changed') and grade >= 2
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
),
onset_t2s as (
    -- per CRS onset, its AE's first grade >= 2 in the period. Joining the grade rows to the CRS onsets before
    -- grouping drops the other AEs' grades first, and the group key is the onset's seq, not two strings
    select o.seq, min(g.occurred_at) as t2
    from crs_onsets o
    join period_grades g on g.product = o.product and g.ae_id = o.ae_id
    group by o.seq
),
crs_episodes as (
    -- each such AE with its earliest onset (ties: first stored) for product, site, patient and onset time; a
    -- window over the few joined rows beats arg_min with a (time, seq) struct key and a join back
    select o.seq, o.product, o.site_id, o.ae_id, o.patient_ref, o.occurred_at as onset_at, t.t2
    from onset_t2s t
    join crs_onsets o using (seq)
    qualify row_number() over (partition by o.product, o.ae_id order by o.occurred_at, o.seq) = 1
),
episodes as (
    -- only AEs whose t2 lies in the period: no grade >= 2 before its start. Checked after the CRS filter, so the
    -- anti-join is built from the period's CRS episodes (about a quarter of the AEs graded >= 2 there)
    select *
    from crs_episodes c
    where not exists (
        select 1 from known_events e
        where e.event_type in ('ae_onset', 'ae_grade_changed') and e.grade >= 2 and e.occurred_at < $anchor_from
          and e.product is not distinct from c.product and e.ae_id is not distinct from c.ae_id)
),
doses as (
    select d.product, d.patient_ref, d.ae_id, d.occurred_at
    from known_events d
    where d.event_type = 'tocilizumab_administered'
),
dose_facts as (
    -- grouped by the episode's onset seq (one per episode), which hashes far cheaper than its string columns
    select e.seq,
           min(d.occurred_at) filter (where d.occurred_at <= e.t2 + interval 120 minute) as dose_in_window,
           min(d.occurred_at) as first_dose
    from episodes e
    join doses d on d.product = e.product and d.patient_ref = e.patient_ref
        and (d.ae_id is null or d.ae_id = e.ae_id) and d.occurred_at >= e.onset_at
    group by e.seq
),
judged as (
    select e.*, f.dose_in_window, f.first_dose
    from episodes e
    left join dose_facts f using (seq)
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
