-- Unit: each CRS episode (product + ae_id with an ae_onset of term CRS) whose grade reaches >= 2;
-- anchor t2 = the first time its grade is >= 2 (ae_onset or ae_grade_changed); product/site from the ae_onset.
-- Success: a tocilizumab_administered for the patient (same ae_id, or no ae_id) in [onset, t2 + 120 min].
-- Pending while as-of < t2 + 120 min and none.
-- Pruning ($anchor_from/$anchor_to): an AE's t2 lies in the period iff it has a grade >= 2 there and none before
-- the period's start (an anti-join on the keys of earlier grades >= 2, no window over all history); onsets and
-- doses are then read for those AEs only.
with t2s as (
    select product, ae_id, min(occurred_at) as t2
    from known_events g
    where event_type in ('ae_onset', 'ae_grade_changed') and grade >= 2
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
      and not exists (
          select 1 from known_events e
          where e.event_type in ('ae_onset', 'ae_grade_changed') and e.grade >= 2 and e.occurred_at < $anchor_from
            and e.product is not distinct from g.product and e.ae_id is not distinct from g.ae_id)
    group by product, ae_id
),
onsets as (
    select o.product, o.ae_id,
           arg_min({site_id: o.site_id, patient_ref: o.patient_ref, onset_at: o.occurred_at}, (o.occurred_at, o.seq)) as f
    from known_events o
    semi join t2s t on t.product = o.product and t.ae_id = o.ae_id
    where o.event_type = 'ae_onset' and o.term = 'CRS'
    group by o.product, o.ae_id
),
episodes as (
    select o.product, o.f.site_id as site_id, o.ae_id, o.f.patient_ref as patient_ref, o.f.onset_at as onset_at, t.t2
    from onsets o join t2s t on t.product = o.product and t.ae_id = o.ae_id
),
doses as (
    select d.product, d.patient_ref, d.ae_id, d.occurred_at
    from known_events d
    where d.event_type = 'tocilizumab_administered'
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
