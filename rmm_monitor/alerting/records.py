"""Alert and review-case store: the QPPV's alerts and the educational-material reviews they open.

Lifecycle state is never updated in place: every transition is a new history row (actor, time, comment) and the
current state is the latest row. Alerts: firing -> acknowledged -> resolved. Review cases: open -> in_review ->
closed (material_updated with a version, or no_change with a reason). The outbox of notifications
(`alert_deliveries`) is delivery bookkeeping, not lifecycle, so its attempt counters are updated in place.

All functions take a DuckDB connection and are called on the worker's store threads (writes on the writer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Optional

from rmm_monitor.access import audit
from rmm_monitor.core import clock
from rmm_monitor.core.errors import RmmError
from rmm_monitor.core.lang import LANGS

from .titles import title_in

ALERT_STATES = ("firing", "acknowledged", "resolved")
CASE_STATES = ("open", "in_review", "closed")
CASE_OUTCOMES = ("material_updated", "no_change")
SYSTEM = "system"


# An alert or case that is not finished: dedup and linking look only at these.
_OPEN_ALERT = "state <> 'resolved'"
_OPEN_CASE = "state <> 'closed'"


class TransitionError(RmmError, ValueError):
    """A transition the lifecycle does not allow (e.g. acknowledging a resolved alert)."""


class NotFound(RmmError, KeyError):
    """No alert or review case with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class NewAlert:
    """What a signal asks for; `key` deduplicates (one open alert per key)."""

    signal: str
    product: str
    site_id: str
    section: str
    kpi: str
    severity: str
    title: str
    triggered_at: datetime
    period: Optional[str] = None
    details: Optional[dict] = None
    evidence: tuple[str, ...] = ()  # event_ids attributed to the alert (event signals)
    units: tuple[dict, ...] = ()  # failing units that triggered it (pseudonymous)
    subject: str = ""  # what it is about within its signal, when the fields above do not say (a finding's id)

    @property
    def key(self) -> tuple:
        return (self.signal, self.product, self.site_id, self.section, self.kpi, self.subject)


def _next_id(con, table: str, prefix: str) -> str:
    """Readable ids an operator can type (`rmm alerts ack AL-000003`); rows are never deleted and all writes
    run on the one writer thread, so the count is a safe sequence."""
    n = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    return f"{prefix}-{n + 1:06d}"


def _history(
    con, table: str, id_col: str, ident: str, state: str, actor: str, at: datetime, comment: Optional[str], **extra
) -> int:
    """A lifecycle transition as a new history row, and its audit entry; returns the row's seq."""
    seq = con.execute(f"SELECT coalesce(max(seq), 0) + 1 FROM {table} WHERE {id_col} = ?", [ident]).fetchall()[0][0]
    cols = [id_col, "seq", "state", "actor", "changed_at", "comment", *extra]
    con.execute(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [ident, seq, state, actor, at, comment, *extra.values()],
    ).fetchall()
    audit.record(con, table, (ident, seq), state, actor, comment or state, at)
    return seq


def open_alert_for(con, key: tuple) -> Optional[str]:
    rows = con.execute(
        f"SELECT alert_id FROM alert_state WHERE signal = ? AND product = ? AND site_id = ? "
        f"AND section = ? AND kpi = ? AND subject = ? AND {_OPEN_ALERT} ORDER BY fired_at LIMIT 1",
        list(key),
    ).fetchall()
    return rows[0][0] if rows else None


def open_alert_keys(con, signal: str) -> dict[tuple, str]:
    rows = con.execute(
        f"SELECT signal, product, site_id, section, kpi, subject, alert_id FROM alert_state "
        f"WHERE signal = ? AND {_OPEN_ALERT}",
        [signal],
    ).fetchall()
    return {tuple(r[:6]): r[6] for r in rows}


def add_evidence(con, alert_id: str, signal: str, event_ids: Iterable[str], at: datetime) -> int:
    ids = sorted(set(event_ids))
    if not ids:
        return 0
    before = con.execute("SELECT count(*) FROM alert_evidence WHERE alert_id = ?", [alert_id]).fetchall()[0][0]
    con.execute(
        "INSERT OR IGNORE INTO alert_evidence SELECT ?, ?, unnest(?), ?", [alert_id, signal, ids, at]
    ).fetchall()
    return con.execute("SELECT count(*) FROM alert_evidence WHERE alert_id = ?", [alert_id]).fetchall()[0][0] - before


