"""kpis.xlsx: summary, one sheet per KPI with per-site rows, alerts and review cases with their audit trail,
data quality, definitions. Real Excel formatting: frozen header, filters, number formats, status colours
as conditional formatting (they follow the cell if a reviewer edits it)."""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from functools import partial
from pathlib import Path

from openpyxl import Workbook
from openpyxl.formatting.rule import FormulaRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from rmm_monitor.kpi import load_labels
from rmm_monitor.kpi.rulebook import load_rulebook

from .words import Langs, alert_title

PCT = "0.0%"
STATUS_FILLS = {
    "ok": "C6EFCE",
    "warning": "FFEB9C",
    "breach": "FFC7CE",
    "insufficient_data": "E7E6E6",
    "failed": "FFC7CE",
    "passed": "C6EFCE",
}
HEAD_FONT = Font(bold=True, color="FFFFFF")
HEAD_FILL = PatternFill("solid", start_color="305496")


def _sheet(
    wb: Workbook,
    title: str,
    headers: list[tuple[str, int, str | None]],
    rows: list[list],
    status_col: int | None = None,
    status_words: dict[str, str] | None = None,
):
    """headers: (name, width, number format). Frozen header row, autofilter, conditional status colours
    (`status_col`: its index in `headers`; `status_words`: the word written for each status, if not itself)."""
    ws = wb.create_sheet(title[:31])
    ws.append([h for h, _, _ in headers])
    for c, (_, width, _) in enumerate(headers, 1):
        cell = ws.cell(row=1, column=c)
        cell.font, cell.fill = HEAD_FONT, HEAD_FILL
        cell.alignment = Alignment(vertical="center", wrap_text=True)
        ws.column_dimensions[get_column_letter(c)].width = width
    for r in rows:
        ws.append(r)
    for c, (_, _, fmt) in enumerate(headers, 1):
        if fmt:
            for row in ws.iter_rows(min_row=2, min_col=c, max_col=c):
                row[0].number_format = fmt
    ws.freeze_panes = "B2"
    # printed (or converted to PDF by an office suite) one page wide, landscape, header row on every page
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.print_title_rows = "1:1"
    last = f"{get_column_letter(len(headers))}{max(2, ws.max_row)}"
    ws.auto_filter.ref = f"A1:{last}"
    if status_col is not None and ws.max_row >= 2:
        letter = get_column_letter(status_col + 1)
        rng = f"A2:{last}"
        for status, colour in STATUS_FILLS.items():
            word = (status_words or {}).get(status, status).replace('"', '""')
            ws.conditional_formatting.add(
                rng,
                FormulaRule(
                    formula=[f'${letter}2="{word}"'], fill=PatternFill("solid", start_color=colour, end_color=colour)
                ),
            )
    return ws


def _sheet_name(kpi_id: str, used: set[str]) -> str:
    name = kpi_id[:31]
    n = 2
    while name in used:
        name = f"{kpi_id[:28]}~{n}"
        n += 1
    used.add(name)
    return name


class _Words:
    """The sheet's words in the export's language(s): one language as is; two, the leading one first (headers on
    two lines, cells as "leading / other"). Statuses keep their codes in English (as kpis.csv has them, for
    filters and formulas); in Chinese they are the catalog's names."""

    def __init__(self, langs: tuple):
        self.L = Langs(tuple(langs))
        self.labels = load_labels()

    def head(self, key: str) -> str:
        return self.L.joined(lambda g: self.L.one(f"col.{key}", g), "\n")

    def word(self, key: str, **values) -> str:
        return self.L.joined(lambda g: self.L.one(key, g, **values))

    def sheet(self, key: str) -> str:
        return self.L.joined(lambda g: self.L.one(f"sheet.{key}", g), " ")[:31]

    def status(self, status: str | None) -> str | None:
        if status is None or self.L.langs == ("en",):
            return status
        return self.L.joined(lambda g: self.labels.status(status, g))

    def statuses(self) -> dict[str, str]:
        return {s: str(self.status(s)) for s in STATUS_FILLS}

    def text(self, fn) -> str:
        """A catalog text (title, description) in each language, one per line."""
        return self.L.joined(fn, "\n")


