"""`rmm alerts list|show|ack|resolve` and `rmm reviews list|show|start|close`.

While a worker owns the DuckDB file these go through its HTTP API; otherwise the file is opened directly and a change
is one transaction (cli/data.py decides which). Either way a change is made as the user of RMM_TOKEN (`rmm login`),
needs a reason, and resolving an alert or closing a review is signed with that user's password, asked at the
terminal (or `--password-stdin`). `show` prints the signatures, each checked against the record.
"""

from __future__ import annotations

import json
import sys
from typing import Callable, Optional

from rmm_monitor.core.settings import Settings

from .data import open_data
from .identity import add_password_flag, principal, read_password, with_password
from .registry import command


def _run(args, settings: Settings, path: str, params: Optional[dict], body: Optional[dict], local: Callable) -> int:
    with open_data(settings, args.db, args.url, writable=body is not None) as data:
        if data.client:
            result = data.client.post(path, body) if body is not None else data.client.get(path, params)
        else:
            result = data.run(local, change=body is not None)
    if args.json or not isinstance(result, list):
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2, default=str) + "\n")
        if not args.json and isinstance(result, dict):
            for sig in result.get("signatures") or ():  # the signatures in words, each checked against the record
                verdict = "valid" if sig["valid"] else f"NOT VALID: {sig['check']}"
                print(f"signed by {sig['text']} [{verdict}]")
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
    return {"reason": args.reason}


def _common(settings: Settings, p, with_id: bool, change: bool, signed: bool = False) -> None:
    p.add_argument("--db", default=settings.db)
    p.add_argument("--url", help="a running worker's base URL (found from --db's sidecar otherwise)")
    p.add_argument("--json", action="store_true")
    if with_id:
        p.add_argument("id")
    if change:
        # who: the user of RMM_TOKEN (rmm login), never a name given here
        p.add_argument("--reason", "--comment", dest="reason", help="why (required; kept in the audit trail)")
    if signed:
        add_password_flag(p)


def _change(args, settings: Settings, path: str, body: dict, local: Callable, signed: bool = False) -> int:
    """A change through the worker (token and, to sign, password in the request) or on the file (the token's user,
    the password checked there)."""
    password = read_password(args, "password (to sign): ") if signed else None
    if password is not None:
        body = {**body, "password": password}
    with open_data(settings, args.db, args.url, writable=True) as data:
        if data.client:
            result = data.client.post(path, body)
        else:
            who = data.run(lambda con: principal(con, settings))
            if signed:
                assert data.store is not None
                result = with_password(data.store, who.user_id, lambda con: local(con, who, password))
            else:
                result = data.run(lambda con: local(con, who, None), change=True)
    sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2, default=str) + "\n")
    return 0


def _alerts_arguments(a, settings: Settings) -> None:
    sub = a.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list")
    _common(settings, p, False, False)
    p.add_argument("--state", choices=["firing", "acknowledged", "resolved"])
    p.add_argument("--signal")
    _common(settings, sub.add_parser("show"), True, False)
    _common(settings, sub.add_parser("ack"), True, True)
    _common(settings, sub.add_parser("resolve", help="resolve and sign (qppv; asks for your password)"), True, True,
            signed=True)  # fmt: skip


@command("alerts", "QPPV alerts: list, show, ack, resolve (as the user of RMM_TOKEN)", _alerts_arguments)
def run_alerts(args, settings: Settings) -> int:
    from rmm_monitor.alerting import decisions as D
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
        return _run(args, settings, f"/api/alerts/{args.id}", None, None, lambda con: D.show_alert(con, args.id))
    if args.action == "ack":
        return _change(
            args,
            settings,
            f"/api/alerts/{args.id}/ack",
            _body(args),
            lambda con, who, _pw: D.acknowledge(con, who, args.id, args.reason),
        )
    return _change(
        args,
        settings,
        f"/api/alerts/{args.id}/resolve",
        _body(args),
        lambda con, who, pw: D.resolve(con, who, pw, args.id, args.reason),
        signed=True,
    )


def _reviews_arguments(r, settings: Settings) -> None:
    sub = r.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list")
    _common(settings, p, False, False)
    p.add_argument("--state", choices=["open", "in_review", "closed"])
    _common(settings, sub.add_parser("show"), True, False)
    _common(settings, sub.add_parser("start"), True, True)
    p = sub.add_parser(
        "close", help="close and sign (qppv): --material-version N (material updated) or no change; --reason required"
    )
    _common(settings, p, True, True, signed=True)
    p.add_argument("--material-version", type=int, dest="material_version")


@command("reviews", "educational-material review cases: list, show, start, close", _reviews_arguments)
def run_reviews(args, settings: Settings) -> int:
    from rmm_monitor.alerting import decisions as D
    from rmm_monitor.alerting import records as R

    if args.action == "list":
        return _run(
            args, settings, "/api/reviews", {"state": args.state}, None, lambda con: R.list_cases(con, args.state)
        )
    if args.action == "show":
        return _run(args, settings, f"/api/reviews/{args.id}", None, None, lambda con: D.show_case(con, args.id))
    if args.action == "start":
        return _change(
            args,
            settings,
            f"/api/reviews/{args.id}/start",
            _body(args),
            lambda con, who, _pw: D.start_review(con, who, args.id, args.reason),
        )
    outcome = "material_updated" if args.material_version is not None else "no_change"
    body = {**_body(args), "outcome": outcome, "material_version": args.material_version}
    return _change(
        args,
        settings,
        f"/api/reviews/{args.id}/close",
        body,
        lambda con, who, pw: D.close_case(con, who, pw, args.id, outcome, args.material_version, args.reason),
        signed=True,
    )
