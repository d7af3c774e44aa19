"""How the monitor writes a proportion for people (tables, titles, e-mails, reports): one rule, so a KPI reads the
same in the CLI, the alert and the PDF."""

from __future__ import annotations

from typing import Optional


def pct(value: Optional[float], digits: int = 1, missing: str = "n/a") -> str:
    """0.9318 -> '93.2%' (digits after the point); None -> `missing`."""
    return missing if value is None else f"{100 * value:.{digits}f}%"
