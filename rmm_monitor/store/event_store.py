"""The DuckDB event store: one owner of the connection, the schema and the batch insert.

Layout (schema 2): one table per topic, `ev_site`, `ev_training`, `ev_infusion`, `ev_ae`, holding the fields of
that topic's event types, and `event_keys` (event_id PRIMARY KEY, seq), the idempotency ledger. `events` is a
view: the UNION ALL of the topic tables with every contract column, so readers see one wide relation. A filter on
the view's constant `topic` column drops the other branches (an event_type filter alone drops a branch only where
the table's min/max statistics rule it out, so KPI SQL names the topic beside the type, kpi/engine.py). Why not one
wide table with the key on it: its PRIMARY KEY check cost ~3x the ledger's per batch at 1 M stored events, and
every scan read all event types. Why not a table per event type: 18 inserts per batch cost ~3 ms each however
small the batch, which doubled the latency of a quiet stream.

A batch goes in as one Arrow column of raw JSON that DuckDB parses into a temp table (vectorised), then, in one
transaction: INSERT OR IGNORE of the event_ids into the ledger, and the topic tables get the rows the ledger
took. So a redelivered batch (at-least-once from Kafka) is stored once and the first
stored copy wins. `seq` records the order of storage; KPIs break ties on it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import duckdb
import numpy as np
import pyarrow as pa

from rmm_monitor.contract import EVENT_TYPES, TIMESTAMP_FIELDS, TOPIC_OF_TYPE, TOPICS, sql_format_reason
from rmm_monitor.core import clock

from .errors import StoreError, StoreLocked, TransientStoreError, classify
from .schema import part_tables
from .transaction import transaction

# 1: one wide events table; 2: one table per topic behind the events view; 3: contract v1.1's columns
SCHEMA_VERSION = 3

# One definition of every event column: (name, DuckDB type).
EVENT_COLUMNS: list[tuple[str, str]] = [
    ("event_id", "VARCHAR"),
    ("event_type", "VARCHAR"),
    ("schema_version", "INTEGER"),
    ("occurred_at", "TIMESTAMPTZ"),
    ("recorded_at", "TIMESTAMPTZ"),
    ("source", "VARCHAR"),
    ("product", "VARCHAR"),
    ("site_id", "VARCHAR"),
    ("name", "VARCHAR"),
    ("country", "VARCHAR"),
    ("status", "VARCHAR"),
    ("scope", "VARCHAR[]"),
    ("doses_on_hand", "INTEGER"),
    ("material_id", "VARCHAR"),
    ("version", "INTEGER"),
    ("sections", "VARCHAR[]"),
    ("hcp_id", "VARCHAR"),
    ("role", "VARCHAR"),
    ("material_version", "INTEGER"),
    ("score", "DOUBLE"),
    ("passed", "BOOLEAN"),
    ("patient_ref", "VARCHAR"),
    ("lot_id", "VARCHAR"),
    ("coi_verified", "BOOLEAN"),
    ("temperature_excursion", "BOOLEAN"),
    ("dose_within_spec", "BOOLEAN"),
    ("visit_no", "INTEGER"),
    ("due_at", "TIMESTAMPTZ"),
    ("ae_id", "VARCHAR"),
    ("term", "VARCHAR"),
    ("grade", "INTEGER"),
    ("serious", "BOOLEAN"),
    ("related_step", "VARCHAR"),
    ("medication_error", "BOOLEAN"),
    ("grading_scale", "VARCHAR"),
    ("regulator", "VARCHAR"),
    ("report_kind", "VARCHAR"),
    ("summary", "VARCHAR"),
    # contract v1.1 (effectiveness evidence)
    ("expected", "BOOLEAN"),
    ("recipient_kind", "VARCHAR"),
    ("recipient_id", "VARCHAR"),
    ("channel", "VARCHAR"),
    ("assessment_id", "VARCHAR"),
    ("respondent_kind", "VARCHAR"),
    ("respondent_id", "VARCHAR"),
    ("key_messages", "INTEGER"),
    ("key_messages_correct", "INTEGER"),
    ("audit_id", "VARCHAR"),
    ("finding_id", "VARCHAR"),
    ("severity", "VARCHAR"),
    ("area", "VARCHAR"),
    ("verified", "BOOLEAN"),
    ("kind", "VARCHAR"),
    ("within_proximity", "BOOLEAN"),
]
_COLUMN = dict(EVENT_COLUMNS)
# Required of every event by the contract; KPI SQL relies on it (e.g. ordering keys built from occurred_at).
_ENVELOPE_REQUIRED = ("event_id", "event_type", "schema_version", "occurred_at", "product", "site_id")


@dataclass(frozen=True)
class TopicTable:
    """The events of one topic's types: the union of their contract fields (event_type included), in the order
    of EVENT_COLUMNS."""

    topic: str
    event_types: tuple[str, ...]
    fields: tuple[str, ...]

    @property
    def name(self) -> str:
        return "ev_" + self.topic.removeprefix("rmm.")

    def ddl(self) -> str:
        cols = ", ".join(f"{f} {_COLUMN[f]}{' NOT NULL' if f in _ENVELOPE_REQUIRED else ''}" for f in self.fields)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} ({cols}, seq BIGINT NOT NULL, "
            f"ingested_at TIMESTAMPTZ NOT NULL, known_at TIMESTAMPTZ NOT NULL)"
        )

    def _types_sql(self) -> str:
        return "(" + ", ".join(f"'{t}'" for t in self.event_types) + ")"

    def insert_sql(self, only_new: bool) -> str:
        """Move this topic's rows from the staged batch (every contract column as read from JSON) into its table."""
        cols = ", ".join(_cast(f) for f in self.fields)
        where = " AND b.ord IN (SELECT ord FROM batch_new)" if only_new else ""
        # the columns are named: a file migrated from an older schema has its newer columns at the end
        return (
            f"INSERT INTO {self.name} ({', '.join(self.fields)}, seq, ingested_at, known_at) SELECT {cols}, "
            f"$seq_base + b.ord, $ingested_at, coalesce(b.{_TYPED['recorded_at']}, $ingested_at) FROM batch b "
            f"WHERE b.event_type IN {self._types_sql()}{where}"
        )

    def view_branch(self) -> str:
        """Every contract column (NULL where the topic has none). The event_type filter is always true here and
        costs nothing measurable; DuckDB does not prune with it (the constant topic column does, see the module
        docstring), it states what the table holds."""
        cols = [name if name in self.fields else f"NULL::{sql} AS {name}" for name, sql in EVENT_COLUMNS]
        return (
            f"SELECT {', '.join(cols)}, '{self.topic}' AS topic, seq, ingested_at, known_at "
            f"FROM {self.name} WHERE event_type IN {self._types_sql()}"
        )


