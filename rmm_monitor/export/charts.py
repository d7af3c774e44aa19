"""Matplotlib charts of the quarterly report, as PNG bytes (no timestamps in them, so re-runs are identical)."""

from __future__ import annotations

import io
import math
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # headless: the export runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rmm_monitor.kpi import load_labels  # noqa: E402
from rmm_monitor.kpi.wilson import wilson_bounds  # noqa: E402

from .words import WORDS, Langs  # noqa: E402

COLOURS = ["#1f4e79", "#c55a11", "#548235", "#7030a0", "#bf9000", "#2e75b6"]
STATUS_COLOURS = {"ok": "#548235", "warning": "#bf9000", "breach": "#c00000", "insufficient_data": "#a6a6a6"}


def _png(fig) -> bytes:
    # tight_layout() leaves a placeholder layout engine behind, and savefig then draws the whole figure once more
    # (a dry run) before the real draw: with a bar and a label per site that is a second or so per chart, for
    # the same pixels
    fig.set_layout_engine(None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()


MARKERS = "osD^vP"


def _use_fonts(langs: tuple) -> Langs:
    """DejaVu Sans; with Chinese, WenQuanYi Micro Hei behind it for the glyphs DejaVu lacks (matplotlib falls
    back glyph by glyph), the font file checked first (fonts.cjk_font names the package when it is missing)."""
    L = Langs(tuple(langs))
    family = ["DejaVu Sans"]
    if L.zh:
        from matplotlib import font_manager

        from .fonts import FAMILY, cjk_font

        path = str(cjk_font())
        if FAMILY not in {f.name for f in font_manager.fontManager.ttflist}:
            font_manager.fontManager.addfont(path)
        family.append(FAMILY)
    plt.rcParams.update({"font.size": 8, "font.family": family})
    return L


def _words(L: Langs, key: str, **values) -> str:
    """A chart's words: one language, or both, the leading one on the first line (side by side, the two panels'
    titles would run into each other)."""
    return L.joined(lambda g: WORDS[key].get(g, WORDS[key]["en"]).format(**values), "\n")


def site_axis_limits(values: list[float], thresholds: list[float], direction: str) -> tuple[float, float]:
    """The per-site chart's y axis for proportions: a fixed frame in steps of 10 %, never above 100 % nor below
    0 %, and at least 10 % tall, so sites that are all at 100 % (or all equal) sit on a sensible axis (90 %–100 %,
    not 98 %–102 %). Higher is better: from a bit below the lowest value or threshold up to 100 %; lower is better
    (rates of harm): from 0 % up to a bit above the highest value or threshold."""
    step, margin = 0.1, 0.05
    seen = [float(v) for v in list(values) + list(thresholds) if v is not None]
    if not seen:
        return 0.0, 1.0
    if direction == "higher_is_better":
        low = max(0.0, math.floor(round((min(seen) - margin) / step, 6)) * step)
        return round(min(low, 1.0 - step), 6), 1.0
    high = min(1.0, math.ceil(round((max(seen) + margin) / step, 6)) * step)
    return 0.0, round(max(high, step), 6)


def _breach_limit(threshold: float, direction: str, ns: np.ndarray) -> np.ndarray:
    """For each n, the observed value beyond which a site is in breach: its whole Wilson 95 % interval lies on
    the wrong side of the threshold (kpis.status_of). Bisection on the continuous success fraction."""
    lo, hi = np.zeros_like(ns, dtype=float), np.ones_like(ns, dtype=float)
    side = 1 if direction == "higher_is_better" else 0

    def bound(p):
        return wilson_bounds(p, ns, sqrt=np.sqrt)[side]

    for _ in range(40):  # bound() rises with p: find where it crosses the threshold
        mid = (lo + hi) / 2
        below = bound(mid) < threshold
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def kpi_chart(kpi, trend: list[dict], site_rows: list[dict], months: list[str], langs: tuple = ("en",)) -> bytes:
    """Left: monthly value per product with its threshold (dashed). Right: every site this quarter as one point,
    its value against its number of units (log scale) with the Wilson 95 % CI, coloured by status; the dotted
    funnel is where the interval stops reaching the threshold (breach beyond it); breach sites are ringed. The
    y axis is a fixed frame around the sites' values and thresholds (site_axis_limits). (A bar per site was
    unreadable at hundreds of sites, and slow to draw.) The report lists every site in breach or warning under
    the chart, kpis.xlsx every site."""
    L = _use_fonts(langs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.3), gridspec_kw={"width_ratios": [1.15, 1]})
    products = sorted({r["product"] for r in trend} | {r["product"] for r in site_rows})
    colour = {p: COLOURS[i % len(COLOURS)] for i, p in enumerate(products)}
    marker = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(products)}
    x_of = {m: i for i, m in enumerate(months)}
    for p in products:
        pts = [
            (x_of[r["month"]], r["value"])
            for r in trend
            if r["product"] == p and r["month"] in x_of and r["value"] is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            left.plot(xs, ys, marker="o", ms=3, lw=1.4, color=colour[p], label=p)
        thresholds = {r["threshold"] for r in trend if r["product"] == p}
        for th in sorted(thresholds):
            left.axhline(th, ls="--", lw=0.9, color=colour[p], alpha=0.7)
    left.set_xticks(range(len(months)))
    left.set_xticklabels([m[2:] for m in months], rotation=45, ha="right")
    left.set_ylim(-0.02, 1.02)
    left.set_title(_words(L, "chart_trend"))
    left.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    left.grid(axis="y", lw=0.3)
    if products:
        left.legend(loc="lower left", fontsize=7, frameon=False)
    points = [r for r in site_rows if r["denominator"] > 0 and r["value"] is not None]
    if points:
        n_max = max(r["denominator"] for r in points)
        right.set_xscale("log")
        right.set_xlim(0.8, max(n_max * 1.6, 12))
        right.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, numticks=8))
        right.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        for th in sorted({r["threshold"] for r in points}):
            right.axhline(th, ls="--", lw=0.9, color="#404040")
            if not kpi.zero_tolerance and 0 < th < 1:
                ns = np.geomspace(1, max(n_max * 1.6, 12), 60)
                right.plot(ns, _breach_limit(th, kpi.direction, ns), ls=":", lw=0.9, color="#c00000")
        right.vlines(
            [r["denominator"] for r in points],
            [r["ci_low"] for r in points],
            [r["ci_high"] for r in points],
            colors="#909090",
            lw=0.5,
            zorder=1,
        )
        for p in products:
            mine = [r for r in points if r["product"] == p]
            if mine:
                right.scatter(
                    [r["denominator"] for r in mine],
                    [r["value"] for r in mine],
                    s=9,
                    marker=marker[p],
                    c=[STATUS_COLOURS.get(r["status"], "#a6a6a6") for r in mine],
                    linewidths=0,
                    zorder=2,
                    clip_on=False,  # a site at 100 % sits on the top edge, whole
                )
        ring = [r for r in points if r["status"] == "breach"]
        if ring:  # breach sites stand out even where points crowd; the report's table names each of them
            right.scatter(
                [r["denominator"] for r in ring],
                [r["value"] for r in ring],
                s=30,
                facecolors="none",
                edgecolors=STATUS_COLOURS["breach"],
                linewidths=0.8,
                zorder=3,
                clip_on=False,
            )
        counts = {s: sum(1 for r in site_rows if r["status"] == s) for s in STATUS_COLOURS}
        labels = load_labels()
        right.set_xlabel(
            _words(L, "chart_n")
            + "\n"
            + L.joined(
                lambda g: WORDS["chart_site_rows"][g].format(
                    n=len(site_rows),
                    counts=", ".join(f"{labels.status(s, g)} {n}" for s, n in counts.items() if n),
                )
            ),
            fontsize=7,
        )
        right.set_ylim(*site_axis_limits([r["value"] for r in points], [r["threshold"] for r in points], kpi.direction))
        if len(products) > 1:  # marker = product (colour is the status)
            for p in products:
                right.scatter([], [], s=9, marker=marker[p], c="#404040", linewidths=0, label=p)
            right.legend(loc="lower right", fontsize=6, frameon=False)
    else:
        right.text(0.5, 0.5, _words(L, "chart_no_units"), ha="center", va="center", transform=right.transAxes)
        right.set_ylim(-0.02, 1.05)
    right.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    right.set_title(_words(L, "chart_sites"), fontsize=8)
    right.grid(lw=0.3)
    # WenQuanYi Micro Hei has no bold face
    fig.suptitle(L.joined(kpi.title_in), fontsize=10, fontweight="normal" if L.zh else "bold")
    # fixed margins, not tight_layout(): that measures every tick label with a draw of its own first
    fig.subplots_adjust(left=0.065, right=0.985, bottom=0.24, top=0.80 if L.bilingual else 0.85, wspace=0.2)
    return _png(fig)


