"""The DuckDB event store: one owner of the connection, the schema and the batch insert.

One writer process owns the file (DuckDB allows one). Events go in as one Arrow table per batch with
INSERT OR IGNORE on event_id, so a redelivered batch (at-least-once from Kafka) is stored once and the first
stored copy wins. `seq` records the order of storage; KPIs break ties on it.
"""
from __future__ import annotations

import msgspec
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

import duckdb
import pyarrow as pa

from .contract import TIMESTAMP_FIELDS, TOPIC_OF_TYPE, sql_format_check

SCHEMA_VERSION = 1

# One definition of every event column: (name, DuckDB type, Arrow type as read from the JSON).
_STR, _INT, _BOOL, _F64 = pa.string(), pa.int64(), pa.bool_(), pa.float64()
_LIST = pa.list_(pa.string())
EVENT_COLUMNS: list[tuple[str, str, pa.DataType]] = [
    ("event_id", "VARCHAR", _STR), ("event_type", "VARCHAR", _STR), ("schema_version", "INTEGER", _INT),
    ("occurred_at", "TIMESTAMPTZ", _STR), ("recorded_at", "TIMESTAMPTZ", _STR), ("source", "VARCHAR", _STR),
    ("product", "VARCHAR", _STR), ("site_id", "VARCHAR", _STR),
    ("name", "VARCHAR", _STR), ("country", "VARCHAR", _STR), ("status", "VARCHAR", _STR),
    ("scope", "VARCHAR[]", _LIST), ("doses_on_hand", "INTEGER", _INT),
    ("material_id", "VARCHAR", _STR), ("version", "INTEGER", _INT), ("sections", "VARCHAR[]", _LIST),
    ("hcp_id", "VARCHAR", _STR), ("role", "VARCHAR", _STR), ("material_version", "INTEGER", _INT),
    ("score", "DOUBLE", _F64), ("passed", "BOOLEAN", _BOOL),
    ("patient_ref", "VARCHAR", _STR), ("lot_id", "VARCHAR", _STR), ("coi_verified", "BOOLEAN", _BOOL),
    ("temperature_excursion", "BOOLEAN", _BOOL), ("dose_within_spec", "BOOLEAN", _BOOL),
    ("visit_no", "INTEGER", _INT), ("due_at", "TIMESTAMPTZ", _STR),
    ("ae_id", "VARCHAR", _STR), ("term", "VARCHAR", _STR), ("grade", "INTEGER", _INT), ("serious", "BOOLEAN", _BOOL),
    ("related_step", "VARCHAR", _STR), ("medication_error", "BOOLEAN", _BOOL), ("grading_scale", "VARCHAR", _STR),
    ("regulator", "VARCHAR", _STR), ("report_kind", "VARCHAR", _STR), ("summary", "VARCHAR", _STR),
]
# How DuckDB's from_json reads a raw event: timestamps stay text until the format check has passed.
_JSON_STRUCT = "{" + ", ".join(
    f'"{name}": "{"VARCHAR" if name in TIMESTAMP_FIELDS else sql}"' for name, sql, _ in EVENT_COLUMNS) + "}"
_AE_TYPES = "('ae_onset', 'ae_grade_changed')"

_DDL = f"""
CREATE TABLE IF NOT EXISTS events (
    {", ".join(f"{name} {sql}" for name, sql, _ in EVENT_COLUMNS)},
    topic VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    known_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id)
);
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
-- Great Expectations results, one row per expectation per run (rmm_monitor/dq.py); a failing critical row is
-- what the data_quality alert fires on.
CREATE TABLE IF NOT EXISTS dq_results (run_at TIMESTAMPTZ NOT NULL, suite VARCHAR NOT NULL, expectation VARCHAR NOT NULL,
    success BOOLEAN NOT NULL, observed VARCHAR, critical BOOLEAN NOT NULL);
"""


def _select_list() -> str:
    """The projection from a raw batch to the events table: casts, contract defaults, derived columns."""
    cols = []
    for name, sql_type, _ in EVENT_COLUMNS:
        if name in TIMESTAMP_FIELDS:
            cols.append(f"CAST(b.{name} AS TIMESTAMPTZ)")
        elif name == "medication_error":
            cols.append("CASE WHEN b.event_type = 'ae_onset' THEN coalesce(b.medication_error, false) END")
        elif name == "grading_scale":
            cols.append(f"CASE WHEN b.event_type IN {_AE_TYPES} THEN coalesce(b.grading_scale, 'ASTCT') END")
        else:
            cols.append(f"CAST(b.{name} AS {sql_type})")
    return ", ".join(cols)


_STAGE = f"CREATE OR REPLACE TEMP TABLE batch AS SELECT unnest(from_json(raw.j, '{_JSON_STRUCT}')), raw.topic, raw.ord FROM raw"
_FORMAT_CHECK = sql_format_check("batch")
_INSERT = f"""
INSERT OR IGNORE INTO events
SELECT {_select_list()}, b.topic, $seq_base + b.ord, $ingested_at,
       coalesce(CAST(b.recorded_at AS TIMESTAMPTZ), $ingested_at)
FROM batch b
"""


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Commit on success, roll back on any error (the alerting code shares it for its own tables)."""
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise
    else:
        con.execute("COMMIT").fetchall()


def _safe_size(text: str) -> str:
    """A size like '2GB' or '512MiB' (it goes into a SET statement, which takes no parameters)."""
    import re
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", text.strip(), re.I):
        raise StoreError(f"not a memory size: {text!r} (e.g. 2GB)")
    return text.strip()


class StoreError(Exception):
    """Base of the store's typed errors."""


