"""Signals that alert the QPPV and open reviews of the educational materials (docs/kpi-rules.md, signals).

Each evaluation looks at the store, not at the order events arrived in, so a late event that completes a cluster
fires it, and the same events evaluated twice fire nothing new:

- kpi_breach: a KPI row in status `breach` (warning is shown on dashboards but does not page). Site rows are
  the unit of action; a programme-wide row pages only when no site row of that KPI and product is in breach
  (a diffuse breach), so one weak site gives one alert, not two. The alert resolves (actor "system") when its
  row is ok or warning again, or when a new quarter starts (the gauges follow the current quarter).
- ae_cluster_by_step: >= min_events `ae_onset` with the same related_step (medication_error without a step ->
  `dosing`) within any window_days, per product, on event time. Events already attributed to an alert of this
  signal never count again, so a closed cluster does not re-fire on its own history.
- safety_information_updated: one alert (and case) per listed section.
- data_quality: a failing critical expectation in `dq_results` (the quality part's table).
- critical_audit_finding: an audit_finding_raised with severity critical alerts the QPPV at once, on every channel,
  without a review case (a finding at a centre is not about the educational materials). One alert per finding
  (product + finding_id), never a second one when the finding is sent again, even after the first was resolved; it
  resolves (actor "system") when a verified CAPA closure of the finding is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Optional

from rmm_monitor.alerting import records as A
from rmm_monitor.core.fmt import pct
from rmm_monitor.kpi import Kpi, load_config
from rmm_monitor.store import transaction

from .titles import breach_title

KPI_BREACH, AE_CLUSTER, SAFETY, DATA_QUALITY, CRITICAL_FINDING = (
    "kpi_breach",
    "ae_cluster_by_step",
    "safety_information_updated",
    "data_quality",
    "critical_audit_finding",
)
SIGNALS = (KPI_BREACH, AE_CLUSTER, SAFETY, DATA_QUALITY, CRITICAL_FINDING)
PROGRAMME = ""  # site_id of alerts that are not about one site
TOP_UNITS = 10


@dataclass(frozen=True)
class ClusterRule:
    min_events: int = 3
    window_days: float = 90.0

    @classmethod
    def from_config(cls, data: Optional[dict] = None) -> "ClusterRule":
        """[signals.ae_cluster_by_step] min_events / window_days in the catalog config (RMM_CONFIG overlays)."""
        data = load_config().data if data is None else data
        spec = data.get("signals", {}).get(AE_CLUSTER, {})
        return cls(int(spec.get("min_events", cls.min_events)), float(spec.get("window_days", cls.window_days)))


# --- kpi_breach -------------------------------------------------------------------------------------------------
def breach_targets(rows: list[dict]) -> list[dict]:
    """The rows that should page: breaching site rows, and programme rows with no breaching site row."""
    site_breach = {(r["kpi"], r["product"]) for r in rows if r["status"] == "breach" and r.get("site_id")}
    return [
        r
        for r in rows
        if r["status"] == "breach"
        and r.get("product")
        and (r.get("site_id") or (r["kpi"], r["product"]) not in site_breach)
    ]


def kpi_key(row: dict, kpi: Kpi) -> tuple:
    return (KPI_BREACH, row["product"], row.get("site_id") or PROGRAMME, kpi.review_section, row["kpi"], "")


def plan_kpi_breaches(
    rows: list[dict], catalog: Iterable[Kpi], open_keys: dict[tuple, str]
) -> tuple[list[dict], list[tuple[str, dict]]]:
    """(rows that need a new alert, [(alert_id, row) of open alerts whose KPI left breach]). Pure, so the
    reader thread can plan and fetch failing units before the writer commits."""
    kpis = {k.id: k for k in catalog}
    status = {(r["kpi"], r["product"], r.get("site_id") or PROGRAMME): r for r in rows if r.get("product")}
    new = [r for r in breach_targets(rows) if r["kpi"] in kpis and kpi_key(r, kpis[r["kpi"]]) not in open_keys]
    recovered = []
    for key, alert_id in open_keys.items():
        row = status.get((key[4], key[1], key[2]))
        if row is not None and row["status"] != "breach":
            recovered.append((alert_id, row))
    return new, recovered


def breach_alert(row: dict, kpi: Kpi, units: list[dict], now: datetime) -> A.NewAlert:
    details = {
        k: row.get(k)
        for k in (
            "numerator",
            "denominator",
            "value",
            "ci_low",
            "ci_high",
            "threshold",
            "direction",
            "min_n",
            "status",
            "pending",
            "period",
        )
    }
    details["kpi_title"] = kpi.title
    return A.NewAlert(
        KPI_BREACH,
        row["product"],
        row.get("site_id") or PROGRAMME,
        kpi.review_section,
        row["kpi"],
        "critical",
        breach_title(row),
        now,
        row["period"],
        details,
        units=tuple({**u, "kpi": row["kpi"]} for u in units[:TOP_UNITS]),
    )


# --- ae_cluster_by_step -----------------------------------------------------------------------------------------
_AE_CANDIDATES = """
SELECT e.event_id, e.product, coalesce(e.related_step, 'dosing') AS section, e.occurred_at, e.seq,
       e.site_id, e.ae_id, e.patient_ref, e.term, e.grade, e.medication_error
