"""The worker: a faust-streaming app that owns the DuckDB store; the composition root of the stream processor.

faust runs the process: the web server (/metrics and the HTTP API of streams/api/), the KPI refresh loop, the
producer for rmm.deadletter and rmm.alerts, the ingest task (streams/ingest.py) that owns the batch consumer, the
alerting task (streams/alerting.py), the data-quality task (streams/quality_task.py), and the broker watch
(streams/outage.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import Optional

import faust

from rmm_monitor.contract import ALERTS_TOPIC
from rmm_monitor.core import clock
from rmm_monitor.core.periods import iso, parse_period
from rmm_monitor.core.settings import Settings, current
from rmm_monitor.kpi import Engine
from rmm_monitor.kpi.incremental import IncrementalKpis, rows_bytes

from . import api, dashboard_page
from .alerting import Alerting
from .ingest import BatchIngestor, StoreThreads, tune_gc
from .outage import BrokerWatch, ClientLogThrottle, StopDeadline, install_throttle
from .quality_task import DqTask
from .telemetry import WorkerMetrics

log = logging.getLogger("rmm.worker")


class _App(faust.App):
    """faust starts `app.task`s only after its own consumer group has joined (~3 s on tansu). The ingest task
    owns a separate consumer group, so it starts at app start instead and the two joins overlap."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.early_tasks: list = []

    async def on_first_start(self) -> None:
        await super().on_first_start()
        for task in self.early_tasks:
            self.add_future(task())


class RefreshPacer:
    """Keeps the KPI refresh to at most `share` of the reader thread's time. A refresh over a big store outlasts
    the timer's interval (~19 s at 10 M events against 5 s): unpaced it ran back to back, and its DuckDB threads
    took the cores that ingest and the API need. After a refresh that took d seconds the next one waits until
    d * (1 / share - 1) seconds have passed; a small store refreshes at the timer's pace, as before."""

    def __init__(self, share: float = 0.5):
        if not 0 < share <= 1:
            raise ValueError("the refresh share must be in (0, 1]")
        self.share = share
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def done(self, started: float, ended: float) -> None:
        self.next_at = ended + (ended - started) * (1 / self.share - 1)


