-- Shared model: each site's jurisdiction, for the rule sets (metrics/rules/rule_sets.yml): the country of the
-- site's earliest site_registered (any product; ties on occurred_at: the first stored), mapped by the rule sets'
-- `jurisdictions` (e.g. DE -> EU). A country no jurisdiction lists is `default`; a site with no registration known
-- at as-of is not in this relation (the KPI SQL reads it as `default` too). Referenced as `site_jurisdiction`.
select s.site_id, coalesce(j.jurisdiction, 'default') as jurisdiction, s.country
from (
    select site_id, arg_min(country, (occurred_at, seq)) as country
    from known_events where event_type = 'site_registered' and topic = 'rmm.site'
    group by site_id
) s
left join jurisdictions j using (country)
