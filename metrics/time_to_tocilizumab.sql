-- Unit: each CRS episode (product + ae_id with an ae_onset of term CRS) whose grade reaches >= 2;
-- anchor t2 = the first time its grade is >= 2 (ae_onset or ae_grade_changed); product/site from the ae_onset.
-- Success: a tocilizumab_administered for the patient (same ae_id, or no ae_id) in [onset, t2 + 120 min].
-- Pending while as-of < t2 + 120 min and none.
-- An AE's first grade >= 2 (t2) and its earliest CRS onset come from the shared ae_facts model; pruning
-- ($anchor_from/$anchor_to) keeps the episodes whose t2 lies in the period, and doses are read for those only.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with episodes as (
    -- per AE: its earliest CRS onset (ties: first stored) and its first grade >= 2, both from ae_facts; the
    -- onset event itself is fetched by its seq
    select o.seq, o.product, o.site_id, o.ae_id, o.patient_ref, o.occurred_at as onset_at, f.grade2_at as t2
    from ae_facts f
    join known_events o on o.seq = (f.crs_onset_k & 18446744073709551615)::bigint and o.event_type = 'ae_onset'
    where f.crs_onset_k is not null and f.grade2_at is not null
      and ($anchor_from is null or f.grade2_at >= $anchor_from) and ($anchor_to is null or f.grade2_at < $anchor_to)
),
doses as (
    select d.product, d.patient_ref, d.ae_id, d.occurred_at
    from known_events d
    where d.event_type = 'tocilizumab_administered' and d.topic = 'rmm.ae'
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
       case when t2 + interval 120 minute > $as_of then t2 + interval 120 minute end as recheck_at,
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
