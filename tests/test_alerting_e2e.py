"""Issue 5's done-when on real parts, one scenario for the module (tests run in file order against it):
the simulator's weak site (GZ-03, late or missing alert cards) fed through the bundled broker into a running
`rmm worker`, scraped by a real Prometheus with the generated rules, which fires to a real Alertmanager.

Receivers: aiosmtpd (the worker's e-mail, and Alertmanager's e-mail without TLS), local HTTP servers (the
worker's webhook, whose first attempt is refused to prove the retry, and Alertmanager's webhook), kafka-python
reading rmm.alerts."""
from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.error import HTTPError

import pytest
from kafka import KafkaConsumer, TopicPartition

from rmm_monitor import alert_rules
from rmm_monitor import channels as C
from rmm_monitor.broker import Broker
from rmm_monitor.catalog import load_catalog
from rmm_monitor.producer import produce_events

from conftest import WorkerProc, http_json, http_text, run_cli
from promserver import AlertmanagerServer, PrometheusServer
from receivers import SmtpSink, WebhookReceiver, wait_until, weak_site_events

TOKEN = "e2e-admin-token-7f3a"
SECRET = "e2e-webhook-secret"


class SingleAlertmanager(AlertmanagerServer):
    """Without its HA cluster: a lone Alertmanager otherwise waits ~10 s for gossip to settle before it is ready."""

    def start(self) -> "SingleAlertmanager":
        import subprocess
        from promserver import ALERTMANAGER, _wait_ready
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={self.config}", f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_ready(self.url + "/-/ready", self.proc, self.log)
        return self


@dataclass
class Scenario:
    broker: Broker
    worker: WorkerProc
    smtp: SmtpSink
    hook: WebhookReceiver
    am_hook: WebhookReceiver
    am_smtp: SmtpSink
    events: list
    t0: float


