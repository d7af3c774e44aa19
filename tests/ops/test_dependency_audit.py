"""The dependency audit (scripts/audit_deps.py, `make audit`): pins against advisories, allow-list, fallbacks.

PyPI cannot run here, so a local HTTP server answers in the shape of PyPI's JSON API (per-release and project
documents with their `vulnerabilities` lists); everything else is the real script run as a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support.paths import REPO

ROOT = REPO
SCRIPT = ROOT / "scripts" / "audit_deps.py"
sys.path.insert(0, str(SCRIPT.parent))
from audit_deps import osv_affects  # noqa: E402

VULN = {
    "id": "PYSEC-2099-1",
    "aliases": ["CVE-2099-0001", "GHSA-aaaa-bbbb-cccc"],
    "fixed_in": ["2.0.1"],
    "summary": "request smuggling",
    "details": "...",
    "link": "https://osv.dev/vulnerability/PYSEC-2099-1",
    "source": "osv",
    "withdrawn": None,
}


class FakeIndex(BaseHTTPRequestHandler):
    """/pypi/<name>/<version>/json and /pypi/<name>/json from `self.server.releases`:
    {name: {"latest": version, "vulns": {version: [advisory, ...]}, "no_release_docs": bool}}."""

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        projects = self.server.releases
        body = None
        if len(parts) == 4 and parts[1] in projects and not projects[parts[1]].get("no_release_docs"):
            p = projects[parts[1]]
            if parts[2] in p["vulns"]:
                body = {"info": {"version": parts[2]}, "vulnerabilities": p["vulns"][parts[2]]}
        elif len(parts) == 3 and parts[1] in projects:
            p = projects[parts[1]]
            body = {"info": {"version": p["latest"]}, "vulnerabilities": p["vulns"].get(p["latest"], [])}
        data = json.dumps(body).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        """No access log: the test output is the audit's own."""


@pytest.fixture
def index():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeIndex)
    server.releases = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_audit(tmp_path: Path, pins: str, *args: str, allow: str = "", osv: dict | None = None):
    (tmp_path / "constraints.txt").write_text(pins)
    (tmp_path / "allow.toml").write_text(allow)
    (tmp_path / "osv.json").write_text(json.dumps(osv or {"packages": [], "advisories": []}))
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--constraints",
        str(tmp_path / "constraints.txt"),
        "--allowlist",
        str(tmp_path / "allow.toml"),
        "--osv-snapshot",
        str(tmp_path / "osv.json"),
        "--record",
        str(tmp_path / "record.json"),
        "--json",
        str(tmp_path / "report.json"),
        "--timeout",
        "3",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    report = json.loads((tmp_path / "report.json").read_text()) if (tmp_path / "report.json").exists() else None
    return proc, report


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/pypi"


def test_a_pin_with_an_advisory_fails_the_audit_and_names_it(index, tmp_path):
    index.releases = {
        "webthing": {"latest": "2.0.1", "vulns": {"2.0.0": [VULN], "2.0.1": []}},
        "safe-lib": {"latest": "1.0", "vulns": {"1.0": []}},
    }
    proc, report = run_audit(tmp_path, "webthing==2.0.0\nSafe_Lib==1.0\n", "--index-url", url(index))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "VULNERABLE webthing==2.0.0: PYSEC-2099-1" in proc.stdout and "fixed in 2.0.1" in proc.stdout
    assert [(r["package"], r["id"]) for r in report["open"]] == [("webthing", "PYSEC-2099-1")]
    assert report["pins"]["safe-lib"]["covered_by"] == ["pypi:release"]


def test_the_fixed_release_passes(index, tmp_path):
    index.releases = {"webthing": {"latest": "2.0.1", "vulns": {"2.0.0": [VULN], "2.0.1": []}}}
    proc, report = run_audit(tmp_path, "webthing==2.0.1\n", "--index-url", url(index))
    assert proc.returncode == 0, proc.stdout
    assert report["open"] == [] and "audit: ok" in proc.stdout


