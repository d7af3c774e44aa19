"""kpis.xlsx: summary, one sheet per KPI with per-site rows, alerts and review cases with their audit trail,
data quality, definitions. Real Excel formatting: frozen header, filters, number formats, status colours
as conditional formatting (they follow the cell if a reviewer edits it)."""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.formatting.rule import FormulaRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from rmm_monitor.kpi.rulebook import load_rulebook

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
    status_col: str | None = None,
):
    """headers: (name, width, number format). Frozen header row, autofilter, conditional status colours."""
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
    if status_col and ws.max_row >= 2:
        col = [h for h, _, _ in headers].index(status_col) + 1
        letter = get_column_letter(col)
        rng = f"A2:{last}"
        for word, colour in STATUS_FILLS.items():
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


def write_xlsx(snap, path: Path) -> None:
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
                k.title,
                k.armm,
                r["product"],
                r["value"],
                r["ci_low"],
                r["ci_high"],
                r["threshold"],
                r["direction"].replace("_", " "),
                r["status"],
                r["numerator"],
                r["denominator"],
                r["pending"],
                prev,
                change,
            ]
        )
    _sheet(
        wb,
        "Summary",
        [
            ("KPI", 34, None),
            ("title", 44, None),
            ("aRMM", 22, None),
            ("product", 10, None),
            ("value", 9, PCT),
            ("CI low", 9, PCT),
            ("CI high", 9, PCT),
            ("threshold", 10, PCT),
            ("direction", 16, None),
            ("status", 16, None),
            ("numerator", 10, "0"),
            ("n", 8, "0"),
            ("pending", 9, "0"),
            ("previous quarter", 11, PCT),
            ("change", 9, "+0.0%;-0.0%;0.0%"),
        ],
        summary,
        status_col="status",
    )
    used = {"Summary"}
    for k in snap.catalog:
        rows = [
            [
                r["product"],
                r["site_id"] or "(all sites)",
                r["value"],
                r["ci_low"],
                r["ci_high"],
                r["threshold"],
                r["status"],
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
                ("product", 10, None),
                ("site", 14, None),
                ("value", 9, PCT),
                ("CI low", 9, PCT),
                ("CI high", 9, PCT),
                ("threshold", 10, PCT),
                ("status", 16, None),
                ("numerator", 10, "0"),
                ("n", 8, "0"),
                ("pending", 9, "0"),
            ],
            rows,
            status_col="status",
        )
        ws["L1"] = k.title
        ws["L1"].font = Font(bold=True)
        ws["L2"] = k.description
        ws["L2"].alignment = Alignment(wrap_text=True, vertical="top")
        ws.column_dimensions["L"].width = 70
    # .get: the alerting schema may grow; a renamed column must not stop a regulatory export
    trail = [
        [
            "alert",
            a.get("alert_id"),
            a.get("product"),
            a.get("site_id"),
            a.get("kpi"),
            a.get("section"),
            a.get("title"),
            a.get("state"),
            a.get("actor"),
            a.get("at"),
            a.get("comment"),
        ]
        for a in snap.alerts
    ]
    trail += [
        [
            "review case",
            c.get("case_id"),
            c.get("product"),
            "",
            "",
            c.get("section"),
            f"outcome: {c['outcome']}" + (f" (v{c['material_version']})" if c.get("material_version") else "")
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
        "Alerts and reviews",
        [
            ("kind", 12, None),
            ("id", 16, None),
            ("product", 10, None),
            ("site", 10, None),
            ("KPI", 30, None),
            ("section", 18, None),
            ("title", 50, None),
            ("state", 14, None),
            ("by", 14, None),
            ("at (UTC)", 22, None),
            ("comment", 40, None),
        ],
        trail,
    )
    dq_rows = [
        [
            r["suite"],
            r["expectation"],
            r.get("severity", "critical" if r["critical"] else "warning"),
            "passed" if r["success"] else "failed",
            r["observed"],
            r.get("why", ""),
        ]
        for r in snap.dq
    ]
    _sheet(
        wb,
        "Data quality",
        [
            ("suite", 22, None),
            ("expectation", 40, None),
            ("severity", 10, None),
            ("result", 10, None),
            ("observed", 36, None),
            ("why it matters", 80, None),
        ],
        dq_rows,
        status_col="result",
    )
    defs = [
        [
            k.id,
            k.title,
            k.family,
            k.armm,
            k.description,
            k.unit,
            k.anchor,
            k.success,
            k.window,
            k.direction,
            k.threshold,
            k.min_n,
            "yes" if k.zero_tolerance else "no",
            k.review_section,
        ]
        for k in snap.catalog
    ]
    ws = _sheet(
        wb,
        "Definitions",
        [
            ("KPI", 34, None),
            ("title", 40, None),
            ("family", 12, None),
            ("aRMM", 22, None),
            ("description", 80, None),
            ("unit", 40, None),
            ("anchor", 30, None),
            ("success", 50, None),
            ("window", 40, None),
            ("direction", 16, None),
            ("threshold (default)", 12, PCT),
            ("min n", 8, "0"),
            ("zero tolerance", 10, None),
            ("review section", 18, None),
        ],
        defs,
    )
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    _rules_sheet(wb, snap)
    _audit_sheet(wb, snap)
    stamp = snap.as_of.replace(tzinfo=None)
    wb.properties.creator = "rmm-monitor"
    wb.properties.title = f"aRMM effectiveness KPIs {snap.quarter.label}"
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


def _audit_sheet(wb: Workbook, snap) -> None:
    """The audit log's entries of the quarter up to the as-of time."""
    _sheet(
        wb,
        "Audit trail",
        [
            ("entry", 8, "0"),
            ("at", 30, None),
            ("by", 16, None),
            ("action", 24, None),
            ("record", 40, None),
            ("reason", 60, None),
            ("entry hash", 66, None),
        ],
        [
            [e["seq"], e["at"], e["actor"], e["action"], f"{e['record_table']} {e['record_key']}", e["reason"],
             e["entry_hash"]]
            for e in snap.audit
        ],
    )  # fmt: skip


def _rules_sheet(wb: Workbook, snap) -> None:
    """The rule sets by jurisdiction, product and date known at the as-of time, with their sources."""
    book = load_rulebook().known_at(snap.as_of)
    rows = [
        [
            v.rule,
            v.jurisdiction,
            v.product,
            v.effective_from.date().isoformat(),
            v.effective_to.date().isoformat() if v.effective_to else "",
            ", ".join(f"{k} {'not a unit' if x is None else f'{x:g}'}" for k, x in v.values.items()),
            v.name,
            v.source,
            catalog_signature(snap, v),
        ]
        for v in book.versions
    ]
    ws = _sheet(
        wb,
        "Rules",
        [
            ("rule", 32, None),
            ("jurisdiction", 12, None),
            ("product", 10, None),
            ("effective from", 14, None),
            ("effective to", 14, None),
            ("values", 50, None),
            ("name", 30, None),
            ("source", 90, None),
            ("signed", 40, None),
        ],
        rows,
    )
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
