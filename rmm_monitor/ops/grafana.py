"""Grafana dashboards as code, generated from the KPI catalog (metrics/*.yml) and the worker's metric names.

`python -m rmm_monitor.ops.grafana [--out DIR]` (or `make dashboards`) writes dashboards/grafana/dashboards/*.json;
a test regenerates them and fails if the committed files differ, so a new KPI gets its panels without hand-editing
JSON. Plain dicts rather than a builder library: Grafana's JSON model is the contract, and keeping it visible
makes the lint and the real-Prometheus check in tests/ read the same structure Grafana imports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, Optional

from rmm_monitor.kpi import Kpi, by_family, load_catalog, load_labels

# Fixed, so provisioned dashboards keep working whatever Grafana instance loads them.
DATASOURCE_UID = "rmm-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
# The scrape job name used by the compose Prometheus config and the test Prometheus alike.
WORKER_JOB = "rmm-worker"
SCHEMA_VERSION = 38  # Grafana 10.x
STATUS_COLOURS = (
    ("-1", "insufficient data", "text"),
    ("0", "ok", "green"),
    ("1", "warning", "orange"),
    ("2", "breach", "red"),
)
SUMMARY_TITLES = {"-1": "KPIs with insufficient data", "0": "KPIs ok", "1": "KPIs in warning", "2": "KPIs in breach"}
GRID_WIDTH = 24


class _Layout:
    """Hands out panel ids and grid positions row by row, so ids stay unique and stable between runs."""

    def __init__(self):
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def place(self, panel: dict, w: int, h: int) -> dict:
        if self.x + w > GRID_WIDTH:
            self.newline()
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return panel

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0

    def row(self, title: str) -> dict:
        self.newline()
        panel = self.place({"type": "row", "title": title, "collapsed": False, "panels": []}, GRID_WIDTH, 1)
        self.newline()
        return panel


def _target(expr: str, ref: str = "A", legend: str = "__auto", instant: bool = False, fmt: str = "time_series"):
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "instant": instant,
        "range": not instant,
        "format": fmt,
    }


def _status_mappings() -> list[dict]:
    return [
        {
            "type": "value",
            "options": {
                code: {"text": text, "color": colour, "index": i}
                for i, (code, text, colour) in enumerate(STATUS_COLOURS)
            },
        }
    ]


def _two_states(off: str, on: str) -> list[dict]:
    """A 0/1 gauge as words: 0 red, 1 green."""
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": off, "color": "red", "index": 0},
                "1": {"text": on, "color": "green", "index": 1},
            },
        }
    ]


def _kpi_steps(kpi: Kpi) -> list[dict]:
    """Red/green around the catalog threshold, in the KPI's direction."""
    if kpi.direction == "higher_is_better":
        return [{"color": "red", "value": None}, {"color": "green", "value": kpi.threshold}]
    return [{"color": "green", "value": None}, {"color": "red", "value": kpi.threshold}]


def _threshold_text(kpi: Kpi) -> str:
    sign = "≥" if kpi.direction == "higher_is_better" else "≤"
    return f"{sign} {kpi.threshold * 100:g} %"


def _stat(
    title: str,
    targets: list[dict],
    unit: str,
    description: str = "",
    steps: Optional[list] = None,
    mappings: Optional[list] = None,
    overrides: Optional[list] = None,
    decimals: Optional[int] = None,
    text_mode: str = "value_and_name",
) -> dict:
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "mappings": mappings or [],
        "thresholds": {"mode": "absolute", "steps": steps or [{"color": "blue", "value": None}]},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
            "wideLayout": True,
        },
    }


def _timeseries(
    title: str, targets: list[dict], unit: str, description: str = "", overrides=None, minmax: Optional[tuple] = None
) -> dict:
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 0, "showPoints": "never", "spanNulls": True},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
    }
    if minmax:
        defaults["min"], defaults["max"] = minmax
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def _dashed(ref: str) -> dict:
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 1},
        ],
    }


def _variable(name: str, label: str, query: str, multi: bool = False) -> dict:
    var: dict = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "hide": 0,
        "current": {},
        "options": [],
        "regex": "",
    }
    if multi:
        var["allValue"] = ".*"
    return var


