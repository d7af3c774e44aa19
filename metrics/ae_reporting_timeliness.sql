-- Unit: each AE (product + ae_id) with an ae_awareness; anchor = the earliest awareness (day 0), which also
-- gives product/site. Success: its first ae_reported within the deadline after day 0: 1 day if fatal, else
-- 15 days if serious, else 30 days. Fatal = a grade 5 observed at or before the first report (at or before
-- as-of while unreported). Serious comes from the earliest ae_onset (none known -> not serious).
-- Pruning ($anchor_from/$anchor_to): an AE's day 0 lies in the period iff it has an awareness there and none
-- before the period's start (an anti-join on the keys of earlier awareness events, no window over all history);
-- reports, onsets and grades are then joined to those AEs only.
with awareness as (
    select product, ae_id, site_id, patient_ref, occurred_at as day0, seq
    from known_events a
    where event_type = 'ae_awareness'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
      and not exists (
          select 1 from known_events e
          where e.event_type = 'ae_awareness' and e.occurred_at < $anchor_from
            and e.product is not distinct from a.product and e.ae_id is not distinct from a.ae_id)
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
facts as (
    -- the first report, the earliest onset's seriousness and the first grade 5 of each AE of the period, read in
    -- one pass over those AEs' events only; grouped by the awareness event's seq (one per AE here), which hashes
    -- far cheaper than the AE's string columns
    select a.seq,
           arg_min({reported_at: e.occurred_at, lot_id: e.lot_id, regulator: e.regulator}, (e.occurred_at, e.seq))
               filter (where e.event_type = 'ae_reported') as r,
           arg_min_null(e.serious, (e.occurred_at, e.seq)) filter (where e.event_type = 'ae_onset') as onset_serious,
           min(e.occurred_at) filter (where e.event_type in ('ae_onset', 'ae_grade_changed') and e.grade = 5) as fatal_at
    from awareness a
    left join known_events e on e.product = a.product and e.ae_id = a.ae_id
        and e.event_type in ('ae_reported', 'ae_onset', 'ae_grade_changed')
    group by a.seq
),
judged as (
    select a.product, a.ae_id, a.site_id, a.patient_ref, a.day0,
           f.r.reported_at as reported_at, f.r.lot_id as lot_id, f.r.regulator as regulator,
           coalesce(f.onset_serious, false) as serious,
           f.fatal_at is not null and f.fatal_at <= coalesce(f.r.reported_at, $as_of) as fatal
    from awareness a
    join facts f using (seq)
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
