"""Dense logic of the common rules (docs/kpi-rules.md): Wilson interval, status, periods, time parsing."""

from datetime import datetime, timezone

import pytest

from rmm_monitor.core.periods import parse_period, parse_time, previous_quarter, quarter_of
from rmm_monitor.kpi import load_catalog, status_of, wilson


@pytest.mark.parametrize(
    "x,n,low,high",
    [
        (41, 44, 0.8177, 0.9765),  # the example row of docs/kpi-rules.md
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_known_values(x, n, low, high):
    lo, hi = wilson(x, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_empty_is_null():
    assert wilson(0, 0) == (None, None)


def kpi(kpi_id):
    return next(k for k in load_catalog() if k.id == kpi_id)


def rule(k, x, n, theta=None):
    theta = k.threshold if theta is None else theta
    v = x / n if n else None
    lo, hi = wilson(x, n)
    return status_of(k, theta, x, n, v, lo, hi)


def test_status_higher_is_better():
    k = kpi("alert_card_issued")  # θ 0.90, min_n 10
    assert rule(k, 9, 9) == "insufficient_data"
    assert rule(k, 41, 44) == "ok"  # 0.93 ≥ 0.90
    assert rule(k, 17, 20) == "warning"  # 0.85 < 0.90, ci_high 0.95 ≥ 0.90
    assert rule(k, 10, 20) == "breach"  # ci_high 0.70 < 0.90
    assert rule(k, 9, 10) == "ok"  # exactly θ is ok


def test_status_lower_is_better():
    k = kpi("severe_crs_rate")
    assert k.direction == "lower_is_better"
    assert rule(k, 1, 40, 0.10) == "ok"
    assert rule(k, 6, 40, 0.10) == "warning"  # 0.15 > 0.10, ci_low 0.07 ≤ 0.10
    assert rule(k, 20, 40, 0.10) == "breach"  # ci_low 0.35 > 0.10
    assert rule(k, 1, 19, 0.10) == "insufficient_data"


def test_zero_tolerance_breaches_on_any_failure_whatever_n():
    k = kpi("chain_of_identity_verified")
    assert k.zero_tolerance and k.min_n == 1
    assert rule(k, 0, 0) == "insufficient_data"
    assert rule(k, 1, 1) == "ok"
    assert rule(k, 999, 1000) == "breach"


def test_quarters_are_utc():
    assert parse_period("2026Q3", datetime.now(timezone.utc)).start == datetime(2026, 7, 1, tzinfo=timezone.utc)
    assert parse_period("2026Q4", datetime.now(timezone.utc)).end == datetime(2027, 1, 1, tzinfo=timezone.utc)
    # 2026-10-01T07:00+08:00 is still Q3 in UTC
    assert quarter_of(parse_time("2026-10-01T07:00:00+08:00")).label == "2026Q3"
    assert quarter_of(parse_time("2026-09-30T20:00:00-05:00")).label == "2026Q4"
    assert parse_period(None, parse_time("2026-11-25T10:00:00Z")).label == "2026Q4"
    assert parse_period("all", datetime.now(timezone.utc)).start is None
    assert parse_period("2026", datetime.now(timezone.utc)).end == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert previous_quarter("2026Q1") == "2025Q4"


def test_bad_period_and_naive_time_are_refused():
    with pytest.raises(ValueError):
        parse_period("Q3-2026", datetime.now(timezone.utc))
    with pytest.raises(ValueError):
        parse_time("2026-07-01T00:00:00")
