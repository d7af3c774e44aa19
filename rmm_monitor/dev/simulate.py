"""A realistic, deterministic CAR-T programme: the events of contract v1 and v1.1 as plain dicts.

`generate()` simulates a marketing authorisation holder (MAH) running two or three CAR-T products across a
handful of certified treatment centres in China: material releases and HCP training, site certification and
tocilizumab stock, per patient the chain from education and product receipt to infusion, alert card, CRS /
ICANS / other adverse events with tocilizumab, MAH awareness and regulatory reports, and long-term follow-up.
Then an international arm (`INTERNATIONAL_SITES`: two US and two EU centres, 20 % more patients) whose centres
show how the rule sets by jurisdiction and date judge them, and the effectiveness evidence of contract v1.1 for
every centre (evidence.py: distributions, knowledge surveys, audits and CAPA, post-infusion contacts).

Products CTX-19 (CD19), BCM-07 (BCMA) and CTX-22 (CD22, launched 40 % into the span); eight Chinese centres;
for large runs (more than 2 400 patients) extra strong Chinese centres are added, about 300 patients each.
Programme-level events (material releases, safety information) carry `site_id = PROGRAMME_SITE_ID` ("MAH-HQ").

Most sites do things right; the sites in `WEAK_SITES` fail in one documented way each, the weak spots of
`EVIDENCE_WEAK_SPOTS` in the evidence, and `INTERNATIONAL_STORIES` tell what each centre abroad shows, so the
KPIs of the catalog show real signals. With 40 or more patients a few patients are planned so that each weakness
shows even in a small run (NJ-07's thawing cluster, the infusion at XA-08 while suspended, CD-05's grade-2 CRS).
Everything is drawn from `random.Random(seed)`: the same arguments give the same events, byte for byte. The
international arm and the evidence come after every Chinese patient, from the same stream: the Chinese v1 events
are the ones a generator without them would give (only which events are re-sent as duplicates differs).

Size: about 32 events per patient in a 270-day programme (about 12 of them post-infusion contacts; patients are
still in follow-up at `end`); 1 M events ~ 31 000 patients. The US centres infuse on both sides of 2025-06-26
only when the span covers that day (the demo's starts in December 2024).

Delivery realism: `recorded_at` lags `occurred_at` by minutes to hours, a `late_rate` fraction arrives days
late, the list is in `recorded_at` order (so `occurred_at` is sometimes out of order), and a `duplicate_rate`
fraction is emitted a second time, identical, further down (at-least-once sources).

Performance: plain dicts, integer epoch seconds while generating, one sort, one formatting pass; no
validation inside `generate()` (the tests validate every event against the contract).
"""

from __future__ import annotations

import json
import math
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from random import Random
from typing import Callable, Iterable, NamedTuple, Optional

from rmm_monitor.contract import TOPIC_OF_TYPE
from rmm_monitor.core import clock
from rmm_monitor.core.errors import ConfigError

from .evidence import EVIDENCE_WEAK_SPOTS, generate_evidence

__all__ = [
    "generate",
    "to_jsonl",
    "topic_of",
    "WEAK_SITES",
    "WEAK_SITE_CATCHERS",
    "STRONG_SITES",
    "PRODUCTS",
    "PROGRAMME_SITE_ID",
    "SITES",
    "INTERNATIONAL_SITES",
    "INTERNATIONAL_STORIES",
    "EVIDENCE_WEAK_SPOTS",
]

MIN, HOUR, DAY = 60, 3600, 86400

# Programme-level events (material releases, safety information) need an envelope site_id; they come from the
# MAH's headquarters, not from a treatment centre.
PROGRAMME_SITE_ID = "MAH-HQ"

# --- the programme -------------------------------------------------------------------------------------------
# Per product: patient share, launch (fraction of the span), CRS/ICANS incidence and peak-grade distribution
# (grades 1..5), median onset, when material v2 is released (fraction of the span, None = no v2 in the span).
PRODUCTS: dict[str, dict] = {
    "CTX-19": dict(
        target="CD19",
        code="CTX19",
        share=0.55,
        launch=0.0,
        crs=0.85,
        crs_peak=(0.50, 0.37, 0.10, 0.025, 0.005),
        crs_onset_h=48.0,
        icans=0.32,
        icans_peak=(0.42, 0.30, 0.20, 0.07, 0.01),
        icans_onset_h=120.0,
        v2=0.55,
        safety=(
            0.50,
            ["secondary_malignancy", "ltfu"],
            "T-cell malignancies reported after CAR-T therapy; monitor life-long for secondary "
            "malignancies and report them.",
        ),
    ),
    "BCM-07": dict(
        target="BCMA",
        code="BCM07",
        share=0.33,
        launch=0.0,
        crs=0.84,
        crs_peak=(0.56, 0.34, 0.08, 0.015, 0.005),
        crs_onset_h=26.0,
        icans=0.22,
        icans_peak=(0.50, 0.28, 0.17, 0.045, 0.005),
        icans_onset_h=72.0,
        v2=0.50,
        safety=(
            0.45,
            ["icans_management", "delayed_neurotoxicity"],
            "Delayed movement and neurocognitive toxicity (parkinsonism) reported after BCMA "
            "CAR-T; monitor neurological signs beyond day 28.",
        ),
    ),
    "CTX-22": dict(
        target="CD22",
        code="CTX22",
        share=0.12,
        launch=0.40,
        crs=0.76,
        crs_peak=(0.50, 0.38, 0.09, 0.025, 0.005),
        crs_onset_h=40.0,
        icans=0.28,
        icans_peak=(0.45, 0.30, 0.18, 0.06, 0.01),
        icans_onset_h=110.0,
        v2=None,
        safety=None,
    ),
}
HCP_SECTIONS_V1 = [
    "product_overview",
    "thawing",
    "dosing",
    "crs_management",
    "icans_management",
    "tocilizumab_availability",
    "ae_reporting",
    "alert_card",
    "ltfu",
]
PATIENT_SECTIONS_V1 = ["what_is_car_t", "crs_symptoms", "icans_symptoms", "alert_card", "driving_restrictions", "ltfu"]

# (site_id, name, weight, products, activation as a fraction of the span)
_Site = tuple[str, str, float, tuple[str, ...], float]
SITES: list[_Site] = [
    ("SH-01", "Shanghai East Cell Therapy Centre (simulated)", 1.6, ("CTX-19", "BCM-07", "CTX-22"), 0.0),
    ("BJ-02", "Beijing North Haematology Centre (simulated)", 1.5, ("CTX-19", "BCM-07", "CTX-22"), 0.0),
    ("GZ-03", "Guangzhou River Oncology Hospital (simulated)", 1.1, ("CTX-19", "BCM-07"), 0.01),
    ("WH-04", "Wuhan Lakes Haematology Hospital (simulated)", 1.3, ("CTX-19", "BCM-07"), 0.01),
    ("CD-05", "Chengdu Garden Cell Therapy Unit (simulated)", 1.1, ("CTX-19", "BCM-07"), 0.02),
    ("HZ-06", "Hangzhou Bay Cancer Centre (simulated)", 1.1, ("CTX-19", "BCM-07"), 0.02),
    ("NJ-07", "Nanjing Hills Haematology Centre (simulated)", 0.9, ("CTX-19", "CTX-22"), 0.03),
    ("XA-08", "Xi'an Wall Blood Disease Hospital (simulated)", 0.8, ("CTX-19",), 0.30),
]
STRONG_SITES = ("SH-01", "BJ-02")

WEAK_SITES: dict[str, str] = {
    "GZ-03": "late or missing alert cards: about a third issued more than 24 h after infusion, about 1 in 10 "
    "never issued, and cards with a null or wrong lot_id",
    "WH-04": "four staff who joined mid-programme infuse without passed training (one never trained, others "
    "failed or trained weeks after their first infusion); slow retraining on material v2",
    "CD-05": "slow tocilizumab: median about 170 min from CRS grade 2, most first doses later than 120 min",
    "HZ-06": "late AE reports (many serious reports 16-40 days after awareness, non-serious past 30 days) and "
    "null lot_id on about 40 % of reports",
    "NJ-07": "cluster of thawing errors: ae_onset with related_step 'thawing' and medication_error true in a "
    "~6-week window mid-programme (>= 3 within 90 days, CTX-19)",
    "XA-08": "joins late; tocilizumab stock reported irregularly (gaps over 7 days) and often below 2 doses; "
    "certification suspended for ~3 weeks mid-programme and one infusion given during the suspension",
}

