"""Fuzzing the event parser: random bytes, random JSON and mutations of valid events never raise anything but a
validation outcome, never get an invalid event accepted, and the batch path (validate_batch + the store's SQL
format check) decides exactly as the single-event path (validate_one)."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rmm_monitor.contract import EVENT_TYPES, MAX_EVENT_BYTES, TOPIC_OF_TYPE, validate_batch, validate_one
from rmm_monitor.dev import simulate
from rmm_monitor.store import TOPIC_TABLES, Store, process_batch

from support.scenario import events as scenario_events
from support.workers import NOW

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
# Written from docs/contract.md, independently of contract/events.py's patterns: what the fuzzer holds the parser to.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
PATIENT_REF = re.compile(r"[A-Za-z0-9_-]{8,64}")


@lru_cache(maxsize=1)
def samples() -> list[dict]:
    """One valid event of every type (the simulator covers them all) plus the scripted scenario's."""
    by_type: dict[str, dict] = {}
    for e in simulate.generate(seed=5, patients=60, end=NOW) + scenario_events():
        by_type.setdefault(e["event_type"], e)
    assert set(by_type) == set(EVENT_TYPES)
    return list(by_type.values())


def required_fields(event_type: str) -> list[str]:
    cls = EVENT_TYPES[event_type]
    return [f.name for f in msgspec.structs.fields(cls) if f.required]


def known_fields(event_type: str) -> set[str]:
    return {f.name for f in msgspec.structs.fields(EVENT_TYPES[event_type])} | {"event_type"}


def is_outcome(result) -> bool:
    event, reason = result
    return (event is None) != (reason is None) and (reason is None or isinstance(reason, str) and reason)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with Store(tmp_path_factory.mktemp("fuzz") / "fuzz.duckdb") as s:
        yield s


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_give_an_outcome(raw):
    result = validate_one(raw)
    assert is_outcome(result)
    assert result[0] is None, f"random bytes accepted: {raw!r}"


@FUZZ
@given(json_values)
def test_random_json_gives_an_outcome_and_is_refused(value):
    raw = json.dumps(value).encode()
    event, reason = validate_one(raw)
    assert is_outcome((event, reason))
    assert event is None, f"random JSON accepted: {raw!r}"


MUTATIONS = (
    "drop_required",
    "unknown_field",
    "wrong_type",
    "bad_event_type",
    "bad_timestamp",
    "bad_patient_ref",
    "oversize",
    "pii",
)


@st.composite
def mutated(draw):
    """(raw bytes, must_reject) — one valid event, then one mutation whose effect the contract fixes."""
    base = dict(draw(st.sampled_from(samples())))
    kind = draw(st.sampled_from(MUTATIONS + ("none",)))
    etype = base["event_type"]
    if kind == "drop_required":
        base.pop(draw(st.sampled_from(required_fields(etype))))
    elif kind == "unknown_field":
        name = draw(st.text(min_size=1, max_size=20).filter(lambda n: n not in known_fields(etype)))
        base[name] = draw(json_values)
    elif kind == "pii":
        name = draw(st.sampled_from(["name", "id_number", "birth_date", "national_id", "address", "phone"]))
        assume(name not in known_fields(etype))
        base[name] = draw(st.text(min_size=1, max_size=30))
    elif kind == "wrong_type":
        field = draw(st.sampled_from(sorted(k for k in base if k not in ("event_type",))))
        current = base[field]
        if isinstance(current, bool):
            bad = st.text(max_size=5) | st.integers() | st.lists(st.booleans(), max_size=2)
        elif isinstance(current, int):
            bad = st.text(max_size=5) | st.booleans() | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
        elif isinstance(current, float):
            bad = st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2)
        elif isinstance(current, str):
            bad = st.integers() | st.booleans() | st.lists(st.text(max_size=3), max_size=2) | st.floats(allow_nan=False)
        elif isinstance(current, list):
            bad = st.text(max_size=5) | st.integers() | st.booleans()
        else:  # None: an optional field left out as null; any object is wrong there
            bad = st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2)
        base[field] = draw(bad)
    elif kind == "bad_event_type":
        base["event_type"] = draw(st.text(max_size=30).filter(lambda t: t not in EVENT_TYPES))
    elif kind == "bad_timestamp":
        value = draw(
            st.text(max_size=40)
            | st.sampled_from(
                [
                    "2026-07-01T10:00:00",
                    "2026-02-30T10:00:00Z",
                    "2026-07-01 10:00:00Z",
                    "2026-13-01T10:00:00Z",
                    "2026-07-01T24:00:00Z",
                    "2026-07-01T10:00:00+25:00",
                    "2026-07-01",
                    "T10:00:00Z",
                    "2026-07-01T10:00Z",
                ]
            )
        )
        assume(not RFC3339.fullmatch(value))
        base[draw(st.sampled_from(["occurred_at", "recorded_at"]))] = value
    elif kind == "bad_patient_ref":
        assume("patient_ref" in base)
        value = draw(st.text(max_size=70))
        assume(not PATIENT_REF.fullmatch(value))
        base["patient_ref"] = value
    elif kind == "oversize":
        base["source"] = "s" * draw(st.integers(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 100))
    raw = json.dumps(base, ensure_ascii=draw(st.booleans())).encode()
    return raw, kind != "none", etype


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=12))
def test_mutations_are_refused_and_both_paths_agree(store, batch):
    raws = [raw for raw, _, _ in batch]
    topics = [TOPIC_OF_TYPE[etype] for _, _, etype in batch]
    single = [validate_one(raw, topic) for raw, topic in zip(raws, topics)]
    for (raw, must_reject, _), result in zip(batch, single):
        assert is_outcome(result)
        if must_reject:
            assert result[0] is None, f"invalid event accepted: {raw[:300]!r}"
        else:
            assert result[1] is None, f"valid event refused ({result[1]}): {raw[:300]!r}"
    # the pipeline's path: msgspec over the whole batch, then the store's vectorised SQL check
    valid, rejects = validate_batch(raws, topics)
    assert sorted(valid + [r.index for r in rejects]) == list(range(len(raws)))
    for table in ["event_keys", *(t.name for t in TOPIC_TABLES.values())]:  # same event_ids recur across examples
        store.con.execute(f"DELETE FROM {table}").fetchall()
    outcome = process_batch(store, raws, topics)
    batch_reasons = {r.index: r.reason for r in outcome.rejects}
    assert batch_reasons == {i: reason for i, (_, reason) in enumerate(single) if reason is not None}
    accepted = {json.loads(raws[i])["event_id"] for i, (event, _) in enumerate(single) if event is not None}
    assert outcome.inserted == len(accepted)