FROM events e
WHERE e.event_type = 'ae_onset' AND (e.related_step IS NOT NULL OR e.medication_error)
  AND NOT EXISTS (SELECT 1 FROM alert_evidence v WHERE v.signal = 'ae_cluster_by_step' AND v.event_id = e.event_id)
ORDER BY e.product, section, e.occurred_at, e.seq
"""


def ae_clusters(con, rule: ClusterRule, open_keys: dict[tuple, str]) -> tuple[list[A.NewAlert], dict[str, list]]:
    """(new cluster alerts, {open alert id: unattributed event ids of its key}). A new cluster's evidence is
    every unattributed candidate in [first, first + window] of the earliest window reaching min_events."""
    by_key: dict[tuple, list[tuple]] = {}
    for rec in con.execute(_AE_CANDIDATES).fetchall():
        by_key.setdefault((rec[1], rec[2]), []).append(rec)
    window = timedelta(days=rule.window_days)
    new, attach = [], {}
    for (product, section), evs in by_key.items():
        key = (AE_CLUSTER, product, PROGRAMME, section, "", "")
        if key in open_keys:
            attach[open_keys[key]] = [e[0] for e in evs]
            continue
        j = 0
        for i in range(len(evs)):
            while evs[i][3] - evs[j][3] > window:
                j += 1
            if i - j + 1 >= rule.min_events:
                first = evs[j][3]
                members = [e for e in evs[j:] if e[3] - first <= window]
                sites = sorted({e[5] for e in members})
                title = (
                    f"[AE CLUSTER] {len(members)} AEs related to step {section} within {rule.window_days:g} "
                    f"days — {product} sites {', '.join(sites)}"
                )
                units = tuple(
                    {
                        "unit_id": e[6],
                        "ae_id": e[6],
                        "patient_ref": e[7],
                        "site_id": e[5],
                        "detail": f"{e[8]} grade {e[9]} at {e[3].isoformat()}"
                        + (" (medication error)" if e[10] else ""),
                    }
                    for e in members
                )
                details = {
                    "events": len(members),
                    "min_events": rule.min_events,
                    "window_days": rule.window_days,
                    "first_at": first.isoformat(),
                    "last_at": members[-1][3].isoformat(),
                    "sites": sites,
                }
                new.append(
                    A.NewAlert(
                        AE_CLUSTER,
                        product,
                        PROGRAMME,
                        section,
                        "",
                        "critical",
                        title,
                        evs[i][3],
                        None,
                        details,
                        tuple(e[0] for e in members),
                        units,
                    )
                )
                break
    return new, attach


# --- safety_information_updated ---------------------------------------------------------------------------------
_SAFETY = """
SELECT e.event_id, e.product, unnest(e.sections) AS section, e.occurred_at, e.summary
FROM events e
WHERE e.event_type = 'safety_information_updated'
  AND NOT EXISTS (SELECT 1 FROM alert_evidence v WHERE v.signal = 'safety_information_updated'
                  AND v.event_id = e.event_id)
