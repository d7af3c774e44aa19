"""docs/kpi-rules.md carries the catalog table as generated from metrics/*.yml: a KPI added, re-titled or
re-thresholded in its yml shows in the page at the next `make docs`, and this test fails until it is run."""

from __future__ import annotations

import re

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


def test_the_committed_glossary_is_fresh_and_uses_the_guideline_terms():
    from rmm_monitor.kpi.reference import glossary_page

    text = (REPO / "docs" / "glossary.md").read_text(encoding="utf-8")
    assert text == glossary_page(), "docs/glossary.md is stale: run `make docs`"
    for term in ("医疗机构的评估和认证", "患者提示卡", "教育培训"):
        assert term in text


def test_every_kpi_and_label_has_a_chinese_name_distinct_from_the_english():
    from rmm_monitor.kpi import LANGS, load_labels

    for kpi in load_catalog():
        assert kpi.title_zh and kpi.title_zh != kpi.title, kpi.id
        # lines of the yml are joined without a space where Chinese text meets Chinese text
        assert kpi.description_zh and not re.search(r"[^\x00-\x7f] [^\x00-\x7f]", kpi.description_zh), kpi.id
        labels = load_labels()
        assert labels.section(kpi.review_section, "zh") != labels.section(kpi.review_section, "en"), kpi.id
        # the definition a Chinese report prints: the measure, the unit and the success rule in Chinese too
        assert labels.name("armms", kpi.armm, "zh") != kpi.armm, kpi.id
        assert kpi.unit_zh and kpi.unit_in("zh") != kpi.unit and kpi.success_zh, kpi.id  # a formula may read alike
        assert kpi.unit_in("en") == kpi.unit and kpi.success_in("en") == kpi.success
        assert all(labels.family(kpi.family, lang) for lang in LANGS)
