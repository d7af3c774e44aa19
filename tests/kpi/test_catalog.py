"""The catalog's own unit tests: every `tests:` entry of every metrics/<kpi>.yml, run against a real DuckDB.

Given rows go through the same validation and store as production events; expected KPI rows and units are
compared key by key. A catalog test that no longer matches fails here with the KPI, the test name and the diff.
"""

import pytest

from rmm_monitor.core.periods import parse_time
from rmm_monitor.kpi import Config, Engine, load_catalog, load_config
from rmm_monitor.kpi.catalog import merge_config
from rmm_monitor.kpi.fixtures import encode, events_from_given, find_row, mismatches
from rmm_monitor.store import Store, process_batch

CASES = [(kpi, case) for kpi in load_catalog() for case in kpi.tests]


def test_every_kpi_has_catalog_tests():
    for kpi in load_catalog():
        assert kpi.tests, f"{kpi.id}.yml has no tests"


@pytest.mark.parametrize("kpi,case", CASES, ids=[f"{k.id}:{c['name']}" for k, c in CASES])
def test_catalog_case(kpi, case, tmp_path):
    store = Store(tmp_path / "catalog.duckdb")
    outcome = process_batch(store, encode(events_from_given(case["given"])))
    assert not outcome.rejects, f"given rows rejected by the contract: {outcome.rejects}"
    # a case may overlay the catalog config (e.g. a product's own parameter), as a deployment's RMM_CONFIG does
    config = Config(merge_config(load_config().data, case["config"])) if case.get("config") else load_config()
    engine = Engine(store.con, config=config)
    as_of = parse_time(case["as_of"])
    rows = engine.compute(as_of=as_of, period=case.get("period"), by=case.get("by", "product"), kpi_ids=[kpi.id])
    problems = []
    for want in case.get("expect", []):
        got = find_row(rows, want)
        if got is None:
            problems.append(f"no row for {want.get('product')}/{want.get('site_id')}")
            continue
        problems += mismatches(want, got)
    if case.get("expect_units"):
        units = {
            u["unit_id"]: u
            for u in engine.units(
                kpi.id, as_of=as_of, period=case.get("period"), outcomes=("success", "failure", "pending", "excluded")
            )
        }
        for want in case["expect_units"]:
            got = units.get(want["unit_id"])
            if got is None:
                problems.append(f"unit {want['unit_id']} missing")
            else:
                problems += [f"unit {want['unit_id']}: {m}" for m in mismatches(want, got)]
        listed = {u["unit_id"] for u in case["expect_units"]}
        extra = set(units) - listed
        assert not extra or case.get("units_partial"), f"unexpected units {sorted(extra)}"
    store.close()
    assert not problems, "\n".join(problems)


def test_topic_filters_match_the_event_types():
    """A KPI SQL writes `topic = '<topic>'` beside a non-AE `event_type = '<type>'` filter so DuckDB skips the other
    topic tables (kpi/engine.py). A wrong topic would silently empty the relation: each must be the type's own."""
    import re

    from rmm_monitor.contract import TOPIC_OF_TYPE
    from rmm_monitor.kpi.catalog import catalog_dir

    root = catalog_dir()
    for path in [*root.glob("*.sql"), *root.glob("shared/*.sql")]:
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        for alias, event_type, topic_alias, topic in re.findall(
            r"\b(\w+\.)?event_type = '(\w+)' and (\w+\.)?topic = '([\w.]+)'", code
        ):
            assert (alias, topic) == (topic_alias, TOPIC_OF_TYPE[event_type]), f"{path.name}: {event_type} / {topic}"
        assert code.count("topic = '") == len(re.findall(r"event_type = '\w+' and (?:\w+\.)?topic = '", code)), (
            path.name
        )
        for alias, event_type, rest in re.findall(r"\b(\w+\.)?event_type = '(\w+)'(.{0,40})", code):
            if TOPIC_OF_TYPE[event_type] != "rmm.ae":
                assert rest.startswith(f" and {alias}topic = "), f"{path.name}: {event_type} without its topic"