def _topic_table(topic: str) -> TopicTable:
    types = tuple(t for t, tp in TOPIC_OF_TYPE.items() if tp == topic)
    fields = {"event_type"} | {f for t in types for f in EVENT_TYPES[t].__struct_fields__}
    return TopicTable(topic, types, tuple(name for name, _ in EVENT_COLUMNS if name in fields))


TOPIC_TABLES: dict[str, TopicTable] = {topic: _topic_table(topic) for topic in TOPICS}

_TABLES_DDL = ";\n".join(
    [
        "CREATE TABLE IF NOT EXISTS event_keys (event_id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL)",
        *(t.ddl() for t in TOPIC_TABLES.values()),
        "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    ]
)
_VIEW_DDL = "CREATE OR REPLACE VIEW events AS " + " UNION ALL ".join(t.view_branch() for t in TOPIC_TABLES.values())


def _cast(name: str) -> str:
    """A staged column as stored: typed, with the contract's defaults for optional AE fields."""
    if name in TIMESTAMP_FIELDS:
        return f"b.{_TYPED[name]}"
    if name == "medication_error":
        return "CASE WHEN b.event_type = 'ae_onset' THEN coalesce(b.medication_error, false) END"
    if name == "grading_scale":
        return "CASE WHEN b.event_type IN ('ae_onset', 'ae_grade_changed') THEN coalesce(b.grading_scale, 'ASTCT') END"
    return f"CAST(b.{name} AS {_COLUMN[name]})"


# How DuckDB's from_json reads a raw event: timestamps stay text for the format check, beside their typed cast.
_JSON_STRUCT = (
    "{"
    + ", ".join(f'"{name}": "{"VARCHAR" if name in TIMESTAMP_FIELDS else sql}"' for name, sql in EVENT_COLUMNS)
    + "}"
)
_TYPED = {f: f"{f}_typed" for f in TIMESTAMP_FIELDS}
# Parse, cast the timestamps and find each row's format reason (NULL if none) in one statement over the batch:
# a separate check statement scanned the staged rows again and cast the timestamps a second time.
_STAGE = (
    f"CREATE OR REPLACE TEMP TABLE batch AS SELECT *, {sql_format_reason(_TYPED)} AS reject_reason FROM ("
    f"SELECT *, {', '.join(f'try_cast({f} AS TIMESTAMPTZ) AS {t}' for f, t in _TYPED.items())} FROM ("
    f"SELECT unnest(from_json(raw.j, '{_JSON_STRUCT}')), raw.ord FROM raw))"
)
_LOOK = (
    "SELECT list({ord: ord, reason: reject_reason} ORDER BY ord) FILTER (WHERE reject_reason IS NOT NULL), "
    "count(*) FILTER (WHERE reject_reason IS NULL) "
    "> count(DISTINCT event_id) FILTER (WHERE reject_reason IS NULL), "
    "histogram(event_type) FILTER (WHERE reject_reason IS NULL) FROM batch"
)


def _json_column(raws: list[bytes]) -> pa.Array:
    """The raw events as one Arrow string column, built from one joined buffer: `pa.array(raws).cast(string)`
    validated UTF-8 again and cost ~10x more; the contract stage has already refused invalid UTF-8."""
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, raws), dtype=np.int64, count=len(raws)), out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(raws), pa.py_buffer(offsets), pa.py_buffer(b"".join(raws)))


