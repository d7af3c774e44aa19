"""`rmm export --quarter 2026Q3 --out DIR`: the quarterly effectiveness evaluation.

Gathers everything once (KPI rows per product and site, previous quarter, units, monthly trend, event counts,
alerts and review cases, data-quality results), all as of one time T, then writes the files from that
snapshot. Same data and same T give the same bytes: no wall-clock time is written anywhere (T stands in for
it), rows are sorted, JSON keys are sorted, and the xlsx/pdf carry T as their creation date.

At 10 M events the work is the KPI queries, the data-quality suites and the charts, so: each KPI's units are
derived once for every period shown (`LocalSource.figures`); the suites run beside the KPI queries (their own
process when the file allows it; DuckDB computes their per-row facts and GX checks narrow frames, quality/suites.py);
the charts (one point per site, not a bar and a label each) are drawn in worker processes, each KPI's from the
moment its figures are in; the tables are written meanwhile (units.parquet on a thread: Arrow releases the GIL).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from rmm_monitor import __version__
from rmm_monitor.core.errors import ConfigError
from rmm_monitor.core.periods import Period, iso, parse_period, previous_quarter
from rmm_monitor.kpi import FAMILIES, Kpi, catalog_hash, load_catalog

from .sources import UNIT_SCHEMA, canonical_json

KPI_COLUMNS = (
    "kpi",
    "period",
    "product",
    "site_id",
    "numerator",
    "denominator",
    "value",
    "ci_low",
    "ci_high",
    "threshold",
    "direction",
    "min_n",
    "status",
    "pending",
    "stats",
)
FILES = ("kpis.xlsx", "kpis.csv", "kpis.parquet", "units.parquet", "report.html", "report.pdf")


@dataclass
class Snapshot:
    """Everything the export shows, as of one time."""

    quarter: Period
    as_of: datetime
    catalog: tuple[Kpi, ...]
    rows: list[dict]  # this quarter, programme (site_id null) and per-site rows
    previous: list[dict]  # previous quarter, per product
    units: pa.Table  # UNIT_SCHEMA, sorted by kpi, product, site, anchor, unit
    trend: list[dict]  # monthly, the 12 months up to the quarter's end
    counts_by_topic: dict[str, int]
    alerts: list[dict]
    cases: list[dict]
    dq: list[dict]
    source: str
    signatures: list[dict] = field(default_factory=list)  # of alert and review decisions, made by the as-of time
    audit: list[dict] = field(default_factory=list)  # audit log entries logged in the quarter, up to the as-of time
    signing: Optional[dict] = None  # who signs this export, with what meaning, when (rmm export --sign)
    langs: tuple[str, ...] = ("en",)  # the language(s) of the report and the xlsx, the leading one first

    def programme_rows(self) -> list[dict]:
        """The rows of all sites (KPI x product), family by family as an evaluation reads them (reach,
        knowledge, behaviour, outcome), catalog order within a family."""
        rank = {k.id: FAMILIES.index(k.family) for k in self.catalog}
        return sorted((r for r in self.rows if r["site_id"] is None), key=lambda r: rank[r["kpi"]])

    def previous_value(self, kpi: str, product: str) -> Optional[float]:
        for r in self.previous:
            if r["kpi"] == kpi and r["product"] == product and r["site_id"] is None:
                return r["value"]
        return None


class Progress:
    """One line per step on stderr, with elapsed seconds, so a long export shows where it is."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.stream.write(f"[export {time.perf_counter() - self.t0:6.1f}s] {message}\n")
            self.stream.flush()


def trend_months(per: Period) -> Period:
    """The calendar months the report's trend shows: those of the 365 days up to the quarter's end."""
    _, end = per.span()
    first = end - timedelta(days=365)
    return Period("trend", datetime(first.year, first.month, 1, tzinfo=timezone.utc), end)