def _dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict],
    variables: Iterable[dict] = (),
    refresh: str = "30s",
    time_from: str = "now-7d",
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["rmm", "car-t", "pharmacovigilance"],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timezone": "utc",
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["rmm"], "asDropdown": True, "title": "RMM dashboards"}],
        "panels": panels,
    }


# --- RMM programme overview -----------------------------------------------------------------------------------
def _kpi_stat(kpi: Kpi) -> dict:
    sel = f'kpi="{kpi.id}", site="", product=~"$product"'
    value = _target(f"rmm_kpi_value{{{sel}}}", "A", "{{product}}", instant=True)
    status = _target(f"rmm_kpi_status{{{sel}}}", "B", "{{product}} status", instant=True)
    status_override = {
        "matcher": {"id": "byFrameRefID", "options": "B"},
        "properties": [
            {"id": "unit", "value": "none"},
            {"id": "decimals", "value": 0},
            {"id": "mappings", "value": _status_mappings()},
        ],
    }
    return _stat(
        f"{kpi.title} ({_threshold_text(kpi)})",
        [value, status],
        "percentunit",
        description=f"{kpi.description} Threshold {_threshold_text(kpi)}, minimum n {kpi.min_n}. KPI id: {kpi.id}.",
        steps=_kpi_steps(kpi),
        overrides=[status_override],
        decimals=1,
    )


