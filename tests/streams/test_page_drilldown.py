"""The built-in page's drill-down, deep links and language, in real headless Chromium against one real worker on a
small simulated store (users exist, so every read is signed in):

- /api/periods lists the quarters that have events (known at the as-of time) and the products, and needs a token;
- the period selector offers those quarters and starts on the worker's judged one (RMM_PERIOD); another period
  repaints the tiles with that period's values;
- an alert links to its review case (id and state; the case view opens) and to its KPI's units;
- a period chosen, a tile clicked, a site clicked: the units the page lists for that site are the ones
  `rmm kpis --explain KPI --site SITE --period PERIOD` prints, with the same outcomes and detail text;
- the URL's hash holds the selection: the link opens the same site level in a new tab, back walks up to the KPI;
- 中文 switches the KPI titles, family names and statuses to the catalog's Chinese names; numbers stay identical.

Screenshots (build/artifacts/page-drilldown-*.png): the overview, a KPI per site, a site's units, the overview in
Chinese."""

from __future__ import annotations

import json
import urllib.error
from datetime import datetime, timezone

import pytest

from rmm_monitor.core.periods import quarter_of
from rmm_monitor.dev import simulate
from rmm_monitor.dev.broker import Broker
from rmm_monitor.kpi import load_catalog, load_labels
from rmm_monitor.kpi.fixtures import encode
from rmm_monitor.store import Store, process_batch

from support.browser import Browser
from support.paths import REPO
from support.people import PASSWORDS, make_people
from support.workers import NOW, WorkerProc, http_json, run_cli

pytestmark = pytest.mark.xdist_group("page-drilldown")

ARTIFACTS = REPO / "build" / "artifacts"
# The quarter the worker judges (RMM_PERIOD): a past one, with failures at several sites and a breach that opens a
# review case (seed 5, 30 patients); the clock's own quarter is 2026Q4.
PERIOD = "2026Q3"
KPI = "hcp_knowledge"
VIEWER = "audit.liu"


class Stack:
    def __init__(self, worker: WorkerProc, tokens, events: list[dict], db):
        self.worker, self.tokens, self.events, self.db = worker, tokens, events, db


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page-drilldown")
    db = tmp / "page.duckdb"
    events = simulate.generate(seed=5, patients=30, end=NOW)
    with Store(db) as store:
        process_batch(store, encode(events))
    people = make_people(db)
    broker = Broker(log_path=tmp / "broker.log").start()
    worker = None
    try:
        worker = WorkerProc(
            db=db,
            bootstrap=broker.bootstrap,
            log=tmp / "worker.log",
            env_extra={"RMM_DQ_SECONDS": "0", "RMM_PERIOD": PERIOD},
        ).start()
        yield Stack(worker, people, events, db)
    finally:
        if worker:
            worker.stop()
        broker.stop()


def test_the_page_carries_the_catalog_names_in_both_languages():
    """The template's two placeholders are replaced by the catalog and the labels, read as the page reads them."""
    from rmm_monitor.streams import dashboard_page

    html = dashboard_page.render()
    assert "/*CATALOG*/" not in html and "/*LABELS*/" not in html
    labels = json.loads(html.split("const LABELS = ", 1)[1].split(";\n", 1)[0])
    assert labels == load_labels().to_json()
    assert labels["statuses"]["breach"] == {"en": "breach", "zh": "超限"}
    catalog = json.loads(html.split("const CATALOG = ", 1)[1].split(";\n", 1)[0])
    assert {k["id"]: k["title_zh"] for k in catalog} == {k.id: k.title_zh for k in load_catalog()}


def _quarters(events: list[dict], known_by: datetime) -> list[str]:
    seen = {
        quarter_of(datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))).label
        for e in events
        if datetime.fromisoformat((e.get("recorded_at") or e["occurred_at"]).replace("Z", "+00:00")) <= known_by
    }
    return sorted(seen, key=lambda q: (int(q[:4]), int(q[5])), reverse=True) + ["all"]


