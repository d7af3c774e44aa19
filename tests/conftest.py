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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _honour_xdist_groups(config, items)
    # Tests marked `long` (half a minute to two of wall time, mostly waiting on workers and brokers) are handed out
    # first: xdist deals tests in collection order, and a long one dealt last would run on alone after the others
    # finished. The sort is stable, and every process sorts the same way (xdist requires the same order).
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def _honour_xdist_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--dist loadgroup` sends the tests of one xdist_group to one process because each test's id ends in
    `@<group>`. pytest-xdist 3.8 appends that by assigning `item._nodeid`, which pytest 9.2 no longer reads (its
    ids are structured, `item._id`; pytest-dev/pytest-xdist#1386), so every group was spread over all processes and
    each built its module fixtures again (an export, a Prometheus stack: ~3 min of the suite). This moves the id
    xdist made (this hook runs after xdist's) to where pytest 9.2 reads it, and stops the run if that no longer
    takes, rather than losing the groups silently again."""
    if not config.getvalue("loadgroup"):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        grouped = getattr(item, "_nodeid", None)  # "<id>@<group>", set by xdist for a test with an xdist_group
        if grouped and grouped != item.nodeid:
            item._id = NodeId.parse(grouped)  # type: ignore[attr-defined]
            if item.nodeid != grouped:
                raise pytest.UsageError(f"cannot group {grouped} for --dist loadgroup; see tests/conftest.py")


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
