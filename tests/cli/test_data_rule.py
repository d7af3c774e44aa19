"""The CLI's one rule for "file or worker" (rmm_monitor/cli/data.py): a file that opens is read directly, whatever
a stale sidecar says; a file held by a worker is read through it; a held file whose worker does not answer, or that
names none, is a clear one-line error, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rmm_monitor.dev import simulate
from rmm_monitor.dev.broker import free_port
from rmm_monitor.dev.producer import produce_events
from rmm_monitor.kpi.fixtures import encode
from rmm_monitor.store import Store, process_batch

from support.workers import NOW, run_cli


def _small_store(path) -> int:
    events = simulate.generate(seed=3, patients=12, end=NOW)
    with Store(path) as store:
        process_batch(store, encode(events))
        return store.event_count()


def _sidecar(db, url: str, pid: int = 999999) -> None:
    (db.parent / (db.name + ".worker.json")).write_text(json.dumps({"url": url, "pid": pid}))


def test_a_stale_sidecar_beside_a_free_file_is_ignored(tmp_path):
    db = tmp_path / "rmm.duckdb"
    _small_store(db)
    _sidecar(db, f"http://127.0.0.1:{free_port()}")  # nobody listens there
    out = run_cli("kpis", "--db", str(db), "--period", "all", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)
    out = run_cli("alerts", "list", "--db", str(db), "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr


@pytest.fixture
def held(tmp_path):
    """The DuckDB file opened for writing by another process (as a worker holds it), which answers nothing."""
    db = tmp_path / "held.duckdb"
    _small_store(db)
    hold = "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    yield db
    holder.kill()
    holder.wait(10)


@pytest.mark.parametrize(
    "command", [["kpis", "--period", "all"], ["alerts", "list"], ["export", "--quarter", "2026Q4", "--out", "x"]]
)
def test_a_held_file_whose_worker_does_not_answer_is_a_clear_error(held, command):
    _sidecar(held, f"http://127.0.0.1:{free_port()}", pid=4242)
    out = run_cli(*command, "--db", str(held))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "does not answer" in out.stderr and "pid 4242" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_held_file_without_a_sidecar_says_so(held):
    out = run_cli("kpis", "--db", str(held))
    assert out.returncode == 2 and "left no address" in out.stderr and "Traceback" not in out.stderr


def test_after_a_killed_worker_the_cli_reads_the_file(broker, worker_factory, tmp_path):
    """SIGKILL leaves the sidecar behind; DuckDB's lock goes with the process, so the file opens and is read."""
    db = tmp_path / "killed.duckdb"
    worker = worker_factory(broker.bootstrap, db=db).start()
    events = simulate.generate(seed=4, patients=15, end=NOW)
    n = len({e["event_id"] for e in events})
    produce_events(events, broker.bootstrap)
    worker.wait_for(lambda s: s["stored"] == n, timeout=60, what="events stored")
    worker.kill()
    assert (tmp_path / "killed.duckdb.worker.json").exists(), "a killed worker cannot remove its sidecar"
    deadline = time.monotonic() + 10
    while True:  # the kernel releases the file lock as the process goes
        out = run_cli("kpis", "--db", str(db), "--period", "all", "--json")
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert out.returncode == 0, out.stderr
    assert {r["kpi"] for r in json.loads(out.stdout)}


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("RMM_PERIOD", "2026Q5", "RMM_PERIOD='2026Q5': unknown period '2026Q5'"),
        ("RMM_LANG", "fr", "RMM_LANG='fr': unknown language 'fr'"),
        ("RMM_WEB_PORT", "http", "RMM_WEB_PORT='http'"),
        ("RMM_CLOCK", "tomorrow", "RMM_CLOCK='tomorrow'"),
    ],
)
def test_a_setting_that_does_not_parse_is_refused_at_start_naming_it(variable, value, reason, tmp_path):
    """Settings are read once, at start: a wrong value stops the command with the variable and the reason, before
    any work (not a traceback, nor a failed KPI refresh every few seconds)."""
    out = run_cli("worker", "--db", str(tmp_path / "never.duckdb"), env={variable: value}, timeout=60)
    assert out.returncode == 2 and reason in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "never.duckdb").exists()
