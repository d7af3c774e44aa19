-- Unit: each AE (product + ae_id) with an ae_awareness; anchor = the earliest awareness (day 0), which also
-- gives product/site. Success: its first ae_reported within the deadline after day 0: 1 day if fatal, else
-- 15 days if serious, else 30 days. Fatal = a grade 5 observed at or before the first report (at or before
-- as-of while unreported). Serious comes from the earliest ae_onset (none known -> not serious).
with awareness as (
    select product, site_id, ae_id, patient_ref, occurred_at as day0
    from known_events where event_type = 'ae_awareness'
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
first_report as (
    select product, ae_id, occurred_at as reported_at, lot_id, regulator
    from known_events where event_type = 'ae_reported'
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
onset as (
    select product, ae_id, serious
    from known_events where event_type = 'ae_onset'
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
grade5 as (
    select product, ae_id, min(occurred_at) as fatal_at
    from known_events where event_type in ('ae_onset', 'ae_grade_changed') and grade = 5
    group by all
),
judged as (
    select a.*, r.reported_at, r.lot_id, r.regulator,
           coalesce(o.serious, false) as serious,
           g.fatal_at is not null and g.fatal_at <= coalesce(r.reported_at, $as_of) as fatal
    from awareness a
    left join first_report r using (product, ae_id)
    left join onset o using (product, ae_id)
    left join grade5 g using (product, ae_id)
),
deadlines as (
    select *, case when fatal then 1 when serious then 15 else 30 end as deadline_days
    from judged
)
select product, site_id, day0 as anchor_at,
       case when reported_at is not null and reported_at <= day0 + deadline_days * interval 1 day then 'success'
            when reported_at is null and $as_of < day0 + deadline_days * interval 1 day then 'pending'
            else 'failure' end as outcome,
       ae_id as unit_id, patient_ref, null::varchar as hcp_id, ae_id, lot_id,
       case when reported_at is not null then (epoch(reported_at) - epoch(day0)) / 86400.0 end as days,
       case
           when reported_at is not null then
               'reported to ' || regulator || ' ' || printf('%.1f', (epoch(reported_at) - epoch(day0)) / 86400.0)
               || ' d after awareness on ' || strftime(day0, '%Y-%m-%d') || ' (deadline ' || deadline_days || ' d, '
               || case when fatal then 'fatal' when serious then 'serious' else 'non-serious' end || ')'
           else
               'not reported; awareness ' || strftime(day0, '%Y-%m-%d %H:%MZ') || ', deadline '
               || strftime(day0 + deadline_days * interval 1 day, '%Y-%m-%d %H:%MZ') || ' ('
               || case when fatal then 'fatal' when serious then 'serious' else 'non-serious' end || ')'
       end as detail
from deadlines