class StoreLocked(StoreError):
    """Another process (the worker) holds the DuckDB file."""


class StoreWriteError(StoreError):
    """A batch could not be written (disk full, unwritable path, I/O error). Nothing of it was committed."""


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    rejects: list[tuple[int, str]]  # (index in the batch, reason) of rows the format check refused
    inserted_by_topic: dict[str, int]


class _TypeOnly(msgspec.Struct):
    event_type: str


_types_decoder = msgspec.json.Decoder(list[_TypeOnly])


def _event_types(raws: list[bytes]) -> list[str]:
    return [e.event_type for e in _types_decoder.decode(b"[" + b",".join(raws) + b"]")]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """Owns one DuckDB connection. Not thread-safe: the worker calls it from one dedicated thread."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False, memory_limit: Optional[str] = None):
        self.path = str(path)
        try:
            if not read_only:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(f"{self.path} is held by another process (is a worker running?)") from exc
            raise StoreWriteError(f"cannot open {self.path}: {exc}") from exc
        except (OSError, duckdb.Error) as exc:
            raise StoreWriteError(f"cannot open {self.path}: {exc}") from exc
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        if memory_limit:  # DuckDB's default is 80 % of RAM: a worker beside other services must stay bounded
            self.con.execute(f"SET memory_limit = '{_safe_size(memory_limit)}'").fetchall()
        self.read_only = read_only
        if not read_only:
            self.con.execute(_DDL).fetchall()
            from .alerts import ensure_schema as _alerting_schema  # issue 5: alert and review-case tables
            _alerting_schema(self.con)
            self.con.execute("INSERT OR IGNORE INTO store_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]).fetchall()
        self._next_seq = self.con.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchall()[0][0] \
            if self._has_events() else 1

    def _has_events(self) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'").fetchall()[0][0])

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def transaction(self):
        return transaction(self.con)

    def insert_batch(self, raws: list[bytes], topics: list[str] | None = None,
                     ingested_at: Optional[datetime] = None) -> InsertResult:
        """Store a batch that passed `validate_batch`, in one transaction.

        Steps: stage the raw JSON as a temp table (DuckDB parses it, vectorised); run the format check and drop
        the rows it rejects; INSERT OR IGNORE the rest. Rejected rows come back as (index, reason) for the
        dead-letter topic. Raises StoreWriteError if nothing could be committed.
        """
        if not raws:
            return InsertResult(0, 0, [], {})
        ingested_at = ingested_at or utcnow()
        if topics is None:
            topics = [TOPIC_OF_TYPE[t] for t in _event_types(raws)]
        raw = pa.table({"j": pa.array(raws, pa.binary()).cast(pa.string()),
                        "topic": pa.array(topics, pa.string()),
                        "ord": pa.array(range(len(raws)), pa.int64())})
        try:
            self.con.register("raw", raw)
            try:
                self.con.execute(_STAGE).fetchall()
            finally:
                self.con.unregister("raw")
            rejects = self.con.execute(_FORMAT_CHECK).fetchall()
            if rejects:
                self.con.execute("DELETE FROM batch WHERE ord IN (SELECT unnest($o))", {"o": [o for o, _ in rejects]}
                                 ).fetchall()
            # INSERT OR IGNORE keeps an arbitrary copy of an event_id repeated inside one batch; the contract says
            # the first stored copy wins, so drop later copies here (cheaper than ordering the whole insert).
            if self.con.execute("SELECT count(*) > count(DISTINCT event_id) FROM batch").fetchall()[0][0]:
                self.con.execute("DELETE FROM batch WHERE ord NOT IN (SELECT min(ord) FROM batch GROUP BY event_id)"
                                 ).fetchall()
            with self.transaction() as con:
                con.execute(_INSERT, {"seq_base": self._next_seq, "ingested_at": ingested_at}).fetchall()
                # seq of this batch's rows lies in [base, base + n): a zone-map range scan, not a history scan.
                by_topic = dict(con.execute(
                    "SELECT topic, count(*) FROM events WHERE seq >= $lo AND seq < $hi GROUP BY topic",
                    {"lo": self._next_seq, "hi": self._next_seq + len(raws)}).fetchall())
            self.con.execute("DROP TABLE batch").fetchall()
        except duckdb.Error as exc:
            raise StoreWriteError(f"batch of {len(raws)} events not stored: {exc}") from exc
        self._next_seq += len(raws)
        inserted = sum(by_topic.values())
        return InsertResult(inserted, len(raws) - len(rejects) - inserted, [(o, r) for o, r in rejects], by_topic)

    def event_count(self) -> int:
        return self.con.execute("SELECT count(*) FROM events").fetchall()[0][0]

    def counts_by_topic(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT topic, count(*) FROM events GROUP BY topic ORDER BY topic").fetchall())
