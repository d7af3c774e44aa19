"""The worker's backlog: batches fetched while the store step works are stored next as one batch. The merge must
keep every record's position, so a rejected record is dead-lettered with its own partition and offset, and the
commit position of each partition is its latest."""

from __future__ import annotations

import asyncio
import json

from aiokafka import TopicPartition

from rmm_monitor.store import Store, check_batch, store_checked
from rmm_monitor.streams.ingest import Backlog, Flat

from support.scenario import events

AE = TopicPartition("rmm.ae", 0)
INF = TopicPartition("rmm.infusion", 1)


def fetched(records: list[tuple[TopicPartition, int, bytes]]) -> tuple[Flat, object]:
    flat = Flat(
        [v for _, _, v in records],
        [None] * len(records),
        [tp.topic for tp, _, _ in records],
        [tp.partition for tp, _, _ in records],
        [off for _, off, _ in records],
        {},
    )
    for tp, off, _ in records:
        flat.next_offsets[tp] = off + 1
    return flat, check_batch(flat.values, flat.topics)


def test_merged_batches_keep_each_records_place_and_the_latest_commit_position(tmp_path):
    good = {e["event_id"]: json.dumps(e).encode() for e in events()}
    by_topic = {}
    for raw in good.values():
        by_topic.setdefault(json.loads(raw)["event_type"].startswith("ae_"), []).append(raw)
    ae, infusion = by_topic[True], [r for r in by_topic[False] if b'"infusion_administered"' in r]
    bad = json.dumps({**json.loads(ae[2]), "patient_name": "Zhang San"}).encode()

    async def scenario():
        backlog = Backlog(limit=10_000)
        await backlog.put(*fetched([(AE, 10, ae[0]), (AE, 11, bad)]))
        await backlog.put(*fetched([(INF, 5, infusion[0]), (AE, 12, ae[1])]))
        await backlog.put(*fetched([(AE, 13, b"not json"), (AE, 14, ae[0])]))  # a resend of offset 10
        return backlog.take(), backlog.take()

    (flat, checked), nothing = asyncio.run(scenario())
    assert nothing is None
    assert [flat.where(i) for i in range(len(flat.values))] == [(0, 10), (0, 11), (1, 5), (0, 12), (0, 13), (0, 14)]
    assert flat.next_offsets == {AE: 15, INF: 6}
    assert flat.values == [ae[0], bad, infusion[0], ae[1], b"not json", ae[0]]
    with Store(tmp_path / "s.duckdb") as store:
        outcome = store_checked(store, checked)
    # each rejected record keeps its index in the merged batch, which `where` maps back to its own offset
    assert [(flat.where(r.index), r.reason.split(":")[0]) for r in outcome.rejects] == [
        ((0, 11), "unknown_field"),
        ((0, 13), "bad_json"),
    ]
    assert (outcome.inserted, outcome.duplicates) == (3, 1)


def test_the_fetcher_waits_while_the_backlog_is_full():
    async def scenario():
        backlog = Backlog(limit=2)
        flat, checked = fetched([(AE, 0, b"{}"), (AE, 1, b"{}")])
        await backlog.put(flat, checked)
        blocked = asyncio.ensure_future(backlog.put(*fetched([(AE, 2, b"{}")])))
        await asyncio.sleep(0.05)
        waited = not blocked.done()
        first = backlog.take()
        await asyncio.wait_for(blocked, 1)
        second = backlog.take()
        return waited, first[0].offsets, second[0].offsets

    waited, first, second = asyncio.run(scenario())
    assert waited and first == [0, 1] and second == [2]


def test_tune_gc_freezes_start_up_objects_and_raises_the_thresholds():
    """The worker calls it after start-up: the collector must not run hundreds of times per batch."""
    import gc

    from rmm_monitor.streams.ingest import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] >= 10 * before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
