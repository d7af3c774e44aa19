-- Unit: each product_received; anchor = the receipt (product/site from it).
-- Success: coi_verified = true. No window: never pending.
-- Pruning ($anchor_from/$anchor_to): the unit is the event itself, so events outside the period are not read.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
select product, site_id, occurred_at as anchor_at,
       case when coi_verified then 'success' else 'failure' end as outcome,
       event_id as unit_id, patient_ref, null::varchar as hcp_id, null::varchar as ae_id, lot_id,
       case when coi_verified then
                'chain of identity verified at receipt of lot ' || lot_id || ', ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
            else
                'chain of identity not verified at receipt of lot ' || lot_id || ' for patient ' || patient_ref
                || ' at site ' || site_id || ', ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       end as detail
from known_events
where event_type = 'product_received' and topic = 'rmm.infusion'
  and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
