"""The KPI catalog: metrics/<kpi_id>.yml (definition, threshold, tests) beside metrics/<kpi_id>.sql (the units).

The catalog is the single source of every definition; Prometheus gauges, alert rules, dashboards and exports
are built from it. A product-specific override (e.g. the reference rate of severe_crs_rate, the minimum
tocilizumab stock) comes from the TOML config, never from SQL.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from rmm_monitor.core import settings
from rmm_monitor.core.errors import ConfigError

DIRECTIONS = ("higher_is_better", "lower_is_better")
# The indicator families of an aRMM effectiveness evaluation, in the order they are read (GVP XVI): did the
# material reach its audience, do people know the key messages, do they act on them, and what are the outcomes.
FAMILIES = ("reach", "knowledge", "behaviour", "outcome")
LANGS = ("en", "zh")
# what metrics/labels/sections.yml names
LABEL_KINDS = (
    "families",
    "review_sections",
    "statuses",
    "outcomes",
    "signals",
    "alert_states",
    "case_states",
    "severities",
    "armms",
)  # the languages of the catalog's texts: English, and Chinese for the NMPA/CDE
REQUIRED_KEYS = (
    "id",
    "title",
    "title_zh",
    "description",
    "description_zh",
    "family",
    "armm",
    "unit",
    "anchor",
    "direction",
    "threshold",
    "min_n",
    "review_section",
)


# columns both an event and a unit row carry, by which a KPI can say which events a unit depends on
PARTITION_COLUMNS = ("product", "site_id", "patient_ref", "hcp_id", "ae_id", "respondent_id")


class CatalogError(ConfigError):
    """A catalog file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Kpi:
    id: str
    title: str
    description: str
    title_zh: str
    description_zh: str
    family: str
    armm: str
    unit: str
    anchor: str
    direction: str
    threshold: float
    min_n: int
    zero_tolerance: bool
    review_section: str
    headline: bool
    sql: str
    stats: dict[str, str] = field(default_factory=dict)
    # stats that describe a product as a whole (a pre-specified sample size): null on site and programme rows
    product_stats: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    tests: list[dict] = field(default_factory=list)
    success: str = ""
    # the unit and the success rule in Chinese (optional: the English ones stand where a translation is missing)
    unit_zh: str = ""
    success_zh: str = ""
    window: str = ""
    order: int = 100
    # The columns whose values a unit shares with every event that can change it (the worker's incremental
    # refresh recomputes only the units of the keys new events carry; kpi/incremental.py). Events of the types
    # the SQL reads with one of these columns empty (a site's certification for a patient's unit) are context
    # for every unit: one of them arriving recomputes the KPI whole. Empty: any event the SQL reads does.
    partition_by: tuple[str, ...] = ()

    def title_in(self, lang: str) -> str:
        return self.title_zh if lang == "zh" else self.title

    def description_in(self, lang: str) -> str:
        return self.description_zh if lang == "zh" else self.description

    def unit_in(self, lang: str) -> str:
        return (self.unit_zh if lang == "zh" else "") or self.unit

    def success_in(self, lang: str) -> str:
        return (self.success_zh if lang == "zh" else "") or self.success

    def threshold_for(self, product: Optional[str], config: "Config") -> float:
        return float(config.override(self.id, product, "threshold", self.threshold))

    def params_for(self, product: Optional[str], config: "Config") -> dict[str, Any]:
        return {name: config.override(self.id, product, name, default) for name, default in self.params.items()}


@dataclass(frozen=True)
class Config:
    """Overrides from the TOML file named by RMM_CONFIG:

    [kpi.severe_crs_rate.product.CTX-19]
    threshold = 0.13
    grading_scale = "ASTCT"
    """

    data: dict = field(default_factory=dict)

    def override(self, kpi_id: str, product: Optional[str], key: str, default: Any) -> Any:
        kpi = self.data.get("kpi", {}).get(kpi_id, {})
        if product is not None:
            per_product = kpi.get("product", {}).get(product, {})
            if key in per_product:
                return per_product[key]
        return kpi.get(key, default)

    def products_with_overrides(self, kpi_id: str) -> list[str]:
        return sorted(self.data.get("kpi", {}).get(kpi_id, {}).get("product", {}))


