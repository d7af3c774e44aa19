"""The quarterly evaluation in Chinese, English and both (`rmm export --lang`), read with real tools: pdftotext for
the words, pdffonts for the embedded CJK font, openpyxl for the sheets, pdftoppm for the first pages (written to
build/artifacts/ for a person to look at). Over the shared `offline` store (conftest.py) with one known site breach
alerted and its review case opened; the snapshot is gathered once and written in each language."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from openpyxl import load_workbook

from rmm_monitor.core.lang import parse_langs
from rmm_monitor.core.periods import parse_time
from rmm_monitor.export.words import WORDS
from rmm_monitor.kpi import by_family, load_catalog, load_labels
from rmm_monitor.store import Store

from support.paths import REPO
from support.workers import run_cli

pytestmark = [pytest.mark.xdist_group(name="export-languages"), pytest.mark.long]

AS_OF = "2026-10-15T00:00:00Z"  # as in conftest.py (the `offline` store)
QUARTER = "2026Q3"
HAN = re.compile(r"[\u4e00-\u9fff]")
ARTIFACTS = REPO / "build" / "artifacts"


def _text(pdf: Path, *args: str) -> str:
    return subprocess.run(["pdftotext", *args, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def _flowing(text: str) -> str:
    return " ".join(text.split())


def _dense(text: str) -> str:
    """Without any white space: a Chinese title wrapped in a table cell reads whole."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def breach(offline, tmp_path_factory):
    """A copy of the offline store with the worst site breach of the quarter alerted (its review case opened)."""
    import csv

    from rmm_monitor.alerting import records as alerts
    from rmm_monitor.alerting.titles import breach_title

    _, out, _ = offline
    with open(out / "kpis.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["site_id"] and r["status"] == "breach"]
    row = sorted(rows, key=lambda r: (float(r["value"]), r["kpi"], r["site_id"]))[0]
    kpi = next(k for k in load_catalog() if k.id == row["kpi"])
    db = tmp_path_factory.mktemp("langs") / "breach.duckdb"
    shutil.copy(offline[0], db)
    fired = parse_time("2026-09-20T08:00:00Z")
    figures = {**row, "value": float(row["value"]), "threshold": float(row["threshold"])}
    with Store(db) as store:
        alert_id = alerts.fire(
            store.con,
            alerts.NewAlert(
                signal="kpi_breach",
                product=row["product"],
                site_id=row["site_id"],
                section=kpi.review_section,
                kpi=kpi.id,
                severity="critical",
                title=breach_title(figures),
                triggered_at=fired,
                period=row["period"],
                details={k: figures[k] for k in ("value", "threshold", "direction")},
            ),
            [],
            now=fired,
        )
        case_id = store.con.execute("SELECT case_id FROM alerts WHERE alert_id = ?", [alert_id]).fetchone()[0]
    return db, kpi, row, case_id


class _FrontCharts:
    """The status overview drawn (it is on the first pages), each KPI's chart a blank strip: a report in two
    languages costs a second or two instead of seven (the CLI's bilingual export draws them all)."""

    def __init__(self, snap):
        from rmm_monitor.export.report import OVERVIEW, chart_jobs

        self.overview, self.name = chart_jobs(snap)[OVERVIEW], OVERVIEW

    def get(self, name: str):
        import io

        from PIL import Image

        if name == self.name:
            fn, *args = self.overview
            return fn(*args)
        buf = io.BytesIO()
        Image.new("RGB", (920, 40), "white").save(buf, format="PNG")
        return buf.getvalue()


@pytest.fixture(scope="module")
def exports(breach, tmp_path_factory):
    """en and zh written from one snapshot (no data-quality run and blank KPI charts: not what these tests are
    about), zh,en by the CLI (the whole path: argument, manifest, fonts, charts)."""
    from rmm_monitor.export import LocalSource, Progress, gather
    from rmm_monitor.export.report import write_reports
    from rmm_monitor.export.xlsx import write_xlsx

    class NoGx(LocalSource):
        def dq(self, as_of, period):
            return []

    db = breach[0]
    root = tmp_path_factory.mktemp("lang-exports")
    with Store(db, read_only=True) as store:
        snap = gather(NoGx(store.con), QUARTER, parse_time(AS_OF), Progress(enabled=False))
    outs = {}
    for lang in ("en", "zh"):
        snap.langs = parse_langs(lang)
        out = outs[lang] = root / lang
        out.mkdir()
        write_reports(snap, out, lambda _: None, _FrontCharts(snap))
        write_xlsx(snap, out / "kpis.xlsx")
    out = outs["zh,en"] = root / "zh-en"
    res = run_cli(
        "export", "--quarter", QUARTER, "--db", str(db), "--out", str(out), "--as-of", AS_OF, "--lang", "zh,en",
        "--quiet", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["languages"] == ["zh", "en"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for lang, out in outs.items():  # the first page of each, for a person to look at
        stem = ARTIFACTS / f"report-{lang.replace(',', '-')}-page1"
        subprocess.run(
            ["pdftoppm", "-r", "60", "-png", "-singlefile", "-f", "1", "-l", "1", str(out / "report.pdf"), str(stem)],
            check=True,
        )
    return outs


def test_a_bad_language_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    res = run_cli("export", "--quarter", QUARTER, "--out", str(out), "--db", str(tmp_path / "none.duckdb"),
                  "--lang", "fr")  # fmt: skip
    assert res.returncode == 2 and "unknown language 'fr'" in res.stderr and not out.exists()


def test_chinese_report_names_everything_from_the_catalog_and_embeds_its_font(exports, breach):
    pdf = exports["zh"] / "report.pdf"
    text = _dense(_text(pdf))
    labels = load_labels()
    for k in load_catalog():
        assert k.title_zh in text, k.id
    for family in by_family(load_catalog()):
        assert labels.family(family, "zh") in text, family
    for status in ("breach", "warning", "ok"):
        assert labels.status(status, "zh") in text
    for key in ("h_action", "h_summary", "h_alerts", "h_audit", "h_dq", "h_method"):
        assert WORDS[key]["zh"] in text, key
    assert "Programmesummary" not in text and "Methodnotes" not in text
    # the breach's alert said again in Chinese from its figures (the store keeps the English title)
    # (the audit trail quotes the record as stored, in English)
    assert f"[超限]{breach[1].title_zh}" in text
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout.splitlines()
    wqy = [line for line in fonts if "WenQuanYi" in line]
    assert wqy and all(line.split()[-5] == "yes" for line in wqy), fonts  # emb (sub, uni, object ID, gen follow)
    assert '<html lang="zh">' in (exports["zh"] / "report.html").read_text()


def test_chinese_workbook_has_chinese_headers(exports):
    wb = load_workbook(exports["zh"] / "kpis.xlsx")
    assert wb.sheetnames[0] == "汇总"
    assert {"警报和评估案例", "数据质量", "指标定义", "规则", "审计追踪"} <= set(wb.sheetnames)
    header = [c.value for c in wb["汇总"][1]]
    assert header[:4] == ["指标", "名称", "额外风险最小化措施", "产品"] and "状态" in header
    statuses = {r[header.index("状态")] for r in wb["汇总"].iter_rows(min_row=2, values_only=True)}
    assert "超限" in statuses and statuses <= {"达标", "预警", "超限", "数据不足"}
    kpi = load_catalog()[0]
    assert wb[kpi.id]["L1"].value == kpi.title_zh and [c.value for c in wb[kpi.id][1]][:2] == ["产品", "医疗机构"]


def test_bilingual_report_has_both_titles_and_the_leading_language_first(exports):
    raw = _text(exports["zh,en"] / "report.pdf")
    text, dense = _flowing(raw), _dense(raw)
    labels = load_labels()
    for k in load_catalog():
        assert k.title_zh in dense and k.title in text, k.id
    for family in by_family(load_catalog()):
        zh, en = labels.family(family, "zh"), labels.family(family, "en")
        assert zh in dense and en in text and dense.index(zh) < dense.index(en.replace(" ", "")), family
    assert dense.index("项目汇总") < dense.index("Programmesummary")
    manifest = json.loads((exports["zh,en"] / "manifest.json").read_text())
    assert manifest["languages"] == ["zh", "en"]
    header = [c.value for c in load_workbook(exports["zh,en"] / "kpis.xlsx")["汇总 Summary"][1]]
    assert header[:2] == ["指标\nKPI", "名称\ntitle"]


def test_english_report_has_no_chinese(exports):
    pdf = exports["en"] / "report.pdf"
    assert not HAN.search(_text(pdf))
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "DejaVu" in fonts and "WenQuanYi" not in fonts


def test_numbers_are_the_same_strings_in_every_language(exports):
    """Every figure of every table (values, intervals, thresholds, n, pending) in the same order, character for
    character: the languages differ only in words."""
    figure = re.compile(r"<td>(\d+(?:\.\d+)?%|\d+(?:\.\d+)?–\d+(?:\.\d+)?%|\d+/\d+|n/a)</td>")
    got = {lang: figure.findall((out / "report.html").read_text()) for lang, out in exports.items()}
    assert len(got["en"]) > 300 and got["en"] == got["zh"] == got["zh,en"]


HEADER_WORDS = sorted(
    {w for key, v in WORDS.items() if key.startswith("col.") for w in re.findall(r"[A-Za-z]{4,}", v["en"])}
)


@pytest.mark.parametrize("lang", ["en", "zh,en"])
def test_no_header_word_is_broken(exports, lang):
    """Headers wrap at spaces only ("produc t", "threshol d", "pendin g" were seen): no English header word is
    split over two lines or by a space, in reading order or in the layout, and those the tables use are whole."""
    pdf = exports[lang] / "report.pdf"
    texts = (_text(pdf), _text(pdf, "-layout"), _text(pdf, "-raw"))
    for word in HEADER_WORDS:
        for i in range(1, len(word)):
            broken = re.compile(rf"(?<![A-Za-z]){word[:i]}[ \n]+{word[i:]}(?![A-Za-z])")
            for text in texts:
                assert not broken.search(text), (word, i)
    for word in ("product", "threshold", "pending", "value", "status", "previous", "quarter", "sites"):
        assert re.search(rf"\b{word}\b", texts[0]), word


def test_column_widths_never_break_a_header_word():
    """A table far wider than the page gives way in its cells, never in its headers' words."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    from rmm_monitor.export.report import CELL_SIZE, Block, _col_widths, _fonts

    for langs in (("en",), ("zh", "en")):
        regular, bold = _fonts(langs)
        headers = ("KPI", ("产品", "product"), "threshold", "pending", "previous quarter", "status", "observed")
        bl = Block("table", headers=headers, rows=(tuple("x" * 60 + " " + "y" * 40 for _ in headers),))
        widths = _col_widths(bl, 500, regular, bold)
        for h, w in zip(headers, widths):
            for part in h if isinstance(h, tuple) else (h,):
                for word in part.split():
                    assert w >= stringWidth(word, bold, CELL_SIZE) + 12, (langs, word)


def test_site_axis_limits():
    from rmm_monitor.export.charts import site_axis_limits

    hib, lib = "higher_is_better", "lower_is_better"
    assert site_axis_limits([1.0, 1.0, 1.0], [0.95], hib) == (0.9, 1.0)  # not 98 %-102 %
    assert site_axis_limits([1.0], [1.0], hib) == (0.9, 1.0)  # zero tolerance, all at 100 %
    assert site_axis_limits([0.5, 0.5], [0.5], hib) == (0.4, 1.0)  # all equal
    assert site_axis_limits([0.02, 0.97], [0.8], hib) == (0.0, 1.0)
    assert site_axis_limits([0.0, 0.05], [0.1], lib) == (0.0, 0.2)
    assert site_axis_limits([0.0], [0.0], lib) == (0.0, 0.1)
    assert site_axis_limits([], [], hib) == (0.0, 1.0)
    for values, th, d in (([1.0] * 5, [0.999], hib), ([0.3, 0.99], [0.9], hib), ([0.96, 0.2], [0.9], lib)):
        low, high = site_axis_limits(values, th, d)
        assert 0.0 <= low < high <= 1.0 and high - low >= 0.1 - 1e-9
        assert low <= min(values + th) and high >= max(values + th)


def test_first_page_lists_each_breach_with_its_sites_and_review_case(exports, breach):
    _, kpi, row, case_id = breach
    raw = {lang: _text(out / "report.pdf", "-f", "1", "-l", "1") for lang, out in exports.items()}
    page = {lang: _flowing(text) for lang, text in raw.items()}
    dense = {lang: _dense(text) for lang, text in raw.items()}
    value = f"{100 * float(row['value']):.1f}%"
    for lang, text in page.items():
        assert row["site_id"] in text and f"{value} ({row['numerator']}/{row['denominator']})" in text, lang
        assert case_id in text, lang
    assert "Breaches and warnings this quarter" in page["en"] and kpi.title in page["en"]
    assert f"{case_id} open" in page["en"]
    assert "本季度超限和预警" in dense["zh"] and kpi.title_zh in dense["zh"] and f"{case_id}待评估" in dense["zh"]
    assert kpi.title_zh in dense["zh,en"] and kpi.title in page["zh,en"]
    assert (ARTIFACTS / "report-zh-en-page1.png").stat().st_size > 5000


def _rows_only(rows: list[dict]):
    """A snapshot holding only KPI rows: what the first page's table is made from."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from rmm_monitor.core.periods import parse_period
    from rmm_monitor.export import Snapshot

    return Snapshot(
        quarter=parse_period(QUARTER, parse_time(AS_OF)),
        as_of=datetime(2026, 10, 15, tzinfo=timezone.utc),
        catalog=load_catalog(),
        rows=rows,
        previous=[],
        units=pa.table({}),
        trend=[],
        counts_by_topic={},
        alerts=[],
        cases=[],
        dq=[],
        source="test",
    )


def test_first_page_says_so_when_nothing_is_in_breach_or_warning():
    from rmm_monitor.export.report import _action_blocks
    from rmm_monitor.export.words import Langs

    snap = _rows_only([])
    blocks = _action_blocks(snap, Langs(("zh", "en")))
    assert [b.kind for b in blocks] == ["h2", "p"]
    assert blocks[1].text == (WORDS["action_none"]["zh"], WORDS["action_none"]["en"])


def test_a_missing_font_names_the_debian_package(tmp_path):
    from rmm_monitor.core.errors import ConfigError
    from rmm_monitor.export.fonts import cjk_font

    with pytest.raises(ConfigError, match="fonts-wqy-microhei"):
        cjk_font((tmp_path / "wqy-microhei.ttc",))


def test_first_page_names_at_most_six_sites_a_cell_so_a_large_programme_still_fits_the_page():
    """At 10 M events every site of a product breached a zero-tolerance KPI and the cell listing them outgrew the
    page (reportlab LayoutError, no report at all): a cell names the six worst and how many more there are."""
    from rmm_monitor.export.report import CELL_ITEMS, _action_blocks
    from rmm_monitor.export.words import Langs

    def row(site, numerator):
        return {"kpi": "chain_of_identity_verified", "product": "CTX-19", "site_id": site, "status": "breach",
                "value": numerator / 20, "numerator": numerator, "denominator": 20, "threshold": 1.0,
                "ci_low": numerator / 20 - 0.1, "ci_high": min(1.0, numerator / 20 + 0.1)}  # fmt: skip

    sites = [row(f"S-{i:02d}", 19 - i % 3) for i in range(20)]
    snap = _rows_only([row(None, 360), *sites])
    [table] = [b for b in _action_blocks(snap, Langs(("en", "zh"))) if b.kind == "table"]
    [cells] = table.rows
    en, zh = cells[3]
    assert en.count(";") == CELL_ITEMS and en.endswith("and 14 more") and zh.endswith("另有 14 个"), cells[3]
    assert en.startswith("S-02 85.0% (17/20)"), "the worst first"