# What is meant to catch each weak site: KPIs (a kpi_breach alert on that site) or "signal:section" (an alert of
# that signal about that section, e.g. the AE cluster on thawing). `rmm demo` checks each site got an alert.
WEAK_SITE_CATCHERS: dict[str, tuple[str, ...]] = {
    "GZ-03": ("alert_card_issued",),
    "WH-04": ("training_before_first_infusion", "trained_on_current_material"),
    "CD-05": ("time_to_tocilizumab",),
    "HZ-06": ("ae_reporting_timeliness", "ae_lot_traceability"),
    "NJ-07": ("ae_cluster_by_step:thawing",),
    "XA-08": ("infusion_at_certified_site", "tocilizumab_available_at_infusion"),
}

# The international arm: centres outside China, treated after the Chinese programme from the same random stream
# (so the Chinese events are the same with or without it). Each shows how a rule set by jurisdiction and date
# changes the judgement (metrics/rules/rule_sets.yml); their patients carry "X" in their pseudonyms and lots.
INTERNATIONAL_SITES: list[_Site] = [
    ("US-11", "Boston Harbor Cell Therapy Center (simulated)", 1.0, ("CTX-19", "BCM-07"), 0.0),
    ("US-12", "Houston Bayou Cancer Center (simulated)", 0.9, ("CTX-19",), 0.02),
    ("DE-13", "Munich Isar Haematology Clinic (simulated)", 1.0, ("CTX-19", "BCM-07"), 0.0),
    ("FR-14", "Lyon Confluence Cell Therapy Unit (simulated)", 0.8, ("CTX-19",), 0.04),
]
SITE_COUNTRY: dict[str, str] = {"US-11": "US", "US-12": "US", "DE-13": "DE", "FR-14": "FR"}  # others: CN
INTERNATIONAL_SHARE = 0.2  # international patients per Chinese patient
ARM_CODE = "X"  # in the international patients' pseudonyms, lots and AE ids
EU_COUNTRIES = ("DE", "FR")  # the EU countries of the simulated sites
# The day the US CAR-T REMS ended (the rule sets change on it); the simulated US centres straddle it when the
# simulated span does (the demo's starts in December 2024).
US_REMS_END = int(datetime(2025, 6, 26, tzinfo=timezone.utc).timestamp())

INTERNATIONAL_STORIES: dict[str, str] = {
    "US-11": "stops renewing its REMS certification after the REMS ended (revoked about 7 weeks after 2025-06-26) "
    "and goes on infusing: under the US rules from 2025-06-26 those infusions are not units of "
    "infusion_at_certified_site; serious AEs on the label (expected) get periodic, not 15-day, reports",
    "US-12": "patients go home after about two weeks: a failure of post_infusion_monitoring before 2025-06-26 "
    "(4 weeks near the centre under the REMS), on time after it (2 weeks); serious unexpected AEs reported in "
    "about a week, expected ones periodically",
    "DE-13": "keeps one dose of tocilizumab per patient (enough under the EU conditions, not under the NMPA "
    "rules) and reports non-serious AEs after 35-80 days (on time on the EMA clock of 90 days); daily contact "
    "for 10 days",
    "FR-14": "about half of the patients leave the centre's area between day 11 and day 20 (EU: 4 weeks near the "
    "centre) -> post_infusion_monitoring failures",
}

# Extra, strong sites added when a large run needs more centres (about 300 patients per centre).
_EXTRA_CITIES = [
    "TJ",
    "CQ",
    "SZ",
    "XM",
    "QD",
    "JN",
    "CS",
    "ZZ",
    "SY",
    "DL",
    "KM",
    "NN",
    "FZ",
    "HF",
    "NC",
    "TY",
    "SJ",
    "HB",
    "CC",
    "LZ",
    "GY",
    "HK",
    "NB",
    "WX",
    "SU",
    "YT",
    "WF",
    "LY",
    "XZ",
    "TS",
]
_BASE_PATIENTS_PER_SITE = 300

_CODE = {
    "site_registered": "sreg",
    "site_certification_changed": "scert",
    "tocilizumab_stock_reported": "stock",
    "material_version_released": "mat",
    "hcp_registered": "hcp",
    "training_completed": "train",
    "patient_education_completed": "edu",
    "product_received": "recv",
    "product_thawed": "thaw",
    "infusion_administered": "inf",
    "alert_card_issued": "card",
    "ltfu_visit": "ltfu",
    "ae_onset": "ae",
    "ae_grade_changed": "aeg",
    "tocilizumab_administered": "toci",
    "ae_awareness": "aware",
    "ae_reported": "rep",
    "safety_information_updated": "safety",
    "material_distributed": "dist",
    "knowledge_assessed": "know",
    "audit_finding_raised": "audit",
    "capa_closed": "capa",
    "post_infusion_contact": "contact",
}
_SCOPE = ["apheresis", "thaw", "infusion", "ae_management"]
_LTFU_DAYS = [30 * k for k in range(1, 13)] + [360 + 91 * k for k in range(1, 60)]  # monthly in year 1, then quarterly
_LAGN = 4096


def _utc_seconds(end: Optional[datetime]) -> int:
    if end is None:
        now = clock.now()
        return int(now.timestamp()) // 60 * 60
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return int(end.timestamp())


class _Sim:
    def __init__(self, seed: int, end: int, days: int, late_rate: float):
        self.seed = seed
        self.rng = Random(seed)
        self.end = end
        self.span = int(days * DAY)
        self.start = end - self.span
        self.late_rate = late_rate
        self.events: list[dict] = []
        self.n = 0
        # what the effectiveness evidence (evidence.py) is generated from, collected without drawing
        self.hcps: list[tuple[str, str, str, int, Optional[int]]] = []  # (site, product, hcp_id, registered, passed)
        self.patients: list[_Patient] = []
        lr = Random(f"lags-{seed}")
        # minutes to a few hours: site/LMS systems (median ~12 min), safety database (median ~50 min)
        self.lag_fast = [min(int(60 * lr.lognormvariate(math.log(12), 1.1)), 8 * HOUR) for _ in range(_LAGN)]
        self.lag_ae = [min(int(60 * lr.lognormvariate(math.log(50), 1.0)), 20 * HOUR) for _ in range(_LAGN)]

    def at(self, frac: float) -> int:
        return self.start + int(frac * self.span)

    # every event goes through here
    def emit(self, etype: str, t: int, product: str, site: str, source: str, fields: dict, ae: bool = False):
        if t > self.end:
            return
        r = self.rng.random
        if r() < self.late_rate:
            rec = t + DAY + int(r() * 20 * DAY)
        else:
            rec = t + (self.lag_ae if ae else self.lag_fast)[int(r() * _LAGN)]
        if rec > self.end:
            rec = self.end
        self.n += 1
        ev = {
            "event_id": f"{_CODE[etype]}-{self.seed}-{self.n:08d}",
            "event_type": etype,
            "schema_version": 1,
            "occurred_at": t,
            "recorded_at": rec,
            "source": source,
            "product": product,
            "site_id": site,
        }
        ev.update(fields)
        self.events.append(ev)


def _pick(r: float, probs: Iterable[float]) -> int:
    """Index i (0-based) drawn from a discrete distribution, given a uniform r."""
    acc = 0.0
    i = -1
    for i, p in enumerate(probs):
        acc += p
        if r < acc:
            return i
    return i


