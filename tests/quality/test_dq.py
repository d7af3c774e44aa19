"""Data-quality suites (expectations/) with real Great Expectations 1.x over real DuckDB stores: a clean
simulation passes everything, the simulator's seeded problems and hand-made bad-but-schema-valid events fail
exactly the expectations meant to catch them, and `rmm dq` records results for the alerting channel."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from rmm_monitor.contract import validate_one
from rmm_monitor.dev.simulate import generate, topic_of
from rmm_monitor.quality import suites as dq
from rmm_monitor.store import Store, process_batch

from support.workers import run_cli

# meant to keep the module on one xdist process (`make test` uses loadgroup); its fixtures are cheap if it does not
pytestmark = pytest.mark.xdist_group(name="dq")

END = datetime(2026, 9, 30, 12, 0, tzinfo=timezone.utc)
AS_OF = datetime(2026, 10, 15, tzinfo=timezone.utc)

# simulate.DQ_FAULTS -> the expectations that must catch them (and nothing else may fail)
SEEDED = {
    "infusion_administered.hcp_registered_at_site",  # WH-04 agency nurse
    "infusion_administered.lot_received_at_site",  # XA-08 receipt booked under SH-01
    "site_events.site_registered",  # XA-08 stock report from "XA-8"
    "ae_reported.ae_has_awareness",  # HZ-06 awareness lost
    "events.recorded_at_not_before_occurred_at",  # GZ-03 clock skew (20 min and 3 days)
    "events.occurred_at_not_in_future",  # GZ-03 card 3 days ahead
    "events.duplicate_facts_rate_below_0_1_percent",  # GZ-03 portal re-sends under new event_ids
    "ae_onset.one_onset_per_ae",  # ... which includes re-sent AE onsets
    "effectiveness_events.capa_finding_known",  # the earliest CAPA closure under a mistyped finding id
    "effectiveness_events.recipient_site_registered",  # CD-05's joining pack addressed to "CD05"
}


def load(path, events) -> str:
    raws = [json.dumps(e).encode() for e in events]
    for raw, e in zip(raws, events):
        assert validate_one(raw, topic_of(e))[1] is None, e  # bad data, but schema-valid
    with Store(path) as store:
        outcome = process_batch(store, raws)
        assert not outcome.rejects
    return str(path)


@pytest.fixture(scope="session")  # survives xdist interleaving other modules in this process
def faulty_db(tmp_path_factory):
    return load(
        tmp_path_factory.mktemp("dq") / "faulty.duckdb", generate(seed=7, patients=200, end=END, dq_faults=True)
    )


def failed(rows) -> set[str]:
    return {f"{r['suite']}.{r['expectation']}" for r in rows if not r["success"]}


def test_clean_simulation_passes_every_expectation(tmp_path):
    db = load(tmp_path / "clean.duckdb", generate(seed=7, patients=200, end=END))
    with Store(db, read_only=True) as store:
        rows, timings = dq.run(store.con, as_of=AS_OF)
    names = {(s.name, n) for s in dq.load_suites() for n in s.expectation_names()}
    assert {(r["suite"], r["expectation"]) for r in rows} == names  # every committed expectation ran
    assert failed(rows) == set(), [r for r in rows if not r["success"]]
    assert timings["rows_checked"] > 5000


def test_seeded_simulator_problems_fail_exactly_their_expectations(faulty_db):
    with Store(faulty_db, read_only=True) as store:
        rows, _ = dq.run(store.con, as_of=AS_OF)
    assert failed(rows) == SEEDED
    by_name = {f"{r['suite']}.{r['expectation']}": r for r in rows}
    assert by_name["infusion_administered.hcp_registered_at_site"]["unexpected_count"] == 2
    assert by_name["infusion_administered.lot_received_at_site"]["unexpected_count"] == 1
    assert by_name["ae_reported.ae_has_awareness"]["unexpected_count"] == 2
    assert by_name["events.recorded_at_not_before_occurred_at"]["unexpected_count"] == 2
    assert by_name["events.occurred_at_not_in_future"]["unexpected_count"] == 1
    assert by_name["effectiveness_events.capa_finding_known"]["unexpected_count"] == 1
    assert by_name["effectiveness_events.recipient_site_registered"]["unexpected_count"] == 1
    assert by_name["infusion_administered.hcp_registered_at_site"]["critical"] is True
    assert by_name["events.duplicate_facts_rate_below_0_1_percent"]["critical"] is False
    # results carry no patient refs or event ids: they go to /metrics labels, dq_results and the export
    assert "PT-" not in json.dumps([r["observed"] for r in rows])


def test_the_worker_s_run_in_a_child_process_gives_the_rows_of_a_run_in_process(faulty_db, tmp_path):
    # the worker streams the frames to Arrow files and validates them in `python -m rmm_monitor.quality.isolated`
    # (its memory goes with the child); what it records must be what `rmm dq` computes in-process
    import subprocess
    import sys

    from rmm_monitor.core.periods import parse_period
    from rmm_monitor.quality import isolated

    suites = dq.load_suites()
    with Store(faulty_db, read_only=True) as store:
        direct = dq.validate(dq.build_frames(store.con, AS_OF, None, suites), suites, run_at=AS_OF)
        written = isolated.write_frames(store.con, tmp_path, AS_OF, None, suites)
        sizes = {s.name: store.con.execute(*dq.frame_query(s, AS_OF, parse_period("all", AS_OF))).fetchall()
                 for s in suites}  # fmt: skip
    assert written == {name: len(rows) for name, rows in sizes.items()}
    child = subprocess.run(
        [sys.executable, "-m", "rmm_monitor.quality.isolated", str(tmp_path), AS_OF.isoformat(),
         str(dq.expectations_dir())],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    assert isolated.rows_from_json(child.stdout) == direct
    assert failed(direct) == SEEDED


def test_period_scopes_the_checked_rows_but_not_the_lookups(faulty_db):
    """Events of a quarter are checked against every event known: an infusion in Q3 whose HCP registered in Q1
    is fine. Most seeded problems sit early in the programme, so Q3 sees only the re-sends."""
    with Store(faulty_db, read_only=True) as store:
        rows, _ = dq.run(store.con, as_of=AS_OF, period="2026Q3")
    assert failed(rows) == {"events.duplicate_facts_rate_below_0_1_percent", "ae_onset.one_onset_per_ae"}


def test_every_event_in_scope_is_a_row_gx_checks(faulty_db):
    """The frames are narrow (only what the expectations read) but never sampled: every row-level expectation
    counts every event of its kind known at the as-of time (and in the period)."""
    from rmm_monitor.core.periods import parse_period

    scopes = {
        "events": None,
        "ae_onset": ("ae_onset",),
        "ae_reported": ("ae_reported",),
        "infusion_administered": ("infusion_administered",),
        "ltfu_visit": ("ltfu_visit",),
        "site_events": ("site_certification_changed", "tocilizumab_stock_reported"),
        "training_completed": ("training_completed",),
        "effectiveness_events": (
            "material_distributed",
            "knowledge_assessed",
            "audit_finding_raised",
            "capa_closed",
            "post_infusion_contact",
        ),
    }
    for period in (None, "2026Q3"):
        per = parse_period(period or "all", AS_OF)
        with Store(faulty_db, read_only=True) as store:
            rows, _ = dq.run(store.con, as_of=AS_OF, period=period)
            want = {}
            for suite, types in scopes.items():
                sql = (
                    "SELECT count(*) FROM events WHERE known_at <= ? AND (? IS NULL OR occurred_at >= ?) "
                    "AND (? IS NULL OR occurred_at < ?)" + (" AND event_type IN (SELECT unnest(?))" if types else "")
                )
                args = [AS_OF, per.start, per.start, per.end, per.end] + ([list(types)] if types else [])
                want[suite] = store.con.execute(sql, args).fetchall()[0][0]
        assert {r["suite"] for r in rows} == set(scopes)
        for r in rows:
            if r["unexpected_count"] is not None:  # a row-level expectation
                assert r["element_count"] == want[r["suite"]], (period, r)
        assert want["events"] > 1000


def test_a_fact_resent_under_new_event_ids_counts_as_duplicate_facts(tmp_path):
    """content_key: the same facts under different event_ids share a key; a fact differing in one field does
    not."""
    base = [
        ev(1, "site_registered", "2026-07-01T00:00:00Z", name="Site 1", country="CN"),
        ev(2, "hcp_registered", "2026-07-01T01:00:00Z", hcp_id="H1", role="infusion_nurse"),
    ]
    card = dict(patient_ref="PT-00000001", lot_id="L1")
    events = base + [ev(10 + i, "alert_card_issued", "2026-07-03T00:00:00Z", **card) for i in range(3)]
    events += [ev(20, "alert_card_issued", "2026-07-03T00:00:01Z", **card)]  # another time: another fact
    db = load(tmp_path / "dup.duckdb", events)
    with Store(db, read_only=True) as store:
        frame = dq.build_frames(store.con, AS_OF, None, tuple(s for s in dq.load_suites() if s.name == "events"))
    keys = frame["events"]["content_key"]
    assert len(keys) == 6 and keys.nunique() == 4  # 3 copies of one card count once


def ev(i, etype, t, **fields):
    base = {
        "event_id": f"hand-{i:03d}",
        "event_type": etype,
        "schema_version": 1,
        "occurred_at": t,
        "recorded_at": t,
        "source": "test",
        "product": "CTX-19",
        "site_id": fields.pop("site_id", "S1"),
    }
    return {**base, **fields}


def test_hand_made_bad_events_fail_the_right_expectations(tmp_path):
    events = [
        ev(1, "site_registered", "2026-07-01T00:00:00Z", name="Site 1", country="CN"),
        ev(2, "hcp_registered", "2026-07-01T01:00:00Z", hcp_id="H1", role="infusion_nurse"),
        ev(
            3,
            "product_received",
            "2026-07-02T00:00:00Z",
            patient_ref="PT-00000001",
            lot_id="L1",
            coi_verified=True,
            temperature_excursion=False,
        ),
        ev(
            4,
            "infusion_administered",
            "2026-07-03T00:00:00Z",
            patient_ref="PT-00000001",
            lot_id="L1",
            hcp_id="H1",
            dose_within_spec=True,
        ),  # all references fine
        ev(
            5,
            "infusion_administered",
            "2026-07-04T00:00:00Z",
            site_id="S9",
            patient_ref="PT-00000002",
            lot_id="L2",
            hcp_id="H9",
            dose_within_spec=True,
        ),  # unregistered site, HCP, lot
        ev(
            6,
            "ae_onset",
            "2026-07-05T00:00:00Z",
            ae_id="AE1",
            patient_ref="PT-00000001",
            term="CRS",
            grade=2,
            serious=False,
        ),
        ev(7, "ae_awareness", "2026-07-06T00:00:00Z", ae_id="AE1", patient_ref="PT-00000001"),
        ev(
            8,
            "ae_reported",
            "2026-07-05T12:00:00Z",
            ae_id="AE1",
            patient_ref="PT-00000001",
            regulator="NMPA",
            report_kind="periodic",
            lot_id="L1",
        ),  # filed before awareness
        ev(
            9,
            "ltfu_visit",
            "2026-07-10T00:00:00Z",
            patient_ref="PT-00000077",
            visit_no=1,
            due_at="2026-07-10T00:00:00Z",
            status="done",
        ),  # patient never infused
        {
            **ev(10, "alert_card_issued", "2026-07-03T03:00:00Z", patient_ref="PT-00000001", lot_id="L1"),
            "recorded_at": "2026-07-03T01:00:00Z",
        },  # recorded 2 h before it happened
    ]
    db = load(tmp_path / "hand.duckdb", events)
    with Store(db, read_only=True) as store:
        rows, _ = dq.run(store.con, as_of=AS_OF)
    assert failed(rows) == {
        "infusion_administered.site_registered",
        "infusion_administered.hcp_registered_at_site",
        "infusion_administered.lot_received_at_site",
        "ae_reported.reported_not_before_awareness",
        "ltfu_visit.patient_infused",
        "events.recorded_at_not_before_occurred_at",
        "events.occurred_at_not_in_future",  # 120 min ahead: beyond the 60 min tolerance
    }


def test_rmm_dq_records_results_and_fails_on_critical(faulty_db, tmp_path):
    import shutil

    db = tmp_path / "copy.duckdb"
    shutil.copy(faulty_db, db)
    out = run_cli("dq", "--db", str(db), "--as-of", "2026-10-15T00:00:00Z", "--json")
    assert out.returncode == 1, out.stderr  # a critical expectation fails
    rows = json.loads(out.stdout)
    assert failed(rows) == SEEDED
    with Store(db, read_only=True) as store:
        stored = store.con.execute("SELECT suite, expectation, success, critical, observed FROM dq_results").fetchall()
    assert len(stored) == len(rows)
    critical_failing = {f"{s}.{e}" for s, e, ok, crit, _ in stored if not ok and crit}
    assert critical_failing == {n for n in SEEDED if by_critical(rows)[n]}
    assert "infusion_administered.lot_received_at_site" in critical_failing


def by_critical(rows) -> dict[str, bool]:
    return {f"{r['suite']}.{r['expectation']}": r["critical"] for r in rows}


def test_effectiveness_evidence_pointing_nowhere_fails_the_right_expectations(tmp_path):
    """Contract v1.1: a distribution to a site that is not registered, a CAPA for a finding never raised, a closure
    before its finding, a contact of a patient never infused, a survey of a version never released."""
    reg = [
        ev(1, "site_registered", "2026-07-01T00:00:00Z", name="Site 1", country="CN"),
        ev(2, "hcp_registered", "2026-07-01T01:00:00Z", hcp_id="H1", role="infusion_nurse"),
        ev(
            3,
            "material_version_released",
            "2026-07-01T02:00:00Z",
            site_id="MAH-HQ",
            material_id="M1",
            version=1,
            sections=["crs_management"],
        ),
        ev(
            4,
            "product_received",
            "2026-07-02T00:00:00Z",
            patient_ref="PT-00000001",
            lot_id="L1",
            coi_verified=True,
            temperature_excursion=False,
        ),
        ev(
            5,
            "infusion_administered",
            "2026-07-03T00:00:00Z",
            patient_ref="PT-00000001",
            lot_id="L1",
            hcp_id="H1",
            dose_within_spec=True,
        ),
        ev(
            6,
            "audit_finding_raised",
            "2026-07-05T00:00:00Z",
            audit_id="A1",
            finding_id="F1",
            severity="major",
            area="thaw",
        ),
    ]
    fine = [
        ev(
            10,
            "material_distributed",
            "2026-07-02T00:00:00Z",
            material_id="M1",
            material_version=1,
            recipient_kind="site",
            recipient_id="S1",
            channel="portal",
        ),
        ev(
            11,
            "knowledge_assessed",
            "2026-07-02T01:00:00Z",
            assessment_id="K1",
            respondent_kind="hcp",
            respondent_id="H1",
            material_id="M1",
            material_version=1,
            key_messages=10,
            key_messages_correct=8,
        ),
        ev(12, "capa_closed", "2026-07-20T00:00:00Z", finding_id="F1", verified=True),
        ev(
            13,
            "post_infusion_contact",
            "2026-07-03T12:00:00Z",
            patient_ref="PT-00000001",
            kind="inpatient",
            within_proximity=True,
        ),
    ]
    bad = [
        ev(
            20,
            "material_distributed",
            "2026-07-02T00:00:00Z",
            material_id="M1",
            material_version=1,
            recipient_kind="site",
            recipient_id="S9",
            channel="post",
        ),  # S9 was never registered
        ev(
            21,
            "knowledge_assessed",
            "2026-07-02T01:00:00Z",
            assessment_id="K1",
            respondent_kind="hcp",
            respondent_id="H2",
            material_id="M1",
            material_version=3,
            key_messages=10,
            key_messages_correct=9,
        ),
        ev(22, "capa_closed", "2026-07-20T00:00:00Z", finding_id="F9", verified=True),  # no such finding
        ev(23, "capa_closed", "2026-07-04T00:00:00Z", finding_id="F1", verified=False),  # before F1 was raised
        ev(
            24,
            "post_infusion_contact",
            "2026-07-03T12:00:00Z",
            patient_ref="PT-00000077",
            kind="phone",
            within_proximity=True,
        ),  # never infused
        ev(
            25,
            "audit_finding_raised",
            "2026-07-05T00:00:00Z",
            site_id="S7",
            audit_id="A2",
            finding_id="F2",
            severity="minor",
            area="other",
        ),  # at an unregistered site
    ]
    db = load(tmp_path / "v11.duckdb", reg + fine)
    with Store(db, read_only=True) as store:
        rows, _ = dq.run(store.con, as_of=AS_OF)
    assert failed(rows) == set(), [r for r in rows if not r["success"]]

    db = load(tmp_path / "v11-bad.duckdb", reg + fine + bad)
    with Store(db, read_only=True) as store:
        rows, _ = dq.run(store.con, as_of=AS_OF)
    assert failed(rows) == {
        "effectiveness_events.recipient_site_registered",
        "effectiveness_events.material_version_released",
        "effectiveness_events.capa_finding_known",
        "effectiveness_events.capa_not_before_finding",
        "effectiveness_events.contact_after_infusion",
        "effectiveness_events.site_registered",
    }
    counts = {r["expectation"]: r["unexpected_count"] for r in rows if r["suite"] == "effectiveness_events"}
    assert counts["capa_finding_known"] == 1 and counts["recipient_site_registered"] == 1
    critical = {r["expectation"] for r in rows if r["suite"] == "effectiveness_events" and r["critical"]}
    assert "material_version_released" not in critical and "capa_finding_known" in critical


def test_an_event_type_outside_the_contract_and_a_type_on_the_wrong_topic(tmp_path):
    """The envelope suite reads the contract's own table of types and topics (no copy of it in the suite). The
    store cannot hold such events (the contract refuses them), so the frames read a copy of its events relation."""
    import duckdb

    db = load(tmp_path / "topics.duckdb", [ev(1, "site_registered", "2026-07-01T00:00:00Z", name="S", country="CN")])
    con = duckdb.connect()
    con.execute(f"ATTACH '{db}' AS stored (READ_ONLY)")
    con.execute("CREATE TABLE events AS SELECT * FROM stored.events")
    con.execute("INSERT INTO events SELECT * REPLACE ('hand-002' AS event_id, 'rmm.ae' AS topic) FROM events")
    con.execute(
        "INSERT INTO events SELECT * REPLACE ('hand-003' AS event_id, 'site_renamed' AS event_type) FROM stored.events"
    )
    suites = tuple(s for s in dq.load_suites() if s.name == "events")
    rows = dq.validate(dq.build_frames(con, AS_OF, None, suites), suites)
    by_name = {r["expectation"]: r for r in rows}
    assert by_name["event_type_allowed"]["unexpected_count"] == 1  # site_renamed
    assert by_name["topic_matches_event_type"]["unexpected_count"] == 2  # on rmm.ae; and a type with no topic
    assert by_name["duplicate_facts_rate_below_0_1_percent"]["success"] is False  # the copy on the wrong topic
