"""`rmm demo`: the embedded default. Bundled broker, the worker, the simulated CAR-T programme streaming into
Kafka, a live view, and on exit the quarter's export and one final JSON line on stdout.

How it ends, and what it leaves behind (nothing, in every case):
- `--duration S` elapsed, or Ctrl-C once: the stream stops, ingest catches up, the final KPI rows are read from
  the worker, the worker and the broker stop, then the export is written from the closed DuckDB file.
- Ctrl-C a second time (during the stop or the export): the export is skipped, with one line saying so.
- SIGTERM or SIGHUP (a closed terminal): as Ctrl-C, without the export.
- SIGKILL of the demo: each child (broker, worker, export) gets SIGTERM from the kernel (`die_with_parent`), and
  the worker ends itself within its stop grace even with the broker gone.

Human output goes to stderr: on a terminal one live view redrawn in place (rich), elsewhere a progress line now and
then and the KPI table once at the end. stdout carries only the final JSON line.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from rmm_monitor.core import clock
from rmm_monitor.core.client import WorkerClient
from rmm_monitor.core.errors import ApiError
from rmm_monitor.core.fmt import pct
from rmm_monitor.core.periods import iso, quarter_of
from rmm_monitor.core.procs import die_with_parent

from .broker import Broker, free_port

# A few invalid events in the stream, so the dead-letter path is visible in the demo too.
POISON = [
    (
        "rmm.infusion",
        b'{"event_id":"poison-1","event_type":"alert_card_issued","schema_version":1,'
        b'"occurred_at":"2026-07-01T10:00:00Z","product":"CTX-19","site_id":"SH-01",'
        b'"patient_ref":"PT-CTX19-000001","patient_name":"Zhang San"}',
    ),
    (
        "rmm.ae",
        b'{"event_id":"poison-2","event_type":"ae_awareness","schema_version":1,'
        b'"occurred_at":"yesterday","product":"CTX-19","site_id":"SH-01","ae_id":"AE-1",'
        b'"patient_ref":"PT-CTX19-000001"}',
    ),
    ("rmm.site", b"not json at all"),
]
# The simulated programme starts here (and at least 270 days before now): its US centres then infuse on both sides
# of 2025-06-26, the day the US rules changed.
PROGRAMME_LAUNCH = datetime(2024, 12, 2, tzinfo=timezone.utc)
# The demo replays two years of a programme in a minute, and a weak site's failures sit anywhere in them: its worker
# judges the whole programme (RMM_PERIOD=all), not the current quarter, so each weak site gets its alert.
JUDGED_PERIOD = "all"
SETTLE_S = 20.0  # after ingest caught up, how long the alerts may take to be judged on everything stored
DEMO_QPPV = "qppv.demo"  # the account the demo prints a password for
JOIN_S = 60.0  # after the worker answers, how long its ingest consumer may take to join its group (~5 s on tansu)
CATCH_UP_S = 5.0  # after the stream stops, how long ingest may take to reach what was produced
PROGRESS_EVERY_S = 10.0  # a progress line this often when stderr is not a terminal
LIVE_EVERY_S = 1.0  # the live view's refresh
POLL_S = 0.1  # how often a wait looks at the signal flags


class DemoFailed(Exception):
    """Start-up or the worker failed: say what, then clean up."""


class Stopped(Exception):
    """A signal asked the demo to stop before the stream ran."""


# --- signals --------------------------------------------------------------------------------------------------
def pause(seconds: float, until: Callable[[], bool]) -> bool:
    """Sleep up to `seconds`, in short sleeps, returning True as soon as `until()` holds. Not Event.wait(timeout):
    a timed wait on a lock or condition sleeps for a day under faketime's shifted monotonic clock (libfaketime
    0.9.10), and the demo must end on time however the machine's clock is set (scripts/clock-shifts.sh)."""
    deadline = time.monotonic() + seconds
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_S, left))
    return True


class Signals:
    """Ctrl-C once: stop, then export. Ctrl-C again: skip the export. SIGTERM, SIGHUP: stop without the export.
    The handlers only set flags; the demo's own loops look at them, so no exception lands in the middle of
    starting a process or writing a file."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}

    def __init__(self) -> None:
        self.stopping = False
        self.skip_export = False
        self.reason: Optional[str] = None

    def install(self) -> "Signals":
        for signum in self.NAMES:
            signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        if self.stopping or signum != signal.SIGINT:
            self.skip_export = True
        if not self.stopping:
            self.reason = self.NAMES[signum]
            self.stopping = True

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is asked for."""
        return pause(seconds, lambda: self.stopping)


