-- Unit: each HCP's first training_completed per material (HCP = product + hcp_id; unit = HCP + material_id;
-- ties: first stored); anchor = that first attempt (product/site from it).
-- Success: passed = true on that first attempt. No window: never pending.
-- Pruning ($anchor_from/$anchor_to): units are decided by one aggregate over all attempts (the attempt count and
-- first pass of the detail need them all); units whose first attempt lies outside the period are then dropped.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with units as (
    select product, hcp_id, material_id,
           arg_min({site_id: site_id, material_version: material_version, score: score, passed: passed,
                    occurred_at: occurred_at}, (occurred_at, seq)) as f,
           count(*) as attempts,
           min(occurred_at) filter (where passed) as first_pass_at
    from known_events where event_type = 'training_completed' and topic = 'rmm.training'
    group by product, hcp_id, material_id
),
attempts as (
    select product, hcp_id, material_id, f.site_id as site_id, f.material_version as material_version,
           f.score as score, f.passed as passed, f.occurred_at as occurred_at, attempts, first_pass_at
    from units
    where ($anchor_from is null or f.occurred_at >= $anchor_from) and ($anchor_to is null or f.occurred_at < $anchor_to)
)
select product, site_id, occurred_at as anchor_at,
       case when passed then 'success' else 'failure' end as outcome,
       hcp_id || '/' || material_id as unit_id, null::varchar as patient_ref, hcp_id, null::varchar as ae_id,
       null::varchar as lot_id, material_id, score,
       case
           when passed then
               'passed first attempt on ' || material_id || ' v' || material_version || ' (score ' || printf('%g', score)
               || ') at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'failed first attempt on ' || material_id || ' v' || material_version || ' (score ' || printf('%g', score)
               || ') at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || '; '
               || case when first_pass_at is not null then 'passed later at ' || strftime(first_pass_at, '%Y-%m-%d %H:%MZ')
                       else 'not passed in ' || attempts || ' attempt(s)' end
       end as detail
from attempts
