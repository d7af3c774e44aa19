"""report.html and report.pdf: the readable effectiveness evaluation of a quarter.

The content is built once as a list of blocks (heading, paragraph, table, image) and rendered twice: to one
self-contained HTML file (charts inlined) and to a PDF with reportlab (pure PyPI, no browser or office suite
needed). Both carry only the as-of time, never the time they were written."""

from __future__ import annotations

import base64
import html
import io
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

from rmm_monitor import __version__
from rmm_monitor.core.fmt import pct as _pct
from rmm_monitor.core.periods import iso
from rmm_monitor.kpi import by_family, catalog_hash, load_labels
from rmm_monitor.kpi.rulebook import load_rulebook

from .charts import kpi_chart, status_overview

# What each indicator family asks, in the order an effectiveness evaluation reads them (GVP XVI: reach, knowledge,
# behaviour, outcome); the catalog says which family each KPI belongs to.


@dataclass
class Block:
    kind: str  # h1 h2 h3 p table img
    text: str = ""
    headers: tuple = ()
    rows: tuple = ()
    status_col: Optional[int] = None
    image: bytes = b""


def _ci(r) -> str:
    return "" if r["ci_low"] is None else f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%"


def months_of(quarter) -> list[str]:
    """The 12 calendar months the trend shows, up to the quarter's last."""
    months, t = [], quarter.end - timedelta(days=1)
    for _ in range(12):
        months.append(t.strftime("%Y-%m"))
        t = t.replace(day=1) - timedelta(days=1)
    return sorted(months)


def _site_blocks(kpi, sites: list[dict]) -> list[Block]:
    """Under each KPI's chart: how its sites are distributed, and every site in breach or warning by name (worst
    first), so nothing the chart can only show as a dot goes unnamed. Every site's row is in kpis.xlsx/csv."""
    if not sites:
        return []
    counts: dict[str, int] = {}
    for r in sites:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    values = sorted(r["value"] for r in sites if r["value"] is not None)
    spread = ""
    if values:

        def q(f):
            return values[min(len(values) - 1, int(f * (len(values) - 1) + 0.5))]

        spread = (
            f" Site values: median {_pct(q(0.5))}, 10th–90th percentile {_pct(q(0.1))}–{_pct(q(0.9))}, "
            f"range {_pct(values[0])}–{_pct(values[-1])}."
        )
    flagged = [r for r in sites if r["status"] in ("breach", "warning")]
    lower = kpi.direction != "higher_is_better"

    def worst_first(r):
        edge = (r["threshold"] - r["ci_low"]) if lower else (r["ci_high"] - r["threshold"])
        return (r["status"] != "breach", edge, r["site_id"] or "", r["product"] or "")

    out = [
        Block(
            "p",
            f"Per site: {len(sites)} site rows — "
            + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
            + "."
            + spread
            + (" Sites in breach or warning, worst first:" if flagged else " No site is in breach or warning.")
            + " Every site: kpis.xlsx, sheet "
            + kpi.id[:31]
            + ".",
        )
    ]
    if flagged:
        out.append(
            Block(
                "table",
                headers=("site", "product", "value", "95% CI", "threshold", "n", "pending", "status"),
                rows=tuple(
                    (
                        r["site_id"],
                        r["product"],
                        _pct(r["value"]),
                        _ci(r),
                        _pct(r["threshold"]),
                        f"{r['numerator']}/{r['denominator']}",
                        str(r["pending"]),
                        r["status"],
                    )
                    for r in sorted(flagged, key=worst_first)
                ),
                status_col=7,
            )
        )
    return out


OVERVIEW = "(status overview)"


def chart_jobs(snap) -> dict[str, tuple]:
    """Every chart of the report, by KPI id (and OVERVIEW): (drawing function, *its arguments)."""
    jobs: dict[str, tuple] = {OVERVIEW: overview_job(snap)}
    for k in snap.catalog:
        jobs[k.id] = kpi_job(
            k, snap.quarter, [t for t in snap.trend if t["kpi"] == k.id], [r for r in snap.rows if r["kpi"] == k.id]
        )
    return jobs


def overview_job(snap) -> tuple:
    return (status_overview, snap.programme_rows(), {k.id: k.title for k in snap.catalog})


def kpi_job(kpi, quarter, trend: list[dict], rows: list[dict]) -> tuple:
    """One KPI's chart from its own figures (the export has them before the other KPIs' are in)."""
    return (kpi_chart, kpi, trend, [r for r in rows if r["site_id"] is not None], months_of(quarter))


