"""The import direction (scripts/check_layers.py) holds for the package, and the check finds what breaks it."""

from __future__ import annotations

import subprocess
import sys

from support.paths import REPO

sys.path.insert(0, str(REPO / "scripts"))
from check_layers import violations  # noqa: E402


def test_the_package_imports_only_downwards():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_layers.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert "import direction: ok" in proc.stdout


def _package(tmp_path, files: dict[str, str]) -> dict:
    root = tmp_path / "rmm_monitor"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"rmm_monitor": root}


def test_an_upward_a_sideways_and_a_cli_import_are_each_found(tmp_path):
    sources = _package(
        tmp_path,
        {
            "store/__init__.py": "",
            "store/event_store.py": "def f():\n    from rmm_monitor.kpi import Engine  # lazy, still counted\n",
            "alerting/__init__.py": "",
            "alerting/signals.py": "from rmm_monitor.quality import suites\n",
            "quality/__init__.py": "",
            "quality/suites.py": "",
            "kpi/__init__.py": "",
            "dev/__init__.py": "",
            "dev/demo.py": "from ..cli.app import main\n",
            "cli/__init__.py": "",
            "cli/app.py": "from rmm_monitor.store import event_store\nfrom . import registry\n",
            "cli/registry.py": "",
        },
    )
    found = violations(sources)
    assert any("event_store.py:2: store imports rmm_monitor.kpi (goes up)" in f for f in found), found
    assert any("signals.py:1: alerting imports rmm_monitor.quality (same layer" in f for f in found), found
    assert any("demo.py:1: dev imports rmm_monitor.cli.app (the CLI is the top)" in f for f in found), found
    assert len(found) == 3, found  # the CLI may import anything below it, and itself


def test_a_part_without_a_layer_is_reported(tmp_path):
    found = violations(_package(tmp_path, {"newpart/__init__.py": "", "newpart/x.py": ""}))
    assert any("part 'newpart' has no layer" in f for f in found), found