def test_periods_lists_the_quarters_with_events_for_a_signed_in_reader(stack):
    url = stack.worker.url + "/api/periods"
    with pytest.raises(urllib.error.HTTPError) as refused:
        http_json(url)
    assert refused.value.code == 401
    got = http_json(url, token=stack.tokens[VIEWER])
    assert got["periods"] == _quarters(stack.events, NOW)
    assert got["periods"][0] == "2026Q4" and stack.worker.status()["period"] == PERIOD
    assert got["products"] == sorted({e["product"] for e in stack.events})
    # known-at aware: at the end of June nothing of the third quarter was recorded yet
    june = datetime(2026, 6, 30, 23, 59, 59, tzinfo=timezone.utc)
    earlier = http_json(url + "?as_of=2026-06-30T23:59:59Z", token=stack.tokens[VIEWER])
    assert earlier["periods"] == _quarters(stack.events, june) and "2026Q3" not in earlier["periods"]
    with pytest.raises(urllib.error.HTTPError) as bad:
        http_json(url + "?as_of=yesterday", token=stack.tokens[VIEWER])
    assert bad.value.code == 400


def _sign_in(browser: Browser, base: str, hash_: str = "") -> None:
    browser.get("about:blank")  # a load of the page, not a change of the hash of the page already shown
    browser.get(base + "/" + hash_)
    browser.wait_for("return !document.getElementById('signin').hidden", what="the sign-in form")
    browser.run(
        "document.getElementById('signin-user').value = arguments[0];"
        "document.getElementById('signin-password').value = arguments[1];"
        "document.getElementById('signin-submit').click();",
        VIEWER,
        PASSWORDS[VIEWER],
    )


def _wait_view(browser: Browser, view: str, what: str) -> str:
    """Until the page has painted `view` for the hash it shows now; returns that hash."""
    return browser.wait_for(
        f"return document.body.dataset.view === {json.dumps(view)} && document.body.dataset.shown === location.hash"
        " && document.getElementById('error').textContent === '' ? (location.hash || '#') : null",
        what=what,
    )


TILES_JS = (
    "return Object.fromEntries([...document.querySelectorAll('.tile')].map(t => [t.dataset.kpi,"
    " t.querySelector('.value').textContent]))"
)


def _pct(value) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _choose_period(browser: Browser, period: str) -> None:
    browser.run(
        "const s = document.getElementById('period'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
        period,
    )
    browser.wait_for(
        f"return location.hash === '#period={period}' && document.body.dataset.shown === location.hash",
        what=f"the overview of {period}",
    )


NUMBERS_JS = "return [...document.querySelectorAll('#site-kpi-rows .num, #unit-rows .nowrap')].map(c => c.textContent)"
UNITS_JS = (
    "return [...document.querySelectorAll('#unit-rows tr.unit')].map(r => ({unit_id: r.dataset.unit,"
    " outcome: r.dataset.outcome, product: r.dataset.product, detail: r.querySelector('.detail').textContent}))"
)


