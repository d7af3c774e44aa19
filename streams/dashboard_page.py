"""The built-in dashboard page at `/`: the embedded default where no Grafana runs (`rmm demo`, `make run`).

One self-contained HTML page (dashboard_page.html: no CDN, the machines are offline) that reads the worker's
own API (/api/kpis, /api/units, /api/trend, /api/periods, /api/status, and /api/alerts and /api/reviews where the
alerting part serves them) and refreshes itself. The tiles come from the same KPI catalog as the Grafana
dashboards, embedded in the page, so a KPI added to metrics/ gets its tile without touching the page.

A tile opens the KPI per site, a site its failing, pending and excluded units (what `rmm kpis --explain` lists),
an alert its review case and its units. The selection (language, period, product, KPI, site, case) is the URL's
hash, so a link reopens the same view. Names in English and Chinese come from the catalog: the KPIs' titles and
descriptions (CATALOG) and metrics/labels/sections.yml (LABELS: families, review sections, statuses, outcomes,
signals, states);
only the page's own words (buttons, column headers) are a table inside the page.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from rmm_monitor.kpi import by_family, load_catalog, load_labels

# faust mounts its own index blueprint at "/"; our route is added first, and aiohttp serves the first match.
PATH = "/"


def catalog_json() -> str:
    """The catalog's tiles, grouped by indicator family in the order an evaluation reads them."""
    items = [
        {
            "id": k.id,
            "title": k.title,
            "title_zh": k.title_zh,
            "family": k.family,
            "review_section": k.review_section,
            "armm": k.armm,
            "threshold": k.threshold,
            "direction": k.direction,
            "min_n": k.min_n,
            "headline": k.headline,
            "description": k.description,
            "description_zh": k.description_zh,
        }
        for kpis in by_family(load_catalog()).values()
        for k in kpis
    ]
    # "</" would end the <script> element early if a description ever contained it.
    return json.dumps(items, ensure_ascii=False).replace("</", "<\\/")


def labels_json() -> str:
    """Every name of metrics/labels/sections.yml (families, review sections, statuses, outcomes, signals, states):
    {kind: {key: {en, zh}}}."""
    return json.dumps(load_labels().to_json(), ensure_ascii=False).replace("</", "<\\/")


@lru_cache(maxsize=1)
def render() -> str:
    template = resources.files("rmm_monitor.streams").joinpath("dashboard_page.html").read_text(encoding="utf-8")
    return template.replace("/*CATALOG*/[]", catalog_json()).replace("/*LABELS*/{}", labels_json())


def register(app) -> None:
    """Add the page to a faust app (before the web server starts)."""
    html = render()

    @app.page(PATH)
    async def dashboard(web, request):
        return web.html(html)
