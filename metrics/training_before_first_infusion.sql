-- Unit: each HCP's first infusion_administered (HCP = product + hcp_id; ties: first stored); anchor = that
-- infusion. Success: a passed training_completed by the same HCP at or before it.
-- Pruning ($anchor_from/$anchor_to): an HCP's first infusion lies in the period iff the HCP infused there and
-- never before the period's start (an anti-join on the keys of earlier infusions, no window over all history);
-- the trainings are then joined for those HCPs only.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with hcp_first_infusion as (
    select product, hcp_id, site_id, patient_ref, lot_id, occurred_at, seq
    from known_events i
    where event_type = 'infusion_administered' and topic = 'rmm.infusion'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
      and not exists (
          select 1 from known_events e
          where e.event_type = 'infusion_administered' and e.topic = 'rmm.infusion' and e.occurred_at < $anchor_from
            and e.product is not distinct from i.product and e.hcp_id is not distinct from i.hcp_id)
    qualify row_number() over (partition by product, hcp_id order by occurred_at, seq) = 1
),
passes as (
    select p.product, p.hcp_id, p.occurred_at
    from known_events p
    where p.event_type = 'training_completed' and p.topic = 'rmm.training' and p.passed
),
judged as (
    select f.*,
           min(p.occurred_at) filter (where p.occurred_at <= f.occurred_at) as passed_before,
           min(p.occurred_at) filter (where p.occurred_at > f.occurred_at) as passed_after
    from hcp_first_infusion f
    left join passes p on p.product = f.product and p.hcp_id = f.hcp_id
    group by all
)
select product, site_id, occurred_at as anchor_at,
       case when passed_before is not null then 'success' else 'failure' end as outcome,
       hcp_id as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case
           when passed_before is not null then
               'passed training ' || strftime(passed_before, '%Y-%m-%d %H:%MZ') || ', before first infusion at '
               || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           when passed_after is not null then
               'first infusion at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || ' (patient ' || patient_ref
               || ') before passing training; passed only at ' || strftime(passed_after, '%Y-%m-%d %H:%MZ')
           else
               'first infusion at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || ' (patient ' || patient_ref
               || ') with no passed training on record'
       end as detail
from judged
