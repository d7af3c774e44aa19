"""Matplotlib charts of the quarterly report, as PNG bytes (no timestamps in them, so re-runs are identical)."""
from __future__ import annotations

import io
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # headless: the export runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

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


def kpi_chart(kpi, trend: list[dict], site_rows: list[dict], months: list[str]) -> bytes:
    """Left: monthly value per product with its threshold (dashed). Right: this quarter's value per site with
    the Wilson 95 % CI and the threshold."""
    plt.rcParams.update({"font.size": 8, "font.family": "DejaVu Sans"})
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.1), gridspec_kw={"width_ratios": [1.15, 1]})
    products = sorted({r["product"] for r in trend} | {r["product"] for r in site_rows})
    colour = {p: COLOURS[i % len(COLOURS)] for i, p in enumerate(products)}
    x_of = {m: i for i, m in enumerate(months)}
    for p in products:
        pts = [(x_of[r["month"]], r["value"]) for r in trend if r["product"] == p and r["month"] in x_of
               and r["value"] is not None]
        if pts:
            xs, ys = zip(*pts)
            left.plot(xs, ys, marker="o", ms=3, lw=1.4, color=colour[p], label=p)
        thresholds = {r["threshold"] for r in trend if r["product"] == p}
        for th in thresholds:
            left.axhline(th, ls="--", lw=0.9, color=colour[p], alpha=0.7)
    left.set_xticks(range(len(months)))
    left.set_xticklabels([m[2:] for m in months], rotation=45, ha="right")
    left.set_ylim(-0.02, 1.02)
    left.set_title("monthly trend (dashed: threshold)")
    left.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    left.grid(axis="y", lw=0.3)
    if products:
        left.legend(loc="lower left", fontsize=7, frameon=False)
    bars = [r for r in site_rows if r["denominator"] > 0 and r["value"] is not None]
    if bars:
        labels = [f"{r['site_id']}\n{r['product']}" for r in bars]
        vals = [r["value"] for r in bars]
        err = [[r["value"] - r["ci_low"] for r in bars], [r["ci_high"] - r["value"] for r in bars]]
        right.bar(range(len(bars)), vals, yerr=err, capsize=2, ecolor="#404040",
                  color=[STATUS_COLOURS.get(r["status"], "#a6a6a6") for r in bars])
        right.set_xticks(range(len(bars)))
        right.set_xticklabels(labels, fontsize=6, rotation=90)
        for th in sorted({r["threshold"] for r in bars}):
            right.axhline(th, ls="--", lw=0.9, color="#404040")
    else:
        right.text(0.5, 0.5, "no units this quarter", ha="center", va="center", transform=right.transAxes)
    right.set_ylim(0, 1.05)
    right.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    right.set_title("per site this quarter (95% CI; colour = status)")
    right.grid(axis="y", lw=0.3)
    fig.suptitle(kpi.title, fontsize=10, fontweight="bold")
    fig.tight_layout()
    return _png(fig)


def status_overview(rows: list[dict], titles: dict[str, str]) -> Optional[bytes]:
    """Programme summary: one line per KPI, one marker per product at its value with the 95 % CI, coloured by
    status; | marks each product's threshold."""
    rows = [r for r in rows if r["site_id"] is None]
    if not rows:
        return None
    plt.rcParams.update({"font.size": 8, "font.family": "DejaVu Sans"})
    kpis = list(dict.fromkeys(r["kpi"] for r in rows))
    products = sorted({r["product"] for r in rows})
    offset = {p: (i - (len(products) - 1) / 2) * 0.22 for i, p in enumerate(products)}
    markers = dict(zip(products, "osD^vP"))
    fig, ax = plt.subplots(figsize=(9.2, 0.3 * len(kpis) + 1.1))
    for r in rows:
        y = kpis.index(r["kpi"]) + offset[r["product"]]
        ax.plot([r["threshold"]], [y], marker="|", ms=7, color="#404040")
        if r["value"] is not None:
            ax.errorbar(r["value"], y, xerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                        fmt=markers[r["product"]], color=STATUS_COLOURS.get(r["status"], "#a6a6a6"), ms=3.5,
                        capsize=1.5, lw=0.9)
    for p in products:
        ax.plot([], [], markers[p], color="#404040", ms=3.5, label=p)
    ax.set_yticks(range(len(kpis)))
    ax.set_yticklabels([titles.get(k, k)[:52] for k in kpis], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="x", lw=0.3)
    ax.legend(loc="lower left", fontsize=7, frameon=True, ncol=len(products))
    ax.set_title("All KPIs this quarter: value and 95% CI per product; | = threshold\n"
                 "green ok, amber warning, red breach, grey insufficient data", fontsize=8)
    fig.tight_layout()
    return _png(fig)
