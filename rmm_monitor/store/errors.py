"""The store's errors, and which DuckDB errors are worth a retry.

Transient: the disk, memory, or another transaction got in the way (DuckDB's IOException, OutOfMemoryException,
TransactionException, InterruptException); the same statement can succeed later, so the worker retries a batch
with backoff and keeps its offsets uncommitted meanwhile. Terminal: the statement itself is wrong for this file
(a SQL, catalog, binder, conversion or constraint error; a database DuckDB invalidated after a fatal error);
retrying only delays the stop, so the worker stops at once and says why.
"""

from __future__ import annotations

import duckdb

from rmm_monitor.core.errors import RmmError


class StoreError(RmmError):
    """The store could not do what was asked."""


class StoreLocked(StoreError):
    """Another process (the worker) holds the DuckDB file."""


class TransientStoreError(StoreError):
    """Nothing was committed, and a retry may succeed (full disk, out of memory, a conflicting transaction)."""


class TerminalStoreError(StoreError):
    """Nothing was committed, and a retry would fail the same way (a SQL or schema error): stop and fix it."""


_TRANSIENT = (duckdb.IOException, duckdb.OutOfMemoryException, duckdb.TransactionException, duckdb.InterruptException)


def classify(exc: BaseException, what: str) -> StoreError:
    """`exc` (a DuckDB or OS error) as the store's error, transient or terminal, saying what failed."""
    cls = TransientStoreError if isinstance(exc, (*_TRANSIENT, OSError)) else TerminalStoreError
    return cls(f"{what}: {exc}")