# --- the generator -------------------------------------------------------------------------------------------
def generate(
    seed: int = 7,
    patients: int = 200,
    end: datetime | None = None,
    days: int = 270,
    duplicate_rate: float = 0.01,
    late_rate: float = 0.02,
    dq_faults: bool = False,
) -> list[dict]:
    """Events of a simulated CAR-T programme over [end - days, end], as contract-v1 dicts in recorded_at order.

    `end` defaults to now (UTC, truncated to the minute); a naive `end` is taken as UTC. Nothing occurs or is
    recorded after `end`. `duplicate_rate` of the events appear twice (same event_id, identical content, the
    copy later in the list); `late_rate` of them are recorded days after they occurred. `dq_faults` adds the
    schema-valid data problems of `DQ_FAULTS` (off by default: they exist for the data-quality suites and
    change a few KPI units).
    """
    if patients < 0 or days <= 0:
        raise ConfigError("patients must be >= 0 and days > 0")
    sim = _Sim(seed, _utc_seconds(end), days, late_rate)
    # The steps draw from the one random stream in this order; reordering them changes every event after.
    materials = _release_materials(sim)
    sites = _plan_sites(patients)
    site_prod = _open_sites(sim, sites, materials)
    _train_staff(sim, sites, site_prod, materials)
    _treat_patients(sim, patients, sites, site_prod, materials)
    # after every Chinese patient, so their events are the same with or without what follows
    site_prod.update(_treat_international(sim, round(INTERNATIONAL_SHARE * patients), materials))
    generate_evidence(sim, materials, site_prod, EU_COUNTRIES)
    return _deliver(sim, dq_faults, duplicate_rate)


class _Materials:
    """When each product's educational materials were released (v1 at launch, v2 mid-programme for some)."""

    def __init__(self) -> None:
        self.launch: dict[str, int] = {}
        self.v2: dict[str, Optional[int]] = {}
        self.releases: list[tuple[str, str, int, int]] = []  # (product, material_id, version, released at)

    def version_at(self, p: str, t: int) -> int:
        v2 = self.v2[p]
        return 2 if v2 is not None and t >= v2 else 1


class _Candidate(NamedTuple):
    """A prescriber or infusion nurse who may infuse one product at one site."""

    eligible: Optional[int]  # from when they infuse
    hcp: str
    role: str
    rogue: bool  # WH-04's mid-programme joiners: they infuse whether trained or not
    ready: Optional[int]  # when they passed training (None: never)


@dataclass
class _SiteProduct:
    """One site's set-up for one product."""

    reg: int
    cert: int
    first_ok: int  # the first infusion, a week after certification
    cands: list[_Candidate] = field(default_factory=list)
    status: list[tuple[int, str]] = field(default_factory=list)  # certification changes (time, status) in order

    def certified_at(self, t: int) -> bool:
        now = [s for at, s in self.status if at <= t]
        return bool(now) and now[-1] == "certified"


# staff of a site: (hcp_id, role, join time (None: from the start), kind); kind: None normal, "never", "late",
# "fail_late" (WH-04's joiners)
_Staff = tuple[str, str, Optional[int], Optional[str]]
_SiteProducts = dict[tuple[str, str], _SiteProduct]


# ---- products and materials ----
def _release_materials(sim: _Sim) -> _Materials:
    materials = _Materials()
    for p, spec in PRODUCTS.items():
        launch = sim.at(spec["launch"])
        materials.launch[p] = launch
        _release_v1(sim, p, launch)
        materials.releases += [(p, f"MAT-HCP-{p}", 1, launch), (p, f"MAT-PAT-{p}", 1, launch + 2 * HOUR)]
        _update_safety_information(sim, p, spec)
        v2 = materials.v2[p] = _release_v2(sim, p, spec) if spec["v2"] is not None else None
        if v2 is not None:
            materials.releases += [(p, f"MAT-HCP-{p}", 2, v2), (p, f"MAT-PAT-{p}", 2, v2 + 3 * HOUR)]
    materials.releases = [r for r in materials.releases if r[3] <= sim.end]
    return materials


def _release_v1(sim: _Sim, p: str, launch: int) -> None:
    emit = sim.emit
    emit(
        "material_version_released",
        launch,
        p,
        PROGRAMME_SITE_ID,
        "mah-rmm",
        {"material_id": f"MAT-HCP-{p}", "version": 1, "sections": list(HCP_SECTIONS_V1)},
    )
    emit(
        "material_version_released",
        launch + 2 * HOUR,
        p,
        PROGRAMME_SITE_ID,
        "mah-rmm",
        {"material_id": f"MAT-PAT-{p}", "version": 1, "sections": list(PATIENT_SECTIONS_V1)},
    )


def _update_safety_information(sim: _Sim, p: str, spec: dict) -> None:
    if spec["safety"] is not None:
        frac, sections, summary = spec["safety"]
        sim.emit(
            "safety_information_updated",
            sim.at(frac) + int(sim.rng.random() * DAY),
            p,
            PROGRAMME_SITE_ID,
            "mah-pv",
            {"sections": list(sections), "summary": summary},
        )


def _release_v2(sim: _Sim, p: str, spec: dict) -> int:
    """Material v2 adds the sections of the product's safety information update; returns its release time."""
    v2 = sim.at(spec["v2"]) + int(sim.rng.random() * 2 * DAY)
    extra = spec["safety"][1] if spec["safety"] else []
    sim.emit(
        "material_version_released",
        v2,
        p,
        PROGRAMME_SITE_ID,
        "mah-rmm",
        {
            "material_id": f"MAT-HCP-{p}",
            "version": 2,
            "sections": HCP_SECTIONS_V1 + [s for s in extra if s not in HCP_SECTIONS_V1],
        },
    )
    sim.emit(
        "material_version_released",
        v2 + 3 * HOUR,
        p,
        PROGRAMME_SITE_ID,
        "mah-rmm",
        {
            "material_id": f"MAT-PAT-{p}",
            "version": 2,
            "sections": PATIENT_SECTIONS_V1 + ["secondary_malignancy" if p != "BCM-07" else "neuro_symptoms"],
        },
    )
    return v2


# ---- sites ----
def _plan_sites(patients: int) -> list[_Site]:
    """SITES, plus extra strong centres when the run has more patients than about 300 per centre."""
    sites = list(SITES)
    n_extra = max(0, math.ceil((patients - _BASE_PATIENTS_PER_SITE * len(SITES)) / _BASE_PATIENTS_PER_SITE))
    for k in range(n_extra):
        c = len(_EXTRA_CITIES)
        city = _EXTRA_CITIES[k] if k < c else f"CN{k // c}{_EXTRA_CITIES[k % c]}"
        sid = f"{city}-{k + 9:02d}"
        prods = ("CTX-19", "BCM-07") if k % 3 else ("CTX-19",)
        sites.append(
            (sid, f"{city} Regional Cell Therapy Centre {k + 9} (simulated)", 1.0, prods, 0.05 + 0.45 * (k % 10) / 10)
        )
    return sites


def _suspension(sim: _Sim) -> tuple[int, int]:
    """XA-08's certification is suspended over this span (about 3 weeks of a 270-day programme)."""
    return sim.at(0.68), sim.at(0.76)


def _open_sites(sim: _Sim, sites: list[_Site], materials: _Materials) -> _SiteProducts:
    """Registration, certification and tocilizumab stock of every site for each of its products."""
    r = sim.rng.random
    site_prod: _SiteProducts = {}
    for sid, name, _w, prods, act in sites:
        for p in prods:
            reg = max(sim.at(act), materials.launch[p]) + int(r() * 3 * DAY)
            cert = reg + int((4 + 6 * r()) * DAY)
            sp = site_prod[(sid, p)] = _SiteProduct(reg=reg, cert=cert, first_ok=cert + 7 * DAY)
            country = SITE_COUNTRY.get(sid, "CN")
            sim.emit("site_registered", reg, p, sid, "site-portal", {"name": name, "country": country})
            _certify(sim, p, sid, sp)
            _report_stock(sim, p, sid, cert)
    return site_prod


def _certify(sim: _Sim, p: str, sid: str, sp: _SiteProduct) -> None:
    changes = [(sp.cert, "certified")]
    if sid == "XA-08":
        suspension = _suspension(sim)
        changes += [(suspension[0], "suspended"), (suspension[1], "certified")]
    if sid == "US-11" and sp.cert < US_REMS_END:  # the REMS certification is not renewed once the REMS is gone
        changes.append((US_REMS_END + 50 * DAY, "revoked"))
    for t, status in changes:
        if t <= sim.end:
            sp.status.append((t, status))
        sim.emit("site_certification_changed", t, p, sid, "site-portal", {"status": status, "scope": list(_SCOPE)})


