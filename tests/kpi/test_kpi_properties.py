"""Properties of the KPI engine over realistic data (the simulator): order and duplicates never matter,
a closed quarter as-of its end is reproducible, explain adds up, the trend agrees with the table."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmm_monitor.dev import simulate
from rmm_monitor.kpi import Engine, adverse_outcomes
from rmm_monitor.kpi.fixtures import encode
from rmm_monitor.store import Store, process_batch

END = datetime(2026, 10, 20, tzinfo=timezone.utc)
AS_OF = END + timedelta(days=1)


@pytest.fixture(scope="module")
def programme():
    return simulate.generate(seed=11, patients=80, end=END, days=200, duplicate_rate=0.0)


@pytest.fixture(scope="module")
def loaded(programme, tmp_path_factory):
    """The programme in one store, shared by the read-only tests below."""
    store = Store(tmp_path_factory.mktemp("loaded") / "programme.duckdb")
    process_batch(store, encode(programme))
    yield store
    store.close()


def kpis_of(events: list[dict], tmp_path, name: str, batch: int = 997, **kw) -> list[dict]:
    with Store(tmp_path / f"{name}.duckdb") as store:
        raws = encode(events)
        for i in range(0, len(raws), batch):
            process_batch(store, raws[i : i + batch])
        return Engine(store.con).compute(as_of=AS_OF, by="site", **kw)


@pytest.fixture(scope="module")
def baseline(programme, tmp_path_factory):
    return kpis_of(programme, tmp_path_factory.mktemp("base"), "base", period="all")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), dup_share=st.floats(0.0, 0.3), batch=st.integers(50, 5000))
def test_shuffling_and_duplicating_never_change_any_kpi(programme, baseline, tmp_path, seed, dup_share, batch):
    rng = random.Random(seed)
    events = list(programme)
    events += [dict(e) for e in rng.sample(events, int(len(events) * dup_share))]
    rng.shuffle(events)
    assert kpis_of(events, tmp_path, f"shuffled-{seed}", batch=batch, period="all") == baseline


def test_closed_quarter_as_of_its_end_is_byte_identical_after_later_events(tmp_path):
    """Late-arriving events with occurred_at inside the quarter but recorded_at after the as-of time must not
    change the quarter's numbers computed as of its end."""
    events = simulate.generate(
        seed=5, patients=150, end=datetime(2026, 10, 1, tzinfo=timezone.utc), days=200, duplicate_rate=0.0
    )
    as_of = datetime(2026, 10, 1, tzinfo=timezone.utc)
    with Store(tmp_path / "repro.duckdb") as store:
        process_batch(store, encode(events))
        engine = Engine(store.con)
        before = json.dumps(engine.compute(as_of=as_of, period="2026Q3", by="site"), sort_keys=True)
        units_before = json.dumps(
            engine.units("alert_card_issued", as_of=as_of, period="2026Q3", outcomes=("success", "failure", "pending"))
        )
        # later: a whole new stretch of the programme, plus late records of Q3 events
        later = simulate.generate(
            seed=6, patients=80, end=datetime(2026, 12, 1, tzinfo=timezone.utc), days=120, duplicate_rate=0.0
        )
        for e in later:  # they reach the monitor after the as-of time: known_at = recorded_at > as-of
            e["event_id"] = "later-" + e["event_id"]
            e["recorded_at"] = max(e["recorded_at"], "2026-10-02T00:00:00Z")
        late = []
        for e in [
            e for e in events if e["event_type"] in ("alert_card_issued", "ae_reported", "tocilizumab_administered")
        ][:40]:
            late.append({**e, "event_id": "late-" + e["event_id"], "recorded_at": "2026-10-15T00:00:00Z"})
        outcome = process_batch(store, encode(later + late))
        assert outcome.inserted == len(later) + len(late)
        after = json.dumps(engine.compute(as_of=as_of, period="2026Q3", by="site"), sort_keys=True)
        units_after = json.dumps(
            engine.units("alert_card_issued", as_of=as_of, period="2026Q3", outcomes=("success", "failure", "pending"))
        )
        assert after == before
        assert units_after == units_before
        # and the later events do change the numbers when the as-of time moves past them
        assert (
            json.dumps(
                engine.compute(as_of=datetime(2026, 12, 2, tzinfo=timezone.utc), period="2026Q3", by="site"),
                sort_keys=True,
            )
            != before
        )


