-- Unit: each patient's first infusion (patient = product + patient_ref; ties: first stored); anchor = that
-- infusion. Success: an alert_card_issued for the patient in [infusion - 30 d, infusion + 24 h].
-- Pending while as-of < infusion + 24 h and no card yet.
-- Pruning ($anchor_from/$anchor_to): a patient's first infusion lies in the period iff the patient has an
-- infusion there and none before the period's start (an anti-join on the keys of earlier infusions, no window
-- over all history); the cards are then joined to those patients only (and cards older than the period's
-- start - 31 d are not read).
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with cards as (
    select c.product, c.patient_ref, c.lot_id, c.occurred_at, c.seq
    from known_events c
    where c.event_type = 'alert_card_issued' and c.topic = 'rmm.infusion'
      and ($anchor_from is null or c.occurred_at >= $anchor_from::timestamptz - interval 31 day)
),
card_facts as (
    -- per first infusion, keyed by its seq (one per patient here), which hashes far cheaper than the
    -- infusion's string columns. The first card's order (occurred_at, then seq) is packed into one hugeint
    -- (microseconds * 2^64 + seq; seq >= 0 and < 2^63): a (time, seq) struct key made arg_min ~3x dearer
    select f.seq,
           arg_min_null(c.lot_id, epoch_us(c.occurred_at)::hugeint * 18446744073709551616 + c.seq) filter (
               where c.occurred_at between f.occurred_at - interval 30 day and f.occurred_at + interval 24 hour
           ) as card_lot,
           min(c.occurred_at) filter (
               where c.occurred_at between f.occurred_at - interval 30 day and f.occurred_at + interval 24 hour
           ) as card_at,
           min(c.occurred_at) filter (where c.occurred_at > f.occurred_at + interval 24 hour) as late_card_at
    from first_infusion f
    join cards c on c.product = f.product and c.patient_ref = f.patient_ref
    group by f.seq
),
judged as (
    select f.product, f.site_id, f.patient_ref, f.lot_id, f.hcp_id, f.occurred_at, k.card_lot, k.card_at, k.late_card_at
    from first_infusion f
    left join card_facts k using (seq)
)
select product, site_id, occurred_at as anchor_at,
       case when card_at is not null then 'success'
            when $as_of < occurred_at + interval 24 hour then 'pending'
            else 'failure' end as outcome,
       patient_ref as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case when occurred_at + interval 24 hour > $as_of then occurred_at + interval 24 hour end as recheck_at,
       card_at is not null and card_lot is not distinct from lot_id and card_lot is not null as lot_match,
       case
           when card_at is not null then
               'card issued ' || strftime(card_at, '%Y-%m-%d %H:%MZ')
               || case when card_lot is null then ' without a lot number'
                       when card_lot <> lot_id then ' with lot ' || card_lot || ', infused lot ' || lot_id
                       else ' with the infused lot ' || lot_id end
           when $as_of < occurred_at + interval 24 hour then
               'infused ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || '; card due by '
               || strftime(occurred_at + interval 24 hour, '%Y-%m-%d %H:%MZ')
           when late_card_at is not null then
               'card issued ' || round((epoch(late_card_at) - epoch(occurred_at)) / 3600)::bigint
               || ' h after infusion at ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || ' (limit 24 h)'
           else
               'no alert card issued; infused ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ') || ', due by '
               || strftime(occurred_at + interval 24 hour, '%Y-%m-%d %H:%MZ')
       end as detail
from judged
