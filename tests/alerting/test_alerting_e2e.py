"""Issue 5's done-when on real parts, one scenario:
the simulator's weak site (GZ-03, late or missing alert cards) fed through the bundled broker into a running
`rmm worker`, scraped by a real Prometheus with the generated rules, which fires to a real Alertmanager.
Dates: the worker judges the current quarter, so the expected breaches are computed by the same engine over a
replay of the same events (`receivers.expected_breaches`); the GZ-03 alert-card breach must be among them.

Receivers: aiosmtpd (the worker's e-mail, and Alertmanager's e-mail without TLS), local HTTP servers (the
worker's webhook, whose first attempt is refused to prove the retry, and Alertmanager's webhook), kafka-python
reading rmm.alerts."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from urllib.error import HTTPError

import pytest
from kafka import KafkaConsumer, TopicPartition

from rmm_monitor.alerting import channels as C
from rmm_monitor.alerting import signals as S
from rmm_monitor.core import clock
from rmm_monitor.dev.broker import Broker
from rmm_monitor.dev.producer import produce_events
from rmm_monitor.kpi import load_catalog
from rmm_monitor.ops import prometheus as alert_rules

from support.people import PASSWORDS, make_people
from support.promserver import AlertmanagerServer, PrometheusServer
from support.receivers import SmtpSink, WebhookReceiver, expected_breaches, wait_until, weak_site_events
from support.workers import WorkerProc, http_text, run_cli
from support.workers import http_json as _http_json

pytestmark = pytest.mark.long

SECRET = "e2e-webhook-secret"
PEOPLE: dict = {}  # the scenario's users' tokens (support/people.py); reads of the API need one once users exist


def http_json(url: str, timeout: float = 10.0):
    """The worker's API as the viewer of the scenario."""
    return _http_json(url, timeout, token=PEOPLE["people"]["audit.liu"])


@dataclass
class Scenario:
    broker: Broker
    worker: WorkerProc
    smtp: SmtpSink
    hook: WebhookReceiver
    am_hook: WebhookReceiver
    am_smtp: SmtpSink
    events: list
    expected: list  # the KPI rows that must page, by the engine, over a replay of the same events
    t0: float

    def gz03(self) -> dict:
        """The weak site's alert (the scenario's point)."""
        [alert] = [
            a
            for a in http_json(self.worker.url + "/api/alerts")
            if (a["kpi"], a["product"], a["site_id"]) == ("alert_card_issued", "CTX-19", "GZ-03")
        ]
        return alert


