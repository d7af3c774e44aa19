"""Event contract v1: what is accepted, and the machine-readable reason for everything that is not."""

import json

import pytest

from rmm_monitor.contract import EVENT_TYPES, MAX_EVENT_BYTES, TOPIC_OF_TYPE, validate_batch, validate_one
from rmm_monitor.store import Store, process_batch

BASE = {
    "event_id": "e1",
    "event_type": "infusion_administered",
    "schema_version": 1,
    "occurred_at": "2026-07-03T14:05:00+08:00",
    "product": "CTX-19",
    "site_id": "SH-01",
    "patient_ref": "PT-000001",
    "lot_id": "LOT-1",
    "hcp_id": "HCP-1",
    "dose_within_spec": True,
}


def enc(**changes):
    ev = {**BASE, **changes}
    return json.dumps({k: v for k, v in ev.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "raw,reason",
    [
        (enc(patient_name="Zhang San"), "unknown_field:patient_name"),
        (enc(id_number="110101199003074514"), "unknown_field:id_number"),
        (enc(birth_date="1990-03-07"), "unknown_field:birth_date"),
        (enc(occurred_at="2026-07-03 14:05:00Z"), "bad_timestamp:occurred_at"),
        (enc(occurred_at="2026-07-03T14:05:00"), "bad_timestamp:occurred_at"),
        (enc(occurred_at="2026-02-30T10:00:00Z"), "bad_timestamp:occurred_at"),
        (enc(occurred_at="yesterday"), "bad_timestamp:occurred_at"),
        (enc(recorded_at="2026-07-03"), "bad_timestamp:recorded_at"),
        (enc(schema_version=2), "unsupported_schema_version"),
        (enc(schema_version="1"), "unsupported_schema_version"),
        (enc(schema_version=True), "unsupported_schema_version"),
        (enc(dose_within_spec="true"), "bad_type:dose_within_spec"),
        (enc(dose_within_spec=1), "bad_type:dose_within_spec"),
        (enc(patient_ref="short"), "bad_value:patient_ref"),
        (enc(patient_ref="PT 000001 with spaces"), "bad_value:patient_ref"),
        (enc(lot_id=...), "missing_field:lot_id"),
        (enc(event_id=""), "bad_value:event_id"),
        (enc(event_id="x" * 65), "bad_value:event_id"),
        (enc(event_type="infusion_cancelled"), "unknown_event_type"),
        (enc(event_type=...), "missing_field:event_type"),
        (b'{"event_id": "e1", ', "bad_json"),
        (b"\xff\xfe{}", "bad_encoding"),
        (b"[1, 2]", "not_an_object"),
        (enc(site_id="SH 01; DROP TABLE events"), "bad_value:site_id"),
    ],
)
def test_rejection_reasons(raw, reason):
    event, got = validate_one(raw, "rmm.infusion" if b"infusion_administered" in raw else None)
    assert event is None
    assert got == reason


def test_grade_out_of_range():
    ev = {k: v for k, v in BASE.items() if k not in ("lot_id", "hcp_id", "dose_within_spec")}
    ev.update(event_type="ae_onset", ae_id="A1", term="CRS", grade=6, serious=True)
    assert validate_one(json.dumps(ev).encode())[1] == "bad_value:grade"
    ev.update(grade=5)
    assert validate_one(json.dumps(ev).encode())[1] is None


def test_valid_event_and_optional_nulls():
    card = {
        **{k: v for k, v in BASE.items() if k not in ("hcp_id", "dose_within_spec")},
        "event_type": "alert_card_issued",
        "lot_id": None,
    }
    assert validate_one(json.dumps(card).encode(), "rmm.infusion") == (validate_one(json.dumps(card).encode())[0], None)
    assert validate_one(enc(), "rmm.infusion")[1] is None
    assert validate_one(enc(occurred_at="2026-07-03T14:05:00.123Z"))[1] is None
    assert validate_one(enc(occurred_at="2026-07-03T14:05:00-05:30"))[1] is None


def test_wrong_topic_is_rejected():
    assert validate_one(enc(), "rmm.ae")[1] == "wrong_topic:infusion_administered"


def test_oversized_event_is_rejected():
    raw = enc(source="x" * 100)[:-1] + b"," + b'"pad":"' + b"y" * MAX_EVENT_BYTES + b'"}'
    assert validate_one(raw)[1] == "too_large"


def test_every_event_type_maps_to_a_topic():
    assert set(EVENT_TYPES) == set(TOPIC_OF_TYPE)
    assert len(EVENT_TYPES) == 23  # v1: 18; v1.1 adds 5


def test_batch_validation_finds_each_bad_record():
    values = [enc(event_id=f"e{i}") for i in range(10)]
    values[3] = enc(event_id="e3", nickname="x")
    values[7] = b"{"
    valid, rejects = validate_batch(values, ["rmm.infusion"] * 10)
    assert valid == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [(r.index, r.reason) for r in rejects] == [(3, "unknown_field:nickname"), (7, "bad_json")]


def test_batch_validation_across_chunks_keeps_batch_indexes(monkeypatch):
    """A batch is decoded chunk by chunk: a bad record at a chunk's edge or on the wrong topic is found with its
    index in the whole batch, and the clean chunks around it stay valid."""
    from rmm_monitor.contract import events as contract

    monkeypatch.setattr(contract, "VALIDATE_CHUNK", 4)
    values = [enc(event_id=f"e{i}") for i in range(11)]
    values[3] = b"not json"  # last record of chunk 0
    values[4] = enc(event_id="e4", patient_name="Zhang San")  # first record of chunk 1
    values[10] = enc(
        event_id="e10",
        event_type="ae_reported",
        ae_id="AE-1",
        regulator="NMPA",
        report_kind="expedited",
        hcp_id=...,
        dose_within_spec=...,
    )  # alone in the last chunk
    assert validate_one(values[10])[1] is None  # a valid event, of another topic
    topics = ["rmm.infusion"] * 11
    valid, rejects = validate_batch(values, topics)
    assert valid == [0, 1, 2, 5, 6, 7, 8, 9]
    assert [(r.index, r.reason.split(":")[0]) for r in rejects] == [
        (3, "bad_json"),
        (4, "unknown_field"),
        (10, "wrong_topic"),
    ]


def test_decoded_events_are_not_tracked_by_the_cyclic_gc():
    """A batch decodes tens of thousands of events at once; tracked, they set off the collector over and over."""
    import gc

    # msgspec untracks a struct of scalars by itself; one holding a list stays tracked unless its type says gc=False
    raw = json.dumps(
        {
            "event_id": "s1",
            "event_type": "site_certification_changed",
            "schema_version": 1,
            "occurred_at": "2026-07-01T00:00:00Z",
            "product": "CTX-19",
            "site_id": "SH-01",
            "status": "certified",
            "scope": ["apheresis", "infusion"],
        }
    ).encode()
    event, reason = validate_one(raw)
    assert reason is None and event.scope == ["apheresis", "infusion"] and not gc.is_tracked(event)


def test_joined_fast_path_cannot_smuggle_two_events_in_one_record():
    values = [enc(event_id="a") + b"," + enc(event_id="b"), enc(event_id="c")]
    valid, rejects = validate_batch(values)
    assert valid == [1]
    assert rejects[0].index == 0


def test_store_format_check_matches_single_event_check(tmp_path):
    """The SQL stage (store) and the Python stage (validate_one) apply the same format rules."""
    values = [
        enc(event_id="ok"),
        enc(event_id="feb30", occurred_at="2026-02-30T10:00:00Z"),
        enc(event_id="ref", patient_ref="has space!"),
        enc(event_id="space", occurred_at="2026-07-03 10:00:00Z"),
        enc(
            event_id="due",
            event_type="ltfu_visit",
            lot_id=...,
            hcp_id=...,
            dose_within_spec=...,
            visit_no=1,
            due_at="2026-13-01T00:00:00Z",
            status="done",
        ),
    ]
    with Store(tmp_path / "s.duckdb") as store:
        outcome = process_batch(store, values)
        assert outcome.inserted == 1
        got = {r.index: r.reason for r in outcome.rejects}
        assert got == {i: validate_one(v)[1] for i, v in enumerate(values) if i}
        assert store.event_count() == 1


def test_duplicates_are_stored_once_first_copy_wins(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        first = process_batch(store, [enc(event_id="d1", lot_id="FIRST"), enc(event_id="d1", lot_id="SECOND")])
        again = process_batch(store, [enc(event_id="d1", lot_id="THIRD")])
        assert (first.inserted, first.duplicates, again.inserted, again.duplicates) == (1, 1, 0, 1)
        assert store.con.execute("SELECT lot_id FROM events").fetchall() == [("FIRST",)]
