"""report.html and report.pdf: the readable effectiveness evaluation of a quarter, in English, Chinese or both.

The content is built once as a list of blocks (heading, paragraph, table, image) and rendered twice: to one
self-contained HTML file (charts inlined) and to a PDF with reportlab (pure PyPI, no browser or office suite
needed). Both carry only the as-of time, never the time they were written.

Languages (words.py): the report's own words come from words.WORDS; what the catalog names (KPI titles and
descriptions, families, review sections, statuses) from the catalog and metrics/labels; numbers once, formatted
the same in every language.

A bilingual report (`--lang zh,en`; the first is the leading language) is one document, not two stapled together:
a CDE reviewer reads the leading language straight through and finds the other right under each piece when a
term needs checking, and every figure appears once, so the two versions can never disagree. So: each heading is
in the leading language with the other right beneath it, a size smaller; each paragraph is in the leading
language, followed by the other in a smaller grey paragraph; each table appears once, with two-line column headers
(leading language, the other in a lighter tone), and the words in its cells (KPI titles, statuses, case states)
in both languages the same way; numbers once."""

from __future__ import annotations

import base64
import html
import io
import multiprocessing
import os
import re
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from rmm_monitor import __version__
from rmm_monitor.core.fmt import pct as _pct
from rmm_monitor.core.periods import iso
from rmm_monitor.kpi import by_family, catalog_hash, load_labels
from rmm_monitor.kpi.rulebook import load_rulebook

from .charts import kpi_chart, status_overview
from .fonts import cjk_font
from .words import WORDS, Langs, Txt, alert_title, texts

FLAGGED = ("breach", "warning")
CASE_STATES = ("open", "in_review", "closed")  # alerting/records.py; metrics/labels names each


@dataclass
class Block:
    kind: str  # h1 h2 h3 p table img
    text: Txt = ""
    headers: tuple = ()  # each a Txt
    rows: tuple = ()  # cells: Txt or None
    status_col: Optional[int] = None
    statuses: tuple = ()  # with status_col: each row's status code (its colour; the cell shows its label)
    image: bytes = b""
    cell_statuses: tuple = ()  # (row, column, status code) of other cells coloured by a status


def _ci(r) -> str:
    return "" if r["ci_low"] is None else f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%"


def _n(r) -> str:
    return f"{r['numerator']}/{r['denominator']}"


def months_of(quarter) -> list[str]:
    """The 12 calendar months the trend shows, up to the quarter's last."""
    months, t = [], quarter.end - timedelta(days=1)
    for _ in range(12):
        months.append(t.strftime("%Y-%m"))
        t = t.replace(day=1) - timedelta(days=1)
    return sorted(months)


def _status(L: Langs, status: str) -> Txt:
    labels = load_labels()
    return L.each(lambda g: labels.status(status, g))


def _counts(L: Langs, counts: dict[str, int]) -> Txt:
    """'5 breach, 14 insufficient data, ...' with the catalog's status names."""
    labels = load_labels()
    return L.each(
        lambda g: L.one("list_sep", g).join(
            L.one("count_of", g, n=n, what=labels.status(s, g)) for s, n in sorted(counts.items())
        )
    )


def _heads(L: Langs, *keys: str) -> tuple:
    return tuple(L.w(f"col.{k}") for k in keys)


def _figures_table(L: Langs, rows: list[dict], lead: tuple[tuple[str, str], ...]) -> Block:
    """KPI rows as a table: the `lead` columns ((header word, row field) each), then value, CI, threshold, n,
    pending and the coloured status."""
    return Block(
        "table",
        headers=_heads(L, *(col for col, _ in lead), "value", "ci", "threshold", "n", "pending", "status"),
        rows=tuple(
            (
                *(r[field] for _, field in lead),
                _pct(r["value"]),
                _ci(r),
                _pct(r["threshold"]),
                _n(r),
                str(r["pending"]),
                _status(L, r["status"]),
            )
            for r in rows
        ),
        status_col=len(lead) + 5,
        statuses=tuple(r["status"] for r in rows),
    )


def _worst_first(kpi):
    lower = kpi.direction != "higher_is_better"

    def key(r):
        edge = (r["threshold"] - r["ci_low"]) if lower else (r["ci_high"] - r["threshold"])
        return (r["status"] != "breach", edge, r["site_id"] or "", r["product"] or "")

    return key


