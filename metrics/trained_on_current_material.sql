-- Unit: each infusion_administered; anchor = the infusion (product/site from it).
-- Success: for at least one material_id of the product, the administering HCP (product + hcp_id) passed a
-- training_completed on that material's current version -- the highest version released at or before the
-- infusion -- at or before the infusion. No release known at the infusion -> failure. No window: never pending.
-- Pruning ($anchor_from/$anchor_to): the unit is the event itself, so events outside the period are not read.
with infusions as (
    select event_id, product, site_id, patient_ref, hcp_id, lot_id, occurred_at
    from known_events where event_type = 'infusion_administered'
      and ($anchor_from is null or occurred_at >= $anchor_from) and ($anchor_to is null or occurred_at < $anchor_to)
),
releases as (
    select product, material_id, version, occurred_at
    from known_events where event_type = 'material_version_released'
),
passes as (
    select product, hcp_id, material_id, material_version, occurred_at, seq
    from known_events where event_type = 'training_completed' and passed
),
hcp_materials as (
    -- materials anyone trains on (HCP materials, as opposed to patient materials); only for the detail text
    select distinct product, material_id, true as hcp_material
    from known_events where event_type = 'training_completed'
),
release_steps as (
    -- from each release time on, the highest version of the material released so far (the default window frame
    -- takes in releases at the same time); one row per time, so the as-of join below has a single match
    select product, material_id, occurred_at,
           max(version) over (partition by product, material_id order by occurred_at) as version
    from releases
    qualify row_number() over (partition by product, material_id, occurred_at) = 1
),
current_versions as (
    -- per infusion and material of its product: the current version at the infusion, found by an as-of join on
    -- the release steps rather than by joining every earlier release to every infusion; materials with no
    -- release at or before the infusion have no row
    select i.event_id, i.product, i.hcp_id, i.occurred_at, s.material_id, s.version
    from infusions i
    join (select distinct product, material_id from releases) m on m.product = i.product
    asof join release_steps s
        on s.product = i.product and s.material_id = m.material_id and i.occurred_at >= s.occurred_at
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
    select c.event_id, c.material_id, c.version, coalesce(h.hcp_material, false) as hcp_material,
           case when p.passed_at <= c.occurred_at then p.passed_at end as passed_at
    from current_versions c
    left join hcp_materials h on h.product = c.product and h.material_id = c.material_id
    left join first_passes p on p.product = c.product and p.hcp_id = c.hcp_id and p.material_id = c.material_id
        and p.material_version = c.version
),
per_infusion as (
    select event_id,
           arg_min(material_id || ' v' || version, passed_at) filter (where passed_at is not null) as passed_material,
           min(passed_at) as passed_at,
           count(*) as materials,
           coalesce(string_agg(material_id || ' v' || version, ', ' order by material_id) filter (where hcp_material),
                    string_agg(material_id || ' v' || version, ', ' order by material_id)) as current_list
    from per_material
    group by event_id
),
last_pass as (
    select i.event_id,
           arg_max(p.material_id || ' v' || p.material_version, (p.occurred_at, p.seq)) as last_passed,
           max(p.occurred_at) as last_passed_at
    from infusions i
    join passes p on p.product = i.product and p.hcp_id = i.hcp_id and p.occurred_at <= i.occurred_at
    group by i.event_id
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
left join per_infusion m using (event_id)
left join last_pass l using (event_id)
