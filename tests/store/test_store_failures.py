"""A full disk or an unwritable DB path gives a clear error and leaves the offsets of unstored events
uncommitted; after space is freed the worker converges to the clean result."""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

import pytest

from rmm_monitor.dev.producer import make_producer
from rmm_monitor.store import Store

from support.reliability import clean_run, committed_offsets, kpis_http, metric, records, stream_events
from support.workers import run_cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    events = stream_events(20_000, seed=10)
    stored, rows = clean_run(events, tmp_path_factory.mktemp("clean-small"))
    return events, stored, rows


class TinyDisk:
    """A 2 MiB tmpfs (a real ENOSPC). Where mounting is not permitted (no root), the worker's RLIMIT_FSIZE plays
    the full disk instead (a real EFBIG from the kernel; CPython ignores SIGXFSZ), raised later with prlimit."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        self.mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True
            ).returncode
            == 0
        )
        self.pid = None

    def limit(self, pid: int) -> None:
        if not self.mounted:
            self.pid = pid
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))

    def free_space(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=256m", str(self.path)], check=True)

    def unlimit(self, pid: int) -> None:
        if not self.mounted:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def tiny_disk(tmp_path):
    disk = TinyDisk(tmp_path / "disk")
    yield disk
    disk.close()


def test_full_disk_keeps_offsets_uncommitted_and_recovers(broker, worker_factory, tiny_disk, small):
    events, n_unique, clean_rows = small
    recs = records(events)
    db = tiny_disk.path / "full.duckdb"
    worker = worker_factory(broker.bootstrap, db=db).start()
    tiny_disk.limit(worker.proc.pid)
    producer = make_producer(broker.bootstrap)
    for topic, key, value in recs:
        producer.send(topic, key=key, value=value)
    producer.flush(60)
    producer.close()

    deadline = time.monotonic() + 60
    while not (metric(worker.url, "rmm_store_write_errors_total") or 0) >= 1:
        assert time.monotonic() < deadline, "the disk never filled up"
        time.sleep(0.2)
    log = worker.log.read_text()
    assert "store write failed" in log and ("No space left" in log or "too large" in log.lower()), log[-2000:]

    worker.kill()  # mid-retry: what a crash or an operator would leave behind
    committed = committed_offsets(broker.bootstrap)
    sent = {}
    for topic, _, value in recs:
        sent.setdefault(topic, []).append(json.loads(value)["event_id"])
    tiny_disk.free_space()
    with Store(db, read_only=True) as store:
        stored_ids = {r[0] for r in store.con.execute("SELECT event_id FROM events").fetchall()}
    assert sum(committed.values()) < len(recs), "offsets of the batch that failed were committed"
    for (topic, _), offset in committed.items():
        missing = [e for e in sent[topic][:offset] if e not in stored_ids]
        assert not missing, f"{topic}: committed past events that were never stored: {missing[:5]}"

    again = worker_factory(broker.bootstrap, db=db).start()
    tiny_disk.unlimit(again.proc.pid)
    again.wait_for(lambda s: s["stored"] == n_unique, timeout=90, what="all events stored after space was freed")
    assert kpis_http(again.url) == clean_rows


def test_unwritable_db_path_is_a_clear_error_and_commits_nothing(broker, worker_factory, tmp_path, small):
    events, _, _ = small
    producer = make_producer(broker.bootstrap)
    for topic, key, value in records(events[:500]):
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the DB directory should be\n")
    worker = worker_factory(broker.bootstrap, db=blocker / "rmm.duckdb").start(timeout=60)
    assert worker.proc.wait(60) != 0, "the worker must stop, not run without a store"
    log = worker.log.read_text()
    assert "cannot open" in log and str(blocker / "rmm.duckdb") in log, log[-2000:]
    assert committed_offsets(broker.bootstrap) == {}

    out = run_cli("replay", "/dev/null", "--db", str(blocker / "rmm.duckdb"))
    assert out.returncode == 2 and "cannot open" in out.stderr


def test_a_schema_error_stops_the_worker_at_once_and_commits_nothing(broker, worker_factory, tmp_path, small):
    """A SQL or schema error is terminal: retrying cannot make the statement right, so the worker stops at once,
    says why, and leaves the batch's offsets uncommitted (a transient error, above, is retried instead)."""
    events, _, _ = small
    db = tmp_path / "broken.duckdb"
    with Store(db) as store:  # a file whose AE table no longer matches the contract: grade is not a number
        store.con.execute("ALTER TABLE ev_ae ALTER COLUMN grade TYPE STRUCT(v INTEGER)").fetchall()
    producer = make_producer(broker.bootstrap)
    for topic, key, value in records(events[:2000]):
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()
    worker = worker_factory(broker.bootstrap, db=db).start(timeout=60)
    started = time.monotonic()
    assert worker.proc.wait(60) != 0, "the worker must stop, not retry a statement that cannot succeed"
    log = worker.log.read_text()
    assert "cannot succeed by retrying" in log and "INTEGER -> STRUCT" in log, log[-3000:]
    assert "retry in" not in log, "a terminal error is not retried"
    assert time.monotonic() - started < 30
    assert committed_offsets(broker.bootstrap) == {}, "offsets of a batch that was not stored were committed"