def _site_blocks(L: Langs, kpi, sites: list[dict]) -> list[Block]:
    """Under each KPI's chart: how its sites are distributed, and every site in breach or warning by name (worst
    first), so nothing the chart can only show as a dot goes unnamed. Every site's row is in kpis.xlsx/csv."""
    if not sites:
        return []
    counts: dict[str, int] = {}
    for r in sites:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    values = sorted(r["value"] for r in sites if r["value"] is not None)

    def q(f):
        return values[min(len(values) - 1, int(f * (len(values) - 1) + 0.5))]

    flagged = [r for r in sites if r["status"] in FLAGGED]
    n_counts = _counts(L, counts)

    def text(g: str) -> str:
        spread = ""
        if values:
            spread = L.one(
                "site_spread",
                g,
                median=_pct(q(0.5)),
                p10=_pct(q(0.1)),
                p90=_pct(q(0.9)),
                low=_pct(values[0]),
                high=_pct(values[-1]),
            )
        return L.one(
            "per_site",
            g,
            rows=len(sites),
            counts=texts(n_counts)[L.langs.index(g)],
            spread=spread,
            flagged=L.one("sites_flagged" if flagged else "sites_none_flagged", g),
            sheet=kpi.id[:31],
        )

    out = [Block("p", L.each(text))]
    if flagged:
        ordered = sorted(flagged, key=_worst_first(kpi))
        out.append(_figures_table(L, ordered, (("site", "site_id"), ("product", "product"))))
    return out


OVERVIEW = "(status overview)"


def chart_jobs(snap) -> dict[str, tuple]:
    """Every chart of the report, by KPI id (and OVERVIEW): (drawing function, *its arguments)."""
    langs = tuple(snap.langs)
    jobs: dict[str, tuple] = {OVERVIEW: overview_job(snap)}
    for k in snap.catalog:
        jobs[k.id] = kpi_job(
            k,
            snap.quarter,
            [t for t in snap.trend if t["kpi"] == k.id],
            [r for r in snap.rows if r["kpi"] == k.id],
            langs,
        )
    return jobs


def overview_job(snap, langs: Optional[tuple] = None) -> tuple:
    langs = tuple(langs or snap.langs)
    # the chart's y labels in the leading language (the table under it has both)
    return (status_overview, snap.programme_rows(), {k.id: k.title_in(langs[0]) for k in snap.catalog}, langs)


def kpi_job(kpi, quarter, trend: list[dict], rows: list[dict], langs: tuple = ("en",)) -> tuple:
    """One KPI's chart from its own figures (the export has them before the other KPIs' are in)."""
    return (kpi_chart, kpi, trend, [r for r in rows if r["site_id"] is not None], months_of(quarter), langs)


class Charts:
    """The report's charts, rendered in worker processes while the caller goes on: given a snapshot, all at
    once; or, during the export, each KPI's as soon as its figures are in (`add`), while the next KPI's queries
    run (they leave one of two cores idle much of the time), and the overview once all are (`add_overview`)."""

    def __init__(self, snap=None, workers: Optional[int] = None, langs: tuple = ("en",)):
        # spawn, not fork: the parent holds a DuckDB connection and threads
        self._pool = ProcessPoolExecutor(
            max_workers=workers or min(os.cpu_count() or 1, 4), mp_context=multiprocessing.get_context("spawn")
        )
        self._futures: dict[str, Future] = {}
        self.langs = tuple(snap.langs) if snap is not None else tuple(langs)
        if snap is not None:
            for name, job in chart_jobs(snap).items():
                self._submit(name, job)

    def _submit(self, name: str, job: tuple) -> None:
        self._futures[name] = self._pool.submit(*job)

    def add(self, kpi, quarter, trend: list[dict], rows: list[dict]) -> None:
        self._submit(kpi.id, kpi_job(kpi, quarter, trend, rows, self.langs))

    def add_overview(self, snap) -> None:
        self._submit(OVERVIEW, overview_job(snap, self.langs))  # the export sets snap.langs later

    def get(self, name: str) -> Optional[bytes]:
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def build(snap, progress: Callable[[str], None], charts: Optional[Charts] = None) -> list[Block]:
    """`charts`: rendered ahead (see `Charts`); without it each chart is drawn here, in turn."""
    L = Langs(tuple(snap.langs))
    chart = _chart_source(snap, charts)
    b = _title_blocks(snap, L)
    b += _action_blocks(snap, L)
    b += _summary_blocks(snap, L, chart)
    b += _section_blocks(snap, L, progress, chart)
    b += _alert_blocks(snap, L)
    b += _audit_blocks(snap, L)
    b += _dq_blocks(snap, L)
    b += _method_blocks(snap, L)
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


