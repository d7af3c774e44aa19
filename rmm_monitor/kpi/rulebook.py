"""Rule sets by jurisdiction, product and date, and dated changes of thresholds and parameters: the catalog's
values that depend on where and when, read from metrics/rules/ (rule_sets.yml, changes.yml).

Everything here is filtered by when the catalog knew it (`known_from`), so a number computed as of T uses only
the rules and changes known at T: adding a rule or changing a threshold today never changes a number computed as
of an earlier time. The KPI SQL sees the rule versions known at T as a relation `rules` (one row per version, one
column per value) and the country map as `jurisdictions`; it picks the version in force per unit itself
(docs/kpi-rules.md, "Rule sets").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml

from .catalog import CatalogError, catalog_dir

RULES_DIR = "rules"
DEFAULT = "default"
ALL_PRODUCTS = "*"


def _instant(value: Any, where: str) -> datetime:
    """A date (midnight UTC) or an RFC 3339 instant from YAML."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CatalogError(f"{where}: {value!r} is not a date or an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RuleVersion:
    rule: str
    jurisdiction: str
    product: str
    effective_from: datetime
    effective_to: Optional[datetime]
    known_from: datetime
    values: dict[str, Optional[float]]
    name: str
    source: str

    def doc(self) -> dict:
        """As written in the method notes and hashed for the manifest."""
        return {
            "rule": self.rule,
            "jurisdiction": self.jurisdiction,
            "product": self.product,
            "effective_from": self.effective_from.isoformat(),
            "effective_to": self.effective_to.isoformat() if self.effective_to else None,
            "known_from": self.known_from.isoformat(),
            "values": self.values,
            "name": self.name,
            "source": self.source,
        }

    @property
    def entry_id(self) -> str:
        """How a signature names this version (rmm rules sign)."""
        return f"rule:{self.rule}:{self.jurisdiction}:{self.product}:{self.effective_from.date().isoformat()}"

    @property
    def content_hash(self) -> str:
        """What a signature on this version is bound to."""
        return _content_hash(self.doc())


@dataclass(frozen=True)
class CatalogChange:
    kpi: str
    product: str
    key: str
    value: Any
    effective_from: datetime
    known_from: datetime
    reason: str
    source: str

    def doc(self) -> dict:
        return {
            "kpi": self.kpi,
            "product": self.product,
            "key": self.key,
            "value": self.value,
            "effective_from": self.effective_from.isoformat(),
            "known_from": self.known_from.isoformat(),
            "reason": self.reason,
            "source": self.source,
        }

    @property
    def entry_id(self) -> str:
        return f"change:{self.kpi}:{self.product}:{self.key}:{self.effective_from.date().isoformat()}"

    @property
    def content_hash(self) -> str:
        return _content_hash(self.doc())


def _content_hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class RuleBook:
    jurisdictions: dict[str, str] = field(default_factory=dict)  # country -> jurisdiction
    versions: tuple[RuleVersion, ...] = ()
    changes: tuple[CatalogChange, ...] = ()

    def known_at(self, as_of: datetime) -> "RuleBook":
        """Only what the catalog knew at `as_of`."""
        return RuleBook(
            self.jurisdictions,
            tuple(v for v in self.versions if v.known_from <= as_of),
            tuple(c for c in self.changes if c.known_from <= as_of),
        )

    def next_change_after(self, as_of: datetime) -> Optional[datetime]:
        """The first instant after `as_of` at which what a KPI reads of the rule book can differ: an entry becomes
        known, or a dated change takes effect (a period still open is judged at its as-of time). None: never."""
        instants = [v.known_from for v in self.versions]
        instants += [t for c in self.changes for t in (c.known_from, c.effective_from)]
        return min((t for t in instants if t > as_of), default=None)

    def value_keys(self) -> list[str]:
        return sorted({k for v in self.versions for k in v.values})

    def value(self, kpi: str, product: Optional[str], key: str, base: Any, at: datetime, as_of: datetime) -> Any:
        """A threshold or parameter as changed by the entries known at `as_of` and effective at `at`; `base` (the
        yml's or config.toml's value) when none is. A product's entry wins over "*", then the latest."""
        best: Optional[CatalogChange] = None
        for c in self.changes:
            if (
                c.kpi == kpi
                and c.key == key
                and c.known_from <= as_of
                and c.effective_from <= at
                and c.product in (ALL_PRODUCTS, product)
            ):
                rank = (c.product != ALL_PRODUCTS, c.effective_from, c.known_from)
                if best is None or rank > (best.product != ALL_PRODUCTS, best.effective_from, best.known_from):
                    best = c
        return base if best is None else best.value

    def sql_params(self, as_of: datetime) -> dict[str, Any]:
        """The `rules` and `jurisdictions` relations of the KPI SQL, as query parameters (lists zipped by unnest)."""
        known = self.known_at(as_of).versions
        params: dict[str, Any] = {
            "rule_rule": [v.rule for v in known],
            "rule_jurisdiction": [v.jurisdiction for v in known],
            "rule_product": [v.product for v in known],
            "rule_from": [v.effective_from for v in known],
            "rule_to": [v.effective_to for v in known],
            "rule_name": [v.name for v in known],
            "jur_country": sorted(self.jurisdictions),
            "jur_name": [self.jurisdictions[c] for c in sorted(self.jurisdictions)],
        }
        for key in self.value_keys():
            params[f"rule_v_{key}"] = [v.values.get(key) for v in known]
        return params

    def relations_sql(self) -> dict[str, str]:
        """name -> the SELECT building it from `sql_params` (typed, so empty lists work)."""
        values = "".join(f", unnest($rule_v_{k}::DOUBLE[]) AS {k}" for k in self.value_keys())
        return {
            "rules": (
                "SELECT unnest($rule_rule::VARCHAR[]) AS rule, unnest($rule_jurisdiction::VARCHAR[]) AS "
                "jurisdiction, unnest($rule_product::VARCHAR[]) AS product, unnest($rule_from::TIMESTAMPTZ[]) "
                "AS effective_from, unnest($rule_to::TIMESTAMPTZ[]) AS effective_to, "
                f"unnest($rule_name::VARCHAR[]) AS name{values}"
            ),
            "jurisdictions": (
                "SELECT unnest($jur_country::VARCHAR[]) AS country, unnest($jur_name::VARCHAR[]) AS jurisdiction"
            ),
        }

    def fingerprint(self, as_of: datetime) -> str:
        """What of the rule book was known at `as_of`, canonically: the manifest hashes this, not the files, so
        an entry added later leaves an earlier as-of's manifest as it was."""
        known = self.known_at(as_of)
        return json.dumps(
            {
                "jurisdictions": known.jurisdictions,
                "versions": [v.doc() for v in known.versions],
                "changes": [c.doc() for c in known.changes],
            },
            sort_keys=True,
        )