def write_xlsx(snap, path: Path) -> None:
    W = _Words(tuple(getattr(snap, "langs", ("en",))))
    labels = load_labels()
    wb = Workbook()
    wb.remove(wb.active)
    titles = {k.id: k for k in snap.catalog}
    summary = []
    for r in snap.programme_rows():
        k = titles[r["kpi"]]
        prev = snap.previous_value(r["kpi"], r["product"])
        change = None if prev is None or r["value"] is None else round(r["value"] - prev, 4)
        summary.append(
            [
                r["kpi"],
                W.text(k.title_in),
                W.text(partial(labels.name, "armms", k.armm)),
                r["product"],
                r["value"],
                r["ci_low"],
                r["ci_high"],
                r["threshold"],
                W.word(r["direction"]),
                W.status(r["status"]),
                r["numerator"],
                r["denominator"],
                r["pending"],
                prev,
                change,
            ]
        )
    _sheet(
        wb,
        W.sheet("summary"),
        [
            (W.head("kpi"), 34, None),
            (W.head("title"), 44, None),
            (W.head("armm"), 22, None),
            (W.head("product"), 10, None),
            (W.head("value"), 9, PCT),
            (W.head("ci_low"), 9, PCT),
            (W.head("ci_high"), 9, PCT),
            (W.head("threshold"), 10, PCT),
            (W.head("direction"), 16, None),
            (W.head("status"), 16, None),
            (W.head("numerator"), 10, "0"),
            (W.head("n"), 8, "0"),
            (W.head("pending"), 9, "0"),
            (W.head("prev"), 11, PCT),
            (W.head("change"), 9, "+0.0%;-0.0%;0.0%"),
        ],
        summary,
        status_col=9,
        status_words=W.statuses(),
    )
    used = {W.sheet("summary")}
    for k in snap.catalog:
        rows = [
            [
                r["product"],
                r["site_id"] or W.word("all_sites"),
                r["value"],
                r["ci_low"],
                r["ci_high"],
                r["threshold"],
                W.status(r["status"]),
                r["numerator"],
                r["denominator"],
                r["pending"],
            ]
            for r in snap.rows
            if r["kpi"] == k.id
        ]
        ws = _sheet(
            wb,
            _sheet_name(k.id, used),
            [
                (W.head("product"), 10, None),
                (W.head("site"), 14, None),
                (W.head("value"), 9, PCT),
                (W.head("ci_low"), 9, PCT),
                (W.head("ci_high"), 9, PCT),
                (W.head("threshold"), 10, PCT),
                (W.head("status"), 16, None),
                (W.head("numerator"), 10, "0"),
                (W.head("n"), 8, "0"),
                (W.head("pending"), 9, "0"),
            ],
            rows,
            status_col=6,
            status_words=W.statuses(),
        )
        ws["L1"] = W.text(k.title_in)
        ws["L1"].font = Font(bold=True)
        ws["L1"].alignment = Alignment(wrap_text=True, vertical="top")
        ws["L2"] = W.text(k.description_in)
        ws["L2"].alignment = Alignment(wrap_text=True, vertical="top")
        ws.column_dimensions["L"].width = 70
    # .get: the alerting schema may grow; a renamed column must not stop a regulatory export
    trail = [
        [
            W.word("kind.alert"),
            a.get("alert_id"),
            a.get("product"),
            a.get("site_id"),
            a.get("kpi"),
            a.get("section"),
            W.text(partial(alert_title, a)),
            a.get("state"),
            a.get("actor"),
            a.get("at"),
            a.get("comment"),
        ]
        for a in snap.alerts
    ]
    trail += [
        [
            W.word("kind.case"),
            c.get("case_id"),
            c.get("product"),
            "",
            "",
            c.get("section"),
            W.word("outcome_is", outcome=c["outcome"])
            + (f" (v{c['material_version']})" if c.get("material_version") else "")
            if c.get("outcome")
            else "",
            c.get("state"),
            c.get("actor"),
            c.get("at"),
            c.get("comment"),
        ]
        for c in snap.cases
    ]
    _sheet(
        wb,
        W.sheet("alerts"),
        [
            (W.head("kind"), 12, None),
            (W.head("id"), 16, None),
            (W.head("product"), 10, None),
            (W.head("site"), 10, None),
            (W.head("kpi"), 30, None),
            (W.head("section"), 18, None),
            (W.head("title"), 50, None),
            (W.head("state"), 14, None),
            (W.head("by"), 14, None),
            (W.head("at_utc"), 22, None),
            (W.head("comment"), 40, None),
        ],
        trail,
    )
    passed, failed = W.word("passed"), W.word("failed")
    dq_rows = [
        [
            r["suite"],
            r["expectation"],
            r.get("severity", "critical" if r["critical"] else "warning"),
            passed if r["success"] else failed,
            r["observed"],
            r.get("why", ""),
        ]
        for r in snap.dq
    ]
    _sheet(
        wb,
        W.sheet("dq"),
        [
            (W.head("suite"), 22, None),
            (W.head("expectation"), 40, None),
            (W.head("severity"), 10, None),
            (W.head("result"), 10, None),
            (W.head("observed"), 36, None),
            (W.head("why"), 80, None),
        ],
        dq_rows,
        status_col=3,
        status_words={"passed": passed, "failed": failed},
    )
    defs = [
        [
            k.id,
            W.text(k.title_in),
            k.family,
            W.text(partial(labels.name, "armms", k.armm)),
            W.text(k.description_in),
            W.text(k.unit_in),
            k.anchor,
            W.text(k.success_in),
            k.window,
            k.direction,
            k.threshold,
            k.min_n,
            W.word("yes" if k.zero_tolerance else "no"),
            k.review_section,
        ]
        for k in snap.catalog
    ]
    ws = _sheet(
        wb,
        W.sheet("definitions"),
        [
            (W.head("kpi"), 34, None),
            (W.head("title"), 40, None),
            (W.head("family"), 12, None),
            (W.head("armm"), 22, None),
            (W.head("description"), 80, None),
            (W.head("unit"), 40, None),
            (W.head("anchor"), 30, None),
            (W.head("success"), 50, None),
            (W.head("window"), 40, None),
            (W.head("direction"), 16, None),
            (W.head("threshold_default"), 12, PCT),
            (W.head("min_n"), 8, "0"),
            (W.head("zero_tolerance"), 10, None),
            (W.head("review_section"), 18, None),
        ],
        defs,
    )
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    _rules_sheet(wb, snap, W)
    _audit_sheet(wb, snap, W)
    stamp = snap.as_of.replace(tzinfo=None)
    wb.properties.creator = "rmm-monitor"
    wb.properties.title = W.word("xlsx_title", quarter=snap.quarter.label)
    wb.properties.created = stamp
    wb.save(path)
    _normalise(path, stamp)


