-- Unit: each AE (product + ae_id) with an ae_reported; anchor = its first report (ties: first stored), which
-- also gives product/site and the patient. Success: that report's lot_id is the lot of an infusion of the same
-- patient (product + patient_ref) known at as-of, whatever its time or site; a null lot_id is a failure.
-- No window: never pending.
with first_report as (
    select product, site_id, ae_id, patient_ref, lot_id, regulator, occurred_at
    from known_events where event_type = 'ae_reported'
    qualify row_number() over (partition by product, ae_id order by occurred_at, seq) = 1
),
infused as (
    select product, patient_ref, list_sort(list_distinct(list(lot_id))) as lots
    from known_events where event_type = 'infusion_administered'
    group by all
),
judged as (
    select r.*, i.lots, coalesce(list_contains(i.lots, r.lot_id), false) as traced
    from first_report r
    left join infused i using (product, patient_ref)
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
