"""`rmm users bootstrap|add|list|disable|reset`, `rmm login`, `rmm logout`, `rmm whoami`.

Through the worker while it owns the file, on the file otherwise (cli/data.py). Managing users needs an admin's
token (RMM_TOKEN); the first admin is made by `rmm users bootstrap` while no user exists: on the file with the worker
stopped, or through a running worker with its one-time RMM_BOOTSTRAP_TOKEN in the environment of both. Passwords are
typed at the terminal (twice for a new one) or sent on standard input with --password-stdin; never a flag.
`rmm login` prints only the token on stdout, so `export RMM_TOKEN=$(rmm login qppv.wang)` signs a shell in.
"""

from __future__ import annotations

import json
import sys

from rmm_monitor.core.settings import Settings

from .data import open_data
from .identity import add_password_flag, new_password, principal, read_password, with_password
from .registry import command


def _where(p, settings: Settings) -> None:
    p.add_argument("--db", default=settings.db)
    p.add_argument("--url", help="a running worker's base URL (found from --db's sidecar otherwise)")


def _arguments(u, settings: Settings) -> None:
    sub = u.add_subparsers(dest="action", required=True)
    p = sub.add_parser("bootstrap", help="the first admin, while no user exists")
    _where(p, settings)
    p.add_argument("user_id")
    p.add_argument("--name", required=True, help="full name (printed with signatures)")
    add_password_flag(p)
    p = sub.add_parser("add", help="a new user (admin)")
    _where(p, settings)
    p.add_argument("user_id")
    p.add_argument("--name", required=True, help="full name (printed with signatures)")
    p.add_argument("--role", required=True, choices=["viewer", "pv_analyst", "qppv", "admin"])
    p.add_argument("--reason", required=True)
    add_password_flag(p)
    p = sub.add_parser("list", help="every user, no secrets (admin)")
    _where(p, settings)
    p = sub.add_parser("disable", help="the user can no longer sign in; their records stay theirs (admin)")
    _where(p, settings)
    p.add_argument("user_id")
    p.add_argument("--reason", required=True)
    p = sub.add_parser("reset", help="a new password and signing key; the user's tokens are revoked (admin)")
    _where(p, settings)
    p.add_argument("user_id")
    p.add_argument("--reason", required=True)
    add_password_flag(p)


def _print(result) -> int:
    sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2, default=str) + "\n")
    return 0


@command("users", "users and roles: bootstrap, add, list, disable, reset", _arguments)
def run_users(args, settings: Settings) -> int:
    from rmm_monitor.access import audit, users

    def public(u: dict) -> dict:
        return {k: audit.plain(v) for k, v in u.items()}

    with open_data(settings, args.db, args.url, writable=args.action != "list") as data:
        if args.action == "bootstrap":
            password = new_password(args, args.user_id)
            if data.client:
                body = {"user_id": args.user_id, "full_name": args.name, "password": password}
                return _print(data.client.post("/api/users/bootstrap", body,
                                               headers={"X-RMM-Bootstrap": settings.bootstrap_token}))  # fmt: skip
            return _print(public(data.run(lambda con: users.bootstrap(con, args.user_id, args.name, password),
                                          change=True)))  # fmt: skip
        if args.action == "list":
            if data.client:
                return _print(data.client.get("/api/users"))
            return _print(data.run(users.list_users))
        if args.action == "add":
            password = new_password(args, args.user_id)
            if data.client:
                body = {"user_id": args.user_id, "full_name": args.name, "role": args.role, "password": password,
                        "reason": args.reason}  # fmt: skip
                return _print(data.client.post("/api/users", body))
            return _print(public(data.run(lambda con: users.add_user(
                con, principal(con, settings), args.user_id, args.name, args.role, password, args.reason),
                change=True)))  # fmt: skip
        if args.action == "disable":
            if data.client:
                return _print(data.client.post(f"/api/users/{args.user_id}/disable", {"reason": args.reason}))
            return _print(public(data.run(lambda con: users.disable(con, principal(con, settings), args.user_id,
                                                                    args.reason), change=True)))  # fmt: skip
        password = new_password(args, args.user_id)
        if data.client:
            return _print(data.client.post(f"/api/users/{args.user_id}/reset",
                                           {"password": password, "reason": args.reason}))  # fmt: skip
        return _print(public(data.run(lambda con: users.reset(con, principal(con, settings), args.user_id, password,
                                                              args.reason), change=True)))  # fmt: skip


def _login_arguments(p, settings: Settings) -> None:
    _where(p, settings)
    p.add_argument("user_id")
    add_password_flag(p)


@command("login", "sign in: prints an API token (export RMM_TOKEN=$(rmm login USER))", _login_arguments)
def run_login(args, settings: Settings) -> int:
    from rmm_monitor.access import users

    password = read_password(args)
    with open_data(settings, args.db, args.url, writable=True) as data:
        if data.client:
            issued = data.client.post("/api/login", {"user": args.user_id, "password": password})
        else:
            assert data.store is not None

            def sign_in(con):
                who, _key = users.check_password(con, args.user_id, password)
                return users.issue_token(con, who, settings.token_ttl_hours)

            issued = with_password(data.store, args.user_id, sign_in)
    print(f"signed in as {issued['user_id']} ({issued['role']}); token valid until {issued['expires_at']}",
          file=sys.stderr)  # fmt: skip
    print(issued["token"])
    return 0


@command("logout", "revoke the token in RMM_TOKEN", _where)
def run_logout(args, settings: Settings) -> int:
    from rmm_monitor.access import users

    with open_data(settings, args.db, args.url, writable=True) as data:
        if data.client:
            data.client.post("/api/logout", {})
        else:
            data.run(lambda con: users.revoke(con, principal(con, settings), settings.token), change=True)
    print("token revoked", file=sys.stderr)
    return 0


@command("whoami", "the user and role of RMM_TOKEN", _where)
def run_whoami(args, settings: Settings) -> int:
    with open_data(settings, args.db, args.url) as data:
        if data.client:
            return _print(data.client.get("/api/whoami"))
        who = data.run(lambda con: principal(con, settings))
        return _print({"user_id": who.user_id, "full_name": who.full_name, "role": who.role})
