"""One batch through the contract and into the store: the steps the worker and `rmm replay` share.

Two steps, so the worker can run them on different threads: `check_batch` (the contract's msgspec stage, pure
Python) and `store_checked` (the store's SQL format check and the DuckDB transaction, which releases the GIL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Sequence

from rmm_monitor.contract import Reject, validate_batch

from .event_store import Store


@dataclass
class BatchOutcome:
    size: int
    inserted: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)
    inserted_by_topic: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckedBatch:
    """A batch after the contract's first stage: which records may go to the store, which were refused."""

    values: list[bytes]
    valid: list[int]
    rejects: list[Reject]


def merge_checked(batches: list[CheckedBatch]) -> CheckedBatch:
    """Consecutive checked batches as one, indices shifted to the joined order."""
    if len(batches) == 1:
        return batches[0]
    values: list[bytes] = []
    valid: list[int] = []
    rejects: list[Reject] = []
    for b in batches:
        base = len(values)
        values += b.values
        valid += [base + i for i in b.valid]
        rejects += [Reject(base + r.index, r.reason) for r in b.rejects]
    return CheckedBatch(values, valid, rejects)


def check_batch(values: list[bytes], topics: Optional[Sequence[Optional[str]]] = None) -> CheckedBatch:
    valid, rejects = validate_batch(values, topics)
    return CheckedBatch(values, valid, rejects)


def store_checked(store: Store, batch: CheckedBatch, ingested_at: Optional[datetime] = None) -> BatchOutcome:
    """Store the valid events of a checked batch in one transaction and return what happened.

    Raises TransientStoreError or TerminalStoreError if the write failed; then nothing of the batch is stored and
    the caller must not commit its offsets.
    """
    outcome = BatchOutcome(size=len(batch.values), rejects=list(batch.rejects))
    if not batch.valid:
        return outcome
    valid_idx = batch.valid
    raws = batch.values if len(valid_idx) == len(batch.values) else [batch.values[i] for i in valid_idx]
    result = store.insert_batch(raws, ingested_at)
    for pos, reason in result.rejects:
        outcome.rejects.append(Reject(valid_idx[pos], reason))
    outcome.rejects.sort(key=lambda r: r.index)
    outcome.inserted = result.inserted
    outcome.duplicates = result.duplicates
    outcome.inserted_by_topic = result.inserted_by_topic
    return outcome


def process_batch(
    store: Store, values: list[bytes], topics: Optional[list[str]] = None, ingested_at: Optional[datetime] = None
) -> BatchOutcome:
    """Both steps on the calling thread (`rmm replay`, tests)."""
    return store_checked(store, check_batch(values, topics), ingested_at)
