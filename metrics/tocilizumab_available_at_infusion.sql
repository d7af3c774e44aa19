-- Unit: each infusion_administered; anchor = the infusion (product/site from it).
-- Success: the latest tocilizumab_stock_reported of the infusion's own (product, site_id) in
-- [infusion - 7 d, infusion] (ties on occurred_at: the last stored) has doses_on_hand >= params.min_doses.
-- No window: never pending (the evidence lies before the infusion).
-- Pruning ($anchor_from/$anchor_to): the unit is the infusion itself, so infusions outside the period are not
-- read; of the stock reports before the period only each site's latest is kept.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with infusions as (
    select event_id, product, site_id, patient_ref, hcp_id, lot_id, occurred_at
    from known_events where event_type = 'infusion_administered' and topic = 'rmm.infusion'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
),
stock as (
    -- one report per (product, site_id, occurred_at): the last stored. An infusion of the period looks up the
    -- latest report at or before it: one from the period itself, or else the site's latest report before the
    -- period's start (kept even when older than 7 d, for the detail); later reports cannot precede it.
    select product, site_id, occurred_at, arg_max_null(doses_on_hand, seq) as doses_on_hand
    from known_events where event_type = 'tocilizumab_stock_reported' and topic = 'rmm.site'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
    group by product, site_id, occurred_at
    union all
    select product, site_id, max(occurred_at) as occurred_at,
           arg_max_null(doses_on_hand, (occurred_at, seq)) as doses_on_hand
    from known_events where event_type = 'tocilizumab_stock_reported' and topic = 'rmm.site' and occurred_at < $anchor_from
    group by product, site_id
),
judged as (
    -- the latest report at or before the infusion; it is "in the 7 days before" only if not older than 7 d
    select i.*, s.doses_on_hand, s.occurred_at as report_at,
           s.occurred_at >= i.occurred_at - interval 7 day as in_window
    from infusions i
    asof left join stock s
        on s.product = i.product and s.site_id = i.site_id and i.occurred_at >= s.occurred_at
)
select product, site_id, occurred_at as anchor_at,
       case when in_window and doses_on_hand >= min_doses then 'success' else 'failure' end as outcome,
       event_id as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case
           when in_window then
               'stock report ' || strftime(report_at, '%Y-%m-%d %H:%MZ') || ': ' || doses_on_hand
               || ' dose(s) on hand (minimum ' || min_doses || '); infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'no tocilizumab stock report in the 7 days before infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
               || case when report_at is null then ' (no earlier report from site ' || site_id || ')'
                       else ' (last report ' || strftime(report_at, '%Y-%m-%d %H:%MZ') || ': ' || doses_on_hand
                            || ' dose(s))' end
       end as detail
from judged
join params using (product)