class Charts:
    """The report's charts, rendered in worker processes while the caller goes on: given a snapshot, all at
    once; or, during the export, each KPI's as soon as its figures are in (`add`), while the next KPI's queries
    run (they leave one of two cores idle much of the time), and the overview once all are (`add_overview`)."""

    def __init__(self, snap=None, workers: Optional[int] = None):
        # spawn, not fork: the parent holds a DuckDB connection and threads
        self._pool = ProcessPoolExecutor(
            max_workers=workers or min(os.cpu_count() or 1, 4), mp_context=multiprocessing.get_context("spawn")
        )
        self._futures: dict[str, Future] = {}
        if snap is not None:
            for name, job in chart_jobs(snap).items():
                self._submit(name, job)

    def _submit(self, name: str, job: tuple) -> None:
        self._futures[name] = self._pool.submit(*job)

    def add(self, kpi, quarter, trend: list[dict], rows: list[dict]) -> None:
        self._submit(kpi.id, kpi_job(kpi, quarter, trend, rows))

    def add_overview(self, snap) -> None:
        self._submit(OVERVIEW, overview_job(snap))

    def get(self, name: str) -> Optional[bytes]:
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def build(snap, progress: Callable[[str], None], charts: Optional[Charts] = None) -> list[Block]:
    """`charts`: rendered ahead (see `Charts`); without it each chart is drawn here, in turn."""
    chart = _chart_source(snap, charts)
    b = _summary_blocks(snap, chart)
    b += _section_blocks(snap, progress, chart)
    b += _alert_blocks(snap)
    b += _audit_blocks(snap)
    b += _dq_blocks(snap)
    b += _method_blocks(snap)
    return b


def _chart_source(snap, charts: Optional[Charts]) -> Callable[[str], Optional[bytes]]:
    """A chart's PNG by name: from `charts` when they were rendered ahead, else drawn when asked for."""
    if charts is not None:
        return charts.get
    jobs = chart_jobs(snap)

    def draw(name: str) -> Optional[bytes]:
        fn, *args = jobs[name]
        return fn(*args)

    return draw


def _summary_blocks(snap, chart: Callable[[str], Optional[bytes]]) -> list[Block]:
    """Title, what the report covers, and the programme summary: status overview chart and table."""
    prog = snap.programme_rows()
    by_status: dict[str, int] = {}
    for r in prog:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    products = sorted({r["product"] for r in prog})
    b: list[Block] = [
        Block("h1", f"Effectiveness of the additional risk minimisation measures — {snap.quarter.label}"),
        Block(
            "p",
            f"Products: {', '.join(products) or 'none'}. Data as of {iso(snap.as_of)} (events known at that "
            f"time; a re-run with the same as-of gives the same numbers). "
            f"Catalog {catalog_hash(as_of=snap.as_of)[:12]}, "
            f"rmm-monitor {__version__}. {sum(snap.counts_by_topic.values())} events.",
        ),
        *_signing_blocks(snap),
        Block("h2", "Programme summary"),
        Block(
            "p",
            f"{len(prog)} indicator rows (KPI × product): "
            + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(by_status.items()))
            + ". Breach: the whole 95 % confidence interval is on the wrong side of the threshold; warning: "
            "the value is, the interval is not; insufficient data: fewer units than the KPI's minimum.",
        ),
    ]
    overview = chart(OVERVIEW)
    if overview:  # None when there are no programme rows
        b.append(Block("img", image=overview))
    b.append(_programme_table(snap, prog))
    return b


def _signing_blocks(snap) -> list[Block]:
    s = snap.signing
    if s is None:
        return [Block("p", "Not signed. (A QPPV signs an evaluation with rmm export --sign.)")]
    return [
        Block(
            "p",
            f"Signed electronically by {s['full_name']} ({s['user_id']}), meaning: {s['meaning']}, at "
            f"{s['signed_at']}. The signature (Ed25519, made with the signer's password; signature.json) covers "
            "manifest.json, which holds the sha256 of every file of this evaluation: rmm export verify DIR checks "
            "them.",
        )
    ]


