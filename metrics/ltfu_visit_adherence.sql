-- Unit: each long-term follow-up visit (product + patient_ref + visit_no), decided by its ltfu_visit event with
-- the latest occurred_at (ties: the last stored); anchor = that event's due_at (product/site from it too).
-- Success: status = done. No window: a visit is a unit only once an ltfu_visit reports it, so never pending.
with visits as (
    select product, site_id, patient_ref, visit_no, due_at, status, occurred_at,
           count(*) over (partition by product, patient_ref, visit_no) as records,
           row_number() over (partition by product, patient_ref, visit_no order by occurred_at desc, seq desc) as rn
    from known_events where event_type = 'ltfu_visit'
)
select product, site_id, due_at as anchor_at,
       case when status = 'done' then 'success' else 'failure' end as outcome,
       patient_ref || '/v' || visit_no as unit_id, patient_ref, null::varchar as hcp_id, null::varchar as ae_id,
       null::varchar as lot_id,
       'visit ' || visit_no || ' due ' || strftime(due_at, '%Y-%m-%d %H:%MZ') || ' ' || status
       || ' (recorded ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       || case when records > 1 then ', latest of ' || records || ' records' else '' end || ')'
       as detail
from visits
where rn = 1
