"""How long KPI rows hold (`Engine.snapshot(...).recheck_at`), over every catalog test's events.

The worker reuses its rows until an event arrives or `recheck_at` passes, so the instant must never be late: at any
as-of before it the rows and units are the same bytes. Each case walks time from its as-of from one recheck to the
next (an alert card's 24 h, a CAPA deadline, the end of a 30-day observation, an event recorded for later, the end
of the quarter), checking just before each instant. A window the SQL compared with $as_of but
left out of its `recheck_at` shows here as rows that changed before the instant.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from rmm_monitor.core.periods import parse_time
from rmm_monitor.kpi import Engine, load_catalog
from rmm_monitor.kpi.catalog import CatalogError, _load_kpi, catalog_dir
from rmm_monitor.kpi.fixtures import encode, events_from_given
from rmm_monitor.store import Store, process_batch

CASES = [(kpi, case) for kpi in load_catalog() for case in kpi.tests]
STEPS = 4
JUST_BEFORE = timedelta(microseconds=1)
FAR = timedelta(days=800)


def _seen(engine: Engine, kpi_id: str, at, period, rows=None):
    """Rows (by site) and every unit of one KPI as of `at`, as bytes."""
    rows = rows if rows is not None else engine.compute(as_of=at, period=period, by="site", kpi_ids=[kpi_id])
    units = engine.units(kpi_id, as_of=at, period=period, outcomes=("success", "failure", "pending", "excluded"))
    return json.dumps([rows, units], sort_keys=True, default=str)


@pytest.mark.parametrize("kpi,case", CASES, ids=[f"{k.id}:{c['name']}" for k, c in CASES])
def test_rows_hold_until_their_recheck_instant(kpi, case, tmp_path):
    store = Store(tmp_path / "recheck.duckdb")
    process_batch(store, encode(events_from_given(case["given"])))
    engine = Engine(store.con)
    # the case's period, or the quarter of each as-of (the worker's default), which ends with time too
    period = case.get("period")
    at = parse_time(case["as_of"]) - timedelta(days=45)
    walked = []
    for _ in range(STEPS):
        snap = engine.snapshot(as_of=at, period=period, by="site", kpi_ids=[kpi.id])
        assert snap.rows == engine.compute(as_of=at, period=period, by="site", kpi_ids=[kpi.id]) if not walked else True
        seen = _seen(engine, kpi.id, at, period, snap.rows)
        end = snap.recheck_at or at + FAR
        assert end > at, f"recheck_at {end} is not after the as-of {at}"
        probe = end - JUST_BEFORE
        if probe > at:
            assert _seen(engine, kpi.id, probe, period) == seen, (
                f"{kpi.id}: rows as of {at} changed by {probe}, before their recheck instant {snap.recheck_at} "
                f"(walked {walked})"
            )
        if snap.recheck_at is None:
            break
        walked.append(snap.recheck_at.isoformat())
        at = snap.recheck_at
    store.close()


def test_windows_close_at_the_instant_the_sql_names(tmp_path):
    """An alert card's 24 h: pending until infusion + 24 h, a failure from that instant, and the rows say when."""
    store = Store(tmp_path / "card.duckdb")
    given = [
        {"event_type": "infusion_administered", "occurred_at": "2026-07-01T08:00:00Z", "patient_ref": "PT-000001",
         "lot_id": "L1", "hcp_id": "H1", "dose_within_spec": True},
    ]  # fmt: skip
    process_batch(store, encode(events_from_given(given)))
    engine = Engine(store.con)
    snap = engine.snapshot(as_of=parse_time("2026-07-01T12:00:00Z"), period="all", kpi_ids=["alert_card_issued"])
    assert snap.rows[0]["pending"] == 1
    assert snap.recheck_at == parse_time("2026-07-02T08:00:00Z")
    after = engine.snapshot(as_of=snap.recheck_at, period="all", kpi_ids=["alert_card_issued"])
    assert (after.rows[0]["pending"], after.rows[0]["numerator"], after.rows[0]["denominator"]) == (0, 0, 1)
    assert after.recheck_at is None  # decided: only a new event changes it now
    store.close()


def test_a_kpi_that_compares_with_as_of_must_say_when(tmp_path):
    """A KPI whose SQL compares with $as_of and has no recheck_at column is refused when the catalog loads."""
    (tmp_path / "late_kpi.sql").write_text(
        "-- compares $as_of in a comment only would be fine; this one compares in code\n"
        "select product, site_id, occurred_at as anchor_at,\n"
        "  case when $as_of < occurred_at + interval 1 day then 'pending' else 'failure' end as outcome,\n"
        "  event_id as unit_id, patient_ref, hcp_id, ae_id, lot_id, '' as detail from known_events"
    )
    spec = (catalog_dir() / "dose_within_spec.yml").read_text().replace("id: dose_within_spec", "id: late_kpi")
    (tmp_path / "late_kpi.yml").write_text(spec)
    with pytest.raises(CatalogError, match="recheck_at"):
        _load_kpi(tmp_path / "late_kpi.yml")
    # the same SQL saying when its window turns loads
    recheck = "case when occurred_at + interval 1 day > $as_of then occurred_at + interval 1 day end as recheck_at"
    sql = (tmp_path / "late_kpi.sql").read_text().replace("'' as detail", f"'' as detail, {recheck}")
    (tmp_path / "late_kpi.sql").write_text(sql)
    assert _load_kpi(tmp_path / "late_kpi.yml").id == "late_kpi"
