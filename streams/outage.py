"""A broker outage in the worker's log: one line when the broker goes away, one a minute while it stays away, one
when it is back; and a stop that never waits on a broker that is gone.

Without this, aiokafka logs every failed reconnect of each of the worker's clients (the ingest consumer, faust's
own consumer, the producer) at ERROR: ~100 lines a second, 52,000 lines in ten minutes of one outage, none of
them saying more than the first. `ClientLogThrottle` lets one record per message template through each minute and
counts the rest; `BrokerWatch` writes the outage's own three kinds of line from a TCP probe of the bootstrap
servers, so the log tells an operator when it started, that it goes on, and when it ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from typing import Callable, Optional

log = logging.getLogger("rmm.broker")

# The Kafka clients' loggers: aiokafka (ingest consumer, producer, and faust's consumer thread) and faust's
# transport layer above it.
CLIENT_LOGGERS = ("aiokafka", "kafka", "faust.transport")


class ClientLogThrottle(logging.Filter):
    """At most one record per (logger, message template) per `every` seconds from the Kafka clients' loggers at
    WARNING and above; the next record let through says how many were held back. Other loggers pass untouched."""

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every = every
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # faust's consumer runs in a thread of its own
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(CLIENT_LOGGERS):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._held[key] = self._held.get(key, 0) + 1
                self.suppressed += 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.every:.0f} s not logged]"
        return True


def install_throttle(throttle: ClientLogThrottle) -> None:
    """On every handler of the root logger: records of child loggers reach handlers without passing the filters of
    their ancestors' loggers, so a filter on the `aiokafka` logger would miss `aiokafka.conn`."""
    for handler in logging.getLogger().handlers:
        if throttle not in handler.filters:
            handler.addFilter(throttle)


def _endpoints(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in bootstrap.split(","):
        part = part.strip().removeprefix("kafka://")
        host, _, port = part.rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


class BrokerWatch:
    """Probes the bootstrap servers (a TCP connect) every `interval` seconds and logs the outage's transitions."""

    def __init__(
        self,
        bootstrap: str,
        throttle: Optional[ClientLogThrottle] = None,
        interval: float = 1.0,
        remind_every: float = 60.0,
    ):
        self.bootstrap = bootstrap
        self.endpoints = _endpoints(bootstrap)
        self.throttle = throttle
        self.interval = interval
        self.remind_every = remind_every
        self.up: Optional[bool] = None  # None until the first probe
        self.down_since: Optional[float] = None
        self._reminded_at = 0.0
        self._suppressed_at_down = 0

    async def reachable(self) -> bool:
        for host, port in self.endpoints:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=min(1.0, self.interval))
            except (OSError, asyncio.TimeoutError):
                continue
            writer.close()
            return True
        return False

    def _suppressed_since_down(self) -> int:
        return (self.throttle.suppressed if self.throttle else 0) - self._suppressed_at_down

    def observe(self, reachable: bool, now: float) -> None:
        """One probe's result: log a transition, or the minute's reminder while down."""
        if reachable:
            if self.up is False and self.down_since is not None:
                log.warning(
                    "broker %s reachable again after %.0f s (%d Kafka client errors not logged meanwhile)",
                    self.bootstrap,
                    now - self.down_since,
                    self._suppressed_since_down(),
                )
            self.up, self.down_since = True, None
            return
        if self.up is not False:
            self.up, self.down_since, self._reminded_at = False, now, now
            self._suppressed_at_down = self.throttle.suppressed if self.throttle else 0
            log.error("broker %s unreachable; ingest waits, nothing is committed until it is back", self.bootstrap)
        elif self.down_since is not None and now - self._reminded_at >= self.remind_every:
            self._reminded_at = now
            log.error(
                "broker %s still unreachable after %.0f s (%d Kafka client errors not logged)",
                self.bootstrap,
                now - self.down_since,
                self._suppressed_since_down(),
            )

    async def run(self) -> None:
        while True:
            self.observe(await self.reachable(), time.monotonic())
            await asyncio.sleep(self.interval)


class StopDeadline:
    """Ends the process `grace` seconds after a stop was asked for, if it has not ended by itself.

    faust's graceful stop waits on its Kafka clients, and with the broker gone they retry for minutes (a worker
    sat 30 s and more in the consumer's stop). Ending the process then is safe by the ingest design: a batch whose
    offsets were not committed is fetched again and the store ignores the event_ids it already holds, exactly as
    after a crash. The DuckDB file is consistent at every commit."""

    def __init__(self, grace: float, on_expiry: Optional[Callable[[], None]] = None):
        self.grace = grace
        self.on_expiry = on_expiry
        self._armed = False

    def arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        threading.Thread(target=self._expire, name="stop-deadline", daemon=True).start()

    def _expire(self) -> None:
        time.sleep(self.grace)
        log.warning(
            "stop did not finish within %.0f s (broker unreachable?); exiting now. Uncommitted batches "
            "are fetched again on the next start and stored once.",
            self.grace,
        )
        if self.on_expiry is not None:
            try:
                self.on_expiry()
            except Exception:  # the exit below must happen whatever the clean-up does
                log.exception("clean-up before the forced exit failed")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing more to say there
                pass
        os._exit(0)
