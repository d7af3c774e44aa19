-- Unit: each long-term follow-up visit (product + patient_ref + visit_no), decided by its ltfu_visit event with
-- the latest occurred_at (ties: the last stored); anchor = that event's due_at (product/site from it too).
-- Success: status = done. No window: a visit is a unit only once an ltfu_visit reports it, so never pending.
-- Pruning ($anchor_from/$anchor_to): the winning event's due_at lies in the period only if some event of the
-- visit has its due_at there, so only those visits are decided (over all their events, whatever their due_at);
-- without bounds every visit is decided directly (the union's other branch is empty then).
with candidates as (
    select distinct product, patient_ref, visit_no
    from known_events
    where event_type = 'ltfu_visit'
      and ($anchor_from is null or due_at >= $anchor_from) and ($anchor_to is null or due_at < $anchor_to)
),
visit_events as (
    select product, site_id, patient_ref, visit_no, due_at, status, occurred_at, seq
    from known_events
    where event_type = 'ltfu_visit' and $anchor_from is null and $anchor_to is null
    union all
    select e.product, e.site_id, e.patient_ref, e.visit_no, e.due_at, e.status, e.occurred_at, e.seq
    from known_events e
    semi join candidates c on c.product is not distinct from e.product and c.patient_ref is not distinct from e.patient_ref
        and c.visit_no is not distinct from e.visit_no
    where e.event_type = 'ltfu_visit' and not ($anchor_from is null and $anchor_to is null)
),
visits as (
    select product, site_id, patient_ref, visit_no, due_at, status, occurred_at,
           count(*) over (partition by product, patient_ref, visit_no) as records
    from visit_events
    qualify row_number() over (partition by product, patient_ref, visit_no order by occurred_at desc, seq desc) = 1
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
