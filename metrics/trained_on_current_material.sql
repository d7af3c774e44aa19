-- Unit: each infusion_administered; anchor = the infusion (product/site from it).
-- Success: for at least one material_id of the product, the administering HCP (product + hcp_id) passed a
-- training_completed on that material's current version -- the highest version released at or before the
-- infusion -- at or before the infusion. No release known at the infusion -> failure. No window: never pending.
-- Pruning ($anchor_from/$anchor_to): the unit is the event itself, so events outside the period are not read.
-- `topic = ...` beside an event_type filter is implied by the type; it lets DuckDB skip the other topic tables
-- of the events view (see rmm_monitor/kpi/engine.py).
with infusions as (
    select event_id, seq, product, site_id, patient_ref, hcp_id, lot_id, occurred_at
    from known_events where event_type = 'infusion_administered' and topic = 'rmm.infusion'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
),
releases as (
    select product, material_id, version, occurred_at
    from known_events where event_type = 'material_version_released' and topic = 'rmm.training'
),
passes as (
    select product, hcp_id, material_id, material_version, occurred_at, seq
    from known_events where event_type = 'training_completed' and topic = 'rmm.training' and passed
),
hcp_materials as (
    -- materials anyone trains on (HCP materials, as opposed to patient materials); only for the detail text
    select distinct product, material_id, true as hcp_material
    from known_events where event_type = 'training_completed' and topic = 'rmm.training'
),
release_steps as (
    -- from each release time on, the highest version of the material released so far (the default window frame
    -- takes in releases at the same time); one row per time, valid until the material's next release time
    select product, material_id, occurred_at, version,
           lead(occurred_at) over (partition by product, material_id order by occurred_at) as until
    from (
        select product, material_id, occurred_at,
               max(version) over (partition by product, material_id order by occurred_at) as version
        from releases
        where material_id is not null  -- as the as-of join's equality on it did
        qualify row_number() over (partition by product, material_id, occurred_at) = 1
    )
),
current_versions as (
    -- per infusion and material of its product: the current version at the infusion, the release step whose
    -- [occurred_at, until) holds it. Releases are few (tens), so a hash join on the material with that range as
    -- a filter beats an as-of join, which sorted every (infusion, material) row; materials with no release at
    -- or before the infusion have no row
    select i.seq, i.product, i.hcp_id, i.occurred_at, s.material_id, s.version
    from infusions i
    join release_steps s
        on s.product = i.product and i.occurred_at >= s.occurred_at and (s.until is null or i.occurred_at < s.until)
),
first_passes as (
    -- an HCP's earliest pass per material version: the HCP passed it at or before an infusion iff this one lies
    -- at or before it (then it is also the earliest such pass), so each (infusion, material) joins one row
    -- instead of every pass
    select product, hcp_id, material_id, material_version, min(occurred_at) as passed_at
    from passes
    group by all
),
per_material as (
    select c.seq, c.material_id, c.version, coalesce(h.hcp_material, false) as hcp_material,
           case when p.passed_at <= c.occurred_at then p.passed_at end as passed_at
    from current_versions c
    left join hcp_materials h on h.product = c.product and h.material_id = c.material_id
    left join first_passes p on p.product = c.product and p.hcp_id = c.hcp_id and p.material_id = c.material_id
        and p.material_version = c.version
),
per_infusion as (
    -- grouped by the infusion's seq, which hashes far cheaper than its event_id string
    select seq,
           arg_min(material_id || ' v' || version, passed_at) filter (where passed_at is not null) as passed_material,
           min(passed_at) as passed_at,
           count(*) as materials,
           coalesce(string_agg(material_id || ' v' || version, ', ' order by material_id) filter (where hcp_material),
                    string_agg(material_id || ' v' || version, ', ' order by material_id)) as current_list
    from per_material
    group by seq
),
last_pass as (
    -- only for the failure detail: the infusions with a current version but no pass of it (joining every
    -- infusion to its HCP's earlier passes cost ~2.5 s of a year's units at 10 M events)
    select i.seq,
           arg_max(p.material_id || ' v' || p.material_version, (p.occurred_at, p.seq)) as last_passed,
           max(p.occurred_at) as last_passed_at
    from infusions i
    semi join per_infusion m on m.seq = i.seq and m.passed_at is null
    join passes p on p.product = i.product and p.hcp_id = i.hcp_id and p.occurred_at <= i.occurred_at
    group by i.seq
)
select i.product, i.site_id, i.occurred_at as anchor_at,
       case when m.passed_at is not null then 'success' else 'failure' end as outcome,
       i.event_id as unit_id, i.patient_ref, i.hcp_id, null::varchar as ae_id, i.lot_id,
       case
           when m.passed_at is not null then
               'HCP ' || i.hcp_id || ' passed ' || m.passed_material || ' (current) at '
               || strftime(m.passed_at, '%Y-%m-%d %H:%MZ') || '; infusion ' || strftime(i.occurred_at, '%Y-%m-%d %H:%MZ')
           when m.materials is null then
               'no material version released for ' || i.product || ' by infusion ' || strftime(i.occurred_at, '%Y-%m-%d %H:%MZ')
           else
               'HCP ' || i.hcp_id || ' not trained on a current version at infusion '
               || strftime(i.occurred_at, '%Y-%m-%d %H:%MZ') || ' (current: ' || m.current_list || '; '
               || case when l.last_passed is null then 'no passed training'
                       else 'last passed ' || l.last_passed || ' at ' || strftime(l.last_passed_at, '%Y-%m-%d %H:%MZ') end
               || ')'
       end as detail
from infusions i
left join per_infusion m using (seq)
left join last_pass l using (seq)
