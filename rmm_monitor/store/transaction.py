"""One transaction helper for every writer of the store (events, alerts, review cases, data-quality results)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb

from .errors import classify


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, what: str = "transaction") -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN; COMMIT on success; ROLLBACK on any error, including a COMMIT that fails (a full disk fails at commit,
    and a connection left inside a failed transaction refuses every later statement). DuckDB errors leave as the
    store's transient or terminal errors; the monitor's own errors raised inside pass through unchanged."""
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        yield con
    except BaseException:
        _rollback(con)
        raise
    try:
        con.execute("COMMIT").fetchall()
    except duckdb.Error as exc:
        _rollback(con)
        raise classify(exc, f"{what} not committed") from exc


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK").fetchall()
    except duckdb.Error:  # the transaction is already gone (DuckDB aborted it); nothing left to undo
        pass
