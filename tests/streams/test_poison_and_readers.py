"""10 k poison events in the stream all reach rmm.deadletter with their reason, valid events are unaffected and
the pipeline does not stall; `rmm kpis` and `rmm export` run concurrently with the writing worker without lock
errors."""

from __future__ import annotations

import json
import threading
import time

import pytest

from rmm_monitor.dev.poison import KINDS, poison
from rmm_monitor.dev.producer import make_producer

from support.reliability import AS_OF, PERIOD, clean_run, kpis_http, read_topic, records, stream_events, unique_count
from support.workers import run_cli

pytestmark = pytest.mark.long

N_POISON = 10_000


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    events = stream_events(20_000, seed=9)
    stored, rows = clean_run(events, tmp_path_factory.mktemp("clean-valid"))
    return events, stored, rows


def test_ten_thousand_poison_events_are_dead_lettered_with_their_reason(broker, worker_factory, valid):
    events, n_unique, clean_rows = valid
    good = records(events)
    bad = list(poison(N_POISON, seed=3))
    expected = {key: reason for _, key, _, reason in bad}
    assert len(expected) == N_POISON and {r for r in expected.values()} == {k[2] for k in KINDS.values()}
    mixed: list[tuple[str, bytes, bytes]] = []
    step = len(good) // N_POISON + 1
    for i, (topic, key, value, _) in enumerate(bad):  # interleaved, so nearly every batch carries poison
        mixed += good[i * step : (i + 1) * step] + [(topic, key, value)]
    mixed += good[N_POISON * step :]
    assert len(mixed) == len(good) + N_POISON

    worker = worker_factory(broker.bootstrap).start()
    producer = make_producer(broker.bootstrap)
    for topic, key, value in mixed:
        producer.send(topic, key=key, value=value)
    producer.flush(120)
    producer.close()
    status = worker.wait_for(
        lambda s: s["ingested"] + s["duplicates"] + s["rejected"] >= len(mixed),
        timeout=120,
        what="the whole stream handled (no stall)",
    )
    assert (status["ingested"], status["rejected"]) == (n_unique, N_POISON)

    dead = read_topic(broker.bootstrap, "rmm.deadletter", N_POISON)
    assert len(dead) == N_POISON, "every poison event dead-lettered exactly once"
    by_key = {}
    for msg in dead:
        headers = dict(msg.headers)
        by_key[msg.key] = (headers["rmm.reason"].decode(), headers["rmm.topic"].decode(), msg.value)
    originals = {key: (topic, value) for topic, key, value, _ in bad}
    wrong = [(k, by_key.get(k, (None,))[0], want) for k, want in expected.items() if by_key.get(k, (None,))[0] != want]
    assert not wrong, wrong[:10]
    assert all(by_key[k][1:] == originals[k] for k in expected), "original bytes and topic kept"
    assert kpis_http(worker.url) == clean_rows, "valid events unaffected by the poison around them"


def test_kpis_cli_while_the_worker_writes(broker, worker_factory, tmp_path, valid):
    events, n_unique, clean_rows = valid
    worker = worker_factory(broker.bootstrap).start()
    recs = records(events)
    results: list = []

    def read_repeatedly() -> None:
        for _ in range(6):
            results.append(
                run_cli(
                    "kpis",
                    "--db",
                    str(worker.db),
                    "--as-of",
                    AS_OF,
                    "--period",
                    PERIOD,
                    "--by",
                    "site",
                    "--json",
                    timeout=120,
                )
            )

    def export_once() -> None:
        results.append(
            run_cli(
                "export",
                "--quarter",
                "2026Q3",
                "--as-of",
                AS_OF,
                "--db",
                str(worker.db),
                "--out",
                str(tmp_path / "export"),
                "--quiet",
                timeout=170,
            )
        )

    reader = threading.Thread(target=read_repeatedly)
    exporter = threading.Thread(target=export_once)
    reader.start()
    exporter.start()
    producer = make_producer(broker.bootstrap)
    for i, (topic, key, value) in enumerate(recs):
        producer.send(topic, key=key, value=value)
        if i % 2000 == 1999:
            producer.flush()
            time.sleep(0.2)  # a stream, not one burst: the reads interleave with many write batches
    producer.flush()
    producer.close()
    reader.join(180)
    exporter.join(180)
    assert not reader.is_alive() and not exporter.is_alive()
    assert len(results) == 7
    exported = [out for out in results if out.args[3] == "export"]
    assert len(exported) == 1 and exported[0].returncode == 0, exported[0].stderr
    assert "lock" not in exported[0].stderr.lower() and any((tmp_path / "export").iterdir())
    seen = []
    for out in results:
        if out is exported[0]:
            continue
        assert out.returncode == 0, out.stderr
        assert "lock" not in out.stderr.lower()
        rows = json.loads(out.stdout)
        assert all(0 <= r["numerator"] <= r["denominator"] for r in rows)
        seen.append(sum(r["denominator"] + r["pending"] for r in rows if r["site_id"] is None))
    assert any(seen), "at least one read saw data being written"
    worker.wait_for(lambda s: s["stored"] == n_unique, timeout=60, what="all stored")
    final = run_cli("kpis", "--db", str(worker.db), "--as-of", AS_OF, "--period", PERIOD, "--by", "site", "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout) == clean_rows
    assert unique_count(events) == n_unique
