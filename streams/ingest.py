"""The ingest path: a batch consumer owned by a faust task.

Per fetched batch, three visible steps, in this order (the quix-streams sink pattern):
  1. store    — write the valid events to DuckDB in one transaction (on the store thread, so the event loop
                keeps heartbeating; the contract's msgspec stage runs on the loop before);
  2. reject   — send every refused record to rmm.deadletter (original bytes, context in headers) and wait
                for the broker's acknowledgement;
  3. commit   — commit offsets (last offset + 1 per partition), only now.
A crash anywhere before step 3 redelivers the batch: the store ignores event_ids it already has, so nothing
is lost and nothing is counted twice. Batches overlap only where that cannot break the order: whatever arrives
while one batch is stored is fetched and checked meanwhile, then stored next as one batch (see Backlog), while the
previous batch is dead-lettered and committed. Stores run one at a time and commits in batch order, each after
its own batch's store. Why not faust agents: faust's per-event stream machinery caps at ~0.08x of the raw client
here (bench/README.md); this loop runs at ~0.65-0.85x of the raw-client rate (by run), at the store thread's
pace (bench/). Everything on the event loop holds the GIL, so it is kept short: the store thread waits for it
each time a DuckDB statement returns.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections import Counter as Tally
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from rmm_monitor.contract import DEADLETTER_TOPIC, TOPICS, reason_code
from rmm_monitor.core.settings import Settings
from rmm_monitor.store import (
    BatchOutcome,
    CheckedBatch,
    Store,
    StoreError,
    TerminalStoreError,
    TransientStoreError,
    check_batch,
    merge_checked,
    store_checked,
)

from .telemetry import WorkerMetrics

log = logging.getLogger("rmm.ingest")

WRITE_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between attempts; then the worker stops, offsets uncommitted
CONSUMER_STOP_S = 3.0  # longest wait for the consumer to leave its group on stop
IDLE_CHECKPOINT_S = 2.0  # fold the WAL into the file once the stream has been quiet this long
# A quiet stream is fetched with a long broker wait, a busy one with a short one (see _fetch_into): the short wait
# keeps one event's latency low under load, the long one keeps an idle worker idle.
BUSY_FETCH_WAIT_MS = 50
IDLE_FETCH_WAIT_MS = 300
IDLE_AFTER_S = 2.0  # this long without a record and the stream counts as quiet
# The cyclic collector at its default gen-0 threshold (700 net allocations) ran hundreds of times per 50 k-event
# batch: aiokafka allocates a ConsumerRecord per record, and every run re-walked the batch's long lists while they
# were young. In the ingest benchmark that was ~3 us of CPU per event with the GIL held; at 10 000 it is ~0.5-1.
# Cycles (asyncio's futures make some) are still collected, only in bigger steps.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Set the collector up for batch ingest: what start-up allocated (modules, faust, prometheus) is frozen out of
    the collector's way, then the thresholds are raised. Once per process, after start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class StoreThreads:
    """The DuckDB store behind two single threads: one writer, one reader (its own cursor, MVCC snapshot), so a
    slow KPI query never holds up ingest and no DuckDB call ever runs on the event loop."""

    def __init__(self, path: str, memory_limit: Optional[str] = None):
        self.path = path
        self.memory_limit = memory_limit
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="duckdb-reader")
        self.store: Optional[Store] = None
        self._cursor = None

    async def open(self) -> None:
        store = await self.write(lambda: Store(self.path, memory_limit=self.memory_limit))
        self._cursor = await self.write(lambda: store.con.cursor())
        self.store = store
        await self.read(lambda con: con.execute("SET TimeZone = 'UTC'").fetchall())

    def opened(self) -> Store:
        """The store, once `open` has run (the worker starts nothing that writes before)."""
        if self.store is None:
            raise RuntimeError("the store is not open yet")
        return self.store

    async def write(self, fn: Callable, *args) -> Any:
        return await self.submit_write(fn, *args)

    def submit_write(self, fn: Callable, *args) -> "asyncio.Future[Any]":
        """Queue `fn` on the writer thread now; await the returned future for its result."""
        return asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def read(self, fn: Callable, *args) -> Any:
        """fn(cursor, *args) on the reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, self._cursor, *args)

    def close(self) -> None:
        for pool in (self._reader, self._writer):
            pool.shutdown(wait=True)
        if self._cursor is not None:
            self._cursor.close()
        if self.store is not None:
            self.store.close()


