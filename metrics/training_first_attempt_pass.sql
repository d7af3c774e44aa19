-- Unit: each HCP's first training_completed per material (HCP = product + hcp_id; unit = HCP + material_id;
-- ties: first stored); anchor = that first attempt (product/site from it).
-- Success: passed = true on that first attempt. No window: never pending.
with attempts as (
    select product, site_id, hcp_id, material_id, material_version, score, passed, occurred_at,
           row_number() over (partition by product, hcp_id, material_id order by occurred_at, seq) as attempt_no,
           count(*) over (partition by product, hcp_id, material_id) as attempts,
           min(case when passed then occurred_at end) over (partition by product, hcp_id, material_id) as first_pass_at
    from known_events where event_type = 'training_completed'
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
where attempt_no = 1
