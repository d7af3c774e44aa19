-- Unit: each patient's first infusion (the shared first_infusion model); anchor t0 = the infusion (product/site
-- from it). D (daily_days) and P (proximity_days) come from the rule set in force for the infusion site's
-- jurisdiction and the product at t0 (metrics/rules/rule_sets.yml, rule post_infusion_monitoring).
-- Success: for each day d in 1..D at least one post_infusion_contact of the patient (same product and patient_ref,
-- any site) with occurred_at in [t0 + (d-1) * 24 h, t0 + d * 24 h); and no contact in [t0, t0 + P * 24 h) with
-- within_proximity = false.
-- Failure as soon as a violation is known at as-of: a contact with within_proximity = false in [t0, t0 + P * 24 h),
-- or a day d <= D that has ended (t0 + d * 24 h <= as-of) with no contact known for it. Else pending while
-- as-of < t0 + P * 24 h; else success.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with infused as (
    select product, patient_ref, site_id, lot_id, hcp_id, occurred_at as t0 from first_infusion
),
ruled as (
    -- the rule version in force: the site's jurisdiction before `default`, a product's own version before "*",
    -- then the latest effective_from (docs/kpi-rules.md, "Rule sets")
    select i.product, i.patient_ref,
           arg_max(r, (r.jurisdiction <> 'default', r.product <> '*', r.effective_from)) as rule
    from infused i
    left join site_jurisdiction j on j.site_id = i.site_id
    join rules r on r.rule = 'post_infusion_monitoring'
     and r.jurisdiction in (coalesce(j.jurisdiction, 'default'), 'default') and r.product in (i.product, '*')
     and r.effective_from <= i.t0 and (r.effective_to is null or i.t0 < r.effective_to)
    group by i.product, i.patient_ref
),
units0 as (
    select i.*, ru.rule.name as rule_name, ru.rule.daily_days::integer as daily_days,
           ru.rule.proximity_days::integer as proximity_days
    from infused i join ruled ru using (product, patient_ref)
),
contacts as (
    -- the contacts that can fall in a unit's monitoring period, each with its day number after t0
    select u.product, u.patient_ref,
           floor((epoch(c.occurred_at) - epoch(u.t0)) / 86400)::integer + 1 as day_no,
           c.occurred_at, c.kind, c.within_proximity
    from units0 u
    join known_events c on c.event_type = 'post_infusion_contact' and c.topic = 'rmm.infusion'
     and c.product = u.product and c.patient_ref = u.patient_ref
     and c.occurred_at >= u.t0 and c.occurred_at < u.t0 + greatest(u.daily_days, u.proximity_days) * interval 1 day
),
per_unit as (
    select u.product, u.patient_ref,
           coalesce(list(distinct c.day_no) filter (where c.day_no <= u.daily_days), []) as covered,
           min(c.occurred_at) filter (where not c.within_proximity and c.day_no <= u.proximity_days) as left_at,
           arg_min(c.kind, c.occurred_at) filter (where not c.within_proximity and c.day_no <= u.proximity_days)
               as left_kind
    from units0 u left join contacts c using (product, patient_ref)
    group by u.product, u.patient_ref
),
judged as (
    select u.*, p.left_at, p.left_kind,
           list_filter(range(1, u.daily_days + 1), lambda d: not list_contains(p.covered, d))[1] as missing_day
    from units0 u join per_unit p using (product, patient_ref)
),
outcomes as (
    select *,
           missing_day is not null and t0 + missing_day * interval 1 day <= $as_of as missing_known,
           t0 + proximity_days * interval 1 day as period_end
    from judged
)
select product, site_id, t0 as anchor_at,
       case when left_at is not null or missing_known then 'failure'
            when $as_of < period_end then 'pending'
            else 'success' end as outcome,
       product || ':' || patient_ref as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       least(case when t0 + missing_day * interval 1 day > $as_of then t0 + missing_day * interval 1 day end,
             case when period_end > $as_of then period_end end) as recheck_at,
       left_at is not null as left_proximity,
       case
           when left_at is not null then
               'out of proximity of a qualified centre on day '
               || (floor((epoch(left_at) - epoch(t0)) / 86400)::integer + 1) || ' ('
               || strftime(left_at, '%Y-%m-%d %H:%MZ') || ', ' || left_kind || ' contact); ' || rule_name
               || ': within proximity for ' || proximity_days || ' days after infusion '
               || strftime(t0, '%Y-%m-%d %H:%MZ')
           when missing_known then
               'no contact recorded on day ' || missing_day || ' ('
               || strftime(t0 + (missing_day - 1) * interval 1 day, '%Y-%m-%d') || '); ' || rule_name
               || ': daily contact for ' || daily_days || ' days after infusion ' || strftime(t0, '%Y-%m-%d %H:%MZ')
           when $as_of < period_end then
               'monitoring period open until ' || strftime(period_end, '%Y-%m-%d %H:%MZ') || ' (' || rule_name
               || ': ' || daily_days || ' days of daily contact, ' || proximity_days || ' days in proximity)'
           else
               'contact on each of ' || daily_days || ' days and within proximity for ' || proximity_days
               || ' days (' || rule_name || ')'
       end as detail
from outcomes
