"""One transaction helper for every writer of the store (events, alerts, review cases, data-quality results)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import duckdb

from .errors import classify


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, what: str = "transaction") -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN; COMMIT on success; ROLLBACK on any error, including a COMMIT that fails (a full disk fails at commit,
    and a connection left inside a failed transaction refuses every later statement). DuckDB errors leave as the
    store's transient or terminal errors; the monitor's own errors raised inside pass through unchanged."""
    _AFTER_COMMIT.pop(id(con), None)  # left by writes outside a transaction (autocommit): nothing to wait for
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        yield con
    except BaseException:
        _rollback(con)
        _AFTER_COMMIT.pop(id(con), None)
        raise
    try:
        con.execute("COMMIT").fetchall()
    except duckdb.Error as exc:
        _rollback(con)
        _AFTER_COMMIT.pop(id(con), None)
        raise classify(exc, f"{what} not committed") from exc
    for fn in _AFTER_COMMIT.pop(id(con), ()):
        fn()


# What must happen only once a transaction is committed (the audit log publishes its new heads outside the file):
# per connection, run in order after COMMIT, dropped on ROLLBACK. Every connection writes on one thread.
_AFTER_COMMIT: dict[int, list[Callable[[], None]]] = {}


def after_commit(con: duckdb.DuckDBPyConnection, fn: Callable[[], None]) -> None:
    """Run `fn` after the transaction of `con` now open commits (never if it rolls back)."""
    _AFTER_COMMIT.setdefault(id(con), []).append(fn)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK").fetchall()
    except duckdb.Error:  # the transaction is already gone (DuckDB aborted it); nothing left to undo
        pass
