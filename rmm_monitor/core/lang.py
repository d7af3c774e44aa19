"""The languages people read the monitor in: English (`en`) and Chinese (`zh`, the NMPA/CDE's language).

What is said in each language lives with what it names: KPI titles and descriptions in each KPI's yml, the names
of families, review sections, statuses and outcomes in metrics/labels/sections.yml, the words of a report, page or
e-mail beside the code that writes them. Numbers, dates and percentages are written the same in both languages
(core/fmt.py), so a figure can be compared across the two versions of a report character by character."""

from __future__ import annotations

from typing import Mapping, Optional

from .errors import ConfigError

LANGS = ("en", "zh")
DEFAULT = "en"


def parse_lang(text: Optional[str]) -> str:
    """One language: 'en' or 'zh' (None or '' = English)."""
    lang = (text or DEFAULT).strip().lower()
    if lang not in LANGS:
        raise ConfigError(f"unknown language {text!r}: use en or zh")
    return lang


def parse_langs(text: Optional[str]) -> tuple[str, ...]:
    """'zh', 'en' or 'zh,en' (the first is the leading language of a bilingual document); each once."""
    parts = [p for p in (text or DEFAULT).replace(" ", "").split(",") if p]
    langs = tuple(dict.fromkeys(parse_lang(p) for p in parts))
    if not langs:
        raise ConfigError("no language given: use en, zh or zh,en")
    return langs


def say(words: Mapping[str, Mapping[str, str]], key: str, lang: str, **values: object) -> str:
    """`words[key][lang]` with `values` filled in ({name} fields); English when the language has no entry."""
    entry = words[key]
    return (entry.get(lang) or entry[DEFAULT]).format(**values)