def _report_stock(sim: _Sim, p: str, sid: str, cert: int) -> None:
    """Tocilizumab stock, reported every few days from just before certification."""
    r = sim.rng.random
    t = cert - DAY
    weak_stock = sid == "XA-08"
    one_dose = SITE_COUNTRY.get(sid) in EU_COUNTRIES  # enough under the EU conditions
    while t <= sim.end:
        if weak_stock:
            doses = (1, 2, 3, 0)[_pick(r(), (0.45, 0.35, 0.15, 0.05))]
        elif one_dose:
            doses = (1, 2, 3)[_pick(r(), (0.6, 0.3, 0.1))]
        else:
            doses = (2, 3, 4, 5, 1)[_pick(r(), (0.28, 0.37, 0.30, 0.03, 0.02))]
        sim.emit("tocilizumab_stock_reported", t, p, sid, "site-portal", {"doses_on_hand": doses})
        if weak_stock:
            t += int((5 + 8 * r()) * DAY)
        elif doses < (1 if one_dose else 2):  # a well-run site restocks at once and reports again
            t += int((0.3 + 0.9 * r()) * DAY)
        else:
            t += int((2.5 + 2 * r()) * DAY)


# ---- HCPs and training ----
_ROLES_N = {"prescriber": 3, "infusion_nurse": 4, "pharmacist": 2, "icu": 2}
_ROLE_CODE = {"prescriber": "MD", "infusion_nurse": "RN", "pharmacist": "PH", "icu": "ICU"}


def _train_staff(sim: _Sim, sites: list[_Site], site_prod: _SiteProducts, materials: _Materials) -> None:
    for sid, _name, _w, prods, _act in sites:
        staff = _staff_of(sim, sid)
        for p in prods:
            for member in staff:
                _register_hcp(sim, sid, p, member, site_prod[(sid, p)], materials)


def _staff_of(sim: _Sim, sid: str) -> list[_Staff]:
    scode = sid.replace("-", "")
    big = sid in STRONG_SITES
    staff: list[_Staff] = []
    for role, n in _ROLES_N.items():
        for k in range(1, n + (2 if big and role in ("prescriber", "infusion_nurse") else 0) + 1):
            staff.append((f"HCP-{scode}-{_ROLE_CODE[role]}{k:02d}", role, None, None))
    # a new nurse joins mid-programme at every site (trained before she infuses, except at WH-04)
    staff.append((f"HCP-{scode}-RN{20:02d}", "infusion_nurse", sim.at(0.25 + 0.5 * sim.rng.random()), None))
    if sid == "WH-04":
        staff += [
            (f"HCP-{scode}-RN21", "infusion_nurse", sim.at(0.30), "never"),
            (f"HCP-{scode}-RN22", "infusion_nurse", sim.at(0.36), "fail_late"),
            (f"HCP-{scode}-MD21", "prescriber", sim.at(0.42), "late"),
            (f"HCP-{scode}-RN23", "infusion_nurse", sim.at(0.50), "late"),
        ]
    return staff


def _register_hcp(sim: _Sim, sid: str, p: str, member: _Staff, sp: _SiteProduct, materials: _Materials) -> None:
    """One HCP at one site for one product: registration, training (and retraining on v2); prescribers and
    infusion nurses become candidates to infuse."""
    rng = sim.rng
    r = rng.random
    hcp, role, join, kind = member
    weak_training = sid == "WH-04"
    v2 = materials.v2[p]
    base = sp.reg if join is None else max(join, sp.reg)
    reg = base + int(r() * 2 * DAY)
    sim.emit("hcp_registered", reg, p, sid, "lms", {"hcp_id": hcp, "role": role})
    ready = _first_training(sim, hcp, p, sid, reg, kind, materials)
    sim.hcps.append((sid, p, hcp, reg, ready))
    # retraining on v2 for those who passed on v1
    if ready is not None and v2 is not None and ready < v2 and not (weak_training and r() < 0.3):
        median = 40.0 if weak_training else 7.0
        t2 = v2 + int(min(rng.lognormvariate(math.log(median), 0.6), 120.0) * DAY)
        _train(sim, hcp, p, sid, t2, 0.08, materials)
    if role in ("prescriber", "infusion_nurse"):
        if kind is None:
            eligible = ready
        else:
            eligible = reg + DAY  # WH-04: infuses from day one
        sp.cands.append(_Candidate(eligible, hcp, role, kind is not None, ready))


def _first_training(
    sim: _Sim, hcp: str, p: str, sid: str, reg: int, kind: Optional[str], materials: _Materials
) -> Optional[int]:
    """Training after registration, as the HCP's kind has it; returns the time of the pass (None: never)."""
    r = sim.rng.random
    if kind is None:
        return _train(sim, hcp, p, sid, reg + int((1 + 4 * r()) * DAY), 0.25 if sid == "WH-04" else 0.12, materials)
    if kind == "never":
        return None
    if kind == "fail_late":
        _train(sim, hcp, p, sid, reg + 3 * DAY, 0.0, materials, fail_forced=True)  # fails, no retake for weeks
        return _train(sim, hcp, p, sid, reg + int((45 + 15 * r()) * DAY), 0.0, materials)
    # "late": trains only weeks after starting to infuse
    return _train(sim, hcp, p, sid, reg + int((25 + 20 * r()) * DAY), 0.2, materials)


def _train(
    sim: _Sim,
    hcp: str,
    p: str,
    sid: str,
    t: int,
    fail_p: float,
    materials: _Materials,
    fail_forced: bool = False,
) -> Optional[int]:
    """One training course, retaken a few days after each failure until passed; returns the time of the
    pass. With `fail_forced` the one attempt fails and is not retaken (returns None)."""
    r = sim.rng.random
    mat = f"MAT-HCP-{p}"
    while True:
        fail = fail_forced or r() < fail_p
        v = materials.version_at(p, t)
        score = int(55 + 24 * r()) if fail else int(80 + 20.99 * r())
        sim.emit(
            "training_completed",
            t,
            p,
            sid,
            "lms",
            {"hcp_id": hcp, "material_id": mat, "material_version": v, "score": score, "passed": not fail},
        )
        if not fail:
            return t
        if fail_forced:
            return None
        t += int((2 + 5 * r()) * DAY)


# ---- patients ----
def _treat_patients(
    sim: _Sim, patients: int, sites: list[_Site], site_prod: _SiteProducts, materials: _Materials
) -> None:
    weights_by_product = _site_weights(sites)
    shares = [PRODUCTS[p]["share"] for p in PRODUCTS]
    plist = list(PRODUCTS)
    counters = {p: 0 for p in PRODUCTS}
    forced = _forced_plans(sim, patients, site_prod)
    thaw_window = (sim.at(0.42), sim.at(0.58))
    hi = sim.end + 4 * DAY
    for i in range(patients):
        plan = forced.get(i)
        why: Optional[str]
        if plan is not None:
            p, sid, t_inf, why = plan
            t_inf = max(t_inf, site_prod[(sid, p)].first_ok)
        else:
            why = None
            p, sid, t_inf = _place_patient(sim, plist, shares, weights_by_product, site_prod, hi)
        counters[p] += 1
        _patient(sim, p, sid, counters[p], t_inf, why, site_prod[(sid, p)], materials.version_at, thaw_window)


def _treat_international(sim: _Sim, patients: int, materials: _Materials) -> _SiteProducts:
    """The international arm: its centres opened and staffed like the others, its patients placed by product share
    and centre weight (no planned patients: each centre's story shows in every run)."""
    site_prod = _open_sites(sim, INTERNATIONAL_SITES, materials)
    _train_staff(sim, INTERNATIONAL_SITES, site_prod, materials)
    weights_by_product = _site_weights(INTERNATIONAL_SITES)
    plist = [p for p in PRODUCTS if weights_by_product[p][0]]
    total = sum(PRODUCTS[p]["share"] for p in plist)
    shares = [PRODUCTS[p]["share"] / total for p in plist]
    counters = {p: 0 for p in plist}
    hi = sim.end + 4 * DAY
    for _ in range(patients):
        p, sid, t_inf = _place_patient(sim, plist, shares, weights_by_product, site_prod, hi)
        counters[p] += 1
        sp = site_prod[(sid, p)]
        _patient(sim, p, sid, counters[p], t_inf, None, sp, materials.version_at, (0, 0), arm=ARM_CODE)
    return site_prod


