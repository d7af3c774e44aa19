"""`rmm export` and `rmm dq`: argument parsing and source selection. Light imports only (the parser is built
for every `rmm` call); the work is imported inside the commands."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime

from rmm_monitor.core import clock
from pathlib import Path


def add_parsers(sub) -> None:
    x = sub.add_parser("export", help="quarterly effectiveness evaluation: xlsx, csv/parquet, html/pdf, manifest")
    x.add_argument("--quarter", required=True, help="e.g. 2026Q3")
    x.add_argument("--out", required=True, help="output directory")
    x.add_argument("--db", default=os.environ.get("RMM_DB"))
    x.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    x.add_argument("--as-of", dest="as_of", help="RFC 3339 time; default now (give it to reproduce an export)")
    x.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    x.set_defaults(func=cmd_export)

    q = sub.add_parser("dq", help="run the Great Expectations data-quality suites (expectations/)")
    q.add_argument("--db", default=os.environ.get("RMM_DB"))
    q.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    q.add_argument("--period", help="only events that occurred in it (2026Q3, 2026, 2026-07, all); default all")
    q.add_argument("--as-of", dest="as_of")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_dq)


class _Opened:
    """The data behind a command: a local DuckDB connection, or the worker that owns the file."""

    def __init__(self, store=None, url=None):
        self.store, self.url = store, url

    def close(self):
        if self.store is not None:
            self.store.close()


def _open(args, prog: str, writable: bool = False):
    from .main import WorkerClient, _worker_url_for
    from rmm_monitor.store.event_store import Store, StoreError, StoreLocked

    if args.url:
        return _Opened(url=args.url), WorkerClient(args.url)
    if not args.db or not os.path.exists(args.db):
        raise SystemExit(f"rmm {prog}: no database at {args.db!r} (give --db PATH or --url WORKER)")
    try:
        return _Opened(store=Store(args.db, read_only=not writable)), None
    except StoreLocked:
        url = _worker_url_for(args.db)
        if not url:
            raise SystemExit(f"rmm {prog}: {args.db} is held by a worker that left no address; use --url")
        return _Opened(url=url), WorkerClient(url)
    except StoreError as exc:
        raise SystemExit(f"rmm {prog}: {exc}")


def _as_of(args) -> datetime:
    from rmm_monitor.core.periods import parse_time

    if args.as_of:
        return parse_time(args.as_of)
    return clock.now().replace(microsecond=0)


def cmd_export(args) -> int:
    from rmm_monitor.export.evaluation import Progress, export
    from rmm_monitor.export.sources import LocalSource, RemoteSource

    as_of = _as_of(args)
    opened, client = _open(args, "export")
    try:
        source = RemoteSource(client) if client else LocalSource(opened.store.con)
        manifest = export(source, args.quarter, Path(args.out), as_of, Progress(enabled=not args.quiet))
    except ValueError as exc:
        print(f"rmm export: {exc}", file=sys.stderr)
        return 2
    finally:
        opened.close()
    print(json.dumps({"out": str(args.out), "quarter": manifest["quarter"], "as_of": manifest["as_of"],
                      "files": sorted(manifest["files"]) + ["manifest.json"],
                      "data_quality_failed": manifest["data_quality"]["failed"]}))
    return 0


def cmd_dq(args) -> int:
    """Exit 1 when a critical expectation fails, so a scheduler can act on it."""
    import time

    from rmm_monitor.quality import suites as dq
    from rmm_monitor.core.periods import iso

    as_of = _as_of(args)
    opened, client = _open(args, "dq", writable=True)
    started = time.perf_counter()
    try:
        if client:
            rows = client.get("/api/dq", {"as_of": iso(as_of), "period": args.period})
        else:
            rows = dq.validate(dq.build_frames(opened.store.con, as_of, args.period))
            dq.record(opened.store.con, rows)
            rows = [{**r, "run_at": iso(r["run_at"])} for r in rows]
    finally:
        opened.close()
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            mark = "ok  " if r["success"] else ("FAIL" if r["critical"] else "warn")
            print(f"{mark} {r['suite']:<22} {r['expectation']:<42} {r['observed']}")
        failed = [r for r in rows if not r["success"]]
        print(f"{len(rows)} expectations, {len(failed)} failed "
              f"({sum(1 for r in failed if r['critical'])} critical) in {elapsed:.1f} s", file=sys.stderr)
    return 1 if dq.failing(rows, critical_only=True) else 0
