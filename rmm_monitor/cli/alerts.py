"""`rmm alerts list|show|ack|resolve` and `rmm reviews list|show|start|close`.

While a worker owns the DuckDB file these go through its HTTP API (found with --url or the `<db>.worker.json`
sidecar); changes need RMM_ADMIN_TOKEN in the environment (sent as a bearer token, never on the command line,
where `ps` would show it). With no worker running, the file is opened directly.
"""
from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Callable, Optional


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _request(url: str, method: str, path: str, params: Optional[dict] = None, body: Optional[dict] = None):
    from urllib.error import HTTPError
    from urllib.parse import urlencode
    from urllib.request import Request, urlopen

    query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
    req = Request(f"{url.rstrip('/')}{path}" + (f"?{query}" if query else ""), method=method,
                  data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("Content-Type", "application/json")
        token = os.environ.get("RMM_ADMIN_TOKEN", "")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
    try:
        with urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", "")
        except ValueError:
            message = ""
        raise ApiError(exc.code, message or exc.reason) from None


def _direct(db: str, fn: Callable, write: bool):
    """No worker: run fn(con) on the file itself (one transaction for a change)."""
    from rmm_monitor.store.event_store import Store

    with Store(db, read_only=not write) as store:
        if not write:
            return fn(store.con)
        with store.transaction() as con:
            return fn(con)


def _target(args) -> tuple[Optional[str], Optional[str]]:
    if args.url:
        return args.url, None
    if not args.db:
        raise SystemExit("rmm: give --db PATH or --url WORKER")
    from .main import _worker_url_for

    url = _worker_url_for(args.db)
    if url:
        return url, None
    if not os.path.exists(args.db):
        raise SystemExit(f"rmm: no database at {args.db!r}")
    return None, args.db


def _run(args, path: str, params: Optional[dict], body: Optional[dict], direct: Callable) -> int:
    from rmm_monitor.alerting import records as A
    from rmm_monitor.store.event_store import StoreError

    url, db = _target(args)
    try:
        if url:
            result = _request(url, "POST" if body is not None else "GET", path, params, body)
        else:
            result = _direct(db, direct, write=body is not None)
    except ApiError as exc:
        print(f"rmm: worker answered {exc.status}: {exc}", file=sys.stderr)
        return 3 if exc.status == 401 else 2
    except StoreError as exc:
        print(f"rmm: {exc}", file=sys.stderr)
        return 2
    except (A.NotFound, A.TransitionError) as exc:
        print(f"rmm: {exc.args[0] if isinstance(exc, A.NotFound) else exc}", file=sys.stderr)
        return 2
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
    return (f"{r['case_id']}  {r['state']:<9} {r['product']:<8} {r['section']:<26} "
            f"{(r['outcome'] or '') + (' v%s' % r['material_version'] if r['material_version'] else ''):<20} "
            f"alerts {', '.join(r['alerts'] or [])}")


def _body(args) -> dict:
    return {"actor": args.actor, "comment": args.comment}


def cmd_alerts(args) -> int:
    from rmm_monitor.alerting import records as A

    if args.action == "list":
        return _run(args, "/api/alerts", {"state": args.state, "signal": args.signal}, None,
                    lambda con: A.list_alerts(con, args.state, args.signal))
    if args.action == "show":
        return _run(args, f"/api/alerts/{args.id}", None, None, lambda con: A.get_alert(con, args.id))
    if args.action == "ack":
        return _run(args, f"/api/alerts/{args.id}/ack", None, _body(args),
                    lambda con: A.acknowledge(con, args.id, args.actor, args.comment))
    return _run(args, f"/api/alerts/{args.id}/resolve", None, _body(args),
                lambda con: A.resolve(con, args.id, args.actor, args.comment))


def cmd_reviews(args) -> int:
    from rmm_monitor.alerting import records as A

    if args.action == "list":
        return _run(args, "/api/reviews", {"state": args.state}, None, lambda con: A.list_cases(con, args.state))
    if args.action == "show":
        return _run(args, f"/api/reviews/{args.id}", None, None, lambda con: A.get_case(con, args.id))
    if args.action == "start":
        return _run(args, f"/api/reviews/{args.id}/start", None, _body(args),
                    lambda con: A.start_review(con, args.id, args.actor, args.comment))
    outcome = "material_updated" if args.material_version is not None else "no_change"
    body = {**_body(args), "outcome": outcome, "material_version": args.material_version}
    return _run(args, f"/api/reviews/{args.id}/close", None, body,
                lambda con: A.close_case(con, args.id, args.actor, outcome, args.material_version, args.comment))


def add_parsers(sub) -> None:
    def common(p, with_id: bool, change: bool) -> None:
        p.add_argument("--db", default=os.environ.get("RMM_DB"))
        p.add_argument("--url", help="a running worker's base URL (found from --db's sidecar otherwise)")
        p.add_argument("--json", action="store_true")
        if with_id:
            p.add_argument("id")
        if change:
            p.add_argument("--actor", default=os.environ.get("RMM_ACTOR") or getpass.getuser(),
                           help="who makes the change (kept in the audit trail)")
            p.add_argument("--comment")

    a = sub.add_parser("alerts", help="QPPV alerts: list, show, ack, resolve (token: RMM_ADMIN_TOKEN)")
    a_sub = a.add_subparsers(dest="action", required=True)
    p = a_sub.add_parser("list")
    common(p, False, False)
    p.add_argument("--state", choices=["firing", "acknowledged", "resolved"])
    p.add_argument("--signal")
    common(a_sub.add_parser("show"), True, False)
    common(a_sub.add_parser("ack"), True, True)
    common(a_sub.add_parser("resolve"), True, True)
    a.set_defaults(func=cmd_alerts)

    r = sub.add_parser("reviews", help="educational-material review cases: list, show, start, close")
    r_sub = r.add_subparsers(dest="action", required=True)
    p = r_sub.add_parser("list")
    common(p, False, False)
    p.add_argument("--state", choices=["open", "in_review", "closed"])
    common(r_sub.add_parser("show"), True, False)
    common(r_sub.add_parser("start"), True, True)
    p = r_sub.add_parser("close", help="--material-version N (material updated) or --comment REASON (no change)")
    common(p, True, True)
    p.add_argument("--material-version", type=int, dest="material_version")
    r.set_defaults(func=cmd_reviews)
