"""The KPI catalog: metrics/<kpi_id>.yml (definition, threshold, tests) beside metrics/<kpi_id>.sql (the units).

The catalog is the single source of every definition; Prometheus gauges, alert rules, dashboards and exports
are built from it. A product-specific override (e.g. the reference rate of severe_crs_rate, the minimum
tocilizumab stock) comes from the TOML config, never from SQL.
"""

from __future__ import annotations

import hashlib
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
FAMILY_TITLES = {
    "reach": "Reach: did the materials get to centres, HCPs and patients?",
    "knowledge": "Knowledge: do HCPs and patients know the key risk messages?",
    "behaviour": "Behaviour: do centres and HCPs act on them?",
    "outcome": "Outcome: what happened to the patients?",
}
REQUIRED_KEYS = (
    "id",
    "title",
    "description",
    "family",
    "armm",
    "unit",
    "anchor",
    "direction",
    "threshold",
    "min_n",
    "review_section",
)


class CatalogError(ConfigError):
    """A catalog file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Kpi:
    id: str
    title: str
    description: str
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
    window: str = ""
    order: int = 100

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
    zero = bool(spec.get("zero_tolerance", False))
    return Kpi(
        id=spec["id"],
        title=spec["title"],
        description=" ".join(str(spec["description"]).split()),
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
        sql=sql_path.read_text(encoding="utf-8").strip().rstrip(";"),
        stats=dict(spec.get("stats") or {}),
        product_stats=tuple(spec.get("product_stats") or ()),
        params=dict(spec.get("params") or {}),
        tests=list(spec.get("tests") or []),
        success=" ".join(str(spec.get("success", "")).split()),
        window=str(spec.get("window", "")),
        order=int(spec.get("order", 100)),
    )


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
