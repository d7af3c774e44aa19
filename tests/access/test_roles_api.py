"""Users, roles and tokens on a running worker: each role allowed and refused (401 without or with a bad token, 403
for the wrong role, and nothing changes), the actor taken from the token, reads closed once users exist (but
/metrics and /healthz open), revoked and disabled tokens refused, guessing slowed down and counted, the first admin
made with the one-time bootstrap token."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import timedelta
from urllib.error import HTTPError

import pytest

from rmm_monitor.access import users
from rmm_monitor.alerting import records as R
from rmm_monitor.core import clock
from rmm_monitor.store import Store

from support.people import PASSWORDS, make_people
from support.workers import http_text, run_cli

BOOTSTRAP = "one-time-bootstrap-secret-5150"


def call(method: str, url: str, body: dict | None = None, token: str | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def two_alerts(db) -> None:
    """Two event-signal alerts, each with its review case, in the file before the worker opens it."""
    now = clock.now()
    with Store(db) as store, store.transaction() as con:
        for section in ("crs_management", "alert_card"):
            R.fire(
                con,
                R.NewAlert(
                    signal="safety_information_updated",
                    product="CTX-19",
                    site_id="",
                    section=section,
                    kpi="",
                    severity="warning",
                    title=f"safety information updated: {section}",
                    triggered_at=now - timedelta(hours=1),
                ),
                (),
                now,
            )


@pytest.fixture
def worker(broker, worker_factory, tmp_path):
    db = tmp_path / "access.duckdb"
    two_alerts(db)
    people = make_people(db)
    w = worker_factory(broker.bootstrap, db=db, RMM_DQ_SECONDS="0").start()
    return w, people


def test_each_role_is_allowed_what_it_may_and_refused_the_rest(worker):
    w, people = worker
    url = w.url

    def history(alert_id):
        return call("GET", f"{url}/api/alerts/{alert_id}", token=people["audit.liu"])[1]["history"]

    before = call("GET", f"{url}/api/audit/verify", token=people["audit.liu"])[1]["entries"]
    ack = {"reason": "looking into it"}
    # refused: no token, a bad token, a viewer, an admin; nothing changes
    assert call("POST", f"{url}/api/alerts/AL-000001/ack", ack)[0] == 401
    assert call("POST", f"{url}/api/alerts/AL-000001/ack", ack, "rmm_forged")[0] == 401
    assert call("POST", f"{url}/api/alerts/AL-000001/ack", ack, people["audit.liu"])[0] == 403
    assert call("POST", f"{url}/api/alerts/AL-000001/ack", ack, people["root.admin"])[0] == 403
    assert [h["state"] for h in history("AL-000001")] == ["firing"]
    assert call("GET", f"{url}/api/audit/verify", token=people["audit.liu"])[1]["entries"] == before
    # a reason is required, and the actor is the token's user, never the body's
    assert call("POST", f"{url}/api/alerts/AL-000001/ack", {}, people["pv.chen"])[0] == 400
    assert call("POST", f"{url}/api/alerts/AL-000001/ack", {**ack, "actor": "qppv.wang"}, people["pv.chen"])[0] == 400
    status, alert = call("POST", f"{url}/api/alerts/AL-000001/ack", ack, people["pv.chen"])
    assert status == 200 and alert["history"][-1]["actor"] == "pv.chen"
    # resolving is a qppv's signed decision
    resolve = {"reason": "section reviewed", "password": PASSWORDS["pv.chen"]}
    assert call("POST", f"{url}/api/alerts/AL-000001/resolve", resolve, people["pv.chen"])[0] == 403
    resolve["password"] = PASSWORDS["root.admin"]
    assert call("POST", f"{url}/api/alerts/AL-000001/resolve", resolve, people["root.admin"])[0] == 403
    resolve["password"] = "wrong-password-here"
    assert call("POST", f"{url}/api/alerts/AL-000001/resolve", resolve, people["qppv.wang"])[0] == 401
    assert [h["state"] for h in history("AL-000001")] == ["firing", "acknowledged"]
    resolve["password"] = PASSWORDS["qppv.wang"]
    status, alert = call("POST", f"{url}/api/alerts/AL-000001/resolve", resolve, people["qppv.wang"])
    assert status == 200 and alert["history"][-1]["actor"] == "qppv.wang"
    [sig] = alert["signatures"]
    assert (sig["user_id"], sig["full_name"], sig["meaning"], sig["valid"]) == (
        "qppv.wang",
        "Wang Li",
        "resolved",
        True,
    )
    # reviews: an analyst starts, only a qppv closes (signed)
    case_id = call("GET", f"{url}/api/alerts/AL-000002", token=people["pv.chen"])[1]["case_id"]
    assert call("POST", f"{url}/api/reviews/{case_id}/start", ack, people["audit.liu"])[0] == 403
    assert call("POST", f"{url}/api/reviews/{case_id}/start", ack, people["pv.chen"])[0] == 200
    close = {"reason": "no change needed: wording already covers it", "outcome": "no_change",
             "password": PASSWORDS["pv.chen"]}  # fmt: skip
    assert call("POST", f"{url}/api/reviews/{case_id}/close", close, people["pv.chen"])[0] == 403
    close["password"] = PASSWORDS["qppv.wang"]
    status, case = call("POST", f"{url}/api/reviews/{case_id}/close", close, people["qppv.wang"])
    assert status == 200 and case["state"] == "closed"
    assert [s["meaning"] for s in case["signatures"]] == ["closed: no change"]
    # managing users is the admin's alone
    new = {"user_id": "pv.zhao", "full_name": "Zhao Min", "role": "pv_analyst", "password": "zhao-password-0005",
           "reason": "joined the PV team"}  # fmt: skip
    assert call("POST", f"{url}/api/users", new, people["qppv.wang"])[0] == 403
    assert call("GET", f"{url}/api/users", token=people["qppv.wang"])[0] == 403
    assert call("POST", f"{url}/api/users", new, people["root.admin"])[0] == 200
    listed = call("GET", f"{url}/api/users", token=people["root.admin"])[1]
    assert {u["user_id"] for u in listed} == {*PASSWORDS, "pv.zhao"}
    assert not any("password" in k or "key" in k for u in listed for k in u), "no secret in the list"
    verdict = call("GET", f"{url}/api/audit/verify", token=people["audit.liu"])[1]
    assert verdict["ok"] and verdict["entries"] > before, verdict


def test_reads_need_a_user_once_users_exist_but_metrics_do_not(worker):
    w, people = worker
    for path in ("/api/kpis", "/api/units?kpi=alert_card_issued", "/api/trend", "/api/alerts", "/api/reviews",
                 "/api/audit", "/api/export/extras"):  # fmt: skip
        assert call("GET", w.url + path)[0] == 401, path
        assert call("GET", w.url + path, token=people["audit.liu"])[0] == 200, path
    assert "rmm_events_ingested_total" in http_text(w.url + "/metrics")
    assert call("GET", w.url + "/healthz")[0] == 200
    assert 'rmm_auth_failures_total{reason="missing"}' in http_text(w.url + "/metrics")


def test_revoked_and_disabled_tokens_are_refused_and_records_stay_attributed(worker):
    w, people = worker
    status, issued = call("POST", f"{w.url}/api/login", {"user": "pv.chen", "password": PASSWORDS["pv.chen"]})
    assert status == 200 and issued["token"].startswith("rmm_") and issued["role"] == "pv_analyst"
    token = issued["token"]
    assert call("GET", f"{w.url}/api/whoami", token=token)[1]["user_id"] == "pv.chen"
    assert call("POST", f"{w.url}/api/alerts/AL-000001/ack", {"reason": "mine"}, token)[0] == 200
    assert call("POST", f"{w.url}/api/logout", {}, token)[0] == 200
    assert call("GET", f"{w.url}/api/whoami", token=token)[0] == 401  # revoked
    # disabling a user refuses their other tokens too; what they did stays theirs
    status, _ = call("POST", f"{w.url}/api/users/pv.chen/disable", {"reason": "left the company"}, people["root.admin"])
    assert status == 200
    assert call("GET", f"{w.url}/api/kpis", token=people["pv.chen"])[0] == 401
    assert call("POST", f"{w.url}/api/login", {"user": "pv.chen", "password": PASSWORDS["pv.chen"]})[0] == 401
    history = call("GET", f"{w.url}/api/alerts/AL-000001", token=people["audit.liu"])[1]["history"]
    assert history[-1]["actor"] == "pv.chen"
    assert 'rmm_auth_failures_total{reason="revoked"}' in http_text(w.url + "/metrics")


def test_an_expired_token_is_refused(tmp_path):
    db = tmp_path / "expiry.duckdb"
    people = make_people(db, ttl_hours=1)
    with Store(db, read_only=True) as store:
        assert users.principal_for_token(store.con, people["pv.chen"]).user_id == "pv.chen"
        with pytest.raises(users.AuthError, match="expired"):
            users.principal_for_token(store.con, people["pv.chen"], now=clock.now() + timedelta(hours=1, seconds=1))
    later = (clock.now() + timedelta(hours=2)).isoformat()  # the suite's clock, two hours on
    out = run_cli("whoami", "--db", str(db), env={"RMM_TOKEN": people["pv.chen"], "RMM_CLOCK": later})
    assert out.returncode == 3 and "expired" in out.stderr


def test_guessing_a_password_is_slowed_down_and_counted(worker):
    w, _people = worker
    wrong = {"user": "qppv.wang", "password": "guess-guess-guess"}
    took = []
    for _ in range(users.FREE_FAILURES + 2):
        t0 = time.monotonic()
        assert call("POST", f"{w.url}/api/login", wrong)[0] == 401
        took.append(time.monotonic() - t0)
    assert max(took[: users.FREE_FAILURES]) < 1.0  # the first failures cost only the password hash
    assert took[users.FREE_FAILURES] >= 1.0 and took[users.FREE_FAILURES + 1] >= 2.0  # then 1 s, 2 s, ...
    t0 = time.monotonic()  # the right password is slowed down as well, so guessing cannot skip the wait
    assert call("POST", f"{w.url}/api/login", {"user": "qppv.wang", "password": PASSWORDS["qppv.wang"]})[0] == 200
    assert time.monotonic() - t0 >= 4.0
    metrics = http_text(w.url + "/metrics")
    assert f'rmm_auth_failures_total{{reason="wrong_password"}} {users.FREE_FAILURES + 2}.0' in metrics
    assert "rmm_auth_throttled_total 3.0" in metrics


def test_the_first_admin_needs_the_bootstrap_token(broker, worker_factory, tmp_path):
    w = worker_factory(broker.bootstrap, db=tmp_path / "fresh.duckdb", RMM_BOOTSTRAP_TOKEN=BOOTSTRAP,
                       RMM_DQ_SECONDS="0").start()  # fmt: skip
    admin = {"user_id": "first.admin", "full_name": "First Admin", "password": "first-admin-password"}
    assert call("POST", f"{w.url}/api/users/bootstrap", admin)[0] == 401
    assert call("POST", f"{w.url}/api/users/bootstrap", admin, headers={"X-RMM-Bootstrap": "guess"})[0] == 401
    status, made = call("POST", f"{w.url}/api/users/bootstrap", admin, headers={"X-RMM-Bootstrap": BOOTSTRAP})
    assert status == 200 and (made["user_id"], made["role"]) == ("first.admin", "admin")
    again = {**admin, "user_id": "second.admin"}
    assert call("POST", f"{w.url}/api/users/bootstrap", again, headers={"X-RMM-Bootstrap": BOOTSTRAP})[0] == 403
    # through the CLI, the password on standard input (never a flag)
    out = run_cli("login", "first.admin", "--db", str(w.db), "--password-stdin", input_text="first-admin-password\n")
    assert out.returncode == 0, out.stderr
    assert BOOTSTRAP not in w.log.read_text() and "first-admin-password" not in w.log.read_text()
