"""Every dashboard proven against real data: one real worker (tansu broker, DuckDB) fed by the simulator and
scraped every second by a real Prometheus (Debian package), shared by the tests of this module.

- every target of every Grafana panel, with its template variables resolved by Prometheus itself, runs against
  Prometheus's HTTP API the way Grafana would (instant for stat/table targets, range for time series) and must
  return at least one series with a number;
- the built-in page at `/` loads in a real headless Chromium and shows the values and statuses the API returns.
"""

import json
import math
import re
import time
import urllib.parse
from typing import Optional

import pytest

from rmm_monitor.dev import simulate
from rmm_monitor.dev.broker import Broker
from rmm_monitor.dev.producer import produce_events, produce_raw
from rmm_monitor.kpi import by_family, load_catalog

from support.browser import Browser
from support.paths import REPO
from support.promserver import PrometheusServer, _get_json
from support.workers import NOW, WorkerProc, http_json, http_text
from test_dashboards import all_panels, committed

# One process runs this module under pytest-xdist (`--dist loadgroup`), so the stack below starts once.
pytestmark = pytest.mark.xdist_group("dashboards-live")

ROOT = REPO
SCREENSHOT = ROOT / "build" / "artifacts" / "dashboard-page.png"
# Grafana's $__rate_interval is at least 4 scrape intervals; the test Prometheus scrapes every second.
RATE_INTERVAL = "10s"
POISON = [
    ("rmm.site", None, b"not json at all"),
    (
        "rmm.infusion",
        None,
        b'{"event_id":"p-1","event_type":"alert_card_issued","schema_version":1,'
        b'"occurred_at":"2026-07-01T10:00:00Z","product":"CTX-19","site_id":"SH-01",'
        b'"patient_ref":"PT-CTX19-000001","patient_name":"Zhang San"}',
    ),
]


class Stack:
    def __init__(self, broker, worker, prometheus, fed_from: float):
        self.broker, self.worker, self.prometheus, self.fed_from = broker, worker, prometheus, fed_from


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboards-live")
    broker = Broker(log_path=tmp / "broker.log").start()
    worker = prometheus = None
    try:
        # A KPI refresh of this catalog takes ~2 s here; refreshing every second would queue the page's API
        # calls behind it on the store thread.
        worker = WorkerProc(
            db=tmp / "worker.duckdb",
            bootstrap=broker.bootstrap,
            log=tmp / "worker.log",
            env_extra={"RMM_REFRESH_SECONDS": "4"},
        ).start()
        prometheus = PrometheusServer(tmp, scrape_targets=[worker.url.removeprefix("http://")]).start()
        prometheus.wait_for_scrape()
        fed_from = prometheus.now()
        events = simulate.generate(seed=11, patients=50, end=NOW)
        # Spread over a few seconds so the rate panels see ingest across several scrapes.
        sent = produce_events(events, broker.bootstrap, rate=1000)
        produce_raw(POISON, broker.bootstrap)
        worker.wait_for(
            lambda s: s["ingested"] + s["duplicates"] + s["rejected"] >= sent + len(POISON),
            60,
            "every record ingested, deduplicated or dead-lettered",
        )
        prometheus.wait_for('rmm_kpi_denominator{site=""} > 0', 30)
        time.sleep(3)  # a few scrapes of the final KPI snapshot
        yield Stack(broker, worker, prometheus, fed_from)
    finally:
        if prometheus:
            prometheus.stop()
        if worker:
            worker.stop()
        broker.stop()


# --- Grafana panels against Prometheus ------------------------------------------------------------------------
def _label_values(prom: PrometheusServer, query: str, start: float) -> list[str]:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert m, f"unsupported variable query {query!r}"
    params = urllib.parse.urlencode({"match[]": m.group(1), "start": str(start)})
    body = _get_json(f"{prom.url}/api/v1/label/{m.group(2)}/values?{params}")
    assert body["status"] == "success", body
    return sorted(body["data"])