def test_drill_down_to_a_site_equals_explain_deep_links_and_chinese(stack, tmp_path):
    base = stack.worker.url
    catalog = load_catalog()
    labels = load_labels()
    with Browser(tmp_path) as browser:
        _sign_in(browser, base)
        browser.wait_for(
            "return document.querySelectorAll('.tile[data-loaded]').length === %d" % len(catalog),
            what="every tile painted after signing in",
        )
        _wait_view(browser, "overview", "the overview")
        # the period selector: the quarters with data and `all`; the worker's judged quarter chosen
        options = browser.run("return [...document.getElementById('period').options].map(o => o.value)")
        assert options == http_json(base + "/api/periods", token=stack.tokens[VIEWER])["periods"]
        assert browser.run("return document.getElementById('period').value") == PERIOD
        _choose_period(browser, "2026Q4")
        tiles = browser.run(TILES_JS)
        q4 = http_json(base + "/api/kpis?by=none&period=2026Q4", token=stack.tokens[VIEWER], timeout=30)
        assert tiles == {r["kpi"]: _pct(r["value"]) for r in q4}
        # the sparklines follow the period: a quarter in its year's months, `all` over the whole programme
        assert browser.run("return state.trendOf") == "2026"
        _choose_period(browser, "all")
        months = browser.run("return [...new Set(state.trend.map(r => r.month))].sort()")
        every = http_json(base + "/api/trend?period=all", token=stack.tokens[VIEWER], timeout=30)
        assert months == sorted({r["month"] for r in every}) and browser.run("return state.trendOf") == "all"
        _choose_period(browser, PERIOD)

        # an alert links to its review case and to its units
        case_id = browser.wait_for(
            "const a = document.querySelector('tr.alert a.case-link'); return a && a.dataset.case",
            timeout=60,
            what="an alert with its review case",
        )
        case = http_json(base + f"/api/reviews/{case_id}", token=stack.tokens[VIEWER])
        row = browser.run(
            "const r = document.querySelector('tr.alert a[data-case=\"' + arguments[0] + '\"]').closest('tr');"
            " return [r.querySelector('a.case-link').textContent,"
            " r.querySelector('a.units-link').getAttribute('href')]",
            case_id,
        )
        alert = next(a for a in http_json(base + "/api/alerts", token=stack.tokens[VIEWER]) if a["case_id"] == case_id)
        assert row[0] == f"{case_id} ({case['state']})"
        site_part = f"&site={alert['site_id']}" if alert["site_id"] else ""
        assert row[1] == f"#period={alert['period']}&product={alert['product']}&kpi={alert['kpi']}{site_part}"
        browser.screenshot(ARTIFACTS / "page-drilldown-overview.png")
        browser.run("document.querySelector('tr.alert a[data-case=\"' + arguments[0] + '\"]').click();", case_id)
        _wait_view(browser, "case", "the review case")
        assert browser.run("return document.getElementById('case-title').textContent") == f"{case_id} · {case['state']}"
        browser.run("history.back();")
        _wait_view(browser, "overview", "the overview after back")

        # a tile: the KPI per site
        browser.run("document.getElementById('tile-' + arguments[0]).click();", KPI)
        _wait_view(browser, "kpi", "the KPI per site")
        rows = http_json(base + f"/api/kpis?by=site&kpi={KPI}&period={PERIOD}", token=stack.tokens[VIEWER], timeout=30)
        shown = browser.run(
            "return [...document.querySelectorAll('#site-rows tr.site-row')].map(r => [r.dataset.product,"
            " r.dataset.site, r.dataset.status, r.querySelector('.value').textContent,"
            " r.querySelector('.ratio').textContent])"
        )
        assert shown == [
            [r["product"], r["site_id"], r["status"], _pct(r["value"]),
             f"{r['numerator']} / {r['denominator']}"]
            for r in rows
            if r["site_id"] is not None
        ]  # fmt: skip
        site = max(rows, key=lambda r: (r["denominator"] - r["numerator"]) if r["site_id"] else -1)["site_id"]
        browser.screenshot(ARTIFACTS / "page-drilldown-kpi.png")

        # a site: its units, as `rmm kpis --explain` lists them
        browser.run(
            "document.querySelector('#site-rows tr.site-row[data-site=' + JSON.stringify(arguments[0]) + ']').click();",
            site,
        )
        site_hash = _wait_view(browser, "site", "the site's units")
        assert site_hash == f"#period={PERIOD}&kpi={KPI}&site={site}"
        out = run_cli(
            "kpis", "--db", str(stack.db), "--explain", KPI, "--site", site, "--period", PERIOD, "--json",
            env={"RMM_TOKEN": stack.tokens[VIEWER]},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        explained = [
            {"unit_id": u["unit_id"], "outcome": u["outcome"], "product": u["product"], "detail": u["detail"] or ""}
            for u in json.loads(out.stdout)
        ]
        assert len(explained) >= 3, "the chosen site has failing units to show"
        assert browser.run(UNITS_JS) == explained
        assert browser.run("return document.getElementById('unit-count').textContent").startswith(
            f"{len(explained)} units"
        )
        browser.screenshot(ARTIFACTS / "page-drilldown-site.png")

        # back: the KPI per site again; forward: the site
        browser.run("history.back();")
        _wait_view(browser, "kpi", "the KPI per site after back")
        browser.run("history.forward();")
        assert _wait_view(browser, "site", "the site after forward") == site_hash

        # the deep link in a fresh tab (its own sessionStorage: sign in again) opens the same site level
        browser.run("sessionStorage.clear();")
        _sign_in(browser, base, site_hash)
        _wait_view(browser, "site", "the site level from the deep link")
        assert browser.run("return location.hash") == site_hash
        assert browser.run(UNITS_JS) == explained
        assert browser.run("return document.getElementById('period').value") == PERIOD

        # 中文: the catalog's Chinese names, the same numbers
        values_en = browser.run(NUMBERS_JS)
        browser.run("document.querySelector('#langs button[data-lang=\"zh\"]').click();")
        zh_hash = _wait_view(browser, "site", "the site level in Chinese")
        assert zh_hash == f"#lang=zh&period={PERIOD}&kpi={KPI}&site={site}"
        kpi_zh = next(k for k in catalog if k.id == KPI).title_zh
        assert browser.run("return document.getElementById('site-title').textContent") == kpi_zh
        assert browser.run("return document.documentElement.lang") == "zh-CN"
        outcomes = browser.run("return [...document.querySelectorAll('#unit-rows .outcome')].map(o => o.textContent)")
        assert outcomes == [labels.outcome(u["outcome"], "zh") for u in explained]
        assert browser.run(NUMBERS_JS) == values_en
        # the overview in Chinese: every tile title and family name from the catalog
        browser.run("document.querySelector('#crumbs a').click();")
        _wait_view(browser, "overview", "the Chinese overview")
        assert browser.run("return location.hash") == f"#lang=zh&period={PERIOD}"
        titles = browser.run(
            "return Object.fromEntries([...document.querySelectorAll('.tile')].map(t => [t.dataset.kpi,"
            " t.querySelector('.title').textContent]))"
        )
        assert titles == {k.id: k.title_zh for k in catalog}
        assert "发放患者提示卡" in titles.values()
        families = browser.run(
            "return [...document.querySelectorAll('section.family h2')].map(h => [h.parentNode.dataset.family,"
            " h.textContent])"
        )
        assert families and all(text == labels.family(f, "zh") for f, text in families)
        statuses = browser.run(
            "return [...document.querySelectorAll('.tile')].map(t => [t.dataset.status,"
            " t.querySelector('.status').textContent])"
        )
        assert all(text == labels.status(st, "zh") for st, text in statuses)
        # a breach's alert in Chinese: said again from its figures with the catalog's KPI title
        breach = next(
            a for a in http_json(base + "/api/alerts", token=stack.tokens[VIEWER]) if a["signal"] == "kpi_breach"
        )
        row_js = (
            "const r = document.querySelector('tr.alert[data-alert=\"%s\"]'); return r && r.children[6].textContent"
        )
        zh_title = browser.wait_for(row_js % breach["alert_id"], what="the breach's row in Chinese")
        kpi_zh = next(k.title_zh for k in catalog if k.id == breach["kpi"])
        assert zh_title == breach["titles"]["zh"] and zh_title.startswith(f"[超限] {kpi_zh} ")
        assert breach["titles"]["en"] == breach["title"]
        browser.screenshot(ARTIFACTS / "page-drilldown-overview-zh.png")
