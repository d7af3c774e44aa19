"""Channels to the QPPV: the Kafka topic rmm.alerts, e-mail over SMTP, and a signed webhook.

Every notification is one JSON document (schema `rmm.alert/v1`, below), the same on every channel:

    {"schema": "rmm.alert/v1", "delivery_id": "AL-000006:firing:kafka", "notification": "firing" | "resolved",
     "alert_id": "AL-000006", "signal": "kpi_breach" | "ae_cluster_by_step" | "safety_information_updated" |
     "critical_audit_finding" |
     "data_quality", "severity": "critical", "state": "firing" | "acknowledged" | "resolved",
     "title": "[BREACH] alert_card_issued 55% < 90% — CTX-19 site GZ-03 — 2026Q4",
     "product": "CTX-19", "site_id": "GZ-03" ("" = programme-wide), "section": "alert_card",
     "kpi": "alert_card_issued" ("" for event signals), "period": "2026Q4" (null for event signals),
     "triggered_at": RFC 3339 (event time of the trigger), "fired_at": RFC 3339, "state_at": RFC 3339,
     "details": {numerator, denominator, value, ci_low, ci_high, threshold, direction, status, ...},
     "units": [{kpi, unit_id, site_id, patient_ref, hcp_id, ae_id, lot_id, detail}]   (pseudonymous, top 10),
     "evidence": [event_id, ...], "subject": the finding id of a critical_audit_finding ("" otherwise),
     "case": {"case_id", "state", "section", "product"} | null}

On Kafka the record key is the alert id (so one alert's notifications stay in order on one partition).
The webhook POSTs the same bytes with `X-RMM-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` and
`X-RMM-Delivery: <delivery_id>` (receivers deduplicate on it: delivery is at-least-once).

Configuration is from the environment only (secrets never from files in the repo), read by core/settings.py into
`ChannelSettings`:
RMM_SMTP_HOST, RMM_SMTP_PORT (25), RMM_SMTP_STARTTLS (0/1), RMM_SMTP_CA_FILE (trust anchor for STARTTLS; the
system store otherwise), RMM_SMTP_USER, RMM_SMTP_PASSWORD, RMM_ALERT_EMAIL_FROM, RMM_ALERT_EMAIL_TO (comma list);
RMM_WEBHOOK_URL, RMM_WEBHOOK_SECRET; RMM_ALERT_KAFKA (1 = publish to rmm.alerts, default on);
RMM_ALERT_RETRY_BASE (s, default 1) and RMM_ALERT_RETRY_MAX (s, default 300) for the exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, Optional

from rmm_monitor.core.errors import RmmError
from rmm_monitor.core.fmt import pct as _pct
from rmm_monitor.core.settings import ChannelSettings

SCHEMA = "rmm.alert/v1"
SIGNATURE_HEADER = "X-RMM-Signature-256"
DELIVERY_HEADER = "X-RMM-Delivery"


class DeliveryError(RmmError):
    """A channel refused or could not be reached; the outbox retries."""


# --- the document -----------------------------------------------------------------------------------------------
def payload(delivery_id: str, notification: str, alert: dict, case: Optional[dict]) -> dict:
    keep = (
        "alert_id",
        "signal",
        "severity",
        "state",
        "title",
        "product",
        "site_id",
        "section",
        "kpi",
        "period",
        "triggered_at",
        "fired_at",
        "state_at",
        "details",
        "units",
        "evidence",
        "subject",
    )
    doc: dict[str, Any] = {"schema": SCHEMA, "delivery_id": delivery_id, "notification": notification}
    doc.update({k: alert.get(k) for k in keep})
    doc["case"] = None if case is None else {k: case.get(k) for k in ("case_id", "state", "section", "product")}
    return doc


def encode(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def subject(doc: dict) -> str:
    return doc["title"] if doc["notification"] == "firing" else f"[RESOLVED] {doc['title']}"


def email_body(doc: dict) -> str:
    d = doc.get("details") or {}
    lines = [doc["title"], "", f"Alert {doc['alert_id']} ({doc['signal']}, {doc['severity']}) is {doc['state']}."]
    if doc["signal"] == "kpi_breach":
        lines += [
            "",
            f"KPI:          {doc['kpi']} — {d.get('kpi_title', '')}",
            f"Where:        product {doc['product']}, site {doc['site_id'] or 'all sites'}, period {doc['period']}",
            f"Numerator:    {d.get('numerator')}",
            f"Denominator:  {d.get('denominator')}",
            f"Value:        {_pct(d.get('value'))}",
            f"95% CI:       {_pct(d.get('ci_low'))} – {_pct(d.get('ci_high'))} (Wilson)",
            f"Threshold:    {_pct(d.get('threshold'))} ({d.get('direction')}, min n {d.get('min_n')})",
            f"Pending:      {d.get('pending')}",
        ]
    else:
        lines += [""] + [f"{k}: {v}" for k, v in d.items()]
    units = doc.get("units") or []
    if units:
        lines += ["", f"Top failing units ({len(units)}, pseudonymous):"]
        for u in units:
            ids = ", ".join(f"{k}={u[k]}" for k in ("patient_ref", "hcp_id", "ae_id", "lot_id") if u.get(k))
            lines.append(f"  - {u.get('unit_id')} [{u.get('site_id') or ''}] {ids}: {u.get('detail')}")
    case = doc.get("case")
    if case:
        lines += [
            "",
            f"Review case:  {case['case_id']} — section {case['section']!r} of the {case['product']} "
            f"educational materials, {case['state']}.",
            f"              rmm reviews start {case['case_id']}   /   rmm alerts ack {doc['alert_id']}",
        ]
    lines += ["", f"Triggered at {doc['triggered_at']} (event time); fired at {doc['fired_at']}."]
    return "\n".join(lines) + "\n"


# --- e-mail -----------------------------------------------------------------------------------------------------
def build_email(doc: dict, s: ChannelSettings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(doc)
    msg["From"] = s.email_from
    msg["To"] = ", ".join(s.email_to)
    msg["X-RMM-Alert-Id"] = doc["alert_id"]
    msg[DELIVERY_HEADER] = doc["delivery_id"]
    msg.set_content(email_body(doc))
    return msg


def send_email(doc: dict, s: ChannelSettings) -> None:
    """Blocking (smtplib); the dispatcher runs it on its own thread, never on the event loop."""
    try:
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout) as smtp:
            if s.smtp_starttls:
                ctx = ssl.create_default_context(cafile=s.smtp_ca_file or None)
                smtp.starttls(context=ctx)
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
            smtp.send_message(build_email(doc, s))
    except (OSError, smtplib.SMTPException) as exc:
        # The message of an SMTPAuthenticationError never carries the password; keep only the class and code.
        raise DeliveryError(f"smtp {s.smtp_host}:{s.smtp_port}: {type(exc).__name__}: {exc}"[:300]) from exc


# --- webhook ----------------------------------------------------------------------------------------------------
def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: Optional[str]) -> bool:
    return header is not None and hmac.compare_digest(sign(secret, body), header)


async def send_webhook(session, doc: dict, s: ChannelSettings) -> None:
    import aiohttp

    body = encode(doc)
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: doc["delivery_id"]}
    if s.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(s.webhook_secret, body)
    try:
        async with session.post(
            s.webhook_url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=s.timeout)
        ) as resp:
            if resp.status >= 300:
                raise DeliveryError(f"webhook answered {resp.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DeliveryError(f"webhook: {type(exc).__name__}: {exc}"[:300]) from exc
