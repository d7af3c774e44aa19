-- Shared by hcp_knowledge and patient_knowledge (their yml say `sql: knowledge.sql`); whose knowledge comes from
-- the KPI's `params.respondent_kind` (hcp or patient).
-- Unit: each assessment of a respondent: the key (product, respondent_id, assessment_id) of knowledge_assessed
-- events of that respondent kind; the unit is its earliest event (ties: first stored), a re-sent or repeated
-- answer to the same assessment does not count again; anchor = its occurred_at, product/site from it.
-- Success: key_messages_correct >= pass_mark * key_messages, compared exactly (decimals, not floats: 8 of 10
-- and 12 of 15 pass at 0.8, 7 of 9 fails). No window: never pending.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with answers as (
    select k.product, k.respondent_id, k.assessment_id,
           min(k.occurred_at) as assessed_at,
           arg_min(k.site_id, (k.occurred_at, k.seq)) as site_id,
           arg_min(k.key_messages, (k.occurred_at, k.seq)) as key_messages,
           arg_min(k.key_messages_correct, (k.occurred_at, k.seq)) as correct,
           arg_min(k.material_id, (k.occurred_at, k.seq)) as material_id,
           arg_min(k.material_version, (k.occurred_at, k.seq)) as material_version
    from known_events k join params p on p.product = k.product and k.respondent_kind = p.respondent_kind
    where k.event_type = 'knowledge_assessed' and k.topic = 'rmm.training'
    group by k.product, k.respondent_id, k.assessment_id
    having ($anchor_from is null or min(k.occurred_at) >= $anchor_from)
       and ($anchor_to is null or min(k.occurred_at) < $anchor_to)
)
select a.product, a.site_id, a.assessed_at as anchor_at,
       case when a.correct::decimal(18, 6) >= p.pass_mark::decimal(18, 6) * a.key_messages then 'success'
            else 'failure' end as outcome,
       a.assessment_id || ' ' || a.respondent_id as unit_id,
       case when p.respondent_kind = 'patient' then a.respondent_id end as patient_ref,
       case when p.respondent_kind = 'hcp' then a.respondent_id end as hcp_id,
       null::varchar as ae_id, null::varchar as lot_id,
       a.respondent_id, a.correct / a.key_messages as score, p.sample_target,
       a.correct || ' of ' || a.key_messages || ' key messages correct ('
       || printf('%.0f', 100.0 * a.correct / a.key_messages) || '%, pass mark '
       || printf('%.0f', 100 * p.pass_mark) || '%) on ' || a.material_id || ' v' || a.material_version
       || ', assessment ' || a.assessment_id || ' ' || strftime(a.assessed_at, '%Y-%m-%d') as detail
from answers a join params p using (product)