class Worker:
    """Wires the faust app to the store, the ingest task and the HTTP API."""

    def __init__(self, settings: Optional[Settings] = None):
        self.settings = s = settings or current()
        self.metrics = WorkerMetrics()
        self.stores = StoreThreads(s.db, s.duckdb_memory_limit)
        self.kpi_rows: list[dict] = []
        self.refreshes = 0  # KPI refreshes completed; the alerts judged refresh number alerting.evaluated
        self.stored_count = 0
        self.pacer = RefreshPacer(s.refresh_share)
        self.kpi_state = IncrementalKpis()  # used on the reader thread only
        # refreshes that found the known events changed (stored, or known only now): the data-quality run skips a
        # store whose known events are those it last checked. A window that closed with time changes KPI rows, not
        # what the suites read.
        self.data_epoch = 0
        self._verify_at = time.monotonic() + s.refresh_verify_seconds  # the first check an interval after start
        self._stored_at_refresh = -1.0  # events counted stored when the last refresh that looked began
        self._looked_at = -float("inf")  # when (monotonic) the last refresh that looked at the store began
        self.app = _App(
            s.app_id,
            broker=f"kafka://{s.bootstrap}",
            web_host=s.web_host,
            web_port=s.web_port,
            web_bind=s.web_host,
            datadir=os.path.join(os.path.dirname(os.path.abspath(s.db)), ".faust-" + s.app_id),
            autodiscover=False,
            topic_allow_declare=False,
            topic_disable_leader=True,
            broker_rebalance_timeout=4,
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            producer_acks=-1,
            web_enabled=True,
            store="memory://",
        )
        self.ingestor = BatchIngestor(s, self.stores, self.metrics, self._send)
        self.log_throttle = ClientLogThrottle()
        self.broker_watch = BrokerWatch(s.bootstrap, self.log_throttle)
        self.alerts_topic = self.app.topic(ALERTS_TOPIC, value_serializer="raw", key_serializer="raw")
        self.dq = DqTask(self)  # the periodic data-quality run
        self.alerting = Alerting(self)  # signal evaluation and the notification outbox
        # the page first: faust's own index also claims "/", and aiohttp serves the first route that matches
        dashboard_page.register(self.app)
        self.auth = api.auth.Auth(self.stores, self.metrics, s.token_ttl_hours)  # users and roles (access/)
        api.kpis.register(self.app, self, self.auth)
        api.alerts.register(self.app, self.alerting, self.auth)
        api.quality.register(self.app, self.dq, self.auth)
        api.export.register(self.app, self.stores, self.auth)
        api.access.register(self.app, self.stores, self.auth, s.bootstrap_token)
        self.app.agent(self.alerts_topic, name="alert-fanout")(self._alert_fanout)
        self.app.early_tasks.append(self._ingest)
        self.app.early_tasks.append(self.broker_watch.run)
        self.app.task(self._refresh_loop)

    # --- faust tasks ---------------------------------------------------------------------------------------
    async def _send(self, topic: str, key: Optional[bytes], value: bytes, headers: list):
        return await self.app.producer.send(topic, key, value, None, None, headers)

    async def _alert_fanout(self, stream) -> None:
        """Low-volume agent reading rmm.alerts back (faust agents are fine at this rate): counts what reached
        the topic (rmm_alerts_seen_total). Delivery itself runs from the DuckDB outbox (streams/alerting.py);
        faust also needs at least one subscribed topic for its own consumer to start."""
        async for _value in stream:
            self.metrics.alerts_seen.inc()

    async def _ingest(self) -> None:
        try:
            await self.stores.open()
            self._write_sidecar()
            await self.refresh()
            tune_gc()
            await self.ingestor.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.critical("ingest stopped, offsets of the failed batch are not committed: %s", exc)
            await self.app.crash(exc)
            raise

    async def _refresh_loop(self) -> None:
        """Every refresh_seconds, a refresh if the pacer allows one. A loop of our own rather than a faust timer,
        which logs a warning at every tick that a refresh outlasts (a second or more on a big or busy store)."""
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            if self.stores.store is not None and self.pacer.due(time.monotonic()):
                await self.refresh()

    async def refresh(self) -> None:
        """Bring the catalog's rows for the judged period (the current quarter unless RMM_PERIOD names another),
        programme and per site, up to now for /metrics and the alerts: only what new events or closed windows
        changed is recomputed (kpi/incremental.py), and nothing when nothing could have changed."""
        started = time.monotonic()
        verify = self.settings.refresh_verify_seconds > 0 and started >= self._verify_at
        stored = self.metrics.total(self.metrics.ingested)  # counted after each commit: never ahead of the store
        if not verify and stored == self._stored_at_refresh and self._time_can_wait(started):
            # nothing stored since the last refresh began, and nothing came due (or it waits for the next recheck):
            # not even a look at the store
            self._after(self.kpi_rows, "unchanged", self.stored_count, started, news=False)
            return
        self._looked_at = started
        try:
            rows, mode, count, check, news = await self.stores.read(
                self._compute_snapshot, self.settings.judged_period or None, verify
            )
        except Exception:
            log.exception("KPI refresh failed")
            return
        finally:
            self.pacer.done(started, time.monotonic())
        self._stored_at_refresh = stored
        if check is not None:
            self._verify_at = started + self.settings.refresh_verify_seconds
            self.metrics.refresh_checks.labels(check).inc()
        self._after(rows, mode, count, started, news)

    def _time_can_wait(self, started: float) -> bool:
        """With no new event: whether the last rows may stand. They hold until something comes due; once it has,
        they stand until RMM_RECHECK_SECONDS after the last look (a closed window shows within that)."""
        if self.kpi_state.holds(clock.now()):
            return True
        return self.kpi_state.state is not None and started - self._looked_at < self.settings.recheck_seconds

    def _after(self, rows: list[dict], mode: str, count: int, started: float, news: bool) -> None:
        self.kpi_rows = rows
        self.refreshes += 1
        if news:
            self.data_epoch += 1
        self.metrics.refreshes.labels(mode).inc()
        self.metrics.kpis.rows = rows
        self.stored_count = count
        self.metrics.stored.set(count)
        self.metrics.refresh_seconds.set(time.monotonic() - started)
        self.metrics.refresh_timestamp.set(time.time())
        self.alerting.after_refresh(rows, self.refreshes, changed=mode != "unchanged")

    def _compute_snapshot(
        self, con, period: Optional[str], verify: bool
    ) -> tuple[list[dict], str, int, Optional[str], bool]:
        """On the reader thread (the refresh's scratch tables are TEMP tables of its connection). With `verify`, the
        catalog is also computed in full in the same snapshot and compared byte for byte: a difference is logged with
        the first differing row, counted, and the full rows win (what was kept is dropped and rebuilt)."""
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            snap = self.kpi_state.refresh(con, period=period, by="site", in_transaction=True)
            mode = self.kpi_state.stats.mode
            # a full computation may follow news nobody counted (the first, a reset); after that, the changed events
            news = mode == "full" or self.kpi_state.stats.changed_events > 0
            check = None
            rows = snap.rows
            if verify:
                full = Engine(con, in_transaction=True).compute(as_of=snap.as_of, period=period, by="site")
                check = "match" if rows_bytes(full) == rows_bytes(rows) else "mismatch"
                if check == "mismatch":
                    first = next((pair for pair in zip(rows, full) if pair[0] != pair[1]), (len(rows), len(full)))
                    log.error("incremental KPI rows differ from a full recompute; the full rows stand: %s", first)
                    self.kpi_state.reset(con)
                    rows = full
            # the ledger's count: every stored event has one row (the events view would scan every topic table)
            count = con.execute("SELECT count(*) FROM event_keys").fetchall()[0][0]
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
        con.execute("COMMIT").fetchall()
        self.kpi_state.compact(con)  # compress the kept units it wrote (outside the transaction)
        return rows, mode, count, check, news

    def status(self) -> dict:
        m = self.metrics
        return {
            "ingested": int(m.total(m.ingested)),
            "rejected": int(m.total(m.rejected)),
            "duplicates": int(m.total(m.duplicates)),
            "batches": int(m.total(m.batches)),
            "stored": self.stored_count,
            "db": os.path.abspath(self.settings.db),
            "bootstrap": self.settings.bootstrap,
            "web": self.settings.web_url,
            "broker_up": self.broker_watch.up,
            "assigned_partitions": self.ingestor.assigned(),
            "now": iso(clock.now()),
            "period": parse_period(self.settings.judged_period or None, clock.now()).label,
            "clock": "controlled" if clock.is_controlled() else "wall",
            # a client that must see alerts judged on data it knows is stored waits until `alerts_evaluated` is
            # two past the `kpi_refreshes` it read once that data was in (the next refresh may have been running
            # already); the demo does, before its final line
            "kpi_refreshes": self.refreshes,
            "alerts_evaluated": self.alerting.evaluated,
            "dq_current": self.dq.current,  # the periodic data-quality results cover every event known now
        }

    def _write_sidecar(self) -> None:
        with open(self.settings.sidecar, "w") as fh:
            json.dump(
                {
                    "url": self.settings.web_url,
                    "pid": os.getpid(),
                    "started_at": datetime.now(timezone.utc).isoformat(),
                },
                fh,
            )

    def remove_sidecar(self) -> None:
        try:
            os.unlink(self.settings.sidecar)
        except OSError:  # never written (e.g. the DB path was unusable); nothing to remove
            pass


