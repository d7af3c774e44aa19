-- Unit: each AE (product + ae_id) with an ae_awareness; anchor = the earliest awareness (day 0), which also
-- gives product/site. Success: its first ae_reported within the deadline after day 0. The deadline is the rule
-- set in force for the awareness site's jurisdiction and the product at day 0 (metrics/rules/rule_sets.yml, rule
-- ae_reporting_timeliness): fatal_days if fatal, else serious_days if serious, else other_days. Where the rule
-- gives no deadline (other_days null: a non-serious US AE), or exempts AEs on the label (expected_exempt = 1 and
-- the earliest ae_onset says expected = true: a US AE on the label), the AE is `excluded`, not a unit.
-- Fatal = a grade 5 observed at or before the first report (at or before as-of while unreported). Serious and
-- expected come from the earliest ae_onset (none known -> not serious, not expected).
-- The first awareness, first report, earliest onset and first grade 5 of every AE come from the shared ae_facts
-- model (ties: first stored); pruning ($anchor_from/$anchor_to) keeps the AEs whose first awareness lies in the
-- period, and only their three events are fetched, by seq.
with units0 as (
    -- the period's AEs, with the seqs of their first awareness, first report and earliest onset
    select product, ae_id,
           (awareness_k & 18446744073709551615)::bigint as aware_seq,
           (report_k & 18446744073709551615)::bigint as report_seq,
           (onset_k & 18446744073709551615)::bigint as onset_seq,
           fatal_at
    from ae_facts
    where awareness_k is not null
      and ($anchor_from is null or awareness_k >= epoch_us($anchor_from::timestamptz)::hugeint * 18446744073709551616)
      and ($anchor_to is null or awareness_k < epoch_us($anchor_to::timestamptz)::hugeint * 18446744073709551616)
),
judged as (
    select u.product, u.ae_id, a.site_id, a.patient_ref, a.occurred_at as day0, r.occurred_at as reported_at,
           r.lot_id, r.regulator, coalesce(o.serious, false) as serious, coalesce(o.expected, false) as expected,
           u.fatal_at is not null and u.fatal_at <= coalesce(r.occurred_at, $as_of) as fatal,
           case when r.occurred_at is null and u.fatal_at > $as_of then u.fatal_at end as fatal_ahead
    from units0 u
    join known_events a on a.seq = u.aware_seq and a.event_type = 'ae_awareness'
    left join known_events r on r.seq = u.report_seq and r.event_type = 'ae_reported'
    left join known_events o on o.seq = u.onset_seq and o.event_type = 'ae_onset'
),
ruled as (
    -- the rule version in force: the site's jurisdiction before `default`, a product's own version before "*",
    -- then the latest effective_from (docs/kpi-rules.md, "Rule sets")
    select u.product, u.ae_id,
           arg_max(r, (r.jurisdiction <> 'default', r.product <> '*', r.effective_from)) as rule
    from judged u
    left join site_jurisdiction j on j.site_id = u.site_id
    join rules r on r.rule = 'ae_reporting_timeliness'
     and r.jurisdiction in (coalesce(j.jurisdiction, 'default'), 'default') and r.product in (u.product, '*')
     and r.effective_from <= u.day0 and (r.effective_to is null or u.day0 < r.effective_to)
    group by u.product, u.ae_id
),
deadlines as (
    select j.*, ru.rule.name as clock,
           case when fatal then 'fatal' when serious then 'serious' else 'non-serious' end as seriousness,
           case when expected and ru.rule.expected_exempt = 1 then null
                when fatal then ru.rule.fatal_days when serious then ru.rule.serious_days
                else ru.rule.other_days end::integer as deadline_days
    from judged j
    left join ruled ru using (product, ae_id)
)
select product, site_id, day0 as anchor_at,
       case when deadline_days is null then 'excluded'
            when reported_at is not null and reported_at <= day0 + deadline_days * interval 1 day then 'success'
            when reported_at is null and $as_of < day0 + deadline_days * interval 1 day then 'pending'
            else 'failure' end as outcome,
       ae_id as unit_id, patient_ref, null::varchar as hcp_id, ae_id, lot_id,
       least(fatal_ahead, case when day0 + deadline_days * interval 1 day > $as_of
                               then day0 + deadline_days * interval 1 day end) as recheck_at,
       case when reported_at is not null then (epoch(reported_at) - epoch(day0)) / 86400.0 end as days,
       case
           when deadline_days is null then
               clock || ': not a unit (' || seriousness
               || case when expected and seriousness <> 'non-serious' then ', on the label' else '' end
               || ': no expedited report; periodic reporting); awareness ' || strftime(day0, '%Y-%m-%d')
           when reported_at is not null then
               'reported to ' || regulator || ' ' || printf('%.1f', (epoch(reported_at) - epoch(day0)) / 86400.0)
               || ' d after awareness on ' || strftime(day0, '%Y-%m-%d') || ' (' || clock || ': ' || seriousness
               || ', ' || deadline_days || ' d)'
           else
               'not reported; awareness ' || strftime(day0, '%Y-%m-%d %H:%MZ') || ', deadline '
               || strftime(day0 + deadline_days * interval 1 day, '%Y-%m-%d %H:%MZ') || ' (' || clock || ': '
               || seriousness || ', ' || deadline_days || ' d)'
       end as detail
from deadlines