def test_the_allow_list_accepts_an_advisory_by_alias_until_its_review_date(index, tmp_path):
    index.releases = {"webthing": {"latest": "2.0.1", "vulns": {"2.0.0": [VULN]}}}
    allow = (
        '[[allow]]\nid = "GHSA-aaaa-bbbb-cccc"\npackage = "WebThing"\n'
        'reason = "only the proxy mode is affected; we never enable it"\nreview_by = 2099-12-31\n'
    )
    proc, report = run_audit(tmp_path, "webthing==2.0.0\n", "--index-url", url(index), allow=allow)
    assert proc.returncode == 0, proc.stdout
    assert [r["id"] for r in report["accepted"]] == ["PYSEC-2099-1"] and report["open"] == []

    expired = allow.replace("2099-12-31", "2026-01-01")
    proc, report = run_audit(
        tmp_path, "webthing==2.0.0\n", "--index-url", url(index), "--today", "2026-11-26", allow=expired
    )
    assert proc.returncode == 1
    assert [r["id"] for r in report["open"]] == ["PYSEC-2099-1"]
    assert report["expired_allowances"] == [
        {"id": "GHSA-aaaa-bbbb-cccc", "package": "webthing", "review_by": "2026-01-01"}
    ]
    # once the pin moves to the fixed release, the lapsed entry matches nothing: a warning to tidy it up
    index.releases["webthing"]["vulns"]["2.0.1"] = []
    proc, report = run_audit(
        tmp_path, "webthing==2.0.1\n", "--index-url", url(index), "--today", "2026-11-26", allow=expired
    )
    assert proc.returncode == 0 and "past its review date 2026-01-01" in proc.stdout


def test_withdrawn_advisories_do_not_count(index, tmp_path):
    index.releases = {"webthing": {"latest": "2.0.0", "vulns": {"2.0.0": [{**VULN, "withdrawn": "2099-02-01"}]}}}
    proc, _ = run_audit(tmp_path, "webthing==2.0.0\n", "--index-url", url(index))
    assert proc.returncode == 0, proc.stdout


def test_a_newer_release_upstream_is_a_warning_not_a_failure(index, tmp_path):
    """Upstream publishing 5.0 takes away the per-release answer for the pinned 4.9 (what PyPI does here): the pin
    cannot be checked, which the audit says, with why; it is no advisory, so the audit passes."""
    index.releases = {
        "older": {"latest": "5.0", "vulns": {}, "no_release_docs": True},
        "safe-lib": {"latest": "1.0", "vulns": {"1.0": []}},
    }
    proc, report = run_audit(tmp_path, "older==4.9\nsafe-lib==1.0\n", "--index-url", url(index))
    assert proc.returncode == 0, proc.stdout
    assert (
        "WARNING    older==4.9 not checked: per-release document missing and the latest release is 5.0" in proc.stdout
    )
    assert "audit: ok (1 pins not checked, see the warnings)" in proc.stdout
    assert report["open"] == [] and [r["package"] for r in report["uncovered"]] == ["older"]


def test_without_a_release_document_only_the_latest_release_is_covered(index, tmp_path):
    index.releases = {
        "newest": {"latest": "3.0", "vulns": {"3.0": [VULN]}, "no_release_docs": True},
        "older": {"latest": "5.0", "vulns": {}, "no_release_docs": True},
    }
    proc, report = run_audit(tmp_path, "newest==3.0\nolder==4.9\n", "--index-url", url(index))
    assert proc.returncode == 1
    assert report["pins"]["newest"]["covered_by"] == ["pypi:project (pin is the latest release)"]
    assert [r["id"] for r in report["open"]] == ["PYSEC-2099-1"]  # the project document's list was read
    assert [(r["package"], r["version"]) for r in report["uncovered"]] == [("older", "4.9")]
    assert "latest release is 5.0" in report["uncovered"][0]["why"]


