"""Runtime settings: the one place the environment is read.

Every `RMM_*` variable is parsed here, once per process, into a frozen `Settings` (with the alert channels'
`ChannelSettings` inside it). The composition roots build it and hand it down: the CLI (`Settings.from_env()`,
then its flags as overrides with `replace`, never by writing `os.environ`), the worker (from the CLI), the tests
(their own instances). Library code that has no caller to hand it settings (the catalog's directory, the
clock) reads `current()`, the process's settings, which a composition root sets with `use()`.

Secrets (the admin token, the SMTP password, the webhook secret) come only from here, never from files in the
repository or the command line, and are kept out of `repr`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

from .errors import ConfigError
from .lang import parse_lang
from .periods import parse_period

CHANNELS = ("kafka", "email", "webhook")


def _period_label(text: str) -> str:
    """RMM_PERIOD as written (2026Q4, 2026, 2026-11, all; empty = the current quarter), refused at start if it is
    none of these, rather than at every refresh."""
    if text.strip():
        parse_period(text, datetime(2000, 1, 1, tzinfo=timezone.utc))  # a label needs no date: any will do
    return text.strip()


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


@dataclass(frozen=True)
class ChannelSettings:
    """Where the QPPV's notifications go (alerting/channels.py)."""

    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_ca_file: str = ""
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    email_from: str = "rmm-monitor@localhost"
    email_to: tuple[str, ...] = ()
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    kafka: bool = True
    retry_base: float = 1.0
    retry_max: float = 300.0
    timeout: float = 10.0

    @property
    def enabled(self) -> tuple[str, ...]:
        on = {"kafka": self.kafka, "email": bool(self.smtp_host and self.email_to), "webhook": bool(self.webhook_url)}
        return tuple(c for c in CHANNELS if on[c])

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failures: base * 2^(n-1), capped."""
        return min(self.retry_max, self.retry_base * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Settings:
    # Kafka and the worker
    bootstrap: str = "127.0.0.1:9092"
    db: str = "rmm.duckdb"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    group_id: str = "rmm-ingest"
    app_id: str = "rmm-monitor"
    log_level: str = "warn"
    # Faster group joins than faust's defaults (its first join takes ~30 s otherwise).
    session_timeout: float = 10.0
    # a stop (SIGTERM) ends the process within this many seconds, broker or no broker (streams/outage.py)
    stop_grace: float = 7.0
    # ingest: a batch costs ~0.1 s of fixed DuckDB work, so batches are big; records per getmany call are fewer,
    # because each call's parsing and msgspec check run on the event loop, which must stay free to hand the store
    # thread its next batch (the backlog merges calls into max_batch-sized batches)
    max_batch: int = 50_000
    fetch_wait_ms: int = 200
    fetch_max_records: int = 5_000
    # crash tests set "after_store" to die between the DuckDB commit and the offset commit
    failpoint: str = ""
    # KPI refresh: every refresh_seconds, at most refresh_share of the reader thread's time
    refresh_seconds: float = 5.0
    refresh_share: float = 0.5
    # every refresh_verify_seconds (0: never) a refresh also recomputes the catalog in full and compares
    refresh_verify_seconds: float = 3600.0
    # with no new event, what time alone changes (a window closing, an event recorded for later becoming known)
    # is taken up at most this often: each such refresh reads the store (~0.2-0.5 s at 10 M events), and in a
    # large programme some window closes every few seconds
    recheck_seconds: float = 30.0
    # the period the worker judges (its /metrics, alerts and the page's default): a label of core/periods.py such
    # as 2026Q4 or `all`; empty = the quarter of the current time. The demo judges `all`: it replays two years
    # of a programme in a minute, and the weakness of a site sits anywhere in them.
    judged_period: str = ""
    # the language of what the worker writes to people (the QPPV's e-mail): en or zh (core/lang.py)
    lang: str = "en"
    # DuckDB's buffer pool only (it spills to a temp directory beyond it); the worker's RSS is this plus ~200 MiB of
    # Python. Measured at 10 M stored events (per-type store, current-quarter refresh every second, busy 2-core
    # machine): 2GB -> RSS 807 MiB (peak 956); 384MB -> 481 (583); 256MB -> 434 (455), refresh not measurably
    # slower; ingest into that store at 256MB: 25 k-event batches in 0.7-1.1 s, peak RSS 427 MiB. Since the KPI
    # refresh keeps each KPI's units of the judged period (kpi/incremental.py), those took ~200 MB of the pool at
    # 10 M (2.9 M units, uncompressed): at 256MB the alert evaluation's queries then failed with DuckDB's
    # out-of-memory, over and over; at 384MB once in the first minute; at 512MB never (2026-12-04). Compressed
    # since 2026-12-05 (~50 MB): RSS 435 MiB after four refreshes, peak 660; 384MB not measured again.
    duckdb_memory_limit: str = "512MB"
    # data quality: the worker's periodic Great Expectations run (0 = off), the first one after start-up
    dq_seconds: float = 300.0
    dq_first_delay: float = 60.0
    # the catalog and the suites: the packaged ones unless a deployment points elsewhere; RMM_CONFIG overlays
    # per-product values (reference rates, minimum stock) on the catalog's own config.toml
    catalog_dir: str = ""
    config_path: str = ""
    expectations_dir: str = ""
    # the monitor's clock (core/clock.py): empty = the wall clock
    clock: str = ""
    # users (access/): a client's API token (RMM_TOKEN, from `rmm login`; never a command-line flag), how long a new
    # token lives, the one-time credential that lets `rmm users bootstrap` create the first admin through a running
    # worker, and where the audit log's heads are published (default: beside the DB file)
    token: str = field(default="", repr=False)
    token_ttl_hours: float = 12.0
    bootstrap_token: str = field(default="", repr=False)
    audit_heads: str = ""
    channels: ChannelSettings = ChannelSettings()

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def sidecar(self) -> str:
        """The file beside the DB that tells CLI readers where the worker that owns it answers."""
        return self.db + ".worker.json"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if environ is None else environ
        values = _read(env, _SETTINGS_ENV)
        return cls(**values, channels=ChannelSettings(**_read(env, _CHANNELS_ENV)))

    def replace(self, **overrides: Any) -> "Settings":
        """These settings with some values replaced; a None override (a CLI flag not given) changes nothing."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


