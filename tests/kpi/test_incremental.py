"""The worker's incremental KPI refresh equals a full recomputation, byte for byte, after every batch.

A simulated programme is streamed in random batches the way sources really deliver: out of order, some events
held back and sent late, some sent again, some with a recorded_at in the past (known "before" the last refresh) or
in the future (known only later, with no new event), and time moving on with no event at all (windows close:
an alert card's 24 h, a deadline, the quarter's end). After each step the incremental rows of every KPI in the
catalog (whatever it holds by then: the test lists none) must be the bytes `Engine.compute` gives as of the same
instant. The same stream with every KPI's `partition_by` removed checks the fallback a new KPI gets.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from rmm_monitor.core.periods import iso, parse_time
from rmm_monitor.dev import simulate
from rmm_monitor.kpi import Engine, load_catalog
from rmm_monitor.kpi.incremental import IncrementalKpis, rows_bytes
from rmm_monitor.store import Store, process_batch

pytestmark = pytest.mark.long

END = datetime(2026, 10, 20, tzinfo=timezone.utc)


def stream(seed: int, patients: int, days: int):
    """(as_of, events) steps over a simulated programme; every event is sent at least once."""
    rng = random.Random(seed)
    events = simulate.generate(seed=seed, patients=patients, end=END, days=days, duplicate_rate=0.0)
    events.sort(key=lambda e: e["occurred_at"])
    t = parse_time(events[0]["occurred_at"])
    sent: list[dict] = []
    held: list[dict] = []
    i = 0
    while i < len(events) or held:
        # time moves on: minutes (a 2 h tocilizumab window), hours (a card's 24 h) or days (a deadline)
        t += rng.choice([timedelta(minutes=rng.randint(1, 90)), timedelta(hours=rng.randint(1, 30)),
                         timedelta(days=rng.randint(1, 12))])  # fmt: skip
        if rng.random() < 0.15:
            yield t, []  # no event: only what time closes changes
            continue
        batch = []
        while i < len(events) and parse_time(events[i]["occurred_at"]) <= t and len(batch) < 120:
            e = dict(events[i])
            i += 1
            if rng.random() < 0.06:
                held.append(e)  # arrives late, after later events
            else:
                batch.append(e)
        if held and rng.random() < 0.3:
            batch += [held.pop(rng.randrange(len(held))) for _ in range(min(len(held), rng.randint(1, 5)))]
        if i >= len(events):
            batch += held
            held = []
        if sent and rng.random() < 0.2:
            batch += [dict(rng.choice(sent)) for _ in range(rng.randint(1, 8))]  # re-sent
        for e in batch:
            r = rng.random()
            if r < 0.05:  # recorded before the previous refresh's instant: known in the past
                e["recorded_at"] = iso(max(parse_time(e["occurred_at"]), t - timedelta(days=rng.randint(1, 20))))
            elif r < 0.09:  # recorded for later: known only when that time comes
                e["recorded_at"] = iso(t + timedelta(hours=rng.randint(1, 120)))
            elif e.get("recorded_at") and parse_time(e["recorded_at"]) > t:
                e["recorded_at"] = iso(t)
        rng.shuffle(batch)
        sent += batch
        yield t, batch


def run(tmp_path, seed: int, patients: int, days: int, period, catalog=None) -> dict:
    store = Store(tmp_path / f"inc-{seed}.duckdb")
    args = {"catalog": catalog} if catalog else {}
    inc = IncrementalKpis(**args)
    modes: dict[str, int] = {}
    steps = 0
    for as_of, batch in stream(seed, patients, days):
        if batch:
            process_batch(store, [json.dumps(e).encode() for e in batch], ingested_at=as_of)
        got = inc.refresh(store.con, as_of=as_of, period=period)
        want = Engine(store.con, **args).compute(as_of=as_of, period=period, by="site")
        if rows_bytes(got.rows) != rows_bytes(want):
            diff = next((g, w) for g, w in zip(got.rows, want) if g != w) if len(got.rows) == len(want) else None
            raise AssertionError(
                f"step {steps} as of {iso(as_of)} ({inc.stats}): incremental rows differ from a full computation\n"
                f"incremental {diff[0] if diff else len(got.rows)}\nfull        {diff[1] if diff else len(want)}"
            )
        assert got.rows == want
        modes[inc.stats.mode] = modes.get(inc.stats.mode, 0) + 1
        steps += 1
    store.close()
    return modes


@pytest.mark.parametrize(
    "seed,period",
    [(3, None), (8, "all")],
    ids=["quarter-seed3", "all-seed8"],
)
def test_incremental_rows_equal_a_full_recompute_after_every_batch(tmp_path, seed, period):
    modes = run(tmp_path, seed, patients=16, days=120, period=period)
    # the comparison is only worth something if the incremental path did the work: most steps were partial,
    # some had nothing to do, and the full path ran at the start (and at each new quarter)
    assert modes.get("incremental", 0) > 2 * modes.get("full", 0), modes
    assert modes.get("unchanged", 0) >= 1, modes


def test_a_kpi_without_partition_by_is_recomputed_whole_and_still_equal(tmp_path):
    catalog = tuple(replace(k, partition_by=()) for k in load_catalog())
    modes = run(tmp_path, 13, patients=8, days=60, period=None, catalog=catalog)
    assert modes.get("incremental", 0) >= 1, modes
