"""The Grafana dashboards as code: committed JSON equals the generator's output, and the dashboards pass lint
(unique panel ids, the fixed data source everywhere, units on every panel, every expr names an exported metric).
Whether each query returns data from a real Prometheus is tests/test_dashboards_live.py."""

import json
import re

import yaml

from rmm_monitor.kpi import FAMILIES, load_catalog, load_labels
from rmm_monitor.ops import grafana as dashboards
from rmm_monitor.streams.alerting import AlertMetrics
from rmm_monitor.streams.telemetry import WorkerMetrics

from support.paths import REPO

ROOT = REPO
GRAFANA = ROOT / "dashboards" / "grafana"
# Grafana and PromQL words that look like metric names in an expr but are not.
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "increase",
    "count",
    "max",
    "min",
    "avg",
    "histogram_quantile",
    "time",
    "vector",
    "bool",
    "or",
    "and",
    "unless",
    "le",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
}


def committed() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def all_panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def exported_metric_names() -> set[str]:
    """Every sample name the worker's /metrics can expose (counters' _total, histograms' _bucket ...)."""
    metrics = WorkerMetrics()
    AlertMetrics(metrics.registry)  # the alerting part registers on the worker's registry
    metrics.kpis.rows = [
        {
            "kpi": "k",
            "product": "P",
            "site_id": None,
            "value": 0.5,
            "numerator": 1,
            "denominator": 2,
            "pending": 0,
            "threshold": 0.9,
            "ci_low": 0.1,
            "ci_high": 0.9,
            "status": "ok",
        }
    ]
    metrics.ingested.labels("rmm.site").inc()
    metrics.rejected.labels("not_json").inc()
    metrics.consumed.labels("rmm.site").inc()
    metrics.duplicates.labels("rmm.site").inc()
    metrics.lag.labels("rmm.site", "0").set(0)
    from prometheus_client.parser import text_string_to_metric_families

    served = text_string_to_metric_families(metrics.exposition().decode())  # what /metrics serves
    return {s.name for family in served for s in family.samples} | {"up"}


def test_committed_dashboards_equal_the_generated_ones():
    generated = dashboards.render()
    on_disk = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(on_disk) == set(generated), "run `make dashboards`"
    for name, text in generated.items():
        assert on_disk[name] == text, f"{name} is stale: run `make dashboards` and commit the result"


def test_every_kpi_has_a_status_coloured_stat_panel_with_its_threshold_in_its_family_row():
    overview = committed()["rmm-overview.json"]
    panels = list(all_panels(overview))
    current_row = None
    placed: dict[str, str] = {}
    for panel in panels:
        if panel["type"] == "row":
            current_row = panel["title"]
            continue
        for target in panel.get("targets", []):
            m = re.match(r'rmm_kpi_value\{kpi="([a-z_]+)"', target["expr"])
            if panel["type"] == "stat" and m:
                placed[m.group(1)] = current_row
                assert any('rmm_kpi_status{kpi="%s"' % m.group(1) in t["expr"] for t in panel["targets"])
                status_override = panel["fieldConfig"]["overrides"][0]["properties"]
                mappings = next(p["value"] for p in status_override if p["id"] == "mappings")[0]["options"]
                assert {v["text"]: v["color"] for v in mappings.values()} == {
                    "ok": "green",
                    "warning": "orange",
                    "breach": "red",
                    "insufficient data": "text",
                }
    for kpi in load_catalog():
        assert placed.get(kpi.id) == load_labels().family(kpi.family), f"{kpi.id} has no stat panel in its family's row"
        panel = next(p for p in panels if p["type"] == "stat" and f'kpi="{kpi.id}"' in p["targets"][0]["expr"])
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert kpi.threshold in [s["value"] for s in steps]
        assert f"{kpi.threshold * 100:g} %" in panel["title"]
    titles = {f: load_labels().family(f) for f in FAMILIES}
    family_rows = [p["title"] for p in panels if p["type"] == "row" and p["title"] in titles.values()]
    # a row per indicator family, in the order an effectiveness evaluation reads them
    assert family_rows == [titles[f] for f in FAMILIES if any(k.family == f for k in load_catalog())]
    assert sum(1 for p in panels if p["type"] == "timeseries" and p["title"].startswith("Trend: ")) == len(family_rows)


