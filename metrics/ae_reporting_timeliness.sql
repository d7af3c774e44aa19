-- Unit: each AE (product + ae_id) with an ae_awareness; anchor = the earliest awareness (day 0), which also
-- gives product/site. Success: its first ae_reported within the deadline after day 0: 1 day if fatal, else
-- 15 days if serious, else 30 days. Fatal = a grade 5 observed at or before the first report (at or before
-- as-of while unreported). Serious comes from the earliest ae_onset (none known -> not serious).
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
           r.lot_id, r.regulator, coalesce(o.serious, false) as serious,
           u.fatal_at is not null and u.fatal_at <= coalesce(r.occurred_at, $as_of) as fatal
    from units0 u
    join known_events a on a.seq = u.aware_seq and a.event_type = 'ae_awareness'
    left join known_events r on r.seq = u.report_seq and r.event_type = 'ae_reported'
    left join known_events o on o.seq = u.onset_seq and o.event_type = 'ae_onset'
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