def test_the_osv_snapshot_covers_a_pin_pypi_cannot_answer_for(index, tmp_path):
    index.releases = {"older": {"latest": "5.0", "vulns": {}, "no_release_docs": True}}
    osv = {
        "packages": ["older"],
        "advisories": [
            {
                "id": "PYSEC-2098-7",
                "aliases": ["CVE-2098-7"],
                "package": "older",
                "summary": "overflow",
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "4.0"}, {"fixed": "4.9.1"}]}],
                "versions": [],
            }
        ],
    }
    proc, report = run_audit(tmp_path, "older==4.9\n", "--index-url", url(index), osv=osv)
    assert proc.returncode == 1
    assert report["open"][0]["id"] == "PYSEC-2098-7" and report["open"][0]["fixed_in"] == ["4.9.1"]
    proc, report = run_audit(tmp_path, "older==4.9.1\n", "--index-url", url(index), osv=osv)
    assert proc.returncode == 0, proc.stdout
    assert report["pins"]["older"]["covered_by"] == ["osv-snapshot"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_the_record_answers_for_the_recorded_versions_whatever_its_age(index, tmp_path):
    index.releases = {
        "webthing": {"latest": "2.0.0", "vulns": {"2.0.0": [VULN]}},
        "safe-lib": {"latest": "1.0", "vulns": {"1.0": []}},
    }
    proc, _ = run_audit(tmp_path, "webthing==2.0.0\nsafe-lib==1.0\n", "--index-url", url(index), "--refresh")
    assert proc.returncode == 1  # the refresh writes the record and still reports the advisory
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["answers"]["webthing"]["version"] == "2.0.0"

    dead = f"http://127.0.0.1:{_closed_port()}/pypi"
    proc, report = run_audit(tmp_path, "webthing==2.0.0\n", "--index-url", dead)
    assert "falling back to the record" in proc.stdout
    assert [r["id"] for r in report["open"]] == ["PYSEC-2099-1"]  # the recorded advisory still fails it

    # a record older than --max-age-days is still read (its age is a warning, not a verdict)
    record["retrieved"] = "2026-01-01T00:00:00+00:00"
    (tmp_path / "record.json").write_text(json.dumps(record))
    proc, report = run_audit(tmp_path, "webthing==2.0.0\n", "--offline", "--max-age-days", "30")
    assert proc.returncode == 1 and [r["id"] for r in report["open"]] == ["PYSEC-2099-1"]
    assert "days old (over 30)" in proc.stdout
    proc, report = run_audit(tmp_path, "safe-lib==1.0\n", "--offline", "--max-age-days", "30")
    assert proc.returncode == 0 and "days old (over 30)" in proc.stdout
    # a pin at a version the record never saw is not checked: a warning
    proc, report = run_audit(tmp_path, "webthing==2.0.1\n", "--offline")
    assert proc.returncode == 0 and [(r["package"], r["version"]) for r in report["uncovered"]] == [
        ("webthing", "2.0.1")
    ]


def test_offline_review_dates_are_judged_on_the_record_date_not_the_calendar(index, tmp_path):
    """The same commit, the same verdict on any day: offline, an acceptance is valid if it was on the day the
    advisories were recorded. Live (`make audit`), the same acceptance is judged today and has lapsed."""
    index.releases = {"webthing": {"latest": "2.0.0", "vulns": {"2.0.0": [VULN]}}}
    allow = (
        '[[allow]]\nid = "PYSEC-2099-1"\npackage = "webthing"\nreason = "proxy mode only; unused here"\n'
        "review_by = 2026-06-30\n"
    )
    run_audit(tmp_path, "webthing==2.0.0\n", "--index-url", url(index), "--refresh", allow=allow)
    record = json.loads((tmp_path / "record.json").read_text())
    record["retrieved"] = "2026-05-01T00:00:00+00:00"
    (tmp_path / "record.json").write_text(json.dumps(record))
    proc, report = run_audit(tmp_path, "webthing==2.0.0\n", "--offline", allow=allow)
    assert proc.returncode == 0, proc.stdout
    assert [r["id"] for r in report["accepted"]] == ["PYSEC-2099-1"]
    proc, report = run_audit(
        tmp_path, "webthing==2.0.0\n", "--index-url", url(index), "--today", "2026-12-04", allow=allow
    )
    assert proc.returncode == 1 and [r["id"] for r in report["open"]] == ["PYSEC-2099-1"]


@pytest.mark.parametrize(
    "pins, allow, message",
    [
        ("webthing>=2.0\n", "", "is not an exact pin"),
        (
            "webthing==2.0.0\n",
            '[[allow]]\nid = "PYSEC-2099-1"\npackage = "webthing"\nreview_by = 2099-01-01\n',
            "lacks reason",
        ),
        (
            "webthing==2.0.0\n",
            '[[allow]]\nid = "PYSEC-2099-1"\npackage = "webthing"\nreason = "x"\nreview_by = "soon"\n',
            "Invalid isoformat",
        ),
    ],
)
def test_unreadable_pins_or_allow_list_are_an_error_not_a_pass(tmp_path, pins, allow, message):
    proc, report = run_audit(tmp_path, pins, "--offline", allow=allow)
    assert proc.returncode == 2 and message in proc.stderr and report is None


def test_refresh_fails_when_the_index_does_not_answer(tmp_path):
    proc, _ = run_audit(
        tmp_path, "webthing==2.0.0\n", "--refresh", "--index-url", f"http://127.0.0.1:{_closed_port()}/pypi"
    )
    assert proc.returncode == 2 and "did not answer" in proc.stderr
    assert not (tmp_path / "record.json").exists()


@pytest.mark.parametrize(
    "version, events, versions, affected",
    [
        ("1.5", [{"introduced": "0"}, {"fixed": "1.6"}], [], True),
        ("1.6", [{"introduced": "0"}, {"fixed": "1.6"}], [], False),
        ("0.9", [{"introduced": "1.0"}, {"fixed": "1.6"}], [], False),
        ("2.0", [{"introduced": "1.0"}, {"last_affected": "2.0"}], [], True),
        ("2.0.1", [{"introduced": "1.0"}, {"last_affected": "2.0"}], [], False),
        ("3.1", [{"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "3.0"}, {"fixed": "3.2"}], [], True),
        ("2.5", [{"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "3.0"}, {"fixed": "3.2"}], [], False),
        ("7.0rc1", [], ["7.0rc1"], True),
    ],
)
def test_osv_ranges(version, events, versions, affected):
    advisory = {"ranges": [{"type": "ECOSYSTEM", "events": events}], "versions": versions}
    assert osv_affects(version, advisory) is affected


def test_old_records_with_the_bound_on_the_range_itself():
    old = {"ranges": [{"type": "ECOSYSTEM", "fixed": "1.8.1"}], "versions": []}
    assert osv_affects("1.8.0", old) and not osv_affects("1.8.1", old)


def test_the_vendored_snapshot_flags_an_old_numpy_and_not_the_pinned_one():
    snapshot = json.loads((ROOT / "deploy" / "advisories" / "pypa-advisory-snapshot.json").read_text())
    numpy = [a for a in snapshot["advisories"] if a["package"] == "numpy"]
    assert any(osv_affects("1.16.0", a) for a in numpy)  # e.g. CVE-2019-6446, pickle in numpy.load
    assert not any(osv_affects("2.4.6", a) for a in numpy)


def test_the_repository_pins_pass_against_the_committed_advisory_record():
    """The gate inside `make test`: every pin covered by the committed record or the OSV snapshot, none affected.
    Offline and judged on the record's date, so it gives this answer on any day."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--offline"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not checked" not in proc.stdout and "VULNERABLE" not in proc.stdout
