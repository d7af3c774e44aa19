"""docs/kpi-rules.md carries the catalog table as generated from metrics/*.yml: a KPI added, re-titled or
re-thresholded in its yml shows in the page at the next `make docs`, and this test fails until it is run."""

from __future__ import annotations

from rmm_monitor.kpi import load_catalog
from rmm_monitor.kpi.reference import END, START, render_page

from support.paths import REPO

PAGE = REPO / "docs" / "kpi-rules.md"


def test_the_committed_catalog_table_is_fresh():
    text = PAGE.read_text(encoding="utf-8")
    assert render_page(text) == text, "docs/kpi-rules.md is stale: run `make docs`"


def test_every_catalog_kpi_has_its_row():
    table = PAGE.read_text(encoding="utf-8").split(START, 1)[1].split(END, 1)[0]
    for kpi in load_catalog():
        assert f"| `{kpi.id}` | {kpi.title} |" in table