def _programme_table(snap, prog: list[dict]) -> Block:
    """Every programme row (KPI × product), with the previous quarter's value beside it."""
    titles = {k.id: k.title for k in snap.catalog}
    return Block(
        "table",
        headers=("KPI", "product", "value", "95% CI", "threshold", "n", "pending", "prev. quarter", "status"),
        rows=tuple(
            (
                titles[r["kpi"]],
                r["product"],
                _pct(r["value"]),
                _ci(r),
                _pct(r["threshold"]),
                f"{r['numerator']}/{r['denominator']}",
                str(r["pending"]),
                _pct(snap.previous_value(r["kpi"], r["product"])),
                r["status"],
            )
            for r in prog
        ),
        status_col=8,
    )


def _section_blocks(snap, progress: Callable[[str], None], chart: Callable[[str], Optional[bytes]]) -> list[Block]:
    """One numbered section per indicator family, in the order an evaluation reads them: reach, knowledge,
    behaviour, outcome; its KPIs in catalog order."""
    b: list[Block] = []
    for n, (family, kpis) in enumerate(by_family(snap.catalog).items(), 1):
        b.append(Block("h2", f"{n}. {load_labels().family(family)}"))
        b.append(Block("p", load_labels().family_intro(family)))
        for k in kpis:
            progress(f"chart {k.id}")
            image = chart(k.id)
            if image is None:  # kpi_chart always draws; only the status overview can be empty
                raise RuntimeError(f"no chart for KPI {k.id}")
            b += _kpi_blocks(snap, k, image)
    return b


def _kpi_blocks(snap, k, image: bytes) -> list[Block]:
    """One KPI: its definition, chart, per-product table and the sites behind it."""
    rows = [r for r in snap.rows if r["kpi"] == k.id]
    return (
        [
            Block("h3", f"{k.title} ({k.id})"),
            Block(
                "p",
                f"aRMM: {k.armm}. {k.description} Unit: {k.unit}. Success: {k.success or 'see definition'}. "
                f"Threshold {_pct(k.threshold)} ({k.direction.replace('_', ' ')}"
                f"{', zero tolerance' if k.zero_tolerance else ''}), minimum n {k.min_n}.",
            ),
            Block("img", image=image),
            Block(
                "table",
                headers=("product", "value", "95% CI", "threshold", "n", "pending", "status"),
                rows=tuple(
                    (
                        r["product"],
                        _pct(r["value"]),
                        _ci(r),
                        _pct(r["threshold"]),
                        f"{r['numerator']}/{r['denominator']}",
                        str(r["pending"]),
                        r["status"],
                    )
                    for r in rows
                    if r["site_id"] is None
                ),
                status_col=6,
            ),
        ]
        + _sample_blocks(k, rows)
        + _site_blocks(k, [r for r in rows if r["site_id"] is not None])
    )


def _sample_blocks(k, rows: list[dict]) -> list[Block]:
    """For a survey KPI (a pre-specified sample size per product): whether each product's sample was reached."""
    if "sample_target" not in k.stats:
        return []
    lines = []
    for r in rows:
        if r["site_id"] is not None or r["product"] is None:
            continue
        target, n = r["stats"].get("sample_target"), r["denominator"]
        if target is None:
            lines.append(f"{r['product']}: {n} assessments; no sample size pre-specified")
        else:
            reached = "reached" if r["stats"].get("sample_reached") else "NOT reached"
            lines.append(f"{r['product']}: {n} assessments, pre-specified sample {int(target)} — {reached}")
    return [Block("p", "Survey sample: " + "; ".join(lines) + ".")] if lines else []


def _alert_blocks(snap) -> list[Block]:
    b = [Block("h2", "Alerts and review cases")]
    if snap.alerts or snap.cases:
        b += [_alerts_table(snap.alerts), _cases_table(snap.cases)]
    else:
        b.append(Block("p", "No alerts or review cases were recorded up to the as-of time."))
    decisions = [s for s in snap.signatures if s["record_kind"] in ("alert", "review_case")]
    if decisions:
        b.append(
            Block(
                "p",
                "Electronic signatures on the decisions (each made with the signer's password, bound to the record it "
                "signs; rmm reviews show / rmm alerts show check them): "
                + "; ".join(
                    f"{s['record_id']}: {s['full_name']} ({s['user_id']}), {s['meaning']}, {s['signed_at']}"
                    for s in decisions
                )
                + ".",
            )
        )
    return b


