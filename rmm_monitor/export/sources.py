"""Where the quarterly export reads from: the DuckDB file directly, or the worker's HTTP API when the worker
owns the file. Both sources answer the same questions with the same JSON-shaped values, so the export (and a
re-run of it) cannot tell them apart."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import duckdb
import pyarrow as pa

from rmm_monitor.access import audit
from rmm_monitor.alerting.titles import title_in
from rmm_monitor.core.lang import LANGS
from rmm_monitor.core.periods import Period, iso
from rmm_monitor.kpi import Kpi
from rmm_monitor.kpi.engine import UNIT_COLUMNS, Engine, adverse_outcomes, used_params

_OUTCOMES = ["success", "failure", "pending", "excluded"]
UNIT_SCHEMA = pa.schema([("kpi", pa.string()), ("period", pa.string())] + [(c, pa.string()) for c in UNIT_COLUMNS])


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{k: iso(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]


def _query(con, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return _jsonable([dict(zip(names, rec)) for rec in cur.fetchall()])


def extras(con, as_of: datetime, since: Optional[datetime] = None) -> dict:
    """Event counts per topic known at `as_of`, the alerts and review cases with every transition made at or
    before `as_of`, the signatures of their decisions made by then, and the audit log's entries logged in
    [`since`, `as_of`] (so a re-run with the same as-of sees the same audit trail)."""
    counts = dict(
        con.execute(
            "SELECT topic, count(*) FROM events WHERE known_at <= ? GROUP BY topic ORDER BY topic", [as_of]
        ).fetchall()
    )
    alerts = _query(
        con,
        """
        SELECT a.* EXCLUDE (details), a.details AS details_json, h.* EXCLUDE (alert_id), h.changed_at AS at
        FROM alerts a JOIN alert_history h USING (alert_id)
        WHERE a.fired_at <= ? AND h.changed_at <= ? ORDER BY a.alert_id, h.seq""",
        [as_of, as_of],
    )
    for a in alerts:  # the title in each language (a breach's from its figures); the figures stay out of the export
        details = a.pop("details_json")
        details = json.loads(details) if isinstance(details, str) else details
        a["titles"] = {lang: title_in({**a, "details": details}, lang) for lang in LANGS}
    cases = _query(
        con,
        """
        SELECT c.*, h.* EXCLUDE (case_id), h.changed_at AS at
        FROM review_cases c JOIN review_case_history h USING (case_id)
        WHERE c.opened_at <= ? AND h.changed_at <= ? ORDER BY c.case_id, h.seq""",
        [as_of, as_of],
    )
    signed = _query(
        con,
        """
        SELECT record_kind, split_part(record_id, '/', 1) AS record, record_id, record_hash, meaning, user_id,
               full_name, signed_at, signature_id
        FROM signatures WHERE record_kind IN ('alert', 'review_case', 'catalog_change') AND signed_at <= ?
        ORDER BY signature_id""",
        [as_of],
    )
    trail = audit.entries(con, since, as_of + timedelta(microseconds=1))
    return {"counts_by_topic": counts, "alerts": alerts, "cases": cases, "signatures": signed, "audit": trail}


@dataclass
class KpiFigures:
    """One KPI's share of the export, all as of one time."""

    rows: list[dict]  # the quarter, programme and per-site rows (`rmm kpis --by site`)
    previous: list[dict]  # the previous quarter, per product
    trend: list[dict]  # monthly rows of the trend window
    units: pa.Table  # the quarter's units (UNIT_SCHEMA), in units.parquet order


def unit_sort_key(u: dict) -> tuple:
    """units.parquet order within one KPI (the sort is stable: ties keep the engine's order)."""
    return (u["product"] or "", u["site_id"] or "", u["anchor_at"] or "", u["unit_id"] or "")


def units_table(units: list[dict]) -> pa.Table:
    """JSON-shaped unit dicts (the engine's or the worker API's) as UNIT_SCHEMA rows, in units.parquet order."""
    rows = [
        {k: (None if u.get(k) is None else str(u[k])) for k in UNIT_SCHEMA.names}
        for u in sorted(units, key=unit_sort_key)
    ]
    return pa.Table.from_pylist(rows, schema=UNIT_SCHEMA)


_WINDOW_TABLE = "export_window_units"
# Python's iso() of a UTC instant: seconds always, microseconds only when there are some
_ISO_ANCHOR = (
    "strftime(anchor_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S') || CASE WHEN "
    "strftime(anchor_at AT TIME ZONE 'UTC', '%f') = '000000' THEN '' ELSE "
    "strftime(anchor_at AT TIME ZONE 'UTC', '.%f') END || 'Z'"
)


