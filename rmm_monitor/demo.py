"""`rmm demo`: the embedded default. Bundled broker, the worker, the simulated CAR-T programme streaming into
Kafka, a live KPI table, and on exit one final JSON line."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from urllib.request import urlopen

from .broker import Broker, free_port
from .cli import format_table

# A few invalid events in the stream, so the dead-letter path is visible in the demo too.
POISON = [
    ("rmm.infusion", b'{"event_id":"poison-1","event_type":"alert_card_issued","schema_version":1,'
                     b'"occurred_at":"2026-07-01T10:00:00Z","product":"CTX-19","site_id":"SH-01",'
                     b'"patient_ref":"PT-CTX19-000001","patient_name":"Zhang San"}'),
    ("rmm.ae", b'{"event_id":"poison-2","event_type":"ae_awareness","schema_version":1,'
               b'"occurred_at":"yesterday","product":"CTX-19","site_id":"SH-01","ae_id":"AE-1",'
               b'"patient_ref":"PT-CTX19-000001"}'),
    ("rmm.site", b"not json at all"),
]


def _get(url: str, timeout: float = 5.0):
    with urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_healthy(url: str, worker: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.returncode} during start-up")
        try:
            if _get(url + "/healthz", 2).get("ok"):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"worker did not become healthy within {timeout}s")


class _Interrupted(Exception):
    pass


def run_demo(duration: float = 0.0, workdir: Optional[str] = None, patients: int = 300, rate: float = 2000.0,
             port: int = 0, export: bool = True) -> int:
    from . import simulate
    from .producer import make_producer, produce_events

    work = Path(workdir or "demo-out").resolve()
    work.mkdir(parents=True, exist_ok=True)
    db = work / "rmm-demo.duckdb"
    for stale in (db, Path(str(db) + ".wal"), Path(str(db) + ".worker.json")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(work / ".faust-rmm-monitor", ignore_errors=True)

    def on_term(signum, frame):
        raise _Interrupted()
    signal.signal(signal.SIGTERM, on_term)

    broker = worker = None
    produced = {"n": 0}
    say = lambda msg: print(msg, file=sys.stderr, flush=True)
    try:
        say(f"[demo] starting the bundled Kafka-compatible broker (tansu) ...")
        broker = Broker(log_path=work / "broker.log").start()
        web_port = port or free_port()
        url = f"http://127.0.0.1:{web_port}"
        env = dict(os.environ, RMM_KAFKA_BOOTSTRAP=broker.bootstrap, RMM_DB=str(db), RMM_WEB_PORT=str(web_port),
                   RMM_REFRESH_SECONDS="2")
        say(f"[demo] broker at {broker.bootstrap}; starting the worker (faust) ...")
        worker = subprocess.Popen([sys.executable, "-m", "rmm_monitor.cli", "worker"], env=env,
                                  stdout=open(work / "worker.log", "ab"), stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_healthy(url, worker)
        say(f"[demo] dashboard:   {url}/")
        say(f"[demo] metrics:     {url}/metrics")
        say(f"[demo] KPI API:     {url}/api/kpis?by=site")
        say(f"[demo] database:    {db} (owned by the worker; `rmm kpis --db {db}` asks the worker)")
        say(f"[demo] logs:        {work}/worker.log, {work}/broker.log")

        events = simulate.generate(seed=7, patients=patients)
        say(f"[demo] simulated CAR-T programme: {len(events)} events, {patients} patients; weak sites: "
            + "; ".join(f"{k}: {v}" for k, v in simulate.WEAK_SITES.items()))

        def stream():
            producer = make_producer(broker.bootstrap)
            try:
                for topic, value in POISON:
                    producer.send(topic, value=value)
                produced["n"] += len(POISON)
                produce_events(events, broker.bootstrap, rate=rate, producer=producer,
                               progress=lambda n: produced.__setitem__("n", n + len(POISON)))
            finally:
                producer.close()
        threading.Thread(target=stream, name="simulator", daemon=True).start()

        started = time.monotonic()
        total = len(events) + len(POISON)
        while duration <= 0 or time.monotonic() - started < duration:
            time.sleep(min(3.0, max(0.5, duration - (time.monotonic() - started))) if duration else 3.0)
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with code {worker.returncode}; see {work}/worker.log")
            _live_table(url, produced["n"], total)
    except (KeyboardInterrupt, _Interrupted):
        say("[demo] stopping ...")
    except Exception as exc:  # start-up failures: say what failed, then clean up below
        say(f"[demo] failed: {exc}")
        _stop(worker, broker)
        return 1
    final = _final(url, produced["n"]) if worker and worker.poll() is None else None
    if final is not None and export:
        final["export"] = _export(url, work / "export")
    _stop(worker, broker)
    if final is None:
        return 1
    print(json.dumps(final), flush=True)
    return 0


def _live_table(url: str, produced: int, total: int) -> None:
    try:
        status = _get(url + "/api/status")
        rows = _get(url + "/api/kpis?by=product")
    except OSError as exc:
        print(f"[demo] worker not answering: {exc}", file=sys.stderr)
        return
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[2J\x1b[H")
    print(f"produced {produced}/{total}  ingested {status['ingested']}  rejected {status['rejected']}  "
          f"duplicates {status['duplicates']}  stored {status['stored']}  (Ctrl-C to stop)", flush=True)
    print(format_table(rows), flush=True)


def _final(url: str, produced: int) -> Optional[dict]:
    """Let ingest catch up with what was produced (bounded), then read the final numbers."""
    deadline = time.monotonic() + 20
    status = {}
    while time.monotonic() < deadline:
        try:
            status = _get(url + "/api/status")
        except OSError:
            return None
        if status["ingested"] + status["rejected"] + status["duplicates"] >= produced:
            break
        time.sleep(0.5)
    try:
        kpis = _get(url + "/api/kpis?by=product", timeout=60)
    except OSError:
        return None
    return {"produced": produced, "ingested": status.get("ingested", 0), "rejected": status.get("rejected", 0),
            "duplicates": status.get("duplicates", 0), "kpis": kpis, "metrics_url": url + "/metrics"}


def _export(url: str, out: Path) -> Optional[str]:
    """The quarterly effectiveness export of the current quarter, read through the worker's API (it owns the
    DB), as regulatory affairs would run it."""
    from .periods import quarter_of

    quarter = quarter_of(datetime.now(timezone.utc)).label
    print(f"[demo] writing the {quarter} effectiveness export to {out} ...", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "rmm_monitor.cli", "export", "--quarter", quarter, "--url", url,
                           "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=600)
    if done.returncode != 0:
        print(f"[demo] export failed (exit {done.returncode})", file=sys.stderr, flush=True)
        return None
    print(f"[demo] export:      {out}/report.pdf, kpis.xlsx, manifest.json", file=sys.stderr, flush=True)
    return str(out)


def _stop(worker: Optional[subprocess.Popen], broker: Optional[Broker]) -> None:
    if worker is not None and worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
    if broker is not None:
        broker.stop()
