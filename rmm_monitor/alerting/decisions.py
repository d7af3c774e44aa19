"""The people's changes to alerts and review cases: who may make them, the reason each carries, and the electronic
signature on the two that are decisions (resolving an alert, closing a review case).

The API and the CLI call these with the Principal their credential resolved to, inside one transaction: the
permission check, the history row, its audit entry and (for a decision) the signature commit together or not at
all. `actor` is always the principal's user id, never a name given by the caller.
"""

from __future__ import annotations

from typing import Iterable, Optional

from rmm_monitor.access import Principal, UserError, audit, signatures

from . import records as R

MEANING_OF_OUTCOME = {"material_updated": "closed: material updated", "no_change": "closed: no change"}


def _reason(reason: Optional[str]) -> str:
    if not (reason or "").strip():
        raise UserError("a reason is required for every change (it goes into the audit trail)")
    return str(reason).strip()


def acknowledge(con, who: Principal, alert_id: str, reason: Optional[str]) -> dict:
    who.require("acknowledge_alert")
    R.acknowledge(con, alert_id, who.user_id, _reason(reason))
    return show_alert(con, alert_id)


def start_review(con, who: Principal, case_id: str, reason: Optional[str]) -> dict:
    who.require("start_review")
    R.start_review(con, case_id, who.user_id, _reason(reason))
    return show_case(con, case_id)


def resolve(con, who: Principal, password: str, alert_id: str, reason: Optional[str],
            channels: Iterable[str] = ()) -> dict:  # fmt: skip
    """Resolve and sign ("resolved")."""
    who.require("resolve_alert")
    R.resolve(con, alert_id, who.user_id, _reason(reason), channels)
    seq = _last_seq(con, "alert_history", "alert_id", alert_id)
    signatures.sign(con, who, password, "alert", f"{alert_id}/{seq}", decision_hash(con, "alert", alert_id, seq),
                    "resolved")  # fmt: skip
    return show_alert(con, alert_id)


def close_case(con, who: Principal, password: str, case_id: str, outcome: str, material_version: Optional[int],
               reason: Optional[str], channels: Iterable[str] = ()) -> dict:  # fmt: skip
    """Close and sign ("closed: material updated" / "closed: no change"); alerts of event signals linked to it
    resolve with it (attributed to the same person, covered by the case's signature)."""
    who.require("close_review")
    R.close_case(con, case_id, who.user_id, outcome, material_version, _reason(reason), channels)
    seq = _last_seq(con, "review_case_history", "case_id", case_id)
    meaning = MEANING_OF_OUTCOME[outcome]
    signatures.sign(con, who, password, "review_case", f"{case_id}/{seq}",
                    decision_hash(con, "review_case", case_id, seq), meaning)  # fmt: skip
    return show_case(con, case_id)


def _last_seq(con, table: str, id_col: str, ident: str) -> int:
    return con.execute(f"SELECT max(seq) FROM {table} WHERE {id_col} = ?", [ident]).fetchall()[0][0]


def decision_hash(con, kind: str, ident: str, seq: int) -> str:
    """The hash of what a decision's signature covers: the alert (or case) and the history row of the decision."""
    if kind == "alert":
        record, decision = audit.read_record(con, "alerts", (ident,)), audit.read_record(con, "alert_history",
                                                                                        (ident, seq))  # fmt: skip
    else:
        record = audit.read_record(con, "review_cases", (ident,))
        decision = audit.read_record(con, "review_case_history", (ident, seq))
    if record is None or decision is None:
        return "missing"
    return audit.sha256(audit.canonical({"record": audit.canonical(record).decode(),
                                         "decision": audit.canonical(decision).decode()}))  # fmt: skip


def signed(con, kind: str, ident: str) -> list[dict]:
    """The signatures on the decisions of one alert or case, each checked against the record as it stands."""
    out = []
    cur = con.execute(
        "SELECT * FROM signatures WHERE record_kind = ? AND split_part(record_id, '/', 1) = ? ORDER BY signed_at",
        [kind, ident],
    )
    names = [d[0] for d in cur.description]
    for row in cur.fetchall():
        sig = dict(zip(names, row))
        seq = int(str(sig["record_id"]).split("/")[1])
        check = signatures.verify(con, sig, decision_hash(con, kind, ident, seq))
        out.append({**signatures.shown(sig), "valid": check.ok, "check": check.why})
    return out


def show_alert(con, alert_id: str) -> dict:
    return {**R.get_alert(con, alert_id), "signatures": signed(con, "alert", alert_id)}


def show_case(con, case_id: str) -> dict:
    return {**R.get_case(con, case_id), "signatures": signed(con, "review_case", case_id)}
