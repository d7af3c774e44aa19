"""Runtime settings from the environment (RMM_*). Secrets (tokens, SMTP passwords) are read only from here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    bootstrap: str = field(default_factory=lambda: _env("RMM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    db: str = field(default_factory=lambda: _env("RMM_DB", "rmm.duckdb"))
    web_host: str = field(default_factory=lambda: _env("RMM_WEB_HOST", "127.0.0.1"))
    web_port: int = field(default_factory=lambda: int(_env("RMM_WEB_PORT", "6066")))
    group_id: str = field(default_factory=lambda: _env("RMM_GROUP_ID", "rmm-ingest"))
    app_id: str = field(default_factory=lambda: _env("RMM_APP_ID", "rmm-monitor"))
    refresh_seconds: float = field(default_factory=lambda: float(_env("RMM_REFRESH_SECONDS", "5")))
    # at most this share of the reader thread's time goes to KPI refreshes (a slow refresh spaces out the next)
    refresh_share: float = field(default_factory=lambda: float(_env("RMM_REFRESH_SHARE", "0.5")))
    max_batch: int = field(default_factory=lambda: int(_env("RMM_MAX_BATCH", "50000")))  # a batch costs ~0.1 s of fixed DuckDB work
    fetch_wait_ms: int = field(default_factory=lambda: int(_env("RMM_FETCH_WAIT_MS", "200")))
    # records per getmany call: each call's record parsing and msgspec check run on the event loop, which must be
    # free to hand the store thread its next batch (the backlog still merges calls into max_batch-sized batches)
    fetch_max_records: int = field(default_factory=lambda: int(_env("RMM_FETCH_MAX_RECORDS", "5000")))
    log_level: str = field(default_factory=lambda: _env("RMM_LOG_LEVEL", "warn"))
    # DuckDB's buffer pool only (it spills to a temp directory beyond it); the worker's RSS is this plus ~200 MiB of
    # Python. Measured at 10 M stored events (per-type store, current-quarter refresh every second, busy 2-core
    # machine): 2GB -> RSS 807 MiB (peak 956); 384MB -> 481 (583); 256MB -> 434 (455), refresh not measurably
    # slower; ingest into that store at 256MB: 25 k-event batches in 0.7-1.1 s, peak RSS 427 MiB. Migrating a
    # schema-1 file lifts the limit for that one step (store.py).
    duckdb_memory_limit: str = field(default_factory=lambda: _env("RMM_DUCKDB_MEMORY_LIMIT", "256MB"))
    admin_token: str = field(default_factory=lambda: _env("RMM_ADMIN_TOKEN", ""), repr=False)
    # a stop (SIGTERM) ends the process within this many seconds, broker or no broker (streams/outage.py)
    stop_grace: float = field(default_factory=lambda: float(_env("RMM_STOP_GRACE", "7")))
    # Faster group joins than faust's defaults (STACK-NOTES.md: ~30 s first join otherwise).
    session_timeout: float = field(default_factory=lambda: float(_env("RMM_SESSION_TIMEOUT", "10")))

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def sidecar(self) -> str:
        """The file beside the DB that tells CLI readers where the worker that owns it answers."""
        return self.db + ".worker.json"
