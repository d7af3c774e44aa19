"""One batch through the contract and into the store: the step the worker and `rmm replay` share."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from .contract import Reject, validate_batch
from .store import Store


@dataclass
class BatchOutcome:
    size: int
    inserted: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)
    inserted_by_topic: dict[str, int] = field(default_factory=dict)


def process_batch(store: Store, values: list[bytes], topics: Optional[list[str]] = None,
                  ingested_at: Optional[datetime] = None) -> BatchOutcome:
    """Validate the whole batch, store the valid events in one transaction, return what happened.

    Raises StoreWriteError if the write failed; then nothing of the batch is stored and the caller must not
    commit its offsets.
    """
    valid_idx, rejects = validate_batch(values, topics)
    outcome = BatchOutcome(size=len(values), rejects=list(rejects))
    if not valid_idx:
        return outcome
    raws = [values[i] for i in valid_idx]
    valid_topics = [topics[i] for i in valid_idx] if topics is not None else None
    result = store.insert_batch(raws, valid_topics, ingested_at)
    for pos, reason in result.rejects:
        outcome.rejects.append(Reject(valid_idx[pos], reason))
    outcome.rejects.sort(key=lambda r: r.index)
    outcome.inserted = result.inserted
    outcome.duplicates = result.duplicates
    outcome.inserted_by_topic = result.inserted_by_topic
    return outcome
