"""Electronic signatures on the records that carry a decision: closing a review case, resolving an alert, a
quarterly export, a change to the catalog's thresholds or rules.

A signature needs both components at the moment of signing: the user (from their token or user id) and their
password, which unlocks their Ed25519 private key. It carries its meaning ("closed: no change", "approved", ...),
the signer's full name, the time (UTC) and the hash of the exact content signed; the Ed25519 signature covers all of
it. Copying it onto another record fails (the record's hash differs), and so does changing the signer, the meaning
or the time (the signature no longer verifies). Verifying needs only the public key, which is kept for good.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from rmm_monitor.core import clock

from . import audit
from .users import Principal, check_password, private_key, public_key

# What a signature may mean, by kind of record, and which permission signing it needs.
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "review_case": ("close_review", ("closed: material updated", "closed: no change")),
    "alert": ("resolve_alert", ("resolved", "reviewed")),
    "export": ("sign_export", ("approved", "reviewed")),
    "catalog_change": ("sign_catalog_change", ("approved",)),
}


@dataclass(frozen=True)
class Check:
    ok: bool
    why: str


def payload(sig: dict) -> bytes:
    """The bytes a signature covers."""
    keys = ("record_kind", "record_id", "record_hash", "meaning", "user_id", "full_name", "key_id", "signed_at")
    return audit.canonical({k: sig[k] for k in keys})


def sign(
    con,
    who: Principal,
    password: str,
    kind: str,
    record_id: str,
    record_hash: str,
    meaning: str,
    now: Optional[datetime] = None,
) -> dict:
    """Sign (in the caller's transaction): `who` must be allowed to sign `kind` and give their password again."""
    if kind not in KINDS:
        raise ValueError(f"nothing of kind {kind!r} is signed")
    permission, meanings = KINDS[kind]
    who.require(permission)
    if meaning not in meanings:
        raise ValueError(f"a {kind} signature means one of {meanings}")
    now = now or clock.now()
    signer, key = check_password(con, who.user_id, password)  # the caller slows down and counts guessing (guard)
    n = con.execute("SELECT count(*) FROM signatures").fetchall()[0][0]
    sig = {
        "signature_id": f"SG-{n + 1:06d}",
        "record_kind": kind,
        "record_id": record_id,
        "record_hash": record_hash,
        "meaning": meaning,
        "user_id": signer.user_id,
        "full_name": signer.full_name,
        "key_id": key["key_id"],
        "signed_at": now,
    }
    sig["signature"] = base64.b64encode(private_key(key["private_key_enc"], password).sign(payload(sig))).decode()
    con.execute(
        "INSERT INTO signatures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [sig[k] for k in ("signature_id", "record_kind", "record_id", "record_hash", "meaning", "user_id",
                          "full_name", "key_id", "signed_at", "signature")],
    ).fetchall()  # fmt: skip
    audit.record(con, "signatures", (sig["signature_id"],), f"signed ({meaning})", signer.user_id,
                 f"{kind} {record_id}", now)  # fmt: skip
    return shown(sig)


def verify(con, sig: dict, current_hash: Optional[str] = None) -> Check:
    """Does `sig` verify with its signer's public key, and (given the hash of the record as it stands now) is it
    still about that content?"""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = public_key(con, sig["key_id"])
    if key is None or not str(sig["key_id"]).startswith(f"{sig['user_id']}#"):
        return Check(False, "the signer's key is unknown")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key)).verify(base64.b64decode(sig["signature"]), payload(sig))
    except (InvalidSignature, ValueError):
        return Check(False, "the signature does not match its signer, meaning, time or record")
    if current_hash is not None and current_hash != sig["record_hash"]:
        return Check(False, "the record changed after it was signed")
    return Check(True, "valid")


def for_record(con, kind: str, record_id: str = "") -> list[dict]:
    """The signatures of one record (every record of the kind when `record_id` is empty)."""
    cur = con.execute(
        "SELECT * FROM signatures WHERE record_kind = ? AND (? = '' OR record_id = ?) ORDER BY signed_at, signature_id",
        [kind, record_id, record_id],
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def shown(sig: dict) -> dict:
    """A signature for people: who, meaning, when; the record hash and signature value for checking."""
    out = {k: audit.plain(v) for k, v in sig.items()}
    out["text"] = f"{sig['full_name']} ({sig['user_id']}) — {sig['meaning']} — {audit.plain(sig['signed_at'])}"
    return out
