-- Unit: each infusion_administered; anchor = the infusion (product/site from it).
-- Success: the latest tocilizumab_stock_reported of the infusion's own (product, site_id) in
-- [infusion - 7 d, infusion] (ties on occurred_at: the last stored) has doses_on_hand >= the minimum: the
-- product's own min_doses from config.toml if it has one, else the rule set in force for the site's jurisdiction
-- and the product at the infusion (metrics/rules/rule_sets.yml, rule tocilizumab_available_at_infusion).
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
ruled as (
    -- the rule version in force: the site's jurisdiction before `default`, a product's own version before "*",
    -- then the latest effective_from (docs/kpi-rules.md, "Rule sets")
    select i.event_id, arg_max(r, (r.jurisdiction <> 'default', r.product <> '*', r.effective_from)) as rule
    from infusions i
    left join site_jurisdiction j on j.site_id = i.site_id
    join rules r on r.rule = 'tocilizumab_available_at_infusion'
     and r.jurisdiction in (coalesce(j.jurisdiction, 'default'), 'default') and r.product in (i.product, '*')
     and r.effective_from <= i.occurred_at and (r.effective_to is null or i.occurred_at < r.effective_to)
    group by i.event_id
),
judged as (
    -- the latest report at or before the infusion; it is "in the 7 days before" only if not older than 7 d
    select i.*, s.doses_on_hand, s.occurred_at as report_at,
           s.occurred_at >= i.occurred_at - interval 7 day as in_window,
           coalesce(p.min_doses, ru.rule.min_doses)::integer as minimum,
           case when p.min_doses is not null then i.product || ' config' else ru.rule.name end as rule_name
    from infusions i
    left join ruled ru using (event_id)
    join params p using (product)
    asof left join stock s
        on s.product = i.product and s.site_id = i.site_id and i.occurred_at >= s.occurred_at
)
select product, site_id, occurred_at as anchor_at,
       case when in_window and doses_on_hand >= minimum then 'success' else 'failure' end as outcome,
       event_id as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case
           when in_window then
               'stock report ' || strftime(report_at, '%Y-%m-%d %H:%MZ') || ': ' || doses_on_hand
               || ' dose(s) on hand (minimum ' || minimum || ', ' || rule_name || '); infusion '
               || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'no tocilizumab stock report in the 7 days before infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
               || case when report_at is null then ' (no earlier report from site ' || site_id || ')'
                       else ' (last report ' || strftime(report_at, '%Y-%m-%d %H:%MZ') || ': ' || doses_on_hand
                            || ' dose(s))' end
       end as detail
from judged
