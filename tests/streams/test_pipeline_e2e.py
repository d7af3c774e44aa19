"""End to end on the real bundled broker: kafka-python producer → `rmm worker` (faust, batch consumer) →
DuckDB → KPIs over HTTP and /metrics; rejects in rmm.deadletter; crash between store and commit; replay path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from rmm_monitor.dev.producer import produce_events, produce_raw
from rmm_monitor.kpi.fixtures import mismatches
from rmm_monitor.store import Store

from support.scenario import AS_OF, EXPECTED, INVALID, PERIOD, events
from support.workers import http_json, http_text, run_cli

pytestmark = pytest.mark.long

N_UNIQUE = len({e["event_id"] for e in events()})
N_DUPLICATES = len(events()) - N_UNIQUE


def headline(rows: list[dict]) -> dict[str, dict]:
    return {r["kpi"]: r for r in rows if r["kpi"] in EXPECTED and r["site_id"] is None}


def read_deadletters(bootstrap: str, expected: int, timeout_ms: int = 15000) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=timeout_ms)
    tp = TopicPartition("rmm.deadletter", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    for msg in consumer:
        got.append(msg)
        if len(got) >= expected:
            break
    consumer.close()
    return got


def test_scripted_stream_gives_hand_computed_kpis(broker, worker_factory):
    worker = worker_factory(broker.bootstrap).start()
    produce_events(events(), broker.bootstrap)
    produce_raw([(topic, b"k", json.dumps(ev).encode()) for topic, ev, _ in INVALID], broker.bootstrap)

    status = worker.wait_for(
        lambda s: s["ingested"] + s["duplicates"] + s["rejected"] >= len(events()) + len(INVALID),
        what="all events consumed",
    )
    assert (status["ingested"], status["duplicates"], status["rejected"]) == (N_UNIQUE, N_DUPLICATES, len(INVALID))

    rows = http_json(f"{worker.url}/api/kpis?as_of={AS_OF}&period={PERIOD}")
    got = headline(rows)
    problems = [f"{kpi}: {m}" for kpi, want in EXPECTED.items() for m in mismatches(want, got[kpi])]
    assert not problems, problems

    # the invalid event is in the dead-letter topic with its original bytes and reason
    [msg] = read_deadletters(broker.bootstrap, 1)
    headers = dict(msg.headers)
    assert headers["rmm.reason"] == INVALID[0][2].encode()
    assert headers["rmm.topic"] == INVALID[0][0].encode()
    assert json.loads(msg.value) == INVALID[0][1]
    assert int(headers["rmm.offset"]) >= 0

    metrics = http_text(f"{worker.url}/metrics")
    assert 'rmm_events_rejected_total{reason="unknown_field"} 1.0' in metrics
    assert 'rmm_events_ingested_total{topic="rmm.infusion"}' in metrics
    assert "PT-0000" not in metrics, "/metrics must carry no patient_ref"

    # under load the store checkpoints rarely (fast commits); once the stream is quiet the worker folds its WAL
    # into the file, so a restart has little to replay
    wal = Path(str(worker.db) + ".wal")
    deadline = time.monotonic() + 20
    while wal.exists() and wal.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not wal.exists() or wal.stat().st_size == 0, "WAL not checkpointed while the stream was idle"

    # rmm kpis --db works while the worker owns the file: it asks the worker
    cli = run_cli("kpis", "--db", str(worker.db), "--as-of", AS_OF, "--period", PERIOD, "--json")
    assert cli.returncode == 0, cli.stderr
    assert headline(json.loads(cli.stdout)) == got


def test_replay_gives_the_same_kpis_as_kafka(broker, worker_factory, tmp_path):
    worker = worker_factory(broker.bootstrap).start()
    produce_events(events(), broker.bootstrap)
    worker.wait_for(lambda s: s["ingested"] + s["duplicates"] >= len(events()), what="all events consumed")
    via_kafka = http_json(f"{worker.url}/api/kpis?as_of={AS_OF}&period={PERIOD}&by=site")

    src = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in events()] + ["", json.dumps(INVALID[0][1])]
    src.write_text("\n".join(lines) + "\n")
    db = tmp_path / "replay.duckdb"
    out = run_cli("replay", str(src), "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"accepted": N_UNIQUE, "rejected": 1, "duplicates": N_DUPLICATES}
    rejected = [json.loads(line) for line in (tmp_path / "replay.rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [(len(lines), "unknown_field:patient_name")]

    via_replay = run_cli("kpis", "--db", str(db), "--as-of", AS_OF, "--period", PERIOD, "--by", "site", "--json")
    assert via_replay.returncode == 0, via_replay.stderr
    assert json.loads(via_replay.stdout) == via_kafka


def test_crash_between_store_and_commit_loses_nothing_and_counts_nothing_twice(broker, worker_factory, tmp_path):
    first, second = events()[:10], events()[10:]
    db = tmp_path / "crash.duckdb"
    crashing = worker_factory(broker.bootstrap, db=db, RMM_FAILPOINT="after_store").start()
    produce_events(first, broker.bootstrap)
    assert crashing.proc.wait(60) == 137, "the failpoint should kill the worker after its first store"
    with Store(db, read_only=True) as store:
        stored_before_restart = store.event_count()
    assert stored_before_restart > 0, "the batch was stored before the crash"

    worker = worker_factory(broker.bootstrap, db=db).start()
    # nothing was committed: the stored batch comes again and is recognised as duplicates
    worker.wait_for(lambda s: s["duplicates"] >= stored_before_restart, what="redelivery of the stored batch")
    produce_events(second, broker.bootstrap)
    worker.wait_for(lambda s: s["stored"] == N_UNIQUE, what="all unique events stored")
    rows = http_json(f"{worker.url}/api/kpis?as_of={AS_OF}&period={PERIOD}&by=site")
    worker.stop()

    clean_db = tmp_path / "clean.duckdb"
    src = tmp_path / "all.jsonl"
    src.write_text("\n".join(json.dumps(e) for e in events()) + "\n")
    assert run_cli("replay", str(src), "--db", str(clean_db)).returncode == 0
    clean = json.loads(
        run_cli("kpis", "--db", str(clean_db), "--as-of", AS_OF, "--period", PERIOD, "--by", "site", "--json").stdout
    )
    assert rows == clean
    with Store(db, read_only=True) as store:
        assert store.event_count() == N_UNIQUE
