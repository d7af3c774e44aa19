"""`rmm replay` of a file holding contract v1 and v1.1 events, through the CLI: a row for every KPI of the catalog
(the five effectiveness KPIs included), and `--explain` lists exactly denominator - numerator failing units for
each new KPI, each with a reason a PV reader understands."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rmm_monitor.kpi import load_catalog

from support.workers import run_cli

NEW_KPIS = ("material_reach", "hcp_knowledge", "patient_knowledge", "capa_on_time", "post_infusion_monitoring")
AS_OF = "2026-12-01T00:00:00Z"
# what the failing units of each new KPI say (one of these per unit)
REASONS = {
    "material_reach": ("not distributed",),
    "hcp_knowledge": ("key messages",),
    "patient_knowledge": ("key messages",),
    "capa_on_time": ("CAPA", "no verified closure"),
    "post_infusion_monitoring": ("no contact recorded on day", "out of proximity of a qualified centre"),
}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay-v11")
    src, db = root / "programme.jsonl", root / "programme.duckdb"
    sim = run_cli("simulate", "--out", str(src), "--patients", "150", "--days", "640", "--end", "2026-11-30T12:00:00Z")
    assert sim.returncode == 0, sim.stderr
    types = Counter(json.loads(line)["event_type"] for line in src.read_text(encoding="utf-8").splitlines())
    assert {"material_distributed", "knowledge_assessed", "audit_finding_raised", "capa_closed"} <= set(types)
    assert types["post_infusion_contact"] and types["infusion_administered"]  # v1.1 beside v1
    out = run_cli("replay", str(src), "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rejected"] == 0
    return db


def kpis(db, *args: str) -> list[dict]:
    res = run_cli("kpis", "--db", str(db), "--as-of", AS_OF, "--period", "all", "--json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_a_row_for_every_kpi_of_the_catalog(replayed):
    rows = kpis(replayed)
    ids = {k.id for k in load_catalog()}
    assert len(ids) == 21 and set(NEW_KPIS) <= ids
    assert {r["kpi"] for r in rows} == ids
    for kpi in NEW_KPIS:
        assert any(r["denominator"] > 0 for r in rows if r["kpi"] == kpi), kpi


@pytest.mark.parametrize("kpi", NEW_KPIS)
def test_explained_failures_add_up_to_denominator_minus_numerator(replayed, kpi):
    rows = [r for r in kpis(replayed, "--kpi", kpi) if r["site_id"] is None]
    units = kpis(replayed, "--explain", kpi, "--outcome", "failure")
    by_product = Counter(u["product"] for u in units)
    for row in rows:
        assert by_product[row["product"]] == row["denominator"] - row["numerator"], row
    assert units, f"the simulated programme has failing {kpi} units"
    for u in units:
        assert any(reason in u["detail"] for reason in REASONS[kpi]), u
    if kpi == "capa_on_time":
        assert any(u["site_id"] == "XA-08" and "critical" in u["detail"] for u in units)
    if kpi == "material_reach":
        assert {u["site_id"] for u in units} >= {"NJ-07"}
