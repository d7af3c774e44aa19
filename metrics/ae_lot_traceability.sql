-- Unit: each AE (product + ae_id) with an ae_reported; anchor = its first report (ties: first stored), which
-- also gives product/site and the patient. Success: that report's lot_id is the lot of an infusion of the same
-- patient (product + patient_ref) known at as-of, whatever its time or site; a null lot_id is a failure.
-- No window: never pending.
-- Pruning ($anchor_from/$anchor_to): an AE's first report lies in the period iff it has a report there and none
-- before the period's start (an anti-join on the keys of earlier reports, no window over all history); only the
-- patients of those first reports have their infused lots collected.
with first_report as materialized (
    select product, ae_id, site_id, patient_ref, lot_id, regulator, occurred_at, seq
    from known_events r
    where event_type = 'ae_reported'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
      and not exists (
          select 1 from known_events e
          where e.event_type = 'ae_reported' and e.occurred_at < $anchor_from
            and e.product is not distinct from r.product and e.ae_id is not distinct from r.ae_id)
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
infused as (
    -- the lots infused into each first report's patient (any time, any site), collected for those patients only;
    -- null when the patient has no infusion on record. Grouped by the report's seq (one per AE here), which
    -- hashes far cheaper than the report's string columns.
    select r.seq, case when count(i.event_id) > 0 then list_sort(list_distinct(list(i.lot_id))) end as lots
    from first_report r
    left join known_events i on i.product = r.product and i.patient_ref = r.patient_ref
        and i.event_type = 'infusion_administered'
    group by r.seq
),
judged as (
    select r.*, i.lots, coalesce(list_contains(i.lots, r.lot_id), false) as traced
    from first_report r
    join infused i using (seq)
)
select product, site_id, occurred_at as anchor_at,
       case when traced then 'success' else 'failure' end as outcome,
       ae_id as unit_id, patient_ref, null::varchar as hcp_id, ae_id, lot_id,
       'first report to ' || regulator || ' ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       || case when traced then ' carries lot ' || lot_id || ', infused into the patient'
               when lot_id is null then ' carries no lot number'
               when lots is null then ' carries lot ' || lot_id || '; no infusion of patient ' || patient_ref || ' on record'
               else ' carries lot ' || lot_id || '; lots infused into the patient: ' || array_to_string(lots, ', ')
          end as detail
from judged
