"""The KPI catalog (metrics/<kpi>.yml beside metrics/<kpi>.sql) and the engine that computes it: units, periods,
as-of, pending windows, Wilson intervals and statuses."""

from .catalog import (
    FAMILIES,
    LANGS,
    CatalogError,
    Config,
    Kpi,
    Labels,
    by_family,
    catalog_hash,
    load_catalog,
    load_config,
    load_glossary,
    load_labels,
    load_shared_models,
)
from .engine import BY_CHOICES, STATUS_CODES, UNIT_COLUMNS, Engine, adverse_outcomes, status_of, wilson
from .table import format_table

__all__ = [
    "FAMILIES",
    "LANGS",
    "Labels",
    "load_glossary",
    "load_labels",
    "by_family",
    "CatalogError",
    "Config",
    "Kpi",
    "catalog_hash",
    "load_catalog",
    "load_config",
    "load_shared_models",
    "BY_CHOICES",
    "STATUS_CODES",
    "UNIT_COLUMNS",
    "Engine",
    "adverse_outcomes",
    "status_of",
    "wilson",
    "format_table",
]
