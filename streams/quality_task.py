"""The worker's data-quality task: runs the Great Expectations suites on a timer, off the ingest path.

Frames are read on the store's reader thread (an MVCC snapshot; ingest keeps writing), GX runs on a thread of
its own (it is imported there on first use: the import alone takes seconds), and the results go to
`dq_results` in one small write between ingest batches and to `rmm_dq_expectation_success` on /metrics.
The same machinery answers /api/dq (an as-of run for `rmm dq` and the export while the worker owns the DB;
streams/api/quality.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Optional

from rmm_monitor.quality import suites as dq

log = logging.getLogger("rmm.dq")


class DqTask:
    def __init__(self, worker, interval: Optional[float] = None, first_delay: Optional[float] = None):
        self.worker = worker
        self.interval = interval if interval is not None else worker.settings.dq_seconds
        # let ingest catch up after start before the first (GX-importing) run
        self.first_delay = first_delay if first_delay is not None else worker.settings.dq_first_delay
        self._gx = ThreadPoolExecutor(1, thread_name_prefix="gx")
        self._lock = asyncio.Lock()
        self.last: list[dict] = []
        self.runs = 0
        worker.app.task(self._loop)

    async def _loop(self) -> None:
        if self.interval <= 0:
            return
        await asyncio.sleep(self.first_delay)
        checked_epoch = None
        while True:
            # a store in which nothing changed since the last run (no event stored or newly known: the worker's
            # refreshes count those) gives the same results, since the suites read the store as of now only
            # through known_at: an idle worker skips the run
            epoch = self.worker.data_epoch
            if self.worker.stores.store is not None and epoch != checked_epoch:
                checked_epoch = epoch
                try:
                    await self.run_periodic()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("data-quality run failed")
            await asyncio.sleep(self.interval)

    async def evaluate(self, as_of: Optional[datetime] = None, period: Optional[str] = None) -> list[dict]:
        async with self._lock:  # one GX run at a time; a second caller waits rather than doubling the load
            suites = dq.load_suites()
            frames = await self.worker.stores.read(lambda con: dq.build_frames(con, as_of, period, suites))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._gx, dq.validate, frames, suites)

    async def run_periodic(self) -> list[dict]:
        started = time.perf_counter()
        rows = await self.evaluate()
        await self.worker.stores.write(dq.record, self.worker.stores.store.con, rows)
        m = self.worker.metrics
        for r in rows:
            m.dq_success.labels(r["suite"], r["expectation"]).set(1 if r["success"] else 0)
        m.dq_run_seconds.set(time.perf_counter() - started)
        m.dq_run_timestamp.set(time.time())
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
