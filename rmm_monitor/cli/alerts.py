"""`rmm alerts list|show|ack|resolve` and `rmm reviews list|show|start|close`.

While a worker owns the DuckDB file these go through its HTTP API; changes need RMM_ADMIN_TOKEN in the environment
(sent as a bearer token, never on the command line, where `ps` would show it). With no worker, the file is
opened directly and a change is one transaction (cli/data.py decides which).
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Callable, Optional

from rmm_monitor.core.settings import Settings

from .data import open_data
from .registry import command


def _run(args, settings: Settings, path: str, params: Optional[dict], body: Optional[dict], local: Callable) -> int:
    with open_data(settings, args.db, args.url, writable=body is not None) as data:
        if data.client:
            result = data.client.post(path, body) if body is not None else data.client.get(path, params)
        else:
            result = data.run(local, change=body is not None)
    if args.json or not isinstance(result, list):
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2) + "\n")
    else:
        for r in result:
            print(_line(r))
        print(f"{len(result)} {'alerts' if path.startswith('/api/alerts') else 'review cases'}")
    return 0


def _line(r: dict) -> str:
    if "alert_id" in r:
        return f"{r['alert_id']}  {r['state']:<12} {r['signal']:<27} {r['case_id'] or '-':<10} {r['title']}"
    version = f" v{r['material_version']}" if r["material_version"] else ""
    return (
        f"{r['case_id']}  {r['state']:<9} {r['product']:<8} {r['section']:<26} "
        f"{(r['outcome'] or '') + version:<20} alerts {', '.join(r['alerts'] or [])}"
    )


def _body(args) -> dict:
    return {"actor": args.actor, "comment": args.comment}


def _common(settings: Settings, p, with_id: bool, change: bool) -> None:
    p.add_argument("--db", default=settings.db)
    p.add_argument("--url", help="a running worker's base URL (found from --db's sidecar otherwise)")
    p.add_argument("--json", action="store_true")
    if with_id:
        p.add_argument("id")
    if change:
        p.add_argument(
            "--actor",
            default=settings.actor or getpass.getuser(),
            help="who makes the change (kept in the audit trail; RMM_ACTOR)",
        )
        p.add_argument("--comment")


def _alerts_arguments(a, settings: Settings) -> None:
    sub = a.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list")
    _common(settings, p, False, False)
    p.add_argument("--state", choices=["firing", "acknowledged", "resolved"])
    p.add_argument("--signal")
    _common(settings, sub.add_parser("show"), True, False)
    _common(settings, sub.add_parser("ack"), True, True)
    _common(settings, sub.add_parser("resolve"), True, True)


@command("alerts", "QPPV alerts: list, show, ack, resolve (token: RMM_ADMIN_TOKEN)", _alerts_arguments)
def run_alerts(args, settings: Settings) -> int:
    from rmm_monitor.alerting import records as R

    if args.action == "list":
        return _run(
            args,
            settings,
            "/api/alerts",
            {"state": args.state, "signal": args.signal},
            None,
            lambda con: R.list_alerts(con, args.state, args.signal),
        )
    if args.action == "show":
        return _run(args, settings, f"/api/alerts/{args.id}", None, None, lambda con: R.get_alert(con, args.id))
    if args.action == "ack":
        return _run(
            args,
            settings,
            f"/api/alerts/{args.id}/ack",
            None,
            _body(args),
            lambda con: R.acknowledge(con, args.id, args.actor, args.comment),
        )
    return _run(
        args,
        settings,
        f"/api/alerts/{args.id}/resolve",
        None,
        _body(args),
        lambda con: R.resolve(con, args.id, args.actor, args.comment),
    )


def _reviews_arguments(r, settings: Settings) -> None:
    sub = r.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list")
    _common(settings, p, False, False)
    p.add_argument("--state", choices=["open", "in_review", "closed"])
    _common(settings, sub.add_parser("show"), True, False)
    _common(settings, sub.add_parser("start"), True, True)
    p = sub.add_parser("close", help="--material-version N (material updated) or --comment REASON (no change)")
    _common(settings, p, True, True)
    p.add_argument("--material-version", type=int, dest="material_version")


@command("reviews", "educational-material review cases: list, show, start, close", _reviews_arguments)
def run_reviews(args, settings: Settings) -> int:
    from rmm_monitor.alerting import records as R

    if args.action == "list":
        return _run(
            args, settings, "/api/reviews", {"state": args.state}, None, lambda con: R.list_cases(con, args.state)
        )
    if args.action == "show":
        return _run(args, settings, f"/api/reviews/{args.id}", None, None, lambda con: R.get_case(con, args.id))
    if args.action == "start":
        return _run(
            args,
            settings,
            f"/api/reviews/{args.id}/start",
            None,
            _body(args),
            lambda con: R.start_review(con, args.id, args.actor, args.comment),
        )
    outcome = "material_updated" if args.material_version is not None else "no_change"
    body = {**_body(args), "outcome": outcome, "material_version": args.material_version}
    return _run(
        args,
        settings,
        f"/api/reviews/{args.id}/close",
        None,
        body,
        lambda con: R.close_case(con, args.id, args.actor, outcome, args.material_version, args.comment),
    )