@dataclass
class Flat:
    values: list[bytes]
    keys: list[Optional[bytes]]
    topics: list[str]
    # partition and offset of each record, as two lists of ints: a tuple per record was a GC-tracked object,
    # and tens of thousands alive at once set off the cyclic collector (measured in the ingest benchmark)
    partitions: list[int]
    offsets: list[int]
    next_offsets: dict[TopicPartition, int]  # commit position per partition: last offset + 1

    def where(self, i: int) -> tuple[int, int]:
        """(partition, offset) of record i."""
        return self.partitions[i], self.offsets[i]


def flatten(batch: dict[TopicPartition, list]) -> Flat:
    flat = Flat([], [], [], [], [], {})
    for tp, records in batch.items():
        if not records:
            continue
        flat.values += [r.value if r.value is not None else b"" for r in records]
        flat.keys += [r.key for r in records]
        flat.topics += [tp.topic] * len(records)
        flat.partitions += [tp.partition] * len(records)
        flat.offsets += [r.offset for r in records]
        flat.next_offsets[tp] = records[-1].offset + 1
    return flat


def merge_flats(flats: list[Flat]) -> Flat:
    """Consecutive fetched batches as one; a partition's commit position is its latest."""
    if len(flats) == 1:
        return flats[0]
    joined = Flat([], [], [], [], [], {})
    for f in flats:
        joined.values += f.values
        joined.keys += f.keys
        joined.topics += f.topics
        joined.partitions += f.partitions
        joined.offsets += f.offsets
        joined.next_offsets.update(f.next_offsets)
    return joined


