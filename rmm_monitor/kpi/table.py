"""The KPI rows as a plain-text table (`rmm kpis`, the demo's final table)."""

from __future__ import annotations

from rmm_monitor.core.fmt import pct


def format_table(rows: list[dict]) -> str:
    head = f"{'KPI':<36} {'product':<9} {'site':<10} {'value':>7} {'95% CI':>15} {'n':>9} {'pend':>5} {'θ':>5}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = "" if r["ci_low"] is None else f"{100 * r['ci_low']:.0f}–{100 * r['ci_high']:.0f}%"
        lines.append(
            f"{r['kpi']:<36} {(r['product'] or '*'):<9} {(r['site_id'] or 'all'):<10} "
            f"{pct(r['value']):>7} {ci:>15} {r['numerator']:>4}/{r['denominator']:<4} {r['pending']:>5} "
            f"{r['threshold']:>5.2f}  {r['status']}"
        )
    return "\n".join(lines)
