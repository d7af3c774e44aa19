"""A threshold or rule changed today never changes a number computed as of an earlier time: 2026Q3 exported as of
2026-10-01, then a threshold change and a rule version effective 2026-11-01 added to the catalog (known from
2026-11-20), then 2026Q3 exported again as of 2026-10-01 gives the same bytes in every file; the current quarter
uses the new values from their effective date."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from rmm_monitor.dev.simulate import generate
from rmm_monitor.store import Store, process_batch

from support.paths import REPO
from support.workers import run_cli

pytestmark = pytest.mark.xdist_group(name="catalog-changes")

END = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
EXPORTED_AS_OF = "2026-10-01T00:00:00Z"
NOW = "2026-11-25T00:00:00Z"
FILES = ("kpis.csv", "kpis.parquet", "units.parquet", "manifest.json", "kpis.xlsx", "report.html", "report.pdf")

THRESHOLD_CHANGE = {
    "kpi": "alert_card_issued",
    "product": "*",
    "key": "threshold",
    "value": 0.95,
    "effective_from": "2026-11-01",
    "known_from": "2026-11-20T09:00:00Z",
    "reason": "review case: cards still late at some centres; the QPPV raised the bar",
    "source": "test",
}
RULE_VERSION = {
    "rule": "post_infusion_monitoring",
    "jurisdiction": ["CN", "default"],
    "effective_from": "2026-11-01",
    "known_from": "2026-11-20T09:00:00Z",
    "values": {"daily_days": 10, "proximity_days": 28},
    "name": "NMPA rules from 2026-11-01",
    "source": "test: a label variation extending daily monitoring to 10 days",
}


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("changes") / "sim.duckdb"
    events = generate(seed=7, patients=200, end=END, days=330)
    with Store(path) as store:
        process_batch(store, [json.dumps(e).encode() for e in events])
    return path


def catalog_copy(root: Path, changed: bool) -> Path:
    target = root / ("changed" if changed else "before")
    shutil.copytree(REPO / "metrics", target)
    if changed:
        changes = target / "rules" / "changes.yml"
        doc = yaml.safe_load(changes.read_text(encoding="utf-8"))
        changes.write_text(yaml.safe_dump({"changes": [*doc["changes"], THRESHOLD_CHANGE]}), encoding="utf-8")
        rules = target / "rules" / "rule_sets.yml"
        doc = yaml.safe_load(rules.read_text(encoding="utf-8"))
        doc["versions"].append(RULE_VERSION)
        rules.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return target


def test_a_catalog_change_made_today_leaves_an_earlier_export_byte_identical(db, tmp_path):
    before, changed = catalog_copy(tmp_path, False), catalog_copy(tmp_path, True)

    def export(catalog: Path):
        out = tmp_path / f"export-{catalog.name}"
        args = ("export", "--quarter", "2026Q3", "--db", str(db), "--out", str(out), "--as-of", EXPORTED_AS_OF)
        res = run_cli(*args, env={"RMM_CATALOG_DIR": str(catalog)}, timeout=600)
        assert res.returncode == 0, res.stderr
        return out

    with ThreadPoolExecutor(2) as pool:  # two processes: the same file read twice, nothing written to it
        first, second = pool.map(export, (before, changed))
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    manifest = json.loads((second / "manifest.json").read_text(encoding="utf-8"))
    assert "NMPA rules from 2026-11-01" not in json.dumps(manifest)


def kpis(db: Path, catalog: Path, *args: str) -> list[dict]:
    res = run_cli(
        "kpis", "--db", str(db), "--as-of", NOW, "--period", "2026Q4", "--json", *args,
        env={"RMM_CATALOG_DIR": str(catalog)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_the_current_quarter_uses_the_new_values_from_their_effective_date(db, tmp_path):
    before, changed = catalog_copy(tmp_path, False), catalog_copy(tmp_path, True)
    thresholds = {
        name: {(r["kpi"], r["product"]): r["threshold"] for r in kpis(db, cat, "--kpi", "alert_card_issued")}
        for name, cat in (("before", before), ("changed", changed))
    }
    assert set(thresholds["before"].values()) == {0.9} and set(thresholds["changed"].values()) == {0.95}

    # Chinese centres keep contacting daily for 7 days: under the new rule a patient infused from 2026-11-01 misses
    # day 8; one infused before is judged by the rule of its infusion day.
    units = kpis(db, changed, "--explain", "post_infusion_monitoring", "--outcome", "success", "--outcome", "failure")
    effective = datetime(2026, 11, 1, tzinfo=timezone.utc)
    seen = {"old": 0, "new": 0}
    for u in units:
        if u["unit_id"].split(":")[1].split("-")[1].endswith("X"):
            continue  # the international arm's centres follow their own rule sets
        if datetime.fromisoformat(u["anchor_at"].replace("Z", "+00:00")) >= effective:
            assert u["outcome"] == "failure", u
            assert "NMPA rules from 2026-11-01: daily contact for 10 days" in u["detail"], u
            seen["new"] += 1
        elif u["outcome"] == "success":
            assert u["detail"].endswith("(NMPA rules)") and "7 days" in u["detail"], u
            seen["old"] += 1
    assert seen["old"] > 5 and seen["new"] > 5, seen
    # the same units under the catalog as it was: the old rule throughout
    old = kpis(db, before, "--explain", "post_infusion_monitoring", "--outcome", "failure")
    assert not any("2026-11-01" in u["detail"] for u in old)
