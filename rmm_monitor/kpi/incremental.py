"""The worker's KPI refresh in proportion to what changed: each KPI's units of the judged period are kept, and a
refresh recomputes only the units that new events, or time, can have changed.

Nothing here restates a KPI. The units come from the catalog SQL itself, run over a subset of the known events;
what is kept is the SQL's own output, counted by the engine's own aggregation. What the catalog adds is one line
per KPI, `partition_by` (dbt's `unique_key`, in effect): the columns whose values a unit shares with every event
that can change it, e.g. `[product, patient_ref]` for a patient's first infusion. A refresh then:

1. finds the changed events: those stored since the last refresh, and those an earlier batch stored with a
   recorded_at that has only now come (`known_at` in (last as-of, as-of]);
2. per KPI, takes the partition keys the changed events of the types its SQL reads carry, and the keys of its
   kept units whose `recheck_at` has come (a window that closed with time: an alert card's 24 h, a deadline);
3. runs the KPI's SQL over the events of those keys, plus every event with one of the key columns empty (the
   context a unit may read: a site's registration, a certification, a material release), and replaces the kept
   units of those keys with what it returns;
4. counts the kept units as the full computation counts them (`Engine._aggregate`).

A KPI is recomputed whole when a changed event of a type it reads has a key column empty (context for every unit),
when the products or the rule book differ (a dated change took effect, or became known), and everything is when
the period moves on. With no changed event and no window closing, a refresh is a few lookups and no KPI work.

The equivalence with `Engine.compute` is not assumed: tests/kpi/test_incremental.py streams random batches (late,
out of order, re-sent, recorded_at in the past and the future) and compares the rows byte for byte after each
one, for every KPI the catalog holds. A KPI whose `partition_by` claims too much fails there.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

import duckdb

from rmm_monitor.contract import TOPIC_OF_TYPE
from rmm_monitor.core import clock
from rmm_monitor.core.periods import Period, parse_period
from rmm_monitor.store import EVENT_COLUMNS

from .catalog import SQL_COMMENT, Kpi
from .engine import RECHECK, Engine, KpiSnapshot, _earliest, used_params

# the columns of the events view after the contract's: the topic and what the store adds
META_COLUMNS = (("topic", "VARCHAR"), ("seq", "BIGINT"), ("ingested_at", "TIMESTAMPTZ"), ("known_at", "TIMESTAMPTZ"))
SCOPE_ALWAYS = ("event_type", "topic", "seq", "known_at")
# the event columns the changed events are read with: every column a partition may name, and the type
KEY_COLUMNS = ("product", "site_id", "patient_ref", "hcp_id", "ae_id", "respondent_id")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")
# The kept units live in an in-memory database of their own with DuckDB's column compression on: at 10 M stored
# events they are ~2.9 M rows, 192 MB as TEMP tables and ~50 MB compressed (what a refresh adds is compressed at
# the next `compact`, ~30 ms). Attached once per DuckDB instance, visible to its connections; the tables' names are
# unique per refresher. DuckDB attaches no in-memory database to a read-only instance: the refresher needs the
# worker's writable store (its only user besides the tests and the benchmark).
KEPT_DB = "rmm_kept"


def event_types_read(engine: Engine, kpi: Kpi) -> Optional[frozenset[str]]:
    """The event types a KPI's SQL and its shared models name (None: it names none, so any type counts)."""
    texts = [kpi.sql, *(sql for _name, sql in engine.models_of(kpi))]
    found = {lit for text in texts for lit in _LITERAL.findall(SQL_COMMENT.sub("", text)) if lit in TOPIC_OF_TYPE}
    return frozenset(found) or None


@dataclass
class _State:
    """What the last refresh left: the period, the instant, the store's next seq, and each KPI's kept units."""

    period: Period
    by: str
    as_of: datetime
    seq_next: int
    valid_until: Optional[datetime]  # the rule book's next change (or the period's end): refresh everything then
    products: list[str]
    pairs: list[tuple[str, str]]
    tables: dict[str, str] = field(default_factory=dict)  # kpi id -> its kept units (a qualified table name)
    rows: dict[str, list[dict]] = field(default_factory=dict)  # kpi id -> its rows
    recheck: dict[str, Optional[datetime]] = field(default_factory=dict)  # kpi id -> min recheck_at of its units
    next_known_at: Optional[datetime] = None