def read_alert_topic(bootstrap: str, timeout_ms: int = 1000) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=timeout_ms)
    tp = TopicPartition("rmm.alerts", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = list(consumer)
    consumer.close()
    return got


def post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def scenario(tmp_path):
    tmp = tmp_path
    broker = Broker(log_path=tmp / "broker.log").start()
    with SmtpSink() as smtp, WebhookReceiver(fail_first=1) as hook, WebhookReceiver() as am_hook, SmtpSink() as am_smtp:
        worker = WorkerProc(
            db=tmp / "worker.duckdb",
            bootstrap=broker.bootstrap,
            log=tmp / "worker.log",
            env_extra={
                "RMM_SMTP_HOST": "127.0.0.1",
                "RMM_SMTP_PORT": str(smtp.port),
                "RMM_ALERT_EMAIL_TO": "qppv@example.test",
                "RMM_WEBHOOK_URL": hook.url,
                "RMM_WEBHOOK_SECRET": SECRET,
                "RMM_ALERT_RETRY_BASE": "0.5",
                "RMM_DQ_SECONDS": "0",
            },
        )  # the data-quality run is not under test here and costs seconds of CPU
        # the committed rules and routing, generated with test timings (for: 1s, group_wait 1s)
        rules = tmp / "rules.yml"
        rules.write_text(alert_rules.dump(alert_rules.rules(load_catalog(), kpi_for="1s")))
        am_config = tmp / "alertmanager.yml"
        am_config.write_text(
            alert_rules.dump(
                alert_rules.alertmanager(
                    webhook_url=am_hook.url,
                    ops_webhook_url=am_hook.url,
                    email_to="pv@example.test",
                    smarthost=f"127.0.0.1:{am_smtp.port}",
                    require_tls=False,
                    password_file=None,
                    group_wait="1s",
                    group_interval="1s",
                )
            )
        )
        try:
            PEOPLE["people"] = make_people(worker.db)  # in the file, before the worker opens it
            worker.start()
            with (
                AlertmanagerServer(tmp, am_config) as am,
                PrometheusServer(tmp, [f"127.0.0.1:{worker.port}"], [rules], am.address),
            ):
                events = list(weak_site_events())
                expected = expected_breaches(events, tmp)
                assert ("alert_card_issued", "CTX-19", "GZ-03") in {
                    (r["kpi"], r["product"], r["site_id"]) for r in expected
                }, "the scenario must breach at GZ-03"
                t0 = time.monotonic()
                # no wait for the first scrape: Prometheus applies new targets after ~5 s, ingest overlaps it
                produce_events(events, broker.bootstrap)
                yield Scenario(broker, worker, smtp, hook, am_hook, am_smtp, events, expected, t0)
        finally:
            worker.stop()
            broker.stop()


def check_breach_reaches_the_qppv_once_on_every_channel(scenario):
    s = scenario
    n = len(s.expected)  # 1 at the suite's NOW: alert_card_issued CTX-19 GZ-03 6/11
    wait_until(lambda: len(s.smtp.messages) >= n and len(s.hook.ok()) >= n, 60, "e-mail and webhook delivery")
    msgs = wait_until(lambda: read_alert_topic(s.broker.bootstrap), 30, "the rmm.alerts messages")
    t_mail, t_hook = s.smtp.received_at[0] - s.t0, s.hook.ok()[0]["at"] - s.t0
    print(f"\nproduce -> e-mail {t_mail:.1f}s, webhook {t_hook:.1f}s (after one refused attempt); {n} breach(es)")
    assert t_mail < 60 and t_hook < 60

    alerts = http_json(s.worker.url + "/api/alerts")
    assert sorted((a["signal"], a["kpi"], a["product"], a["site_id"], a["state"]) for a in alerts) == sorted(
        ("kpi_breach", r["kpi"], r["product"], r["site_id"] or "", "firing") for r in s.expected
    )
    alert = s.gz03()
    row = next(
        r
        for r in s.expected
        if (r["kpi"], r["product"], r["site_id"]) == (alert["kpi"], alert["product"], alert["site_id"])
    )

    # e-mail: a subject the QPPV can triage from; numbers, failing units and the review case in the body
    assert len(s.smtp.messages) == n
    [mail] = [m for m in s.smtp.messages if m["X-RMM-Alert-Id"] == alert["alert_id"]]
    assert mail["Subject"] == (
        f"[BREACH] alert_card_issued {100 * row['value']:.0f}% < 90% — CTX-19 site GZ-03 — {alert['period']}"
    )
    body = mail.get_content()
    units = http_json(f"{s.worker.url}/api/alerts/{alert['alert_id']}")["units"]
    for text in (
        f"Numerator:    {row['numerator']}",
        f"Denominator:  {row['denominator']}",
        "95% CI:",
        "Threshold:    90.0%",
        alert["case_id"],
        units[0]["patient_ref"],
    ):
        assert text in body, (text, body)

    # webhook: the first attempt refused, retried with backoff, each alert delivered once, HMAC over the bytes
    assert [r["answered"] for r in s.hook.requests] == [503] + [200] * n
    for ok in s.hook.ok():
        assert C.verify(SECRET, ok["body"], ok["headers"][C.SIGNATURE_HEADER])
        assert not C.verify("wrong-secret", ok["body"], ok["headers"][C.SIGNATURE_HEADER])
    assert sorted(d["alert_id"] for d in s.hook.json_ok()) == sorted(a["alert_id"] for a in alerts)
    metrics = http_text(s.worker.url + "/metrics")
    assert 'rmm_alert_deliveries_total{channel="webhook",result="error"} 1.0' in metrics
    assert f'rmm_alert_deliveries_total{{channel="webhook",result="ok"}} {float(n)}' in metrics
    assert 'rmm_alert_delivery_pending{channel="webhook"} 0.0' in metrics

    # rmm.alerts: keyed by alert id, the documented schema, one message per alert
    assert len(msgs) == n
    [msg] = [m for m in msgs if m.key == alert["alert_id"].encode()]
    doc = json.loads(msg.value)
    assert (doc["schema"], doc["notification"], doc["case"]["case_id"]) == (C.SCHEMA, "firing", alert["case_id"])
    assert (doc["details"]["numerator"], doc["details"]["denominator"]) == (row["numerator"], row["denominator"])


def check_one_review_case_for_the_section_with_its_failing_units(scenario):
    alert = scenario.gz03()
    [case] = [c for c in http_json(scenario.worker.url + "/api/reviews") if c["section"] == "alert_card"]
    assert (case["product"], case["state"], case["alerts"], case["case_id"]) == (
        "CTX-19",
        "open",
        [alert["alert_id"]],
        alert["case_id"],
    )
    detail = http_json(f"{scenario.worker.url}/api/reviews/{case['case_id']}")
    # the breach's failing units (an alert card not issued), at most TOP_UNITS of them, all of the weak site
    details = http_json(f"{scenario.worker.url}/api/alerts/{alert['alert_id']}")["details"]
    failures = details["denominator"] - details["numerator"]
    assert failures > 0 and len(detail["units"]) == min(S.TOP_UNITS, failures)
    assert len({u["unit_id"] for u in detail["units"]}) == len(detail["units"])
    assert all(
        (u["alert_id"], u["kpi"], u["site_id"]) == (alert["alert_id"], "alert_card_issued", "GZ-03")
        and u["patient_ref"].startswith("PT-")
        for u in detail["units"]
    )


def check_operator_api_needs_the_token_and_keeps_the_audit_trail(scenario):
    w = scenario.worker
    people = PEOPLE["people"]
    alert = scenario.gz03()
    alert_id, case_id = alert["alert_id"], alert["case_id"]
    ack_url = f"{w.url}/api/alerts/{alert_id}/ack"
    reason = {"reason": "GZ-03 card process under review"}
    assert post(ack_url, reason, None)[0] == 401
    assert post(ack_url, reason, "not-a-token")[0] == 401
    assert post(f"{w.url}/api/reviews/{case_id}/start", reason, "x")[0] == 401
    assert post(ack_url, reason, people["audit.liu"])[0] == 403, "a viewer reads only"
    assert post(ack_url, reason, people["root.admin"])[0] == 403, "an admin makes no PV decision"
    assert post(ack_url, {**reason, "actor": "mallory"}, people["pv.chen"])[0] == 400, "the actor is the token's"
    cli = run_cli("alerts", "ack", alert_id, "--db", str(w.db), "--reason", "x", env={"RMM_TOKEN": "wrong"})
    assert cli.returncode == 3 and "401" in cli.stderr
    assert [h["state"] for h in http_json(f"{w.url}/api/alerts/{alert_id}")["history"]] == ["firing"]
    assert http_json(f"{w.url}/api/reviews/{case_id}")["state"] == "open"

    cli = run_cli(
        "alerts",
        "ack",
        alert_id,
        "--db",
        str(w.db),
        "--reason",
        "GZ-03 card process under review",
        "--json",
        env={"RMM_TOKEN": people["pv.chen"]},
    )
    assert cli.returncode == 0, cli.stderr
    trail = json.loads(cli.stdout)["history"]
    assert [(h["state"], h["actor"], h["comment"]) for h in trail] == [
        ("firing", "system", trail[0]["comment"]),
        ("acknowledged", "pv.chen", "GZ-03 card process under review"),
    ]
    assert post(ack_url, reason, people["qppv.wang"])[0] == 409, "an acknowledged alert cannot be acked again"
    status, case = post(f"{w.url}/api/reviews/{case_id}/start", reason, people["pv.chen"])
    assert (status, case["state"]) == (200, "in_review")
    # closing is a qppv's signed decision: an analyst may not, a wrong password changes nothing
    close_url = f"{w.url}/api/reviews/{case_id}/close"
    no_change = {"reason": "the card text is right; the site's process was fixed", "outcome": "no_change"}
    assert post(close_url, {**no_change, "password": PASSWORDS["pv.chen"]}, people["pv.chen"])[0] == 403
    assert post(close_url, {**no_change, "password": "not-the-password"}, people["qppv.wang"])[0] == 401
    assert http_json(f"{w.url}/api/reviews/{case_id}")["state"] == "in_review"
    for token in people.tokens.values():
        assert token not in w.log.read_text() and token not in http_text(w.url + "/metrics")
    audit = http_json(f"{w.url}/api/audit/verify")
    assert audit["ok"], audit


def check_alertmanager_delivers_the_prometheus_rule_alert(scenario):
    def gz03_firing():
        for req in scenario.am_hook.ok():
            for a in json.loads(req["body"])["alerts"]:
                if a["status"] == "firing" and a["labels"].get("site") == "GZ-03":
                    return a

    alert = wait_until(gz03_firing, 45, "Alertmanager webhook call for GZ-03")
    assert alert["labels"]["alertname"] == "RmmKpiBreachAlertCardIssued"
    assert (alert["labels"]["kpi"], alert["labels"]["product"], alert["labels"]["severity"]) == (
        "alert_card_issued",
        "CTX-19",
        "critical",
    )
    assert "rmm kpis --explain alert_card_issued" in alert["annotations"]["runbook"]
    # the e-mail receiver has require_tls: false set explicitly, so the plain loopback server accepts it
    mail = wait_until(lambda: scenario.am_smtp.messages, 30, "Alertmanager e-mail")[0]
    assert "RmmKpiBreachAlertCardIssued" in mail["Subject"]


def check_same_scenario_twice_creates_nothing_new_and_a_release_closes_the_case(scenario):
    s = scenario
    alerts_before = http_json(s.worker.url + "/api/alerts")
    cases_before = http_json(s.worker.url + "/api/reviews")
    produce_events(s.events, s.broker.bootstrap)
    s.worker.wait_for(lambda st: st["duplicates"] >= len(s.events) - 1, what="second feed consumed")
    time.sleep(2.5)  # several refresh + evaluation rounds
    n = len(s.expected)
    assert [a["alert_id"] for a in http_json(s.worker.url + "/api/alerts")] == [a["alert_id"] for a in alerts_before]
    assert len(http_json(s.worker.url + "/api/reviews")) == len(cases_before)
    assert len(s.smtp.messages) == n and len(s.hook.ok()) == n
    assert len(read_alert_topic(s.broker.bootstrap)) == n
    alert = s.gz03()

    now = clock.now().isoformat()
    produce_events(
        [
            {
                "event_id": "mat-e2e-v3",
                "event_type": "material_version_released",
                "schema_version": 1,
                "occurred_at": now,
                "product": "CTX-19",
                "site_id": "MAH-HQ",
                "material_id": "CTX19-PAT",
                "version": 3,
                "sections": ["alert_card"],
            }
        ],
        s.broker.bootstrap,
    )
    closed = wait_until(
        lambda: [
            c
            for c in http_json(s.worker.url + "/api/reviews")
            if c["state"] == "closed" and c["case_id"] == alert["case_id"]
        ],
        20,
        "case closed by the release",
    )
    assert (closed[0]["outcome"], closed[0]["material_version"], closed[0]["state_actor"]) == (
        "material_updated",
        3,
        "system",
    )
    history = http_json(f"{s.worker.url}/api/reviews/{alert['case_id']}")["history"]
    assert [(h["state"], h["actor"]) for h in history] == [
        ("open", "system"),
        ("in_review", "pv.chen"),
        ("closed", "system"),
    ]
    # the KPI alert stays until the KPI recovers: a new material version does not fix the site's past quarter
    assert http_json(f"{s.worker.url}/api/alerts/{alert['alert_id']}")["state"] == "acknowledged"


def check_a_critical_audit_finding_pages_at_once_once_per_finding(scenario):
    """critical_audit_finding: an alert at once on every channel, the e-mail subject naming the centre, the area
    and the finding; no review case; the finding re-sent (under a new event_id) pages nothing new; a verified CAPA
    resolves it."""
    s = scenario
    mails, hooks, topic = len(s.smtp.messages), len(s.hook.ok()), len(read_alert_topic(s.broker.bootstrap))
    cases = len(http_json(s.worker.url + "/api/reviews"))
    now = clock.now().isoformat()
    finding = {
        "event_id": "audit-e2e-1",
        "event_type": "audit_finding_raised",
        "schema_version": 1,
        "occurred_at": now,
        "product": "CTX-19",
        "site_id": "GZ-03",
        "audit_id": "AUD-E2E-1",
        "finding_id": "AUD-E2E-1-F1",
        "severity": "critical",
        "area": "ae_management",
    }
    produce_events([finding], s.broker.bootstrap)
    mail = wait_until(
        lambda: [m for m in s.smtp.messages[mails:] if "AUD-E2E-1-F1" in m["Subject"]], 30, "the finding's e-mail"
    )[0]
    assert (
        mail["Subject"]
        == "[CRITICAL AUDIT FINDING] AUD-E2E-1-F1 at site GZ-03 — ae_management — CTX-19 (audit AUD-E2E-1)"
    )
    wait_until(lambda: len(s.hook.ok()) == hooks + 1, 30, "the finding's webhook call")
    wait_until(lambda: len(read_alert_topic(s.broker.bootstrap)) == topic + 1, 30, "the finding on rmm.alerts")
    [alert] = [a for a in http_json(s.worker.url + "/api/alerts") if a["signal"] == "critical_audit_finding"]
    assert (alert["severity"], alert["state"], alert["case_id"]) == ("critical", "firing", None)
    assert s.hook.json_ok()[-1]["subject"] == "AUD-E2E-1-F1"

    stored = s.worker.status()["ingested"]
    produce_events([{**finding, "event_id": "audit-e2e-1-resent"}], s.broker.bootstrap)  # the audit system again
    s.worker.wait_for(lambda st: st["ingested"] > stored, what="the re-sent finding stored")
    time.sleep(2.5)  # several evaluation rounds
    assert [a["alert_id"] for a in http_json(s.worker.url + "/api/alerts") if a["signal"] == alert["signal"]] == [
        alert["alert_id"]
    ]
    assert len(s.smtp.messages) == mails + 1 and len(http_json(s.worker.url + "/api/reviews")) == cases

    closure = {k: finding[k] for k in ("schema_version", "occurred_at", "product", "site_id", "finding_id")}
    produce_events(
        [{**closure, "event_id": "capa-e2e-1", "event_type": "capa_closed", "verified": True}], s.broker.bootstrap
    )
    wait_until(
        lambda: http_json(f"{s.worker.url}/api/alerts/{alert['alert_id']}")["state"] == "resolved", 30, "resolved"
    )
    resolved = wait_until(lambda: [m for m in s.smtp.messages[mails:] if m["Subject"].startswith("[RESOLVED]")], 30, "")
    assert "AUD-E2E-1-F1" in resolved[0]["Subject"]


def test_weak_site_done_when(scenario):
    """One test, steps in order (each step builds on the state the previous one left, and pytest-xdist would
    spread separate tests over processes): channels, review case, operator API, Alertmanager, the feed again, a
    critical audit finding."""
    check_breach_reaches_the_qppv_once_on_every_channel(scenario)
    check_one_review_case_for_the_section_with_its_failing_units(scenario)
    check_operator_api_needs_the_token_and_keeps_the_audit_trail(scenario)
    check_alertmanager_delivers_the_prometheus_rule_alert(scenario)
    check_same_scenario_twice_creates_nothing_new_and_a_release_closes_the_case(scenario)
    check_a_critical_audit_finding_pages_at_once_once_per_finding(scenario)
