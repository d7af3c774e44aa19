"""Signals, dedup and lifecycles over a real DuckDB store (the worker runs the same functions on its threads)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from rmm_monitor.alerting import records as A
from rmm_monitor.alerting import signals as S
from rmm_monitor.kpi import load_catalog
from rmm_monitor.store import Store, process_batch

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CH = ("kafka", "webhook")
_n = iter(range(10**6))


def ev(event_type: str, at: datetime, **fields) -> dict:
    return {
        "event_id": f"t-{next(_n)}",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "product": fields.pop("product", "CTX-19"),
        "site_id": fields.pop("site_id", "NJ-07"),
        **fields,
    }


def ae(at: datetime, step=None, med_error=False, **kw) -> dict:
    n = next(_n)
    fields = {
        "ae_id": f"AE-{n}",
        "patient_ref": f"PT-TEST-{n:04d}",
        "term": "other",
        "grade": 2,
        "serious": False,
        "medication_error": med_error,
        **kw,
    }
    if step:
        fields["related_step"] = step
    return ev("ae_onset", at, **fields)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        yield s


def feed(store: Store, events: list[dict]) -> None:
    outcome = process_batch(store, [json.dumps(e).encode() for e in events])
    assert not outcome.rejects, outcome.rejects


DEFAULT_RULE = S.ClusterRule()


def run(store: Store, rule=DEFAULT_RULE, now=NOW) -> dict:
    return S.evaluate_events(store.con, rule, CH, now)


def test_ae_cluster_on_event_time_with_a_late_event_and_no_refire(store):
    t = datetime(2026, 8, 1, tzinfo=timezone.utc)
    # two thawing AEs 100 days apart and one in between, outside any 90-day window with three
    feed(store, [ae(t, "thawing"), ae(t + timedelta(days=100), "thawing"), ae(t + timedelta(days=5), "dosing")])
    assert run(store)["fired"] == []
    # late events (arriving last, occurred in the middle) complete a window: [t, t+60] holds three
    feed(store, [ae(t + timedelta(days=40), "thawing"), ae(t + timedelta(days=60), "thawing", site_id="HZ-06")])
    [alert_id] = run(store)["fired"]
    alert = A.get_alert(store.con, alert_id)
    assert (alert["signal"], alert["section"], alert["product"]) == ("ae_cluster_by_step", "thawing", "CTX-19")
    assert alert["details"]["sites"] == ["HZ-06", "NJ-07"] and len(alert["evidence"]) == 3
    assert alert["triggered_at"].startswith((t + timedelta(days=60)).date().isoformat())  # event time
    # evaluated again, and with one more thawing AE: no second alert while it is open; the later AEs of the
    # section (t+100, t+101) join its evidence
    feed(store, [ae(t + timedelta(days=101), "thawing")])
    assert run(store)["fired"] == [] and run(store)["fired"] == []
    assert len(A.get_alert(store.con, alert_id)["evidence"]) == 5
    [case] = A.list_cases(store.con)
    assert (case["section"], case["alerts"]) == ("thawing", [alert_id])


def test_medication_errors_without_a_step_count_as_dosing_and_the_rule_is_configurable(store):
    t = datetime(2026, 9, 1, tzinfo=timezone.utc)
    feed(store, [ae(t, med_error=True), ae(t + timedelta(days=10), med_error=True)])
    assert run(store)["fired"] == []
    [alert_id] = run(store, S.ClusterRule(min_events=2, window_days=30))["fired"]
    assert A.get_alert(store.con, alert_id)["section"] == "dosing"
    assert S.ClusterRule.from_config(
        {"signals": {"ae_cluster_by_step": {"min_events": 5, "window_days": 60}}}
    ) == S.ClusterRule(5, 60.0)
    assert S.ClusterRule.from_config({}) == S.ClusterRule(3, 90.0)


def test_safety_information_opens_one_case_per_section_and_a_release_closes_it(store):
    t = datetime(2026, 10, 1, tzinfo=timezone.utc)
    feed(
        store,
        [
            ev(
                "material_version_released",
                t - timedelta(days=30),
                site_id="MAH-HQ",
                material_id="M",
                version=2,
                sections=["ltfu"],
            ),
            ev(
                "safety_information_updated",
                t,
                site_id="MAH-HQ",
                sections=["ltfu", "secondary_malignancy"],
                summary="T-cell malignancies reported",
            ),
        ],
    )
    fired = run(store)["fired"]
    assert [A.get_alert(store.con, a)["section"] for a in fired] == ["ltfu", "secondary_malignancy"]
    assert run(store)["fired"] == []
    # the older release does not answer the new information; a release after it, listing ltfu, does
    assert [c["state"] for c in A.list_cases(store.con)] == ["open", "open"]
    feed(
        store,
        [
            ev(
                "material_version_released",
                t + timedelta(days=20),
                site_id="MAH-HQ",
                material_id="M",
                version=3,
                sections=["ltfu", "dosing"],
            )
        ],
    )
    result = run(store)
    ltfu, malignancy = A.list_cases(store.con)
    assert result["closed"] == [ltfu["case_id"]]
    assert (ltfu["state"], ltfu["outcome"], ltfu["material_version"], ltfu["state_actor"]) == (
        "closed",
        "material_updated",
        3,
        "system",
    )
    assert malignancy["state"] == "open"
    # the alert whose cause was closed resolves with it; a notification of that is queued
    alert = A.get_alert(store.con, fired[0])
    assert [h["state"] for h in alert["history"]] == ["firing", "resolved"]
    assert {(d["notification"], d["channel"]) for d in alert["deliveries"]} == {
        ("firing", "kafka"),
        ("firing", "webhook"),
        ("resolved", "kafka"),
        ("resolved", "webhook"),
    }


def row(kpi="alert_card_issued", site="GZ-03", status="breach", value=0.55, product="CTX-19") -> dict:
    return {
        "kpi": kpi,
        "period": "2026Q4",
        "product": product,
        "site_id": site,
        "numerator": 6,
        "denominator": 11,
        "value": value,
        "ci_low": 0.28,
        "ci_high": 0.79,
        "threshold": 0.9,
        "direction": "higher_is_better",
        "min_n": 10,
        "status": status,
        "pending": 0,
        "stats": {},
    }


def test_kpi_breach_pages_the_site_not_twice_and_recovery_resolves(store):
    catalog = load_catalog()
    rows = [
        row(),
        row(site=None),
        row(kpi="dose_within_spec", site=None),  # diffuse: no site row in breach
        row(kpi="ltfu_visit_adherence", site="SH-01", status="warning"),
    ]
    new, recovered = S.plan_kpi_breaches(rows, catalog, A.open_alert_keys(store.con, S.KPI_BREACH))
    assert [(r["kpi"], r["site_id"]) for r in new] == [("alert_card_issued", "GZ-03"), ("dose_within_spec", None)]
    units = [{"unit_id": "PT-X", "patient_ref": "PT-X", "site_id": "GZ-03", "detail": "no card"}]
    result = S.apply_kpi_plan(store.con, catalog, [(r, units) for r in new], recovered, CH, NOW)
    card, dose = result["fired"]
    assert A.get_alert(store.con, card)["title"] == "[BREACH] alert_card_issued 55% < 90% — CTX-19 site GZ-03 — 2026Q4"
    assert A.get_alert(store.con, dose)["site_id"] == "" and A.get_alert(store.con, dose)["section"] == "dosing"
    # the same rows again: nothing new (one open alert per key)
    new, recovered = S.plan_kpi_breaches(rows, catalog, A.open_alert_keys(store.con, S.KPI_BREACH))
    assert (new, recovered) == ([], [])
    # the site recovers to warning: its alert resolves by "system"; the other stays
    rows[0] = row(status="warning", value=0.85)
    new, recovered = S.plan_kpi_breaches(rows, catalog, A.open_alert_keys(store.con, S.KPI_BREACH))
    assert S.apply_kpi_plan(store.con, catalog, [], recovered, CH, NOW)["resolved"] == [card]
    resolved = A.get_alert(store.con, card)
    assert (resolved["state"], resolved["history"][-1]["actor"]) == ("resolved", "system")
    assert "warning" in resolved["history"][-1]["comment"]
    assert A.get_alert(store.con, dose)["state"] == "firing"
    # fewer known units in the same quarter is no recovery; the next quarter starting is
    rows[2] = {**row(kpi="dose_within_spec", site=None), "status": "insufficient_data"}
    _, recovered = S.plan_kpi_breaches(rows, catalog, A.open_alert_keys(store.con, S.KPI_BREACH))
    assert S.apply_kpi_plan(store.con, catalog, [], recovered, CH, NOW)["resolved"] == []
    rows[2] = {**rows[2], "period": "2027Q1"}
    _, recovered = S.plan_kpi_breaches(rows, catalog, A.open_alert_keys(store.con, S.KPI_BREACH))
    assert S.apply_kpi_plan(store.con, catalog, [], recovered, CH, NOW)["resolved"] == [dose]
    # breaching again later is a new alert, linked to the still open case of the section
    rows[0] = row()
    new, _ = S.plan_kpi_breaches(rows, catalog, A.open_alert_keys(store.con, S.KPI_BREACH))
    [again] = S.apply_kpi_plan(store.con, catalog, [(new[0], [])], [], CH, NOW)["fired"]
    assert again != card
    case = [c for c in A.list_cases(store.con) if c["section"] == "alert_card"]
    assert len(case) == 1 and case[0]["alerts"] == [card, again]


def test_lifecycles_keep_every_transition_and_refuse_illegal_ones(store):
    catalog = load_catalog()
    [alert_id] = S.apply_kpi_plan(store.con, catalog, [(row(), [])], [], CH, NOW)["fired"]
    case_id = A.get_alert(store.con, alert_id)["case_id"]
    A.acknowledge(store.con, alert_id, "qppv.li", "looking")
    with pytest.raises(A.TransitionError):
        A.acknowledge(store.con, alert_id, "qppv.li")
    A.resolve(store.con, alert_id, "qppv.li", "site retrained")
    with pytest.raises(A.TransitionError):
        A.resolve(store.con, alert_id, "qppv.li")
    with pytest.raises(A.NotFound):
        A.acknowledge(store.con, "AL-999999", "x")
    assert [(h["state"], h["actor"], h["comment"]) for h in A.get_alert(store.con, alert_id)["history"]] == [
        ("firing", "system", A.get_alert(store.con, alert_id)["title"]),
        ("acknowledged", "qppv.li", "looking"),
        ("resolved", "qppv.li", "site retrained"),
    ]
    with pytest.raises(A.TransitionError):
        A.close_case(store.con, case_id, "qppv.li", "no_change", comment="  ")  # a reason is required
    with pytest.raises(A.TransitionError):
        A.close_case(store.con, case_id, "qppv.li", "material_updated")  # a version is required
    A.start_review(store.con, case_id, "qppv.li")
    with pytest.raises(A.TransitionError):
        A.start_review(store.con, case_id, "qppv.li")
    A.close_case(store.con, case_id, "qppv.li", "no_change", comment="card process fixed at the site, not the text")
    case = A.get_case(store.con, case_id)
    assert [(h["state"], h["outcome"], h["actor"]) for h in case["history"]] == [
        ("open", None, "system"),
        ("in_review", None, "qppv.li"),
        ("closed", "no_change", "qppv.li"),
    ]
    # history rows only ever accumulate: nothing in the lifecycle tables was updated in place
    assert store.con.execute("SELECT count(*) FROM alert_history").fetchall()[0][0] == 3
    assert store.con.execute("SELECT count(*) FROM review_case_history").fetchall()[0][0] == 3


def test_data_quality_alert_for_failing_critical_expectations(store):
    con = store.con
    con.execute(
        "INSERT INTO dq_results VALUES (?, 'events', 'event_id_unique', false, '3 duplicates', true), "
        "(?, 'events', 'score_range', false, '1 out of range', false)",
        [NOW, NOW],
    ).fetchall()
    [alert_id] = run(store)["fired"]
    alert = A.get_alert(con, alert_id)
    assert (alert["signal"], alert["kpi"], alert["case_id"]) == ("data_quality", "events:event_id_unique", None)
    assert run(store)["fired"] == []
    later = NOW + timedelta(minutes=5)
    con.execute("INSERT INTO dq_results VALUES (?, 'events', 'event_id_unique', true, '0', true)", [later]).fetchall()
    assert run(store)["resolved"] == [alert_id]


def test_a_plan_read_before_an_operator_acted_changes_nothing_twice(store):
    """The worker reads the plan on its reader thread and applies it on the writer later; an operator's action in
    between must win: no second close, no resolve of a resolved alert, no evidence for a resolved cluster."""
    con = store.con
    t = datetime(2026, 10, 1, tzinfo=timezone.utc)
    feed(
        store,
        [
            ev("safety_information_updated", t, site_id="MAH-HQ", sections=["ltfu"], summary="new risk"),
            ae(t, "thawing"),
            ae(t + timedelta(days=1), "thawing"),
            ae(t + timedelta(days=2), "thawing"),
        ],
    )
    fired = run(store)["fired"]
    safety, cluster = (next(a for a in fired if A.get_alert(con, a)["signal"] == s) for s in (S.SAFETY, S.AE_CLUSTER))
    case_id = A.get_alert(con, safety)["case_id"]
    con.execute("INSERT INTO dq_results VALUES (?, 'events', 'event_id_unique', false, '3', true)", [NOW]).fetchall()
    [dq_alert] = run(store)["fired"]
    # new facts: a release answering the case, the expectation passing again, one more thawing AE
    feed(
        store,
        [
            ev(
                "material_version_released",
                t + timedelta(days=3),
                site_id="MAH-HQ",
                material_id="M",
                version=4,
                sections=["ltfu"],
            ),
            ae(t + timedelta(days=3), "thawing"),
        ],
    )
    con.execute(
        "INSERT INTO dq_results VALUES (?, 'events', 'event_id_unique', true, '0', true)", [NOW + timedelta(minutes=1)]
    ).fetchall()
    plan = S.plan_events(con, S.ClusterRule())
    assert plan.close and plan.resolve_dq == (dq_alert,) and dict(plan.attach).get(cluster)
    # ... and before it is applied, the operator closes the case (resolving its alerts) and resolves the rest
    A.close_case(con, case_id, "qppv@example.org", "no_change", comment="handled by letter", channels=CH, now=NOW)
    A.resolve(con, dq_alert, "qppv@example.org", "fixed at source", CH, NOW)
    A.resolve(con, cluster, "qppv@example.org", "reviewed", CH, NOW)
    evidence = len(A.get_alert(con, cluster)["evidence"])
    assert S.apply_event_plan(con, plan, CH, NOW) == {"fired": [], "resolved": [], "closed": []}
    assert A.get_case(con, case_id)["outcome"] == "no_change"
    assert [h["state"] for h in A.get_alert(con, dq_alert)["history"]] == ["firing", "resolved"]
    assert len(A.get_alert(con, cluster)["evidence"]) == evidence
    # a plan with nothing in it is falsy (the worker then skips the writer) and applying it writes nothing
    history = con.execute("SELECT count(*) FROM alert_history").fetchall()
    assert not S.EventPlan() and S.apply_event_plan(con, S.EventPlan(), CH, NOW) == {
        "fired": [],
        "resolved": [],
        "closed": [],
    }
    assert con.execute("SELECT count(*) FROM alert_history").fetchall() == history


def finding(at: datetime, finding_id: str, severity: str = "critical", **kw) -> dict:
    return ev(
        "audit_finding_raised",
        at,
        audit_id=kw.pop("audit_id", "AU-2026-1"),
        finding_id=finding_id,
        severity=severity,
        area=kw.pop("area", "infusion"),
        **kw,
    )


def test_a_critical_audit_finding_alerts_at_once_once_per_finding_without_a_review_case(store):
    t = datetime(2026, 11, 10, tzinfo=timezone.utc)
    feed(
        store,
        [finding(t, "F-1", site_id="SH-01"), finding(t, "F-2", site_id="SH-01"), finding(t, "F-3", severity="major")],
    )
    fired = run(store)["fired"]
    assert len(fired) == 2, "one alert per critical finding, even at the same site; a major one does not page"
    alerts = {A.get_alert(store.con, i)["subject"]: A.get_alert(store.con, i) for i in fired}
    a = alerts["F-1"]
    assert (a["signal"], a["severity"], a["site_id"], a["case_id"], a["section"]) == (
        "critical_audit_finding",
        "critical",
        "SH-01",
        None,
        "",
    )
    assert a["title"] == "[CRITICAL AUDIT FINDING] F-1 at site SH-01 — infusion — CTX-19 (audit AU-2026-1)"
    assert {d["channel"] for d in a["deliveries"]} == set(CH), "queued on every enabled channel"
    assert A.list_cases(store.con) == []

    # the same finding sent again (another event id, later) fires nothing, before and after it is resolved
    feed(store, [finding(t + timedelta(days=1), "F-1", site_id="SH-01")])
    assert run(store)["fired"] == []
    feed(store, [ev("capa_closed", t + timedelta(days=5), finding_id="F-1", verified=False)])
    assert run(store)["resolved"] == [], "an unverified closure does not close the finding"
    feed(store, [ev("capa_closed", t + timedelta(days=9), finding_id="F-1", verified=True)])
    assert run(store)["resolved"] == [a["alert_id"]]
    assert A.get_alert(store.con, a["alert_id"])["history"][-1]["comment"] == "CAPA verified on 2026-11-19"
    feed(store, [finding(t + timedelta(days=20), "F-1", site_id="SH-01")])
    assert run(store)["fired"] == []
    # the same finding id of another product is another finding
    feed(store, [finding(t, "F-1", product="BCM-07")])
    assert len(run(store)["fired"]) == 1