def gather(
    source,
    quarter: str,
    as_of: datetime,
    progress: Callable[[str], None],
    on_kpis: Optional[Callable[[Snapshot], None]] = None,
    on_figures: Optional[Callable[[Kpi, Period, list[dict], list[dict]], None]] = None,
) -> Snapshot:
    """`on_figures(kpi, quarter, trend, rows)` gets each KPI's trend months and rows of the quarter as soon as
    they are in (before the next KPI's queries); `on_kpis` gets the snapshot as soon as all KPI figures are in,
    before the data-quality suites (still running beside them) are; their rows are filled in after."""
    per = parse_period(quarter, as_of)
    if per.start is None or not per.label[4:5] == "Q":
        raise ConfigError(f"--quarter wants a quarter like 2026Q3, not {quarter!r}")
    catalog = load_catalog()
    prev = parse_period(previous_quarter(per.label), as_of)
    months = trend_months(per)
    (months_start, _), (prev_start, _), (_, end) = months.span(), prev.span(), per.span()
    window = Period("export", min(months_start, prev_start), end)
    first_month, last_month = months_start.strftime("%Y-%m"), (end - timedelta(days=1)).strftime("%Y-%m")
    rows: list[dict] = []
    previous: list[dict] = []
    trend: list[dict] = []
    units: dict[str, pa.Table] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="export-dq") as pool:
        progress("data-quality suites (Great Expectations), beside the KPI queries")
        dq_job = pool.submit(source.dq, as_of, per.label)
        progress(f"KPIs of {per.label} as of {iso(as_of)} from {source.where}")
        for i, kpi in enumerate(catalog, 1):
            got = source.figures(kpi, as_of, per, prev, window)
            kpi_trend = [r for r in got.trend if first_month <= r["month"] <= last_month]
            rows += got.rows
            previous += got.previous
            trend += kpi_trend
            units[kpi.id] = got.units
            if on_figures is not None:
                on_figures(kpi, per, kpi_trend, got.rows)
            progress(f"units {i}/{len(catalog)}: {kpi.id} ({got.units.num_rows})")
        progress("event counts, alerts and review cases")
        extras = source.extras(as_of, per.start)
        snap = Snapshot(
            quarter=per,
            as_of=as_of,
            catalog=catalog,
            rows=rows,
            previous=previous,
            units=pa.concat_tables([units[k] for k in sorted(units)]) if units else UNIT_SCHEMA.empty_table(),
            trend=trend,
            counts_by_topic=dict(sorted(extras["counts_by_topic"].items())),
            alerts=extras["alerts"],
            cases=extras["cases"],
            dq=[],
            source=source.where,
            signatures=extras.get("signatures", []),
            audit=extras.get("audit", []),
        )
        if on_kpis is not None:
            on_kpis(snap)
        progress("waiting for the data-quality suites")
        snap.dq = dq_job.result()
    for r in snap.dq:
        r["run_at"] = iso(as_of)  # the run is "as of T"; wall-clock time would break re-run identity
    return snap


# --- tabular files -------------------------------------------------------------------------------------------
def _flat(row: dict) -> dict:
    return {**{k: row.get(k) for k in KPI_COLUMNS}, "stats": canonical_json(row.get("stats") or {})}


