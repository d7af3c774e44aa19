"""Named users, their roles, passwords, signing keys and API tokens.

Roles (what each may change; every role may read):

    viewer       read the API and the page
    pv_analyst   acknowledge alerts, start reviews
    qppv         + resolve alerts and close reviews (signed), sign exports and catalog changes
    admin        users (add, disable, reset, revoke tokens); no decision and no QPPV signature (separation of
                 duties: whoever manages accounts cannot also sign as the QPPV)

Passwords are kept only as scrypt hashes (salted, 16 MiB of memory per guess). Each user also has an Ed25519 key
pair: the private key is stored encrypted under a key derived from the password, so making a signature needs the
password at that moment, and anyone can check a signature with the public key. API tokens are 256 random bits,
shown once, stored as their sha256, and expire; a revocation is a row of its own. Every change to users, keys and
tokens is a record of the audit log (audit.py). Nothing here logs or returns a password, a token after issuing it,
or a private key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from rmm_monitor.core import clock
from rmm_monitor.core.errors import AuthError, Forbidden, RmmError

from . import audit

ROLES = ("viewer", "pv_analyst", "qppv", "admin")
# action -> roles allowed
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "read": ROLES,
    "acknowledge_alert": ("pv_analyst", "qppv"),
    "start_review": ("pv_analyst", "qppv"),
    "resolve_alert": ("qppv",),
    "close_review": ("qppv",),
    "sign_export": ("qppv",),
    "sign_catalog_change": ("qppv",),
    "manage_users": ("admin",),
}
MIN_PASSWORD = 12
_USER_ID = re.compile(r"[a-z][a-z0-9._-]{1,63}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # 16 MiB, ~50 ms a guess on the 2-core CI machine
# guessing: after this many failures within the window, every attempt for the user waits, doubling up to the cap
FREE_FAILURES, FAILURE_WINDOW, MAX_DELAY_S = 3, timedelta(minutes=15), 30.0


class UserError(RmmError, ValueError):
    """A user change that cannot be made (unknown user, bad name, weak password, ...) (HTTP 400)."""


@dataclass(frozen=True)
class Principal:
    """Who a request or a command acts as."""

    user_id: str
    full_name: str
    role: str

    def require(self, action: str) -> "Principal":
        if self.role not in PERMISSIONS[action]:
            raise Forbidden(f"{self.user_id} ({self.role}) may not {action.replace('_', ' ')}")
        return self


SYSTEM = Principal("system", "the monitor itself", "system")


# --- passwords and keys ----------------------------------------------------------------------------------------
def hash_password(password: str, salt: Optional[bytes] = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT, dklen=32)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    _scheme, n, r, p, salt, digest = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got.hex(), digest)


def _new_keys(password: str) -> tuple[str, str]:
    """(public key hex, private key encrypted under the password, PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    ).decode()
    return public, private


def private_key(enc: str, password: str):
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(enc.encode(), password=password.encode())
    except ValueError as exc:
        raise AuthError("wrong password") from exc


def _check_password_strength(password: str, user_id: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    if user_id.lower() in password.lower():
        raise UserError("a password must not contain the user id")


# --- users -----------------------------------------------------------------------------------------------------
def any_users(con) -> bool:
    return con.execute("SELECT count(*) FROM users").fetchall()[0][0] > 0


def get_user(con, user_id: str) -> dict:
    cur = con.execute("SELECT * FROM user_state WHERE user_id = ?", [user_id])
    rows = cur.fetchall()
    if not rows:
        raise UserError(f"no user {user_id!r}")
    return dict(zip([d[0] for d in cur.description], rows[0]))


def list_users(con) -> list[dict]:
    cur = con.execute(
        "SELECT user_id, full_name, role, disabled, created_at, created_by, state_at FROM user_state ORDER BY user_id"
    )
    names = [d[0] for d in cur.description]
    return [{k: audit.plain(v) for k, v in zip(names, r)} for r in cur.fetchall()]


def _history(con, user_id: str, action: str, full_name: str, role: str, disabled: bool, actor: str, reason: str,
             now: datetime) -> None:  # fmt: skip
    seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM user_history WHERE user_id = ?", [user_id]).fetchall()[0][
        0
    ]
    con.execute(
        "INSERT INTO user_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [user_id, seq, action, full_name, role, disabled, actor, now, reason],
    ).fetchall()
    audit.record(con, "user_history", (user_id, seq), f"user {action}", actor, reason, now)


