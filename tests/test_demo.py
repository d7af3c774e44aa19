"""`rmm demo --duration S`: bundled broker + worker + simulator, exits 0 with one final JSON line."""
import json

from rmm_monitor.catalog import load_catalog

from conftest import run_cli


def test_demo_runs_and_prints_the_final_json_line(tmp_path):
    out = run_cli("demo", "--duration", "25", "--patients", "120", "--dir", str(tmp_path), timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    final = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(final) >= {"produced", "ingested", "rejected", "kpis", "metrics_url"}
    assert final["rejected"] == 3  # the demo's three poison events, each dead-lettered
    # every produced record is accounted for: stored once, recognised as a duplicate, or rejected
    assert final["ingested"] + final["duplicates"] + final["rejected"] == final["produced"]
    assert final["ingested"] > 1000
    kpis = {r["kpi"] for r in final["kpis"]}
    assert kpis == {k.id for k in load_catalog()}
    assert final["metrics_url"].startswith("http://127.0.0.1:")
    assert "/metrics" in out.stderr and "dashboard" in out.stderr
    assert not (tmp_path / "rmm-demo.duckdb.worker.json").exists(), "the worker cleans up its address file"
    # on exit the demo writes the current quarter's effectiveness export through the worker's API
    export = tmp_path / "export"
    assert final["export"] == str(export)
    manifest = json.loads((export / "manifest.json").read_text())
    assert {"kpis.xlsx", "report.pdf", "kpis.csv"} <= set(manifest["files"])