def _audit_blocks(snap) -> list[Block]:
    """The audit log's entries of the quarter (who, when, what, why), up to the as-of time."""
    b = [
        Block("h2", "Audit trail"),
        Block(
            "p",
            f"{len(snap.audit)} entries of the audit log logged in {snap.quarter.label} up to the as-of time: every "
            "change to an alert, a review case, a user, a token or a signature, hash-chained and published outside "
            "the database (rmm audit verify checks the chain and every record; rmm audit export writes it all).",
        ),
    ]
    if snap.audit:
        b.append(
            Block(
                "table",
                headers=("entry", "at", "by", "action", "record", "reason"),
                rows=tuple(
                    (str(e["seq"]), e["at"], e["actor"], e["action"], f"{e['record_table']} {e['record_key']}",
                     e["reason"])
                    for e in snap.audit
                ),
            )
        )  # fmt: skip
    return b


def _alerts_table(alerts: list[dict]) -> Block:
    return Block(
        "table",
        headers=("alert", "product", "site", "KPI", "title", "state", "by", "at"),
        rows=tuple(
            (
                a.get("alert_id"),
                a.get("product"),
                a.get("site_id"),
                a.get("kpi"),
                a.get("title"),
                a.get("state"),
                a.get("actor"),
                a.get("at"),
            )
            for a in alerts
        ),
    )


def _cases_table(cases: list[dict]) -> Block:
    return Block(
        "table",
        headers=("review case", "product", "section", "state", "outcome", "by", "at"),
        rows=tuple(
            (
                c.get("case_id"),
                c.get("product"),
                c.get("section"),
                c.get("state"),
                (c.get("outcome") or "") + (f" v{c['material_version']}" if c.get("material_version") else ""),
                c.get("actor"),
                c.get("at"),
            )
            for c in cases
        ),
    )


def _dq_blocks(snap) -> list[Block]:
    """The data-quality expectations of the quarter, failed first."""
    q = snap.quarter.label
    failed = [r for r in snap.dq if not r["success"]]
    return [
        Block("h2", "Data quality"),
        Block(
            "p",
            f"{len(snap.dq)} expectations (Great Expectations suites in expectations/, run over the "
            f"events of {q} known at the as-of time; references resolved against all known events): "
            f"{len(snap.dq) - len(failed)} passed, {len(failed)} failed "
            f"({sum(1 for r in failed if r['critical'])} critical). A failing critical expectation means "
            f"some KPI numbers above rest on incomplete or inconsistent data.",
        ),
        Block(
            "table",
            headers=("suite", "expectation", "severity", "result", "observed"),
            rows=tuple(
                (
                    r["suite"],
                    r["expectation"],
                    "critical" if r["critical"] else "warning",
                    "passed" if r["success"] else "failed",
                    r["observed"],
                )
                for r in sorted(snap.dq, key=lambda r: (r["success"], r["suite"], r["expectation"]))
            ),
            status_col=3,
        ),
    ]


def _method_blocks(snap) -> list[Block]:
    q = snap.quarter.label
    return (
        [Block("h2", "Method notes")]
        + [
            Block("p", text)
            for text in (
                "Each KPI is numerator / denominator over units (an infusion, an HCP, a CRS episode, an AE ...); a "
                f"unit belongs to {q} by its anchor time (event time, UTC). Definitions, thresholds and windows come "
                "from the KPI catalog (metrics/*.yml; the definitions sheet of kpis.xlsx lists them in full).",
                f"As-of: only events known (recorded) at or before {iso(snap.as_of)} are used, and windows are judged "
                "at that time. A unit whose window is still open without an outcome is pending and left out of "
                "numerator and denominator.",
                "Confidence intervals: Wilson score, 95 % (z = 1.959964). Status: ok if the value meets the "
                "threshold, warning if only the interval does, breach if the interval misses it; zero-tolerance KPIs "
                "breach on any failure. Duplicate deliveries (same event_id) count once.",
                "Events per topic: " + ", ".join(f"{t} {n}" for t, n in snap.counts_by_topic.items()) + ".",
                "Units behind every number (pseudonymous patient, HCP, AE and lot references with the reason of each "
                "outcome) are in units.parquet; the KPI rows in kpis.csv / kpis.parquet; file hashes in manifest.json.",
                "Rules by jurisdiction, product and date (metrics/rules/rule_sets.yml): where a requirement differs by "
                "country and changed on a known date, each unit is judged by the version in force for its site's "
                "jurisdiction and its product at its anchor time. A unit the rule in force does not cover (e.g. an "
                "infusion in the US after the REMS ended, a non-serious US adverse event) is excluded: listed in "
                "units.parquet with the rule named, counted in neither numerator nor denominator. Only versions known "
                f"at {iso(snap.as_of)} are used; those and their sources:",
            )
        ]
        + _rule_blocks(snap)
    )


