"""Shared pieces of the reliability suite: the 50 k-event stream, its clean reference result, Kafka helpers.

The reference is a clean `rmm replay` of the same events into a fresh DuckDB file, and `rmm kpis` over it, at a
fixed as-of time and period, so the result does not depend on when the suite runs.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from random import Random

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from rmm_monitor.dev import simulate
from rmm_monitor.dev.producer import event_key

from support.workers import http_text, run_cli

END = datetime(2026, 9, 30, tzinfo=timezone.utc)
AS_OF = "2026-09-30T00:00:00Z"
PERIOD = "all"
GROUP = "rmm-ingest"  # Settings().group_id default; the worker's committed offsets live here


def stream_events(target: int = 50_000, resend_share: float = 0.03, seed: int = 8) -> list[dict]:
    """~target simulated events with the simulator's own duplicates plus `resend_share` extra re-sends of
    earlier events (at-least-once sources), deterministic."""
    events = simulate.generate(seed=seed, patients=max(1, round(target / 15.3)), end=END)
    rng = Random(seed)
    out = list(events)
    for _ in range(int(len(events) * resend_share)):
        pos = rng.randrange(len(out))
        out.insert(pos, out[rng.randrange(pos + 1)])
    return out


def unique_count(events: list[dict]) -> int:
    return len({e["event_id"] for e in events})


def records(events: list[dict]) -> list[tuple[str, bytes, bytes]]:
    return [(simulate.topic_of(e), event_key(e), json.dumps(e, separators=(",", ":")).encode()) for e in events]


def clean_run(events: list[dict], workdir: Path) -> tuple[int, list[dict]]:
    """(stored events, KPI rows by site) of a clean replay: the reference every test compares with."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "clean.jsonl"
    simulate.to_jsonl(events, src)
    db = workdir / "clean.duckdb"
    out = run_cli("replay", str(src), "--db", str(db))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    return summary["accepted"], kpis_cli(db)


def kpis_cli(db: Path) -> list[dict]:
    out = run_cli("kpis", "--db", str(db), "--as-of", AS_OF, "--period", PERIOD, "--by", "site", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def kpis_http(url: str) -> list[dict]:
    return json.loads(http_text(f"{url}/api/kpis?as_of={AS_OF}&period={PERIOD}&by=site", timeout=60))


def metric(url: str, name: str) -> float | None:
    """Sum of all samples of one metric in the worker's /metrics (None when absent)."""
    values = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([-0-9.e+]+)$", http_text(url + "/metrics"), re.M)
    return sum(float(v) for v in values) if values else None


def committed_offsets(bootstrap: str, group: str = GROUP) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id="rel-offsets")
    try:
        got = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in got.items() if meta.offset >= 0}


def end_offsets(recs: list[tuple[str, bytes, bytes]]) -> dict[tuple[str, int], int]:
    """End offset of each (one-partition) input topic after `recs` were produced to a fresh broker. Counted, not
    asked: tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1, not the high watermark."""
    ends: dict[tuple[str, int], int] = {}
    for topic, _, _ in recs:
        ends[(topic, 0)] = ends.get((topic, 0), 0) + 1
    return ends


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Every record of a one-partition topic from the start, until `expected` arrived or `timeout` passed."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                got.extend(batch)
        # anything beyond `expected` is a bug too (a record dead-lettered twice): drain what is already there
        for batch in consumer.poll(timeout_ms=1000).values():
            got.extend(batch)
    finally:
        consumer.close()
    return got
