"""A small scripted CAR-T programme whose four headline KPIs are computed by hand (see EXPECTED).

Two sites of CTX-19 in 2026Q3. Every event carries recorded_at one minute after occurred_at, so KPI results do
not depend on when the test ran.
"""

from __future__ import annotations

from datetime import datetime, timedelta

BASE = {"schema_version": 1, "product": "CTX-19"}


def _ev(n: int, event_type: str, at: str, site: str = "S1", **fields) -> dict:
    t = datetime.fromisoformat(at.replace("Z", "+00:00"))
    rec = (t + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    return {
        "event_id": f"sc-{n:03d}",
        "event_type": event_type,
        **BASE,
        "occurred_at": at,
        "recorded_at": rec,
        "site_id": site,
        **fields,
    }


def events() -> list[dict]:
    inf = dict(dose_within_spec=True)
    ev = [
        _ev(
            1,
            "training_completed",
            "2026-07-01T09:00:00Z",
            hcp_id="H1",
            material_id="MAT-HCP",
            material_version=1,
            score=92,
            passed=True,
        ),
        _ev(
            2,
            "training_completed",
            "2026-07-01T09:00:00Z",
            site="S2",
            hcp_id="H2",
            material_id="MAT-HCP",
            material_version=1,
            score=40,
            passed=False,
        ),
        # card printed before the infusion is recorded: out of order, still inside [infusion - 30 d, + 24 h]
        _ev(3, "alert_card_issued", "2026-07-02T12:00:00Z", patient_ref="PT-000001", lot_id="LOT-1"),
        _ev(
            4,
            "infusion_administered",
            "2026-07-02T10:00:00Z",
            patient_ref="PT-000001",
            lot_id="LOT-1",
            hcp_id="H1",
            **inf,
        ),
        _ev(
            5,
            "infusion_administered",
            "2026-07-03T10:00:00Z",
            patient_ref="PT-000002",
            lot_id="LOT-2",
            hcp_id="H1",
            **inf,
        ),
        _ev(6, "alert_card_issued", "2026-07-06T10:00:00Z", patient_ref="PT-000002", lot_id="LOT-2"),  # 72 h: late
        _ev(
            7,
            "infusion_administered",
            "2026-07-04T10:00:00Z",
            site="S2",
            patient_ref="PT-000003",
            lot_id="LOT-3",
            hcp_id="H2",
            **inf,
        ),  # untrained
        # CRS A1: grade 2 at onset, tocilizumab after 60 min (dose produced before the onset: out of order)
        _ev(8, "tocilizumab_administered", "2026-07-02T21:00:00Z", patient_ref="PT-000001", ae_id="A1"),
        _ev(
            9,
            "ae_onset",
            "2026-07-02T20:00:00Z",
            ae_id="A1",
            patient_ref="PT-000001",
            term="CRS",
            grade=2,
            serious=True,
        ),
        # CRS A2: grade 1, grade 3 at 10:00, tocilizumab at 13:30 (210 min): late
        _ev(
            10,
            "ae_onset",
            "2026-07-05T08:00:00Z",
            site="S2",
            ae_id="A2",
            patient_ref="PT-000003",
            term="CRS",
            grade=1,
            serious=True,
        ),
        _ev(11, "ae_grade_changed", "2026-07-05T10:00:00Z", site="S2", ae_id="A2", patient_ref="PT-000003", grade=3),
        _ev(12, "tocilizumab_administered", "2026-07-05T13:30:00Z", site="S2", patient_ref="PT-000003"),
        # reporting: A1 after 7 days (on time), A2 after 24 days (serious: late)
        _ev(13, "ae_awareness", "2026-07-03T00:00:00Z", ae_id="A1", patient_ref="PT-000001"),
        _ev(
            14,
            "ae_reported",
            "2026-07-10T00:00:00Z",
            ae_id="A1",
            patient_ref="PT-000001",
            regulator="NMPA",
            report_kind="expedited",
            lot_id="LOT-1",
        ),
        _ev(15, "ae_awareness", "2026-07-06T00:00:00Z", site="S2", ae_id="A2", patient_ref="PT-000003"),
        _ev(
            16,
            "ae_reported",
            "2026-07-30T00:00:00Z",
            site="S2",
            ae_id="A2",
            patient_ref="PT-000003",
            regulator="NMPA",
            report_kind="expedited",
            lot_id="LOT-3",
        ),
    ]
    duplicates = [dict(ev[3]), dict(ev[8])]  # at-least-once from the source: same event_id again
    return ev + duplicates


INVALID = [
    (
        "rmm.infusion",
        {
            "event_id": "bad-1",
            "event_type": "alert_card_issued",
            **BASE,
            "site_id": "S1",
            "occurred_at": "2026-07-02T12:00:00Z",
            "patient_ref": "PT-000009",
            "patient_name": "Li Si",
        },
        "unknown_field:patient_name",
    ),
]

AS_OF = "2026-11-01T00:00:00Z"
PERIOD = "2026Q3"
EXPECTED = {  # product-wide rows of CTX-19, 2026Q3, hand-computed
    "training_before_first_infusion": {
        "numerator": 1,
        "denominator": 2,
        "pending": 0,
        "value": 0.5,
        "stats": {"untrained_hcps": ["H2"]},
    },
    "alert_card_issued": {
        "numerator": 1,
        "denominator": 3,
        "pending": 0,
        "value": 0.3333,
        "stats": {"lot_match_rate": 1.0},
    },
    "time_to_tocilizumab": {
        "numerator": 1,
        "denominator": 2,
        "pending": 0,
        "value": 0.5,
        "stats": {"median_minutes": 135.0, "p90_minutes": 195.0},
    },
    "ae_reporting_timeliness": {
        "numerator": 1,
        "denominator": 2,
        "pending": 0,
        "value": 0.5,
        "stats": {"median_days": 15.5, "p90_days": 22.3},
    },
}