def _rule_blocks(snap) -> list[Block]:
    """The rule versions and dated catalog changes known at the as-of time, with their sources."""
    book = load_rulebook().known_at(snap.as_of)

    def values(v) -> str:
        return ", ".join(f"{k} {'not a unit' if x is None else f'{x:g}'}" for k, x in v.values.items())

    b = [
        Block(
            "table",
            headers=("rule", "jurisdiction", "product", "in force", "values", "name", "source"),
            rows=tuple(
                (
                    v.rule,
                    v.jurisdiction,
                    v.product,
                    f"{v.effective_from.date()} – {v.effective_to.date() if v.effective_to else ''}",
                    values(v),
                    v.name,
                    v.source,
                )
                for v in book.versions
            ),
        ),
        Block(
            "p",
            "Jurisdictions: "
            + "; ".join(
                f"{j}: {', '.join(sorted(c for c, jj in book.jurisdictions.items() if jj == j))}"
                for j in sorted(set(book.jurisdictions.values()))
            )
            + "; any other country, or a site with no registration known: default (the CN values).",
        ),
    ]
    if book.changes:
        b.append(
            Block("p", "Dated changes of thresholds and parameters (metrics/rules/changes.yml), known at the as-of:")
        )
        b.append(
            Block(
                "table",
                headers=("KPI", "product", "key", "value", "effective from", "known from", "reason", "source"),
                rows=tuple(
                    (
                        c.kpi,
                        c.product,
                        c.key,
                        str(c.value),
                        str(c.effective_from.date()),
                        iso(c.known_from),
                        c.reason,
                        c.source,
                    )
                    for c in book.changes
                ),
            )
        )
    return b


# --- HTML ----------------------------------------------------------------------------------------------------
_CSS = """body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1000px;margin:2em auto;color:#222;font-size:14px}
h1{color:#1f4e79}h2{color:#1f4e79;border-bottom:2px solid #1f4e79;padding-bottom:2px;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:12px}th{background:#305496;color:#fff;text-align:left}
td,th{border:1px solid #bbb;padding:3px 6px}img{max-width:100%}
.ok{background:#c6efce}.warning{background:#ffeb9c}.breach,.failed{background:#ffc7ce}.insufficient_data{background:#e7e6e6}
.passed{background:#c6efce}"""


def render_html(blocks: list[Block], title: str) -> str:
    out = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
    ]
    for bl in blocks:
        if bl.kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{bl.kind}>{html.escape(bl.text)}</{bl.kind}>")
        elif bl.kind == "img":
            out.append(f'<p><img alt="chart" src="data:image/png;base64,{base64.b64encode(bl.image).decode()}"></p>')
        elif bl.kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in bl.headers) + "</tr>")
            for row in bl.rows:
                cls = f' class="{html.escape(str(row[bl.status_col]))}"' if bl.status_col is not None else ""
                out.append(
                    f"<tr{cls}>"
                    + "".join(f"<td>{html.escape(str(c if c is not None else ''))}</td>" for c in row)
                    + "</tr>"
                )
            out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


# --- PDF -----------------------------------------------------------------------------------------------------
def _fonts() -> tuple[str, str]:
    """DejaVu from matplotlib's own data (full Unicode: en dashes, ≥, ×), registered once."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "DejaVu" not in pdfmetrics.getRegisteredFontNames():
        base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("DejaVu", str(base / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("DejaVu-Bold", str(base / "DejaVuSans-Bold.ttf")))
    return "DejaVu", "DejaVu-Bold"


def _col_widths(bl: Block, width: float, font: str, bold: str) -> list[float]:
    """Columns sized by their longest text (capped), never narrower than their longest single word (in the bold
    face for the header), so a KPI title gets room and neither "passed" nor "product" is broken in two."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    def w(text: str, face: str = font) -> float:
        return stringWidth(text, face, 7.2) + 14  # + the table's 6 pt cell padding on each side

    cols = list(zip(bl.headers, *bl.rows)) if bl.rows else [(h,) for h in bl.headers]
    cells = [[str(c) if c is not None else "" for c in col] for col in cols]
    floor = [
        max([w(word, bold) for word in h.split()] + [w(word) for c in col[1:] for word in c.split()] + [w("")])
        for h, col in zip(bl.headers, cells)
    ]
    want = [max(floor[i], min(w(max(col, key=len)), width * 0.4)) for i, col in enumerate(cells)]
    spare = width - sum(floor)
    extra = [wa - fl for wa, fl in zip(want, floor)]
    if sum(want) <= width or spare <= 0:
        return want if sum(want) <= width else [width * f / sum(floor) for f in floor]
    return [fl + spare * e / sum(extra) for fl, e in zip(floor, extra)]


