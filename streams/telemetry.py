"""Prometheus metrics of the worker, on its own CollectorRegistry (never the global one).

Label values come from closed sets only: topic, reason code (the part of a reason before ':'), kpi, product,
site, partition — never event ids, patient refs or free text.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from rmm_monitor.kpi import STATUS_CODES


class KpiCollector:
    """Publishes the latest KPI snapshot (computed from DuckDB by the refresh timer, not at scrape time, so a
    scrape never waits on the store). site="" is the programme-wide row of a product."""

    FIELDS = (
        ("value", "rmm_kpi_value", "KPI value (proportion 0..1) for the current quarter"),
        ("numerator", "rmm_kpi_numerator", "KPI numerator (units meeting the success rule)"),
        ("denominator", "rmm_kpi_denominator", "KPI denominator (units whose outcome is known)"),
        ("pending", "rmm_kpi_pending", "Units whose window is still open"),
        ("threshold", "rmm_kpi_threshold", "KPI threshold from the catalog"),
        ("ci_low", "rmm_kpi_ci_low", "Wilson 95% CI lower bound"),
        ("ci_high", "rmm_kpi_ci_high", "Wilson 95% CI upper bound"),
    )

    def __init__(self):
        self.rows: list[dict] = []

    def describe(self) -> Iterable[GaugeMetricFamily]:
        for _, name, doc in self.FIELDS:
            yield GaugeMetricFamily(name, doc, labels=["kpi", "product", "site"])
        yield GaugeMetricFamily(
            "rmm_kpi_status",
            "KPI status: 0 ok, 1 warning, 2 breach, -1 insufficient data",
            labels=["kpi", "product", "site"],
        )

    def collect(self) -> Iterable[GaugeMetricFamily]:
        rows = self.rows
        families = {f: GaugeMetricFamily(name, doc, labels=["kpi", "product", "site"]) for f, name, doc in self.FIELDS}
        status = GaugeMetricFamily(
            "rmm_kpi_status",
            "KPI status: 0 ok, 1 warning, 2 breach, -1 insufficient data",
            labels=["kpi", "product", "site"],
        )
        for row in rows:
            labels = [row["kpi"], row["product"] or "", row["site_id"] or ""]
            for f in families:
                if row.get(f) is not None:
                    families[f].add_metric(labels, float(row[f]))
            status.add_metric(labels, STATUS_CODES[row["status"]])
        yield from families.values()
        yield status


class WorkerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingested = Counter(
            "rmm_events_ingested", "Events stored (first copy of each event_id)", ["topic"], registry=r
        )
        self.duplicates = Counter(
            "rmm_events_duplicate", "Valid events not stored again (event_id already known)", ["topic"], registry=r
        )
        self.rejected = Counter(
            "rmm_events_rejected", "Events refused and sent to rmm.deadletter, by reason code", ["reason"], registry=r
        )
        self.consumed = Counter("rmm_events_consumed", "Records fetched from the input topics", ["topic"], registry=r)
        self.batches = Counter(
            "rmm_batches", "Batches committed (stored, dead-lettered, offsets committed)", registry=r
        )
        self.batch_seconds = Histogram(
            "rmm_batch_duration_seconds",
            "Validate + store + dead-letter + commit time",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.lag = Gauge("rmm_consumer_lag", "Records behind the high watermark", ["topic", "partition"], registry=r)
        self.last_batch = Gauge(
            "rmm_last_batch_timestamp_seconds", "Unix time the last batch was committed", registry=r
        )
        self.store_errors = Counter("rmm_store_write_errors", "Failed DuckDB batch writes (retried)", registry=r)
        self.commit_errors = Counter(
            "rmm_commit_errors", "Offset commits that failed (batch will be redelivered)", registry=r
        )
        self.broker_up = Gauge("rmm_broker_up", "1 while the ingest consumer reaches the broker, else 0", registry=r)
        self.refresh_seconds = Gauge(
            "rmm_kpi_refresh_duration_seconds", "Time of the last KPI catalog refresh", registry=r
        )
        self.refresh_timestamp = Gauge(
            "rmm_kpi_refresh_timestamp_seconds", "Unix time of the last KPI refresh", registry=r
        )
        self.refreshes = Counter(
            "rmm_kpi_refreshes",
            "KPI refreshes by what they recomputed: full (everything), incremental (the units new events or closed "
            "windows changed), unchanged (nothing could have changed: no KPI work)",
            ["mode"], registry=r,
        )  # fmt: skip
        self.refresh_checks = Counter(
            "rmm_kpi_refresh_checks",
            "Incremental refreshes checked against a full recompute, by result (match, mismatch)",
            ["result"], registry=r,
        )  # fmt: skip
        for mode in ("full", "incremental", "unchanged"):
            self.refreshes.labels(mode)
        for result in ("match", "mismatch"):
            self.refresh_checks.labels(result)
        self.alerts_seen = Counter(
            "rmm_alerts_seen", "Messages read back from rmm.alerts by the fan-out agent", registry=r
        )
        self.stored = Gauge("rmm_store_events", "Events in the DuckDB store", registry=r)
        self.auth_failures = Counter(
            "rmm_auth_failures", "Refused credentials: missing, unknown, expired, revoked, disabled, wrong_password",
            ["reason"], registry=r,
        )  # fmt: skip
        self.auth_throttled = Counter(
            "rmm_auth_throttled", "Password checks delayed because of recent failures for the user", registry=r
        )
        self.started = Gauge("rmm_worker_start_time_seconds", "Unix time the worker started", registry=r)
        self._last_batch_at = time.time()  # before the first batch, the age counts from start-up
        self.started.set(self._last_batch_at)
        self.last_batch_age = Gauge(
            "rmm_last_batch_age_seconds", "Seconds since the last committed batch (since start if none)", registry=r
        )
        self.last_batch_age.set_function(self._batch_age)
        # the periodic Great Expectations run (streams/quality_task.py); labels are the committed suite and
        # expectation names (a closed set), 1 = passed, 0 = failed.
        self.dq_success = Gauge(
            "rmm_dq_expectation_success",
            "Last data-quality result per expectation (1 ok, 0 failed)",
            ["suite", "expectation"],
            registry=r,
        )
        self.dq_run_seconds = Gauge("rmm_dq_run_duration_seconds", "Time of the last data-quality run", registry=r)
        self.dq_run_timestamp = Gauge(
            "rmm_dq_run_timestamp_seconds", "Unix time of the last data-quality run", registry=r
        )
        self.dq_runs = Counter(
            "rmm_dq_runs", "Periodic data-quality runs (skipped while the known events stay the same)", registry=r
        )
        # The KPI families change only when the refresh replaces the snapshot, and rendering a few thousand
        # labelled samples on every scrape took ~14 ms of the event loop (the loop that also fetches and
        # commits): they live in their own registry and are rendered once per snapshot.
        self.kpis = KpiCollector()
        self.kpi_registry = CollectorRegistry(auto_describe=True)
        self.kpi_registry.register(self.kpis)
        self._kpi_text: tuple[Optional[list], bytes] = (None, b"")  # (the snapshot it renders, its text)

    def mark_batch(self) -> None:
        self._last_batch_at = time.time()
        self.last_batch.set(self._last_batch_at)
        self.batches.inc()

    def _batch_age(self) -> float:
        return max(0.0, time.time() - self._last_batch_at)

    def exposition(self) -> bytes:
        rows = self.kpis.rows
        if self._kpi_text[0] is not rows:  # holding the list keeps its id from being reused by a later snapshot
            self._kpi_text = (rows, generate_latest(self.kpi_registry))
        return generate_latest(self.registry) + self._kpi_text[1]

    @staticmethod
    def total(counter: Counter) -> float:
        """Sum of a labelled counter over all its label values."""
        return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
