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
from rmm_monitor.core.lang import say
from rmm_monitor.core.settings import ChannelSettings
from rmm_monitor.kpi import load_labels

from .titles import WORDS as TITLE_WORDS
from .titles import kpi_of, title_in

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


# The e-mail's own words in each language of core/lang.py; KPI titles, review-section names and statuses come from
# the catalog (metrics/), so a translation is corrected there, once. Numbers, percentages and times are written
# the same in both languages.
WORDS: dict[str, dict[str, str]] = {
    "resolved": {"en": "[RESOLVED] {title}", "zh": "[已解除] {title}"},
    "state": {
        "en": "Alert {alert_id} ({signal}, {severity}) is {state}.",
        "zh": "警报 {alert_id}（{signal}，{severity}）状态：{state}。",
    },  # fmt: skip
    "kpi": {"en": "KPI:          {kpi} — {title}", "zh": "指标：        {kpi} — {title}"},
    "where": {
        "en": "Where:        product {product}, {where}, period {period}",
        "zh": "范围：        产品 {product}，{where}，期间 {period}",
    },  # fmt: skip
    "numerator": {"en": "Numerator:    {n}", "zh": "分子：        {n}"},
    "denominator": {"en": "Denominator:  {n}", "zh": "分母：        {n}"},
    "value": {"en": "Value:        {v}", "zh": "数值：        {v}"},
    "ci": {"en": "95% CI:       {low} – {high} (Wilson)", "zh": "95% CI：      {low} – {high}（Wilson）"},
    "threshold": {
        "en": "Threshold:    {t} ({direction}, min n {min_n})",
        "zh": "阈值：        {t}（{direction}，最小样本量 {min_n}）",
    },  # fmt: skip
    "pending": {"en": "Pending:      {n}", "zh": "待定：        {n}"},
    "status": {"en": "Status:       {s}", "zh": "状态：        {s}"},
    "units": {"en": "Top failing units ({n}, pseudonymous):", "zh": "未达标单元（前 {n} 个，假名化）："},
    "case": {
        "en": "Review case:  {case_id} — section “{section}” of the {product} educational materials, {state}.",
        "zh": "评估案例：    {case_id} — {product} 教育材料的“{section}”部分，状态：{state}。",
    },  # fmt: skip
    "commands": {
        "en": "              rmm reviews start {case_id}   /   rmm alerts ack {alert_id}",
        "zh": "              rmm reviews start {case_id}   /   rmm alerts ack {alert_id}",
    },  # fmt: skip
    "times": {
        "en": "Triggered at {triggered_at} (event time); fired at {fired_at}.",
        "zh": "触发时间 {triggered_at}（事件时间）；发出时间 {fired_at}。",
    },  # fmt: skip
    "higher_is_better": {"en": "higher is better", "zh": "越高越好"},
    "lower_is_better": {"en": "lower is better", "zh": "越低越好"},
}


def subject(doc: dict, lang: str = "en") -> str:
    title = title_in(doc, lang)
    return title if doc["notification"] == "firing" else say(WORDS, "resolved", lang, title=title)


def email_body(doc: dict, lang: str = "en") -> str:
    d = doc.get("details") or {}
    labels = load_labels()
    signal = labels.name("signals", doc["signal"], lang) if lang != "en" else doc["signal"]
    w = lambda key, **v: say(WORDS, key, lang, **v)  # noqa: E731
    lines = [
        title_in(doc, lang),
        "",
        w(
            "state",
            alert_id=doc["alert_id"],
            signal=signal,
            severity=labels.name("severities", doc["severity"], lang),
            state=labels.name("alert_states", doc["state"], lang),
        ),
    ]
    if doc["signal"] == "kpi_breach":
        kpi = kpi_of(doc["kpi"])
        site = doc["site_id"]
        where = say(TITLE_WORDS, "site", lang, site=site) if site else say(TITLE_WORDS, "all_sites", lang)
        direction = d.get("direction")
        lines += [
            "",
            w("kpi", kpi=doc["kpi"], title=kpi.title_in(lang) if kpi else d.get("kpi_title", "")),
            w("where", product=doc["product"], where=where, period=doc["period"]),
            w("numerator", n=d.get("numerator")),
            w("denominator", n=d.get("denominator")),
            w("value", v=_pct(d.get("value"))),
            w("ci", low=_pct(d.get("ci_low")), high=_pct(d.get("ci_high"))),
            w(
                "threshold",
                t=_pct(d.get("threshold")),
                direction=w(direction) if direction in WORDS else direction,
                min_n=d.get("min_n"),
            ),
            w("pending", n=d.get("pending")),
        ]
        if d.get("status"):
            lines.append(w("status", s=labels.status(d["status"], lang)))
    else:
        lines += [""] + [f"{k}: {v}" for k, v in d.items()]
    units = doc.get("units") or []
    if units:
        lines += ["", w("units", n=len(units))]
        for u in units:
            ids = ", ".join(f"{k}={u[k]}" for k in ("patient_ref", "hcp_id", "ae_id", "lot_id") if u.get(k))
            lines.append(f"  - {u.get('unit_id')} [{u.get('site_id') or ''}] {ids}: {u.get('detail')}")
    case = doc.get("case")
    if case:
        lines += [
            "",
            w(
                "case",
                case_id=case["case_id"],
                section=labels.section(case["section"], lang),
                product=case["product"],
                state=case["state"],
            ),  # fmt: skip
            w("commands", case_id=case["case_id"], alert_id=doc["alert_id"]),
        ]
    lines += ["", w("times", triggered_at=doc["triggered_at"], fired_at=doc["fired_at"])]
    return "\n".join(lines) + "\n"


# --- e-mail -----------------------------------------------------------------------------------------------------
def build_email(doc: dict, s: ChannelSettings, lang: str = "en") -> EmailMessage:
    """The notification as an e-mail in the deployment's language (RMM_LANG); UTF-8 whatever the language."""
    msg = EmailMessage()
    msg["Subject"] = subject(doc, lang)
    msg["From"] = s.email_from
    msg["To"] = ", ".join(s.email_to)
    msg["X-RMM-Alert-Id"] = doc["alert_id"]
    msg[DELIVERY_HEADER] = doc["delivery_id"]
    msg.set_content(email_body(doc, lang))
    msg["Content-Language"] = "zh-CN" if lang == "zh" else "en"  # after set_content, which drops Content-* headers
    return msg


def send_email(doc: dict, s: ChannelSettings, lang: str = "en") -> None:
    """Blocking (smtplib); the dispatcher runs it on its own thread, never on the event loop."""
    try:
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout) as smtp:
            if s.smtp_starttls:
                ctx = ssl.create_default_context(cafile=s.smtp_ca_file or None)
                smtp.starttls(context=ctx)
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
            smtp.send_message(build_email(doc, s, lang))
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
