"""The worker survives SIGKILL at random moments and a broker outage: 0 lost, 0 double counted.

Both compare with a clean `rmm replay` of the same 50 k events (with duplicates): the stored count and every KPI
row by site must be equal. Real parts: `rmm worker` subprocesses, the tansu broker, kafka-python as the source.
"""
from __future__ import annotations

import os
import time
from random import Random

import pytest

from rmm_monitor.broker import Broker, ensure_topics
from rmm_monitor.producer import make_producer
from rmm_monitor.store import Store

from relsupport import clean_run, committed_offsets, end_offsets, kpis_http, metric, records, stream_events, unique_count

KILLS = 10
SEED = int(os.environ.get("RMM_RELIABILITY_SEED", "20261125"))


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    events = stream_events(50_000)
    stored, rows = clean_run(events, tmp_path_factory.mktemp("clean"))
    assert stored == unique_count(events)
    assert len(events) - stored > 1000, "the stream must carry duplicates"
    return events, stored, rows


def send(producer, recs) -> None:
    for topic, key, value in recs:
        producer.send(topic, key=key, value=value)
    producer.flush(60)


def wait_drained(bootstrap: str, recs, timeout: float = 90.0) -> None:
    """Until the worker's committed offsets reach the end of every input partition."""
    ends = end_offsets(recs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = committed_offsets(bootstrap)
        if all(committed.get(tp, 0) >= off for tp, off in ends.items()):
            return
        time.sleep(0.3)
    raise AssertionError(f"offsets not committed to the end: {committed} vs {ends}")


def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(broker, worker_factory, tmp_path, stream):
    events, n_unique, clean_rows = stream
    recs = records(events)
    chunks = [recs[i * len(recs) // KILLS:(i + 1) * len(recs) // KILLS] for i in range(KILLS)]
    rng = Random(SEED)
    db = tmp_path / "killed.duckdb"
    producer = make_producer(broker.bootstrap)
    stored_after_kill = []
    try:
        for i, chunk in enumerate(chunks):
            worker = worker_factory(broker.bootstrap, db=db).start()
            send(producer, chunk)  # the stream flows while this worker runs
            if i % 2 == 0:  # a random moment once it consumes: inside a store, a dead-letter, a commit, or idle
                worker.wait_for(lambda s: s["batches"] >= 1, timeout=60, what="the worker consuming")
                time.sleep(rng.uniform(0.0, 0.8))
            else:  # a random moment of its start: opening the store, joining the group, its first batches
                time.sleep(rng.uniform(0.0, 4.0))
            worker.kill()
            assert worker.proc.returncode == -9
            with Store(db, read_only=True) as store:
                stored_after_kill.append(store.event_count())
    finally:
        producer.close()
    assert len(stored_after_kill) == KILLS
    assert stored_after_kill[0] > 0 and stored_after_kill == sorted(stored_after_kill), stored_after_kill

    final = worker_factory(broker.bootstrap, db=db).start()
    wait_drained(broker.bootstrap, recs)
    final.wait_for(lambda s: s["stored"] == n_unique, timeout=30, what="all unique events stored")
    rows = kpis_http(final.url)
    final.stop()
    with Store(db, read_only=True) as store:
        count, distinct = store.con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    assert (count, distinct) == (n_unique, n_unique), "lost or double-counted events"
    assert rows == clean_rows


def test_broker_outage_worker_stays_up_reconnects_and_converges(worker_factory, tmp_path, stream):
    events, n_unique, clean_rows = stream
    recs = records(events)
    half = len(recs) // 2
    broker = Broker(log_path=tmp_path / "broker-1.log").start()
    port = broker.port
    sent_log = []  # the producer's own log: what it re-sends to the new broker
    try:
        worker = worker_factory(broker.bootstrap, db=tmp_path / "outage.duckdb").start()
        producer = make_producer(broker.bootstrap)
        send(producer, recs[:half])
        sent_log += recs[:half]
        producer.close()
        worker.wait_for(lambda s: s["ingested"] > 0, timeout=60, what="ingest before the outage")
        assert metric(worker.url, "rmm_broker_up") == 1.0

        broker.kill()
        deadline = time.monotonic() + 30
        while metric(worker.url, "rmm_broker_up") != 0.0:
            assert time.monotonic() < deadline, "the outage never showed in /metrics (rmm_broker_up)"
            time.sleep(0.2)
        time.sleep(2.0)  # the outage lasts a while; the worker must stay up through it
        assert worker.proc.poll() is None, "the worker died during the broker outage"
        assert metric(worker.url, "rmm_broker_up") == 0.0

        broker = Broker(port=port, log_path=tmp_path / "broker-2.log").start(create_topics=False)
        ensure_topics(broker.bootstrap)
        producer = make_producer(broker.bootstrap)
        send(producer, sent_log + recs[half:])  # memory-only broker: everything again, then the rest
        producer.close()
        deadline = time.monotonic() + 60
        while metric(worker.url, "rmm_broker_up") != 1.0:
            assert time.monotonic() < deadline, "the worker did not reconnect by itself"
            time.sleep(0.2)
        wait_drained(broker.bootstrap, recs)
        worker.wait_for(lambda s: s["stored"] == n_unique, timeout=30, what="all unique events stored")
        rows = kpis_http(worker.url)
        assert worker.proc.poll() is None
        assert worker.stop() == 0
    finally:
        broker.stop()
    assert rows == clean_rows