@dataclass
class _WindowEngine(Engine):
    """The engine's own grouping, period filters and row rules, over units already held in a table. The
    export computes each KPI's units once for every period it shows (quarter, previous quarter, the months of
    the trend) instead of once per period and per question."""

    table: str = _WINDOW_TABLE
    known: tuple = ()  # products_and_sites(as_of): one answer for the whole export

    def units_sql(self, kpi: Kpi, *_) -> str:
        return f"WITH units AS (SELECT * FROM {self.table})"

    @staticmethod
    def models_of(kpi: Kpi) -> list[tuple[str, str]]:
        return []  # the units are already derived: no shared model to build for them

    def products_and_sites(self, as_of: datetime) -> tuple[list[str], list[tuple[str, str]]]:
        return self.known


class LocalSource:
    """Reads a DuckDB file that no worker holds (read-only connection)."""

    def __init__(self, con):
        self.con = con
        self.engine = Engine(con)
        self.where = "db"
        self._known: dict[datetime, tuple] = {}
        self._built: dict[tuple, str] = {}  # (shared model, as-of, window) -> its TEMP table
        # read here, on the caller's thread: `dq` runs on another one while this connection is busy
        self._timezone = con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
        self._shared_file = con.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database() AND readonly"
        ).fetchall()

    def _products_and_sites(self, as_of: datetime) -> tuple:
        if as_of not in self._known:
            self._known[as_of] = self.engine.products_and_sites(as_of)
        return self._known[as_of]

    def figures(self, kpi: Kpi, as_of: datetime, quarter: Period, previous: Period, window: Period) -> KpiFigures:
        """`window` covers the quarter, the previous quarter and the trend months; the catalog SQL prunes its
        units to it (pruning is exact for the anchors inside the bounds, KPIS engine contract)."""
        known = self._products_and_sites(as_of)
        sql = (
            self.engine.units_sql(kpi, self._models(kpi, as_of, window))
            + " SELECT * FROM units WHERE anchor_at >= $w_start AND anchor_at < $w_end"
        )
        params = {
            "as_of": as_of,
            "anchor_from": window.start,
            "anchor_to": window.end,
            "w_start": window.start,
            "w_end": window.end,
            # one set of parameters for the window: the quarter's (a dated parameter change between the previous
            # quarter and this one would show in the previous-quarter column; thresholds are per row, exact)
            **self.engine.param_values(kpi, known[0], quarter, as_of),
        }
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {_WINDOW_TABLE} AS {sql}", used_params(sql, params))
        try:
            engine = _WindowEngine(
                self.con, catalog=(kpi,), config=self.engine.config, rulebook=self.engine.rulebook, known=known
            )
            return KpiFigures(
                rows=engine.compute(as_of, quarter.label, by="site"),
                previous=engine.compute(as_of, previous.label, by="product"),
                trend=engine.trend(as_of, "all"),
                units=self._window_units(kpi, quarter),
            )
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {_WINDOW_TABLE}")

    def _models(self, kpi: Kpi, as_of: datetime, window: Period) -> dict[str, str]:
        """The shared models this KPI reads, each built once per export as a TEMP table over the window (as
        Engine.compute builds them once per snapshot): inlined, the per-AE model alone was derived anew for each
        of its three KPIs, ~2 s each at 10 M events. Every KPI of the export has the same as-of and window."""
        built = {}
        for name, sql in self.engine.buildable_models([kpi]).items():
            key = (name, as_of, window.start, window.end)
            if key not in self._built:
                self._built[key] = self.engine.build_model(
                    name, sql, {"as_of": as_of, "anchor_from": window.start, "anchor_to": window.end}
                )
            built[name] = self._built[key]
        return built

    def _window_units(self, kpi: Kpi, quarter: Period) -> pa.Table:
        """What Engine.units(outcomes=all) gives, as an Arrow table sorted like unit_sort_key (ties in the
        engine's order: adverse, pending, rest), without a Python dict per unit."""
        strings = ", ".join(c for c in UNIT_COLUMNS if c != "anchor_at")
        sql = (
            f"SELECT $kpi AS kpi, $period AS period, product, site_id, anchor_iso AS anchor_at, outcome, unit_id, "
            f"patient_ref, hcp_id, ae_id, lot_id, detail FROM ("
            f"  SELECT {strings}, {_ISO_ANCHOR} AS anchor_iso FROM {_WINDOW_TABLE}"
            f"  WHERE anchor_at >= $p_start AND anchor_at < $p_end AND outcome IN (SELECT unnest($outcomes)))"
            f" ORDER BY coalesce(product, ''), coalesce(site_id, ''), coalesce(anchor_iso, ''),"
            f" coalesce(unit_id, ''), CASE WHEN outcome IN (SELECT unnest($adverse)) THEN 0"
            f" WHEN outcome = 'pending' THEN 1 ELSE 2 END"
        )
        params = {
            "kpi": kpi.id,
            "period": quarter.label,
            "p_start": quarter.start,
            "p_end": quarter.end,
            "outcomes": _OUTCOMES,
            "adverse": list(adverse_outcomes(kpi)),
        }
        return self.con.sql(sql, params=params).to_arrow_table().cast(UNIT_SCHEMA)

    def extras(self, as_of: datetime, since: Optional[datetime] = None) -> dict:
        return extras(self.con, as_of, since)

    def dq(self, as_of: datetime, period: str) -> list[dict]:
        """Runs beside the KPI queries. In a process of its own when another process may open the file: GX holds
        the GIL for long stretches, and a thread of it slowed this process's DuckDB calls so much that the two
        together took longer than one after the other."""
        if self._shared_file:
            spawn = multiprocessing.get_context("spawn")  # not fork: this process holds DuckDB threads
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                return pool.submit(_dq_of_file, self._shared_file[0][0], self._timezone, as_of, period).result()
        con = self.con.cursor()  # in memory or opened for writing: only this process can read it
        try:
            return _dq_on(con, self._timezone, as_of, period)
        finally:
            con.close()