class _FaustWorker(faust.Worker):
    """faust's process runner, with two additions: the Kafka clients' log is throttled once logging is set up, and a
    stop (SIGTERM, SIGINT) ends the process within `stop_grace` seconds even when the broker is gone."""

    def __init__(self, worker: Worker, **kwargs):
        super().__init__(worker.app, **kwargs)
        self.rmm = worker
        self.deadline = StopDeadline(worker.settings.stop_grace, on_expiry=worker.remove_sidecar)

    def _setup_logging(self) -> None:
        super()._setup_logging()
        install_throttle(self.rmm.log_throttle)
        if clock.is_controlled():
            log.warning("clock set by %s: the worker's now is %s", clock.ENV, iso(clock.now()))

    def _schedule_shutdown(self, signal) -> None:
        self.deadline.arm()
        super()._schedule_shutdown(signal)


def run_worker(settings: Optional[Settings] = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    settings = settings or current()
    # faust's datadir lives beside the DB and faust creates it first; without this check an unusable DB path
    # surfaces as a bare NotADirectoryError/PermissionError from faust instead of a store error naming the DB.
    try:
        os.makedirs(os.path.dirname(os.path.abspath(settings.db)), exist_ok=True)
    except OSError as exc:
        print(f"rmm worker: cannot open {settings.db}: {exc}", file=sys.stderr)
        return 2
    worker = Worker(settings)
    fw = _FaustWorker(
        worker, loglevel=worker.settings.log_level, quiet=True, override_logging=True, redirect_stdouts=False
    )
    try:
        fw.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        worker.stores.close()
        worker.remove_sidecar()
    return 0