def merge_config(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_config(out[key], value) if nested else value
    return out


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read config {path}: {exc}") from exc


def load_config(path: Optional[str] = None) -> Config:
    """The catalog's own defaults (metrics/config.toml: per-product reference rates and minimums), overlaid by
    the deployment's TOML file named by RMM_CONFIG (or `path`)."""
    data: dict = {}
    default = catalog_dir() / "config.toml"
    if default.exists():
        data = _read_toml(default)
    path = path or settings.current().config_path
    if path:
        data = merge_config(data, _read_toml(Path(path)))
    return Config(data)


def catalog_dir() -> Path:
    override = settings.current().catalog_dir
    return Path(override) if override else Path(str(resources.files("rmm_monitor.metrics")))


def _load_kpi(yml_path: Path) -> Kpi:
    try:
        spec = yaml.safe_load(yml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{yml_path.name}: {exc}") from exc
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise CatalogError(f"{yml_path.name}: missing keys {missing}")
    if spec["id"] != yml_path.stem:
        raise CatalogError(f"{yml_path.name}: id {spec['id']!r} does not match the file name")
    if spec["direction"] not in DIRECTIONS:
        raise CatalogError(f"{yml_path.name}: direction must be one of {DIRECTIONS}")
    if spec["family"] not in FAMILIES:
        raise CatalogError(f"{yml_path.name}: family must be one of {FAMILIES}")
    # Normally <kpi_id>.sql; KPIs that differ only in a parameter (severe CRS / ICANS) name one shared file.
    sql_path = yml_path.with_name(spec.get("sql", yml_path.stem + ".sql"))
    if not sql_path.exists():
        raise CatalogError(f"{yml_path.name}: no {sql_path.name} beside it")
    sql = sql_path.read_text(encoding="utf-8").strip().rstrip(";")
    if reads_as_of(sql) and not re.search(r"\brecheck_at\b", sql):
        # the worker reuses a KPI's rows until something can change them; time alone can only through $as_of
        raise CatalogError(
            f"{sql_path.name} compares with $as_of but has no recheck_at column: give each unit the next instant "
            "after $as_of at which one of its comparisons with $as_of turns (NULL when none lies ahead)"
        )
    partition_by = tuple(spec.get("partition_by") or ())
    if not set(partition_by) <= set(PARTITION_COLUMNS):
        raise CatalogError(f"{yml_path.name}: partition_by may name only {', '.join(PARTITION_COLUMNS)}")
    zero = bool(spec.get("zero_tolerance", False))
    return Kpi(
        id=spec["id"],
        title=spec["title"],
        description=" ".join(str(spec["description"]).split()),
        title_zh=str(spec["title_zh"]).strip(),
        description_zh=join_lines(str(spec["description_zh"])),
        family=spec["family"],
        armm=spec["armm"],
        unit=spec["unit"],
        anchor=spec["anchor"],
        direction=spec["direction"],
        threshold=float(spec["threshold"]),
        min_n=1 if zero else int(spec["min_n"]),
        zero_tolerance=zero,
        review_section=spec["review_section"],
        headline=bool(spec.get("headline")),
        sql=sql,
        stats=dict(spec.get("stats") or {}),
        product_stats=tuple(spec.get("product_stats") or ()),
        params=dict(spec.get("params") or {}),
        tests=list(spec.get("tests") or []),
        success=" ".join(str(spec.get("success", "")).split()),
        unit_zh=join_lines(str(spec.get("unit_zh", ""))),
        success_zh=join_lines(str(spec.get("success_zh", ""))),
        window=str(spec.get("window", "")),
        order=int(spec.get("order", 100)),
        partition_by=partition_by,
    )


# a SQL string literal or a `--` comment: what a look for names in a statement must skip
SQL_STRING_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|--[^\n]*")
SQL_COMMENT = re.compile(r"--[^\n]*")


def reads_as_of(sql: str) -> bool:
    """Whether a KPI's SQL (outside its comments and strings) names `$as_of`: its units may then change with time
    alone, and it says when in its `recheck_at` column."""
    code = SQL_STRING_OR_COMMENT.sub("", sql)
    return re.search(r"\$as_of\b", code) is not None


def join_lines(text: str) -> str:
    """A text wrapped over several yml lines, as one line: English words joined by a space, Chinese characters
    joined directly (a space between two of them would show in the report)."""
    out = ""
    for line in (part.strip() for part in text.splitlines()):
        if not line:
            continue
        if out and (out[-1].isascii() and line[0].isascii()):
            out += " "
        out += line
    return out


@lru_cache(maxsize=4)
def _load(directory: str) -> tuple[Kpi, ...]:
    paths = sorted(Path(directory).glob("*.yml"))
    if not paths:
        raise CatalogError(f"no KPI definitions in {directory}")
    return tuple(sorted((_load_kpi(p) for p in paths), key=lambda k: (k.order, k.id)))


def load_catalog(directory: Optional[Path] = None) -> tuple[Kpi, ...]:
    return _load(str(directory or catalog_dir()))


def by_family(catalog: Iterable[Kpi]) -> dict[str, list[Kpi]]:
    """The KPIs per indicator family, families in the order an effectiveness evaluation reads them (reach,
    knowledge, behaviour, outcome), KPIs in catalog order within each; empty families left out."""
    groups: dict[str, list[Kpi]] = {f: [] for f in FAMILIES}
    for kpi in catalog:
        groups[kpi.family].append(kpi)
    return {f: kpis for f, kpis in groups.items() if kpis}


@lru_cache(maxsize=4)
def _load_shared(directory: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (p.stem, p.read_text(encoding="utf-8").strip().rstrip(";"))
        for p in sorted(Path(directory, "shared").glob("*.sql"))
    )


def load_shared_models(directory: Optional[Path] = None) -> tuple[tuple[str, str], ...]:
    """metrics/shared/<name>.sql: definitions several KPIs share (e.g. a patient's first infusion), offered to
    every KPI SQL as a relation named <name>, so each common definition is written once."""
    return _load_shared(str(directory or catalog_dir()))


def catalog_hash(directory: Optional[Path] = None, as_of: Optional[datetime] = None) -> str:
    """sha256 over every definition file of the catalog (KPI yml and SQL, shared models, config), and over the rule
    sets and dated changes known at `as_of` (not their files: an entry added later must not change the record of
    an earlier as-of), for manifests and reproducibility records."""
    from .rulebook import load_rulebook

    root = Path(directory or catalog_dir())
    h = hashlib.sha256()
    for p in sorted([*root.glob("*.*"), *root.glob("shared/*.sql")]):
        if p.suffix in (".sql", ".yml", ".toml"):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    if as_of is not None:
        h.update(b"rules\0" + load_rulebook(root).fingerprint(as_of).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Labels:
    """metrics/labels/sections.yml: the names of the families, review sections, statuses and unit outcomes, in each
    language of LANGS. An id without a name (a review section an event names that the catalog does not) shows as
    itself."""

    data: dict

    def _name(self, kind: str, key: str, lang: str, field: str = "") -> str:
        entry = self.data.get(kind, {}).get(key)
        if not entry:
            return key.replace("_", " ")
        return str(entry.get(f"{field}_{lang}" if field else lang) or entry.get(f"{field}_en" if field else "en"))

    def family(self, family: str, lang: str = "en") -> str:
        return self._name("families", family, lang)

    def family_intro(self, family: str, lang: str = "en") -> str:
        return join_lines(self._name("families", family, lang, "intro"))

    def section(self, section: str, lang: str = "en") -> str:
        return self._name("review_sections", section, lang)

    def status(self, status: str, lang: str = "en") -> str:
        return self._name("statuses", status, lang)

    def outcome(self, outcome: str, lang: str = "en") -> str:
        return self._name("outcomes", outcome, lang)

    def name(self, kind: str, key: str, lang: str = "en") -> str:
        """Any name of the file: kind is one of KINDS (signals, alert_states, case_states, severities ...)."""
        return self._name(kind, key, lang)

    def to_json(self) -> dict:
        """Every name, for the built-in page (one source for the page as for the report)."""
        return {
            kind: {key: {lang: self._name(kind, key, lang) for lang in LANGS} for key in self.data.get(kind, {})}
            for kind in LABEL_KINDS
        }


@lru_cache(maxsize=4)
def _load_labels(directory: str) -> Labels:
    path = Path(directory, "labels", "sections.yml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc
    for kind in LABEL_KINDS:
        for key, entry in (data.get(kind) or {}).items():
            missing = [lang for lang in LANGS if not entry.get(lang)]
            if missing:
                raise CatalogError(f"labels/sections.yml: {kind}.{key} has no {missing} name")
    missing_families = [f for f in FAMILIES if f not in (data.get("families") or {})]
    if missing_families:
        raise CatalogError(f"labels/sections.yml: no names for the families {missing_families}")
    return Labels(data)


def load_labels(directory: Optional[Path] = None) -> Labels:
    return _load_labels(str(directory or catalog_dir()))


def load_glossary(directory: Optional[Path] = None) -> list[dict]:
    """metrics/labels/glossary.yml: English term <-> the guideline's Chinese term."""
    path = Path(directory or catalog_dir(), "labels", "glossary.yml")
    return list(yaml.safe_load(path.read_text(encoding="utf-8"))["terms"])
