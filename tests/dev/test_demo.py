"""`rmm demo`: bundled broker + worker + simulator, one final JSON line; and nothing it starts outlives it, however
it ends (Ctrl-C once, twice, SIGTERM, SIGHUP, SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rmm_monitor.dev.simulate import WEAK_SITE_CATCHERS, WEAK_SITES
from rmm_monitor.kpi import load_catalog

from support.procs import Proc, children, wait_gone
from support.workers import run_cli

pytestmark = pytest.mark.long

STOP_WITHIN_S = 10.0


def test_demo_runs_catches_every_weak_site_and_prints_the_final_json_line(tmp_path):
    # the demo as `make run` starts it (600 patients and the international arm), for the minute the README names
    out = run_cli("demo", "--duration", "60", "--dir", str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = out.stdout.strip().splitlines()  # stdout is the final JSON line, nothing else
    final = json.loads(line)
    assert set(final) >= {"produced", "ingested", "rejected", "kpis", "metrics_url", "as_of", "alerts", "weak_sites"}
    # what the demo tells is what it shows: each weak site it simulated has an alert of the indicator or signal
    # meant to catch it, judged over the whole simulated programme
    assert final["period"] == "all"
    alerts = {a["alert_id"]: a for a in final["alerts"]}
    assert set(final["weak_sites"]) == set(WEAK_SITES)
    for site, alert_ids in final["weak_sites"].items():
        assert alert_ids, f"{site} ({WEAK_SITES[site]}) got no alert; alerts: {sorted(alerts)}"
        for alert_id in alert_ids:
            a = alerts[alert_id]
            catchers = WEAK_SITE_CATCHERS[site]
            assert (a["site_id"] == site and a["kpi"] in catchers) or f"{a['signal']}:{a['section']}" in catchers
            assert a["case_id"], f"{alert_id} opened no review case"
        assert f"[demo] {site}: caught by {', '.join(alert_ids)}" in out.stderr
    # the evidence weak spots show too: BCM-07's HCPs, GZ-03's patients, XA-08's overdue critical CAPA, FR-14
    fired = {(a["signal"], a["kpi"], a["site_id"]) for a in final["alerts"]}
    assert ("kpi_breach", "patient_knowledge", "GZ-03") in fired
    assert ("critical_audit_finding", "", "XA-08") in fired or ("critical_audit_finding", None, "XA-08") in fired
    assert ("kpi_breach", "post_infusion_monitoring", "FR-14") in fired
    assert any(a["kpi"] == "hcp_knowledge" and a["product"] == "BCM-07" for a in final["alerts"])
    assert final["rejected"] == 3  # the demo's three poison events, each dead-lettered
    # every produced record is accounted for: stored once, recognised as a duplicate, or rejected
    assert final["ingested"] + final["duplicates"] + final["rejected"] == final["produced"]
    assert final["ingested"] > 20_000
    kpis = {r["kpi"] for r in final["kpis"]}
    assert kpis == {k.id for k in load_catalog()}
    assert final["metrics_url"].startswith("http://127.0.0.1:")
    assert "/metrics" in out.stderr and "dashboard" in out.stderr
    assert not (tmp_path / "rmm-demo.duckdb.worker.json").exists(), "the worker cleans up its address file"
    # not a terminal: progress lines now and then, the KPI table once at the end
    assert "[demo] produced " in out.stderr
    assert out.stderr.count("95% CI") == 1, out.stderr[-3000:]
    # on exit the demo writes the current quarter's effectiveness export, as of the final rows' instant
    export = tmp_path / "export"
    assert final["export"] == str(export)
    manifest = json.loads((export / "manifest.json").read_text())
    assert {"kpis.xlsx", "report.pdf", "kpis.csv"} <= set(manifest["files"])
    assert manifest["quarter"] == "2026Q4" and manifest["as_of"].startswith("2026-11-25")  # conftest's NOW
    # the demo's QPPV account: its password printed once, and it signs in to the file the demo leaves
    [sign_in] = [line for line in out.stderr.splitlines() if line.startswith("[demo] sign in:")]
    password = sign_in.split("password ")[1].split(" ")[0]
    login = run_cli("login", "qppv.demo", "--db", str(tmp_path / "rmm-demo.duckdb"), "--password-stdin",
                    input_text=password + "\n")  # fmt: skip
    assert login.returncode == 0 and login.stdout.startswith("rmm_"), login.stderr
    assert password not in (tmp_path / "worker.log").read_text()
    verify = run_cli("audit", "verify", "--db", str(tmp_path / "rmm-demo.duckdb"))
    assert verify.returncode == 0, verify.stdout


class Demo:
    """`rmm demo` without a time limit, as someone starts it in a terminal and then ends it."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.stdout, self.stderr = tmp_path / "demo.out", tmp_path / "demo.err"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rmm_monitor.cli",
                    "demo",
                    "--patients",
                    "40",
                    "--rate",
                    "400",
                    "--dir",
                    str(tmp_path / "demo"),
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err():
            assert self.proc.poll() is None, f"demo exited ({self.proc.returncode}):\n{self.err()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout}s:\n{self.err()[-3000:]}"
            time.sleep(0.2)

    def children(self) -> dict[str, Proc]:
        kids = children(self.proc.pid)
        named = {
            (
                "broker"
                if "tansu" in p.cmdline
                else "worker"
                if " worker" in p.cmdline
                else "export"
                if " export" in p.cmdline
                else p.cmdline
            ): p
            for p in kids
        }
        return named

    def final(self) -> dict:
        [line] = self.stdout.read_text().strip().splitlines()
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def demo(tmp_path):
    d = Demo(tmp_path)
    yield d
    d.kill()
    for p in children(d.proc.pid):  # only reached when a test failed: leave nothing behind either way
        os.kill(p.pid, signal.SIGKILL)


