"""Given rows of the catalog's unit tests → contract v1 events, and comparison with expected KPI rows.

A given row names only what matters to the test; the envelope is filled in: event_id (`g<n>`),
schema_version 1, product `CTX-19`, site_id `S1`, and recorded_at = occurred_at (so an event is known from the
moment it happened unless the row says otherwise).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

DEFAULTS = {"schema_version": 1, "product": "CTX-19", "site_id": "S1"}


def events_from_given(rows: Iterable[dict]) -> list[dict]:
    events = []
    for n, row in enumerate(rows, start=1):
        event = {"event_id": f"g{n}", **DEFAULTS, **row}
        event.setdefault("recorded_at", event["occurred_at"])
        events.append(event)
    return events


def encode(events: Iterable[dict]) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in events]


def mismatches(expected: dict, actual: dict, path: str = "") -> list[str]:
    """Keys of `expected` whose values differ in `actual` (floats to 4 decimals, lists ignoring order)."""
    out = []
    for key, want in expected.items():
        got = actual.get(key, "<missing>") if isinstance(actual, dict) else "<missing>"
        where = f"{path}{key}"
        if isinstance(want, dict) and isinstance(got, dict):
            out += mismatches(want, got, where + ".")
        elif isinstance(want, float) or isinstance(got, float):
            if (
                want is None
                or got is None
                or not isinstance(got, (int, float))
                or round(float(got), 4) != round(float(want), 4)
            ):
                if not (want is None and got is None):
                    out.append(f"{where}: expected {want!r}, got {got!r}")
        elif isinstance(want, list) and isinstance(got, list):
            if sorted(map(str, want)) != sorted(map(str, got)):
                out.append(f"{where}: expected {want!r}, got {got!r}")
        elif want != got:
            out.append(f"{where}: expected {want!r}, got {got!r}")
    return out


def find_row(rows: list[dict], expected: dict[str, Any]) -> dict | None:
    key = (expected.get("product"), expected.get("site_id"))
    for row in rows:
        if (row["product"], row["site_id"]) == key:
            return row
    return None