ORDER BY e.occurred_at, e.seq
"""


def safety_alerts(con) -> list[A.NewAlert]:
    out = []
    for event_id, product, section, at, summary in con.execute(_SAFETY).fetchall():
        out.append(
            A.NewAlert(
                SAFETY,
                product,
                PROGRAMME,
                section,
                "",
                "critical",
                f"[SAFETY] new safety information for section {section} — {product}",
                at,
                None,
                {"summary": summary, "occurred_at": at.isoformat()},
                (event_id,),
            )
        )
    return out


# --- data_quality (the quality part's dq_results) ----------------------------------------------------------------
def dq_state(con) -> dict[tuple, dict]:
    """Latest run of each suite: failing critical expectations, keyed like alerts."""
    rows = con.execute("""
        WITH latest AS (SELECT suite, max(run_at) AS run_at FROM dq_results GROUP BY suite)
        SELECT r.suite, r.expectation, r.observed, r.run_at FROM dq_results r JOIN latest USING (suite, run_at)
        WHERE r.critical AND NOT r.success ORDER BY r.suite, r.expectation""").fetchall()
    return {
        (DATA_QUALITY, "*", PROGRAMME, "", f"{suite}:{exp}", ""): {
            "suite": suite,
            "expectation": exp,
            "observed": str(observed),
            "run_at": run_at,
        }
        for suite, exp, observed, run_at in rows
    }


def dq_alert(key: tuple, d: dict) -> A.NewAlert:
    return A.NewAlert(
        DATA_QUALITY,
        key[1],
        key[2],
        key[3],
        key[4],
        "critical",
        f"[DATA QUALITY] {d['suite']}: {d['expectation']} failed",
        d["run_at"],
        None,
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()},
    )


# --- critical_audit_finding -------------------------------------------------------------------------------------
_CRITICAL_FINDINGS = """
SELECT f.product, f.finding_id, min(f.occurred_at) AS raised_at, arg_min(f.site_id, (f.occurred_at, f.seq)) AS site_id,
       arg_min(f.area, (f.occurred_at, f.seq)) AS area, arg_min(f.audit_id, (f.occurred_at, f.seq)) AS audit_id,
       list(f.event_id ORDER BY f.seq) AS event_ids
FROM events f
WHERE f.event_type = 'audit_finding_raised' AND f.topic = 'rmm.site' AND f.severity = 'critical'
  AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.signal = 'critical_audit_finding' AND a.product = f.product
                  AND a.subject = f.finding_id)
GROUP BY f.product, f.finding_id
ORDER BY raised_at, f.product, f.finding_id
"""


def critical_findings(con) -> list[A.NewAlert]:
    """A new alert for each critical finding that has none (open or resolved): one per finding, ever."""
    out = []
    for product, finding_id, raised_at, site_id, area, audit_id, event_ids in con.execute(
        _CRITICAL_FINDINGS
    ).fetchall():
        title = f"[CRITICAL AUDIT FINDING] {finding_id} at site {site_id} — {area} — {product} (audit {audit_id})"
        details = {
            "finding_id": finding_id,
            "audit_id": audit_id,
            "area": area,
            "severity": "critical",
            "raised_at": raised_at.isoformat(),
            "site_id": site_id,
        }
        out.append(
            A.NewAlert(
                CRITICAL_FINDING,
                product,
                site_id,
                "",
                "",
                "critical",
                title,
                raised_at,
                None,
                details,
                tuple(event_ids),
                subject=finding_id,
            )
        )
    return out


_CLOSED_FINDINGS = """
SELECT a.alert_id, min(c.occurred_at) AS verified_at
FROM alert_state a JOIN events c
  ON c.event_type = 'capa_closed' AND c.topic = 'rmm.site' AND c.product = a.product AND c.finding_id = a.subject
 AND c.verified
WHERE a.signal = 'critical_audit_finding' AND a.state <> 'resolved'
GROUP BY a.alert_id ORDER BY a.alert_id
"""


def closed_findings(con) -> list[tuple[str, str]]:
    return [
        (alert_id, f"CAPA verified on {at.date().isoformat()}")
        for alert_id, at in con.execute(_CLOSED_FINDINGS).fetchall()
    ]


# --- material releases close review cases -----------------------------------------------------------------------
_RELEASES_FOR_OPEN_CASES = """
SELECT c.case_id, max(e.version) AS version, arg_max(e.material_id, e.version) AS material_id,
       arg_max(e.occurred_at, e.version) AS released_at
FROM case_state c JOIN events e
  ON e.event_type = 'material_version_released' AND e.product = c.product
 AND list_contains(e.sections, c.section) AND e.occurred_at >= c.triggered_at