def test_dashboards_lint():
    boards = committed()
    assert {d["uid"] for d in boards.values()} == {"rmm-overview", "rmm-site", "rmm-pipeline"}
    site_vars = {v["name"] for v in boards["rmm-site.json"]["templating"]["list"]}
    assert site_vars == {"site", "product"}
    for name, board in boards.items():
        assert board["editable"] is False, name
        ids = [p["id"] for p in all_panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for var in board["templating"]["list"]:
            assert var["datasource"]["uid"] == dashboards.DATASOURCE_UID, (name, var["name"])
        for panel in all_panels(board):
            if panel["type"] == "row":
                continue
            where = f"{name} panel {panel['id']} {panel['title']!r}"
            assert panel["datasource"]["uid"] == dashboards.DATASOURCE_UID, where
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            assert panel["targets"], f"{where}: no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == dashboards.DATASOURCE_UID, where
                assert target["expr"].strip(), where


def test_every_expr_names_only_metrics_the_worker_exports():
    exported = exported_metric_names()
    seen = set()
    for name, board in committed().items():
        exprs = [t["expr"] for p in all_panels(board) for t in p.get("targets", [])]
        exprs += [v["query"]["query"] for v in board["templating"]["list"]]
        for expr in exprs:
            bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', " ", expr)  # drop label matchers, strings, ranges
            bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
            bare = re.sub(r"^label_values\((.*),\s*\w+\s*\)$", r"\1", bare.strip())  # its 2nd arg is a label
            for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
                if word in PROMQL_WORDS:
                    continue
                assert word in exported, f"{name}: {expr!r} names {word!r}, which the worker does not export"
                seen.add(word)
    assert {
        "rmm_kpi_value",
        "rmm_kpi_status",
        "rmm_events_ingested_total",
        "rmm_events_rejected_total",
        "rmm_consumer_lag",
        "rmm_last_batch_age_seconds",
        "rmm_kpi_refresh_duration_seconds",
        "rmm_alerts_open",
        "rmm_review_cases_open",
    } <= seen


def test_provisioning_points_at_the_fixed_datasource_and_locks_ui_edits():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = ds["datasources"]
    assert source["uid"] == dashboards.DATASOURCE_UID and source["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "rmm.yml").read_text())
    [provider] = prov["providers"]
    assert provider["allowUiUpdates"] is False and provider["disableDeletion"] is True
    assert provider["type"] == "file" and provider["options"]["path"]


def test_make_dashboards_target_runs_the_generator():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^dashboards:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "rmm_monitor.ops.grafana" in recipe.group(1)


def test_metrics_serve_the_latest_kpi_snapshot():
    """The KPI families are rendered once per refresh snapshot; a new snapshot must show at the next scrape."""
    metrics = WorkerMetrics()
    row = {
        "kpi": "k",
        "product": "P",
        "site_id": None,
        "value": 0.5,
        "numerator": 1,
        "denominator": 2,
        "pending": 0,
        "threshold": 0.9,
        "ci_low": 0.1,
        "ci_high": 0.9,
        "status": "breach",
    }
    metrics.kpis.rows = [row]
    first = metrics.exposition().decode()
    metrics.kpis.rows = [{**row, "value": 0.75, "status": "ok"}]
    second = metrics.exposition().decode()
    assert 'rmm_kpi_value{kpi="k",product="P",site=""} 0.5' in first
    assert 'rmm_kpi_status{kpi="k",product="P",site=""} 2.0' in first
    assert 'rmm_kpi_value{kpi="k",product="P",site=""} 0.75' in second
    assert 'rmm_kpi_status{kpi="k",product="P",site=""} 0.0' in second