def fire(con, new: NewAlert, channels: Iterable[str], now: Optional[datetime] = None) -> Optional[str]:
    """Create the alert unless one is open for its key (then attach evidence and return None). Links it to the
    open review case of its (product, section), opening one if none is open, and queues its notifications."""
    now = now or clock.now()
    existing = open_alert_for(con, new.key)
    if existing is not None:
        add_evidence(con, existing, new.signal, new.evidence, now)
        return None
    alert_id = _next_id(con, "alerts", "AL")
    # A signal without a material section (data quality) alerts but opens no review.
    case_id = _case_for(con, new.product, new.section, new.triggered_at, now) if new.section else None
    con.execute(
        "INSERT INTO alerts (alert_id, signal, product, site_id, section, kpi, severity, period, title, details, "
        "case_id, triggered_at, fired_at, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            alert_id,
            new.signal,
            new.product,
            new.site_id,
            new.section,
            new.kpi,
            new.severity,
            new.period,
            new.title,
            json.dumps(new.details or {}),
            case_id,
            new.triggered_at,
            now,
            new.subject,
        ],
    ).fetchall()
    audit.record(con, "alerts", (alert_id,), "alert fired", SYSTEM, new.title, now)
    _history(con, "alert_history", "alert_id", alert_id, "firing", SYSTEM, now, new.title)
    add_evidence(con, alert_id, new.signal, new.evidence, now)
    if case_id is not None:
        con.execute("INSERT OR IGNORE INTO review_case_alerts VALUES (?, ?, ?)", [case_id, alert_id, now]).fetchall()
    for u in new.units if case_id is not None else ():
        con.execute(
            "INSERT INTO review_case_units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                case_id,
                alert_id,
                u.get("kpi"),
                u.get("unit_id"),
                u.get("patient_ref"),
                u.get("hcp_id"),
                u.get("ae_id"),
                u.get("lot_id"),
                u.get("site_id"),
                u.get("detail"),
            ],
        ).fetchall()
    queue(con, alert_id, "firing", channels, now)
    return alert_id


def _case_for(con, product: str, section: str, triggered_at: datetime, now: datetime) -> str:
    rows = con.execute(
        f"SELECT case_id FROM case_state WHERE product = ? AND section = ? AND {_OPEN_CASE} ORDER BY opened_at LIMIT 1",
        [product, section],
    ).fetchall()
    if rows:
        return rows[0][0]
    case_id = _next_id(con, "review_cases", "RC")
    con.execute(
        "INSERT INTO review_cases VALUES (?, ?, ?, ?, ?)", [case_id, product, section, triggered_at, now]
    ).fetchall()
    audit.record(con, "review_cases", (case_id,), "review case opened", SYSTEM, f"{product} {section}", now)
    _history(
        con,
        "review_case_history",
        "case_id",
        case_id,
        "open",
        SYSTEM,
        now,
        f"review of section {section!r} of the {product} educational materials",
    )
    return case_id


def queue(con, alert_id: str, notification: str, channels: Iterable[str], now: datetime) -> None:
    for ch in channels:
        con.execute(
            "INSERT OR IGNORE INTO alert_deliveries VALUES (?, ?, ?, ?, ?, NULL, 0, ?, NULL)",
            [f"{alert_id}:{notification}:{ch}", alert_id, notification, ch, now, now],
        ).fetchall()


# --- transitions ------------------------------------------------------------------------------------------------
def alert_state(con, alert_id: str) -> str:
    rows = con.execute("SELECT state FROM alert_state WHERE alert_id = ?", [alert_id]).fetchall()
    if not rows:
        raise NotFound(f"no alert {alert_id!r}")
    return rows[0][0]


def acknowledge(con, alert_id: str, actor: str, comment: Optional[str] = None, now: Optional[datetime] = None) -> dict:
    state = alert_state(con, alert_id)
    if state != "firing":
        raise TransitionError(f"alert {alert_id} is {state}; only a firing alert can be acknowledged")
    _history(con, "alert_history", "alert_id", alert_id, "acknowledged", actor, now or clock.now(), comment)
    return get_alert(con, alert_id)


