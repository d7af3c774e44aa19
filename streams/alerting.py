"""Alerting inside the worker: signal evaluation, the delivery outbox and the operator API.

- Evaluation runs in its own task, woken after each KPI refresh and after batches that stored AE or training
  events (the ingestor's on_batch hook only sets a flag, so ingest never waits for it). Reads (KPI rows, failing
  units, the event-signal plan) go to the reader thread; only writes (fire, resolve, close), when a plan has any,
  go to the writer thread, so ingest does not wait behind the reads. Never DuckDB on the loop.
- Notifications are rows of the `alert_deliveries` outbox, written in the same transaction as the alert, so a
  channel that is down (or a crash) loses nothing; the dispatcher task retries each with exponential backoff.
  Channels are delivered concurrently, so a slow SMTP server does not delay the webhook or Kafka.
- The operator API over these records (list, show, acknowledge, resolve, start, close) is streams/api/alerts.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Optional

from prometheus_client import Counter, Gauge

from rmm_monitor.alerting import channels as C
from rmm_monitor.alerting import records as A
from rmm_monitor.alerting import signals as S
from rmm_monitor.contract import ALERTS_TOPIC
from rmm_monitor.core import clock
from rmm_monitor.core.settings import CHANNELS
from rmm_monitor.kpi import Engine, adverse_outcomes, load_catalog

log = logging.getLogger("rmm.alerting")
_WAKE_TOPICS = ("rmm.ae", "rmm.training", "rmm.site")  # AE clusters, safety information, releases, findings
DISPATCH_IDLE = 0.5  # the shortest pause between two outbox rounds
DISPATCH_MAX_IDLE = 30.0  # the longest: a safety net, every change to the outbox also wakes the loop
EVAL_MIN_INTERVAL = 1.0
IDLE_RECHECK_S = 60.0


def _now() -> datetime:
    return clock.now()


class AlertMetrics:
    def __init__(self, registry):
        self.deliveries = Counter(
            "rmm_alert_deliveries",
            "Notification delivery attempts by channel and result",
            ["channel", "result"],
            registry=registry,
        )
        self.pending = Gauge(
            "rmm_alert_delivery_pending", "Notifications not yet delivered (retrying)", ["channel"], registry=registry
        )
        self.fired = Counter("rmm_alerts_fired", "Alerts fired, by signal", ["signal"], registry=registry)
        self.open = Gauge("rmm_alerts_open", "Alerts not resolved, by signal", ["signal"], registry=registry)
        self.cases_open = Gauge("rmm_review_cases_open", "Review cases not closed", registry=registry)
        self.eval_errors = Counter("rmm_alert_evaluation_errors", "Signal evaluations that failed", registry=registry)
        for ch in CHANNELS:
            self.pending.labels(ch).set(0)
            for result in ("ok", "error"):
                self.deliveries.labels(ch, result)
        for sig in S.SIGNALS:
            self.fired.labels(sig)
            self.open.labels(sig).set(0)


def _breach_key(row: dict) -> tuple:
    return row["kpi"], row["period"], row["product"], row.get("site_id")


class Alerting:
    def __init__(self, worker):
        self.worker = worker
        self.stores = worker.stores
        self.channels = worker.settings.channels
        self.enabled = self.channels.enabled
        self.rule = S.ClusterRule.from_config()
        self.catalog = load_catalog()
        self.metrics = AlertMetrics(worker.metrics.registry)
        self._rows: Optional[list[dict]] = None
        self._rows_refresh = 0
        self.evaluated = 0  # the number of the last KPI refresh whose rows were judged
        # Whether anything an evaluation reads may have changed since the last one: new events, KPI rows that
        # changed. An idle worker skips the reads (~0.2 s at 10 M events) and judges again at least every
        # IDLE_RECHECK_S, which also catches what an operator changed (a resolved alert whose KPI still breaches).
        self._stale = True
        self._judged_at = 0.0
        self._wake = asyncio.Event()
        self._deliver_now = asyncio.Event()
        self._smtp = ThreadPoolExecutor(1, thread_name_prefix="smtp")
        self._http = None
        self._chained = worker.ingestor.on_batch  # keep a hook another part may have installed
        worker.ingestor.on_batch = self.on_batch
        worker.app.task(self._evaluate_loop)
        worker.app.task(self._dispatch_loop)

    # --- hooks --------------------------------------------------------------------------------------------------
    async def on_batch(self, outcome) -> None:
        if self._chained is not None:
            await self._chained(outcome)
        if outcome.inserted_by_topic:
            self._stale = True
        if any(outcome.inserted_by_topic.get(t) for t in _WAKE_TOPICS):
            self._wake.set()

    def after_refresh(self, rows: list[dict], refresh: int = 0, changed: bool = True) -> None:
        """`changed` False: the refresh found no new event and no closed window, so its rows are the last ones."""
        self._rows, self._rows_refresh = rows, refresh
        self._stale = self._stale or changed
        self._wake.set()

    # --- evaluation ---------------------------------------------------------------------------------------------
    async def _evaluate_loop(self) -> None:
        while self.stores.store is None:
            await asyncio.sleep(0.1)
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            try:
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.eval_errors.inc()
                log.exception("signal evaluation failed; retried at the next refresh")
            # Wake-ups during a burst of batches coalesce into one evaluation per interval, so evaluation never
            # takes more than a small share of the writer thread from ingest.
            await asyncio.sleep(max(0.0, EVAL_MIN_INTERVAL - (time.monotonic() - started)))

    async def evaluate(self) -> None:
        now = _now()
        fired: list[str] = []
        rows, self._rows = self._rows, None
        refresh = self._rows_refresh
        if not self._stale and time.monotonic() - self._judged_at < IDLE_RECHECK_S:
            if rows is not None:
                self.evaluated = refresh  # the same rows and events as the last evaluation judged
            return
        self._stale, self._judged_at = False, time.monotonic()
        if rows is not None:
            open_keys = await self.stores.read(lambda con: A.open_alert_keys(con, S.KPI_BREACH))
            new, recovered = S.plan_kpi_breaches(rows, self.catalog, open_keys)
            if new or recovered:
                units = await self.stores.read(self._failing_units, new)
                plan = [(row, units[_breach_key(row)]) for row in new]
                result = await self.stores.write(
                    S.apply_kpi_plan, self.stores.store.con, self.catalog, plan, recovered, self.enabled, now
                )
                fired += result["fired"]
        plan = await self.stores.read(S.plan_events, self.rule)
        if plan:
            result = await self.stores.write(S.apply_event_plan, self.stores.store.con, plan, self.enabled, now)
            fired += result["fired"]
        for alert_id in fired:
            log.warning("alert %s fired", alert_id)
        signals = await self.stores.read(lambda con, ids: [A.get_alert(con, i)["signal"] for i in ids], fired)
        for sig in signals:
            self.metrics.fired.labels(sig).inc()
        await self.update_gauges()
        if rows is not None:
            self.evaluated = refresh
        if fired:
            self._deliver_now.set()

    def _failing_units(self, con, rows: list[dict]) -> dict[tuple, list[dict]]:
        """Each new breach's first failing units (at most TOP_UNITS), one run of a KPI's SQL for all its breaches."""
        engine = Engine(con, self.catalog)
        wanted: dict[tuple[str, str], list[tuple[str, Optional[str]]]] = {}
        for row in rows:
            wanted.setdefault((row["kpi"], row["period"]), []).append((row["product"], row.get("site_id")))
        found: dict[tuple, list[dict]] = {}
        for (kpi_id, period), keys in wanted.items():
            top = engine.top_units(
                kpi_id, keys, S.TOP_UNITS, period=period, outcomes=adverse_outcomes(engine.kpi(kpi_id))
            )
            found.update({(kpi_id, period, *key): units for key, units in top.items()})
        return found

    async def update_gauges(self) -> None:
        (open_alerts, open_cases), pending = await self.stores.read(
            lambda con: (A.open_counts(con), A.pending_by_channel(con))
        )
        for sig in S.SIGNALS:
            self.metrics.open.labels(sig).set(open_alerts.get(sig, 0))
        self.metrics.cases_open.set(open_cases)
        for ch in CHANNELS:
            self.metrics.pending.labels(ch).set(pending.get(ch, 0))

    # --- delivery -----------------------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while self.stores.store is None:
            await asyncio.sleep(0.1)
        while True:
            try:
                await self.dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert dispatch failed; retrying")
            try:
                await asyncio.wait_for(self._deliver_now.wait(), await self._until_next_attempt())
            except asyncio.TimeoutError:
                pass
            self._deliver_now.clear()

    async def _until_next_attempt(self) -> float:
        """Seconds until the outbox's next retry is due. Only this process adds to the outbox, and it sets
        `_deliver_now` when it does, so an idle worker need not poll it (it did, twice a second)."""
        try:
            nxt = await self.stores.read(A.next_attempt_at)
        except Exception:
            log.debug("outbox read failed; polling", exc_info=True)
            return DISPATCH_IDLE
        if nxt is None:
            return DISPATCH_MAX_IDLE
        return min(DISPATCH_MAX_IDLE, max(DISPATCH_IDLE, (nxt - _now()).total_seconds()))

    async def dispatch_once(self) -> None:
        due = await self.stores.read(A.due_deliveries, _now())
        if not due:
            return
        by_channel: dict[str, list[dict]] = {}
        for d in due:
            by_channel.setdefault(d["channel"], []).append(d)
        if self.worker.broker_watch.up is False:
            # the broker is known to be away: its notifications wait in the outbox, untried (each try would fail and
            # be logged); they go out when it is back
            by_channel.pop("kafka", None)
        await asyncio.gather(*(self._deliver_all(ch, ds) for ch, ds in by_channel.items()))
        await self.update_gauges()

    async def _deliver_all(self, channel: str, deliveries: list[dict]) -> None:
        for d in deliveries:
            doc = C.payload(d["delivery_id"], d["notification"], d["alert"], d["case"])
            try:
                await self._send(channel, doc)
            except Exception as exc:  # every failure is retried; the reason is kept on the outbox row
                self.metrics.deliveries.labels(channel, "error").inc()
                pause = self.channels.backoff(d["attempts"] + 1)
                log.warning(
                    "delivery %s failed (attempt %d, next in %.0fs): %s",
                    d["delivery_id"],
                    d["attempts"] + 1,
                    pause,
                    exc,
                )
                await self.stores.write(
                    A.mark_failed,
                    self.stores.store.con,
                    d["delivery_id"],
                    str(exc)[:500],
                    _now() + timedelta(seconds=pause),
                )
                if channel != "kafka":
                    break  # the receiver is down: do not hammer it with the rest of this round
                continue
            self.metrics.deliveries.labels(channel, "ok").inc()
            await self.stores.write(A.mark_delivered, self.stores.store.con, d["delivery_id"], _now())

    async def _send(self, channel: str, doc: dict) -> None:
        s = self.channels
        if channel == "kafka":
            ack = await asyncio.wait_for(
                self.worker._send(ALERTS_TOPIC, doc["alert_id"].encode(), C.encode(doc), []), s.timeout
            )
            await asyncio.wait_for(ack, s.timeout)
        elif channel == "email":
            await asyncio.get_running_loop().run_in_executor(
                self._smtp, C.send_email, doc, s, self.worker.settings.lang
            )
        elif channel == "webhook":
            if self._http is None:
                import aiohttp

                self._http = aiohttp.ClientSession()
            await C.send_webhook(self._http, doc, s)
        else:
            raise C.DeliveryError(f"unknown channel {channel!r}")

    async def changed(self) -> None:
        """An operator changed an alert or a case: refresh the gauges and deliver what it queued, now."""
        await self.update_gauges()
        self._deliver_now.set()
