"""The `rmm` console script. Heavy modules (faust, the KPI engine) are imported inside the commands, so
`rmm --help` stays instant."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# --- rmm broker ----------------------------------------------------------------------------------------------
def cmd_broker(args) -> int:
    from rmm_monitor.dev.broker import Broker

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)  # so `finally` stops tansu, which runs in its own session
    broker = Broker(port=args.port, partitions=args.partitions).start()
    print(broker.bootstrap, flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


# --- rmm worker ----------------------------------------------------------------------------------------------
def cmd_worker(args) -> int:
    from rmm_monitor.streams.app import run_worker

    from rmm_monitor.core.settings import Settings

    overrides = {k: v for k, v in {"RMM_DB": args.db, "RMM_KAFKA_BOOTSTRAP": args.bootstrap,
                                   "RMM_WEB_PORT": str(args.port) if args.port else None}.items() if v}
    os.environ.update(overrides)
    return run_worker(Settings())


# --- rmm replay ----------------------------------------------------------------------------------------------
def rejected_path(db: str) -> Path:
    p = Path(db)
    return p.with_name(p.stem + ".rejected.jsonl")


def cmd_replay(args) -> int:
    from rmm_monitor.store.batches import process_batch
    from rmm_monitor.store.event_store import Store, StoreError

    totals = {"accepted": 0, "rejected": 0, "duplicates": 0}
    try:
        store = Store(args.db)
    except StoreError as exc:
        print(f"rmm replay: {exc}", file=sys.stderr)
        return 2
    out = rejected_path(args.db)
    with store, open(args.file, "rb") as src, open(out, "w", encoding="utf-8") as rejects:
        def flush(lines: list[tuple[int, bytes]]) -> None:
            outcome = process_batch(store, [raw for _, raw in lines])
            totals["accepted"] += outcome.inserted
            totals["duplicates"] += outcome.duplicates
            totals["rejected"] += len(outcome.rejects)
            for r in outcome.rejects:
                line_no, raw = lines[r.index]
                rejects.write(json.dumps({"line": line_no, "reason": r.reason,
                                          "original": raw.decode("utf-8", "replace")}) + "\n")

        batch: list[tuple[int, bytes]] = []
        for line_no, line in enumerate(src, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are skipped, not rejected (KPIS.md, validation)
            batch.append((line_no, raw))
            if len(batch) >= args.batch:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    _print_json(totals)
    return 0


# --- rmm kpis ------------------------------------------------------------------------------------------------
class WorkerClient:
    """Reads KPIs from a running worker's HTTP API (it owns the DuckDB file)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str, params: dict) -> object:
        from urllib.error import HTTPError
        from urllib.parse import urlencode
        from urllib.request import urlopen

        query = urlencode([(k, v) for k, v in params.items() if v is not None], doseq=True)
        try:
            with urlopen(f"{self.url}{path}?{query}", timeout=120) as resp:
                return json.loads(resp.read())
        except HTTPError as exc:
            raise SystemExit(f"rmm: worker answered {exc.code}: {exc.read().decode(errors='replace')}")


def _worker_url_for(db: str) -> Optional[str]:
    try:
        with open(db + ".worker.json") as fh:
            return json.load(fh)["url"]
    except (OSError, ValueError, KeyError):
        return None