def test_explained_units_add_up_to_the_numbers(loaded):
    engine = Engine(loaded.con)
    rows = engine.compute(as_of=AS_OF, period="all", by="site")
    checked = 0
    for kpi in engine.catalog:
        units = engine.units(kpi.id, as_of=AS_OF, period="all", outcomes=("success", "failure", "pending"))
        assert all(u["detail"] for u in units), f"{kpi.id}: every listed unit says why"
        for row in (r for r in rows if r["kpi"] == kpi.id):
            mine = [
                u
                for u in units
                if u["product"] == row["product"] and (row["site_id"] is None or u["site_id"] == row["site_id"])
            ]
            against = [u for u in mine if u["outcome"] in adverse_outcomes(kpi)]
            expected = (
                row["denominator"] - row["numerator"] if kpi.direction == "higher_is_better" else row["numerator"]
            )
            assert len(against) == expected, (kpi.id, row["product"], row["site_id"])
            assert sum(u["outcome"] == "pending" for u in mine) == row["pending"]
            checked += len(against) if row["site_id"] is None else 0
    assert checked > 50, "the simulated programme has failures to explain"
    # the default listing is exactly what counts against the KPI, plus pending
    default = engine.units("alert_card_issued", as_of=AS_OF, period="all")
    assert {u["outcome"] for u in default} <= {"failure", "pending"} and default


def test_top_units_per_key_are_the_first_units_listed_for_that_key(loaded):
    # what the alerting task attaches to each new breach, from one run of a KPI's SQL for all of them
    limit = 2
    engine = Engine(loaded.con)
    rows = engine.compute(as_of=AS_OF, period="2026Q3", by="site")
    compared = 0
    for kpi in engine.catalog:
        keys = [(r["product"], r["site_id"]) for r in rows if r["kpi"] == kpi.id]
        outcomes = adverse_outcomes(kpi)
        top = engine.top_units(kpi.id, keys, limit, as_of=AS_OF, period="2026Q3", outcomes=outcomes)
        assert set(top) == set(keys)
        for product, site in keys:
            one = engine.units(kpi.id, as_of=AS_OF, period="2026Q3", product=product, site=site, outcomes=outcomes)
            assert top[(product, site)] == one[:limit], (kpi.id, product, site)
            compared += len(one[:limit])
    assert compared > 20, "the simulated quarter has adverse units to list"


def test_trend_months_add_up_to_the_period(loaded):
    engine = Engine(loaded.con)
    trend = engine.trend(as_of=AS_OF, period="2026")
    table = {(r["kpi"], r["product"]): r for r in engine.compute(as_of=AS_OF, period="2026", by="product")}
    sums: dict[tuple, list[int]] = {}
    for r in trend:
        s = sums.setdefault((r["kpi"], r["product"]), [0, 0, 0])
        s[0] += r["numerator"]
        s[1] += r["denominator"]
        s[2] += r["pending"]
    assert sums, "a trend"
    for key, (num, den, pend) in sums.items():
        row = table[key]
        assert (num, den, pend) == (row["numerator"], row["denominator"], row["pending"]), key
    months = {r["month"] for r in trend}
    assert months <= {f"2026-{m:02d}" for m in range(1, 13)}
    assert len(months) >= 6


@pytest.mark.parametrize("period", ["2026Q2", "2026Q3", "2026Q4", "2026", "all"])
def test_anchor_pruning_never_changes_a_kpi(loaded, period):
    """KPI SQL may prune units outside the period early ($anchor_from/$anchor_to); the numbers, the stats and
    the explained units must equal those computed over unbounded anchors."""
    pruned, full = Engine(loaded.con), Engine(loaded.con, prune_anchors=False)
    assert pruned.compute(as_of=AS_OF, period=period, by="site") == full.compute(as_of=AS_OF, period=period, by="site")
    for kpi in pruned.catalog:
        everything = ("success", "failure", "pending")
        assert pruned.units(kpi.id, as_of=AS_OF, period=period, outcomes=everything) == full.units(
            kpi.id, as_of=AS_OF, period=period, outcomes=everything
        ), kpi.id