def _title_blocks(snap, L: Langs) -> list[Block]:
    """Title, what the report covers and who signed it."""
    products = sorted({r["product"] for r in snap.programme_rows()})
    return [
        Block("h1", L.w("h1", quarter=snap.quarter.label)),
        Block(
            "p",
            L.each(
                lambda g: L.one(
                    "intro",
                    g,
                    products=", ".join(products) or L.one("none", g),
                    as_of=iso(snap.as_of),
                    catalog=catalog_hash(as_of=snap.as_of)[:12],
                    version=__version__,
                    events=sum(snap.counts_by_topic.values()),
                )
            ),
        ),
        *_signing_blocks(snap, L),
    ]


def _signing_blocks(snap, L: Langs) -> list[Block]:
    s = snap.signing
    if s is None:
        return [Block("p", L.w("not_signed"))]
    return [
        Block(
            "p",
            L.each(
                lambda g: L.one(
                    "signed",
                    g,
                    name=s["full_name"],
                    user=s["user_id"],
                    meaning=L.one(f"meaning.{s['meaning']}", g) if f"meaning.{s['meaning']}" in WORDS else s["meaning"],
                    at=s["signed_at"],
                )
            ),
        )
    ]


def case_states(cases: list[dict]) -> dict[str, dict]:
    """Each review case's latest row (its state at the as-of time); `cases` are history rows in order."""
    latest: dict[str, dict] = {}
    for c in cases:
        if c.get("case_id"):
            latest[c["case_id"]] = c
    return latest


def cases_for(snap, kpi, product: str) -> list[str]:
    """The review cases about a KPI × product: those its alerts opened or joined (any site), and the case on the
    KPI's section of the educational materials for the product (one open case per product and section)."""
    ids = {
        a["case_id"] for a in snap.alerts if a.get("kpi") == kpi.id and a.get("product") == product and a.get("case_id")
    }
    ids |= {c["case_id"] for c in snap.cases if c.get("product") == product and c.get("section") == kpi.review_section}
    return sorted(ids)


CELL_ITEMS = 6  # sites or cases named in one cell of the first page's table


def _action_blocks(snap, L: Langs) -> list[Block]:
    """The first thing a QPPV reads: every KPI × product in breach or warning, for all sites together or at one
    site at least (breaches first, then in the order of the sections), with its sites in breach and in warning
    (value and n) and its review cases with their state."""
    kpis = {k.id: k for k in snap.catalog}
    sites: dict[tuple, list[dict]] = {}
    for r in snap.rows:
        if r["site_id"] is not None and r["status"] in FLAGGED:
            sites.setdefault((r["kpi"], r["product"]), []).append(r)
    items = []
    for r in snap.programme_rows():
        mine = sorted(sites.get((r["kpi"], r["product"]), []), key=_worst_first(kpis[r["kpi"]]))
        statuses = {r["status"]} | {s["status"] for s in mine}
        if statuses & set(FLAGGED):
            items.append(("breach" if "breach" in statuses else "warning", r, mine))
    items.sort(key=lambda item: item[0] != "breach")  # stable: section order within breaches and warnings
    b = [Block("h2", L.w("h_action"))]
    if not items:
        return b + [Block("p", L.w("action_none"))]
    n_breach = sum(1 for worst, _, _ in items if worst == "breach")
    b.append(Block("p", L.w("action_intro", breaches=n_breach, warnings=len(items) - n_breach)))
    states = case_states(snap.cases)
    labels = load_labels()

    def listed(items: list[str], lang: str) -> str:
        """At most CELL_ITEMS items (the worst first): a programme with many sites must not outgrow the page;
        the site tables list every one."""
        shown = "; ".join(items[:CELL_ITEMS])
        return shown if len(items) <= CELL_ITEMS else f"{shown}; {L.one('and_more', lang, n=len(items) - CELL_ITEMS)}"

    def site_list(rows: list[dict], status: str) -> Txt:
        items = [f"{s['site_id']} {_pct(s['value'])} ({_n(s)})" for s in rows if s["status"] == status]
        return listed(items, L.langs[0]) if len(items) <= CELL_ITEMS else L.each(lambda g: listed(items, g))

    def case_cell(kpi, product: str) -> Txt:
        ids = cases_for(snap, kpi, product)
        if not ids:
            return L.w("no_case")

        def named(case_id: str, g: str) -> str:
            state = states.get(case_id, {}).get("state")
            return f"{case_id} {labels.name('case_states', state, g)}" if state in CASE_STATES else case_id

        return L.each(lambda g: listed([named(i, g) for i in ids], g))

    rows, colours = [], []
    for i, (worst, r, mine) in enumerate(items, 1):
        k = kpis[r["kpi"]]
        rows.append(
            (
                L.each(k.title_in),
                r["product"],
                f"{_pct(r['value'])} ({_n(r)})",
                site_list(mine, "breach"),
                site_list(mine, "warning"),
                _status(L, worst),
                case_cell(k, r["product"]),
            )
        )
        if r["status"] in FLAGGED:  # the all-sites figure itself in breach or warning
            colours.append((i, 2, r["status"]))
    b.append(
        Block(
            "table",
            headers=_heads(L, "kpi", "product", "all_sites", "sites_breach", "sites_warning", "status", "case"),
            rows=tuple(rows),
            status_col=5,
            statuses=tuple(worst for worst, _, _ in items),
            cell_statuses=tuple(colours),
        )
    )
    return b