def _site_weights(sites: list[_Site]) -> dict[str, tuple[list[str], list[float]]]:
    """Per product: the ids of the sites offering it and their cumulative weights."""
    weights_by_product: dict[str, tuple[list[str], list[float]]] = {}
    for p in PRODUCTS:
        ids = [s[0] for s in sites if p in s[3]]
        ws = [s[2] for s in sites if p in s[3]]
        tot, acc, cum = sum(ws), 0.0, []
        for w in ws:
            acc += w / tot
            cum.append(acc)
        weights_by_product[p] = (ids, cum)
    return weights_by_product


def _forced_plans(sim: _Sim, patients: int, site_prod: _SiteProducts) -> dict[int, tuple[str, str, int, str]]:
    """Patients planned so that every weakness shows even in small runs (40 patients or more):
    patient index -> (product, site, infusion time, why)."""
    rng = sim.rng
    r = rng.random
    forced: dict[int, tuple[str, str, int, str]] = {}
    if patients >= 40:
        suspension = _suspension(sim)
        idx = rng.sample(range(patients), 10)
        win0 = sim.at(0.42)
        for i in idx[:4]:  # NJ-07's thawing errors
            forced[i] = ("CTX-19", "NJ-07", win0 + int(r() * 0.15 * sim.span), "thawing")
        forced[idx[4]] = (
            "CTX-19",
            "XA-08",
            suspension[0] + int((0.1 + 0.6 * r()) * (suspension[1] - suspension[0])),
            "suspended",
        )
        for i in idx[5:]:  # CD-05 has CRS episodes reaching grade 2 to be slow on
            lo = site_prod[("CD-05", "CTX-19")].first_ok
            forced[i] = ("CTX-19", "CD-05", lo + int(r() * max(0, sim.end - 10 * DAY - lo)), "crs2")
    return forced


def _place_patient(
    sim: _Sim,
    plist: list[str],
    shares: list[float],
    weights_by_product: dict[str, tuple[list[str], list[float]]],
    site_prod: _SiteProducts,
    hi: int,
) -> tuple[str, str, int]:
    """A product by its share, a site offering it by weight, and an infusion time after the site's first_ok."""
    r = sim.rng.random
    p = plist[_pick(r(), shares)]
    ids, cum = weights_by_product[p]
    sid = ids[min(bisect_right(cum, r()), len(ids) - 1)]
    lo = site_prod[(sid, p)].first_ok
    u = r()
    if r() < 0.5:
        u = math.sqrt(u)  # the programme ramps up
    t_inf = lo + int(u * (hi - lo)) if hi > lo else lo
    suspension = _suspension(sim)
    if sid == "XA-08" and suspension[0] <= t_inf < suspension[1]:
        t_inf = suspension[1] + int((1 + 9 * r()) * DAY)  # postponed while suspended
    return p, sid, t_inf


# ---- delivery order, formatting, duplicates ----
def _deliver(sim: _Sim, dq_faults: bool, duplicate_rate: float) -> list[dict]:
    events = sim.events
    events.sort(key=itemgetter("recorded_at"))
    _format_times(events)
    if dq_faults:
        _seed_dq_faults(events)
        events.sort(key=itemgetter("recorded_at"))
    return _duplicate(sim.rng, events, duplicate_rate)


def _duplicate(rng: Random, events: list[dict], duplicate_rate: float) -> list[dict]:
    """At-least-once delivery: a `duplicate_rate` fraction of the events again, up to 300 places later."""
    r = rng.random
    n = len(events)
    k = min(n, int(round(duplicate_rate * n))) if duplicate_rate > 0 else 0
    if k == 0:
        return events
    after: dict[int, list[dict]] = {}
    for i in sorted(rng.sample(range(n), k)):
        j = min(n - 1, i + 1 + int(r() * 300))
        ev = events[i]
        copy = dict(ev)
        for key in ("scope", "sections"):
            if key in copy:
                copy[key] = list(copy[key])
        after.setdefault(j, []).append(copy)
    out: list[dict] = []
    append = out.append
    for i, ev in enumerate(events):
        append(ev)
        extra = after.get(i)
        if extra:
            out.extend(extra)
    return out


_TIMES_OF_DAY: list[str] = []


def _format_times(events: list[dict]) -> None:
    """Epoch seconds -> 'YYYY-MM-DDTHH:MM:SSZ' in place: the date part cached per day, the time of day from a
    table of the 86 400 'HH:MM:SSZ' strings (3x faster than formatting each one)."""
    if not _TIMES_OF_DAY:
        _TIMES_OF_DAY.extend(f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60))
    tod = _TIMES_OF_DAY
    days: dict[int, str] = {}
    epoch = datetime(1970, 1, 1)

    def day(d: int) -> str:
        prefix = days[d] = (epoch + timedelta(days=d)).strftime("%Y-%m-%dT")
        return prefix

    get = days.get
    for ev in events:
        d, s = divmod(ev["occurred_at"], DAY)
        ev["occurred_at"] = (get(d) or day(d)) + tod[s]
        d, s = divmod(ev["recorded_at"], DAY)
        ev["recorded_at"] = (get(d) or day(d)) + tod[s]
        if ev["event_type"] == "ltfu_visit":
            d, s = divmod(ev["due_at"], DAY)
            ev["due_at"] = (get(d) or day(d)) + tod[s]


# --- one patient ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Patient:
    """Who, where and when: what every event of one patient carries."""

    p: str
    sid: str
    no: int
    t_inf: int
    why: Optional[str]  # a forced plan: "thawing", "suspended", "crs2"; None for the others
    arm: str = ""  # ARM_CODE for the international arm
    spec: dict = field(init=False)
    pcode: str = field(init=False)
    ref: str = field(init=False)
    lot: str = field(init=False)
    strong: bool = field(init=False)
    country: str = field(init=False)
    # filled in as the patient's story unfolds (the effectiveness evidence is generated from them)
    edu: Optional[tuple[int, int]] = None  # (education time, material version)
    infused: bool = False
    death: Optional[int] = None

    def __post_init__(self) -> None:
        self.spec = PRODUCTS[self.p]
        self.pcode = self.spec["code"] + self.arm
        self.ref = f"PT-{self.pcode}-{self.no:06d}"
        self.lot = f"LOT-{self.pcode}-{240000 + self.no}"
        self.strong = self.sid not in WEAK_SITES
        self.country = SITE_COUNTRY.get(self.sid, "CN")


class _AE(NamedTuple):
    term: str
    traj: list[tuple[int, int]]  # (time, grade), onset first
    serious: bool
    step: Optional[str]  # related_step
    med_error: bool
    scale: str


def _patient(
    sim: _Sim,
    p: str,
    sid: str,
    no: int,
    t_inf: int,
    why: Optional[str],
    sp: _SiteProduct,
    version_at: Callable[[str, int], int],
    thaw_window: tuple[int, int],
    arm: str = "",
) -> None:
    """All events of one patient: education, product chain, infusion, card, AEs, reports, LTFU."""
    pt = _Patient(p, sid, no, t_inf, why, arm)
    sim.patients.append(pt)
    _educate(sim, pt, version_at)
    _receive_product(sim, pt)
    if sim.rng.random() < 0.015 and why is None:
        return  # patient deteriorated before infusion: product received, never infused
    thaw_error = _thaw(sim, pt, thaw_window)
    _infuse(sim, pt, sp.cands)
    pt.infused = pt.t_inf <= sim.end
    _issue_alert_card(sim, pt)
    aes = _crs(sim, pt) + _icans(sim, pt) + _other_aes(sim, pt) + _medication_errors(sim, pt, thaw_error)
    # death truncates everything after it
    death = pt.death = min((t for ae in aes for t, g in ae.traj if g == 5), default=None)
    _record_aes(sim, pt, aes, death)
    _follow_up(sim, pt, death)