@dataclass
class RefreshStats:
    """What the last refresh did, for the worker's metrics and the benchmark."""

    mode: str = "full"  # full | incremental | unchanged
    changed_events: int = 0
    kpis_whole: int = 0
    kpis_partial: int = 0
    dirty_keys: int = 0


class IncrementalKpis:
    """Keeps one connection's KPI rows (every KPI × product × site of one period) current. Not thread-safe: the
    worker calls it from its reader thread only, with the reader's connection (the kept units are in KEPT_DB, the
    refresh's scratch tables are TEMP tables of that connection)."""

    def __init__(self, **engine_args: Any):
        self.engine_args = engine_args
        self.state: Optional[_State] = None
        self.stats = RefreshStats()
        self._reads: dict[str, Optional[frozenset[str]]] = {}
        self._orphans: list[str] = []  # kept tables of a forgotten state, still to drop
        self._lock = threading.RLock()

    # --- the refresh --------------------------------------------------------------------------------------------
    def refresh(
        self,
        con: duckdb.DuckDBPyConnection,
        as_of: Optional[datetime] = None,
        period: Optional[str] = None,
        by: str = "site",
        in_transaction: bool = False,
    ) -> KpiSnapshot:
        """The rows as of `as_of` (default now), in one snapshot: this call's transaction, or the caller's."""
        as_of = as_of or clock.now()
        engine = Engine(con, **self.engine_args, in_transaction=True)
        per = parse_period(period, as_of)
        own = not in_transaction
        with self._lock:
            if own:
                con.execute("BEGIN TRANSACTION").fetchall()
            try:
                # IF NOT EXISTS: a no-op once attached (an attach rolled back with its transaction comes again)
                con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {KEPT_DB} (COMPRESS)").fetchall()
                snap = self._refresh(con, engine, as_of, per, by)
            except BaseException:
                if own:
                    con.execute("ROLLBACK").fetchall()
                self.reset(con)  # what is kept may no longer match the store: start again from a full computation
                raise
            if own:
                con.execute("COMMIT").fetchall()
                self.compact(con)
            return snap

    def compact(self, con: duckdb.DuckDBPyConnection) -> None:
        """After a refresh that changed what is kept, and outside any transaction: compress what it wrote (DuckDB
        compresses an in-memory database's rows at a checkpoint; until then they sit uncompressed)."""
        if self.stats.mode == "unchanged" or self.state is None:
            return
        try:
            con.execute(f"CHECKPOINT {KEPT_DB}").fetchall()
        except duckdb.Error:  # a transaction still open on it: the next refresh's compaction takes this one's rows
            pass

    def holds(self, at: datetime) -> bool:
        """Whether the last rows still hold at `at` if no event was stored since: nothing comes due before it."""
        with self._lock:  # asked from the event loop while the reader thread may be refreshing
            st = self.state
            if st is None or at < st.as_of:
                return False
            return not _passed(self._snapshot(st).recheck_at, at)

    def reset(self, con: Optional[duckdb.DuckDBPyConnection] = None) -> None:
        """Forget what is kept; its tables are dropped now, or at the next refresh when this transaction failed."""
        if self.state is not None:
            self._orphans += self.state.tables.values()
        self.state = None
        if con is not None:
            self._drop_orphans(con)

    def _drop_orphans(self, con) -> None:
        try:
            for table in list(self._orphans):
                con.execute(f"DROP TABLE IF EXISTS {table}").fetchall()
                self._orphans.remove(table)
        except duckdb.Error:
            pass  # an aborted transaction: the next refresh drops them

    def _refresh(self, con, engine: Engine, as_of: datetime, per: Period, by: str) -> KpiSnapshot:
        self._drop_orphans(con)
        old = self.state
        seq_next = con.execute("SELECT coalesce(max(seq), -1) + 1 FROM event_keys").fetchall()[0][0]
        if old is None or old.period != per or old.by != by or as_of < old.as_of or _passed(old.valid_until, as_of):
            return self._full(con, engine, as_of, per, by, seq_next)
        changed = self._changed(con, old, as_of, seq_next)
        n_changed = con.execute(f"SELECT count(*) FROM temp.main.{changed}").fetchall()[0][0]
        due = any(_passed(old.recheck.get(k.id), as_of) for k in engine.catalog)
        if n_changed == 0 and not due and not _passed(old.next_known_at, as_of):
            snap = self._unchanged(old, as_of, seq_next)
        else:
            snap = self._partial(con, engine, old, as_of, seq_next, changed, n_changed)
        con.execute(f"DROP TABLE temp.main.{changed}").fetchall()  # on an error, the rollback drops it
        return snap

    def _unchanged(self, st: _State, as_of: datetime, seq_next: int) -> KpiSnapshot:
        """No changed event, no window closed: the rows stand, as of the new instant."""
        self.stats = RefreshStats(mode="unchanged")
        st.as_of, st.seq_next = as_of, seq_next
        return self._snapshot(st)

    def _full(self, con, engine: Engine, as_of: datetime, per: Period, by: str, seq_next: int) -> KpiSnapshot:
        self.reset(con)
        products, pairs = engine.products_and_sites(as_of)
        state = _State(
            period=per,
            by=by,
            as_of=as_of,
            seq_next=seq_next,
            valid_until=engine.valid_until(as_of, per),
            products=products,
            pairs=pairs,
        )
        self._rebuild(con, engine, state, list(engine.catalog))
        state.next_known_at = engine._next_known_at(as_of)
        self.state = state
        self.stats = RefreshStats(mode="full", kpis_whole=len(engine.catalog))
        return self._snapshot(state)

    def _partial(self, con, engine: Engine, st: _State, as_of: datetime, seq_next: int, changed: str, n: int):
        stats = RefreshStats(mode="incremental", changed_events=n)
        new_pairs = con.execute(f"SELECT DISTINCT product, site_id FROM temp.main.{changed}").fetchall()
        pairs = sorted(set(st.pairs) | set(map(tuple, new_pairs)))
        products = sorted({p for p, _ in pairs})
        keys_moved = pairs != st.pairs
        st.pairs, st.products, st.as_of, st.seq_next = pairs, products, as_of, seq_next
        whole: list[Kpi] = []
        partial: dict[tuple[str, ...], list[tuple[Kpi, str]]] = {}  # partition -> its KPIs with their dirty keys
        temps: list[str] = []
        try:
            for kpi in engine.catalog:
                verdict = self._dirty(con, engine, kpi, st, changed, as_of, temps)
                if verdict == "whole":
                    whole.append(kpi)
                elif verdict is not None:
                    dirty, n_keys = verdict
                    partial.setdefault(kpi.partition_by, []).append((kpi, dirty))
                    stats.dirty_keys += n_keys
                elif keys_moved:
                    self._count(engine, st, kpi)  # a new product or site: its rows, counted from what is kept
            for cols, members in partial.items():
                # one read of the store per partition: the events of the keys any of its KPIs needs
                scope = self._scope(con, engine, cols, members, as_of, temps)
                for kpi, dirty in members:
                    self._replace(con, engine, kpi, st, dirty, scope, as_of)
                    self._count(engine, st, kpi)
                    stats.kpis_partial += 1
        finally:
            for table in temps:
                con.execute(f"DROP TABLE IF EXISTS temp.main.{table}").fetchall()
        self._rebuild(con, engine, st, whole)
        stats.kpis_whole = len(whole)
        st.next_known_at = engine._next_known_at(as_of)
        self.stats = stats
        return self._snapshot(st)

    def _dirty(self, con, engine: Engine, kpi: Kpi, st: _State, changed: str, as_of: datetime, temps: list[str]):
        """What a KPI needs: None (nothing changed for it), "whole", or (the TEMP table of its dirty keys, how many)."""
        types = self._types(engine, kpi)
        of_type = "TRUE" if types is None else f"event_type IN ({_in(types)})"
        cols = kpi.partition_by
        due = _passed(st.recheck.get(kpi.id), as_of)
        no_key = " OR ".join(f"{c} IS NULL" for c in cols) or "TRUE"
        if con.execute(f"SELECT count(*) FROM temp.main.{changed} WHERE {of_type} AND ({no_key})").fetchall()[0][0]:
            return "whole"  # context of every unit changed (or the KPI names no partition and read a change)
        if not cols:
            return "whole" if due else None  # a window closed; without a partition there is no telling whose
        key_list = ", ".join(cols)
        dirty = f"rmm_dirty_{uuid.uuid4().hex[:12]}"
        temps.append(dirty)
        # the keys new events carry, and those of units whose window closed since (time alone changed them)
        closed = f" UNION ALL SELECT {key_list} FROM {st.tables[kpi.id]} WHERE {RECHECK} <= $as_of"
        sql = (
            f"CREATE TEMP TABLE {dirty} AS SELECT DISTINCT {key_list} FROM ("
            f"SELECT {key_list} FROM temp.main.{changed} WHERE {of_type}{closed if due else ''})"
        )
        con.execute(sql, {"as_of": as_of} if due else {}).fetchall()
        n_keys = con.execute(f"SELECT count(*) FROM temp.main.{dirty}").fetchall()[0][0]
        return (dirty, n_keys) if n_keys else None

    def _scope(self, con, engine: Engine, cols: tuple[str, ...], members, as_of: datetime, temps: list[str]) -> str:
        """The known events of the dirty keys of a partition's KPIs, and those without a key, of the types the
        KPIs read: a TEMP table the KPIs' SQL then reads instead of the store."""
        kinds = [self._types(engine, kpi) for kpi, _ in members]
        types: Optional[frozenset[str]] = None
        if all(t is not None for t in kinds):
            types = frozenset(t for kind in kinds if kind is not None for t in kind)
        of_type = (
            "TRUE"
            if types is None
            else (f"event_type IN ({_in(types)}) AND topic IN ({_in({TOPIC_OF_TYPE[t] for t in types})})")
        )
        key_list = ", ".join(cols)
        keys = f"rmm_keys_{uuid.uuid4().hex[:12]}"
        temps.append(keys)
        union = " UNION ".join(f"SELECT {key_list} FROM temp.main.{dirty}" for _, dirty in members)
        con.execute(f"CREATE TEMP TABLE {keys} AS {union}").fetchall()
        # first the seqs (a probe of the key columns only), then those rows whole: reading every column of the
        # store to keep a few thousand rows cost ~3x as much at 10 M events
        seqs = f"rmm_seqs_{uuid.uuid4().hex[:12]}"
        scope = f"rmm_scope_{uuid.uuid4().hex[:12]}"
        temps += [seqs, scope]
        on = " AND ".join(f"e.{c} = k.{c}" for c in cols)
        no_key = " OR ".join(f"{c} IS NULL" for c in cols)
        con.execute(
            f"CREATE TEMP TABLE {seqs} AS SELECT e.seq FROM events e SEMI JOIN temp.main.{keys} k ON {on} "
            f"WHERE {of_type} AND e.known_at <= $as_of "
            f"UNION ALL SELECT seq FROM events WHERE {of_type} AND ({no_key}) AND known_at <= $as_of",
            {"as_of": as_of},
        ).fetchall()
        # only the columns the KPIs' SQL names (the rest NULL, same types): the rows sit all over the store, so
        # the fetch reads every block of the columns it takes
        texts = " ".join(t for kpi, _ in members for t in (kpi.sql, *(sql for _n, sql in engine.models_of(kpi))))
        named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", SQL_COMMENT.sub("", texts))) | set(cols)
        proj = ", ".join(
            f"e.{name}" if name in named or name in SCOPE_ALWAYS else f"NULL::{sql_type} AS {name}"
            for name, sql_type in (*EVENT_COLUMNS, *META_COLUMNS)
        )
        con.execute(
            f"CREATE TEMP TABLE {scope} AS SELECT {proj} FROM events e SEMI JOIN temp.main.{seqs} s USING (seq) "
            f"WHERE {of_type}"
        ).fetchall()
        return scope

    # --- pieces -------------------------------------------------------------------------------------------------
    @staticmethod
    def _changed(con, st: _State, as_of: datetime, seq_next: int) -> str:
        """The events that changed what is known since the last refresh, as a TEMP table of their key columns:
        stored since (by seq; those recorded for later wait until known), and stored before but known only now.
        Two scans, each a range the zone maps of seq and known_at mostly skip."""
        table = f"rmm_changed_{uuid.uuid4().hex[:12]}"
        cols = ", ".join((*KEY_COLUMNS, "event_type"))
        con.execute(
            f"CREATE TEMP TABLE {table} AS "
            f"SELECT {cols} FROM events WHERE seq >= $seq0 AND known_at <= $as_of "
            f"UNION ALL SELECT {cols} FROM events WHERE known_at > $t0 AND known_at <= $as_of AND seq < $seq0",
            {"seq0": st.seq_next, "as_of": as_of, "t0": st.as_of},
        ).fetchall()
        return table

    def _rebuild(self, con, engine: Engine, st: _State, kpis: list[Kpi]) -> None:
        """These KPIs' kept units computed whole (the shared models they read built once), and their rows."""
        if not kpis:
            return
        params = {"as_of": st.as_of, **engine.period_params(st.period)}
        built = {name: engine.build_model(name, sql, params) for name, sql in engine.buildable_models(kpis).items()}
        try:
            for kpi in kpis:
                if kpi.id in st.tables:
                    con.execute(f"DROP TABLE IF EXISTS {st.tables[kpi.id]}").fetchall()
                st.tables[kpi.id] = self._keep_all(con, engine, kpi, st.as_of, st.period, st.products, built)
        finally:
            for table in built.values():
                con.execute(f"DROP TABLE IF EXISTS temp.main.{table}").fetchall()
        for kpi in kpis:
            self._count(engine, st, kpi)

    @staticmethod
    def _kept_select(engine: Engine, kpi: Kpi, per: Period) -> str:
        keep = ("product", "site_id", *kpi.partition_by)
        return f"{engine._counted_units(kpi, keep=keep)} WHERE {engine._period_filter(per)}"

    def _keep_all(self, con, engine: Engine, kpi: Kpi, as_of, per: Period, products, built) -> str:
        table = f"{KEPT_DB}.main.rmm_units_{kpi.id}_{uuid.uuid4().hex[:8]}"
        sql = f"CREATE TABLE {table} AS " + engine.units_sql(kpi, built) + " " + self._kept_select(engine, kpi, per)
        self._run(con, engine, kpi, sql, as_of, per, products)
        return table

    def _replace(self, con, engine: Engine, kpi: Kpi, st: _State, dirty: str, scope: str, as_of: datetime) -> None:
        """The units of the dirty keys, again: the KPI's SQL over their events and the events without a key."""
        cols = kpi.partition_by
        known = f"known_events AS NOT MATERIALIZED (SELECT * FROM temp.main.{scope})"
        table = st.tables[kpi.id]
        match = " AND ".join(f"t.{c} = d.{c}" for c in cols)
        con.execute(f"DELETE FROM {table} t USING temp.main.{dirty} d WHERE {match}").fetchall()
        sql = (
            f"INSERT INTO {table} BY NAME "
            + engine.units_sql(kpi, known=known)
            + f", kept AS ({self._kept_select(engine, kpi, st.period)}) "
            f"SELECT k.* FROM kept k SEMI JOIN temp.main.{dirty} d ON " + " AND ".join(f"k.{c} = d.{c}" for c in cols)
        )
        self._run(con, engine, kpi, sql, as_of, st.period, st.products)

    @staticmethod
    def _run(con, engine: Engine, kpi: Kpi, sql: str, as_of, per: Period, products) -> None:
        params = {"as_of": as_of, **engine.period_params(per), **engine.param_values(kpi, products, per, as_of)}
        con.execute(sql, used_params(sql, params)).fetchall()

    def _types(self, engine: Engine, kpi: Kpi) -> Optional[frozenset[str]]:
        if kpi.id not in self._reads:
            self._reads[kpi.id] = event_types_read(engine, kpi)
        return self._reads[kpi.id]

    @staticmethod
    def _count(engine: Engine, st: _State, kpi: Kpi) -> None:
        groups = engine._aggregate(kpi, st.as_of, st.period, st.products, kept=st.tables[kpi.id])
        st.recheck[kpi.id] = (groups.get((None, None)) or {}).get(RECHECK)
        keys = engine.row_keys(st.products, st.pairs, st.by, None)
        st.rows[kpi.id] = [engine._row(kpi, st.period, st.as_of, key, groups.get(key)) for key in keys]

    @staticmethod
    def _snapshot(st: _State) -> KpiSnapshot:
        rows = [row for kpi_rows in st.rows.values() for row in kpi_rows]
        recheck = _earliest(st.valid_until, st.next_known_at, *st.recheck.values())
        return KpiSnapshot(rows, st.as_of, recheck)


def _passed(t: Optional[datetime], as_of: datetime) -> bool:
    return t is not None and t <= as_of


def _in(values) -> str:
    """A SQL list of string literals."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))


def rows_bytes(rows: list[dict]) -> bytes:
    """Rows as the bytes two computations are compared by."""
    return json.dumps(rows, sort_keys=True, default=str).encode()
