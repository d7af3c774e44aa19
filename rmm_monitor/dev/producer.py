"""Producing events to Kafka with kafka-python (the outside client, as source systems would)."""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, Iterable, Optional

from rmm_monitor.contract import TOPIC_OF_TYPE


def event_key(event: dict) -> bytes:
    """Keyed by patient (or site) so one patient's events stay in order on one partition."""
    return str(event.get("patient_ref") or event.get("site_id") or event.get("event_id")).encode()


def make_producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        client_id="rmm-simulator",
        retries=5,
    )


def produce_events(
    events: Iterable[dict],
    bootstrap: str,
    rate: float = 0.0,
    progress: Optional[Callable[[int], None]] = None,
    producer=None,
    stop: Optional[threading.Event] = None,
) -> int:
    """Send events to their contract topics; `rate` events/s (0 = as fast as possible); `stop` ends the stream
    early (what was sent is flushed). Returns the count sent."""
    own = producer is None
    producer = producer or make_producer(bootstrap)
    sent = 0
    started = time.monotonic()
    try:
        for event in events:
            topic = TOPIC_OF_TYPE.get(str(event.get("event_type")), "rmm.site")
            producer.send(topic, key=event_key(event), value=json.dumps(event, separators=(",", ":")).encode())
            sent += 1
            if stop is not None and sent % 100 == 0 and stop.is_set():
                break
            if rate > 0 and sent % 100 == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if progress is not None and sent % 1000 == 0:
                progress(sent)
        producer.flush()
    finally:
        if own:
            producer.close()
    if progress is not None:
        progress(sent)
    return sent


def produce_raw(records: Iterable[tuple[str, Optional[bytes], bytes]], bootstrap: str) -> int:
    """Send (topic, key, value) records as they are — for tests that need invalid bytes on a topic."""
    producer = make_producer(bootstrap)
    n = 0
    try:
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
            n += 1
        producer.flush()
    finally:
        producer.close()
    return n