def status_overview(rows: list[dict], titles: dict[str, str], langs: tuple = ("en",)) -> Optional[bytes]:
    """Programme summary: one line per KPI, one marker per product at its value with the 95 % CI, coloured by
    status; | marks each product's threshold."""
    rows = [r for r in rows if r["site_id"] is None]
    if not rows:
        return None
    L = _use_fonts(langs)
    kpis = list(dict.fromkeys(r["kpi"] for r in rows))
    products = sorted({r["product"] for r in rows})
    offset = {p: (i - (len(products) - 1) / 2) * 0.22 for i, p in enumerate(products)}
    markers = dict(zip(products, "osD^vP"))
    fig, ax = plt.subplots(figsize=(9.2, 0.3 * len(kpis) + 1.1))
    for r in rows:
        y = kpis.index(r["kpi"]) + offset[r["product"]]
        ax.plot([r["threshold"]], [y], marker="|", ms=7, color="#404040")
        if r["value"] is not None:
            ax.errorbar(
                r["value"],
                y,
                xerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                fmt=markers[r["product"]],
                color=STATUS_COLOURS.get(r["status"], "#a6a6a6"),
                ms=3.5,
                capsize=1.5,
                lw=0.9,
            )
    for p in products:
        ax.plot([], [], markers[p], color="#404040", ms=3.5, label=p)
    ax.set_yticks(range(len(kpis)))
    ax.set_yticklabels([titles.get(k, k)[:52] for k in kpis], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="x", lw=0.3)
    ax.legend(loc="lower left", fontsize=7, frameon=True, ncol=len(products))
    ax.set_title(WORDS["chart_overview"][L.lead], fontsize=8)
    fig.tight_layout()
    return _png(fig)