# --- output ---------------------------------------------------------------------------------------------------
class View:
    """What the person running the demo sees on stderr. Writes that fail (a closed terminal, a closed pipe) are
    dropped: losing the view must not stop the clean-up."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.live: Any = None  # rich.live.Live while the view is shown (rich is imported on a terminal only)
        self._last_line = 0.0
        self._told_done = False

    @staticmethod
    def for_terminal(stream: TextIO = sys.stderr) -> "View":
        return LiveView(stream) if stream.isatty() else View(stream)

    def say(self, msg: str) -> None:
        try:
            print(msg, file=self.stream, flush=True)
        except (OSError, ValueError):  # terminal or pipe gone
            pass

    def update(self, produced: int, total: int, status: dict, rows: list[dict]) -> None:
        """Non-terminal: a progress line every PROGRESS_EVERY_S while the stream runs, one when all of it is in."""
        accounted = status.get("ingested", 0) + status.get("rejected", 0) + status.get("duplicates", 0)
        done = produced >= total and accounted >= produced
        now = time.monotonic()
        if done == self._told_done and (done or now - self._last_line < PROGRESS_EVERY_S):
            return
        self._last_line, self._told_done = now, done
        self.say(
            f"[demo] produced {produced}/{total} ({100 * produced // max(total, 1)}%), "
            f"ingested {status.get('ingested', 0)}, rejected {status.get('rejected', 0)}, "
            f"duplicates {status.get('duplicates', 0)}, stored {status.get('stored', 0)}"
        )

    def close(self, rows: Optional[list[dict]]) -> None:
        """Non-terminal: the KPI table, once."""
        from rmm_monitor.kpi import format_table

        if rows:
            self.say(format_table(rows))


class LiveView(View):
    """One view redrawn in place: a progress bar for the simulated stream, the ingest counters, and the KPI table
    (one row per KPI, one column per product, coloured by status)."""

    COLOURS = {"ok": "green", "warning": "dark_orange", "breach": "bold red", "insufficient_data": "grey50"}

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream)
        self.progress = Progress(
            TextColumn("simulated stream"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self.console
        )
        self.task = self.progress.add_task("stream", total=None)
        self.rows: list[dict] = []
        self.status: dict = {}

    def say(self, msg: str) -> None:
        try:
            self.console.print(msg, markup=False, highlight=False)
        except (OSError, ValueError):
            pass

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        s = self.status
        counters = Text(
            f"ingested {s.get('ingested', 0)}   rejected {s.get('rejected', 0)}   "
            f"duplicates {s.get('duplicates', 0)}   stored {s.get('stored', 0)}   (Ctrl-C to stop)"
        )
        products = sorted({r["product"] for r in self.rows if r["product"]})
        table = Table(title=f"KPIs, {self.rows[0]['period']}" if self.rows else "KPIs", title_justify="left")
        table.add_column("KPI")
        for p in products:
            table.add_column(p, justify="right")
        cells: dict[str, dict[str, Text]] = {}
        for r in self.rows:
            text = Text(
                f"{pct(r['value'], missing='—')} {r['numerator']}/{r['denominator']}",
                style=self.COLOURS.get(r["status"], ""),
            )
            cells.setdefault(r["kpi"], {})[r["product"]] = text
        for kpi, by_product in cells.items():
            table.add_row(kpi, *[by_product.get(p, Text("")) for p in products])
        return Group(self.progress, counters, table)

    def update(self, produced: int, total: int, status: dict, rows: list[dict]) -> None:
        from rich.live import Live

        self.progress.update(self.task, total=total, completed=produced)
        self.status, self.rows = status, rows or self.rows
        try:
            if self.live is None:
                self.live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
                self.live.start()
            self.live.update(self._render(), refresh=True)
        except (OSError, ValueError):
            pass

    def close(self, rows: Optional[list[dict]]) -> None:
        if self.live is None:
            return
        try:
            if rows:
                self.rows = rows
                self.live.update(self._render(), refresh=True)
            self.live.stop()
        except (OSError, ValueError):
            pass
        self.live: Any = None  # rich.live.Live while the view is shown (rich is imported on a terminal only)


# --- the demo ---------------------------------------------------------------------------------------------------
class Demo:
    def __init__(self, work: Path, view: View, signals: Signals):
        self.work = work
        self.view = view
        self.signals = signals
        self.db = work / "rmm-demo.duckdb"
        self.broker: Optional[Broker] = None
        self.worker: Optional[subprocess.Popen] = None
        self.url = ""
        self.client = WorkerClient("http://127.0.0.1:0")  # replaced by start()
        self.produced = 0
        self.total = 0
        self.stream_stop = threading.Event()  # only set and read, never waited on (see `pause`)
        self.streamer: Optional[threading.Thread] = None

    def clean(self) -> None:
        for stale in (
            self.db,
            Path(f"{self.db}.wal"),
            Path(f"{self.db}.worker.json"),
            Path(f"{self.db}.audit-heads.jsonl"),
        ):
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.work / ".faust-rmm-monitor", ignore_errors=True)
        shutil.rmtree(self.work / "export", ignore_errors=True)  # never mistake an earlier run's export for this one

    def start(self, port: int) -> None:
        say = self.view.say
        say("[demo] starting the bundled Kafka-compatible broker (tansu) ...")
        self.broker = Broker(log_path=self.work / "broker.log").start()
        web_port = port or free_port()
        self.url = f"http://127.0.0.1:{web_port}"
        qppv_password, token = self._make_users()
        self.client = WorkerClient(self.url, token)
        env = dict(
            os.environ,
            RMM_KAFKA_BOOTSTRAP=self.broker.bootstrap,
            RMM_DB=str(self.db),
            RMM_WEB_PORT=str(web_port),
            RMM_REFRESH_SECONDS="2",
            RMM_PERIOD=JUDGED_PERIOD,
        )
        say(f"[demo] broker at {self.broker.bootstrap}; starting the worker (faust) ...")
        with open(self.work / "worker.log", "ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "rmm_monitor.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._wait_healthy()
        self._wait_ingesting()
        say(f"[demo] dashboard:   {self.url}/")
        say(f"[demo] metrics:     {self.url}/metrics")
        say(f"[demo] KPI API:     {self.url}/api/kpis?by=site")
        say(
            f"[demo] sign in:     as {DEMO_QPPV}, password {qppv_password} (a QPPV account made for this run; "
            f"in a shell: export RMM_TOKEN=$(rmm login {DEMO_QPPV} --db {self.db}))"
        )
        say(f"[demo] database:    {self.db} (owned by the worker; `rmm kpis --db {self.db}` asks it, signed in)")
        say(f"[demo] logs:        {self.work}/worker.log, {self.work}/broker.log")

    def _make_users(self) -> tuple[str, str]:
        """The demo's accounts, in the fresh file before the worker opens it: an administrator, a QPPV to sign in
        as (password printed), and the demo's own viewer, whose token reads the live numbers. Random passwords,
        made for this run only. Returns (the QPPV's password, the viewer's token)."""
        from rmm_monitor.access import Principal, users
        from rmm_monitor.store import Store

        passwords = {name: secrets.token_urlsafe(12) for name in ("demo.admin", DEMO_QPPV, "demo.monitor")}
        admin = Principal("demo.admin", "Demo Administrator", "admin")
        viewer = Principal("demo.monitor", "rmm demo (live view)", "viewer")
        with Store(self.db) as store, store.transaction() as con:
            users.bootstrap(con, admin.user_id, admin.full_name, passwords["demo.admin"])
            users.add_user(con, admin, DEMO_QPPV, "Demo QPPV", "qppv", passwords[DEMO_QPPV], "demo account")
            users.add_user(con, admin, viewer.user_id, viewer.full_name, "viewer", passwords["demo.monitor"],
                           "the demo's own reads")  # fmt: skip
            token = users.issue_token(con, viewer, 24)["token"]
        return passwords[DEMO_QPPV], token

    def _wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_worker()
            if self.client.answers(2):
                return
            if self.signals.wait(0.3):
                raise Stopped()
        raise DemoFailed(f"worker did not become healthy within {timeout:.0f}s; see {self.work}/worker.log")

    def _wait_ingesting(self) -> None:
        """Until the worker's ingest consumer holds its partitions. Its group joins some seconds after the API
        answers; events streamed before then would only wait in the broker, and a demo stopped in those seconds
        would spend its catch-up waiting for a consumer that has not started. Bounded: past JOIN_S it streams anyway
        (the events wait for the consumer) and says so."""
        deadline = time.monotonic() + JOIN_S
        while self.client.get("/api/status", timeout=5).get("assigned_partitions", 0) == 0:
            self._check_worker()
            if time.monotonic() > deadline:
                self.view.say(f"[demo] the worker's consumer has no partitions after {JOIN_S:.0f} s; streaming anyway")
                return
            if self.signals.wait(0.2):
                raise Stopped()

    def _check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            raise DemoFailed(f"worker exited with code {self.worker.returncode}; see {self.work}/worker.log")

    def stream(self, patients: int, rate: float) -> None:
        from rmm_monitor.dev import simulate

        from .producer import make_producer, produce_events

        # from a fixed launch, so the US centres straddle the end of the US REMS (2025-06-26)
        now = clock.now()
        days = max(270, (now - PROGRAMME_LAUNCH).days)
        events = simulate.generate(seed=7, patients=patients, end=now, days=days)
        self.total = len(events) + len(POISON)
        international = round(simulate.INTERNATIONAL_SHARE * patients)
        start = now - timedelta(days=days)
        self.view.say(
            f"[demo] simulated CAR-T programme since {start:%Y-%m-%d}: {len(events)} events, {patients} patients in "
            f"China and {international} in the US and the EU"
        )
        for title, spots in (
            ("weak sites", simulate.WEAK_SITES),
            ("weak spots in the effectiveness evidence", simulate.EVIDENCE_WEAK_SPOTS),
            ("centres under other rules", simulate.INTERNATIONAL_STORIES),
        ):
            self.view.say(f"[demo] {title}: " + "; ".join(f"{k}: {v}" for k, v in spots.items()))
        assert self.broker is not None, "start() runs first"
        bootstrap = self.broker.bootstrap

        def run() -> None:
            producer = make_producer(bootstrap)
            try:
                for topic, value in POISON:
                    producer.send(topic, value=value)
                self.produced = len(POISON)
                produce_events(
                    events,
                    bootstrap,
                    rate=rate,
                    producer=producer,
                    stop=self.stream_stop,
                    progress=lambda n: setattr(self, "produced", n + len(POISON)),
                )
            finally:
                producer.close()

        self.streamer = threading.Thread(target=run, name="simulator", daemon=True)
        self.streamer.start()

    def watch(self, duration: float) -> None:
        """Until `duration` seconds have passed (0: until a signal), refreshing the view."""
        started = time.monotonic()
        interval = LIVE_EVERY_S if isinstance(self.view, LiveView) else 3.0
        while True:
            left = duration - (time.monotonic() - started) if duration > 0 else interval
            if left <= 0 or self.signals.wait(min(interval, left)):
                return
            self._check_worker()
            try:
                status = self.client.get("/api/status", timeout=5)
                live = isinstance(self.view, LiveView)
                query = {"by": "product", "period": status.get("period", JUDGED_PERIOD)}
                rows = self.client.get("/api/kpis", query, timeout=5) if live else []
            except ApiError as exc:
                self.view.say(f"[demo] worker not answering: {exc}")
                continue
            self.view.update(self.produced, self.total, status, rows)

    def finish(self) -> dict:
        """Stop the stream, let ingest catch up (bounded), read the final numbers as of one instant."""
        self.stream_stop.set()
        if self.streamer is not None:
            streamer = self.streamer
            pause(10, lambda: not streamer.is_alive())
        deadline = time.monotonic() + CATCH_UP_S
        status: dict = {}
        while True:
            self._check_worker()
            status = self.client.get("/api/status", timeout=5)
            if (
                status["ingested"] + status["rejected"] + status["duplicates"] >= self.produced
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.25)
        as_of = status.get("now") or iso(clock.now())
        period = status.get("period", JUDGED_PERIOD)
        kpis = self.client.get("/api/kpis", {"by": "product", "period": period, "as_of": as_of}, timeout=60)
        alerts = self._settled_alerts(status.get("kpi_refreshes", 0))
        caught = weak_sites_caught(alerts)
        for site, ids in caught.items():
            self.view.say(f"[demo] {site}: " + (f"caught by {', '.join(ids)}" if ids else "NOT caught"))
        return {
            "produced": self.produced,
            "ingested": status.get("ingested", 0),
            "rejected": status.get("rejected", 0),
            "duplicates": status.get("duplicates", 0),
            "as_of": as_of,
            "period": period,
            "kpis": kpis,
            "alerts": alerts,
            "weak_sites": caught,
            "metrics_url": self.url + "/metrics",
        }

    def _settled_alerts(self, refreshes: int) -> list[dict]:
        """The alerts, once judged on a KPI refresh that began after everything was stored. `refreshes` were
        complete when ingest was seen caught up; the next one may already have been running then, so the one after
        that is awaited (bounded). A demo stopped by a signal does not wait (whoever stops it wants it gone now):
        the alerts as they stand."""
        deadline = time.monotonic() + SETTLE_S
        while not self.signals.stopping:
            self._check_worker()
            if self.client.get("/api/status", timeout=5).get("alerts_evaluated", 0) >= refreshes + 2:
                break
            if time.monotonic() > deadline:
                self.view.say(f"[demo] the alerts were not judged on the final data within {SETTLE_S:.0f} s")
                break
            self.signals.wait(0.25)
        fields = ("alert_id", "signal", "severity", "product", "site_id", "kpi", "section", "title", "case_id")
        return [{k: a.get(k) for k in fields} for a in self.client.get("/api/alerts", timeout=10)]

    def stop_processes(self) -> None:
        """Worker first (it commits and closes the DuckDB file), then the broker. Bounded: the worker ends itself
        within its stop grace, and is killed if even that fails."""
        self.stream_stop.set()
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(9)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(5)
        if self.broker is not None:
            self.broker.stop()

    def export(self, as_of: str) -> Optional[str]:
        """The current quarter's effectiveness export, from the DuckDB file the worker has closed, as of the same
        instant as the final KPI rows. A second Ctrl-C stops it and removes what it had written."""
        out = self.work / "export"
        quarter = quarter_of(clock.now()).label
        with open(self.work / "export.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rmm_monitor.cli",
                    "export",
                    "--quarter",
                    quarter,
                    "--db",
                    str(self.db),
                    "--as-of",
                    as_of,
                    "--out",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        # said once the child runs (Popen returns after its exec), so whoever reads the line can find the process
        self.view.say(f"[demo] writing the {quarter} effectiveness export to {out} (Ctrl-C again to skip) ...")
        while proc.poll() is None:
            if pause(0.2, lambda: self.signals.skip_export):
                _end(proc)
                shutil.rmtree(out, ignore_errors=True)
                self.view.say("[demo] export skipped (second Ctrl-C)")
                return None
        if proc.returncode != 0:
            self.view.say(f"[demo] export failed (exit {proc.returncode}); see {self.work}/export.log")
            return None
        self.view.say(f"[demo] export:      {out}/report.pdf, kpis.xlsx, manifest.json")
        return str(out)


def weak_sites_caught(alerts: list[dict]) -> dict[str, list[str]]:
    """Per weak site of the simulator, the alerts of the indicators or signals meant to catch it (empty: missed)."""
    from rmm_monitor.dev.simulate import WEAK_SITE_CATCHERS

    caught: dict[str, list[str]] = {}
    for site, catchers in WEAK_SITE_CATCHERS.items():
        ids = []
        for a in alerts:
            for catcher in catchers:
                signal, _, section = catcher.partition(":")
                if (section and a["signal"] == signal and a["section"] == section) or (
                    a["signal"] == "kpi_breach" and a["kpi"] == catcher and a["site_id"] == site
                ):
                    ids.append(a["alert_id"])
        caught[site] = sorted(set(ids))
    return caught


def _end(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _print_stdout(line: str) -> None:
    try:
        print(line, flush=True)
    except (OSError, ValueError):  # stdout gone (closed terminal, closed pipe): nothing left to tell
        pass


def run_demo(
    duration: float = 0.0,
    workdir: Optional[str] = None,
    patients: int = 600,
    rate: float = 2000.0,
    port: int = 0,
    export: bool = True,
    view_factory: Callable[[], View] = View.for_terminal,
) -> int:
    work = Path(workdir or "demo-out").resolve()
    work.mkdir(parents=True, exist_ok=True)
    signals = Signals().install()
    view = view_factory()
    demo = Demo(work, view, signals)
    demo.clean()
    final: Optional[dict] = None
    try:
        demo.start(port)
        demo.stream(patients, rate)
        demo.watch(duration)
        if signals.reason:
            view.say(f"[demo] {signals.reason}: stopping ...")
        final = demo.finish()
    except Stopped:
        view.say(f"[demo] {signals.reason} during start-up: stopping ...")
    except (DemoFailed, ApiError) as exc:  # ApiError: the worker stopped answering its API
        view.say(f"[demo] failed: {exc}")
    finally:
        view.close(final["kpis"] if final else None)
        demo.stop_processes()
    if final is None:
        return 1
    if not export:
        final["export"] = None
    elif signals.skip_export:
        view.say(f"[demo] export skipped ({'second Ctrl-C' if signals.reason == 'Ctrl-C' else signals.reason})")
        final["export"] = None
    else:
        final["export"] = demo.export(final["as_of"])
    _print_stdout(json.dumps(final))
    return 0