def _educate(sim: _Sim, pt: _Patient, version_at: Callable[[str, int], int]) -> None:
    """Education (patient material): mostly days before infusion."""
    r = sim.rng.random
    x = r()
    if x < 0.94:
        t_edu = pt.t_inf - int((1 + 12 * r()) * DAY)
    elif x < 0.97:
        t_edu = pt.t_inf + int((2 + 46 * r()) * HOUR)
    else:
        return
    version = version_at(pt.p, t_edu)
    if t_edu <= sim.end:
        pt.edu = (t_edu, version)
    sim.emit(
        "patient_education_completed",
        t_edu,
        pt.p,
        pt.sid,
        "site-portal",
        {"patient_ref": pt.ref, "material_id": f"MAT-PAT-{pt.p}", "material_version": version},
    )


def _receive_product(sim: _Sim, pt: _Patient) -> None:
    r = sim.rng.random
    t_recv = pt.t_inf - int((1 + 9 * r()) * DAY) - int(r() * 8 * HOUR)
    sim.emit(
        "product_received",
        t_recv,
        pt.p,
        pt.sid,
        "coi-platform",
        {"patient_ref": pt.ref, "lot_id": pt.lot, "coi_verified": r() >= 0.003, "temperature_excursion": r() < 0.006},
    )


def _thaw(sim: _Sim, pt: _Patient, thaw_window: tuple[int, int]) -> bool:
    """Thawing before the infusion; True when it went wrong (NJ-07's cluster): long before the infusion."""
    r = sim.rng.random
    thaw_error = pt.why == "thawing" or (
        pt.sid == "NJ-07" and pt.p == "CTX-19" and thaw_window[0] <= pt.t_inf < thaw_window[1] and r() < 0.4
    )
    t_thaw = pt.t_inf - (int((100 + 100 * r()) * MIN) if thaw_error else int((20 + 40 * r()) * MIN))
    sim.emit("product_thawed", t_thaw, pt.p, pt.sid, "coi-platform", {"patient_ref": pt.ref, "lot_id": pt.lot})
    return thaw_error


def _infuse(sim: _Sim, pt: _Patient, cands: list[_Candidate]) -> None:
    r = sim.rng.random
    hcp = _infuser(r, cands, pt.t_inf)
    sim.emit(
        "infusion_administered",
        pt.t_inf,
        pt.p,
        pt.sid,
        "coi-platform",
        {"patient_ref": pt.ref, "lot_id": pt.lot, "hcp_id": hcp, "dose_within_spec": r() >= 0.005},
    )


def _infuser(r: Callable[[], float], cands: list[_Candidate], t_inf: int) -> str:
    """By a trained infusion nurse or prescriber of the site (WH-04: sometimes by untrained staff)."""
    avail = [c for c in cands if c.eligible is not None and c.eligible <= t_inf]
    rogue = [c for c in avail if c.rogue]
    untrained = [c for c in rogue if c.ready is None or t_inf < c.ready]
    if untrained and r() < 0.7:  # WH-04: new staff infuse before they have passed training
        return untrained[int(r() * len(untrained))].hcp
    if rogue and r() < 0.3:
        return rogue[int(r() * len(rogue))].hcp
    normal = [c for c in avail if not c.rogue] or [c for c in cands if not c.rogue]
    want = "infusion_nurse" if r() < 0.85 else "prescriber"
    pool = [c for c in normal if c.role == want] or normal
    return pool[int(r() * len(pool))].hcp


def _issue_alert_card(sim: _Sim, pt: _Patient) -> None:
    """GZ-03 issues cards late, not at all or with a wrong lot; elsewhere mostly within hours of the infusion."""
    rng = sim.rng
    r = rng.random
    t_inf, no, pcode = pt.t_inf, pt.no, pt.pcode
    t_card: Optional[int]
    if pt.sid == "GZ-03":
        x = r()
        t_card = (
            None
            if x < 0.11
            else t_inf + int((26 + 120 * r()) * HOUR)
            if x < 0.43
            else t_inf + int((0.5 + 20 * r()) * HOUR)
        )
        y = r()
        card_lot = None if y < 0.15 else f"LOT-{pcode}-{240000 + no + 1}" if y < 0.23 else pt.lot
    else:
        x = r()
        t_card = (
            None
            if x < 0.015
            else t_inf + int((25 + 40 * r()) * HOUR)
            if x < 0.035
            else t_inf - int((1 + 20 * r()) * HOUR)
            if x < 0.12
            else t_inf + int(min(rng.lognormvariate(math.log(3.0), 0.9), 22.0) * HOUR) + int(r() * 30 * MIN)
        )
        y = r()
        card_lot = None if y < 0.005 else f"LOT-{pcode}-{240000 + no - 1}" if y < 0.01 else pt.lot
    if t_card is not None:
        sim.emit("alert_card_issued", t_card, pt.p, pt.sid, "site-portal", {"patient_ref": pt.ref, "lot_id": card_lot})


# ---- adverse events ----
def _trajectory(
    r: Callable[[], float], t0: int, g0: int, peak: int, step_h: tuple[float, float]
) -> list[tuple[int, int]]:
    """Grades from g0 up to the peak (a grade 5 some days later), then down to 1 unless fatal."""
    traj = [(t0, g0)]
    t, g = t0, g0
    while g < peak:
        g += 1
        t += int((1 + 7 * r()) * DAY) if g == 5 else int((step_h[0] + (step_h[1] - step_h[0]) * r()) * HOUR)
        traj.append((t, g))
    if g < 5 and g >= 2:
        if g >= 3:
            t += int((24 + 48 * r()) * HOUR)
            traj.append((t, 2))
        t += int((24 + 72 * r()) * HOUR)
        traj.append((t, 1))
    return traj


def _crs(sim: _Sim, pt: _Patient) -> list[_AE]:
    rng = sim.rng
    r = rng.random
    spec = pt.spec
    crs_scale = "Lee" if pt.sid == "BJ-02" and pt.p == "CTX-19" and r() < 0.3 else "ASTCT"
    if not (pt.why == "crs2" or r() < spec["crs"]):
        return []
    peak = _pick(r(), spec["crs_peak"]) + 1
    if pt.why == "crs2":
        peak = max(peak, 2)
    t0 = pt.t_inf + int(min(max(rng.lognormvariate(math.log(spec["crs_onset_h"]), 0.6), 3.0), 240.0) * HOUR)
    g0 = 2 if peak >= 2 and r() < 0.1 else 1
    traj = _trajectory(r, t0, g0, peak, (3.0, 18.0))
    serious = peak >= 3 or (peak == 2 and r() < 0.4) or r() < 0.03
    step = "crs_management" if pt.sid == "CD-05" and peak >= 3 and r() < 0.5 else None
    return [_AE("CRS", traj, serious, step, False, crs_scale)]


def _icans(sim: _Sim, pt: _Patient) -> list[_AE]:
    rng = sim.rng
    r = rng.random
    spec = pt.spec
    if not (r() < spec["icans"]):
        return []
    peak = _pick(r(), spec["icans_peak"]) + 1
    t0 = pt.t_inf + int(min(max(rng.lognormvariate(math.log(spec["icans_onset_h"]), 0.5), 12.0), 600.0) * HOUR)
    traj = _trajectory(r, t0, 1 if peak == 1 or r() < 0.7 else 2, peak, (4.0, 30.0))
    return [_AE("ICANS", traj, peak >= 3 or (peak == 2 and r() < 0.6), None, False, "ASTCT")]


def _other_aes(sim: _Sim, pt: _Patient) -> list[_AE]:
    """TLS, HLH, cytopenias, infections, hypogammaglobulinaemia, secondary malignancy."""
    r = sim.rng.random
    t_inf = pt.t_inf
    aes: list[_AE] = []
    if r() < 0.01:
        t0 = t_inf + int((12 + 60 * r()) * HOUR)
        aes.append(_AE("TLS", [(t0, 3), (t0 + int((2 + 4 * r()) * DAY), 1)], True, None, False, "CTCAE"))
    if r() < 0.01:
        t0 = t_inf + int((5 + 15 * r()) * DAY)
        g = 5 if r() < 0.15 else 3 + int(r() * 2)
        aes.append(
            _AE("HLH", [(t0, 3)] + ([(t0 + int((2 + 6 * r()) * DAY), g)] if g > 3 else []), True, None, False, "CTCAE")
        )
    aes += _cytopenias(r, t_inf)
    aes += _infections(r, t_inf)
    if r() < (0.2 if pt.p == "BCM-07" else 0.08):
        aes.append(
            _AE("hypogammaglobulinaemia", [(t_inf + int((30 + 150 * r()) * DAY), 2)], False, None, False, "CTCAE")
        )
    if r() < 0.003:
        traj = [(t_inf + int((90 + 200 * r()) * DAY), 3 + int(r() * 2))]
        aes.append(_AE("secondary_malignancy", traj, True, None, False, "CTCAE"))
    return aes