def _add_key(con, user_id: str, password: str, actor: str, reason: str, now: datetime) -> str:
    public, private = _new_keys(password)
    n = con.execute("SELECT count(*) FROM user_keys WHERE user_id = ?", [user_id]).fetchall()[0][0]
    key_id = f"{user_id}#k{n + 1}"
    con.execute(
        "INSERT INTO user_keys VALUES (?, ?, ?, ?, ?, ?)",
        [key_id, user_id, hash_password(password), public, private, now],
    ).fetchall()
    audit.record(con, "user_keys", (key_id,), "credential set", actor, reason, now)
    return key_id


def add_user(con, by: Principal, user_id: str, full_name: str, role: str, password: str, reason: str,
             now: Optional[datetime] = None) -> dict:  # fmt: skip
    """A new user (admin only; the first admin through `bootstrap`)."""
    by.require("manage_users")
    return _create(con, by.user_id, user_id, full_name, role, password, reason, now or clock.now())


def bootstrap(con, user_id: str, full_name: str, password: str, now: Optional[datetime] = None) -> dict:
    """The first admin, when there is no user yet (attributed to `bootstrap`)."""
    if any_users(con):
        raise Forbidden("users exist already: an admin adds the next ones")
    return _create(con, "bootstrap", user_id, full_name, "admin", password, "first administrator", now or clock.now())


def _create(con, actor: str, user_id: str, full_name: str, role: str, password: str, reason: str,
            now: datetime) -> dict:  # fmt: skip
    if not _USER_ID.fullmatch(user_id or ""):
        raise UserError("a user id is 2-64 characters: a lower-case letter, then a-z 0-9 . _ -")
    if role not in ROLES:
        raise UserError(f"role must be one of {ROLES}")
    if not (full_name or "").strip():
        raise UserError("a user needs a full name (it is printed with their signatures)")
    if con.execute("SELECT count(*) FROM users WHERE user_id = ?", [user_id]).fetchall()[0][0]:
        raise UserError(f"user {user_id!r} exists (a disabled user's id is never reused)")
    _check_password_strength(password, user_id)
    con.execute("INSERT INTO users VALUES (?, ?, ?)", [user_id, now, actor]).fetchall()
    audit.record(con, "users", (user_id,), "user created", actor, reason, now)
    _history(con, user_id, "added", full_name.strip(), role, False, actor, reason, now)
    _add_key(con, user_id, password, actor, reason, now)
    return get_user(con, user_id)


def disable(con, by: Principal, user_id: str, reason: str, now: Optional[datetime] = None) -> dict:
    """A disabled user can no longer sign in or use a token; their records stay, attributed to them."""
    by.require("manage_users")
    now = now or clock.now()
    u = get_user(con, user_id)
    if u["disabled"]:
        raise UserError(f"user {user_id} is already disabled")
    _history(con, user_id, "disabled", u["full_name"], u["role"], True, by.user_id, _reason(reason), now)
    revoke_all(con, by, user_id, "user disabled", now)
    return get_user(con, user_id)


def reset(con, by: Principal, user_id: str, password: str, reason: str, now: Optional[datetime] = None) -> dict:
    """A new password (and so a new signing key; older signatures keep verifying with the older public key); the
    user's tokens are revoked."""
    by.require("manage_users")
    now = now or clock.now()
    u = get_user(con, user_id)
    _check_password_strength(password, user_id)
    _add_key(con, user_id, password, by.user_id, _reason(reason), now)
    _history(con, user_id, "reset", u["full_name"], u["role"], u["disabled"], by.user_id, _reason(reason), now)
    revoke_all(con, by, user_id, "password reset", now)
    return get_user(con, user_id)


def _reason(reason: str) -> str:
    if not (reason or "").strip():
        raise UserError("a reason is required (it goes into the audit trail)")
    return reason.strip()


def current_key(con, user_id: str) -> dict:
    cur = con.execute("SELECT * FROM user_keys WHERE user_id = ? ORDER BY created_at DESC, key_id DESC LIMIT 1",
                      [user_id])  # fmt: skip
    rows = cur.fetchall()
    if not rows:
        raise AuthError("unknown user or wrong password")
    return dict(zip([d[0] for d in cur.description], rows[0]))


def public_key(con, key_id: str) -> Optional[str]:
    rows = con.execute("SELECT public_key FROM user_keys WHERE key_id = ?", [key_id]).fetchall()
    return rows[0][0] if rows else None


