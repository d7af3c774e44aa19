#!/usr/bin/env python3
"""The import direction of the package, checked (part of `make lint`, so of `make test`).

    cli  →  streams | dev  →  export  →  alerting | quality | ops  →  kpi | access  →  store  →  contract  →  core

A module may import the monitor's code only from its own part or from a part in a lower layer. Parts in the
same layer are independent of each other (alerting does not import quality, streams does not import dev), and
nothing outside cli/ imports the CLI. Every import counts, also one inside a function (the lazy imports that keep
`rmm --help` fast). The check reads the source with `ast`; it imports nothing.

Exit 0 when every import goes down; 1 with one line per import that goes up or sideways.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]
# part -> layer (higher imports lower). `rmm_monitor` itself (__version__) counts as core.
LAYERS: dict[str, int] = {
    "core": 0,
    "contract": 1,
    "store": 2,
    "kpi": 3,
    "access": 3,
    "alerting": 4,
    "quality": 4,
    "ops": 4,
    "export": 5,
    "streams": 6,
    "dev": 6,
    "cli": 7,
}
# Folders that hold a part's code, and the package they install as (pyproject.toml package-dir).
SOURCES: dict[str, Path] = {"rmm_monitor": ROOT / "rmm_monitor", "rmm_monitor.streams": ROOT / "streams"}
DATA_PACKAGES = {"metrics", "expectations"}  # catalogs and suites: read as package data, never imported as code


def modules(sources: dict[str, Path]) -> Iterator[tuple[str, bool, Path]]:
    """(dotted module name, is a package __init__, file) of every Python file of the package."""
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = list(rel.parts)
            is_init = parts[-1] == "__init__"
            if is_init:
                parts = parts[:-1]
            yield ".".join([package, *parts]), is_init, path


def part_of(module: str) -> Optional[str]:
    """The part a dotted name of the monitor belongs to (None: not the monitor's code)."""
    names = module.split(".")
    if names[0] != "rmm_monitor":
        return None
    if len(names) == 1:
        return "core"
    return names[1]


def imports(tree: ast.AST, module: str, is_init: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import in a module, relative ones resolved."""
    package = module if is_init else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            if node.module is None or target in ("rmm_monitor",):  # from rmm_monitor import kpi, ...
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def violations(sources: dict[str, Path] = SOURCES) -> list[str]:
    found = []
    for module, is_init, path in modules(sources):
        own = part_of(module)
        if own is None or own not in LAYERS:
            if own not in DATA_PACKAGES and module != "rmm_monitor":
                found.append(f"{_shown(path)}: part {own!r} has no layer in scripts/check_layers.py")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, target in imports(tree, module, is_init):
            other = part_of(target)
            if other is None or other == own or other in DATA_PACKAGES or target == "rmm_monitor.__version__":
                continue
            if other not in LAYERS:
                continue  # `from rmm_monitor import __version__` and similar names of the top package
            if LAYERS[other] >= LAYERS[own]:
                why = (
                    "the CLI is the top"
                    if other == "cli"
                    else ("same layer: parts there are independent" if LAYERS[other] == LAYERS[own] else "goes up")
                )
                found.append(f"{_shown(path)}:{line}: {own} imports {target} ({why})")
    return found


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    print(f"import direction: {'ok' if not found else f'{len(found)} violation(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
