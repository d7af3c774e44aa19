-- Shared model: each patient's first infusion (patient = product + patient_ref; docs/kpi-rules.md, "first infusion" = its
-- earliest infusion_administered; ties: the first stored), limited to first infusions anchored in the period.
-- A patient's first infusion lies in the period iff the patient has an infusion there and none before the
-- period's start: an anti-join on the keys of earlier infusions, so no window runs over all history.
-- Used by every KPI whose unit is a patient's first infusion; referenced as `first_infusion`.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
select product, patient_ref, site_id, lot_id, hcp_id, occurred_at, seq
from known_events i
where event_type = 'infusion_administered' and topic = 'rmm.infusion'
  and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
  and not exists (
      select 1 from known_events e
      where e.event_type = 'infusion_administered' and e.topic = 'rmm.infusion' and e.occurred_at < $anchor_from
        and e.product is not distinct from i.product and e.patient_ref is not distinct from i.patient_ref)
qualify row_number() over (partition by product, patient_ref order by occurred_at, seq) = 1
