"""Sign-in, users, signatures and the audit log over HTTP.

POST /api/login               {user, password} -> {token, expires_at, ...}   (the token is shown only here)
POST /api/logout              revokes the caller's token
GET  /api/whoami              the caller's user and role
GET  /api/users               admin: every user (no secrets)
POST /api/users               admin: {user_id, full_name, role, password, reason}
POST /api/users/{id}/disable  admin: {reason}
POST /api/users/{id}/reset    admin: {password, reason}
POST /api/users/bootstrap     the first admin, with `X-RMM-Bootstrap: $RMM_BOOTSTRAP_TOKEN`, while no user exists
POST /api/signatures          {kind, record_id, record_hash, meaning, password}: sign an export or a catalog change
GET  /api/signatures          ?kind=&record_id=: signatures with their check against their signer's key
GET  /api/audit               ?from=&to=: the audit entries in a time range (viewer)
GET  /api/audit/verify        the chain, its published heads and every audited record (viewer)
"""

from __future__ import annotations

import hmac
import re
from datetime import timedelta
from typing import Any

from faust.web import View

from rmm_monitor.access import AuthError, audit, signatures, users
from rmm_monitor.core import clock
from rmm_monitor.core.periods import parse_time

from .auth import Auth, _tx, answer_errors, body_of


def register(app, stores, auth: Auth, bootstrap_token: str) -> None:
    async def guarded(web, coro) -> Any:
        try:
            return web.json(await coro)
        except Exception as exc:
            answer = answer_errors(web, exc)
            if answer is not None:
                return answer
            if isinstance(exc, (ValueError, KeyError)):
                return web.json({"error": str(exc)}, status=400)
            raise

    async def as_admin(web, request, fn) -> Any:
        who, denied = await auth.allow(web, request, "manage_users")
        if denied is not None:
            return denied

        async def run():
            body = await body_of(request)
            return await stores.write(_tx, stores.store.con, fn, who, body)

        return await guarded(web, run())

    async def login(web, request):
        async def run():
            body = await body_of(request)
            user_id, password = str(body.get("user") or ""), str(body.get("password") or "")

            def sign_in(con):
                who, _key = users.check_password(con, user_id, password)
                return users.issue_token(con, who, auth.ttl_hours)

            return await auth.with_password(user_id, sign_in)

        return await guarded(web, run())

    async def logout(web, request):
        who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        if who is None:
            return web.json({"error": "no token"}, status=401)
        token = auth.token_of(request)
        return await guarded(web, stores.write(_tx, stores.store.con, users.revoke, who, token))

    async def whoami(web, request):
        try:
            who = await auth.principal(request)
        except AuthError as exc:
            return web.json({"error": str(exc)}, status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.json({"user_id": who.user_id, "full_name": who.full_name, "role": who.role})

    async def list_users(web, request):
        _who, denied = await auth.allow(web, request, "manage_users")
        return denied if denied is not None else web.json(await stores.read(users.list_users))

    async def add_user(web, request):
        return await as_admin(
            web,
            request,
            lambda con, who, b: _public(
                users.add_user(
                    con,
                    who,
                    str(b.get("user_id") or ""),
                    str(b.get("full_name") or ""),
                    str(b.get("role") or ""),
                    str(b.get("password") or ""),
                    users._reason(str(b.get("reason") or "")),
                )
            ),
        )

    async def disable(web, request, user_id):
        return await as_admin(
            web, request, lambda con, who, b: _public(users.disable(con, who, user_id, str(b.get("reason") or "")))
        )

    async def reset(web, request, user_id):
        return await as_admin(
            web,
            request,
            lambda con, who, b: _public(
                users.reset(con, who, user_id, str(b.get("password") or ""), str(b.get("reason") or ""))
            ),
        )

    async def bootstrap(web, request):
        given = request.headers.get("X-RMM-Bootstrap", "")
        if not bootstrap_token or not hmac.compare_digest(given.encode(), bootstrap_token.encode()):
            auth.metrics.auth_failures.labels(reason="bootstrap").inc()
            return web.json({"error": "bootstrap needs X-RMM-Bootstrap: $RMM_BOOTSTRAP_TOKEN"}, status=401)

        async def run():
            b = await body_of(request)
            return _public(
                await stores.write(
                    _tx,
                    stores.store.con,
                    users.bootstrap,
                    str(b.get("user_id") or ""),
                    str(b.get("full_name") or ""),
                    str(b.get("password") or ""),
                )
            )

        return await guarded(web, run())

    async def list_signatures(web, request):
        _who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        q = request.query
        return web.json(await stores.read(checked, q.get("kind", ""), q.get("record_id", "")))

    async def sign(web, request):
        who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        if who is None:
            return web.json({"error": "a signature needs a user's token"}, status=401)

        async def run():
            b = await body_of(request)
            kind, meaning = str(b.get("kind") or ""), str(b.get("meaning") or "")
            signed_at = parse_time(b["signed_at"]) if b.get("signed_at") else clock.now()
            if abs(signed_at - clock.now()) > timedelta(minutes=10):
                raise ValueError("signed_at must be within 10 minutes of the worker's clock")
            password = str(b.get("password") or "")
            if not password:
                raise AuthError("a signature needs your password")
            if b.get("dry_run"):  # may this user sign this kind, with this password? (before a long export)
                if kind not in signatures.KINDS:
                    raise ValueError(f"nothing of kind {kind!r} is signed")
                who.require(signatures.KINDS[kind][0])
                await auth.with_password(who.user_id, lambda con: users.check_password(con, who.user_id, password))
                return {"user_id": who.user_id, "full_name": who.full_name, "may_sign": kind}
            return await auth.with_password(
                who.user_id,
                signatures.sign,
                who,
                password,
                kind,
                str(b.get("record_id") or ""),
                str(b.get("record_hash") or ""),
                meaning,
                signed_at,
            )

        return await guarded(web, run())

    async def audit_page(web, request):
        _who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        q = request.query

        async def run():
            start = parse_time(q["from"]) if q.get("from") else None
            end = parse_time(q["to"]) if q.get("to") else None
            return await stores.read(audit.entries, start, end)

        return await guarded(web, run())

    async def verify_page(web, request):
        _who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        return web.json(await stores.read(lambda con: audit.verify(con).as_dict()))

    for path, get, post in (
        ("/api/login", None, login),
        ("/api/logout", None, logout),
        ("/api/whoami", whoami, None),
        ("/api/users", list_users, add_user),
        ("/api/users/bootstrap", None, bootstrap),
        ("/api/users/{user_id}/disable", None, disable),
        ("/api/users/{user_id}/reset", None, reset),
        ("/api/signatures", list_signatures, sign),
        ("/api/audit", audit_page, None),
        ("/api/audit/verify", verify_page, None),
    ):
        page(app, path, get, post)


def page(app, path: str, get=None, post=None) -> None:
    """A view answering GET and/or POST at `path` (faust's function pages answer GET only)."""
    methods = {name: fn for name, fn in (("get", get), ("post", post)) if fn is not None}
    name = "rmm-" + re.sub(r"[^a-z0-9]+", "-", path.strip("/"))
    app.page(path, name=name)(type(name.replace("-", "_"), (View,), methods))


def checked(con, kind: str, record_id: str) -> list[dict]:
    out = []
    for sig in signatures.for_record(con, kind, record_id):
        check = signatures.verify(con, sig)
        out.append({**signatures.shown(sig), "valid": check.ok, "check": check.why,
                    "public_key": users.public_key(con, sig["key_id"])})  # fmt: skip
    return out


def _public(user: dict) -> dict:
    return {k: audit.plain(v) for k, v in user.items()}