def _summary_blocks(snap, L: Langs, chart: Callable[[str], Optional[bytes]]) -> list[Block]:
    """The programme summary: status overview chart and table."""
    prog = snap.programme_rows()
    by_status: dict[str, int] = {}
    for r in prog:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    counts = _counts(L, by_status)
    b: list[Block] = [
        Block("h2", L.w("h_summary")),
        Block(
            "p",
            L.each(lambda g: L.one("summary_counts", g, rows=len(prog), counts=texts(counts)[L.langs.index(g)])),
        ),
    ]
    overview = chart(OVERVIEW)
    if overview:  # None when there are no programme rows
        b.append(Block("img", image=overview))
    b.append(_programme_table(snap, L, prog))
    return b


def _programme_table(snap, L: Langs, prog: list[dict]) -> Block:
    """Every programme row (KPI × product), with the previous quarter's value beside it."""
    kpis = {k.id: k for k in snap.catalog}
    return Block(
        "table",
        headers=_heads(L, "kpi", "product", "value", "ci", "threshold", "n", "pending", "prev", "status"),
        rows=tuple(
            (
                L.each(kpis[r["kpi"]].title_in),
                r["product"],
                _pct(r["value"]),
                _ci(r),
                _pct(r["threshold"]),
                _n(r),
                str(r["pending"]),
                _pct(snap.previous_value(r["kpi"], r["product"])),
                _status(L, r["status"]),
            )
            for r in prog
        ),
        status_col=8,
        statuses=tuple(r["status"] for r in prog),
    )


def _numbered(n: int, name: Callable[[str], str], lang: str) -> str:
    return f"{n}. {name(lang)}"


def _section_blocks(
    snap, L: Langs, progress: Callable[[str], None], chart: Callable[[str], Optional[bytes]]
) -> list[Block]:
    """One numbered section per indicator family, in the order an evaluation reads them: reach, knowledge,
    behaviour, outcome; its KPIs in catalog order."""
    labels = load_labels()
    b: list[Block] = []
    for n, (family, kpis) in enumerate(by_family(snap.catalog).items(), 1):
        b.append(Block("h2", L.each(partial(_numbered, n, partial(labels.family, family)))))
        b.append(Block("p", L.each(partial(labels.family_intro, family))))
        for k in kpis:
            progress(f"chart {k.id}")
            image = chart(k.id)
            if image is None:  # kpi_chart always draws; only the status overview can be empty
                raise RuntimeError(f"no chart for KPI {k.id}")
            b += _kpi_blocks(snap, L, k, image)
    return b


def _kpi_blocks(snap, L: Langs, k, image: bytes) -> list[Block]:
    """One KPI: its definition, chart, per-product table and the sites behind it."""
    rows = [r for r in snap.rows if r["kpi"] == k.id]
    programme = [r for r in rows if r["site_id"] is None]
    labels = load_labels()

    def definition(g: str) -> str:
        return L.one(
            "kpi_definition",
            g,
            armm=labels.name("armms", k.armm, g),
            description=k.description_in(g),
            unit=k.unit_in(g),
            success=k.success_in(g) or L.one("see_definition", g),
            threshold=_pct(k.threshold),
            direction=L.one(k.direction, g),
            zero=L.one("zero_tolerance", g) if k.zero_tolerance else "",
            min_n=k.min_n,
        )

    return (
        [
            Block("h3", L.each(lambda g: f"{k.title_in(g)} ({k.id})")),
            Block("p", L.each(definition)),
            Block("img", image=image),
            _figures_table(L, programme, (("product", "product"),)),
        ]
        + _sample_blocks(L, k, rows)
        + _site_blocks(L, k, [r for r in rows if r["site_id"] is not None])
    )


