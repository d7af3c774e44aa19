"""Each channel against a real receiver on loopback: SMTP with STARTTLS and AUTH (aiosmtpd, self-signed
certificate), the webhook (HTTP server, HMAC), and the generated rules/routing with promtool and amtool."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import aiohttp
import pytest
import yaml

from rmm_monitor.alerting import channels as C
from rmm_monitor.ops import prometheus as alert_rules

from support.paths import REPO
from support.receivers import SmtpSink, WebhookReceiver

DOC = C.payload(
    "AL-000007:firing:email",
    "firing",
    {
        "alert_id": "AL-000007",
        "signal": "kpi_breach",
        "severity": "critical",
        "state": "firing",
        "title": "[BREACH] alert_card_issued 71% < 90% — CTX-19 site SH-03 — 2026Q3",
        "product": "CTX-19",
        "site_id": "SH-03",
        "section": "alert_card",
        "kpi": "alert_card_issued",
        "period": "2026Q3",
        "triggered_at": "2026-09-30T10:00:00+00:00",
        "fired_at": "2026-09-30T10:00:01+00:00",
        "details": {
            "numerator": 22,
            "denominator": 31,
            "value": 0.7097,
            "ci_low": 0.5346,
            "ci_high": 0.8394,
            "threshold": 0.9,
            "direction": "higher_is_better",
            "min_n": 10,
            "pending": 1,
            "kpi_title": "Patient alert card issued",
        },
        "units": [
            {
                "unit_id": "PT-CTX19-000042",
                "patient_ref": "PT-CTX19-000042",
                "site_id": "SH-03",
                "lot_id": "LOT-9",
                "detail": "card 41 h after infusion",
            }
        ],
        "evidence": [],
    },
    {"case_id": "RC-000003", "state": "open", "section": "alert_card", "product": "CTX-19"},
)


def settings(**kw) -> C.ChannelSettings:
    base = dict(smtp_host="127.0.0.1", email_to=("qppv@example.test",), webhook_url="", kafka=False, timeout=5)
    return C.ChannelSettings(**{**base, **kw})


def test_email_over_starttls_with_auth(tmp_path):
    with SmtpSink(tls_dir=tmp_path, user="rmm", password="pw-1") as smtp:
        s = settings(
            smtp_port=smtp.port, smtp_starttls=True, smtp_ca_file=str(smtp.cert), smtp_user="rmm", smtp_password="pw-1"
        )
        C.send_email(DOC, s)
        [mail] = smtp.messages
        assert mail["Subject"] == "[BREACH] alert_card_issued 71% < 90% — CTX-19 site SH-03 — 2026Q3"
        body = mail.get_content()
        for text in (
            "Numerator:    22",
            "Denominator:  31",
            "95% CI:       53.5% – 83.9%",
            "Threshold:    90.0%",
            "PT-CTX19-000042",
            "RC-000003",
        ):
            assert text in body, text
        # a wrong password is refused and not echoed; without STARTTLS the server refuses the mail
        with pytest.raises(C.DeliveryError) as err:
            C.send_email(DOC, settings(**{**s.__dict__, "smtp_password": "wrong-pw-9"}))
        assert "wrong-pw-9" not in str(err.value)
        with pytest.raises(C.DeliveryError):
            C.send_email(DOC, settings(**{**s.__dict__, "smtp_starttls": False}))
        assert len(smtp.messages) == 1
    assert "pw-1" not in repr(s), "secrets stay out of reprs (and so out of logs)"


def test_email_in_the_deployments_language_chinese():
    """RMM_LANG=zh: subject and body in Chinese, the KPI title and review section named as the catalog names them,
    the figures written exactly as in the English e-mail."""
    with SmtpSink() as smtp:
        C.send_email(DOC, settings(smtp_port=smtp.port), "zh")
        C.send_email(DOC, settings(smtp_port=smtp.port), "en")
        zh, en = smtp.messages
    assert zh["Subject"] == "[超限] 发放患者提示卡 71% < 90% — CTX-19 医疗机构 SH-03 — 2026Q3"
    assert zh["Content-Language"] == "zh-CN"
    body = zh.get_content()
    for text in (
        "分子：        22",
        "分母：        31",
        "95% CI：      53.5% – 83.9%",
        "阈值：        90.0%（越高越好",
        "评估案例：    RC-000003 — CTX-19 教育材料的“患者提示卡”部分",
        "未达标单元",
        "PT-CTX19-000042",
    ):
        assert text in body, text
    assert "Numerator" not in body and "Review case" not in body
    assert "53.5% – 83.9%" in en.get_content()  # the same figures, written the same way


def test_webhook_signs_the_body_and_reports_refusals():
    async def send(url: str, secret: str) -> None:
        async with aiohttp.ClientSession() as session:
            await C.send_webhook(session, DOC, settings(webhook_url=url, webhook_secret=secret))

    with WebhookReceiver(fail_first=1) as hook:
        with pytest.raises(C.DeliveryError, match="503"):
            asyncio.run(send(hook.url, "k1"))
        asyncio.run(send(hook.url, "k1"))
        req = hook.ok()[0]
        assert C.verify("k1", req["body"], req["headers"][C.SIGNATURE_HEADER])
        assert not C.verify("k2", req["body"], req["headers"][C.SIGNATURE_HEADER])
        assert not C.verify("k1", req["body"] + b" ", req["headers"][C.SIGNATURE_HEADER])
        assert req["headers"][C.DELIVERY_HEADER] == "AL-000007:firing:email"
        assert json.loads(req["body"]) == DOC
    with pytest.raises(C.DeliveryError):
        asyncio.run(send(hook.url, "k1"))  # the receiver is gone: connection refused


def test_backoff_is_exponential_and_capped():
    s = settings(retry_base=1.0, retry_max=300.0)
    assert [s.backoff(n) for n in (1, 2, 3, 4, 9, 10, 20)] == [1, 2, 4, 8, 256, 300, 300]
    assert settings(webhook_url="http://x").enabled == ("email", "webhook")


def test_committed_rules_and_routing_equal_the_generated_ones():
    stale = [
        rel
        for rel, text in alert_rules.generate().items()
        if (REPO / "dashboards" / rel).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `make rules` and commit: {stale}"


def test_promtool_and_amtool_accept_the_committed_files():
    prom_dir = REPO / "dashboards" / "prometheus"
    rules = yaml.safe_load((prom_dir / "rmm-alerts.rules.yml").read_text())["groups"]
    names = {r["alert"] for g in rules for r in g["rules"]}
    assert all("for" in r for g in rules for r in g["rules"])
    tests = yaml.safe_load((prom_dir / "rmm-alerts.test.yml").read_text())["tests"]
    for name in names:  # one firing and one non-firing case for every rule
        cases = [t["alert_rule_test"][0]["exp_alerts"] for t in tests if t["alert_rule_test"][0]["alertname"] == name]
        assert sorted(bool(c) for c in cases) == [False, True], name
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    out = subprocess.run(
        [promtool, "check", "rules", "rmm-alerts.rules.yml"], cwd=prom_dir, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [promtool, "test", "rules", "rmm-alerts.test.yml"], cwd=prom_dir, capture_output=True, text=True
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    amtool = shutil.which("amtool") or "/usr/bin/amtool"
    am = REPO / "dashboards" / "alertmanager" / "alertmanager.yml"
    out = subprocess.run([amtool, "check-config", str(am)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    receivers = yaml.safe_load(am.read_text())["receivers"]
    emails = [e for r in receivers for e in r.get("email_configs", [])]
    assert emails and all("require_tls" in e and "auth_password" not in e for e in emails)


def test_promtool_catches_a_rule_without_for(tmp_path):
    """The unit tests are not vacuous: dropping `for:` from a KPI rule makes its non-firing case fail."""
    doc = yaml.safe_load(alert_rules.dump(alert_rules.rules(alert_rules.load_catalog())))
    del doc["groups"][0]["rules"][0]["for"]
    (tmp_path / "rmm-alerts.rules.yml").write_text(yaml.safe_dump(doc))
    tests = yaml.safe_load((REPO / "dashboards" / "prometheus" / "rmm-alerts.test.yml").read_text())
    first = doc["groups"][0]["rules"][0]["alert"]
    tests["tests"] = [t for t in tests["tests"] if t["alert_rule_test"][0]["alertname"] == first]
    (tmp_path / "rmm-alerts.test.yml").write_text(yaml.safe_dump(tests))
    out = subprocess.run(
        [shutil.which("promtool") or "/usr/bin/promtool", "test", "rules", "rmm-alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr
