"""KPI engine: runs each catalog SQL over the events known at the as-of time and turns units into KPI rows.

Each metrics/<kpi>.sql selects from `known_events` (the events with known_at <= $as_of), `params` (one row
per product with the KPI's parameters) and the shared models of metrics/shared/ (e.g. `first_infusion`), may
use `$as_of`, and returns one row per unit:

    product, site_id, anchor_at, outcome ('success' | 'failure' | 'pending'), unit_id,
    patient_ref, hcp_id, ae_id, lot_id, detail (a readable reason), plus any columns its stats use.

This module assigns units to periods by anchor_at, counts numerator/denominator/pending per grouping in one
query per KPI, and applies the common rules (docs/kpi-rules.md): Wilson CI, status, rounding.

`$anchor_from` / `$anchor_to` (NULL = unbounded) carry the period to the SQL so a KPI can prune units whose
anchor lies outside it before joining evidence — that keeps a quarter's refresh from redoing the whole history.
Pruning is an optimisation only: the engine filters units by period again, so a SQL that ignores the bounds
is still correct.

`events` is a view over one table per topic (store/event_store.py). DuckDB drops a topic's branch from a query
only when its filter rules the branch out on constants or on the table's min/max statistics: `event_type = 'x'`
against the branch's `event_type IN (...)` does neither, and the AE table's event_type range ('ae_awareness' ..
'tocilizumab_administered') spans nearly every type, so a read of infusions also scanned the 5.5 M AE rows (at
10 M events) to find none. A KPI SQL therefore writes the type's topic beside a non-AE type filter,
`event_type = 'infusion_administered' and topic = 'rmm.infusion'`: implied by the type (contract.TOPIC_OF_TYPE),
and the view's constant topic column drops the other branches.

`compute` and `trend` run all their KPI queries in one read transaction (one snapshot) and build each shared
model the selected KPIs use once, as a TEMP table, instead of re-deriving it inside every KPI query. A shared
model therefore may use `known_events`, `$as_of`, `$anchor_from` and `$anchor_to`, but not `params` (which differ
per KPI); one that names `params` stays an inline CTE.
"""

from __future__ import annotations

import math
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Optional

import duckdb

from rmm_monitor.core import clock
from rmm_monitor.core.errors import ConfigError
from rmm_monitor.core.periods import Period, iso, parse_period

from .catalog import SQL_STRING_OR_COMMENT, Config, Kpi, load_catalog, load_config, load_shared_models, reads_as_of
from .rulebook import RuleBook, load_rulebook
from .wilson import Z, wilson_bounds

UNIT_COLUMNS = (
    "product",
    "site_id",
    "anchor_at",
    "outcome",
    "unit_id",
    "patient_ref",
    "hcp_id",
    "ae_id",
    "lot_id",
    "detail",
)
RECHECK = "recheck_at"  # a unit's next instant after $as_of at which a comparison with $as_of turns (KpiSnapshot)
STATUS_CODES = {"ok": 0, "warning": 1, "breach": 2, "insufficient_data": -1}
BY_CHOICES = ("product", "site", "none")


def wilson(x: int, n: int, z: float = Z) -> tuple[Optional[float], Optional[float]]:
    """Wilson score interval for x successes out of n."""
    if n == 0:
        return None, None
    low, high = wilson_bounds(x / n, n, z)
    return max(0.0, low), min(1.0, high)


def status_of(
    kpi: Kpi,
    threshold: float,
    numerator: int,
    denominator: int,
    value: Optional[float],
    ci_low: Optional[float],
    ci_high: Optional[float],
) -> str:
    if kpi.zero_tolerance:
        if denominator == 0:
            return "insufficient_data"
        return "breach" if numerator < denominator else "ok"
    if denominator < kpi.min_n or value is None:
        return "insufficient_data"
    if kpi.direction == "higher_is_better":
        if value >= threshold:
            return "ok"
        return "warning" if ci_high is not None and ci_high >= threshold else "breach"
    if value <= threshold:
        return "ok"
    return "warning" if ci_low is not None and ci_low <= threshold else "breach"


