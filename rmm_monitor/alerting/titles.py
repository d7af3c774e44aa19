"""An alert's title in each language of core/lang.py: one function for the stored title (English, made when the
alert fires), the e-mail's subject and the title the page and the API show in Chinese.

A KPI breach's title is said again in the reader's language from its figures and the catalog's KPI title; other
signals keep the title they were stored with (it names events, findings and sections by their ids)."""

from __future__ import annotations

from typing import Optional

from rmm_monitor.core.fmt import pct
from rmm_monitor.core.lang import say
from rmm_monitor.kpi import Kpi, load_catalog

WORDS: dict[str, dict[str, str]] = {
    "breach": {
        "en": "[BREACH] {kpi} {value} {op} {threshold} — {product} {where} — {period}",
        "zh": "[超限] {kpi} {value} {op} {threshold} — {product} {where} — {period}",
    },
    "site": {"en": "site {site}", "zh": "医疗机构 {site}"},
    "all_sites": {"en": "all sites", "zh": "全部医疗机构"},
}


def kpi_of(kpi_id: str) -> Optional[Kpi]:
    """The catalog's KPI of that id (None for an id the catalog no longer has: an old alert stays readable)."""
    return next((k for k in load_catalog() if k.id == kpi_id), None)


def breach_title(row: dict, lang: str = "en") -> str:
    """'[BREACH] alert_card_issued 55% < 90% — CTX-19 site GZ-03 — 2026Q4' from a KPI row (kpi, value, threshold,
    direction, product, site_id, period); in English the KPI's id, in Chinese its catalog title."""
    kpi = kpi_of(row["kpi"]) if lang != "en" else None
    site = row.get("site_id")
    return say(
        WORDS,
        "breach",
        lang,
        kpi=kpi.title_in(lang) if kpi else row["kpi"],
        value=pct(row["value"], 0),
        op="<" if row["direction"] == "higher_is_better" else ">",
        threshold=pct(row["threshold"], 0),
        product=row["product"],
        where=say(WORDS, "site", lang, site=site) if site else say(WORDS, "all_sites", lang),
        period=row["period"],
    )


def title_in(alert: dict, lang: str) -> str:
    """An alert's (or a notification's) title in `lang`: a breach's from its details, any other the stored one."""
    d = alert.get("details") or {}
    if lang == "en" or alert.get("signal") != "kpi_breach" or d.get("value") is None:
        return alert["title"]
    return breach_title({**alert, "value": d["value"], "threshold": d.get("threshold"),
                         "direction": d.get("direction")}, lang)  # fmt: skip
