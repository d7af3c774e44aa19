"""The monitor's clock: what "now" means for KPIs, pending windows, `known_at` and the records of alerts.

In production it is the wall clock in UTC. `RMM_CLOCK` moves it, for a test, a demo or the reproduction of an
incident, so that "the current quarter" is the one of a chosen day whatever day the machine thinks it is:

- `RMM_CLOCK=2026-11-25T12:00:00Z` starts the clock at that instant when the process first asks, and from there
  it runs at real speed (monotonic);
- `RMM_CLOCK=-820800.0` (a signed number of seconds) shifts the wall clock by that much. Every process that reads
  the same value agrees on the same instant, which is what the tests use: they compute the offset once, from a
  fixed instant, and hand it to every worker and CLI they start.

Only business time goes through here. Durations, and what Prometheus reads (`*_timestamp_seconds`, batch ages),
stay on the machine's own clocks, which Prometheus compares with its own.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Optional

from . import settings
from .errors import ConfigError

ENV = "RMM_CLOCK"
_OFFSET = re.compile(r"[+-]?\d+(\.\d*)?")

_start: Optional[tuple[datetime, float]] = None  # (instant, monotonic() at that instant)
_offset = 0.0  # seconds added to the wall clock
_configured = False


def _parse_instant(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise ConfigError(f"{ENV}={text!r} has no UTC offset; write e.g. 2026-11-25T12:00:00Z")
    return t.astimezone(timezone.utc)


def configure(value: Optional[str]) -> None:
    """Set this process's clock from an RMM_CLOCK value (None or empty: the wall clock)."""
    global _start, _offset, _configured
    value = (value or "").strip()
    _start, _offset = None, 0.0
    if _OFFSET.fullmatch(value):
        _offset = float(value)
    elif value:
        _start = (_parse_instant(value), time.monotonic())
    _configured = True


def offset_to(instant: datetime) -> str:
    """The RMM_CLOCK value that makes every process reading it agree that it is `instant` now."""
    return f"{instant.timestamp() - time.time():+.3f}"


def now() -> datetime:
    """The current instant, timezone-aware UTC."""
    if not _configured:
        configure(settings.current().clock)
    if _start is not None:
        instant, started = _start
        return instant + timedelta(seconds=time.monotonic() - started)
    if _offset:
        return datetime.fromtimestamp(time.time() + _offset, timezone.utc)
    return datetime.now(timezone.utc)


def is_controlled() -> bool:
    """True when RMM_CLOCK moved the clock: the worker says so in its status and its log."""
    now()
    return _start is not None or _offset != 0.0