def _cytopenias(r: Callable[[], float], t_inf: int) -> list[_AE]:
    aes: list[_AE] = []
    if r() < 0.45:  # early cytopenia after lymphodepletion, grade 3-4, recovering
        t0 = t_inf + int((1 + 10 * r()) * DAY)
        g = 3 if r() < 0.55 else 4
        traj = [(t0, 3)] + ([(t0 + int((1 + 3 * r()) * DAY), 4)] if g == 4 else [])
        traj.append((traj[-1][0] + int((5 + 20 * r()) * DAY), 2))
        aes.append(_AE("cytopenia", traj, g == 4 and r() < 0.5, None, False, "CTCAE"))
    if r() < 0.2:  # prolonged or late cytopenia
        t0 = t_inf + int((28 + 40 * r()) * DAY)
        g = 3 if r() < 0.6 else 4
        aes.append(_AE("cytopenia", [(t0, g), (t0 + int((14 + 40 * r()) * DAY), 2)], r() < 0.5, None, False, "CTCAE"))
    return aes


def _infections(r: Callable[[], float], t_inf: int) -> list[_AE]:
    aes: list[_AE] = []
    for _ in range(2):  # infections, early (neutropenic) or late (hypogammaglobulinaemia)
        if r() < 0.18:
            t0 = t_inf + int((3 + 177 * r()) * DAY)
            g = _pick(r(), (0.5, 0.4, 0.08, 0.02)) + 2
            traj = [(t0, 2)] if g == 2 else [(t0, 3)] + ([(t0 + int((1 + 6 * r()) * DAY), g)] if g > 3 else [])
            if g < 5:
                traj.append((traj[-1][0] + int((3 + 11 * r()) * DAY), 1))
            aes.append(_AE("infection", traj, g >= 3, None, False, "CTCAE"))
    return aes


def _medication_errors(sim: _Sim, pt: _Patient, thaw_error: bool) -> list[_AE]:
    """Medication errors / step-related events."""
    r = sim.rng.random
    if thaw_error:
        t0 = pt.t_inf + int((15 + 120 * r()) * MIN)
        return [_AE("other", [(t0, 1 + int(r() * 2))], False, "thawing", True, "CTCAE")]
    if r() < (0.003 if pt.strong else 0.006):
        t0 = pt.t_inf + int((10 + 240 * r()) * MIN)
        return [_AE("other", [(t0, 1 + int(r() * 2))], False, "dosing" if r() < 0.6 else "thawing", True, "CTCAE")]
    return []


def _record_aes(sim: _Sim, pt: _Patient, aes: list[_AE], death: Optional[int]) -> None:
    """Each AE up to the patient's death, numbered in order: onset, grade changes, tocilizumab, reports."""
    k = 0
    for ae in aes:
        traj = ae.traj
        if death is not None:
            traj = [(t, g) for t, g in traj if t <= death]
            if not traj:
                continue
        k += 1
        _record_ae(sim, pt, f"AE-{pt.pcode}-{pt.no:06d}-{k:02d}", ae, traj, death)


def _record_ae(sim: _Sim, pt: _Patient, ae_id: str, ae: _AE, traj: list[tuple[int, int]], death: Optional[int]) -> None:
    p, sid, ref, scale = pt.p, pt.sid, pt.ref, ae.scale
    peak = max(g for _, g in traj)
    serious = ae.serious or peak >= 4
    t0, g0 = traj[0]
    onset = {
        "ae_id": ae_id,
        "patient_ref": ref,
        "term": ae.term,
        "grade": g0,
        "serious": serious,
        "medication_error": ae.med_error,
        "grading_scale": scale,
    }
    if ae.step is not None:
        onset["related_step"] = ae.step
    expected: Optional[bool] = None  # the Chinese safety feed does not say (absent = unknown)
    if pt.arm:
        # listed in the label (the reference safety information), unless atypical in severity or outcome
        expected = onset["expected"] = ae.term in LABELLED_TERMS and sim.rng.random() >= 0.15
    sim.emit("ae_onset", t0, p, sid, "safety-db", onset, ae=True)
    for t, g in traj[1:]:
        sim.emit(
            "ae_grade_changed",
            t,
            p,
            sid,
            "safety-db",
            {"ae_id": ae_id, "patient_ref": ref, "grade": g, "grading_scale": scale},
            ae=True,
        )
    if ae.term == "CRS":
        _tocilizumab(sim, p, sid, ref, ae_id, traj, death)
    if pt.arm:
        _report_international(sim, pt, ae_id, traj, serious, bool(expected))
    else:
        _report(sim, p, sid, ref, ae_id, pt.lot, traj, serious, pt.strong)


# ---- long-term follow-up ----
def _follow_up(sim: _Sim, pt: _Patient, death: Optional[int]) -> None:
    r = sim.rng.random
    p, sid = pt.p, pt.sid
    ltfu_missed = 0.07
    for v, dd in enumerate(_LTFU_DAYS, start=1):
        due = pt.t_inf + dd * DAY
        if due > sim.end or (death is not None and due > death):
            break
        fields = {"patient_ref": pt.ref, "visit_no": v, "due_at": due}
        if r() < ltfu_missed:
            sim.emit("ltfu_visit", due + 30 * DAY, p, sid, "ltfu-registry", {**fields, "status": "missed"})
            if r() < 0.3:  # the patient came after all; the registry supersedes the "missed"
                sim.emit(
                    "ltfu_visit",
                    due + int((31 + 30 * r()) * DAY),
                    p,
                    sid,
                    "ltfu-registry",
                    {**fields, "status": "done"},
                )
        else:
            sim.emit(
                "ltfu_visit", due + int((-5 + 15 * r()) * DAY), p, sid, "ltfu-registry", {**fields, "status": "done"}
            )


def _tocilizumab(
    sim: _Sim, p: str, sid: str, ref: str, ae_id: str, traj: list[tuple[int, int]], death: Optional[int]
) -> None:
    rng = sim.rng
    r = rng.random
    t0 = traj[0][0]
    t2 = next((t for t, g in traj if g >= 2), None)
    doses: list[int] = []
    if t2 is None:
        if r() < 0.08:  # persistent grade-1 fever
            doses.append(t0 + int((24 + 48 * r()) * HOUR))
    else:
        if t2 > t0 and sid != "CD-05" and r() < 0.10:
            doses.append(t0 + int(r() * (t2 - t0)))  # early intervention at grade 1
        else:
            median, sigma = (170.0, 0.4) if sid == "CD-05" else (40.0, 0.65)
            doses.append(t2 + int(min(rng.lognormvariate(math.log(median), sigma), 900.0) * MIN))
        peak = max(g for _, g in traj)
        if peak >= 3:
            doses.append(doses[0] + int((8 + 4 * r()) * HOUR))
            if r() < 0.4:
                doses.append(doses[-1] + int((8 + 4 * r()) * HOUR))
    for t in doses:
        if death is not None and t > death:
            break
        emit_id = ae_id if r() >= 0.08 else None
        sim.emit("tocilizumab_administered", t, p, sid, "site-ehr", {"patient_ref": ref, "ae_id": emit_id})


