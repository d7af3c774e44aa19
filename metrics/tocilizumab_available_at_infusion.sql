-- Unit: each infusion_administered; anchor = the infusion (product/site from it).
-- Success: the latest tocilizumab_stock_reported of the infusion's own (product, site_id) in
-- [infusion - 7 d, infusion] (ties on occurred_at: the last stored) has doses_on_hand >= params.min_doses.
-- No window: never pending (the evidence lies before the infusion).
with infusions as (
    select event_id, product, site_id, patient_ref, hcp_id, lot_id, occurred_at
    from known_events where event_type = 'infusion_administered'
),
stock as (
    select product, site_id, doses_on_hand, occurred_at
    from known_events where event_type = 'tocilizumab_stock_reported'
    qualify row_number() over (partition by product, site_id, occurred_at order by seq desc) = 1
),
judged as (
    -- the latest report at or before the infusion; it is "in the 7 days before" only if not older than 7 d
    select i.*, s.doses_on_hand, s.occurred_at as report_at,
           s.occurred_at >= i.occurred_at - interval 7 day as in_window
    from infusions i
    asof left join stock s
        on s.product = i.product and s.site_id = i.site_id and i.occurred_at >= s.occurred_at
)
select product, site_id, occurred_at as anchor_at,
       case when in_window and doses_on_hand >= min_doses then 'success' else 'failure' end as outcome,
       event_id as unit_id, patient_ref, hcp_id, null::varchar as ae_id, lot_id,
       case
           when in_window then
               'stock report ' || strftime(report_at, '%Y-%m-%d %H:%MZ') || ': ' || doses_on_hand
               || ' dose(s) on hand (minimum ' || min_doses || '); infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'no tocilizumab stock report in the 7 days before infusion ' || strftime(occurred_at, '%Y-%m-%d %H:%MZ')
               || case when report_at is null then ' (no earlier report from site ' || site_id || ')'
                       else ' (last report ' || strftime(report_at, '%Y-%m-%d %H:%MZ') || ': ' || doses_on_hand
                            || ' dose(s))' end
       end as detail
from judged
join params using (product)