_Parse = Callable[[str], Any]
# setting -> (environment variable, parser). The only list of the monitor's variables.
_SETTINGS_ENV: dict[str, tuple[str, _Parse]] = {
    "bootstrap": ("RMM_KAFKA_BOOTSTRAP", str),
    "db": ("RMM_DB", str),
    "web_host": ("RMM_WEB_HOST", str),
    "web_port": ("RMM_WEB_PORT", int),
    "group_id": ("RMM_GROUP_ID", str),
    "app_id": ("RMM_APP_ID", str),
    "log_level": ("RMM_LOG_LEVEL", str),
    "session_timeout": ("RMM_SESSION_TIMEOUT", float),
    "stop_grace": ("RMM_STOP_GRACE", float),
    "max_batch": ("RMM_MAX_BATCH", int),
    "fetch_wait_ms": ("RMM_FETCH_WAIT_MS", int),
    "fetch_max_records": ("RMM_FETCH_MAX_RECORDS", int),
    "failpoint": ("RMM_FAILPOINT", str),
    "refresh_seconds": ("RMM_REFRESH_SECONDS", float),
    "refresh_share": ("RMM_REFRESH_SHARE", float),
    "refresh_verify_seconds": ("RMM_REFRESH_VERIFY_SECONDS", float),
    "recheck_seconds": ("RMM_RECHECK_SECONDS", float),
    "judged_period": ("RMM_PERIOD", _period_label),
    "lang": ("RMM_LANG", parse_lang),
    "duckdb_memory_limit": ("RMM_DUCKDB_MEMORY_LIMIT", str),
    "dq_seconds": ("RMM_DQ_SECONDS", float),
    "dq_first_delay": ("RMM_DQ_FIRST_DELAY", float),
    "catalog_dir": ("RMM_CATALOG_DIR", str),
    "config_path": ("RMM_CONFIG", str),
    "expectations_dir": ("RMM_EXPECTATIONS_DIR", str),
    "clock": ("RMM_CLOCK", str),
    "token": ("RMM_TOKEN", str),
    "token_ttl_hours": ("RMM_TOKEN_TTL_HOURS", float),
    "bootstrap_token": ("RMM_BOOTSTRAP_TOKEN", str),
    "audit_heads": ("RMM_AUDIT_HEADS", str),
}
_CHANNELS_ENV: dict[str, tuple[str, _Parse]] = {
    "smtp_host": ("RMM_SMTP_HOST", str),
    "smtp_port": ("RMM_SMTP_PORT", int),
    "smtp_starttls": ("RMM_SMTP_STARTTLS", _flag),
    "smtp_ca_file": ("RMM_SMTP_CA_FILE", str),
    "smtp_user": ("RMM_SMTP_USER", str),
    "smtp_password": ("RMM_SMTP_PASSWORD", str),
    "email_from": ("RMM_ALERT_EMAIL_FROM", str),
    "email_to": ("RMM_ALERT_EMAIL_TO", _addresses),
    "webhook_url": ("RMM_WEBHOOK_URL", str),
    "webhook_secret": ("RMM_WEBHOOK_SECRET", str),
    "kafka": ("RMM_ALERT_KAFKA", lambda t: t.strip().lower() not in ("0", "false", "no", "off")),
    "retry_base": ("RMM_ALERT_RETRY_BASE", float),
    "retry_max": ("RMM_ALERT_RETRY_MAX", float),
}


def _read(env: Mapping[str, str], table: dict[str, tuple[str, _Parse]]) -> dict[str, Any]:
    """The variables of `table` that are set, parsed; a value that does not parse names its variable."""
    out = {}
    for name, (var, parse) in table.items():
        if env.get(var) is not None:
            try:
                out[name] = parse(env[var])
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"{var}={env[var]!r}: {exc}") from None
    return out


_current: Optional[Settings] = None


def current() -> Settings:
    """The process's settings: those a composition root chose with `use`, else the environment's, read once."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def use(settings: Settings) -> Settings:
    """Make `settings` the process's own (the CLI and the worker call this once, at start)."""
    global _current
    _current = settings
    return settings
