"""The worker validates the data-quality suites in a child process of its own (its memory goes with the child):
the child never outlives the worker, whether the worker is stopped or killed in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from support.procs import children, wait_gone

# a suite over a frame as long as a big store's (20 M rows), so the child validates for many seconds
BIG_ROWS = 20_000_000
SUITE = {
    "name": "big",
    "meta": {"version": 1, "frame": "big.sql", "description": "a long frame, to catch a run in the middle"},
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"},
         "meta": {"name": "x_present", "why": "keeps GX busy"}, "severity": "warning"},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0},
         "meta": {"name": "x_not_negative", "why": "keeps GX busy"}, "severity": "warning"},
    ],
}  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_data_quality_child_ends_with_the_worker(broker, worker_factory, tmp_path, signum):
    suites = tmp_path / "expectations"
    suites.mkdir()
    (suites / "big.json").write_text(json.dumps(SUITE))
    (suites / "big.sql").write_text(f"SELECT range AS x FROM range({BIG_ROWS})")
    worker = worker_factory(
        broker.bootstrap, RMM_DQ_FIRST_DELAY="0", RMM_DQ_SECONDS="1", RMM_EXPECTATIONS_DIR=str(suites)
    ).start()
    deadline = time.monotonic() + 90
    while not (kids := [p for p in children(worker.proc.pid) if "rmm_monitor.quality.isolated" in p.cmdline]):
        assert time.monotonic() < deadline, "no data-quality child within 90 s"
        time.sleep(0.05)
    time.sleep(1.0)  # into the run: the child has begun importing GX and reading the frame
    assert all(p.alive() for p in kids), "the child ended before the worker was stopped: the test proves nothing"
    os.kill(worker.proc.pid, signum)
    worker.proc.wait(30)
    # the child gets SIGTERM when the worker dies (or is killed by the worker's stop): gone at once, not after
    # the many seconds its run still had to go
    assert not wait_gone(kids, 3.0), f"the data-quality child outlived the worker ({signum.name})"
