"""Poison events: every kind of record the contract must refuse, each with the reason the worker must give.

Shared by the reliability tests (tests/streams/, tests/contract/) and the benchmark (bench/run.py). Every
value carries a unique marker, so a record read back from rmm.deadletter can be matched to the poison that produced it.
"""

from __future__ import annotations

import json
from random import Random
from typing import Callable, Iterator

from rmm_monitor.contract import MAX_EVENT_BYTES

_BASE = {
    "schema_version": 1,
    "product": "CTX-19",
    "site_id": "SH-01",
    "occurred_at": "2026-07-01T10:00:00Z",
    "recorded_at": "2026-07-01T10:05:00Z",
    "source": "poison",
}


def _infusion(marker: str) -> dict:
    return {
        "event_id": marker,
        "event_type": "infusion_administered",
        **_BASE,
        "patient_ref": "PT-POISON-01",
        "lot_id": "LOT-P1",
        "hcp_id": "H-P1",
        "dose_within_spec": True,
    }


def _onset(marker: str) -> dict:
    return {
        "event_id": marker,
        "event_type": "ae_onset",
        **_BASE,
        "ae_id": "AE-P1",
        "patient_ref": "PT-POISON-01",
        "term": "CRS",
        "grade": 2,
        "serious": False,
    }


def _assessment(marker: str) -> dict:
    return {
        "event_id": marker,
        "event_type": "knowledge_assessed",
        **_BASE,
        "assessment_id": "KS-P1",
        "respondent_kind": "patient",
        "respondent_id": "PT-POISON-01",
        "material_id": "MAT-P1",
        "material_version": 1,
        "key_messages": 6,
        "key_messages_correct": 5,
    }


def _dump(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


# kind -> (topic, builder(marker) -> bytes, expected reason). Reasons are the full `rmm.reason` header values.
KINDS: dict[str, tuple[str, Callable[[str], bytes], str]] = {
    "bad_json": ("rmm.infusion", lambda m: _dump(_infusion(m))[:-7], "bad_json"),
    "not_json": ("rmm.ae", lambda m: f"<event id='{m}'/>".encode(), "bad_json"),
    "bad_encoding": ("rmm.ae", lambda m: b'{"event_id":"' + m.encode() + b'\xff\xfe"}', "bad_encoding"),
    "not_an_object": ("rmm.site", lambda m: json.dumps([m, 1, 2]).encode(), "not_an_object"),
    "wrong_type_grade": ("rmm.ae", lambda m: _dump({**_onset(m), "grade": "3"}), "bad_type:grade"),
    "wrong_type_bool": (
        "rmm.infusion",
        lambda m: _dump({**_infusion(m), "dose_within_spec": "yes"}),
        "bad_type:dose_within_spec",
    ),
    "out_of_range": ("rmm.ae", lambda m: _dump({**_onset(m), "grade": 9}), "bad_value:grade"),
    "unknown_field": (
        "rmm.infusion",
        lambda m: _dump({**_infusion(m), "comment": "free text"}),
        "unknown_field:comment",
    ),
    "pii_name": ("rmm.infusion", lambda m: _dump({**_infusion(m), "name": "Zhang Wei"}), "unknown_field:name"),
    "pii_id_number": (
        "rmm.infusion",
        lambda m: _dump({**_infusion(m), "id_number": "110101199003077777"}),
        "unknown_field:id_number",
    ),
    "pii_birth_date": (
        "rmm.ae",
        lambda m: _dump({**_onset(m), "birth_date": "1990-03-07"}),
        "unknown_field:birth_date",
    ),
    "oversized": (
        "rmm.infusion",
        lambda m: _dump({**_infusion(m), "source": "x" * (MAX_EVENT_BYTES + 16)}),
        "too_large",
    ),
    "missing_field": (
        "rmm.infusion",
        lambda m: _dump({k: v for k, v in _infusion(m).items() if k != "lot_id"}),
        "missing_field:lot_id",
    ),
    "unknown_event_type": (
        "rmm.site",
        lambda m: _dump({**_infusion(m), "event_type": "patient_deleted"}),
        "unknown_event_type",
    ),
    "wrong_topic": ("rmm.site", lambda m: _dump(_infusion(m)), "wrong_topic:infusion_administered"),
    # These two pass msgspec and are refused by the store's vectorised SQL format check.
    "bad_timestamp": (
        "rmm.infusion",
        lambda m: _dump({**_infusion(m), "occurred_at": "2026-02-30T10:00:00Z"}),
        "bad_timestamp:occurred_at",
    ),
    "bad_patient_ref": (
        "rmm.infusion",
        lambda m: _dump({**_infusion(m), "patient_ref": "PT 1; DROP TABLE x"}),
        "bad_value:patient_ref",
    ),
    # contract v1.1: rules between fields, checked while decoding
    "more_correct_than_asked": (
        "rmm.training",
        lambda m: _dump({**_assessment(m), "key_messages_correct": 7}),
        "bad_value:key_messages_correct",
    ),
    "respondent_not_a_pseudonym": (
        "rmm.training",
        lambda m: _dump({**_assessment(m), "respondent_id": "Li"}),
        "bad_value:respondent_id",
    ),
    "missed_messages_listed": (
        "rmm.training",
        lambda m: _dump({**_assessment(m), "missed": ["alert card"]}),
        "unknown_field:missed",
    ),
}


def poison(n: int, seed: int = 1, prefix: str = "poison") -> Iterator[tuple[str, bytes, bytes, str]]:
    """n poison records as (topic, key, value, expected reason), kinds in rotation, shuffled by seed."""
    rng = Random(seed)
    kinds = list(KINDS)
    order = [kinds[i % len(kinds)] for i in range(n)]
    rng.shuffle(order)
    for i, kind in enumerate(order):
        topic, build, reason = KINDS[kind]
        marker = f"{prefix}-{kind}-{i:06d}"
        yield topic, marker.encode(), build(marker), reason