def _ordinals(n: int) -> pa.Array:
    """0..n-1 as an Arrow int64 column over numpy's buffer. `pa.array(range(n))` converted element by element (~3 us
    each, with the GIL held); `pa.array(numpy array)` imports pandas on first use (~0.5 s on a worker's first batch)."""
    return pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(np.arange(n, dtype=np.int64))])


def _safe_size(text: str) -> str:
    """A size like '2GB' or '512MiB' (it goes into a SET statement, which takes no parameters)."""
    import re

    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", text.strip(), re.I):
        raise StoreError(f"not a memory size: {text!r} (e.g. 2GB)")
    return text.strip()


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    rejects: list[tuple[int, str]]  # (index in the batch, reason) of rows the format check refused
    inserted_by_topic: dict[str, int]


class Store:
    """Owns one DuckDB connection. Not thread-safe: the worker calls it from one dedicated thread."""

    def __init__(
        self,
        path: str | os.PathLike,
        read_only: bool = False,
        memory_limit: Optional[str] = None,
        checkpoint_wal: str = "256MB",
    ):
        self.path = str(path)
        try:
            if not read_only:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(f"{self.path} is held by another process (is a worker running?)") from exc
            raise TransientStoreError(f"cannot open {self.path}: {exc}") from exc
        except (OSError, duckdb.Error) as exc:
            raise classify(exc, f"cannot open {self.path}") from exc
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        self.con.execute("SET enable_progress_bar = false").fetchall()  # it would print into logs and the CLI
        self.memory_limit = _safe_size(memory_limit) if memory_limit else None
        if self.memory_limit:  # DuckDB's default is 80 % of RAM: a worker beside other services must stay bounded
            self.con.execute(f"SET memory_limit = '{self.memory_limit}'").fetchall()
        self.read_only = read_only
        if not read_only:
            # DuckDB checkpoints when the WAL passes 16 MB by default, i.e. every ~3 batches, and a checkpoint's
            # cost grows with the store: at 1 M events it halved ingest. A bigger WAL checkpoints rarely; the
            # worker also checkpoints when it is idle (Store.checkpoint), and on close.
            self.con.execute(f"SET checkpoint_threshold = '{_safe_size(checkpoint_wal)}'").fetchall()
            if self._relation_kind("events") == "BASE TABLE":
                self._migrate_from_v1()
            self.con.execute(_TABLES_DDL).fetchall()
            self._add_new_columns()
            self.con.execute(_VIEW_DDL).fetchall()
            for _part, ddl in part_tables():  # the other parts' tables (alerting, quality)
                self.con.execute(ddl).fetchall()
            self.con.execute(
                "INSERT OR REPLACE INTO store_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            ).fetchall()
        self._next_seq = (
            self.con.execute("SELECT coalesce(max(seq), 0) + 1 FROM event_keys").fetchall()[0][0]
            if self._relation_kind("event_keys")
            else 1
        )

    def _relation_kind(self, name: str) -> Optional[str]:
        rows = self.con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()
        return rows[0][0] if rows else None

    def _columns(self, table: str) -> set[str]:
        return {
            r[0]
            for r in self.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
            ).fetchall()
        }

    def _add_new_columns(self) -> None:
        """A file written before a contract change gets the new columns (NULL in its older rows: those events
        could not carry them). An additive contract change needs nothing else: inserts name their columns."""
        for table in TOPIC_TABLES.values():
            have = self._columns(table.name)
            for field in table.fields:
                if field not in have:
                    self.con.execute(f"ALTER TABLE {table.name} ADD COLUMN {field} {_COLUMN[field]}").fetchall()

    def _migrate_from_v1(self) -> None:
        """Schema 1 kept every event in one wide `events` table: move its rows into the topic tables, unchanged
        (seq, ingested_at and known_at included, so every as-of result stays the same). A one-time step: it runs
        with DuckDB's default memory limit, since building the event_id ledger of a big file needs more than the
        worker's steady-state limit (10 M events ran out of memory at 500MB)."""
        if self.memory_limit:
            self.con.execute("RESET memory_limit").fetchall()
        try:
            self._move_v1_rows()
        finally:
            if self.memory_limit:
                self.con.execute(f"SET memory_limit = '{self.memory_limit}'").fetchall()

    def _move_v1_rows(self) -> None:
        with self.transaction() as con:
            con.execute("ALTER TABLE events RENAME TO events_v1").fetchall()
            con.execute(_TABLES_DDL).fetchall()
            old = self._columns("events_v1")
            con.execute("INSERT INTO event_keys SELECT event_id, seq FROM events_v1").fetchall()
            for table in TOPIC_TABLES.values():
                fields = [f for f in table.fields if f in old]  # schema 1 predates contract v1.1
                con.execute(
                    f"INSERT INTO {table.name} ({', '.join(fields)}, seq, ingested_at, known_at) "
                    f"SELECT {', '.join(fields)}, seq, ingested_at, known_at "
                    f"FROM events_v1 WHERE event_type IN (SELECT unnest(?))",
                    [list(table.event_types)],
                ).fetchall()
            con.execute("DROP TABLE events_v1").fetchall()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def transaction(self, what: str = "transaction"):
        return transaction(self.con, what)

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (the worker calls it when it has caught up)."""
        try:
            self.con.execute("CHECKPOINT").fetchall()
        except duckdb.Error as exc:
            raise classify(exc, "checkpoint failed") from exc

    def insert_batch(self, raws: list[bytes], ingested_at: Optional[datetime] = None) -> InsertResult:
        """Store a batch of events that passed `validate_batch` (the contract's first stage), in one transaction.
        Returns what was inserted, the duplicates, and the events the format check refused as (index in `raws`,
        reason). Raises TransientStoreError (retry it) or TerminalStoreError (stop) when nothing was committed.

        Steps: 1. stage the raw JSON as a temp table (DuckDB parses it, vectorised) with each row's format check
        (regular expressions, real instants); 2. drop the rows the check refuses and all but the first copy of an
        event_id; 3. INSERT OR IGNORE the event_ids into the ledger; 4. move into the topic tables the rows the
        ledger took — all of them in the common case.
        """
        if not raws:
            return InsertResult(0, 0, [], {})
        ingested_at = ingested_at or clock.now()
        base, hi = self._next_seq, self._next_seq + len(raws)
        raw = pa.table({"j": _json_column(raws), "ord": _ordinals(len(raws))})
        con = self.con
        try:
            con.register("raw", raw)
            try:
                con.execute(_STAGE).fetchall()  # 1. stage and check
            finally:
                con.unregister("raw")
            # One look at the staged rows: the rows the check refused, copies of an event_id inside the batch, and
            # the rows per type.
            rejects, has_copies, per_type = con.execute(_LOOK).fetchall()[0]
            rejects = [(r["ord"], r["reason"]) for r in rejects or ()]
            if rejects:  # 2. drop
                con.execute("DELETE FROM batch WHERE reject_reason IS NOT NULL").fetchall()
            if has_copies:  # the first copy wins (contract); INSERT OR IGNORE alone would keep an arbitrary one
                con.execute(
                    "DELETE FROM batch WHERE ord NOT IN (SELECT min(ord) FROM batch GROUP BY event_id)"
                ).fetchall()
                per_type = dict(con.execute("SELECT event_type, count(*) FROM batch GROUP BY ALL").fetchall())
            per_type = dict(per_type or {})
            with self.transaction(f"batch of {len(raws)} events"):
                con.execute(
                    "INSERT OR IGNORE INTO event_keys SELECT event_id, $seq_base + ord FROM batch", {"seq_base": base}
                ).fetchall()  # 3. ledger
                # this batch's ledger rows have seq in [base, hi): a zone-map range scan, not a history scan
                new = con.execute(
                    "SELECT count(*) FROM event_keys WHERE seq >= $seq_base AND seq < $hi", {"seq_base": base, "hi": hi}
                ).fetchall()[0][0]
                all_new = new == sum(per_type.values())
                if not all_new:  # some were stored before: move only the rows the ledger took
                    con.execute(
                        "CREATE OR REPLACE TEMP TABLE batch_new AS SELECT seq - $seq_base AS ord "
                        "FROM event_keys WHERE seq >= $seq_base AND seq < $hi",
                        {"seq_base": base, "hi": hi},
                    ).fetchall()
                    per_type = dict(
                        con.execute(
                            "SELECT b.event_type, count(*) FROM batch b JOIN batch_new n USING (ord) GROUP BY ALL"
                        ).fetchall()
                    )
                for topic in {TOPIC_OF_TYPE[t] for t, n in per_type.items() if n}:  # 4. topic tables
                    con.execute(
                        TOPIC_TABLES[topic].insert_sql(only_new=not all_new),
                        {"seq_base": base, "ingested_at": ingested_at},
                    ).fetchall()
            con.execute("DROP TABLE batch").fetchall()
            if not all_new:
                con.execute("DROP TABLE batch_new").fetchall()
        except duckdb.Error as exc:
            raise classify(exc, f"batch of {len(raws)} events not stored") from exc
        self._next_seq = hi
        by_topic: dict[str, int] = defaultdict(int)
        for t, n in per_type.items():
            by_topic[TOPIC_OF_TYPE[t]] += n
        inserted = sum(by_topic.values())
        return InsertResult(inserted, len(raws) - len(rejects) - inserted, [(o, r) for o, r in rejects], dict(by_topic))

    def event_count(self) -> int:
        return self.con.execute("SELECT count(*) FROM event_keys").fetchall()[0][0]

    def counts_by_topic(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT topic, count(*) FROM events GROUP BY topic ORDER BY topic").fetchall())