class Backlog:
    """What the fetcher fetched and checked while the store step worked, handed over all at once.

    Under load the store then writes one bigger batch instead of working through a queue of small ones: each
    batch pays the store's fixed cost (~0.1 s for a few hundred events), and with a queue an event waited behind
    every batch ahead of it (0.3-2 s per batch in a trace on a loaded machine; freshness p95 1.2 -> 0.45 s). The
    fetcher stops fetching while `limit` records wait, so memory stays bounded and the broker keeps the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self._items: list[tuple[Flat, CheckedBatch]] = []
        self._records = 0
        self._filled = asyncio.Event()
        self._drained = asyncio.Event()

    async def put(self, flat: Flat, checked: CheckedBatch) -> None:
        while self._records >= self.limit:
            self._drained.clear()
            await self._drained.wait()
        self._items.append((flat, checked))
        self._records += len(flat.values)
        self._filled.set()

    def take(self) -> Optional[tuple[Flat, CheckedBatch]]:
        """Everything waiting, merged in fetch order; None if nothing is."""
        if not self._items:
            return None
        items, self._items, self._records = self._items, [], 0
        self._filled.clear()
        self._drained.set()
        return merge_flats([f for f, _ in items]), merge_checked([c for _, c in items])

    async def wait(self) -> None:
        await self._filled.wait()


@dataclass
class InFlight:
    """A batch whose store step is running on the writer thread."""

    flat: Flat
    started: float
    stored: "asyncio.Future[BatchOutcome]"


Send = Callable[[str, Optional[bytes], bytes, list], Awaitable[Awaitable]]


class BatchIngestor:
    def __init__(
        self,
        settings: Settings,
        stores: StoreThreads,
        metrics: WorkerMetrics,
        send: Send,
        on_batch: Optional[Callable[[BatchOutcome], Awaitable[None]]] = None,
    ):
        self.settings = settings
        self.stores = stores
        self.metrics = metrics
        self.send = send
        self.on_batch = on_batch
        self.consumer: Optional[AIOKafkaConsumer] = None
        self.positions: dict[TopicPartition, int] = {}
        self._wal_dirty = False
        # Evaluated at scrape time: during an outage the ingest loop can sit for minutes inside a commit or a
        # dead-letter send that aiokafka retries, so a value set from the loop would never turn 0.
        metrics.broker_up.set_function(self._broker_up)

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            *TOPICS,
            bootstrap_servers=s.bootstrap,
            group_id=s.group_id,
            client_id="rmm-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.fetch_max_records,
            session_timeout_ms=int(s.session_timeout * 1000),
            heartbeat_interval_ms=1000,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            retry_backoff_ms=200,
            # tansu answers an offset commit after the fetch it is holding open, and answers a long-poll late when
            # records arrive during it: one event's fetch took 113 ms (median) at the default 500 ms wait, 16 ms
            # at 100 and 5.6 ms at 50, for 6 % of a core idle (broker + client) against 4 % at 100
            fetch_max_wait_ms=BUSY_FETCH_WAIT_MS,
        )

    async def run(self) -> None:
        while True:
            self.consumer = self._consumer()
            try:
                await self.consumer.start()
            except KafkaError as exc:  # the outage itself is logged by streams/outage.py, once a minute
                log.debug("consumer start failed (%s); retrying", exc)
                await self._stop_consumer()
                await asyncio.sleep(1.0)
                continue
            try:
                await self._loop()
            finally:
                await self._stop_consumer()

    def _live(self) -> AIOKafkaConsumer:
        """The consumer of the running loop (set before the loop starts, cleared after it ends)."""
        if self.consumer is None:
            raise RuntimeError("no consumer: the ingest loop is not running")
        return self.consumer

    async def _stop_consumer(self) -> None:
        """Bounded: with the broker gone, aiokafka's stop retries leaving the group for as long as it is away, and a
        stop must not wait on that (nothing uncommitted is lost: the broker redelivers it)."""
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self.consumer.stop(), CONSUMER_STOP_S)
            except Exception:  # never connected, or the broker is gone; nothing more to release
                log.debug("consumer stop failed", exc_info=True)
            self.consumer = None

    async def _loop(self) -> None:
        """Two tasks joined by a backlog: the fetcher (getmany + the contract's msgspec stage) keeps fetching while
        the store step works, so the writer thread seldom waits for the broker, and takes all of it when free."""
        backlog = Backlog(self.settings.max_batch)
        fetcher = asyncio.ensure_future(self._fetch_into(backlog))
        try:
            await self._store_from(backlog, fetcher)
        finally:
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)

    async def _fetch_into(self, backlog: Backlog) -> None:
        s = self.settings
        last_record = time.monotonic()
        quiet = False
        while True:
            consumer = self._live()
            wait_ms = max(s.fetch_wait_ms, IDLE_FETCH_WAIT_MS) if quiet else s.fetch_wait_ms
            flat = flatten(await consumer.getmany(timeout_ms=wait_ms, max_records=s.fetch_max_records))
            self._update_lag()
            if flat.values:
                last_record = time.monotonic()
                await backlog.put(flat, check_batch(flat.values, flat.topics))
            if quiet != (time.monotonic() - last_record >= IDLE_AFTER_S):
                quiet = not quiet
                # An idle worker spent ~3 % of a core on 20 empty fetches a second (the 50 ms broker wait); quiet,
                # the broker holds each fetch 300 ms: ~1 % idle, and the first record after a pause still came in
                # ~0.07 s (median of 8; at a 1 s wait tansu answered it after ~0.5 s). aiokafka reads this
                # (private, pinned 0.14) attribute for every fetch request it builds.
                fetcher = getattr(consumer, "_fetcher", None)
                if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
                    fetcher._fetch_max_wait_ms = IDLE_FETCH_WAIT_MS if quiet else BUSY_FETCH_WAIT_MS

    async def _store_from(self, backlog: Backlog, fetcher: asyncio.Future) -> None:
        in_flight: Optional[InFlight] = None
        acking: Optional[asyncio.Future] = None  # dead-letter + commit of the previous batch
        while True:
            if in_flight is None:
                item = await self._next_batch(backlog, fetcher)
                if acking is not None and acking.done():
                    await acking  # surfaces a failed dead-letter send
                    acking = None
                if item is None:
                    await self._checkpoint_if_idle()
                else:
                    in_flight = self._start(*item)
                continue
            outcome = await in_flight.stored  # 1. store (N), done
            if self.settings.failpoint == "after_store":  # crash tests: stored, nothing acknowledged
                os._exit(137)
            waiting = backlog.take()
            following = self._start(*waiting) if waiting else None  # store (N+1) starts now
            if acking is not None:
                await acking  # commits stay in batch order
            acking = asyncio.ensure_future(self._acknowledge(in_flight, outcome))  # 2. reject, 3. commit (N)
            in_flight = following

    @staticmethod
    async def _next_batch(backlog: Backlog, fetcher: asyncio.Future) -> Optional[tuple[Flat, CheckedBatch]]:
        """The backlog, or None after IDLE_CHECKPOINT_S without one; re-raises what stopped the fetcher."""
        filled = asyncio.ensure_future(backlog.wait())
        done, _ = await asyncio.wait({filled, fetcher}, timeout=IDLE_CHECKPOINT_S, return_when=asyncio.FIRST_COMPLETED)
        if filled in done:
            return backlog.take()
        filled.cancel()
        if fetcher in done:
            fetcher.result()
            raise RuntimeError("the fetch task ended")  # it loops forever unless it fails
        return None

    def assigned(self) -> int:
        """How many partitions the ingest consumer holds now (0 until its group has joined, and during a
        rebalance): events produced before then wait in the broker, so a client that wants to see them flow soon
        (the demo before it streams) waits for this."""
        consumer = self.consumer
        return len(consumer.assignment()) if consumer is not None else 0

    def _broker_up(self) -> float:
        # aiokafka never raises from getmany when the broker goes away: it logs, drops the connections and
        # reconnects in the background. Its open connections are the only live signal of an outage, so read them
        # (a private attribute of the pinned aiokafka 0.14; the outage test in tests/streams/ guards it).
        conns = getattr(getattr(self.consumer, "_client", None), "_conns", None)
        return 1.0 if conns and any(c.connected() for c in list(conns.values())) else 0.0

    def _start(self, flat: Flat, checked: CheckedBatch) -> "InFlight":
        # The first attempt goes to the writer thread now, not when the event loop next runs a new task: the loop
        # is often busy parsing a fetch, and the writer sat idle meanwhile.
        first = self.stores.submit_write(store_checked, self.stores.store, checked)
        return InFlight(flat, time.perf_counter(), asyncio.ensure_future(self._store(checked, first)))

    async def _acknowledge(self, job: "InFlight", outcome: BatchOutcome) -> None:
        await self._dead_letter(job.flat, outcome)
        await self._commit(job.flat)
        self._count(job.flat, outcome)
        self.metrics.batch_seconds.observe(time.perf_counter() - job.started)
        self._wal_dirty = True
        if self.on_batch is not None:
            await self.on_batch(outcome)

    async def _store(self, checked: CheckedBatch, attempt_now: "asyncio.Future[BatchOutcome]") -> BatchOutcome:
        """A transient failure (full disk, memory, a conflict) is retried with backoff, offsets uncommitted; a
        terminal one (a SQL or schema error) stops the worker at once: waiting would not make the statement right."""
        for attempt, pause in enumerate((*WRITE_RETRIES, None), start=1):
            try:
                return await attempt_now
            except TerminalStoreError as exc:
                self.metrics.store_errors.inc()
                log.critical(
                    "store write failed and cannot succeed by retrying (a SQL or schema error); stopping "
                    "with the batch's offsets uncommitted: %s",
                    exc,
                )
                raise
            except TransientStoreError as exc:
                self.metrics.store_errors.inc()
                if pause is None:
                    raise
                log.error("store write failed (attempt %d, retry in %.1fs): %s", attempt, pause, exc)
                await asyncio.sleep(pause)
                attempt_now = self.stores.submit_write(store_checked, self.stores.store, checked)
        raise AssertionError("unreachable")

    async def _checkpoint_if_idle(self) -> None:
        """The store checkpoints rarely under load (a big WAL threshold keeps ingest fast); a quiet stream is the
        moment to fold the WAL into the file, so a restart replays little."""
        if not self._wal_dirty:
            return
        self._wal_dirty = False
        try:
            await self.stores.write(self.stores.opened().checkpoint)
        except StoreError as exc:  # e.g. a long KPI read still open; the next quiet moment tries again
            self._wal_dirty = True
            log.info("idle checkpoint deferred: %s", exc)

    async def _dead_letter(self, flat: Flat, outcome: BatchOutcome) -> None:
        if not outcome.rejects:
            return
        now = datetime.now(timezone.utc).isoformat()
        acks = []
        for reject in outcome.rejects:
            i = reject.index
            partition, offset = flat.where(i)
            headers = [
                ("rmm.reason", reject.reason.encode()),
                ("rmm.topic", flat.topics[i].encode()),
                ("rmm.partition", str(partition).encode()),
                ("rmm.offset", str(offset).encode()),
                ("rmm.rejected_at", now.encode()),
            ]
            acks.append(await self.send(DEADLETTER_TOPIC, flat.keys[i], flat.values[i], headers))
        await asyncio.gather(*acks)

    async def _commit(self, flat: Flat) -> None:
        try:
            await self._live().commit(flat.next_offsets)
            self.positions.update(flat.next_offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The batch is stored; it will be redelivered and ignored as duplicates. Nothing is lost.
            self.metrics.commit_errors.inc()
            log.warning("offset commit failed, batch will be redelivered: %s", exc)

    def _count(self, flat: Flat, outcome: BatchOutcome) -> None:
        m = self.metrics
        consumed = Tally(flat.topics)
        for topic, n in consumed.items():
            m.consumed.labels(topic).inc(n)
        # what was consumed less what was refused: per reject, not per record
        valid_topics = consumed - Tally(flat.topics[r.index] for r in outcome.rejects)
        for topic, n in valid_topics.items():
            stored = outcome.inserted_by_topic.get(topic, 0)
            m.ingested.labels(topic).inc(stored)
            if n > stored:
                m.duplicates.labels(topic).inc(n - stored)
        for reason, n in Tally(reason_code(r.reason) for r in outcome.rejects).items():
            m.rejected.labels(reason).inc(n)
        m.mark_batch()

    def _update_lag(self) -> None:
        if self.consumer is None:
            return
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            pos = self.positions.get(tp)
            if pos is None:
                continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))
