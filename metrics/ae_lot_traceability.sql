-- Unit: each AE (product + ae_id) with an ae_reported; anchor = its first report (ties: first stored), which
-- also gives product/site and the patient. Success: that report's lot_id is the lot of an infusion of the same
-- patient (product + patient_ref) known at as-of, whatever its time or site; a null lot_id is a failure.
-- No window: never pending.
-- The first report of every AE comes from the shared ae_facts model (its seq); pruning ($anchor_from/$anchor_to)
-- keeps the AEs whose first report lies in the period, and only their patients have their infused lots collected.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with first_report as materialized (
    select r.product, r.ae_id, r.site_id, r.patient_ref, r.lot_id, r.regulator, r.occurred_at, r.seq
    from ae_facts f
    join known_events r on r.seq = (f.report_k & 18446744073709551615)::bigint and r.event_type = 'ae_reported'
    where f.report_k is not null
      and ($anchor_from is null or f.report_k >= epoch_us($anchor_from::timestamptz)::hugeint * 18446744073709551616)
      and ($anchor_to is null or f.report_k < epoch_us($anchor_to::timestamptz)::hugeint * 18446744073709551616)
),
infused as (
    -- per first report whose patient has an infusion on record (any time, any site): whether one carries the
    -- report's lot, and the other lots infused into the patient. Only those are listed: the detail names them only
    -- when none matches, and most patients have one infusion, so most lists stay empty (listing every lot of every
    -- patient cost more than the join). Grouped by the report's seq (one per AE here), which hashes far cheaper
    -- than the report's string columns.
    select r.seq, bool_or(i.lot_id = r.lot_id) as traced,
           list(i.lot_id) filter (where i.lot_id is distinct from r.lot_id) as other_lots
    from first_report r
    join known_events i on i.product = r.product and i.patient_ref = r.patient_ref
        and i.event_type = 'infusion_administered' and i.topic = 'rmm.infusion'
    group by r.seq
),
judged as (
    select r.*, coalesce(i.traced, false) as traced, i.seq is not null as infused,
           list_sort(list_distinct(i.other_lots)) as lots
    from first_report r
    left join infused i using (seq)
)
select product, site_id, occurred_at as anchor_at,
       case when traced then 'success' else 'failure' end as outcome,
       ae_id as unit_id, patient_ref, null::varchar as hcp_id, ae_id, lot_id,
       'first report to ' || regulator || ' ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
       || case when traced then ' carries lot ' || lot_id || ', infused into the patient'
               when lot_id is null then ' carries no lot number'
               when not infused then ' carries lot ' || lot_id || '; no infusion of patient ' || patient_ref || ' on record'
               else ' carries lot ' || lot_id || '; lots infused into the patient: ' || array_to_string(lots, ', ')
          end as detail
from judged
