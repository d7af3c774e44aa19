"""`rmm export` (the quarterly effectiveness evaluation) and `rmm dq` (the data-quality suites), from the file or
from the worker that owns it (cli/data.py). Light imports only: the work is imported inside the commands."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from rmm_monitor.core import clock
from rmm_monitor.core.settings import Settings

from .data import open_data
from .output import print_json
from .registry import command


def _as_of(text: Optional[str]) -> datetime:
    from rmm_monitor.core.periods import parse_time

    return parse_time(text) if text else clock.now().replace(microsecond=0)


def _export_arguments(x, settings: Settings) -> None:
    x.add_argument("--quarter", required=True, help="e.g. 2026Q3")
    x.add_argument("--out", required=True, help="output directory")
    x.add_argument("--db", default=settings.db)
    x.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    x.add_argument("--as-of", dest="as_of", help="RFC 3339 time; default now (give it to reproduce an export)")
    x.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


@command("export", "quarterly effectiveness evaluation: xlsx, csv/parquet, html/pdf, manifest", _export_arguments)
def run_export(args, settings: Settings) -> int:
    from rmm_monitor.export import LocalSource, Progress, RemoteSource, export

    as_of = _as_of(args.as_of)
    with open_data(settings, args.db, args.url) as data:
        source = RemoteSource(data.client) if data.client else LocalSource(data.con)
        manifest = export(source, args.quarter, Path(args.out), as_of, Progress(enabled=not args.quiet))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "quarter": manifest["quarter"],
                "as_of": manifest["as_of"],
                "files": sorted(manifest["files"]) + ["manifest.json"],
                "data_quality_failed": manifest["data_quality"]["failed"],
            }
        )
    )
    return 0


def _dq_arguments(q, settings: Settings) -> None:
    q.add_argument("--db", default=settings.db)
    q.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    q.add_argument("--period", help="only events that occurred in it (2026Q3, 2026, 2026-07, all); default all")
    q.add_argument("--as-of", dest="as_of")
    q.add_argument("--json", action="store_true")


@command("dq", "run the Great Expectations data-quality suites (expectations/)", _dq_arguments)
def run_dq(args, settings: Settings) -> int:
    """Exit 1 when a critical expectation fails, so a scheduler can act on it."""
    from rmm_monitor.core.periods import iso
    from rmm_monitor.quality import suites

    as_of = _as_of(args.as_of)
    started = time.perf_counter()
    with open_data(settings, args.db, args.url, writable=True) as data:
        if data.client:
            rows = data.client.get("/api/dq", {"as_of": iso(as_of), "period": args.period})
        else:
            rows = suites.validate(suites.build_frames(data.con, as_of, args.period))
            data.run(lambda con: suites.record(con, rows), change=True)
            rows = [{**r, "run_at": iso(r["run_at"])} for r in rows]
    elapsed = time.perf_counter() - started
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            mark = "ok  " if r["success"] else ("FAIL" if r["critical"] else "warn")
            print(f"{mark} {r['suite']:<22} {r['expectation']:<42} {r['observed']}")
        failed = [r for r in rows if not r["success"]]
        print(
            f"{len(rows)} expectations, {len(failed)} failed "
            f"({sum(1 for r in failed if r['critical'])} critical) in {elapsed:.1f} s",
            file=sys.stderr,
        )
    return 1 if suites.failing(rows, critical_only=True) else 0