def _normalise(path: Path, stamp: datetime) -> None:
    """openpyxl stamps the save time into docProps/core.xml and every zip entry; put T there instead so the
    same snapshot gives the same bytes."""
    with zipfile.ZipFile(path) as src:
        entries = [(info.filename, src.read(info.filename)) for info in src.infolist()]
    when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in entries:
            if name == "docProps/core.xml":
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)", rb"\g<1>" + when + rb"\g<2>", data
                )
            info = zipfile.ZipInfo(
                name, date_time=(max(1980, stamp.year), stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            dst.writestr(info, data)


def catalog_signature(snap, entry) -> str:
    """Who signed a rule version or catalog change (rmm rules sign), if the signature is on this content."""
    mine = [s for s in snap.signatures if s["record_kind"] == "catalog_change" and s["record_id"] == entry.entry_id]
    valid = [s for s in mine if s["record_hash"] == entry.content_hash]
    if valid:
        return "; ".join(f"{s['full_name']} ({s['user_id']}), {s['meaning']}, {s['signed_at']}" for s in valid)
    return "signed for other content: NOT VALID for this entry" if mine else "not signed"


def _audit_sheet(wb: Workbook, snap, W: _Words) -> None:
    """The audit log's entries of the quarter up to the as-of time."""
    _sheet(
        wb,
        W.sheet("audit"),
        [
            (W.head("entry"), 8, "0"),
            (W.head("at"), 30, None),
            (W.head("by"), 16, None),
            (W.head("action"), 24, None),
            (W.head("record"), 40, None),
            (W.head("reason"), 60, None),
            (W.head("entry_hash"), 66, None),
        ],
        [
            [e["seq"], e["at"], e["actor"], e["action"], f"{e['record_table']} {e['record_key']}", e["reason"],
             e["entry_hash"]]
            for e in snap.audit
        ],
    )  # fmt: skip


def _rules_sheet(wb: Workbook, snap, W: _Words) -> None:
    """The rule sets by jurisdiction, product and date known at the as-of time, with their sources."""
    book = load_rulebook().known_at(snap.as_of)
    rows = [
        [
            v.rule,
            v.jurisdiction,
            v.product,
            v.effective_from.date().isoformat(),
            v.effective_to.date().isoformat() if v.effective_to else "",
            ", ".join(f"{k} {W.word('not_a_unit') if x is None else f'{x:g}'}" for k, x in v.values.items()),
            v.name,
            v.source,
            catalog_signature(snap, v),
        ]
        for v in book.versions
    ]
    ws = _sheet(
        wb,
        W.sheet("rules"),
        [
            (W.head("rule"), 32, None),
            (W.head("jurisdiction"), 12, None),
            (W.head("product"), 10, None),
            (W.head("effective_from"), 14, None),
            (W.head("effective_to"), 14, None),
            (W.head("values"), 50, None),
            (W.head("name"), 30, None),
            (W.head("source"), 90, None),
            (W.head("signed"), 40, None),
        ],
        rows,
    )
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