def _sample_blocks(L: Langs, k, rows: list[dict]) -> list[Block]:
    """For a survey KPI (a pre-specified sample size per product): whether each product's sample was reached."""
    if "sample_target" not in k.stats:
        return []
    found = []
    for r in rows:
        if r["site_id"] is not None or r["product"] is None:
            continue
        target, n = r["stats"].get("sample_target"), r["denominator"]
        if target is None:
            found.append(("sample_none", {"product": r["product"], "n": n}))
        else:
            key = "sample_reached" if r["stats"].get("sample_reached") else "sample_not_reached"
            found.append((key, {"product": r["product"], "n": n, "target": int(target)}))
    if not found:
        return []
    return [
        Block(
            "p",
            L.each(
                lambda g: L.one(
                    "survey_sample", g, lines=L.one("item_sep", g).join(L.one(key, g, **v) for key, v in found)
                )
            ),
        )
    ]


def _alert_blocks(snap, L: Langs) -> list[Block]:
    b = [Block("h2", L.w("h_alerts"))]
    if snap.alerts or snap.cases:
        b += [_alerts_table(L, snap.alerts), _cases_table(L, snap.cases)]
    else:
        b.append(Block("p", L.w("alerts_none")))
    decisions = [s for s in snap.signatures if s["record_kind"] in ("alert", "review_case")]
    if decisions:
        listed = "; ".join(
            f"{s['record_id']}: {s['full_name']} ({s['user_id']}), {s['meaning']}, {s['signed_at']}" for s in decisions
        )
        b.append(Block("p", L.w("decision_signatures", list=listed)))
    return b


def _audit_blocks(snap, L: Langs) -> list[Block]:
    """The audit log's entries of the quarter (who, when, what, why), up to the as-of time."""
    b = [
        Block("h2", L.w("h_audit")),
        Block("p", L.w("audit_intro", n=len(snap.audit), quarter=snap.quarter.label)),
    ]
    if snap.audit:
        b.append(
            Block(
                "table",
                headers=_heads(L, "entry", "at", "by", "action", "record", "reason"),
                rows=tuple(
                    (str(e["seq"]), e["at"], e["actor"], e["action"], f"{e['record_table']} {e['record_key']}",
                     e["reason"])
                    for e in snap.audit
                ),
            )
        )  # fmt: skip
    return b


def _alerts_table(L: Langs, alerts: list[dict]) -> Block:
    labels = load_labels()
    return Block(
        "table",
        headers=_heads(L, "alert", "product", "site", "kpi", "title", "state", "by", "at"),
        rows=tuple(
            (
                a.get("alert_id"),
                a.get("product"),
                a.get("site_id"),
                a.get("kpi"),
                L.each(partial(alert_title, a)),
                L.each(partial(labels.name, "alert_states", a["state"])) if a.get("state") else "",
                a.get("actor"),
                a.get("at"),
            )
            for a in alerts
        ),
    )


def _cases_table(L: Langs, cases: list[dict]) -> Block:
    labels = load_labels()
    return Block(
        "table",
        headers=_heads(L, "case", "product", "section", "state", "outcome", "by", "at"),
        rows=tuple(
            (
                c.get("case_id"),
                c.get("product"),
                L.each(partial(labels.section, c.get("section") or "")),
                L.each(partial(labels.name, "case_states", c["state"])) if c.get("state") in CASE_STATES else "",
                (c.get("outcome") or "") + (f" v{c['material_version']}" if c.get("material_version") else ""),
                c.get("actor"),
                c.get("at"),
            )
            for c in cases
        ),
    )


def _dq_blocks(snap, L: Langs) -> list[Block]:
    """The data-quality expectations of the quarter, failed first."""
    failed = [r for r in snap.dq if not r["success"]]
    ordered = sorted(snap.dq, key=lambda r: (r["success"], r["suite"], r["expectation"]))
    return [
        Block("h2", L.w("h_dq")),
        Block(
            "p",
            L.w(
                "dq_intro",
                n=len(snap.dq),
                quarter=snap.quarter.label,
                passed=len(snap.dq) - len(failed),
                failed=len(failed),
                critical=sum(1 for r in failed if r["critical"]),
            ),
        ),
        Block(
            "table",
            headers=_heads(L, "suite", "expectation", "severity", "result", "observed"),
            rows=tuple(
                (
                    r["suite"],
                    r["expectation"],
                    L.w("critical" if r["critical"] else "warning_severity"),
                    L.w("passed" if r["success"] else "failed"),
                    r["observed"],
                )
                for r in ordered
            ),
            status_col=3,
            statuses=tuple("passed" if r["success"] else "failed" for r in ordered),
        ),
    ]


def _method_blocks(snap, L: Langs) -> list[Block]:
    q, as_of = snap.quarter.label, iso(snap.as_of)
    topics = ", ".join(f"{t} {n}" for t, n in snap.counts_by_topic.items())
    return (
        [Block("h2", L.w("h_method"))]
        + [
            Block("p", text)
            for text in (
                L.w("method_units", quarter=q),
                L.w("method_as_of", as_of=as_of),
                L.w("method_ci"),
                L.w("method_topics", counts=topics),
                L.w("method_files"),
                L.w("method_rules", as_of=as_of),
            )
        ]
        + _rule_blocks(snap, L)
    )