WHERE c.state <> 'closed'
GROUP BY c.case_id ORDER BY c.case_id
"""


def releases_closing_cases(con) -> list[tuple[str, int, str, datetime]]:
    """A release counts only if it happened (event time) at or after the trigger: an older version cannot be
    the answer to the case."""
    return [(str(c), int(v), str(m), at) for c, v, m, at in con.execute(_RELEASES_FOR_OPEN_CASES).fetchall()]


# --- evaluation (writer thread, one transaction each) -----------------------------------------------------------
@dataclass(frozen=True)
class EventPlan:
    """What an evaluation of the event signals found, read on the reader thread. Applying it is the only part
    that needs the writer, and usually there is nothing to apply: ingest no longer waits behind the reads (an
    evaluation's reads took ~65 ms of the writer per second of AE traffic at 30 k stored events)."""

    new: tuple[A.NewAlert, ...] = ()
    attach: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (open alert id, event ids to attribute)
    resolve_dq: tuple[str, ...] = ()  # alert ids whose expectation passes again
    resolve_findings: tuple[tuple[str, str], ...] = ()  # (alert id, why): a verified CAPA closed the finding
    close: tuple[tuple[str, int, str, datetime], ...] = ()  # (case id, version, material id, released at)

    def __bool__(self) -> bool:
        return bool(self.new or self.attach or self.resolve_dq or self.resolve_findings or self.close)


def plan_events(con, rule: ClusterRule) -> EventPlan:
    """Event signals, data quality and material releases over the whole store: reads only."""
    new, attach = ae_clusters(con, rule, A.open_alert_keys(con, AE_CLUSTER))
    candidates = new + safety_alerts(con)
    dq = dq_state(con)
    open_dq = A.open_alert_keys(con, DATA_QUALITY)
    candidates += [dq_alert(k, d) for k, d in dq.items() if k not in open_dq]
    resolve_dq = [alert_id for key, alert_id in open_dq.items() if key not in dq]
    candidates += critical_findings(con)
    return EventPlan(
        tuple(candidates),
        tuple((a, tuple(ids)) for a, ids in attach.items() if ids),
        tuple(resolve_dq),
        tuple(closed_findings(con)),
        tuple(releases_closing_cases(con)),
    )


def apply_event_plan(con, plan: EventPlan, channels: tuple[str, ...], now: datetime) -> dict:
    """Commit a plan made on the reader, in one transaction. The writer may have moved on since the plan was
    read (an operator resolved an alert or closed a case): each step re-checks the state it changes, and fire()
    re-checks the open key, so a stale plan does nothing wrong and the next evaluation catches up."""
    fired: list[str] = []
    resolved: list[str] = []
    closed: list[str] = []
    if not plan:
        return {"fired": fired, "resolved": resolved, "closed": closed}
    with transaction(con):
        for alert_id, event_ids in plan.attach:
            if A.alert_state(con, alert_id) != "resolved":
                A.add_evidence(con, alert_id, AE_CLUSTER, event_ids, now)
        for na in plan.new:
            new_id = A.fire(con, na, channels, now)
            if new_id:
                fired.append(new_id)
        for alert_id in plan.resolve_dq:
            if A.alert_state(con, alert_id) != "resolved":
                A.resolve(con, alert_id, A.SYSTEM, "expectation passes again", channels, now)
                resolved.append(alert_id)
        for alert_id, why in plan.resolve_findings:
            if A.alert_state(con, alert_id) != "resolved":
                A.resolve(con, alert_id, A.SYSTEM, why, channels, now)
                resolved.append(alert_id)
        for case_id, version, material_id, released_at in plan.close:
            if A.case_state(con, case_id) != "closed":
                A.close_case(
                    con,
                    case_id,
                    A.SYSTEM,
                    "material_updated",
                    int(version),
                    f"material updated: {material_id} v{version} released {released_at.isoformat()}",
                    channels,
                    now,
                )
                closed.append(case_id)
    return {"fired": fired, "resolved": resolved, "closed": closed}


def evaluate_events(con, rule: ClusterRule, channels: tuple[str, ...], now: datetime) -> dict:
    """Plan and apply on one connection (the CLI and tests; the worker plans on its reader). Idempotent."""
    return apply_event_plan(con, plan_events(con, rule), channels, now)


def apply_kpi_plan(
    con,
    catalog: Iterable[Kpi],
    new: list[tuple[dict, list[dict]]],
    recovered: list[tuple[str, dict]],
    channels: tuple[str, ...],
    now: datetime,
) -> dict:
    """Commit a plan made on the reader: fire() re-checks the open key, so a plan that raced is harmless."""
    kpis = {k.id: k for k in catalog}
    fired, resolved = [], []
    with transaction(con):
        for row, units in new:
            alert_id = A.fire(con, breach_alert(row, kpis[row["kpi"]], units, now), channels, now)
            if alert_id:
                fired.append(alert_id)
        for alert_id, row in recovered:
            if A.alert_state(con, alert_id) == "resolved":
                continue
            period = con.execute("SELECT period FROM alerts WHERE alert_id = ?", [alert_id]).fetchall()[0][0]
            if row["status"] == "insufficient_data" and row["period"] == period:
                continue  # fewer units known is not a recovery; a new quarter is (the breach belongs to the old one)
            A.resolve(
                con,
                alert_id,
                A.SYSTEM,
                f"KPI recovered: {row['kpi']} {pct(row['value'], 0)} is {row['status']} in {row['period']}",
                channels,
                now,
            )
            resolved.append(alert_id)
    return {"fired": fired, "resolved": resolved}