def cmd_kpis(args) -> int:
    from rmm_monitor.core.periods import iso, parse_time

    as_of = parse_time(args.as_of) if args.as_of else None
    params = {"as_of": iso(as_of), "period": args.period, "product": args.product}
    url = args.url
    engine = store = None
    if not url:
        from rmm_monitor.kpi.engine import Engine
        from rmm_monitor.store.event_store import Store, StoreLocked, StoreError

        if not args.db or not os.path.exists(args.db):
            print(f"rmm kpis: no database at {args.db!r} (give --db PATH or --url WORKER)", file=sys.stderr)
            return 2
        try:
            store = Store(args.db, read_only=True)
            engine = Engine(store.con)
        except StoreLocked:
            url = _worker_url_for(args.db)
            if not url:
                print(f"rmm kpis: {args.db} is held by a worker that left no address; use --url", file=sys.stderr)
                return 2
        except StoreError as exc:
            print(f"rmm kpis: {exc}", file=sys.stderr)
            return 2
    client = WorkerClient(url) if url else None
    try:
        if args.explain:
            outcomes = args.outcome  # None: what counts against the KPI, and pending
            if client:
                result = client.get("/api/units", {**params, "kpi": args.explain, "site": args.site,
                                                   "outcome": outcomes})
            else:
                result = engine.units(args.explain, as_of=as_of, period=args.period, product=args.product,
                                      site=args.site, outcomes=outcomes)
            return _show_units(result, args.json)
        if args.trend:
            result = client.get("/api/trend", params) if client else \
                engine.trend(as_of=as_of, period=args.period, product=args.product)
            if args.json:
                _print_json(result)
            else:
                for r in result:
                    print(f"{r['kpi']:<36} {r['product']:<10} {r['month']}  {_pct(r['value'])}  "
                          f"{r['numerator']}/{r['denominator']}  {r['status']}")
            return 0
        if client:
            result = client.get("/api/kpis", {**params, "by": args.by, "kpi": args.kpi})
        else:
            result = engine.compute(as_of=as_of, period=args.period, by=args.by, product=args.product,
                                    kpi_ids=args.kpi)
    except KeyError as exc:
        print(f"rmm kpis: {exc.args[0]}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"rmm kpis: {exc}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
    if args.json:
        _print_json(result)
    else:
        print(format_table(result))
    return 0


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def format_table(rows: list[dict]) -> str:
    head = f"{'KPI':<36} {'product':<9} {'site':<10} {'value':>7} {'95% CI':>15} {'n':>9} {'pend':>5} {'θ':>5}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = "" if r["ci_low"] is None else f"{100 * r['ci_low']:.0f}–{100 * r['ci_high']:.0f}%"
        lines.append(f"{r['kpi']:<36} {(r['product'] or '*'):<9} {(r['site_id'] or 'all'):<10} {_pct(r['value']):>7} "
                     f"{ci:>15} {r['numerator']:>4}/{r['denominator']:<4} {r['pending']:>5} "
                     f"{r['threshold']:>5.2f}  {r['status']}")
    return "\n".join(lines)


def _show_units(units: list[dict], as_json: bool) -> int:
    if as_json:
        _print_json(units)
        return 0
    for u in units:
        print(f"{u['outcome']:<8} {u['product']:<8} {u['site_id']:<10} {u['unit_id']:<22} {u['detail']}")
    print(f"{len(units)} units")
    return 0


# --- rmm simulate --------------------------------------------------------------------------------------------
def cmd_simulate(args) -> int:
    from rmm_monitor.dev import simulate
    from rmm_monitor.core.periods import parse_time

    end = parse_time(args.end) if args.end else None
    events = simulate.generate(seed=args.seed, patients=args.patients, end=end, days=args.days,
                               dq_faults=args.dq_faults)
    if args.out:
        simulate.to_jsonl(events, args.out)
        _print_json({"events": len(events), "out": args.out})
    if args.to_kafka:
        from rmm_monitor.dev.producer import produce_events

        sent = produce_events(events, args.bootstrap or os.environ.get("RMM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                              rate=args.rate)
        _print_json({"produced": sent, "bootstrap": args.bootstrap})
    if not args.out and not args.to_kafka:
        print("rmm simulate: give --out FILE.jsonl and/or --to-kafka", file=sys.stderr)
        return 2
    return 0


# --- rmm demo ------------------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from rmm_monitor.dev.demo import run_demo

    return run_demo(duration=args.duration, workdir=args.dir, patients=args.patients, rate=args.rate,
                    port=args.port, export=not args.no_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rmm", description="CAR-T aRMM effectiveness monitor")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="start the bundled Kafka-compatible broker (tansu) on loopback")
    b.add_argument("--port", type=int, default=0)
    b.add_argument("--partitions", type=int, default=1)
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="run the stream processor (RMM_KAFKA_BOOTSTRAP, RMM_DB)")
    w.add_argument("--db")
    w.add_argument("--bootstrap")
    w.add_argument("--port", type=int)
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("replay", help="ingest a JSON-lines file through the same validation and store")
    r.add_argument("file")
    r.add_argument("--db", required=True)
    r.add_argument("--batch", type=int, default=50000)
    r.set_defaults(func=cmd_replay)

    k = sub.add_parser("kpis", help="print the KPI table (KPIS.md)")
    k.add_argument("--db", default=os.environ.get("RMM_DB"))
    k.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    k.add_argument("--as-of", dest="as_of")
    k.add_argument("--period")
    k.add_argument("--by", default="product", choices=["product", "site", "none"])
    k.add_argument("--product")
    k.add_argument("--kpi", action="append", help="only this KPI (repeatable)")
    k.add_argument("--explain", metavar="KPI_ID", help="list the failing and pending units behind a KPI")
    k.add_argument("--outcome", action="append", choices=["success", "failure", "pending"])
    k.add_argument("--site")
    k.add_argument("--trend", action="store_true", help="monthly series (with --period YEAR)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_kpis)

    s = sub.add_parser("simulate", help="generate a realistic CAR-T programme's events")
    s.add_argument("--out")
    s.add_argument("--to-kafka", action="store_true")
    s.add_argument("--bootstrap")
    s.add_argument("--rate", type=float, default=0.0, help="events per second when producing (0 = as fast as possible)")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--patients", type=int, default=200)
    s.add_argument("--days", type=int, default=270)
    s.add_argument("--end", help="programme end time (default now)")
    s.add_argument("--dq-faults", action="store_true",
                   help="seed the schema-valid data problems of simulate.DQ_FAULTS (for the DQ suites)")
    s.set_defaults(func=cmd_simulate)

    d = sub.add_parser("demo", help="bundled broker + worker + simulator + metrics, then a final JSON line")
    d.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")
    d.add_argument("--dir", default=None, help="working directory for the demo's DB and logs")
    d.add_argument("--patients", type=int, default=300)
    d.add_argument("--rate", type=float, default=2000.0, help="simulator events per second")
    d.add_argument("--port", type=int, default=0, help="web port of the worker (default: a free port)")
    d.add_argument("--no-export", action="store_true", help="skip the quarterly export on exit")
    d.set_defaults(func=cmd_demo)

    from .export import add_parsers as add_export_parsers  # issue 7: `rmm export`, `rmm dq` (light imports)
    add_export_parsers(sub)

    from .alerts import add_parsers as add_alerting_parsers  # issue 5: rmm alerts / rmm reviews
    add_alerting_parsers(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