def _substitute(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in values.items():
        expr = expr.replace("${%s}" % name, value).replace("$" + name, value)
    assert "$" not in expr, f"unresolved variable in {expr!r}"
    return expr


def _variable_sets(prom: PrometheusServer, board: dict, start: float) -> list[dict[str, str]]:
    """Resolve the dashboard's variables in order (a later one may use an earlier one), as Grafana does.
    Every value of the last variable is tried, for the first value of the ones before it."""
    chosen: dict[str, str] = {}
    variables = board["templating"]["list"]
    for i, var in enumerate(variables):
        options = _label_values(prom, _substitute(var["query"]["query"], chosen), start)
        assert options, f"{board['uid']}: variable {var['name']} has no values"
        if i == len(variables) - 1:
            return [dict(chosen, **{var["name"]: o}) for o in options]
        chosen[var["name"]] = options[0]
    return [chosen]


def _run(prom: PrometheusServer, expr: str, instant: bool, start: float) -> list[dict]:
    """As Grafana asks: instant at Prometheus's now, or a range from `start` to it (both on Prometheus's clock)."""
    if instant:
        params = {"query": expr}
        path = "query"
    else:
        params = {"query": expr, "start": str(start), "end": str(prom.now()), "step": "1"}
        path = "query_range"
    body = _get_json(f"{prom.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
    assert body["status"] == "success", f"{expr!r}: {body}"
    return body["data"]["result"]


def _has_number(result: list[dict]) -> bool:
    samples = [s.get("value") for s in result] + [v for s in result for v in s.get("values", [])]
    return any(v is not None and not math.isnan(float(v[1])) for v in samples)


STALE_S = 20.0  # how long an empty answer is asked again before it counts (see _answers)


def _answers(prom: PrometheusServer, expr: str, instant: bool, start: float) -> Optional[bool]:
    """True: the query returns a number; None: empty, as the KPI rules say it must be (see below); False: empty.
    Scrapes time out at the 1 s interval when the machine is busy, and Prometheus then marks every series
    stale until the next good scrape: an empty answer is asked again for STALE_S before it counts."""
    deadline = time.monotonic() + STALE_S
    while True:
        if _has_number(_run(prom, expr, instant, start)):
            return True
        if _null_by_definition(prom, expr):
            return None
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _null_by_definition(prom: PrometheusServer, expr: str) -> bool:
    """A KPI value (and its CI) is null, so not exported, while its denominator is 0 (docs/kpi-rules.md): a value query
    without data is right only if the same selector finds the KPI's rows and every denominator is 0."""
    if not re.search(r"rmm_kpi_(value|ci_low|ci_high)\b", expr):
        return False
    rows = prom.query(re.sub(r"rmm_kpi_(value|ci_low|ci_high)\b", "rmm_kpi_denominator", expr))
    return bool(rows) and all(float(r["value"][1]) == 0 for r in rows)


@pytest.mark.parametrize("board_file", ["rmm-overview.json", "rmm-site.json", "rmm-pipeline.json"])
def test_every_panel_query_returns_data_from_a_real_prometheus(stack, board_file):
    board = committed()[board_file]
    prom = stack.prometheus
    failures, checked, answered = [], 0, 0
    for values in _variable_sets(prom, board, stack.fed_from):
        for panel in all_panels(board):
            for target in panel.get("targets", []):
                expr = _substitute(target["expr"], values)
                checked += 1
                answer = _answers(prom, expr, target.get("instant", False), stack.fed_from)
                answered += answer is True
                if answer is False:
                    failures.append(f"panel {panel['id']} {panel['title']!r} {values}: {expr}")
    assert checked >= 10 and answered >= 0.8 * checked, (checked, answered)
    assert not failures, "queries without data:\n" + "\n".join(failures)


def test_pipeline_panels_show_the_flow_that_happened(stack):
    """Not just 'some series': the ingest and dead-letter panels carry the topics and reasons of this run."""
    prom = stack.prometheus

    def topics() -> set[str]:
        ingest = _run(prom, "sum by (topic) (increase(rmm_events_ingested_total[5m]))", True, stack.fed_from)
        return {s["metric"]["topic"] for s in ingest}

    def rejected() -> float:
        reasons = _run(prom, "sum by (reason) (rmm_events_rejected_total)", True, stack.fed_from)
        return sum(float(s["value"][1]) for s in reasons)

    # asked again while a timed-out scrape has marked the series stale (as in _answers); the last answer asserted
    want = ({"rmm.site", "rmm.training", "rmm.infusion", "rmm.ae"}, len(POISON))
    deadline = time.monotonic() + STALE_S
    while (got := (topics(), rejected())) != want and time.monotonic() < deadline:
        time.sleep(0.5)
    assert got == want


# --- the built-in page in a real Chromium -----------------------------------------------------------------------
TILES_JS = (
    "return [...document.querySelectorAll('.tile')].map(t => ({kpi: t.dataset.kpi, status: t.dataset.status,"
    " text: t.querySelector('.value').textContent, colour: getComputedStyle(t).borderLeftColor,"
    " badge: getComputedStyle(t.querySelector('.status')).backgroundColor,"
    " lines: t.querySelectorAll('svg polyline').length}))"
)
STATUS_RGB = {
    "ok": "rgb(46, 125, 50)",
    "warning": "rgb(239, 108, 0)",
    "breach": "rgb(198, 40, 40)",
    "insufficient_data": "rgb(117, 117, 117)",
}


def _expected_text(value) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _wait_tiles_match(browser: Browser, api_url: str, timeout: float = 30.0) -> tuple[list, list]:
    """The page and the API both follow a live worker: poll until the tiles equal a fresh API answer."""
    deadline = time.monotonic() + timeout
    while True:
        tiles = browser.run(TILES_JS)
        rows = http_json(api_url, timeout=30)
        shown = {t["kpi"]: (t["text"], t["status"]) for t in tiles}
        wanted = {r["kpi"]: (_expected_text(r["value"]), r["status"]) for r in rows}
        if shown == wanted:
            return tiles, rows
        if time.monotonic() > deadline:
            diff = {k: (shown.get(k), wanted.get(k)) for k in set(shown) | set(wanted) if shown.get(k) != wanted.get(k)}
            raise AssertionError(f"tiles differ from {api_url} (shown, api): {json.dumps(diff)}")
        time.sleep(0.5)


def _wait_alerts_match(browser: Browser, url: str, timeout: float = 30.0) -> int:
    """The alert panel counts what /api/alerts and /api/reviews hold open, and lists the open alerts."""
    deadline = time.monotonic() + timeout
    while True:
        shown = browser.run(
            "const a = document.getElementById('alerts'); return a.hidden ? null : "
            "[a.querySelector('h2').textContent, [...a.querySelectorAll('tr.alert')]"
            ".map(r => r.dataset.alert)]"
        )
        alerts = [a for a in http_json(url + "/api/alerts", timeout=30) if a["state"] != "resolved"]
        cases = [c for c in http_json(url + "/api/reviews", timeout=30) if c["state"] != "closed"]
        wanted = [f"Open alerts: {len(alerts)} · open review cases: {len(cases)}", [a["alert_id"] for a in alerts][:12]]
        if shown == wanted:
            return len(alerts)
        if time.monotonic() > deadline:
            raise AssertionError(f"alert panel shows {shown}, the API has {wanted}")
        time.sleep(0.5)


def test_builtin_page_shows_the_api_values_in_real_chromium(stack, tmp_path):
    url = stack.worker.url
    catalog = load_catalog()
    with Browser(tmp_path) as browser:
        browser.get(url + "/")
        browser.wait_for(
            "return document.querySelectorAll('.tile[data-loaded]').length === %d" % len(catalog),
            what="every catalog tile painted from /api/kpis",
        )
        tiles, rows = _wait_tiles_match(browser, url + "/api/kpis?by=none")
        assert [t["kpi"] for t in tiles] == [k.id for kpis in by_family(catalog).values() for k in kpis], (
            "tiles follow the catalog, grouped by indicator family"
        )
        statuses = {t["status"] for t in tiles}
        assert statuses - {"insufficient_data"}, "the simulated programme gives real statuses"
        for t in tiles:
            assert t["colour"] == STATUS_RGB[t["status"]] and t["badge"] == STATUS_RGB[t["status"]], t
        trend_kpis = {r["kpi"] for r in http_json(url + "/api/trend", timeout=30) if r["value"] is not None}
        browser.wait_for("return document.querySelectorAll('svg polyline').length > 0", what="trend lines")
        tiles = browser.run(TILES_JS)
        assert {t["kpi"] for t in tiles if t["lines"]} == trend_kpis
        pipeline = browser.run("return document.getElementById('pipeline').textContent")
        assert f"ingested {stack.worker.status()['ingested']}" in pipeline
        _wait_alerts_match(browser, url)
        browser.screenshot(SCREENSHOT)

        # one product: the selector re-reads the API for that product
        product = sorted({r["product"] for r in http_json(url + "/api/kpis?by=product")})[0]
        browser.run(
            "const s = document.getElementById('product'); s.value = arguments[0];"
            " s.dispatchEvent(new Event('change'));",
            product,
        )
        _wait_tiles_match(browser, url + f"/api/kpis?by=product&product={product}")


def test_page_is_self_contained(stack):
    """No CDN or other outside address: the machines that show it are offline."""
    html = http_text(stack.worker.url + "/")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "fetch(" in html and "/api/kpis" in html
    for kpi in load_catalog():
        assert kpi.id in html