def render_pdf(blocks: list[Block], path: Path, title: str, footer: str) -> None:
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    regular, bold = _fonts()
    styles = {
        "h1": ParagraphStyle(
            "h1", fontName=bold, fontSize=16, leading=20, textColor=colors.HexColor("#1f4e79"), spaceAfter=8
        ),
        "h2": ParagraphStyle(
            "h2",
            fontName=bold,
            fontSize=13,
            leading=16,
            textColor=colors.HexColor("#1f4e79"),
            spaceBefore=10,
            spaceAfter=5,
        ),
        "h3": ParagraphStyle("h3", fontName=bold, fontSize=10.5, leading=13, spaceBefore=6, spaceAfter=3),
        "p": ParagraphStyle("p", fontName=regular, fontSize=8.8, leading=11.5, spaceAfter=4),
        "cell": ParagraphStyle("cell", fontName=regular, fontSize=7.2, leading=8.6),
        "head": ParagraphStyle("head", fontName=bold, fontSize=7.2, leading=8.6, textColor=colors.white),
    }
    width = A4[0] - 30 * mm
    story = []
    pending_heading = None
    for bl in blocks:
        if bl.kind in ("h1", "h2", "h3", "p"):
            flow = Paragraph(escape(bl.text), styles[bl.kind])
        elif bl.kind == "img":
            from reportlab.lib.utils import ImageReader

            iw, ih = ImageReader(io.BytesIO(bl.image)).getSize()
            h = width * ih / iw
            flow = Image(io.BytesIO(bl.image), width=width, height=min(h, 230 * mm))
        else:
            data = [[Paragraph(escape(h), styles["head"]) for h in bl.headers]]
            data += [
                [Paragraph(escape(str(c if c is not None else "")), styles["cell"]) for c in row] for row in bl.rows
            ]
            t = Table(data, repeatRows=1, hAlign="LEFT", colWidths=_col_widths(bl, width, regular, bold))
            cmds = [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#305496")),
                ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#bbbbbb")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
            if bl.status_col is not None:
                fills = {
                    "ok": "#c6efce",
                    "passed": "#c6efce",
                    "warning": "#ffeb9c",
                    "breach": "#ffc7ce",
                    "failed": "#ffc7ce",
                    "insufficient_data": "#e7e6e6",
                }
                for i, row in enumerate(bl.rows, 1):
                    colour = fills.get(str(row[bl.status_col]))
                    if colour:
                        cmds.append(("BACKGROUND", (bl.status_col, i), (bl.status_col, i), colors.HexColor(colour)))
            t.setStyle(TableStyle(cmds))
            flow = t
        if bl.kind in ("h2", "h3"):
            pending_heading = flow  # keep a heading on the page of what follows it
            continue
        story.append(KeepTogether([pending_heading, flow]) if pending_heading is not None else flow)
        pending_heading = None

    def page(canvas, doc):
        canvas.saveState()
        canvas.setFont(regular, 7)
        canvas.drawString(15 * mm, 10 * mm, footer)
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=16 * mm,
        title=title,
        author="rmm-monitor",
        subject=title,
        creator="rmm-monitor",
        invariant=1,
    )
    story.insert(1, Spacer(1, 2 * mm))
    doc.build(story, onFirstPage=page, onLaterPages=page)


def write_reports(snap, out: Path, progress: Callable[[str], None], charts: Optional[Charts] = None) -> None:
    blocks = build(snap, progress, charts)
    title = f"aRMM effectiveness evaluation {snap.quarter.label}"
    (out / "report.html").write_text(render_html(blocks, title), encoding="utf-8")
    progress("report.pdf")
    render_pdf(
        blocks,
        out / "report.pdf",
        title,
        f"{title} · as of {iso(snap.as_of)} · catalog {catalog_hash(as_of=snap.as_of)[:12]} · "
        f"rmm-monitor {__version__}",
    )
