"""Event contract: the event types as msgspec structs, the topics, and batch validation with machine-readable
reasons (docs/contract.md)."""

from .events import (
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    TIMESTAMP_FIELDS,
    TOPIC_OF_TYPE,
    TOPICS,
    Reject,
    reason_code,
    sql_format_reason,
    validate_batch,
    validate_one,
)

__all__ = [
    "ALERTS_TOPIC",
    "DEADLETTER_TOPIC",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "TIMESTAMP_FIELDS",
    "TOPIC_OF_TYPE",
    "TOPICS",
    "Reject",
    "reason_code",
    "sql_format_reason",
    "validate_batch",
    "validate_one",
]