def resolve(
    con,
    alert_id: str,
    actor: str,
    comment: Optional[str] = None,
    channels: Iterable[str] = (),
    now: Optional[datetime] = None,
) -> dict:
    now = now or clock.now()
    state = alert_state(con, alert_id)
    if state == "resolved":
        raise TransitionError(f"alert {alert_id} is already resolved")
    _history(con, "alert_history", "alert_id", alert_id, "resolved", actor, now, comment)
    queue(con, alert_id, "resolved", channels, now)
    return get_alert(con, alert_id)


def case_state(con, case_id: str) -> str:
    rows = con.execute("SELECT state FROM case_state WHERE case_id = ?", [case_id]).fetchall()
    if not rows:
        raise NotFound(f"no review case {case_id!r}")
    return rows[0][0]


def start_review(con, case_id: str, actor: str, comment: Optional[str] = None, now: Optional[datetime] = None) -> dict:
    state = case_state(con, case_id)
    if state != "open":
        raise TransitionError(f"review case {case_id} is {state}; only an open case can be started")
    _history(con, "review_case_history", "case_id", case_id, "in_review", actor, now or clock.now(), comment)
    return get_case(con, case_id)


def close_case(
    con,
    case_id: str,
    actor: str,
    outcome: str,
    material_version: Optional[int] = None,
    comment: Optional[str] = None,
    channels: Iterable[str] = (),
    now: Optional[datetime] = None,
) -> dict:
    """Close a case: `material_updated` needs the version, `no_change` needs a reason (the comment). Alerts of
    event signals linked to it resolve with it (their cause is closed); KPI alerts resolve when the KPI recovers."""
    now = now or clock.now()
    if outcome not in CASE_OUTCOMES:
        raise TransitionError(f"outcome must be one of {CASE_OUTCOMES}")
    if outcome == "material_updated" and material_version is None:
        raise TransitionError("material_updated needs the material version")
    if outcome == "no_change" and not (comment or "").strip():
        raise TransitionError("no_change needs a reason")
    state = case_state(con, case_id)
    if state == "closed":
        raise TransitionError(f"review case {case_id} is already closed")
    _history(
        con,
        "review_case_history",
        "case_id",
        case_id,
        "closed",
        actor,
        now,
        comment,
        outcome=outcome,
        material_version=material_version,
    )
    for (alert_id,) in con.execute(
        f"SELECT alert_id FROM alert_state WHERE case_id = ? AND signal <> 'kpi_breach' AND {_OPEN_ALERT}", [case_id]
    ).fetchall():
        resolve(con, alert_id, actor, f"cause closed: review case {case_id} closed ({outcome})", channels, now)
    return get_case(con, case_id)


# --- reads ------------------------------------------------------------------------------------------------------
def _dicts(cur) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _clean(d: dict) -> dict:
    out = {k: _iso(v) for k, v in d.items()}
    if isinstance(out.get("details"), str):
        out["details"] = json.loads(out["details"])
    return out


def list_alerts(con, state: Optional[str] = None, signal: Optional[str] = None) -> list[dict]:
    rows = _dicts(
        con.execute(
            "SELECT alert_id, signal, state, severity, product, site_id, section, kpi, period, title, case_id, "
            "triggered_at, fired_at, state_actor, state_at, details FROM alert_state "
            "WHERE ($state IS NULL OR state = $state) AND ($signal IS NULL OR signal = $signal) ORDER BY alert_id",
            {"state": state, "signal": signal},
        )
    )
    out = []
    for r in rows:
        alert = _clean(r)
        # the title in each language (a breach's said again from its figures), then the list stays short
        alert["titles"] = {lang: title_in(alert, lang) for lang in LANGS}
        alert.pop("details", None)
        out.append(alert)
    return out


def get_alert(con, alert_id: str) -> dict:
    rows = _dicts(con.execute("SELECT * FROM alert_state WHERE alert_id = ?", [alert_id]))
    if not rows:
        raise NotFound(f"no alert {alert_id!r}")
    alert = _clean(rows[0])
    alert["history"] = [
        _clean(r)
        for r in _dicts(
            con.execute(
                "SELECT state, actor, changed_at AS at, comment FROM alert_history WHERE alert_id = ? ORDER BY seq",
                [alert_id],
            )
        )
    ]
    alert["evidence"] = [
        r[0]
        for r in con.execute(
            "SELECT event_id FROM alert_evidence WHERE alert_id = ? ORDER BY event_id", [alert_id]
        ).fetchall()
    ]
    alert["units"] = [
        _clean(r)
        for r in _dicts(
            con.execute(
                "SELECT kpi, unit_id, site_id, patient_ref, hcp_id, ae_id, lot_id, detail FROM review_case_units "
                "WHERE alert_id = ? ORDER BY unit_id",
                [alert_id],
            )
        )
    ]
    alert["deliveries"] = [
        _clean(r)
        for r in _dicts(
            con.execute(
                "SELECT channel, notification, attempts, delivered_at, last_error FROM alert_deliveries "
                "WHERE alert_id = ? ORDER BY notification, channel",
                [alert_id],
            )
        )
    ]
    return alert