# --- guessing --------------------------------------------------------------------------------------------------
def delay_before_check(con, user_id: str, now: Optional[datetime] = None) -> float:
    """Seconds to wait before checking a password of `user_id`: 0 for the first FREE_FAILURES failures within
    FAILURE_WINDOW, then 1, 2, 4, ... up to MAX_DELAY_S (a success resets the count)."""
    now = now or clock.now()
    rows = con.execute(
        "SELECT count(*) FROM login_attempts WHERE user_id = ? AND NOT ok AND attempted_at > ? AND attempted_at > "
        "coalesce((SELECT max(attempted_at) FROM login_attempts WHERE user_id = ? AND ok), '-infinity'::TIMESTAMPTZ)",
        [user_id, now - FAILURE_WINDOW, user_id],
    ).fetchall()
    failures = rows[0][0]
    return 0.0 if failures < FREE_FAILURES else min(2.0 ** (failures - FREE_FAILURES), MAX_DELAY_S)


def note_attempt(con, user_id: str, ok: bool, now: Optional[datetime] = None) -> None:
    con.execute("INSERT INTO login_attempts VALUES (?, ?, ?)", [user_id, now or clock.now(), ok]).fetchall()


def check_password(con, user_id: str, password: str) -> tuple[Principal, dict]:
    """The active user and their current key, if the password is theirs; AuthError otherwise (the same message
    for an unknown user, a disabled one and a wrong password). The caller records the attempt."""
    try:
        u = get_user(con, user_id)
    except UserError:
        hash_password(password)  # the same time whether the user exists or not
        raise AuthError("unknown user or wrong password") from None
    key = current_key(con, user_id)
    if u["disabled"] or not password_matches(password, key["password_hash"]):
        raise AuthError("unknown user or wrong password")
    return Principal(u["user_id"], u["full_name"], u["role"]), key


# --- tokens ----------------------------------------------------------------------------------------------------
def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(con, who: Principal, ttl_hours: float, now: Optional[datetime] = None) -> dict:
    """A new API token for `who` (after check_password): the token itself is in the answer and nowhere else."""
    now = now or clock.now()
    token = "rmm_" + secrets.token_urlsafe(32)
    expires = now + timedelta(hours=ttl_hours)
    con.execute("INSERT INTO api_tokens VALUES (?, ?, ?, ?)", [token_hash(token), who.user_id, now, expires]).fetchall()
    audit.record(con, "api_tokens", (token_hash(token),), "token issued", who.user_id, "sign-in", now)
    return {"token": token, "user_id": who.user_id, "role": who.role, "expires_at": expires.isoformat()}


def principal_for_token(con, token: str, now: Optional[datetime] = None) -> Principal:
    """Who a bearer token acts as; AuthError when it is unknown, expired, revoked, or its user is disabled."""
    now = now or clock.now()
    if not token:
        raise AuthError("a token is required (rmm login; Authorization: Bearer ...)")
    rows = con.execute(
        "SELECT t.user_id, t.expires_at, r.token_hash IS NOT NULL, u.full_name, u.role, u.disabled "
        "FROM api_tokens t JOIN user_state u USING (user_id) LEFT JOIN token_revocations r USING (token_hash) "
        "WHERE t.token_hash = ?",
        [token_hash(token)],
    ).fetchall()
    if not rows:
        raise AuthError("unknown token")
    user_id, expires, revoked, full_name, role, disabled = rows[0]
    if revoked:
        raise AuthError("token revoked")
    if expires <= now:
        raise AuthError("token expired")
    if disabled:
        raise AuthError("user disabled")
    return Principal(user_id, full_name, role)


def revoke(con, by: Principal, token: str, now: Optional[datetime] = None) -> None:
    """Revoke one token (its own user signing out, or an admin)."""
    now = now or clock.now()
    h = token_hash(token)
    rows = con.execute("SELECT user_id FROM api_tokens WHERE token_hash = ?", [h]).fetchall()
    if not rows or (rows[0][0] != by.user_id and by.role != "admin"):
        raise Forbidden("not your token")
    _revoke_hash(con, h, by.user_id, "sign-out", now)


def revoke_all(con, by: Principal, user_id: str, reason: str, now: Optional[datetime] = None) -> int:
    by.require("manage_users")
    now = now or clock.now()
    hashes = [
        r[0]
        for r in con.execute(
            "SELECT token_hash FROM api_tokens WHERE user_id = ? AND expires_at > ? AND token_hash NOT IN "
            "(SELECT token_hash FROM token_revocations)",
            [user_id, now],
        ).fetchall()
    ]
    for h in hashes:
        _revoke_hash(con, h, by.user_id, reason, now)
    return len(hashes)


def _revoke_hash(con, h: str, actor: str, reason: str, now: datetime) -> None:
    con.execute("INSERT OR IGNORE INTO token_revocations VALUES (?, ?, ?)", [h, now, actor]).fetchall()
    audit.record(con, "token_revocations", (h,), "token revoked", actor, reason, now)