def write_csv(snap: Snapshot, path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=KPI_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in snap.rows:
        w.writerow({k: "" if v is None else v for k, v in _flat(r).items()})
    path.write_text(buf.getvalue(), encoding="utf-8")


_KPI_SCHEMA = pa.schema(
    [
        ("kpi", pa.string()),
        ("period", pa.string()),
        ("product", pa.string()),
        ("site_id", pa.string()),
        ("numerator", pa.int64()),
        ("denominator", pa.int64()),
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("threshold", pa.float64()),
        ("direction", pa.string()),
        ("min_n", pa.int64()),
        ("status", pa.string()),
        ("pending", pa.int64()),
        ("stats", pa.string()),
    ]
)


_ROW_GROUP = 1024 * 1024  # pyarrow's default


def _write_parquet(table: pa.Table, path: Path) -> None:
    """No pandas metadata, fixed writer options: the bytes depend on the rows only. Written one row group at a
    time, each made contiguous (chunk boundaries could move page boundaries): the same bytes as one
    pq.write_table of the whole table, without a second in-memory copy of millions of units."""
    with pq.ParquetWriter(path, table.schema, compression="zstd", write_statistics=True, store_schema=False) as writer:
        for start in range(0, max(table.num_rows, 1), _ROW_GROUP):
            writer.write_table(table.slice(start, _ROW_GROUP).combine_chunks())


def write_parquets(snap: Snapshot, out: Path) -> None:
    _write_parquet(pa.Table.from_pylist([_flat(r) for r in snap.rows], schema=_KPI_SCHEMA), out / "kpis.parquet")
    _write_parquet(snap.units.cast(UNIT_SCHEMA), out / "units.parquet")


# --- manifest ------------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(snap: Snapshot, out: Path) -> dict:
    from rmm_monitor.quality.suites import load_suites

    dq_failed = [f"{r['suite']}.{r['expectation']}" for r in snap.dq if not r["success"]]
    manifest = {
        "quarter": snap.quarter.label,
        "as_of": iso(snap.as_of),
        "languages": list(snap.langs),  # of report.html/pdf and kpis.xlsx, the leading one first
        "software": {"name": "rmm-monitor", "version": __version__},
        "catalog": {"hash": catalog_hash(as_of=snap.as_of), "kpis": [k.id for k in snap.catalog]},
        "expectation_suites": {s.name: s.version for s in load_suites()},
        "event_counts_by_topic": snap.counts_by_topic,
        "events_total": sum(snap.counts_by_topic.values()),
        "kpi_rows": len(snap.rows),
        "units": snap.units.num_rows,
        "data_quality": {
            "expectations": len(snap.dq),
            "failed": sorted(dq_failed),
            "critical_failed": sorted(
                f"{r['suite']}.{r['expectation']}" for r in snap.dq if not r["success"] and r["critical"]
            ),
        },
        "files": {name: {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size} for name in FILES},
    }
    if snap.signing is not None:  # who signs it; the signature itself (over this file) is in signature.json
        manifest["signing"] = snap.signing
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def export(
    source,
    quarter: str,
    out_dir: Path,
    as_of: datetime,
    progress: Callable[[str], None],
    signing: Optional[dict] = None,
    langs: tuple[str, ...] = ("en",),
) -> dict:
    """Every file of the evaluation and the manifest (returned). With `signing` ({user_id, full_name, meaning,
    signed_at}) the report and the manifest name the signer; the signature over the manifest is made after.
    `langs`: the language(s) of the report and the xlsx (core.lang.parse_langs), the leading one first."""
    from .fonts import cjk_font
    from .report import Charts, write_reports
    from .xlsx import write_xlsx

    langs = tuple(langs)
    if "zh" in langs:
        cjk_font()  # a missing font stops the export before the work, not after it
    out_dir.mkdir(parents=True, exist_ok=True)
    # each KPI's chart is drawn (in a worker process) while the next KPI's queries run; closed whatever happens
    charts = Charts(langs=langs)
    # units.parquet (millions of units) is encoded and compressed by Arrow, which lets go of the GIL: on a thread
    # of its own it overlaps the xlsx and the report, which are Python work
    tables = ThreadPoolExecutor(1, thread_name_prefix="export-parquet")
    written = []

    def without_dq(snap: Snapshot) -> None:
        """What needs no data-quality result, done while the suites finish."""
        progress("status overview chart (each KPI's chart is drawn as its figures come in)")
        charts.add_overview(snap)
        progress("kpis.csv; kpis.parquet and units.parquet (on a thread)")
        write_csv(snap, out_dir / "kpis.csv")
        written.append(tables.submit(write_parquets, snap, out_dir))

    try:
        snap = gather(source, quarter, as_of, progress, on_kpis=without_dq, on_figures=charts.add)
        snap.signing = signing
        snap.langs = langs
        progress("kpis.xlsx")
        write_xlsx(snap, out_dir / "kpis.xlsx")
        progress("report.html, report.pdf")
        write_reports(snap, out_dir, progress, charts)
        for w in written:
            if not w.done():
                progress("waiting for units.parquet")
            w.result()
    finally:
        charts.close()
        tables.shutdown(wait=True)
    manifest = write_manifest(snap, out_dir)
    progress(f"done: {out_dir}")
    return manifest