def adverse_outcomes(kpi: Kpi) -> tuple[str, ...]:
    """The unit outcome that counts against a KPI: a failure where higher is better; for a lower-is-better
    rate (severe CRS) the numerator itself (the severe case)."""
    return ("failure",) if kpi.direction == "higher_is_better" else ("success",)


def _r(x: Any) -> Any:
    """4 decimals. A float DuckDB summed (a mean, a rate) can differ in its last bits with the order its threads
    added the values in; taking 12 significant digits first removes that noise, so a tie such as 0.78125 rounds
    the same way every time (and as Python rounds the exact value: 0.7812)."""
    if isinstance(x, float):
        return None if math.isnan(x) else round(float(f"{x:.12g}"), 4)
    return x


# the order units are listed in: those against the KPI first, then pending, excluded, the rest; then by anchor
_UNIT_ORDER = (
    "CASE WHEN outcome IN (SELECT unnest($adverse)) THEN 0 WHEN outcome = 'pending' THEN 1"
    " WHEN outcome = 'excluded' THEN 2 ELSE 3 END, anchor_at, unit_id"
)


def used_params(sql: str, values: dict[str, Any]) -> dict[str, Any]:
    """DuckDB refuses unused named parameters: pass only the ones the statement names (outside comments: a KPI
    whose shared model is a prebuilt table may still mention the model's parameters in its comments)."""
    code = SQL_STRING_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith("'") else "", sql)
    names = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", code))
    return {k: v for k, v in values.items() if k in names}


@dataclass(frozen=True)
class KpiSnapshot:
    """KPI rows as of an instant, and how long they hold. With no new event stored, the rows as of any instant in
    [as_of, recheck_at) are these, byte for byte: time alone changes a row only when a unit's comparison with
    $as_of turns (the units' `recheck_at`), an event recorded for later becomes known (its known_at), the rule
    book learns or starts something, or the period ends. `recheck_at` None: only a new event can change them."""

    rows: list[dict]
    as_of: datetime
    recheck_at: Optional[datetime]

    def holds_at(self, at: datetime) -> bool:
        return self.as_of <= at and (self.recheck_at is None or at < self.recheck_at)


def _earliest(*instants: Optional[datetime]) -> Optional[datetime]:
    return min((t for t in instants if t is not None), default=None)


