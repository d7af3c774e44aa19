"""The DuckDB store: one owner of the connection, the events' tables, the tables the other parts declare, one
transaction helper, and the batch path from raw bytes to stored events (shared by the worker and `rmm replay`)."""

from .batches import BatchOutcome, CheckedBatch, check_batch, merge_checked, process_batch, store_checked
from .errors import StoreError, StoreLocked, TerminalStoreError, TransientStoreError, classify
from .event_store import EVENT_COLUMNS, SCHEMA_VERSION, TOPIC_TABLES, InsertResult, Store
from .schema import part_tables
from .transaction import after_commit, transaction

__all__ = [
    "BatchOutcome",
    "CheckedBatch",
    "check_batch",
    "merge_checked",
    "process_batch",
    "store_checked",
    "StoreError",
    "StoreLocked",
    "TerminalStoreError",
    "TransientStoreError",
    "classify",
    "EVENT_COLUMNS",
    "SCHEMA_VERSION",
    "TOPIC_TABLES",
    "InsertResult",
    "Store",
    "part_tables",
    "transaction",
    "after_commit",
]