def _running(demo: Demo) -> dict[str, Proc]:
    demo.wait_for("[demo] simulated CAR-T programme")
    kids = demo.children()
    assert set(kids) == {"broker", "worker"}, kids
    # the demo streams only once the worker's ingest consumer holds its partitions (its group joins ~5 s after the
    # API answers): a stop right after the stream began then finds ingest caught up, not still joining
    [metrics] = [line for line in demo.err().splitlines() if line.startswith("[demo] metrics:")]
    url = metrics.split()[-1].removesuffix("/metrics")
    with urllib.request.urlopen(url + "/api/status", timeout=5) as resp:
        assert json.load(resp)["assigned_partitions"] > 0
    return kids


def _child(demo: Demo, name: str, timeout: float = 5.0) -> Proc | None:
    """The demo's child called `name`; a child just forked shows the demo's own command line until its exec."""
    deadline = time.monotonic() + timeout
    while (kid := demo.children().get(name)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return kid


def _assert_gone(procs, what: str) -> None:
    left = wait_gone(list(procs), STOP_WITHIN_S)
    assert not left, f"{what}: still running {STOP_WITHIN_S:.0f} s later: {[p.cmdline for p in left]}"


def test_ctrl_c_once_stops_everything_then_writes_the_export(demo):
    kids = _running(demo)
    time.sleep(2)
    demo.proc.send_signal(signal.SIGINT)
    _assert_gone(kids.values(), "after Ctrl-C")
    assert demo.proc.wait(180) == 0, demo.err()[-3000:]
    final = demo.final()
    assert final["export"] == str(demo.dir / "demo" / "export")
    assert (demo.dir / "demo" / "export" / "manifest.json").exists()
    assert "Traceback" not in demo.err() and "[demo] Ctrl-C: stopping" in demo.err()


def test_ctrl_c_twice_skips_the_export_with_one_line(demo):
    kids = _running(demo)
    demo.proc.send_signal(signal.SIGINT)
    demo.wait_for("effectiveness export to")
    export = _child(demo, "export")
    assert export is not None, "the export runs in a child process of the demo"
    demo.proc.send_signal(signal.SIGINT)
    _assert_gone([*kids.values(), export], "after a second Ctrl-C")
    assert demo.proc.wait(STOP_WITHIN_S) == 0
    err = demo.err()
    assert err.count("export skipped") == 1 and "Traceback" not in err, err[-3000:]
    assert demo.final()["export"] is None
    assert not (demo.dir / "demo" / "export").exists(), "a half-written export is removed, never left to be mistaken"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_everything_without_the_export(demo, signum):
    kids = _running(demo)
    demo.proc.send_signal(signum)
    _assert_gone(kids.values(), f"after {signum.name}")
    assert demo.proc.wait(STOP_WITHIN_S) == 0
    err = demo.err()
    assert "Traceback" not in err and f"export skipped ({signum.name})" in err, err[-3000:]
    assert demo.final()["export"] is None


def test_sigkill_of_the_demo_takes_its_broker_and_worker_along(demo):
    kids = _running(demo)
    demo.proc.kill()
    demo.proc.wait(5)
    _assert_gone(kids.values(), "after SIGKILL of the demo")
