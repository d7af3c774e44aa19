"""Fixtures: real parts only. The bundled broker (tansu) is started per test where topics must be clean (it
starts in ~0.3 s); workers run as real `rmm worker` subprocesses against a real DuckDB file (support/workers.py).

The clock: every process of the suite (this one, each worker, each CLI) reads RMM_CLOCK, set here once to the
offset that makes "now" NOW, mid-quarter at noon UTC, whatever the machine's date or time zone. No test depends on
the day it runs; the suite passes with the machine clock shifted (scripts/clock-shifts.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from rmm_monitor.dev.broker import Broker

from support.workers import WorkerProc, use_suite_clock

use_suite_clock()


@pytest.fixture
def broker(tmp_path):
    b = Broker(log_path=tmp_path / "broker.log").start()
    yield b
    b.stop()


@pytest.fixture
def worker_factory(tmp_path):
    started: list[WorkerProc] = []

    def make(bootstrap: str, db: Optional[Path] = None, **env) -> WorkerProc:
        w = WorkerProc(
            db=db or tmp_path / "worker.duckdb",
            bootstrap=bootstrap,
            log=tmp_path / f"worker-{len(started)}.log",
            env_extra=env,
        )
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()
