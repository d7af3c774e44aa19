"""The worker's data-quality task: runs the Great Expectations suites on a timer, off the ingest path.

The frames are streamed on the store's reader thread (an MVCC snapshot; ingest keeps writing) into Arrow files in
a private temporary directory beside the DuckDB file, and GX validates them in a child process
(rmm_monitor/quality/isolated.py): a run at 10 M stored events holds ~1 GB of frames and GX, and a worker that
ran it in-process kept ~1.7 GB after every run. The results go to `dq_results` in one small write between ingest
batches and to `rmm_dq_expectation_success` on /metrics. The same machinery answers /api/dq (an as-of run for
`rmm dq` and the export while the worker owns the DB; streams/api/quality.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from rmm_monitor.core import clock
from rmm_monitor.core.errors import RmmError
from rmm_monitor.core.procs import die_with_parent
from rmm_monitor.quality import isolated
from rmm_monitor.quality import suites as dq

log = logging.getLogger("rmm.dq")

CHILD_TIMEOUT_S = 900.0  # a run at 10 M stored events validates in ~15 s; a child past this is stuck


class DqRunFailed(RmmError):
    """The validating child failed or timed out (its stderr's tail says why)."""


class DqTask:
    def __init__(self, worker, interval: Optional[float] = None, first_delay: Optional[float] = None):
        self.worker = worker
        self.interval = interval if interval is not None else worker.settings.dq_seconds
        # let ingest catch up after start before the first (GX-importing) run
        self.first_delay = first_delay if first_delay is not None else worker.settings.dq_first_delay
        self._lock = asyncio.Lock()
        self.last: list[dict] = []
        self.runs = 0
        self.covered_epoch: Optional[int] = None  # the worker's data epoch when the last finished run began
        worker.app.task(self._loop)

    @property
    def current(self) -> bool:
        """Whether the last periodic results cover every event known now (/api/status `dq_current`)."""
        return self.covered_epoch == self.worker.data_epoch

    async def _loop(self) -> None:
        if self.interval <= 0:
            return
        await asyncio.sleep(self.first_delay)
        checked_epoch = None
        while True:
            # a store whose known events are the same as at the last run (no event stored or newly known: the
            # worker's refreshes count those) gives the same results, since the suites read the store as of now
            # only through known_at: an idle worker skips the run, also while windows close with time (at 10 M
            # events a run costs ~25 s of CPU)
            epoch = self.worker.data_epoch
            if self.worker.stores.store is not None and epoch != checked_epoch:
                checked_epoch = epoch  # a failed run is not retried until the data changes again
                try:
                    await self.run_periodic()
                    self.covered_epoch = epoch
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("data-quality run failed")
            await asyncio.sleep(self.interval)

    async def evaluate(self, as_of: Optional[datetime] = None, period: Optional[str] = None) -> list[dict]:
        async with self._lock:  # one GX run at a time; a second caller waits rather than doubling the load
            suites = dq.load_suites()
            run_at = clock.now()
            where = os.path.dirname(os.path.abspath(self.worker.settings.db))
            with tempfile.TemporaryDirectory(prefix="rmm-dq-", dir=where) as tmp:  # mode 0700: pseudonyms inside
                await self.worker.stores.read(lambda con: isolated.write_frames(con, Path(tmp), as_of, period, suites))
                return await self._validate_in_child(Path(tmp), run_at)

    @staticmethod
    async def _validate_in_child(frames: Path, run_at: datetime) -> list[dict]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rmm_monitor.quality.isolated",
            str(frames),
            run_at.isoformat(),
            str(dq.expectations_dir()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,  # a worker killed outright takes the child along
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
        except BaseException as exc:  # the worker stops (the task is cancelled) or the child is stuck: end it now
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if isinstance(exc, asyncio.TimeoutError):
                raise DqRunFailed(f"data-quality child still running after {CHILD_TIMEOUT_S:.0f} s: killed") from exc
            raise
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            raise DqRunFailed(f"data-quality child exited {proc.returncode}: {' | '.join(tail)}")
        return isolated.rows_from_json(out.decode())

    async def run_periodic(self) -> list[dict]:
        started = time.perf_counter()
        rows = await self.evaluate()
        await self.worker.stores.write(dq.record, self.worker.stores.store.con, rows)
        m = self.worker.metrics
        for r in rows:
            m.dq_success.labels(r["suite"], r["expectation"]).set(1 if r["success"] else 0)
        m.dq_run_seconds.set(time.perf_counter() - started)
        m.dq_run_timestamp.set(time.time())
        m.dq_runs.inc()
        self.last = rows
        self.runs += 1
        bad = dq.failing(rows, critical_only=True)
        if bad:
            log.warning(
                "data quality: %d critical expectation(s) failing: %s",
                len(bad),
                ", ".join(f"{r['suite']}.{r['expectation']}" for r in bad),
            )
        return rows
