"""The Wilson score interval: one definition for the KPI engine (CIs and statuses) and the report's charts (the
breach limit). No DuckDB import here, so the chart worker processes can use it."""

from __future__ import annotations

import math
from typing import Callable

Z = 1.959964


def wilson_bounds(p, n, z: float = Z, sqrt: Callable = math.sqrt):
    """(low, high) of the Wilson interval for an observed share p of n units, not clipped to [0, 1]. Works on
    numpy arrays with `sqrt=numpy.sqrt`."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half
