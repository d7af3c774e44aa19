-- Unit: each infusion_administered; anchor = the infusion (product/site from it).
-- Success: dose_within_spec = true. No window: never pending.
-- Pruning ($anchor_from/$anchor_to): the unit is the event itself, so events outside the period are not read.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
select product, site_id, occurred_at as anchor_at,
       case when dose_within_spec then 'success' else 'failure' end as outcome,
       event_id as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case when dose_within_spec then
                'dose of lot ' || lot_id || ' within specification, infused ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
            else
                'dose outside specification: lot ' || lot_id || ' infused to patient ' || patient_ref || ' by HCP '
                || hcp_id || ' at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       end as detail
from known_events
where event_type = 'infusion_administered' and topic = 'rmm.infusion'
  and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