def _rule_blocks(snap, L: Langs) -> list[Block]:
    """The rule versions and dated catalog changes known at the as-of time, with their sources (catalog data,
    shown as the catalog writes it)."""
    book = load_rulebook().known_at(snap.as_of)

    def values(v) -> Txt:
        return L.each(
            lambda g: ", ".join(f"{k} {L.one('not_a_unit', g) if x is None else f'{x:g}'}" for k, x in v.values.items())
        )

    jurisdictions = "; ".join(
        f"{j}: {', '.join(sorted(c for c, jj in book.jurisdictions.items() if jj == j))}"
        for j in sorted(set(book.jurisdictions.values()))
    )
    b = [
        Block(
            "table",
            headers=_heads(L, "rule", "jurisdiction", "product", "in_force", "values", "name", "source"),
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
        Block("p", L.w("jurisdictions", list=jurisdictions)),
    ]
    if book.changes:
        b.append(Block("p", L.w("changes_intro")))
        b.append(
            Block(
                "table",
                headers=_heads(L, "kpi", "product", "key", "value", "effective_from", "known_from", "reason", "source"),
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
_CSS = """body{font-family:'DejaVu Sans',Arial,'WenQuanYi Micro Hei','Noto Sans CJK SC',sans-serif;max-width:1000px;
margin:2em auto;color:#222;font-size:14px}
h1{color:#1f4e79}h2{color:#1f4e79;border-bottom:2px solid #1f4e79;padding-bottom:2px;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:12px}th{background:#305496;color:#fff;text-align:left}
td,th{border:1px solid #bbb;padding:3px 6px}img{max-width:100%}
.alt{color:#666;font-size:85%}th .alt{color:#dce6f2}h1 .alt,h2 .alt,h3 .alt{color:#1f4e79;font-weight:normal}
.ok{background:#c6efce}.warning{background:#ffeb9c}.breach,.failed{background:#ffc7ce}.insufficient_data{background:#e7e6e6}
.passed{background:#c6efce}"""


def _html_text(txt) -> str:
    """One language as is; two: the leading one, the other beneath in the smaller grey style."""
    parts = texts(txt) if txt is not None else ("",)
    out = html.escape(str(parts[0]))
    for other in parts[1:]:
        out += f'<br><span class="alt">{html.escape(str(other))}</span>'
    return out


def render_html(blocks: list[Block], title: str, lang: str = "en") -> str:
    out = [
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
    ]
    for bl in blocks:
        if bl.kind in ("h1", "h2", "h3"):
            out.append(f"<{bl.kind}>{_html_text(bl.text)}</{bl.kind}>")
        elif bl.kind == "p":
            parts = texts(bl.text)
            out.append(f"<p>{html.escape(parts[0])}</p>")
            out += [f'<p class="alt">{html.escape(p)}</p>' for p in parts[1:]]
        elif bl.kind == "img":
            out.append(f'<p><img alt="chart" src="data:image/png;base64,{base64.b64encode(bl.image).decode()}"></p>')
        elif bl.kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_html_text(h)}</th>" for h in bl.headers) + "</tr>")
            cells = {(r, c): s for r, c, s in bl.cell_statuses}
            for i, row in enumerate(bl.rows, 1):
                cls = f' class="{html.escape(bl.statuses[i - 1])}"' if bl.status_col is not None else ""
                out.append(
                    f"<tr{cls}>"
                    + "".join(
                        (f'<td class="{cells[(i, c)]}">' if (i, c) in cells else "<td>") + _html_text(v) + "</td>"
                        for c, v in enumerate(row)
                    )
                    + "</tr>"
                )
            out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


# --- PDF -----------------------------------------------------------------------------------------------------
CJK_FONT = "WenQuanYi"
_HAN = "\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"  # CJK characters and punctuation, full-width forms
_CJK = re.compile(f"[{_HAN}]")
# what a line may not break inside: a run of non-CJK, non-space characters (a word, a number); a short run of CJK
# characters (a header word, a status); a longer CJK run may break between any two characters
_UNITS = re.compile(f"[{_HAN}]+|[^\\s{_HAN}]+")


def _fonts(langs: tuple = ("en",)) -> tuple[str, str]:
    """(regular, bold), registered once. English: DejaVu from matplotlib's own data (full Unicode: en dashes, ≥, ×).
    With Chinese: WenQuanYi Micro Hei (CJK and Latin glyphs, fonts-wqy-microhei) for all text, so a line never
    mixes two faces; it has no bold face, so headings stand out by size and colour and the bold name is the same
    face (and so column widths are measured in the face that is drawn)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "zh" in langs:
        if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(CJK_FONT, str(cjk_font()), subfontIndex=0))
        return CJK_FONT, CJK_FONT
    import matplotlib

    if "DejaVu" not in pdfmetrics.getRegisteredFontNames():
        base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("DejaVu", str(base / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("DejaVu-Bold", str(base / "DejaVuSans-Bold.ttf")))
    return "DejaVu", "DejaVu-Bold"


def unbreakable(text: str, cjk_run: int = 4) -> list[str]:
    """The pieces of `text` a line may not break inside: words and numbers whole, CJK runs of up to `cjk_run`
    characters whole, longer ones character by character."""
    out: list[str] = []
    for unit in _UNITS.findall(text):
        out += list(unit) if _CJK.match(unit) and len(unit) > cjk_run else [unit]
    return out


CELL_SIZE = 7.2
_PAD = 12.5  # the table's 6 pt cell padding on each side, and a little slack for rounding


def _col_widths(bl: Block, width: float, font: str, bold: str, size: float = CELL_SIZE) -> list[float]:
    """Columns sized by their longest text (capped), never narrower than their longest header word in the face
    the header is drawn in, so a header only ever wraps at a space ("threshold", "pending" and "product" whole;
    CJK may wrap between characters) and, where the page allows, never narrower than the longest word of a cell
    either. When the cells' longest words do not all fit (a hash, a long id), those columns give way, never the
    headers."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    def w(text: str, face: str = font) -> float:
        return stringWidth(text, face, size) + _PAD

    def words(value, face: str, cjk_run: int) -> list[float]:
        parts = texts(value) if value is not None else ()
        return [w(u, face) for part in parts for u in unbreakable(str(part), cjk_run)]

    ncols = len(bl.headers)
    # a header's CJK words whole (全部医疗机构, 评估案例), a cell's short ones (超限, 达标)
    head = [max(words(h, bold, 10) + [w("")]) for h in bl.headers]
    cell = [max([w("")] + [x for row in bl.rows for x in words(row[i], font, 4)]) for i in range(ncols)]
    longest = [
        max([w("")] + [w(max((str(p) for p in texts(row[i])), key=len)) for row in bl.rows if row[i] is not None])
        for i in range(ncols)
    ]
    floor = [max(h, c) for h, c in zip(head, cell)]
    want = [max(f, min(lg, width * 0.4)) for f, lg in zip(floor, longest)]
    if sum(want) <= width:
        return want
    if sum(floor) <= width:  # room for every word: the spare goes to the columns that want more
        spare, extra = width - sum(floor), [wa - fl for wa, fl in zip(want, floor)]
        return [fl + spare * e / sum(extra) for fl, e in zip(floor, extra)]
    if sum(head) <= width:  # the headers whole; the cells' long words are split where they must be
        spare, extra = width - sum(head), [fl - h for fl, h in zip(floor, head)]
        return [h + spare * e / sum(extra) for h, e in zip(head, extra)]
    return head  # wider than the page rather than a broken header word


def render_pdf(blocks: list[Block], path: Path, title: str, footer: str, langs: tuple = ("en",)) -> None:
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    L = Langs(tuple(langs))
    regular, bold = _fonts(L.langs)
    blue, grey = colors.HexColor("#1f4e79"), colors.HexColor("#666666")
    styles = {
        "h1": ParagraphStyle("h1", fontName=bold, fontSize=16, leading=20, textColor=blue, spaceAfter=8),
        "h2": ParagraphStyle(
            "h2", fontName=bold, fontSize=13, leading=16, textColor=blue, spaceBefore=10, spaceAfter=5
        ),
        "h3": ParagraphStyle("h3", fontName=bold, fontSize=10.5, leading=13, spaceBefore=6, spaceAfter=3),
        "p": ParagraphStyle("p", fontName=regular, fontSize=8.8, leading=11.5, spaceAfter=4),
        "cell": ParagraphStyle("cell", fontName=regular, fontSize=CELL_SIZE, leading=8.6),
        "head": ParagraphStyle("head", fontName=bold, fontSize=CELL_SIZE, leading=8.6, textColor=colors.white),
    }
    # the other language of a bilingual report: under the leading one, smaller and lighter
    styles["h1.alt"] = ParagraphStyle("h1.alt", styles["h1"], fontSize=12, leading=15, spaceBefore=-6)
    styles["h2.alt"] = ParagraphStyle("h2.alt", styles["h2"], fontSize=10, leading=12.5, spaceBefore=-4)
    styles["h3.alt"] = ParagraphStyle("h3.alt", styles["h3"], fontSize=8.8, leading=11, textColor=grey, spaceBefore=-2)
    styles["p.alt"] = ParagraphStyle("p.alt", styles["p"], fontSize=7.8, leading=10, textColor=grey, spaceBefore=-2)
    styles["cell.alt"] = ParagraphStyle("cell.alt", styles["cell"], textColor=grey)
    styles["head.alt"] = ParagraphStyle("head.alt", styles["head"], textColor=colors.HexColor("#dce6f2"))

    def para(text, style: str):
        """Headings and paragraphs with Chinese wrap between characters (CJK mode); everything else only at
        spaces (normal mode: the CJK mode would also break an English word, or a header's CJK word). A table
        column is at least as wide as its header's words (_col_widths), so a header wraps only at a space; a cell's
        CJK run longer than its column is split where the column ends."""
        text = "" if text is None else str(text)
        st = styles[style]
        if style.split(".")[0] in ("h1", "h2", "h3", "p") and _CJK.search(text):
            st = ParagraphStyle(f"{style}.cjk", st, wordWrap="CJK")
        return Paragraph(escape(text), st)

    def flows(txt, style: str) -> list:
        parts = texts(txt) if txt is not None else ("",)
        return [para(parts[0], style)] + [para(p, f"{style}.alt") for p in parts[1:]]

    def cell(txt, style: str):
        got = flows(txt, style)
        return got if len(got) > 1 else got[0]

    width = A4[0] - 30 * mm
    story: list = []
    pending_heading: Optional[list] = None
    for bl in blocks:
        if bl.kind in ("h1", "h2", "h3", "p"):
            flow = flows(bl.text, bl.kind)
        elif bl.kind == "img":
            from reportlab.lib.utils import ImageReader

            iw, ih = ImageReader(io.BytesIO(bl.image)).getSize()
            h = width * ih / iw
            flow = [Image(io.BytesIO(bl.image), width=width, height=min(h, 230 * mm))]
        else:
            data = [[cell(h, "head") for h in bl.headers]]
            data += [[cell(c, "cell") for c in row] for row in bl.rows]
            t = Table(data, repeatRows=1, hAlign="LEFT", colWidths=_col_widths(bl, width, regular, bold))
            cmds = [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#305496")),
                ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#bbbbbb")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
            fills = {
                "ok": "#c6efce",
                "passed": "#c6efce",
                "warning": "#ffeb9c",
                "breach": "#ffc7ce",
                "failed": "#ffc7ce",
                "insufficient_data": "#e7e6e6",
            }
            coloured = list(bl.cell_statuses)
            if bl.status_col is not None:
                coloured += [(i, bl.status_col, s) for i, s in enumerate(bl.statuses, 1)]
            for row_i, col_i, status in coloured:
                if status in fills:
                    cmds.append(("BACKGROUND", (col_i, row_i), (col_i, row_i), colors.HexColor(fills[status])))
            t.setStyle(TableStyle(cmds))
            flow = [t]
        if bl.kind in ("h2", "h3"):
            pending_heading = flow  # keep a heading on the page of what follows it
            continue
        story.append(KeepTogether(pending_heading + flow) if pending_heading is not None else flow)
        pending_heading = None
    story = [f for item in story for f in (item if isinstance(item, list) else [item])]

    def page(canvas, doc):
        canvas.saveState()
        canvas.setFont(regular, 7)
        canvas.drawString(15 * mm, 10 * mm, footer)
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, L.joined(lambda g: L.one("page", g, n=doc.page)))
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
    story.insert(len(flows(blocks[0].text, "h1")), Spacer(1, 2 * mm))
    doc.build(story, onFirstPage=page, onLaterPages=page)


def write_reports(snap, out: Path, progress: Callable[[str], None], charts: Optional[Charts] = None) -> None:
    L = Langs(tuple(snap.langs))
    blocks = build(snap, progress, charts)
    title = L.joined(lambda g: L.one("doc_title", g, quarter=snap.quarter.label))
    (out / "report.html").write_text(render_html(blocks, title, L.lead), encoding="utf-8")
    progress("report.pdf")
    footer = L.each(
        lambda g: L.one(
            "footer", g, as_of=iso(snap.as_of), catalog=catalog_hash(as_of=snap.as_of)[:12], version=__version__
        )
    )
    lead_title = L.one("doc_title", L.lead, quarter=snap.quarter.label)  # one line: the leading language
    render_pdf(blocks, out / "report.pdf", title, f"{lead_title} · {texts(footer)[0]}", L.langs)
