-- Shared model: one row per AE (product + ae_id) known at as-of, with the events the AE KPIs start from, found in
-- one hash aggregate over the AE events instead of each KPI re-joining millions of AE rows on the two string keys:
--   awareness_k / report_k / onset_k: its first ae_awareness / ae_reported / ae_onset; crs_onset_k: its first
--     ae_onset of term CRS (time_to_tocilizumab's episode onset);
--   fatal_at / grade2_at: the first ae_onset or ae_grade_changed with grade = 5 / grade >= 2.
-- "First" = earliest occurred_at, ties: first stored (lowest seq). Each *_k packs that order into one hugeint,
-- microseconds * 2^64 + seq (seq >= 0 and < 2^63), so a plain min finds the first event and its low 64 bits are
-- its seq (`k & 18446744073709551615`), by which a KPI fetches the event's other columns (an integer join); a
-- KPI compares a period bound b with epoch_us(b) * 2^64 <= k. arg_min with a (time, seq) struct key, or one
-- arg_min per needed column, cost several times more. Null when the AE has no such event.
-- No pruning: every AE is kept (a period's units are some AEs' first awareness, others' first report or first
-- grade >= 2); it is built once per snapshot and read by ae_reporting_timeliness, ae_lot_traceability and
-- time_to_tocilizumab. Referenced as `ae_facts`.
select product, ae_id,
       min(k) filter (where event_type = 'ae_awareness') as awareness_k,
       min(k) filter (where event_type = 'ae_reported') as report_k,
       min(k) filter (where event_type = 'ae_onset') as onset_k,
       min(k) filter (where event_type = 'ae_onset' and term = 'CRS') as crs_onset_k,
       min(occurred_at) filter (where event_type in ('ae_onset', 'ae_grade_changed') and grade = 5) as fatal_at,
       min(occurred_at) filter (where event_type in ('ae_onset', 'ae_grade_changed') and grade >= 2) as grade2_at
from (select product, ae_id, event_type, occurred_at, grade, term,
             epoch_us(occurred_at)::hugeint * 18446744073709551616 + seq as k
      from known_events
      where event_type in ('ae_awareness', 'ae_reported', 'ae_onset', 'ae_grade_changed'))
group by product, ae_id
