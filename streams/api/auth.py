"""Who is asking: the bearer token of a request resolved to a user and role (access/users.py), and the answers when
they may not: 401 (no, wrong, expired or revoked credentials; nothing changes) and 403 (the role does not allow
it). While no user exists the reads stay open, as before users existed; every change needs a user. /metrics,
/healthz and /api/status never ask (Prometheus and the demo's progress read them; they carry no patient data).

Passwords are checked on the store's writer thread (a signature also writes), after a wait that grows with the
user's recent failures (users.delay_before_check); each failure is counted in rmm_auth_failures_total{reason}.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional

from rmm_monitor.access import AuthError, Forbidden, Principal, UserError, users
from rmm_monitor.store import transaction

_USERS_CACHE_S = 2.0  # how long "are there users?" is remembered (users are added rarely)


def _tx(con, fn, *args):
    with transaction(con, "access change"):
        return fn(con, *args)


class Auth:
    def __init__(self, stores, metrics, ttl_hours: float):
        self.stores = stores
        self.metrics = metrics
        self.ttl_hours = ttl_hours
        self._users_at = -1e9
        self._users = False

    async def users_exist(self) -> bool:
        if not self._users and time.monotonic() - self._users_at > _USERS_CACHE_S:
            self._users = await self.stores.read(lambda con: users.any_users(con))
            self._users_at = time.monotonic()
        return self._users

    @staticmethod
    def token_of(request) -> str:
        header = request.headers.get("Authorization", "")
        return header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""

    async def principal(self, request) -> Principal:
        token = self.token_of(request)
        try:
            return await self.stores.read(lambda con: users.principal_for_token(con, token))
        except AuthError as exc:
            self.metrics.auth_failures.labels(reason=_reason(str(exc))).inc()
            raise

    async def allow(self, web, request, action: str) -> tuple[Optional[Principal], Any]:
        """(principal, None) when allowed; (None, the 401/403 answer) when not. Reads are open while no user
        exists (principal None)."""
        if action == "read" and not await self.users_exist() and not self.token_of(request):
            return None, None
        try:
            return (await self.principal(request)).require(action), None
        except AuthError as exc:
            return None, unauthorized(web, str(exc))
        except Forbidden as exc:
            return None, web.json({"error": str(exc)}, status=403)

    async def with_password(self, user_id: str, fn: Callable, *args) -> Any:
        """Run `fn(con, *args)` in a transaction on the writer, which checks `user_id`'s password (a sign-in or a
        signature): after the guessing delay; a failure is recorded (outside the failed transaction) and
        counted."""
        delay = await self.stores.read(lambda con: users.delay_before_check(con, user_id))
        if delay:
            self.metrics.auth_throttled.inc()
            await asyncio.sleep(delay)
        try:
            result = await self.stores.write(_tx, self.stores.store.con, fn, *args)
        except AuthError:
            self.metrics.auth_failures.labels(reason="wrong_password").inc()
            await self.stores.write(_tx, self.stores.store.con, users.note_attempt, user_id, False)
            raise
        await self.stores.write(_tx, self.stores.store.con, users.note_attempt, user_id, True)
        return result


def _reason(message: str) -> str:
    for word in ("expired", "revoked", "disabled", "unknown", "required"):
        if word in message:
            return {"required": "missing"}.get(word, word)
    return "invalid"


def unauthorized(web, message: str):
    return web.json({"error": message}, status=401, headers={"WWW-Authenticate": "Bearer"})


async def body_of(request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UserError("a JSON object body is required")
    if "actor" in body:
        raise UserError("'actor' comes from the token, not from the request")
    return body


def answer_errors(web, exc: Exception):
    """The HTTP answer of an access error (None for anything else)."""
    if isinstance(exc, AuthError):
        return unauthorized(web, str(exc))
    if isinstance(exc, Forbidden):
        return web.json({"error": str(exc)}, status=403)
    if isinstance(exc, UserError):
        return web.json({"error": str(exc)}, status=400)
    return None
