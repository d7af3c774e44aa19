"""Reporting periods (UTC calendar quarters, years, months) and RFC 3339 time parsing for the CLI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from .errors import ConfigError


@dataclass(frozen=True)
class Period:
    label: str
    start: Optional[datetime]  # inclusive; None = unbounded
    end: Optional[datetime]  # exclusive

    def span(self) -> tuple[datetime, datetime]:
        """(start, end) of a bounded period; `all` has none."""
        if self.start is None or self.end is None:
            raise ConfigError(f"period {self.label!r} has no bounds")
        return self.start, self.end


def _utc(y: int, m: int) -> datetime:
    return datetime(y + (m - 1) // 12, (m - 1) % 12 + 1, 1, tzinfo=timezone.utc)


def quarter_of(t: datetime) -> Period:
    t = t.astimezone(timezone.utc)
    q = (t.month - 1) // 3 + 1
    return Period(f"{t.year}Q{q}", _utc(t.year, 3 * q - 2), _utc(t.year, 3 * q + 1))


def parse_period(label: Optional[str], as_of: datetime) -> Period:
    """'2026Q3', '2026' (year), '2026-07' (month), 'all'; None = the quarter of the as-of time."""
    if label is None:
        return quarter_of(as_of)
    label = label.strip()
    if label.lower() == "all":
        return Period("all", None, None)
    if m := re.fullmatch(r"(\d{4})Q([1-4])", label, re.I):
        y, q = int(m.group(1)), int(m.group(2))
        return Period(f"{y}Q{q}", _utc(y, 3 * q - 2), _utc(y, 3 * q + 1))
    if m := re.fullmatch(r"(\d{4})-(0[1-9]|1[0-2])", label):
        y, mo = int(m.group(1)), int(m.group(2))
        return Period(label, _utc(y, mo), _utc(y, mo + 1))
    if m := re.fullmatch(r"(\d{4})", label):
        y = int(m.group(1))
        return Period(label, _utc(y, 1), _utc(y + 1, 1))
    raise ConfigError(f"unknown period {label!r}: use 2026Q3, 2026, 2026-07 or all")


def previous_quarter(label: str) -> str:
    y, q = int(label[:4]), int(label[5])
    return f"{y - 1}Q4" if q == 1 else f"{y}Q{q - 1}"


def parse_time(text: str) -> datetime:
    """An RFC 3339 instant with an offset ('Z' or ±hh:mm); a bare date means its start in UTC."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not an RFC 3339 time; write e.g. 2026-10-01T00:00:00Z") from None
    if t.tzinfo is None:
        raise ConfigError(f"{text!r} has no UTC offset; write e.g. 2026-10-01T00:00:00Z")
    return t.astimezone(timezone.utc)


def iso(t: Optional[datetime]) -> Optional[str]:
    if t is None:
        return None
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