def _summary_panels(layout: _Layout) -> list[dict]:
    panels = [layout.row("Status across the programme")]
    for code, text, colour in reversed(STATUS_COLOURS):
        panels.append(
            layout.place(
                _stat(
                    SUMMARY_TITLES[code],
                    [
                        _target(
                            f'sum(rmm_kpi_status{{site="", product=~"$product"}} == bool {code})',
                            legend=text,
                            instant=True,
                        )
                    ],
                    "none",
                    description=f"Number of KPI × product rows whose status is {text} (current quarter).",
                    steps=[{"color": colour, "value": None}],
                    text_mode="value",
                ),
                6,
                4,
            )
        )
    panels.append(
        layout.place(
            _stat(
                "Sites with a KPI in breach",
                [
                    _target(
                        'count(count by (product, site) (rmm_kpi_status{site!="", '
                        'product=~"$product"} == 2)) or vector(0)',
                        instant=True,
                    )
                ],
                "none",
                description="Treatment centres with at least one KPI in breach.",
                steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(
        layout.place(
            _stat(
                "Units pending",
                [_target('sum(rmm_kpi_pending{site="", product=~"$product"})', instant=True)],
                "none",
                description="Units whose window is still open (left out of numerator and denominator).",
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(
        layout.place(
            _stat(
                "Events stored",
                [_target("sum(rmm_store_events)", instant=True)],
                "short",
                description="Events in the DuckDB store of the worker.",
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(
        layout.place(
            _stat(
                "Last KPI refresh",
                [_target("time() - max(rmm_kpi_refresh_timestamp_seconds)", instant=True)],
                "s",
                description="Seconds since the worker last recomputed the catalog.",
                steps=[{"color": "green", "value": None}, {"color": "red", "value": 300}],
                text_mode="value",
            ),
            6,
            4,
        )
    )
    return panels


def _alert_panels(layout: _Layout) -> list[dict]:
    """Alerts to the QPPV and the educational-material review cases they open (streams/alerting.py)."""
    return [
        layout.row("Alerts to the QPPV and review cases"),
        layout.place(
            _stat(
                "Open alerts",
                [_target("sum(rmm_alerts_open)", instant=True)],
                "none",
                description="Alerts fired and not yet resolved (firing or acknowledged).",
                steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                text_mode="value",
            ),
            6,
            6,
        ),
        layout.place(
            _stat(
                "Open review cases",
                [_target("sum(rmm_review_cases_open)", instant=True)],
                "none",
                description="Reviews of educational-material sections not yet closed.",
                steps=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
                text_mode="value",
            ),
            6,
            6,
        ),
        layout.place(
            _timeseries(
                "Open alerts by signal", [_target("sum by (signal) (rmm_alerts_open)", "A", "{{signal}}")], "none"
            ),
            6,
            6,
        ),
        layout.place(
            _timeseries(
                "Alerts fired by signal (per hour)",
                [_target("sum by (signal) (increase(rmm_alerts_fired_total[1h]))", "A", "{{signal}}")],
                "none",
            ),
            6,
            6,
        ),
    ]


def overview(catalog: tuple[Kpi, ...]) -> dict:
    layout = _Layout()
    panels = _summary_panels(layout) + _alert_panels(layout)
    for family, kpis in by_family(catalog).items():
        panels.append(layout.row(load_labels().family(family)))
        for kpi in kpis:
            panels.append(layout.place(_kpi_stat(kpi), 6, 6))
        ids = "|".join(k.id for k in kpis)
        sel = f'kpi=~"{ids}", site="", product=~"$product"'
        panels.append(
            layout.place(
                _timeseries(
                    f"Trend: {family}",
                    [
                        _target(f"rmm_kpi_value{{{sel}}}", "A", "{{kpi}} {{product}}"),
                        _target(f"rmm_kpi_threshold{{{sel}}}", "B", "{{kpi}} threshold"),
                    ],
                    "percentunit",
                    description="KPI value for the current quarter as it evolved; dashed: threshold.",
                    overrides=[_dashed("B")],
                    minmax=(0, 1),
                ),
                GRID_WIDTH - layout.x if layout.x <= 12 else GRID_WIDTH,
                6,
            )
        )
    return _dashboard(
        "rmm-overview",
        "RMM programme overview",
        "Effectiveness of the additional risk minimisation measures: a row per indicator family (reach, "
        "knowledge, behaviour, outcome), generated from the KPI catalog.",
        panels,
        [_variable("product", "Product", "label_values(rmm_kpi_value, product)", multi=True)],
    )


# --- Site drill-down ----------------------------------------------------------------------------------------------
SITE_SEL = 'product="$product", site="$site"'


def site_drilldown(catalog: tuple[Kpi, ...]) -> dict:
    layout = _Layout()
    fields = (
        ("rmm_kpi_status", "status"),
        ("rmm_kpi_value", "value"),
        ("rmm_kpi_ci_low", "CI low"),
        ("rmm_kpi_ci_high", "CI high"),
        ("rmm_kpi_threshold", "threshold"),
        ("rmm_kpi_numerator", "numerator"),
        ("rmm_kpi_denominator", "denominator"),
        ("rmm_kpi_pending", "pending"),
    )
    refs = "ABCDEFGH"
    table_targets = [
        _target(f"{metric}{{{SITE_SEL}}}", refs[i], name, instant=True, fmt="table")
        for i, (metric, name) in enumerate(fields)
    ]
    percent = {
        "matcher": {"id": "byRegexp", "options": "Value #[B-E]"},
        "properties": [{"id": "unit", "value": "percentunit"}, {"id": "decimals", "value": 1}],
    }
    status = {
        "matcher": {"id": "byName", "options": "Value #A"},
        "properties": [
            {"id": "mappings", "value": _status_mappings()},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        ],
    }
    table = {
        "type": "table",
        "title": "KPIs at $site ($product)",
        "datasource": DATASOURCE,
        "description": "Every catalog KPI for the selected centre, current quarter.",
        "targets": table_targets,
        "fieldConfig": {
            "defaults": {
                "unit": "none",
                "custom": {"align": "auto"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
            },
            "overrides": [percent, status],
        },
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time": True,
                        "__name__": True,
                        "product": True,
                        "site": True,
                        "instance": True,
                        "job": True,
                    },
                    "renameByName": {f"Value #{refs[i]}": name for i, (_, name) in enumerate(fields)},
                },
            },
        ],
        "options": {"showHeader": True, "footer": {"show": False}},
    }
    panels = [
        layout.row("Centre $site"),
        layout.place(
            _stat(
                "KPIs in breach at $site",
                [_target(f"sum(rmm_kpi_status{{{SITE_SEL}}} == bool 2)", instant=True)],
                "none",
                steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                text_mode="value",
            ),
            6,
            4,
        ),
        layout.place(
            _stat(
                "KPIs in warning at $site",
                [_target(f"sum(rmm_kpi_status{{{SITE_SEL}}} == bool 1)", instant=True)],
                "none",
                steps=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
                text_mode="value",
            ),
            6,
            4,
        ),
        layout.place(
            _stat(
                "Units counted at $site",
                [_target(f"sum(rmm_kpi_denominator{{{SITE_SEL}}})", instant=True)],
                "none",
                text_mode="value",
            ),
            6,
            4,
        ),
        layout.place(
            _stat(
                "Units pending at $site",
                [_target(f"sum(rmm_kpi_pending{{{SITE_SEL}}})", instant=True)],
                "none",
                text_mode="value",
            ),
            6,
            4,
        ),
        layout.place(table, GRID_WIDTH, 12),
    ]
    panels.append(
        layout.place(
            {
                "type": "bargauge",
                "title": "KPI value at $site vs programme",
                "datasource": DATASOURCE,
                "description": "Site value per KPI; the programme-wide value of the product is in the trend below.",
                "targets": [_target(f"rmm_kpi_value{{{SITE_SEL}}}", "A", "{{kpi}}", instant=True)],
                "fieldConfig": {
                    "defaults": {
                        "unit": "percentunit",
                        "min": 0,
                        "max": 1,
                        "decimals": 1,
                        "color": {"mode": "continuous-RdYlGr"},
                        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
                    },
                    "overrides": [],
                },
                "options": {
                    "orientation": "horizontal",
                    "displayMode": "gradient",
                    "showUnfilled": True,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                },
            },
            12,
            12,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "KPI trend at $site",
                [_target(f"rmm_kpi_value{{{SITE_SEL}}}", "A", "{{kpi}}")],
                "percentunit",
                description="Site value of each KPI over time.",
                minmax=(0, 1),
            ),
            12,
            12,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Site vs programme: status",
                [
                    _target(f"rmm_kpi_status{{{SITE_SEL}}}", "A", "{{kpi}} at $site"),
                    _target('rmm_kpi_status{product="$product", site=""}', "B", "{{kpi}} programme"),
                ],
                "none",
                description="Status codes: 0 ok, 1 warning, 2 breach, -1 insufficient data.",
                overrides=[_dashed("B")],
            ),
            GRID_WIDTH,
            8,
        )
    )
    variables = [
        _variable("product", "Product", "label_values(rmm_kpi_value, product)"),
        _variable("site", "Site", 'label_values(rmm_kpi_value{product="$product", site!=""}, site)'),
    ]
    return _dashboard(
        "rmm-site",
        "RMM site drill-down",
        "One treatment centre: every KPI with its numerator, denominator, CI and status.",
        panels,
        variables,
    )


# --- Pipeline health ----------------------------------------------------------------------------------------------
def pipeline_health(catalog: tuple[Kpi, ...]) -> dict:
    layout = _Layout()
    rate = "$__rate_interval"
    panels = [layout.row("Worker")]
    panels.append(
        layout.place(
            _stat(
                "Worker scraped",
                [_target(f'up{{job="{WORKER_JOB}"}}', instant=True, legend="{{instance}}")],
                "none",
                mappings=_two_states("down", "up"),
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(
        layout.place(
            _stat(
                "Broker reachable",
                [_target("max(rmm_broker_up)", instant=True)],
                "none",
                mappings=_two_states("no", "yes"),
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(
        layout.place(
            _stat(
                "Last batch age",
                [_target("max(rmm_last_batch_age_seconds)", instant=True)],
                "s",
                steps=[
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 120},
                    {"color": "red", "value": 300},
                ],
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(
        layout.place(
            _stat(
                "Consumer lag (records)",
                [_target("sum(rmm_consumer_lag)", instant=True)],
                "short",
                steps=[{"color": "green", "value": None}, {"color": "orange", "value": 10000}],
                text_mode="value",
            ),
            6,
            4,
        )
    )
    panels.append(layout.row("Flow"))
    panels.append(
        layout.place(
            _timeseries(
                "Ingest rate per topic",
                [
                    _target(f"sum by (topic) (rate(rmm_events_ingested_total[{rate}]))", "A", "stored {{topic}}"),
                    _target(f"sum by (topic) (rate(rmm_events_consumed_total[{rate}]))", "B", "consumed {{topic}}"),
                ],
                "suffix: ev/s",
                description="Events stored (first copy) and records fetched, per input topic.",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Dead-letter rate by reason",
                [_target(f"sum by (reason) (rate(rmm_events_rejected_total[{rate}]))", "A", "{{reason}}")],
                "suffix: ev/s",
                description="Events refused and sent to rmm.deadletter, by reason code.",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Duplicates and errors",
                [
                    _target(f"sum by (topic) (rate(rmm_events_duplicate_total[{rate}]))", "A", "duplicates {{topic}}"),
                    _target(f"rate(rmm_store_write_errors_total[{rate}])", "B", "store write errors"),
                    _target(f"rate(rmm_commit_errors_total[{rate}])", "C", "offset commit errors"),
                ],
                "suffix: ev/s",
                description="Duplicates are expected (at-least-once); errors are retried.",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Consumer lag",
                [_target("sum by (topic, partition) (rmm_consumer_lag)", "A", "{{topic}}/{{partition}}")],
                "short",
                description="Records behind the high watermark, per topic partition.",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Alert deliveries by channel",
                [
                    _target(
                        f"sum by (channel, result) (rate(rmm_alert_deliveries_total[{rate}]))",
                        "A",
                        "{{channel}} {{result}}",
                    ),
                    _target("sum by (channel) (rmm_alert_delivery_pending)", "B", "{{channel}} pending"),
                ],
                "short",
                description="Delivery attempts to the QPPV's channels per second (A) and notifications still "
                "being retried (B).",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Alert evaluation errors",
                [_target(f"rate(rmm_alert_evaluation_errors_total[{rate}])", "A", "errors")],
                "suffix: err/s",
            ),
            12,
            8,
        )
    )
    panels.append(layout.row("Latency"))
    panels.append(
        layout.place(
            _timeseries(
                "Last batch age",
                [_target("max(rmm_last_batch_age_seconds)", "A", "age")],
                "s",
                description="Seconds since the last committed batch (grows while no events arrive).",
            ),
            8,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "KPI refresh duration",
                [_target("max(rmm_kpi_refresh_duration_seconds)", "A", "refresh")],
                "s",
                description=f"Time to recompute the {len(catalog)} catalog KPIs per site.",
            ),
            8,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Batch duration (p50, p95)",
                [
                    _target(
                        f"histogram_quantile(0.5, sum by (le) (rate(rmm_batch_duration_seconds_bucket[{rate}])))",
                        "A",
                        "p50",
                    ),
                    _target(
                        f"histogram_quantile(0.95, sum by (le) (rate(rmm_batch_duration_seconds_bucket[{rate}])))",
                        "B",
                        "p95",
                    ),
                ],
                "s",
                description="Validate + store + dead-letter + commit, per batch.",
            ),
            8,
            8,
        )
    )
    panels.append(
        layout.place(
            _timeseries("Events in the store", [_target("max(rmm_store_events)", "A", "events")], "short"), 12, 8
        )
    )
    panels.append(
        layout.place(
            _timeseries(
                "Batches committed per second",
                [_target(f"rate(rmm_batches_total[{rate}])", "A", "batches")],
                "suffix: batch/s",
            ),
            12,
            8,
        )
    )
    return _dashboard(
        "rmm-pipeline",
        "RMM pipeline health",
        "Ingest, dead letters, lag and latency of the worker.",
        panels,
        refresh="10s",
        time_from="now-1h",
    )


# --- files ------------------------------------------------------------------------------------------------------
BUILDERS = {"rmm-overview.json": overview, "rmm-site.json": site_drilldown, "rmm-pipeline.json": pipeline_health}


def render(catalog: Optional[tuple[Kpi, ...]] = None) -> dict[str, str]:
    """File name → JSON text of every dashboard (stable key order, trailing newline)."""
    catalog = catalog or load_catalog()
    return {name: json.dumps(build(catalog), indent=2, ensure_ascii=False) + "\n" for name, build in BUILDERS.items()}


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the Grafana dashboards from the KPI catalog.")
    parser.add_argument("--out", default="dashboards/grafana/dashboards", help="folder for the dashboard JSON files")
    args = parser.parse_args(argv)
    for path in write(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
