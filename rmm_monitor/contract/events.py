"""Event contract v1 and its additive v1.1 (docs/contract.md) as msgspec structs, and batch validation with
machine-readable reasons.

Unknown fields are rejected (forbid_unknown_fields): that is how the monitor keeps names, national ids and
other patient identity out of the store. Validation has two stages, both batch-wise: msgspec checks structure,
types, enums and ranges while decoding; the store then checks the regular-expression formats and that each
timestamp names a real instant (`sql_format_reason`), in one vectorised SQL pass over the batch.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Optional, Sequence, Union

import msgspec

MAX_EVENT_BYTES = 64 * 1024

TOPICS = ("rmm.site", "rmm.training", "rmm.infusion", "rmm.ae")
DEADLETTER_TOPIC = "rmm.deadletter"
ALERTS_TOPIC = "rmm.alerts"

# Format rules that are regular expressions are checked batch-wise in SQL by the store (vectorised), not per
# event in Python: msgspec's pattern constraints run Python's `re` once per field per event and tripled the
# validation cost. `validate_one` applies the same patterns with `re` for single events.
TIMESTAMP_PATTERN = (
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
    r"(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
# Lengths (1-64, patient_ref 8-64) are msgspec constraints of the first stage, so the patterns carry no counted
# repetition: RE2 unrolls `{0,63}` into 63 states, and compiling that cost ~2 ms per pattern per batch query.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:/-]*"
SECTION_PATTERN = r"[a-z0-9][a-z0-9_.-]*"
PATTERNS: dict[str, str] = {
    "product": ID_PATTERN,
    "site_id": ID_PATTERN,
    "hcp_id": ID_PATTERN,
    "material_id": ID_PATTERN,
    "lot_id": ID_PATTERN,
    "ae_id": ID_PATTERN,
    "related_step": SECTION_PATTERN,
    "audit_id": ID_PATTERN,
    "finding_id": ID_PATTERN,
    "assessment_id": ID_PATTERN,
    "patient_ref": r"[A-Za-z0-9_-]+",
    "country": r"[A-Z]{2}",
}
LIST_PATTERNS: dict[str, str] = {"sections": SECTION_PATTERN}
TIMESTAMP_FIELDS = ("occurred_at", "recorded_at", "due_at")

Timestamp = str
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
PatientRef = Annotated[str, msgspec.Meta(min_length=8, max_length=64)]
SectionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Grade = Annotated[int, msgspec.Meta(ge=1, le=5)]
GradingScale = Literal["ASTCT", "Lee", "Penn", "CTCAE"]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


# gc=False: a batch decodes tens of thousands of events at once; msgspec leaves a struct of scalars untracked by
# itself, but one holding a list (scope, sections) stays tracked and counts toward the cyclic collector's next
# run (with the ingest loop's former per-record tuples: ~3 us of CPU per event, GIL held). An event holds only
# strings, numbers and lists of strings, so it can never be part of a reference cycle.
class Envelope(msgspec.Struct, forbid_unknown_fields=True, tag_field="event_type", kw_only=True, gc=False):
    event_id: EventId
    schema_version: Literal[1]
    occurred_at: Timestamp
    recorded_at: Optional[Timestamp] = None
    source: Optional[Annotated[str, msgspec.Meta(max_length=128)]] = None
    product: Id
    site_id: Id


# --- rmm.site -------------------------------------------------------------------------------------------------
class SiteRegistered(Envelope, tag="site_registered"):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    country: Annotated[str, msgspec.Meta(min_length=2, max_length=2)]


class SiteCertificationChanged(Envelope, tag="site_certification_changed"):
    status: Literal["certified", "suspended", "revoked"]
    scope: list[Literal["apheresis", "thaw", "infusion", "ae_management"]]


class TocilizumabStockReported(Envelope, tag="tocilizumab_stock_reported"):
    doses_on_hand: NonNegInt


# --- rmm.training ---------------------------------------------------------------------------------------------
class MaterialVersionReleased(Envelope, tag="material_version_released"):
    material_id: Id
    version: Annotated[int, msgspec.Meta(ge=1)]
    sections: list[SectionId]


class HcpRegistered(Envelope, tag="hcp_registered"):
    hcp_id: Id
    role: Literal["prescriber", "infusion_nurse", "pharmacist", "icu", "other"]


class TrainingCompleted(Envelope, tag="training_completed"):
    hcp_id: Id
    material_id: Id
    material_version: Annotated[int, msgspec.Meta(ge=1)]
    score: Annotated[float, msgspec.Meta(ge=0, le=100)]
    passed: bool


class PatientEducationCompleted(Envelope, tag="patient_education_completed"):
    patient_ref: PatientRef
    material_id: Id
    material_version: Annotated[int, msgspec.Meta(ge=1)]


# --- rmm.infusion ---------------------------------------------------------------------------------------------
class ProductReceived(Envelope, tag="product_received"):
    patient_ref: PatientRef
    lot_id: Id
    coi_verified: bool
    temperature_excursion: bool


class ProductThawed(Envelope, tag="product_thawed"):
    patient_ref: PatientRef
    lot_id: Id


class InfusionAdministered(Envelope, tag="infusion_administered"):
    patient_ref: PatientRef
    lot_id: Id
    hcp_id: Id
    dose_within_spec: bool


class AlertCardIssued(Envelope, tag="alert_card_issued"):
    patient_ref: PatientRef
    lot_id: Optional[Id] = None


class LtfuVisit(Envelope, tag="ltfu_visit"):
    patient_ref: PatientRef
    visit_no: NonNegInt
    due_at: Timestamp
    status: Literal["done", "missed"]


# --- rmm.ae ---------------------------------------------------------------------------------------------------
class AeOnset(Envelope, tag="ae_onset"):
    ae_id: Id
    patient_ref: PatientRef
    term: Literal[
        "CRS",
        "ICANS",
        "infection",
        "cytopenia",
        "HLH",
        "TLS",
        "hypogammaglobulinaemia",
        "secondary_malignancy",
        "other",
    ]
    grade: Grade
    serious: bool
    related_step: Optional[SectionId] = None
    medication_error: bool = False
    grading_scale: GradingScale = "ASTCT"
    # v1.1: the AE is listed in the reference safety information (label) that applies at the site; absent means
    # unknown. It decides whether a US AE needs an expedited report (metrics/rules.yml).
    expected: Optional[bool] = None


class AeGradeChanged(Envelope, tag="ae_grade_changed"):
    ae_id: Id
    patient_ref: PatientRef
    grade: Grade
    grading_scale: GradingScale = "ASTCT"


class TocilizumabAdministered(Envelope, tag="tocilizumab_administered"):
    patient_ref: PatientRef
    ae_id: Optional[Id] = None


class AeAwareness(Envelope, tag="ae_awareness"):
    ae_id: Id
    patient_ref: PatientRef


class AeReported(Envelope, tag="ae_reported"):
    ae_id: Id
    patient_ref: PatientRef
    regulator: Literal["NMPA", "FDA", "EMA", "other"]
    report_kind: Literal["expedited", "periodic"]
    lot_id: Optional[Id] = None


class SafetyInformationUpdated(Envelope, tag="safety_information_updated"):
    sections: Annotated[list[SectionId], msgspec.Meta(min_length=1)]
    summary: Annotated[str, msgspec.Meta(max_length=500)]


# --- contract v1.1: effectiveness evidence (additive; schema_version stays 1) ---------------------------------
# Rules between fields (which format an id has depends on a kind; a count bounded by another) are checked in
# __post_init__, so msgspec refuses the event with the field's reason. These types are few per day; the
# per-event Python costs nothing measurable.
_PSEUDONYM = re.compile(r"[A-Za-z0-9_-]{8,64}")
_ID = re.compile(ID_PATTERN)


def _party(kind: str, value: str, patient_kind: str, field: str) -> None:
    """A recipient or respondent id: a patient pseudonym when `kind` is the patient kind, else a site or HCP id."""
    if not (_PSEUDONYM if kind == patient_kind else _ID).fullmatch(value):
        raise ValueError(f"bad_value:{field}")


class MaterialDistributed(Envelope, tag="material_distributed"):
    material_id: Id
    material_version: Annotated[int, msgspec.Meta(ge=1)]
    recipient_kind: Literal["site", "hcp", "patient"]
    recipient_id: Id
    channel: Literal["post", "email", "portal", "in_person", "other"]

    def __post_init__(self) -> None:
        _party(self.recipient_kind, self.recipient_id, "patient", "recipient_id")


class KnowledgeAssessed(Envelope, tag="knowledge_assessed"):
    """A knowledge survey or teach-back check: counts only (which key messages were missed is not kept)."""

    assessment_id: Id
    respondent_kind: Literal["hcp", "patient"]
    respondent_id: Id
    material_id: Id
    material_version: Annotated[int, msgspec.Meta(ge=1)]
    key_messages: Annotated[int, msgspec.Meta(ge=1, le=100)]
    key_messages_correct: Annotated[int, msgspec.Meta(ge=0, le=100)]

    def __post_init__(self) -> None:
        if self.key_messages_correct > self.key_messages:
            raise ValueError("bad_value:key_messages_correct")
        _party(self.respondent_kind, self.respondent_id, "patient", "respondent_id")


class AuditFindingRaised(Envelope, tag="audit_finding_raised"):
    audit_id: Id
    finding_id: Id
    severity: Literal["critical", "major", "minor"]
    area: Literal["apheresis", "thaw", "infusion", "ae_management", "training", "traceability", "other"]


class CapaClosed(Envelope, tag="capa_closed"):
    finding_id: Id
    verified: bool  # the effectiveness check of the corrective action passed


class PostInfusionContact(Envelope, tag="post_infusion_contact"):
    patient_ref: PatientRef
    kind: Literal["inpatient", "clinic", "phone", "video"]
    within_proximity: bool  # within the required travel distance of a qualified centre at that contact


TOPIC_OF: dict[type[Envelope], str] = {
    SiteRegistered: "rmm.site",
    SiteCertificationChanged: "rmm.site",
    TocilizumabStockReported: "rmm.site",
    MaterialVersionReleased: "rmm.training",
    HcpRegistered: "rmm.training",
    TrainingCompleted: "rmm.training",
    PatientEducationCompleted: "rmm.training",
    ProductReceived: "rmm.infusion",
    ProductThawed: "rmm.infusion",
    InfusionAdministered: "rmm.infusion",
    AlertCardIssued: "rmm.infusion",
    LtfuVisit: "rmm.infusion",
    AeOnset: "rmm.ae",
    AeGradeChanged: "rmm.ae",
    TocilizumabAdministered: "rmm.ae",
    AeAwareness: "rmm.ae",
    AeReported: "rmm.ae",
    SafetyInformationUpdated: "rmm.ae",
    MaterialDistributed: "rmm.training",
    KnowledgeAssessed: "rmm.training",
    AuditFindingRaised: "rmm.site",
    CapaClosed: "rmm.site",
    PostInfusionContact: "rmm.infusion",
}
EVENT_TYPES: dict[str, type[Envelope]] = {str(cls.__struct_config__.tag): cls for cls in TOPIC_OF}
TOPIC_OF_TYPE: dict[str, str] = {tag: TOPIC_OF[cls] for tag, cls in EVENT_TYPES.items()}
# The tagged union of every event type, built from the table above (what msgspec decodes into).
Event: Any = Union[tuple(TOPIC_OF)]  # a Union built at run time from the table above
_decode_one = msgspec.json.Decoder(Event).decode
_decode_many = msgspec.json.Decoder(list[Event]).decode


# --- reasons --------------------------------------------------------------------------------------------------
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")
_MISSING = re.compile(r"Object missing required field `([^`]*)`")
_AT = re.compile(r" - at `\$\.?([A-Za-z0-9_]*)")
_RULE = re.compile(r"(bad_value:[a-z_]+)(?: - at |$)")


def _field_name(name: str) -> str:
    """Field names come from the sender: keep them short and printable so the reason stays a safe token."""
    return re.sub(r"[^A-Za-z0-9_.-]", "?", name)[:64]


def reason_for(error: Exception) -> str:
    """Map a msgspec error to a machine-readable reason `code[:field]`."""
    msg = str(error)
    if isinstance(error, msgspec.ValidationError):
        if m := _RULE.match(msg):  # raised by a __post_init__ rule between fields
            return m.group(1)
        if m := _UNKNOWN.search(msg):
            return f"unknown_field:{_field_name(m.group(1))}"
        if m := _MISSING.search(msg):
            return f"missing_field:{m.group(1)}"
        m = _AT.search(msg)
        field = m.group(1) if m else ""
        if field == "event_type":
            return "unknown_event_type"
        if field in TIMESTAMP_FIELDS:
            return f"bad_timestamp:{field}"
        if field == "schema_version":
            return "unsupported_schema_version"
        if msg.startswith("Expected `object`"):
            return "not_an_object"
        if ", got `" in msg:
            return f"bad_type:{field}"
        return f"bad_value:{field}"
    if "malformed" in msg and "invalid character" in msg and "byte 0" in msg:
        return "bad_json"
    return "bad_json"


def reason_code(reason: str) -> str:
    """The bounded part of a reason (before ':'), used as a Prometheus label value."""
    return reason.split(":", 1)[0]


class Reject(msgspec.Struct, frozen=True):
    index: int
    reason: str


def _check_one(raw: bytes, topic: Optional[str]):
    if len(raw) > MAX_EVENT_BYTES:
        return None, "too_large"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "bad_encoding"
    try:
        event = _decode_one(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return None, reason_for(exc)
    if topic is not None and TOPIC_OF[type(event)] != topic:
        return None, f"wrong_topic:{event.__struct_config__.tag}"
    return event, None


# Records per msgspec call. One call over a whole 50 k-record batch held the GIL for ~0.1 s, and the store thread
# waited that long each time one of its DuckDB statements returned; a chunk takes a few ms. A chunk that fails is
# the only part decoded record by record, so 1 % poison no longer sends every batch down the slow path.
VALIDATE_CHUNK = 1024


def validate_batch(
    values: list[bytes], topics: Optional[Sequence[Optional[str]]] = None
) -> tuple[list[int], list[Reject]]:
    """Validate a batch of raw events. Returns (indexes of valid events, rejects).

    The common case, a chunk of records with nothing wrong, is decoded in one msgspec call over the joined bytes;
    only a chunk that fails is decoded record by record to find out which events are bad and why.
    `topics[i]` (or None) is the topic record i came from; an event on the wrong topic is rejected.
    """
    valid: list[int] = []
    rejects: list[Reject] = []
    for start in range(0, len(values), VALIDATE_CHUNK):
        end = min(start + VALIDATE_CHUNK, len(values))
        if _chunk_is_valid(values, topics, start, end):
            valid += range(start, end)
            continue
        for i in range(start, end):
            _, reason = _check_one(values[i], topics[i] if topics is not None else None)
            if reason is None:
                valid.append(i)
            else:
                rejects.append(Reject(i, reason))
    return valid, rejects


def _chunk_is_valid(values: list[bytes], topics: Optional[Sequence[Optional[str]]], start: int, end: int) -> bool:
    chunk = values[start:end]
    if not all(len(v) <= MAX_EVENT_BYTES for v in chunk):
        return False
    try:
        events = _decode_many(b"[" + b",".join(chunk) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False
    # Joining can hide a bad record (e.g. a value that is itself two JSON objects separated by a comma), so the
    # fast path is trusted only if it yields exactly one event per record.
    if len(events) != end - start:
        return False
    if topics is None:
        return True
    return all(t is None or TOPIC_OF[type(e)] == t for e, t in zip(events, topics[start:end]))


def sql_format_reason(typed: dict[str, str]) -> str:
    """SQL expression: the first format rule a row (raw string columns) breaks, as a reason, or NULL. `typed` maps
    each timestamp field to a column holding its `try_cast(... AS TIMESTAMPTZ)`, so the cast done for the check
    is the one stored."""
    cases = []
    for f in TIMESTAMP_FIELDS:
        cases.append(
            f"WHEN {f} IS NOT NULL AND (NOT regexp_full_match({f}, '{TIMESTAMP_PATTERN}') "
            f"OR {typed[f]} IS NULL) THEN 'bad_timestamp:{f}'"
        )
    for f, pattern in PATTERNS.items():
        cases.append(f"WHEN {f} IS NOT NULL AND NOT regexp_full_match({f}, '{pattern}') THEN 'bad_value:{f}'")
    for f, pattern in LIST_PATTERNS.items():
        cases.append(
            f"WHEN {f} IS NOT NULL AND NOT list_bool_and(list_transform({f}, lambda x: "
            f"regexp_full_match(x, '{pattern}'))) THEN 'bad_value:{f}'"
        )
    return f"CASE {' '.join(cases)} END"


_COMPILED = {f: re.compile(p) for f, p in PATTERNS.items()}
_COMPILED_LIST = {f: re.compile(p) for f, p in LIST_PATTERNS.items()}
_TS = re.compile(TIMESTAMP_PATTERN)


def format_reason(event) -> Optional[str]:
    """The same format rules as `sql_format_reason`, for one decoded event, in Python."""
    for f in TIMESTAMP_FIELDS:
        value = getattr(event, f, None)
        if value is not None:
            if not _TS.fullmatch(value):
                return f"bad_timestamp:{f}"
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return f"bad_timestamp:{f}"
    for f, rx in _COMPILED.items():
        value = getattr(event, f, None)
        if value is not None and not rx.fullmatch(value):
            return f"bad_value:{f}"
    for f, rx in _COMPILED_LIST.items():
        values = getattr(event, f, None)
        if values is not None and not all(rx.fullmatch(v) for v in values):
            return f"bad_value:{f}"
    return None


def validate_one(raw: bytes, topic: Optional[str] = None):
    """Validate one event through both stages; returns (event struct or None, reason or None).
    For tests, the fuzzer and tools; the pipeline uses `validate_batch` plus the store's SQL check."""
    event, reason = _check_one(raw, topic)
    if event is not None:
        reason = format_reason(event)
        if reason is not None:
            event = None
    return event, reason