@dataclass
class Engine:
    """Computes the catalog over one DuckDB connection holding the `events` table."""

    con: duckdb.DuckDBPyConnection
    catalog: tuple[Kpi, ...] = ()
    config: Config = Config()
    prune_anchors: bool = True  # False: the SQL sees unbounded anchors (the reference the pruning is tested against)
    rulebook: Optional[RuleBook] = None
    # the caller holds a transaction on `con` (its snapshot is read): DuckDB aborts a transaction in which BEGIN
    # is tried again, so the engine must be told rather than find out
    in_transaction: bool = False

    def __post_init__(self):
        if not self.catalog:
            self.catalog = load_catalog()
        if not self.config.data:
            self.config = load_config()
        if self.rulebook is None:
            self.rulebook = load_rulebook()

    @property
    def rules(self) -> RuleBook:
        assert self.rulebook is not None
        return self.rulebook

    # --- building blocks ---------------------------------------------------------------------------------
    def kpi(self, kpi_id: str) -> Kpi:
        for k in self.catalog:
            if k.id == kpi_id:
                return k
        raise ConfigError(f"unknown KPI {kpi_id!r}; known: {', '.join(k.id for k in self.catalog)}")

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        return self.con.execute(sql, used_params(sql, params)).fetchall()

    def products_and_sites(self, as_of: datetime) -> tuple[list[str], list[tuple[str, str]]]:
        pairs = self._fetch(
            "SELECT DISTINCT product, site_id FROM events WHERE known_at <= $as_of ORDER BY product, site_id",
            {"as_of": as_of},
        )
        return sorted({p for p, _ in pairs}), pairs

    _KNOWN = "known_events AS NOT MATERIALIZED (SELECT * FROM events WHERE known_at <= $as_of)"

    @staticmethod
    def models_of(kpi: Kpi) -> list[tuple[str, str]]:
        return [(name, sql) for name, sql in load_shared_models() if re.search(rf"\b{name}\b", kpi.sql)]

    def _relations(self, *sqls: str) -> str:
        """The catalog's relations (`rules`, `jurisdictions`) that these statements read, as CTEs."""
        code = " ".join(SQL_STRING_OR_COMMENT.sub("", sql) for sql in sqls)
        return "".join(
            f"{name} AS ({select}), "
            for name, select in self.rules.relations_sql().items()
            if re.search(rf"\b{name}\b", code)
        )

    def units_sql(self, kpi: Kpi, built: Optional[dict[str, str]] = None, known: Optional[str] = None) -> str:
        """`built`: shared model name -> the TEMP table holding it for this snapshot (see `_snapshot`).
        `known`: the CTE `known_events` (a subset of the known events, for the incremental refresh)."""
        built = built or {}
        param_cols = "".join(f", unnest($param_{name}) AS {name}" for name in kpi.params)
        models = self.models_of(kpi)
        shared = "".join(
            f"{name} AS (SELECT * FROM temp.main.{built[name]}), " if name in built else f"{name} AS ({sql}), "
            for name, sql in models
        )
        inline = [sql for name, sql in models if name not in built]
        return (
            f"WITH {known or self._KNOWN}, {self._relations(kpi.sql, *inline)}"
            f"params AS (SELECT unnest($param_products) AS product{param_cols}), "
            f"{shared}units AS ({kpi.sql})"
        )

    def buildable_models(self, kpis: Iterable[Kpi]) -> dict[str, str]:
        """The shared models these KPIs read that can be built once for all of them: those not naming `params`."""
        return {name: sql for k in kpis for name, sql in self.models_of(k) if not re.search(r"\bparams\b", sql)}

    def build_model(self, name: str, sql: str, params: dict[str, Any]) -> str:
        """A shared model as a TEMP table over the events known at $as_of; returns the table's name."""
        table = f"rmm_{name}_{uuid.uuid4().hex[:12]}"
        relations = self._relations(sql).rstrip(", ")
        build = f"CREATE TEMP TABLE {table} AS WITH {self._KNOWN}{', ' + relations if relations else ''} {sql}"
        values = {**params, **self.rules.sql_params(params["as_of"])}
        self.con.execute(build, used_params(build, values)).fetchall()
        return table

    @contextmanager
    def _snapshot(self, kpis: Iterable[Kpi], as_of: datetime, per: Period) -> Iterator[dict[str, str]]:
        """One read transaction for a batch of KPI queries, with the shared models they use built once.

        Every KPI of the batch used to re-derive e.g. `first_infusion` (two scans of the events and a window);
        a TEMP table built once costs one derivation. The transaction makes the table and the KPI queries read
        the same snapshot (the worker's writer commits between them otherwise), so a late event cannot reach
        the KPI queries without reaching the model; a caller's transaction (`in_transaction`) is used as it is."""
        own = not self.in_transaction
        if own:
            self.con.execute("BEGIN TRANSACTION").fetchall()
        built: dict[str, str] = {}
        try:
            for name, sql in self.buildable_models(kpis).items():
                built[name] = self.build_model(name, sql, {"as_of": as_of, **self.period_params(per)})
            yield built
        except BaseException:
            if own:
                self.con.execute("ROLLBACK").fetchall()  # also drops the tables built in it
            else:
                for table in built.values():
                    self.con.execute(f"DROP TABLE IF EXISTS temp.main.{table}").fetchall()
            raise
        else:
            for table in built.values():
                self.con.execute(f"DROP TABLE temp.main.{table}").fetchall()
            if own:
                self.con.execute("COMMIT").fetchall()

    @staticmethod
    def judged_at(per: Period, as_of: datetime) -> datetime:
        """The time a period's threshold and parameters are taken at: its end, or the as-of time if earlier."""
        return as_of if per.end is None else min(per.end, as_of)

    def param_values(self, kpi: Kpi, products: list[str], per: Period, as_of: datetime) -> dict[str, Any]:
        """The KPI's parameters per product (yml, config.toml, dated changes known at `as_of`) and the rule sets
        known at `as_of`, as query parameters."""
        at = self.judged_at(per, as_of)
        values: dict[str, Any] = {"param_products": products, **self.rules.sql_params(as_of)}
        for name in kpi.params:
            values[f"param_{name}"] = [
                self.rules.value(kpi.id, p, name, kpi.params_for(p, self.config)[name], at, as_of) for p in products
            ]
        return values

    def threshold(self, kpi: Kpi, product: Optional[str], at: datetime, as_of: datetime) -> float:
        """The yml's threshold or config.toml's per-product one, as changed by dated changes known at `as_of`."""
        return float(self.rules.value(kpi.id, product, "threshold", kpi.threshold_for(product, self.config), at, as_of))

    def period_params(self, period: Period) -> dict[str, Any]:
        bounds = (period.start, period.end) if self.prune_anchors else (None, None)
        return {"p_start": period.start, "p_end": period.end, "anchor_from": bounds[0], "anchor_to": bounds[1]}

    @staticmethod
    def _period_filter(period: Period) -> str:
        parts = []
        if period.start is not None:
            parts.append("anchor_at >= $p_start")
        if period.end is not None:
            parts.append("anchor_at < $p_end")
        return " AND ".join(parts) or "TRUE"

    # --- the KPI table -----------------------------------------------------------------------------------
    def compute(
        self,
        as_of: Optional[datetime] = None,
        period: Optional[str] = None,
        by: str = "product",
        product: Optional[str] = None,
        kpi_ids: Optional[Iterable[str]] = None,
    ) -> list[dict]:
        """The rows of `rmm kpis --json` (docs/kpi-rules.md): every KPI × product (× site with by='site')."""
        return self.snapshot(as_of, period, by, product, kpi_ids).rows

    def snapshot(
        self,
        as_of: Optional[datetime] = None,
        period: Optional[str] = None,
        by: str = "product",
        product: Optional[str] = None,
        kpi_ids: Optional[Iterable[str]] = None,
    ) -> KpiSnapshot:
        """`compute`'s rows and the instant until which they hold without a new event (see KpiSnapshot)."""
        if by not in BY_CHOICES:
            raise ConfigError(f"--by must be one of {BY_CHOICES}")
        as_of = as_of or clock.now()
        per = parse_period(period, as_of)
        wanted = set(kpi_ids) if kpi_ids else None
        selected = [k for k in self.catalog if wanted is None or k.id in wanted]
        rows: list[dict] = []
        recheck = self.valid_until(as_of, per)
        with self._snapshot(selected, as_of, per) as built:
            recheck = _earliest(recheck, self._next_known_at(as_of))
            products, pairs = self.products_and_sites(as_of)
            if product is not None:
                products = [p for p in products if p == product]
                pairs = [(p, s) for p, s in pairs if p == product]
            keys = self.row_keys(products, pairs, by, product)
            for kpi in selected:
                groups = self._aggregate(kpi, as_of, per, products, built)
                recheck = _earliest(recheck, (groups.get((None, None)) or {}).get(RECHECK))
                rows += [self._row(kpi, per, as_of, key, groups.get(key)) for key in keys]
        return KpiSnapshot(rows, as_of, recheck)

    @staticmethod
    def row_keys(products: list[str], pairs: list[tuple[str, str]], by: str, product: Optional[str]) -> list[tuple]:
        """The (product, site) of each row of a KPI, in the table's order: products, each followed by its sites."""
        if by == "none" and product is None:
            return [(None, None)]
        keys: list[tuple] = [(p, None) for p in products]
        if by == "site":
            keys += pairs
        return sorted(keys, key=lambda k: (k[0] or "", k[1] is not None, k[1] or ""))

    def valid_until(self, as_of: datetime, per: Period) -> Optional[datetime]:
        """When rows as of `as_of` stop holding whatever the store holds: the rule book's next change or the
        period's end (None: neither lies ahead)."""
        period_end = per.end if per.end is not None and per.end > as_of else None
        return _earliest(self.rules.next_change_after(as_of), period_end)

    def _next_known_at(self, as_of: datetime) -> Optional[datetime]:
        """When the first event stored with a later recorded_at becomes known (known_at mostly grows with the
        store's order, so the zone maps skip nearly all of it)."""
        return self._fetch("SELECT min(known_at) FROM events WHERE known_at > $as_of", {"as_of": as_of})[0][0]

    @staticmethod
    def _counted_units(kpi: Kpi, keep: Iterable[str] = ("product", "site_id")) -> str:
        """The units without the columns a count does not read. GROUPING SETS materialise their input, so
        without this every unit's readable detail (string building, and the joins that only feed it) would be
        computed just to be thrown away; the optimiser drops what no one selects."""
        used = " ".join(kpi.stats.values())
        drop = [
            c for c in UNIT_COLUMNS if c not in ("anchor_at", "outcome", *keep) and not re.search(rf"\b{c}\b", used)
        ]
        return f"SELECT * EXCLUDE ({', '.join(drop)}) FROM units" if drop else "SELECT * FROM units"

    def _aggregate(
        self,
        kpi: Kpi,
        as_of: datetime,
        per: Period,
        products: list[str],
        built: Optional[dict[str, str]] = None,
        kept: Optional[str] = None,
    ) -> dict[tuple, dict]:
        """Numerator, denominator, pending and stats per (), (product), (product, site); `kept`: a table holding
        the KPI's counted units of the period (the incremental refresh's), read instead of running its SQL."""
        stats_sql = "".join(f', {expr} AS "{name}"' for name, expr in kpi.stats.items())
        if reads_as_of(kpi.sql):
            stats_sql += f", min({RECHECK}) AS {RECHECK}"
        counted = (
            f"WITH counted AS (SELECT * FROM {kept})"
            if kept
            else self.units_sql(kpi, built) + f", counted AS ({self._counted_units(kpi)})"
        )
        sql = (
            counted + f" SELECT product, site_id, grouping(product) AS gp, grouping(site_id) AS gs, "
            f"count(*) FILTER (WHERE outcome = 'success') AS numerator, "
            f"count(*) FILTER (WHERE outcome IN ('success', 'failure')) AS denominator, "
            f"count(*) FILTER (WHERE outcome = 'pending') AS pending{stats_sql} "
            f"FROM counted WHERE {self._period_filter(per)} "
            f"GROUP BY GROUPING SETS ((), (product), (product, site_id))"
        )
        params = {"as_of": as_of, **self.period_params(per), **self.param_values(kpi, products, per, as_of)}
        cur = self.con.execute(sql, used_params(sql, params))
        names = [d[0] for d in cur.description]
        out: dict[tuple, dict] = {}
        for rec in cur.fetchall():
            r = dict(zip(names, rec))
            key = (None if r["gp"] else r["product"], None if r["gs"] else r["site_id"])
            out[key] = r
        return out

    def _row(self, kpi: Kpi, per: Period, as_of: datetime, key: tuple, agg: Optional[dict]) -> dict:
        product, site_id = key
        numerator = int(agg["numerator"]) if agg else 0
        denominator = int(agg["denominator"]) if agg else 0
        pending = int(agg["pending"]) if agg else 0
        value = numerator / denominator if denominator else None
        ci_low, ci_high = wilson(numerator, denominator)
        threshold = self.threshold(kpi, product, self.judged_at(per, as_of), as_of)
        product_row = product is not None and site_id is None
        stats = {
            name: _r(agg[name]) if agg and (product_row or name not in kpi.product_stats) else None
            for name in kpi.stats
        }
        for name, v in stats.items():
            if isinstance(v, list):
                stats[name] = sorted(x for x in v if x is not None)
        return {
            "kpi": kpi.id,
            "period": per.label,
            "product": product,
            "site_id": site_id,
            "numerator": numerator,
            "denominator": denominator,
            "value": _r(value),
            "ci_low": _r(ci_low),
            "ci_high": _r(ci_high),
            "threshold": threshold,
            "direction": kpi.direction,
            "min_n": kpi.min_n,
            "status": status_of(kpi, threshold, numerator, denominator, value, ci_low, ci_high),
            "pending": pending,
            "stats": stats,
        }

    # --- what is behind a number ---------------------------------------------------------------------------
    def _listing(
        self, kpi: Kpi, as_of: Optional[datetime], period: Optional[str], outcomes: Optional[Iterable[str]]
    ) -> tuple[Period, str, dict[str, Any]]:
        """What `units` and `top_units` share: the period, the filter of the listed units (period and outcomes;
        default: those against the KPI, pending and excluded) and the parameters both read."""
        if outcomes is None:
            outcomes = (*adverse_outcomes(kpi), "pending", "excluded")
        as_of = as_of or clock.now()
        per = parse_period(period, as_of)
        products, _ = self.products_and_sites(as_of)
        params = {
            "as_of": as_of,
            **self.period_params(per),
            "outcomes": list(outcomes),
            "adverse": list(adverse_outcomes(kpi)),
            **self.param_values(kpi, products, per, as_of),
        }
        return per, f"{self._period_filter(per)} AND outcome IN (SELECT unnest($outcomes))", params

    def units(
        self,
        kpi_id: str,
        as_of: Optional[datetime] = None,
        period: Optional[str] = None,
        product: Optional[str] = None,
        site: Optional[str] = None,
        outcomes: Optional[Iterable[str]] = None,
    ) -> list[dict]:
        """The units of one KPI in a period, with outcome and readable detail (pseudonymous ids only).
        Without `outcomes`: the units that count against the KPI (see `adverse_outcomes`), the pending ones, and
        those the rule in force leaves out (`excluded`, with the rule named in the detail)."""
        kpi = self.kpi(kpi_id)
        per, listed, params = self._listing(kpi, as_of, period, outcomes)
        sql = (
            self.units_sql(kpi) + f" SELECT {', '.join(UNIT_COLUMNS)} FROM units WHERE {listed}"
            f" AND ($product IS NULL OR product = $product) AND ($site IS NULL OR site_id = $site)"
            f" ORDER BY {_UNIT_ORDER}"
        )
        result = []
        for rec in self._fetch(sql, {**params, "product": product, "site": site}):
            row = dict(zip(UNIT_COLUMNS, rec))
            row["anchor_at"] = iso(row["anchor_at"])
            result.append({"kpi": kpi.id, "period": per.label, **row})
        return result

    def top_units(
        self,
        kpi_id: str,
        keys: Iterable[tuple[str, Optional[str]]],
        limit: int,
        as_of: Optional[datetime] = None,
        period: Optional[str] = None,
        outcomes: Optional[Iterable[str]] = None,
    ) -> dict[tuple[str, Optional[str]], list[dict]]:
        """For each (product, site or None for the whole product) of `keys`: the first `limit` units that
        `units(kpi_id, as_of, period, product, site, outcomes)` gives, in its order — from two runs of the KPI's
        SQL for all the keys, not one per key (the alerting task asked once per breach: at 10 M events, minutes
        of CPU when a first evaluation opened hundreds of alerts). First the ranks without the readable detail
        (the optimiser then builds no detail string), then the chosen units whole."""
        kpi = self.kpi(kpi_id)
        keys = sorted(set(keys), key=lambda k: (k[0], k[1] is not None, k[1] or ""))
        if not keys:
            return {}
        per, listed, params = self._listing(kpi, as_of, period, outcomes)
        params = {**params, "k_products": [k[0] for k in keys], "k_sites": [k[1] for k in keys], "limit": limit}
        ranked = self._fetch(
            self.units_sql(kpi)
            + ", wanted AS (SELECT unnest($k_products::VARCHAR[]) AS k_product, unnest($k_sites::VARCHAR[]) AS k_site),"
            f" candidates AS (SELECT product, site_id, outcome, anchor_at, unit_id FROM units WHERE {listed})"
            " SELECT w.k_product, w.k_site, u.unit_id, u.anchor_at, u.outcome, u.site_id FROM candidates u"
            " JOIN wanted w ON u.product = w.k_product AND (w.k_site IS NULL OR u.site_id = w.k_site)"
            f" QUALIFY row_number() OVER (PARTITION BY w.k_product, w.k_site ORDER BY {_UNIT_ORDER}) <= $limit"
            f" ORDER BY w.k_product, w.k_site, {_UNIT_ORDER}",
            params,
        )
        result: dict[tuple[str, Optional[str]], list[dict]] = {k: [] for k in keys}
        if not ranked:
            return result
        params["ids"] = sorted({r[2] for r in ranked})
        cols = ", ".join(UNIT_COLUMNS)
        whole: dict[tuple, dict] = {}
        for rec in self._fetch(
            self.units_sql(kpi)
            + f" SELECT {cols} FROM units WHERE {listed} AND unit_id IN (SELECT unnest($ids::VARCHAR[]))",
            params,
        ):
            row = dict(zip(UNIT_COLUMNS, rec))
            whole[(row["product"], row["site_id"], row["unit_id"], row["anchor_at"], row["outcome"])] = row
        for k_product, k_site, unit_id, anchor_at, outcome, site_id in ranked:
            row = {**whole[(k_product, site_id, unit_id, anchor_at, outcome)], "anchor_at": iso(anchor_at)}
            result[(k_product, k_site)].append({"kpi": kpi.id, "period": per.label, **row})
        return result

    # --- monthly series ----------------------------------------------------------------------------------
    def trend(
        self, as_of: Optional[datetime] = None, period: Optional[str] = None, product: Optional[str] = None
    ) -> list[dict]:
        """Monthly numerator/denominator/value per KPI and product, one query per KPI (not one per month)."""
        as_of = as_of or clock.now()
        per = parse_period(period or str(as_of.year), as_of)
        rows = []
        with self._snapshot(self.catalog, as_of, per) as built:
            products, _ = self.products_and_sites(as_of)
            if product is not None:
                products = [p for p in products if p == product]
            series = []
            for kpi in self.catalog:
                sql = (
                    self.units_sql(kpi, built) + f", counted AS ({self._counted_units(kpi, keep=('product',))})"
                    f" SELECT product, date_trunc('month', anchor_at) AS month, "
                    f"count(*) FILTER (WHERE outcome = 'success'), "
                    f"count(*) FILTER (WHERE outcome IN ('success', 'failure')), "
                    f"count(*) FILTER (WHERE outcome = 'pending') "
                    f"FROM counted WHERE {self._period_filter(per)} GROUP BY ALL ORDER BY product, month"
                )
                params = {"as_of": as_of, **self.period_params(per), **self.param_values(kpi, products, per, as_of)}
                series.append((kpi, self._fetch(sql, params)))
        for kpi, fetched in series:
            for prod, month, num, den, pend in fetched:
                if prod not in products:
                    continue
                value = num / den if den else None
                lo, hi = wilson(num, den)
                month_end = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
                threshold = self.threshold(kpi, prod, min(month_end, as_of), as_of)
                rows.append(
                    {
                        "kpi": kpi.id,
                        "product": prod,
                        "month": month.strftime("%Y-%m"),
                        "numerator": num,
                        "denominator": den,
                        "value": _r(value),
                        "ci_low": _r(lo),
                        "ci_high": _r(hi),
                        "pending": pend,
                        "threshold": threshold,
                        "status": status_of(kpi, threshold, num, den, value, lo, hi),
                    }
                )
        return rows
