-- Unit: each long-term follow-up visit (product + patient_ref + visit_no), decided by its ltfu_visit event with
-- the latest occurred_at (ties: the last stored); anchor = that event's due_at (product/site from it too).
-- Success: status = done. No window: a visit is a unit only once an ltfu_visit reports it, so never pending.
-- Pruning ($anchor_from/$anchor_to): the winning event's due_at lies in the period only if some event of the
-- visit has its due_at there, so only those visits are kept (decided over all their events, whatever their
-- due_at); without bounds every visit is kept.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with latest_records as (
    -- per visit: the seq of its deciding event, its record count and whether it can lie in the period, in one
    -- hash aggregate over the visits' events (no window sorting them, no second pass for the period's visits).
    -- The deciding order (occurred_at, then seq) is packed into one hugeint, microseconds * 2^64 + seq
    -- (seq >= 0 and < 2^63): a (time, seq) struct key made arg_max several times dearer. The deciding seq is the
    -- low 64 bits of the largest key, so a plain max does (cheaper again than arg_max on that key)
    select product, patient_ref, visit_no, count(*) as records,
           (max(epoch_us(occurred_at)::hugeint * 18446744073709551616 + seq) & 18446744073709551615)::bigint as seq
    from known_events
    where event_type = 'ltfu_visit' and topic = 'rmm.infusion'
    group by product, patient_ref, visit_no
    having bool_or(($anchor_from is null or due_at >= $anchor_from) and ($anchor_to is null or due_at < $anchor_to))
),
visits as (
    select e.product, e.site_id, e.patient_ref, e.visit_no, e.due_at, e.status, e.occurred_at, r.records
    from latest_records r
    join known_events e on e.seq = r.seq
    where e.event_type = 'ltfu_visit' and e.topic = 'rmm.infusion'
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
