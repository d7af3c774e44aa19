"""The export tests' shared store: the simulation of seed 7 in a DuckDB file and its English export by the CLI,
built once per test run (also across xdist processes)."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone

import pytest

from rmm_monitor.dev.simulate import generate
from rmm_monitor.store import Store, process_batch

from support.workers import run_cli

END = datetime(2026, 9, 30, 12, 0, tzinfo=timezone.utc)
AS_OF = "2026-10-15T00:00:00Z"
QUARTER = "2026Q3"


@pytest.fixture(scope="session")  # survives xdist interleaving other modules in this process
def events():
    return generate(seed=7, patients=200, end=END, dq_faults=True)


@pytest.fixture(scope="session")
def offline(tmp_path_factory, events):
    """A DuckDB file nobody holds, and its export made by the CLI. Built once per test run although its users
    run in more than one xdist process (test_export.py and test_languages.py are two groups, run side by side):
    the first process builds it under a file lock in a directory all of them share, the others wait and reuse it."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    root = (base.parent / f"rmm-export-{run}") if run else (base / "rmm-export")
    root.mkdir(exist_ok=True)
    db, out, done = root / "sim.duckdb", root / "out", root / "done.json"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            with Store(db) as store:
                process_batch(store, [json.dumps(e).encode() for e in events])
            res = run_cli(
                "export", "--quarter", QUARTER, "--db", str(db), "--out", str(out), "--as-of", AS_OF, timeout=600
            )
            assert res.returncode == 0, res.stderr
            done.write_text(json.dumps({"stderr": res.stderr}))
    return db, out, json.loads(done.read_text())["stderr"]