def list_cases(con, state: Optional[str] = None) -> list[dict]:
    rows = _dicts(
        con.execute(
            "SELECT c.case_id, c.state, c.product, c.section, c.outcome, c.material_version, c.triggered_at, "
            "c.opened_at, c.state_actor, c.state_at, "
            "(SELECT list(alert_id ORDER BY alert_id) FROM review_case_alerts l WHERE l.case_id = c.case_id) AS alerts "
            "FROM case_state c WHERE ($state IS NULL OR c.state = $state) ORDER BY c.case_id",
            {"state": state},
        )
    )
    return [_clean(r) for r in rows]


def get_case(con, case_id: str) -> dict:
    rows = [r for r in list_cases(con) if r["case_id"] == case_id]
    if not rows:
        raise NotFound(f"no review case {case_id!r}")
    case = rows[0]
    case["history"] = [
        _clean(r)
        for r in _dicts(
            con.execute(
                "SELECT state, outcome, material_version, actor, changed_at AS at, comment "
                "FROM review_case_history WHERE case_id = ? ORDER BY seq",
                [case_id],
            )
        )
    ]
    case["units"] = [
        _clean(r)
        for r in _dicts(
            con.execute(
                "SELECT alert_id, kpi, unit_id, site_id, patient_ref, hcp_id, ae_id, lot_id, detail "
                "FROM review_case_units WHERE case_id = ? ORDER BY alert_id, unit_id",
                [case_id],
            )
        )
    ]
    return case


# --- the outbox -------------------------------------------------------------------------------------------------
def due_deliveries(con, now: datetime, limit: int = 100) -> list[dict]:
    """Undelivered notifications whose next attempt is due, with the alert and case as they are now."""
    rows = _dicts(
        con.execute(
            "SELECT delivery_id, alert_id, notification, channel, attempts FROM alert_deliveries "
            "WHERE delivered_at IS NULL AND next_attempt_at <= ? ORDER BY created_at, delivery_id LIMIT ?",
            [now, limit],
        )
    )
    cache: dict[str, tuple] = {}
    for r in rows:
        if r["alert_id"] not in cache:
            alert = get_alert(con, r["alert_id"])
            alert.pop("deliveries", None)
            cache[r["alert_id"]] = (alert, get_case(con, alert["case_id"]) if alert.get("case_id") else None)
        r["alert"], r["case"] = cache[r["alert_id"]]
    return rows


def next_attempt_at(con) -> Optional[datetime]:
    """When the outbox's next undelivered notification is due (None: nothing waits)."""
    return con.execute("SELECT min(next_attempt_at) FROM alert_deliveries WHERE delivered_at IS NULL").fetchall()[0][0]


def mark_delivered(con, delivery_id: str, now: datetime) -> None:
    con.execute(
        "UPDATE alert_deliveries SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
        "WHERE delivery_id = ?",
        [now, delivery_id],
    ).fetchall()


def mark_failed(con, delivery_id: str, error: str, next_attempt_at: datetime) -> None:
    con.execute(
        "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
        "WHERE delivery_id = ?",
        [error, next_attempt_at, delivery_id],
    ).fetchall()


def pending_by_channel(con) -> dict[str, int]:
    return dict(
        con.execute(
            "SELECT channel, count(*) FROM alert_deliveries WHERE delivered_at IS NULL GROUP BY channel"
        ).fetchall()
    )


def open_counts(con) -> tuple[dict[str, int], int]:
    alerts = dict(
        con.execute(f"SELECT signal, count(*) FROM alert_state WHERE {_OPEN_ALERT} GROUP BY signal").fetchall()
    )
    cases = con.execute(f"SELECT count(*) FROM case_state WHERE {_OPEN_CASE}").fetchall()[0][0]
    return alerts, cases