def _dq_of_file(path: str, timezone: str, as_of: datetime, period: str) -> list[dict]:
    # one DuckDB thread: the suites run beside the KPI queries, which keep both cores busy; a second thread here
    # only contends with them (measured at 10 M events: frames ~20 % fewer CPU-s, no slower beside the KPIs)
    con = duckdb.connect(path, read_only=True, config={"threads": 1})
    try:
        return _dq_on(con, timezone, as_of, period)
    finally:
        con.close()


def _dq_on(con, timezone: str, as_of: datetime, period: str) -> list[dict]:
    """The suites over a connection of their own, one suite's frame in memory at a time (the events frame of a
    quarter is millions of rows)."""
    from rmm_monitor.quality import suites as dq

    con.execute(f"SET TimeZone = '{timezone}'")  # a new connection starts in the default zone, not the store's
    rows: list[dict] = []
    for suite in dq.load_suites():
        rows += dq.validate(dq.build_frames(con, as_of, period, (suite,)), (suite,))
    return _jsonable(rows)


class RemoteSource:
    """Asks the worker that owns the DuckDB file (its /api endpoints); never touches the file."""

    def __init__(self, client):
        self.client = client
        self.where = client.url
        self._cache: dict[tuple, list[dict]] = {}

    def _once(self, path: str, params: dict) -> list[dict]:
        """The worker answers for every KPI at once; ask once and slice per KPI."""
        key = (path, tuple(sorted(params.items())))
        if key not in self._cache:
            self._cache[key] = self.client.get(path, params)
        return self._cache[key]

    def figures(self, kpi: Kpi, as_of: datetime, quarter: Period, previous: Period, window: Period) -> KpiFigures:
        t = iso(as_of)
        rows = self._once("/api/kpis", {"as_of": t, "period": quarter.label, "by": "site"})
        prev = self._once("/api/kpis", {"as_of": t, "period": previous.label, "by": "product"})
        trend = self._once("/api/trend", {"as_of": t, "period": "all"})
        units = self.client.get(
            "/api/units", {"as_of": t, "period": quarter.label, "kpi": kpi.id, "outcome": _OUTCOMES}
        )
        return KpiFigures(
            rows=[r for r in rows if r["kpi"] == kpi.id],
            previous=[r for r in prev if r["kpi"] == kpi.id],
            trend=[r for r in trend if r["kpi"] == kpi.id],
            units=units_table(units),
        )

    def extras(self, as_of: datetime, since: Optional[datetime] = None) -> dict:
        return self.client.get(
            "/api/export/extras", {"as_of": iso(as_of), "from": iso(since) if since is not None else None}
        )

    def dq(self, as_of: datetime, period: str) -> list[dict]:
        return self.client.get("/api/dq", {"as_of": iso(as_of), "period": period})


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