def read_alert_topic(bootstrap: str, timeout_ms: int = 1000) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=timeout_ms)
    tp = TopicPartition("rmm.alerts", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = list(consumer)
    consumer.close()
    return got


def post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alerting")
    broker = Broker(log_path=tmp / "broker.log").start()
    with SmtpSink() as smtp, WebhookReceiver(fail_first=1) as hook, WebhookReceiver() as am_hook, \
            SmtpSink() as am_smtp:
        worker = WorkerProc(db=tmp / "worker.duckdb", bootstrap=broker.bootstrap, log=tmp / "worker.log", env_extra={
            "RMM_ADMIN_TOKEN": TOKEN, "RMM_SMTP_HOST": "127.0.0.1", "RMM_SMTP_PORT": str(smtp.port),
            "RMM_ALERT_EMAIL_TO": "qppv@example.test", "RMM_WEBHOOK_URL": hook.url,
            "RMM_WEBHOOK_SECRET": SECRET, "RMM_ALERT_RETRY_BASE": "0.5",
            "RMM_DQ_SECONDS": "0"})  # issue 7's data-quality run is not under test here and costs seconds of CPU
        # the committed rules and routing, generated with test timings (for: 1s, group_wait 1s)
        rules = tmp / "rules.yml"
        rules.write_text(alert_rules.dump(alert_rules.rules(load_catalog(), kpi_for="1s")))
        am_config = tmp / "alertmanager.yml"
        am_config.write_text(alert_rules.dump(alert_rules.alertmanager(
            webhook_url=am_hook.url, ops_webhook_url=am_hook.url, email_to="pv@example.test",
            smarthost=f"127.0.0.1:{am_smtp.port}", require_tls=False, password_file=None,
            group_wait="1s", group_interval="1s")))
        try:
            worker.start()
            with SingleAlertmanager(tmp, am_config) as am, \
                    PrometheusServer(tmp, [f"127.0.0.1:{worker.port}"], [rules], am.address) as prom:
                events = list(weak_site_events())
                t0 = time.monotonic()
                # no wait for the first scrape: Prometheus applies new targets after ~5 s, ingest overlaps it
                produce_events(events, broker.bootstrap)
                yield Scenario(broker, worker, smtp, hook, am_hook, am_smtp, events, t0)
        finally:
            worker.stop()
            broker.stop()


def test_breach_reaches_the_qppv_once_on_every_channel(scenario):
    s = scenario
    wait_until(lambda: s.smtp.messages and s.hook.ok(), 60, "e-mail and webhook delivery")
    [msg] = wait_until(lambda: read_alert_topic(s.broker.bootstrap), 30, "the rmm.alerts message")
    t_mail, t_hook = s.smtp.received_at[0] - s.t0, s.hook.ok()[0]["at"] - s.t0
    print(f"\nproduce -> e-mail {t_mail:.1f}s, webhook {t_hook:.1f}s (after one refused attempt)")
    assert t_mail < 60 and t_hook < 60

    [alert] = http_json(s.worker.url + "/api/alerts")
    assert (alert["signal"], alert["kpi"], alert["product"], alert["site_id"], alert["state"]) == \
        ("kpi_breach", "alert_card_issued", "CTX-19", "GZ-03", "firing")

    # e-mail: a subject the QPPV can triage from; numbers, failing units and the review case in the body
    [mail] = s.smtp.messages
    assert mail["Subject"] == f"[BREACH] alert_card_issued 55% < 90% — CTX-19 site GZ-03 — {alert['period']}"
    body = mail.get_content()
    units = http_json(f"{s.worker.url}/api/alerts/{alert['alert_id']}")["units"]
    for text in ("Numerator:    6", "Denominator:  11", "95% CI:", "Threshold:    90.0%", alert["case_id"],
                 units[0]["patient_ref"]):
        assert text in body, (text, body)

    # webhook: refused once, retried with backoff, delivered once, HMAC over the exact bytes
    assert [r["answered"] for r in s.hook.requests] == [503, 200]
    ok = s.hook.ok()[0]
    assert C.verify(SECRET, ok["body"], ok["headers"][C.SIGNATURE_HEADER])
    assert not C.verify("wrong-secret", ok["body"], ok["headers"][C.SIGNATURE_HEADER])
    assert json.loads(ok["body"])["alert_id"] == alert["alert_id"]
    metrics = http_text(s.worker.url + "/metrics")
    assert 'rmm_alert_deliveries_total{channel="webhook",result="error"} 1.0' in metrics
    assert 'rmm_alert_deliveries_total{channel="webhook",result="ok"} 1.0' in metrics
    assert 'rmm_alert_delivery_pending{channel="webhook"} 0.0' in metrics

    # rmm.alerts: keyed by alert id, the documented schema
    doc = json.loads(msg.value)
    assert msg.key == alert["alert_id"].encode()
    assert (doc["schema"], doc["notification"], doc["case"]["case_id"]) == (C.SCHEMA, "firing", alert["case_id"])
    assert (doc["details"]["numerator"], doc["details"]["denominator"]) == (6, 11)


def test_one_review_case_for_the_section_with_its_failing_units(scenario):
    [case] = http_json(scenario.worker.url + "/api/reviews")
    assert (case["section"], case["product"], case["state"], case["alerts"]) == \
        ("alert_card", "CTX-19", "open", ["AL-000001"])
    detail = http_json(f"{scenario.worker.url}/api/reviews/{case['case_id']}")
    assert 1 <= len(detail["units"]) <= 10
    assert all(u["patient_ref"].startswith("PT-") and u["site_id"] == "GZ-03" for u in detail["units"])


def test_operator_api_needs_the_token_and_keeps_the_audit_trail(scenario):
    w = scenario.worker
    ack_url = f"{w.url}/api/alerts/AL-000001/ack"
    assert post(ack_url, {"actor": "mallory"}, None)[0] == 401
    assert post(ack_url, {"actor": "mallory"}, "not-the-token")[0] == 401
    assert post(f"{w.url}/api/reviews/RC-000001/start", {"actor": "mallory"}, "x")[0] == 401
    cli = run_cli("alerts", "ack", "AL-000001", "--db", str(w.db), "--actor", "mallory",
                  env={"RMM_ADMIN_TOKEN": "wrong"})
    assert cli.returncode == 3 and "401" in cli.stderr
    assert [h["state"] for h in http_json(f"{w.url}/api/alerts/AL-000001")["history"]] == ["firing"]
    assert http_json(f"{w.url}/api/reviews/RC-000001")["state"] == "open"

    cli = run_cli("alerts", "ack", "AL-000001", "--db", str(w.db), "--actor", "qppv.wang",
                  "--comment", "GZ-03 card process under review", "--json", env={"RMM_ADMIN_TOKEN": TOKEN})
    assert cli.returncode == 0, cli.stderr
    trail = json.loads(cli.stdout)["history"]
    assert [(h["state"], h["actor"], h["comment"]) for h in trail] == [
        ("firing", "system", trail[0]["comment"]), ("acknowledged", "qppv.wang", "GZ-03 card process under review")]
    assert post(ack_url, {"actor": "qppv.wang"}, TOKEN)[0] == 409, "an acknowledged alert cannot be acked again"
    status, case = post(f"{w.url}/api/reviews/RC-000001/start", {"actor": "qppv.wang"}, TOKEN)
    assert (status, case["state"]) == (200, "in_review")
    assert TOKEN not in w.log.read_text() and TOKEN not in http_text(w.url + "/metrics")


def test_alertmanager_delivers_the_prometheus_rule_alert(scenario):
    def gz03_firing():
        for req in scenario.am_hook.ok():
            for a in json.loads(req["body"])["alerts"]:
                if a["status"] == "firing" and a["labels"].get("site") == "GZ-03":
                    return a
    alert = wait_until(gz03_firing, 45, "Alertmanager webhook call for GZ-03")
    assert alert["labels"]["alertname"] == "RmmKpiBreachAlertCardIssued"
    assert (alert["labels"]["kpi"], alert["labels"]["product"], alert["labels"]["severity"]) == \
        ("alert_card_issued", "CTX-19", "critical")
    assert "rmm kpis --explain alert_card_issued" in alert["annotations"]["runbook"]
    # the e-mail receiver has require_tls: false set explicitly, so the plain loopback server accepts it
    mail = wait_until(lambda: scenario.am_smtp.messages, 30, "Alertmanager e-mail")[0]
    assert "RmmKpiBreachAlertCardIssued" in mail["Subject"]


def test_same_scenario_twice_creates_nothing_new_and_a_release_closes_the_case(scenario):
    s = scenario
    produce_events(s.events, s.broker.bootstrap)
    s.worker.wait_for(lambda st: st["duplicates"] >= len(s.events) - 1, what="second feed consumed")
    time.sleep(2.5)  # several refresh + evaluation rounds
    assert [a["alert_id"] for a in http_json(s.worker.url + "/api/alerts")] == ["AL-000001"]
    assert len(http_json(s.worker.url + "/api/reviews")) == 1
    assert len(s.smtp.messages) == 1 and len(s.hook.ok()) == 1
    assert len(read_alert_topic(s.broker.bootstrap)) == 1

    now = datetime.now(timezone.utc).isoformat()
    produce_events([{"event_id": "mat-e2e-v3", "event_type": "material_version_released", "schema_version": 1,
                     "occurred_at": now, "product": "CTX-19", "site_id": "MAH-HQ", "material_id": "CTX19-PAT",
                     "version": 3, "sections": ["alert_card"]}], s.broker.bootstrap)
    closed = wait_until(lambda: [c for c in http_json(s.worker.url + "/api/reviews") if c["state"] == "closed"],
                        20, "case closed by the release")
    assert (closed[0]["outcome"], closed[0]["material_version"], closed[0]["state_actor"]) == \
        ("material_updated", 3, "system")
    history = http_json(f"{s.worker.url}/api/reviews/RC-000001")["history"]
    assert [(h["state"], h["actor"]) for h in history] == \
        [("open", "system"), ("in_review", "qppv.wang"), ("closed", "system")]
    # the KPI alert stays until the KPI recovers: a new material version does not fix the site's past quarter
    assert http_json(s.worker.url + "/api/alerts/AL-000001")["state"] == "acknowledged"
