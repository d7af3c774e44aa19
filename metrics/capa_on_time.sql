-- Unit: each audit finding (product + finding_id): its earliest audit_finding_raised (ties: first stored); anchor
-- = its occurred_at; severity, area, audit and site from that event.
-- Success: a capa_closed of the same (product, finding_id) with verified = true and occurred_at in
-- [anchor, anchor + deadline]; the deadline by severity from the KPI's parameters (critical 30 d, major 60 d,
-- minor 90 d). A closure with verified = false does not count; a later verified one can.
-- Pending while as-of < anchor + deadline and no verified closure; failure once the deadline has passed without one.
-- `open_critical` marks the critical findings whose deadline has passed with no verified closure known at all.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with findings as (
    select product, finding_id,
           min(occurred_at) as raised_at,
           arg_min(site_id, (occurred_at, seq)) as site_id,
           arg_min(severity, (occurred_at, seq)) as severity,
           arg_min(area, (occurred_at, seq)) as area,
           arg_min(audit_id, (occurred_at, seq)) as audit_id
    from known_events where event_type = 'audit_finding_raised' and topic = 'rmm.site'
    group by product, finding_id
    having ($anchor_from is null or min(occurred_at) >= $anchor_from)
       and ($anchor_to is null or min(occurred_at) < $anchor_to)
),
deadlines as (
    select f.*,
           case f.severity when 'critical' then p.critical_days when 'major' then p.major_days
                else p.minor_days end::integer as deadline_days
    from findings f join params p using (product)
),
judged as (
    select d.product, d.finding_id, any_value(d.raised_at) as raised_at, any_value(d.site_id) as site_id,
           any_value(d.severity) as severity, any_value(d.area) as area, any_value(d.audit_id) as audit_id,
           any_value(d.deadline_days) as deadline_days,
           any_value(d.raised_at) + any_value(d.deadline_days) * interval 1 day as deadline,
           min(c.occurred_at) filter (where c.verified and c.occurred_at >= d.raised_at
                                      and c.occurred_at <= d.raised_at + d.deadline_days * interval 1 day) as verified_at,
           min(c.occurred_at) filter (where c.verified) as verified_any_at,
           max(c.occurred_at) filter (where not c.verified and c.occurred_at <= d.raised_at + d.deadline_days * interval 1 day)
               as unverified_at
    from deadlines d
    left join known_events c on c.event_type = 'capa_closed' and c.topic = 'rmm.site'
     and c.product = d.product and c.finding_id = d.finding_id
    group by d.product, d.finding_id
)
select product, site_id, raised_at as anchor_at,
       case when verified_at is not null then 'success'
            when $as_of < deadline then 'pending'
            else 'failure' end as outcome,
       finding_id as unit_id, null::varchar as patient_ref, null::varchar as hcp_id, null::varchar as ae_id,
       null::varchar as lot_id,
       case when deadline > $as_of then deadline end as recheck_at,
       severity = 'critical' and deadline <= $as_of and verified_any_at is null as open_critical,
       severity || ' finding ' || finding_id || ' (' || area || ', audit ' || audit_id || ') raised '
       || strftime(raised_at, '%Y-%m-%d') || ': '
       || case
              when verified_at is not null then
                  'CAPA verified on ' || strftime(verified_at, '%Y-%m-%d') || ' (deadline '
                  || strftime(deadline, '%Y-%m-%d') || ', ' || deadline_days || ' d)'
              when unverified_at is not null then
                  'CAPA closed unverified on ' || strftime(unverified_at, '%Y-%m-%d') || ', deadline '
                  || strftime(deadline, '%Y-%m-%d')
                  || case when $as_of < deadline then '; open'
                          when verified_any_at is not null then '; verified late on ' || strftime(verified_any_at, '%Y-%m-%d')
                          else '; no verified closure' end
              when $as_of < deadline then
                  'open, deadline ' || strftime(deadline, '%Y-%m-%d') || ' (' || deadline_days || ' d)'
              when verified_any_at is not null then
                  'CAPA verified late on ' || strftime(verified_any_at, '%Y-%m-%d') || ', deadline '
                  || strftime(deadline, '%Y-%m-%d')
              else
                  'no verified CAPA closure by the deadline ' || strftime(deadline, '%Y-%m-%d') || ' (' || deadline_days
                  || ' d); still open'
          end as detail
from judged
