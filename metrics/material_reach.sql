-- Unit: each pair (material release, certified site). A release is (product P, material M, version V): its
-- earliest material_version_released (a re-sent release is the same release; ties: first stored); anchor = its
-- occurred_at. One unit per site S whose latest site_certification_changed of product P at or before the anchor
-- (ties: the last stored) has status certified; the unit's site is S.
-- Success: a material_distributed of product P with recipient_kind site, recipient_id S, material_id M,
-- material_version >= V and occurred_at <= anchor + reach_days (a KPI parameter, 30 d).
-- Pending while as-of < anchor + reach_days and none; failure once that has passed without one.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with releases as (
    select product, material_id, version, min(occurred_at) as released_at
    from known_events where event_type = 'material_version_released' and topic = 'rmm.training'
    group by product, material_id, version
    having ($anchor_from is null or min(occurred_at) >= $anchor_from)
       and ($anchor_to is null or min(occurred_at) < $anchor_to)
),
certifications as (
    select product, site_id, status, occurred_at
    from known_events where event_type = 'site_certification_changed' and topic = 'rmm.site'
    qualify row_number() over (partition by product, site_id, occurred_at order by seq desc) = 1
),
pairs as (
    select r.*, s.site_id, r.released_at + p.reach_days * interval 1 day as due_at
    from releases r
    join (select distinct product, site_id from certifications) s using (product)
    join params p using (product)
),
units0 as (
    select p.* from pairs p
    asof join certifications c
        on c.product = p.product and c.site_id = p.site_id and p.released_at >= c.occurred_at
    where c.status = 'certified'
),
judged as (
    select u.product, u.material_id, u.version, u.site_id, any_value(u.released_at) as released_at,
           any_value(u.due_at) as due_at,
           min(d.occurred_at) filter (where d.occurred_at <= u.due_at) as reached_at,
           arg_min(d.channel, d.occurred_at) filter (where d.occurred_at <= u.due_at) as reached_by,
           arg_min(d.material_version, d.occurred_at) filter (where d.occurred_at <= u.due_at) as reached_version,
           min(d.occurred_at) filter (where d.occurred_at > u.due_at) as late_at
    from units0 u
    left join known_events d on d.event_type = 'material_distributed' and d.topic = 'rmm.training'
     and d.product = u.product and d.recipient_kind = 'site' and d.recipient_id = u.site_id
     and d.material_id = u.material_id and d.material_version >= u.version
    group by u.product, u.material_id, u.version, u.site_id
)
select product, site_id, released_at as anchor_at,
       case when reached_at is not null then 'success'
            when $as_of < due_at then 'pending'
            else 'failure' end as outcome,
       material_id || ' v' || version || ' to ' || site_id as unit_id, null::varchar as patient_ref,
       null::varchar as hcp_id, null::varchar as ae_id, null::varchar as lot_id,
       case when due_at > $as_of then due_at end as recheck_at,
       material_id || ' v' || version || ' (released ' || strftime(released_at, '%Y-%m-%d') || ') '
       || case when reached_at is not null then
                   'reached site ' || site_id || ' on ' || strftime(reached_at, '%Y-%m-%d') || ' by ' || reached_by
                   || case when reached_version > version then ' (as v' || reached_version || ')' else '' end
               when $as_of < due_at then
                   'not yet distributed to site ' || site_id || '; due by ' || strftime(due_at, '%Y-%m-%d')
               else
                   'not distributed to site ' || site_id || ' by ' || strftime(due_at, '%Y-%m-%d')
                   || case when late_at is not null then ' (sent late, on ' || strftime(late_at, '%Y-%m-%d') || ')'
                           else '' end
          end as detail
from judged
