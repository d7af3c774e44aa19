"""Event contract v1.1 (effectiveness evidence): the five new types and `ae_onset.expected` are validated like the
others — unknown fields refused, each bad field a machine-readable reason, the rules between fields checked —
and stored with every field, through the same batch path the worker uses."""

from __future__ import annotations

import json

import pytest

from rmm_monitor.contract import TOPIC_OF_TYPE, validate_batch, validate_one
from rmm_monitor.store import Store, process_batch

ENVELOPE = {
    "schema_version": 1,
    "occurred_at": "2026-07-03T14:05:00Z",
    "product": "CTX-19",
    "site_id": "SH-01",
}
VALID = {
    "material_distributed": {
        "material_id": "MAT-HCP-CTX-19",
        "material_version": 2,
        "recipient_kind": "site",
        "recipient_id": "SH-01",
        "channel": "portal",
    },
    "knowledge_assessed": {
        "assessment_id": "KS-1",
        "respondent_kind": "patient",
        "respondent_id": "PT-000001",
        "material_id": "MAT-PAT-CTX-19",
        "material_version": 1,
        "key_messages": 10,
        "key_messages_correct": 8,
    },
    "audit_finding_raised": {"audit_id": "AUD-1", "finding_id": "F-1", "severity": "critical", "area": "thaw"},
    "capa_closed": {"finding_id": "F-1", "verified": True},
    "post_infusion_contact": {"patient_ref": "PT-000001", "kind": "phone", "within_proximity": False},
    "ae_onset": {
        "ae_id": "AE-1",
        "patient_ref": "PT-000001",
        "term": "CRS",
        "grade": 2,
        "serious": True,
        "expected": True,
    },
}


def event(etype: str, i: int = 1, **changes) -> dict:
    ev = {"event_id": f"{etype}-{i}", "event_type": etype, **ENVELOPE, **VALID[etype], **changes}
    return {k: v for k, v in ev.items() if v is not ...}


def raw(etype: str, **changes) -> bytes:
    return json.dumps(event(etype, **changes)).encode()


@pytest.mark.parametrize("etype", list(VALID))
def test_each_new_type_is_accepted_on_its_topic_and_refused_on_another(etype):
    topic = TOPIC_OF_TYPE[etype]
    assert validate_one(raw(etype), topic)[1] is None
    other = "rmm.ae" if topic != "rmm.ae" else "rmm.site"
    assert validate_one(raw(etype), other)[1] == f"wrong_topic:{etype}"


@pytest.mark.parametrize(
    "etype,changes,reason",
    [
        ("knowledge_assessed", {"key_messages_correct": 11}, "bad_value:key_messages_correct"),
        ("knowledge_assessed", {"key_messages": 0}, "bad_value:key_messages"),
        ("knowledge_assessed", {"key_messages": 101}, "bad_value:key_messages"),
        ("knowledge_assessed", {"key_messages_correct": -1}, "bad_value:key_messages_correct"),
        ("knowledge_assessed", {"key_messages": 9.0}, "bad_type:key_messages"),
        ("knowledge_assessed", {"respondent_kind": "nurse"}, "bad_value:respondent_kind"),
        ("knowledge_assessed", {"respondent_id": "Li"}, "bad_value:respondent_id"),  # not a pseudonym
        ("knowledge_assessed", {"respondent_kind": "hcp", "respondent_id": "Dr Li"}, "bad_value:respondent_id"),
        ("knowledge_assessed", {"material_version": 0}, "bad_value:material_version"),
        ("knowledge_assessed", {"missed_messages": ["alert card"]}, "unknown_field:missed_messages"),
        ("knowledge_assessed", {"assessment_id": ...}, "missing_field:assessment_id"),
        ("material_distributed", {"recipient_kind": "patient", "recipient_id": "P1"}, "bad_value:recipient_id"),
        ("material_distributed", {"channel": "fax"}, "bad_value:channel"),
        ("material_distributed", {"recipient_name": "Dr Li"}, "unknown_field:recipient_name"),
        ("audit_finding_raised", {"severity": "high"}, "bad_value:severity"),
        ("audit_finding_raised", {"area": "pharmacy"}, "bad_value:area"),
        ("audit_finding_raised", {"description": "free text"}, "unknown_field:description"),
        ("capa_closed", {"verified": "yes"}, "bad_type:verified"),
        ("capa_closed", {"verified": ...}, "missing_field:verified"),
        ("post_infusion_contact", {"within_proximity": 1}, "bad_type:within_proximity"),
        ("post_infusion_contact", {"kind": "email"}, "bad_value:kind"),
        ("post_infusion_contact", {"patient_ref": "PT 1"}, "bad_value:patient_ref"),
        ("post_infusion_contact", {"address": "Shanghai"}, "unknown_field:address"),
        ("ae_onset", {"expected": "yes"}, "bad_type:expected"),
    ],
)
def test_rejection_reasons(etype, changes, reason):
    assert validate_one(raw(etype, **changes), TOPIC_OF_TYPE[etype]) == (None, reason)


def test_key_messages_boundaries_and_optional_expected():
    assert validate_one(raw("knowledge_assessed", key_messages=10, key_messages_correct=10))[1] is None
    assert validate_one(raw("knowledge_assessed", key_messages=1, key_messages_correct=0))[1] is None
    assert validate_one(raw("ae_onset", expected=...))[1] is None  # absent = unknown
    assert validate_one(raw("ae_onset", expected=None))[1] is None
    hcp = raw("knowledge_assessed", respondent_kind="hcp", respondent_id="HCP-SH01-RN01")
    assert validate_one(hcp)[1] is None


def test_the_batch_path_gives_the_same_reasons_and_stores_every_field(tmp_path):
    good = [event(t, i) for i, t in enumerate(VALID)]
    bad = [
        event("knowledge_assessed", 90, key_messages_correct=12),
        event("material_distributed", 91, recipient_kind="patient", recipient_id="x"),
        event("capa_closed", 92, comment="closed by phone"),
    ]
    values = [json.dumps(e).encode() for e in good + bad]
    topics = [TOPIC_OF_TYPE[e["event_type"]] for e in good + bad]
    valid, rejects = validate_batch(values, topics)
    assert valid == list(range(len(good)))
    reasons = ["bad_value:key_messages_correct", "bad_value:recipient_id", "unknown_field:comment"]
    assert [r.reason for r in rejects] == reasons
    with Store(tmp_path / "v11.duckdb") as store:
        outcome = process_batch(store, values, topics)
        assert [r.reason for r in outcome.rejects] == reasons
        stored = store.con.execute(
            "SELECT event_type, recipient_id, key_messages_correct, severity, verified, within_proximity, expected "
            "FROM events ORDER BY event_type"
        ).fetchall()
    assert stored == [
        ("ae_onset", None, None, None, None, None, True),
        ("audit_finding_raised", None, None, "critical", None, None, None),
        ("capa_closed", None, None, None, True, None, None),
        ("knowledge_assessed", None, 8, None, None, None, None),
        ("material_distributed", "SH-01", None, None, None, None, None),
        ("post_infusion_contact", None, None, None, None, False, None),
    ]
