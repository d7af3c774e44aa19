"""Rule sets and dated catalog changes (metrics/rules/): what was known at the as-of time decides, so a version or a
threshold change added later never changes a number computed as of an earlier time."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest
import yaml

from rmm_monitor.core.periods import parse_time
from rmm_monitor.kpi import Engine, load_catalog
from rmm_monitor.kpi.catalog import CatalogError, catalog_dir
from rmm_monitor.kpi.fixtures import encode, events_from_given
from rmm_monitor.kpi.rulebook import load_rulebook, reload
from rmm_monitor.store import Store, process_batch

AS_OF_BEFORE = parse_time("2026-10-01T00:00:00Z")
AS_OF_AFTER = parse_time("2026-12-01T00:00:00Z")


def _catalog_copy(tmp_path):
    root = tmp_path / "metrics"
    shutil.copytree(catalog_dir(), root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return root


def _append(path, key, entry) -> None:
    doc = yaml.safe_load(path.read_text()) or {}
    doc[key] = [*(doc.get(key) or []), entry]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _store(tmp_path, given):
    store = Store(tmp_path / "rules.duckdb")
    outcome = process_batch(store, encode(events_from_given(given)))
    assert not outcome.rejects
    return store


US_SITE = {
    "event_type": "site_registered",
    "site_id": "US1",
    "occurred_at": "2024-01-01T00:00:00Z",
    "name": "Boston",
    "country": "US",
}


def test_a_rule_version_counts_only_once_known(tmp_path):
    """A new version effective before the unit but added (known_from) after the first as-of: that as-of is as it
    was; a later as-of uses it."""
    root = _catalog_copy(tmp_path)
    _append(
        root / "rules" / "rule_sets.yml",
        "versions",
        {
            "rule": "tocilizumab_available_at_infusion",
            "jurisdiction": "US",
            "effective_from": "2026-07-01",
            "known_from": "2026-11-01T09:00:00Z",
            "values": {"min_doses": 1},
            "name": "US rules from 2026-07-01",
            "source": "a test's change",
        },
    )
    given = [
        US_SITE,
        {
            "event_type": "tocilizumab_stock_reported",
            "site_id": "US1",
            "occurred_at": "2026-07-10T00:00:00Z",
            "doses_on_hand": 1,
        },
        {
            "event_id": "I1",
            "event_type": "infusion_administered",
            "site_id": "US1",
            "occurred_at": "2026-07-11T00:00:00Z",
            "patient_ref": "PT-000001",
            "lot_id": "L1",
            "hcp_id": "H1",
            "dose_within_spec": True,
        },
    ]
    with _store(tmp_path, given) as store:
        engine = Engine(store.con, catalog=load_catalog(root), rulebook=load_rulebook(root))
        before = engine.units(
            "tocilizumab_available_at_infusion", as_of=AS_OF_BEFORE, period="all", outcomes=["success", "failure"]
        )
        after = engine.units(
            "tocilizumab_available_at_infusion", as_of=AS_OF_AFTER, period="all", outcomes=["success", "failure"]
        )
    assert [u["outcome"] for u in before] == ["failure"] and "(minimum 2, US labels)" in before[0]["detail"]
    assert [u["outcome"] for u in after] == ["success"]
    assert "(minimum 1, US rules from 2026-07-01)" in after[0]["detail"]


def test_a_threshold_change_judges_periods_ending_after_it_and_only_once_known(tmp_path):
    root = _catalog_copy(tmp_path)
    _append(
        root / "rules" / "changes.yml",
        "changes",
        {
            "kpi": "dose_within_spec",
            "key": "threshold",
            "value": 0.5,
            "effective_from": "2026-11-01",
            "known_from": "2026-11-15T00:00:00Z",
            "reason": "a test",
            "source": "a test",
        },
    )
    _append(
        root / "rules" / "changes.yml",
        "changes",
        {
            "kpi": "dose_within_spec",
            "product": "BCM-07",
            "key": "threshold",
            "value": 0.7,
            "effective_from": "2026-11-01",
            "known_from": "2026-11-15T00:00:00Z",
            "reason": "a test",
            "source": "a test",
        },
    )
    given = [
        {
            "event_type": "infusion_administered",
            "occurred_at": "2026-07-01T00:00:00Z",
            "patient_ref": "PT-000001",
            "lot_id": "L1",
            "hcp_id": "H1",
            "dose_within_spec": True,
        }
    ]
    with _store(tmp_path, given) as store:
        engine = Engine(store.con, catalog=load_catalog(root), rulebook=load_rulebook(root))

        def threshold(as_of, period, product="CTX-19"):
            rows = engine.compute(as_of=as_of, period=period, kpi_ids=["dose_within_spec"])
            return next(r["threshold"] for r in rows if r["product"] == product)

        assert threshold(AS_OF_BEFORE, "2026Q3") == 0.99  # not known yet
        assert threshold(AS_OF_AFTER, "2026Q3") == 0.99  # known, but Q3 ended before it took effect
        assert threshold(AS_OF_AFTER, "2026Q4") == 0.5  # the current quarter uses it
        assert threshold(parse_time("2026-11-10T00:00:00Z"), "2026Q4") == 0.99  # effective, not yet known
        assert engine.threshold(engine.kpi("dose_within_spec"), "BCM-07", AS_OF_AFTER, AS_OF_AFTER) == 0.7


def test_the_catalog_hash_of_an_as_of_ignores_what_was_added_after_it(tmp_path):
    from rmm_monitor.kpi import catalog_hash

    root = _catalog_copy(tmp_path)
    before = catalog_hash(root, AS_OF_BEFORE), catalog_hash(root, AS_OF_AFTER)
    _append(
        root / "rules" / "changes.yml",
        "changes",
        {
            "kpi": "dose_within_spec",
            "key": "threshold",
            "value": 0.5,
            "effective_from": "2026-11-01",
            "known_from": "2026-11-15T00:00:00Z",
            "reason": "a test",
            "source": "a test",
        },
    )
    reload()  # the catalog is read once per process
    assert catalog_hash(root, AS_OF_BEFORE) == before[0]
    assert catalog_hash(root, AS_OF_AFTER) != before[1]


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {
                "rule": "no_such_kpi",
                "jurisdiction": "US",
                "effective_from": "2026-01-01",
                "known_from": "2026-01-01",
                "values": {"x": 1},
                "name": "x",
                "source": "x",
            },
            "is no catalog KPI",
        ),
        (
            {
                "rule": "dose_within_spec",
                "jurisdiction": "US",
                "effective_from": "2026-01-01",
                "values": {"x": 1},
                "name": "x",
                "source": "x",
            },
            "lacks known_from",
        ),
    ],
)
def test_a_malformed_rule_version_is_refused(tmp_path, entry, message):
    root = _catalog_copy(tmp_path)
    _append(root / "rules" / "rule_sets.yml", "versions", entry)
    with pytest.raises(CatalogError, match=message):
        load_rulebook(root)


def test_every_seeded_rule_has_a_default_version_from_the_start():
    """A unit at a site of any jurisdiction, at any time, finds a version (the default one at least)."""
    book = load_rulebook()
    start = datetime(2000, 1, 1, tzinfo=timezone.utc)
    for rule in {v.rule for v in book.versions}:
        assert any(
            v.rule == rule and v.jurisdiction == "default" and v.effective_from <= start and v.effective_to is None
            for v in book.versions
        ), rule
