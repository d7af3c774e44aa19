-- Unit: each infusion_administered where the certified-centre requirement applies; anchor = the infusion
-- (product/site from it). Whether it applies is the rule set in force (metrics/rules/rule_sets.yml, rule
-- infusion_at_certified_site, value `applies`) for the site's jurisdiction and the product at the infusion: where
-- it does not (the US from 2025-06-26), the infusion is `excluded`, not a unit.
-- Success: the latest site_certification_changed of the infusion's own (product, site_id) at or before the
-- infusion (ties on occurred_at: the last stored) has status = certified and 'infusion' in its scope.
-- No window: never pending (a certification recorded after as-of is simply not known yet).
-- Pruning ($anchor_from/$anchor_to): the unit is the event itself, so events outside the period are not read.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with infusions as (
    select event_id, product, site_id, patient_ref, hcp_id, lot_id, occurred_at
    from known_events where event_type = 'infusion_administered' and topic = 'rmm.infusion'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
),
certifications as (
    select product, site_id, status, scope, occurred_at
    from known_events where event_type = 'site_certification_changed' and topic = 'rmm.site'
    qualify row_number() over (partition by product, site_id, occurred_at order by seq desc) = 1
),
ruled as (
    -- the rule version in force: the site's jurisdiction before `default`, a product's own version before "*",
    -- then the latest effective_from (docs/kpi-rules.md, "Rule sets")
    select i.event_id, arg_max(r, (r.jurisdiction <> 'default', r.product <> '*', r.effective_from)) as rule
    from infusions i
    left join site_jurisdiction j on j.site_id = i.site_id
    join rules r on r.rule = 'infusion_at_certified_site'
     and r.jurisdiction in (coalesce(j.jurisdiction, 'default'), 'default') and r.product in (i.product, '*')
     and r.effective_from <= i.occurred_at and (r.effective_to is null or i.occurred_at < r.effective_to)
    group by i.event_id
),
judged as (
    select i.*, c.status, c.scope, c.occurred_at as cert_at, ru.rule
    from infusions i
    left join ruled ru using (event_id)
    asof left join certifications c
        on c.product = i.product and c.site_id = i.site_id and i.occurred_at >= c.occurred_at
)
select product, site_id, occurred_at as anchor_at,
       case when rule.applies = 0 then 'excluded'
            when status = 'certified' and list_contains(scope, 'infusion') then 'success'
            else 'failure' end as outcome,
       event_id as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case
           when rule.applies = 0 then
               rule.name || ': not a unit (no certified centre required); infusion '
               || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           when cert_at is null then
               'site ' || site_id || ' had no certification on record at infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'site ' || site_id || ' ' || status || ' since ' || strftime(cert_at, '%Y-%m-%d %H:%MZ') || ' (scope: '
               || case when len(scope) = 0 then 'none' else array_to_string(scope, ', ') end || ')'
               || case when status = 'certified' and list_contains(scope, 'infusion') then ''
                       when status = 'certified' then ', infusion not in scope'
                       else '' end
               || '; infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       end as detail
from judged