def _report(
    sim: _Sim,
    p: str,
    sid: str,
    ref: str,
    ae_id: str,
    lot: str,
    traj: list[tuple[int, int]],
    serious: bool,
    strong: bool,
) -> None:
    """MAH awareness (day 0) and the regulatory report(s) of one AE."""
    rng = sim.rng
    r = rng.random
    if not serious and r() >= 0.85:
        return  # non-serious, never forwarded to the MAH
    t0 = traj[0][0]
    aware = t0 + int(min(max(rng.lognormvariate(math.log(18.0), 0.9), 0.5), 240.0) * HOUR)
    sim.emit("ae_awareness", aware, p, sid, "safety-db", {"ae_id": ae_id, "patient_ref": ref}, ae=True)
    peak = max(g for _, g in traj)
    t5 = next((t for t, g in traj if g == 5), None)
    late_site = sid == "HZ-06"
    if serious:
        if late_site and r() < 0.45:
            rep = aware + int((16 + 24 * r()) * DAY)
        elif r() < 0.03:
            rep = aware + int((15.5 + 10 * r()) * DAY)
        elif peak >= 4:
            rep = aware + int((6 + 14 * r()) * HOUR)  # life-threatening: expedited at once
        else:
            rep = aware + int(min(max(rng.lognormvariate(math.log(6.0), 0.5), 1.0), 14.5) * DAY)
    else:
        if late_site and r() < 0.35:
            rep = aware + int((31 + 29 * r()) * DAY)
        elif r() < 0.03:
            rep = aware + int((30.5 + 15 * r()) * DAY)
        else:
            rep = aware + int((5 + 23 * r()) * DAY)
    if t5 is not None and t5 <= rep:
        # fatal before the first report: 1-day clock, the report goes out within hours of the news
        rep = max(aware, t5) + int((2 + (30 if late_site else 16) * r()) * HOUR)
    y = r()
    if late_site:
        rep_lot = None if y < 0.4 else lot
    else:
        rep_lot = None if y < 0.02 else f"LOT-{PRODUCTS[p]['code']}-{239000 + int(r() * 999)}" if y < 0.03 else lot
    x = r()
    regulator = "NMPA" if x < 0.94 else "FDA" if x < 0.98 else "EMA"
    kind = "expedited" if serious else "periodic"
    fields = {"ae_id": ae_id, "patient_ref": ref, "regulator": regulator, "report_kind": kind, "lot_id": rep_lot}
    sim.emit("ae_reported", rep, p, sid, "safety-db", fields, ae=True)
    if serious and r() < 0.3:  # follow-up report
        sim.emit(
            "ae_reported",
            rep + int((3 + 27 * r()) * DAY),
            p,
            sid,
            "safety-db",
            {**fields, "lot_id": lot if rep_lot is None and r() < 0.5 else rep_lot},
            ae=True,
        )


# The simulated label's adverse reactions (ae_onset.expected in the international arm).
LABELLED_TERMS = frozenset({"CRS", "ICANS", "cytopenia", "infection", "hypogammaglobulinaemia", "secondary_malignancy"})


def _report_international(
    sim: _Sim, pt: _Patient, ae_id: str, traj: list[tuple[int, int]], serious: bool, expected: bool
) -> None:
    """MAH awareness and the report to the FDA or the EMA: the US files a 15-day report only for a serious AE that
    is not on the label (the others go into the periodic report); the EU files serious ones within 15 days and
    non-serious ones within 90 (DE-13 takes 35-80 days: late on the NMPA clock, on time on the EMA's)."""
    rng = sim.rng
    r = rng.random
    if not serious and r() >= 0.85:
        return
    t0 = traj[0][0]
    aware = t0 + int(min(max(rng.lognormvariate(math.log(18.0), 0.9), 0.5), 240.0) * HOUR)
    sim.emit("ae_awareness", aware, pt.p, pt.sid, "safety-db", {"ae_id": ae_id, "patient_ref": pt.ref}, ae=True)
    us = pt.country == "US"
    expedited = serious and not (us and expected)
    if expedited:
        rep = aware + int((3 + (12 if r() >= 0.04 else 20) * r()) * DAY)  # about 1 in 25 past day 15
    elif pt.sid == "DE-13":
        rep = aware + int((35 + 45 * r()) * DAY)
    else:
        rep = aware + int((10 + (75 if us else 18) * r()) * DAY)  # periodic (US) / non-serious (EU)
    fields = {
        "ae_id": ae_id,
        "patient_ref": pt.ref,
        "regulator": "FDA" if us else "EMA",
        "report_kind": "expedited" if expedited else "periodic",
        "lot_id": pt.lot,
    }
    sim.emit("ae_reported", rep, pt.p, pt.sid, "safety-db", fields, ae=True)


# --- seeded data-quality problems (generate(dq_faults=True)) ---------------------------------------------------
# Each passes the contract (schema-valid) and is caught by the named expectation of expectations/<suite>.json.
DQ_FAULTS: dict[str, str] = {
    "WH-04": "an agency nurse (HCP-WH04-AG01) never registered at the site infuses two patients "
    "-> infusion_administered.hcp_registered_at_site",
    "XA-08": "a product receipt booked under SH-01 instead of XA-08 (the infused lot was never received at "
    "XA-08) -> infusion_administered.lot_received_at_site; a stock report from the mistyped site id "
    "XA-8 -> site_events.site_registered",
    "HZ-06": "two reported AEs whose awareness (day 0) never reached the MAH's feed -> ae_reported.ae_has_awareness",
    "audits": "the programme's earliest CAPA closure filed under a mistyped finding id "
    "-> effectiveness_events.capa_finding_known",
    "CD-05": "the material pack sent when the centre joined, addressed to the mistyped site id CD05 "
    "-> effectiveness_events.recipient_site_registered",
    "GZ-03": "a clock-skewed site portal: two alert cards recorded before they occurred, one of them 3 days "
    "ahead -> events.recorded_at_not_before_occurred_at, events.occurred_at_not_in_future; and about "
    "1 % of all events re-sent by its portal under new event_ids -> events.duplicate_facts_rate_below_0_1_percent",
}


def _iso_add(ts: str, seconds: int) -> str:
    t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ") + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _seed_dq_faults(events: list[dict]) -> None:
    """Apply DQ_FAULTS in place to formatted events (before duplicates are added). Picks by list position, not
    from the random stream, so the rest of the programme stays as without faults."""

    def at(site: str, etype: str) -> list[dict]:
        return [e for e in events if e["site_id"] == site and e["event_type"] == etype]

    for inf in at("WH-04", "infusion_administered")[:2]:
        inf["hcp_id"] = "HCP-WH04-AG01"
    for inf in at("XA-08", "infusion_administered")[:1]:
        for e in at("XA-08", "product_received"):
            if e["patient_ref"] == inf["patient_ref"] and e["product"] == inf["product"]:
                e["site_id"] = "SH-01"
    for stock in at("XA-08", "tocilizumab_stock_reported")[:1]:
        events.append({**stock, "event_id": "dqfault-stock-0001", "site_id": "XA-8"})
    lost = set(list(dict.fromkeys(e["ae_id"] for e in at("HZ-06", "ae_reported")))[:2])
    events[:] = [e for e in events if not (e["event_type"] == "ae_awareness" and e["ae_id"] in lost)]
    for capa in sorted((e for e in events if e["event_type"] == "capa_closed"), key=itemgetter("occurred_at"))[:1]:
        capa["finding_id"] += "X"
    for sent in [e for e in at("CD-05", "material_distributed") if e["recipient_kind"] == "site"][:1]:
        sent["recipient_id"] = "CD05"
    for card, ahead in zip(at("GZ-03", "alert_card_issued")[:2], (20 * MIN, 3 * DAY)):
        card["occurred_at"] = _iso_add(card["recorded_at"], ahead)
    gz = [e for e in events if e["site_id"] == "GZ-03"]
    n_resent = max(1, len(events) // 100)
    last = max(e["recorded_at"] for e in events)  # nothing is recorded after the programme's end
    for k, e in enumerate(gz[:: max(1, len(gz) // n_resent)][:n_resent]):
        copy = {**e, "event_id": f"dqfault-resend-{k:05d}", "recorded_at": min(last, _iso_add(e["recorded_at"], HOUR))}
        for key in ("scope", "sections"):
            if key in copy:
                copy[key] = list(copy[key])
        events.append(copy)


# --- helpers -------------------------------------------------------------------------------------------------
def topic_of(event: dict) -> str:
    """The Kafka topic of an event dict (fixed by its event_type)."""
    return TOPIC_OF_TYPE[event["event_type"]]


def to_jsonl(events: Iterable[dict], path: str | os.PathLike) -> int:
    """Write events as JSON lines (one compact object per line); returns the number written."""
    n = 0
    dumps = json.dumps
    with open(path, "w", encoding="utf-8") as fh:
        write = fh.write
        for ev in events:
            write(dumps(ev, separators=(",", ":")))
            write("\n")
            n += 1
    return n