def _versions(spec: dict, where: str, kpi_ids: set[str]) -> list[RuleVersion]:
    missing = {"rule", "jurisdiction", "effective_from", "known_from", "values", "name", "source"} - spec.keys()
    if missing:
        raise CatalogError(f"{where}: a version lacks {', '.join(sorted(missing))}")
    if spec["rule"] not in kpi_ids:
        raise CatalogError(f"{where}: rule {spec['rule']!r} is no catalog KPI")
    jurisdictions = spec["jurisdiction"] if isinstance(spec["jurisdiction"], list) else [spec["jurisdiction"]]
    values = {str(k): (None if v is None else float(v)) for k, v in dict(spec["values"]).items()}
    out = []
    for j in jurisdictions:
        out.append(
            RuleVersion(
                rule=spec["rule"],
                jurisdiction=str(j),
                product=str(spec.get("product", ALL_PRODUCTS)),
                effective_from=_instant(spec["effective_from"], where),
                effective_to=_instant(spec["effective_to"], where) if spec.get("effective_to") else None,
                known_from=_instant(spec["known_from"], where),
                values=values,
                name=str(spec["name"]),
                source=" ".join(str(spec["source"]).split()),
            )
        )
    return out


def _changes(spec: dict, where: str, kpi_ids: set[str]) -> CatalogChange:
    missing = {"kpi", "key", "value", "effective_from", "known_from", "reason", "source"} - spec.keys()
    if missing:
        raise CatalogError(f"{where}: a change lacks {', '.join(sorted(missing))}")
    if spec["kpi"] not in kpi_ids:
        raise CatalogError(f"{where}: kpi {spec['kpi']!r} is no catalog KPI")
    return CatalogChange(
        kpi=spec["kpi"],
        product=str(spec.get("product", ALL_PRODUCTS)),
        key=str(spec["key"]),
        value=spec["value"],
        effective_from=_instant(spec["effective_from"], where),
        known_from=_instant(spec["known_from"], where),
        reason=" ".join(str(spec["reason"]).split()),
        source=" ".join(str(spec["source"]).split()),
    )


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path.name}: {exc}") from exc


@lru_cache(maxsize=4)
def _load(directory: str, kpi_ids: frozenset[str]) -> RuleBook:
    root = Path(directory) / RULES_DIR
    sets, changes = _read(root / "rule_sets.yml"), _read(root / "changes.yml")
    jurisdictions = {}
    for name, countries in (sets.get("jurisdictions") or {}).items():
        for country in countries:
            if country in jurisdictions:
                raise CatalogError(f"rule_sets.yml: {country} is in two jurisdictions")
            jurisdictions[str(country)] = str(name)
    versions = [
        v
        for i, spec in enumerate(sets.get("versions") or [])
        for v in _versions(spec, f"rule_sets.yml version {i + 1}", set(kpi_ids))
    ]
    entries = [
        _changes(spec, f"changes.yml entry {i + 1}", set(kpi_ids))
        for i, spec in enumerate(changes.get("changes") or [])
    ]
    return RuleBook(jurisdictions, tuple(versions), tuple(entries))


def reload() -> None:
    """Forget the catalog files read so far (each is read once per process and cached): for a process that
    changes them, e.g. a test. A running worker picks a catalog change up at its next start."""
    from .catalog import _load as _load_kpis
    from .catalog import _load_shared

    for cached in (_load, _load_kpis, _load_shared):
        cached.cache_clear()


def load_rulebook(directory: Optional[Path] = None) -> RuleBook:
    from .catalog import load_catalog

    root = directory or catalog_dir()
    return _load(str(root), frozenset(k.id for k in load_catalog(root)))
