-- Unit: each patient's first infusion (patient = product + patient_ref; ties: first stored); anchor = that
-- infusion. Success: a patient_education_completed for the patient at or before the infusion (any site).
-- No window: never pending (education after the infusion is too late).
-- Pruning ($anchor_from/$anchor_to): a patient's first infusion lies in the period iff the patient has an
-- infusion there and none before the period's start (an anti-join on the keys of earlier infusions, no window
-- over all history); the evidence is then joined for those patients only.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with education as (
    select e.product, e.patient_ref, e.occurred_at
    from known_events e
    where e.event_type = 'patient_education_completed' and e.topic = 'rmm.training'
),
education_facts as (
    -- per first infusion, keyed by its seq (one per patient here), which hashes far cheaper than the
    -- infusion's string columns
    select f.seq,
           max(e.occurred_at) filter (where e.occurred_at <= f.occurred_at) as educated_before,
           min(e.occurred_at) filter (where e.occurred_at > f.occurred_at) as educated_after
    from first_infusion f
    join education e on e.product = f.product and e.patient_ref = f.patient_ref
    group by f.seq
),
judged as (
    select f.*, x.educated_before, x.educated_after
    from first_infusion f
    left join education_facts x using (seq)
)
select product, site_id, occurred_at as anchor_at,
       case when educated_before is not null then 'success' else 'failure' end as outcome,
       patient_ref as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case
           when educated_before is not null then
               'educated ' || strftime(educated_before, '%Y-%m-%d %H:%MZ') || ', before first infusion at '
               || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           when educated_after is not null then
               'educated only ' || strftime(educated_after, '%Y-%m-%d %H:%MZ') || ', after first infusion at '
               || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'no patient education on record; first infusion at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       end as detail
from judged
