#!/usr/bin/env python3
"""Dependency audit: every pin of constraints.txt checked against published vulnerability advisories.

What pip-audit does, with the sources this machine can reach (pip-audit itself asks PyPI's per-release JSON or
api.osv.dev; here the first answers 404 for some releases and the second does not resolve):

1. **PyPI's JSON API** (`/pypi/<name>/<version>/json`, its `vulnerabilities` list: PyPI's own copy of the OSV
   advisories for that release). When the per-release document is missing and the pin is the project's latest
   release, the project document (`/pypi/<name>/json`) carries the same list for it.
2. **A vendored OSV snapshot** (deploy/advisories/pypa-advisory-snapshot.json: the pypa/advisory-database records
   of the packages PyPI could not be asked about per release), evaluated by its version ranges.

Every answer from PyPI is recorded in deploy/advisories/pypi-vulnerabilities.json (`--refresh`). Without network
the audit falls back to that record, for the pins whose version it recorded.

A security gate, not a weather report: the audit fails (exit 1) only on an advisory that affects a pinned version
and that deploy/audit-allowlist.toml does not accept (an acceptance past its review date no longer accepts). A pin
no source could answer for (the index keeps no per-release document of an older release, say), a record older than
--max-age-days, and an allow-list entry past its review date that matches nothing are WARNINGs, each with why.
Exit 2: the pins, the allow-list or the advisory sources could not be read at all.

Two ways to run it, one verdict rule:
- `--offline` (inside `make test`): the committed record and the vendored snapshot only, review dates judged on the
  record's own date. The same commit gives the same verdict on any day, with or without network.
- live (`make audit`, which CI runs beside `make test`): PyPI now, review dates judged today. It fails when an
  advisory has appeared for a pin since the record was written, which is what it is for.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Optional

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
ADVISORIES = ROOT / "deploy" / "advisories"
DEFAULT_INDEX = "https://pypi.org/pypi"


def normalize(name: str) -> str:
    """PEP 503 name, so `PyYAML`, `pyyaml` and `ruamel.yaml` / `ruamel-yaml` match across sources."""
    return re.sub(r"[-_.]+", "-", name).lower()


class BadInput(Exception):
    """constraints.txt or the allow-list cannot be read as the audit needs it (exit 2, not a finding)."""


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise BadInput(f"{path}: {line!r} is not an exact pin (name==version)")
        pins[normalize(name)] = version.strip()
    return pins


# --- OSV version ranges --------------------------------------------------------------------------------------


def _v(text: str) -> Optional[Version]:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def range_events(rng: dict) -> list[dict]:
    """A range's events. Old pypa/advisory-database records put the bounds on the range itself
    (`{"type": "ECOSYSTEM", "fixed": "1.8.1"}`): read as introduced 0 (unless given) up to that bound."""
    if "events" in rng:
        return rng["events"]
    events = [{"introduced": rng.get("introduced", "0")}]
    return events + [{k: rng[k]} for k in ("fixed", "last_affected") if k in rng]


def fixed_versions(advisory: dict) -> list[str]:
    return [e["fixed"] for r in advisory.get("ranges", []) for e in range_events(r) if "fixed" in e]


def osv_affects(version: str, advisory: dict) -> bool:
    """OSV `affected` semantics for one package: listed in `versions`, or inside an ECOSYSTEM range, walked in
    version order (introduced opens, fixed closes before, last_affected closes after)."""
    if version in advisory.get("versions", []):
        return True
    v = _v(version)
    if v is None:
        return False
    for rng in advisory.get("ranges", []):
        events = []
        for e in range_events(rng):
            ((kind, at),) = e.items()
            bound = _v(at)
            if bound is not None:
                events.append((bound, {"introduced": 0, "fixed": 1, "last_affected": 2}.get(kind, 3), kind))
        inside = False
        for bound, _, kind in sorted(events):
            if kind == "introduced" and v >= bound:
                inside = True
            elif kind == "fixed" and v >= bound:
                inside = False
            elif kind == "last_affected" and v > bound:
                inside = False
        if inside:
            return True
    return False


# --- PyPI ----------------------------------------------------------------------------------------------------


class Unreachable(Exception):
    """The index did not answer at all (DNS, connection, timeout): fall back to the record."""


def _get_json(url: str, timeout: float) -> Optional[dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise Unreachable(f"{url}: HTTP {e.code}") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise Unreachable(f"{url}: {e}") from e


def ask_pypi(index: str, name: str, version: str, timeout: float) -> dict:
    """PyPI's advisories for one release: {"endpoint", "vulnerabilities"} or {"unanswered": why}."""
    release = _get_json(f"{index}/{name}/{version}/json", timeout)
    if release is not None:
        return {"endpoint": "release", "vulnerabilities": release.get("vulnerabilities") or []}
    project = _get_json(f"{index}/{name}/json", timeout)
    if project is None:
        return {"unanswered": "no such project on the index"}
    latest = project.get("info", {}).get("version")
    if latest == version:
        return {
            "endpoint": "project (pin is the latest release)",
            "vulnerabilities": project.get("vulnerabilities") or [],
        }
    return {"unanswered": f"per-release document missing and the latest release is {latest}, not {version}"}


def ask_pypi_all(index: str, pins: dict[str, str], timeout: float) -> dict[str, dict]:
    """All pins, 8 at a time; one probe first so an index that does not answer costs one timeout, not 86."""
    first = next(iter(pins))
    answers = {first: ask_pypi(index, first, pins[first], timeout)}
    with ThreadPoolExecutor(8) as pool:
        rest = [n for n in pins if n != first]
        for name, answer in zip(rest, pool.map(lambda n: ask_pypi(index, n, pins[n], timeout), rest)):
            answers[name] = answer
    return answers


# --- the audit -----------------------------------------------------------------------------------------------


@dataclass
class Allow:
    id: str
    package: str
    reason: str
    review_by: date


def read_allowlist(path: Path) -> list[Allow]:
    if not path.exists():
        return []
    entries = tomllib.loads(path.read_text()).get("allow", [])
    out = []
    for e in entries:
        missing = {"id", "package", "reason", "review_by"} - e.keys()
        if missing:
            raise BadInput(f"{path}: entry {e.get('id', '?')} lacks {', '.join(sorted(missing))}")
        review_by = e["review_by"] if isinstance(e["review_by"], date) else date.fromisoformat(e["review_by"])
        out.append(Allow(e["id"], normalize(e["package"]), e["reason"].strip(), review_by))
    return out


@dataclass
class Report:
    sources: dict[str, str] = field(default_factory=dict)
    pins: dict[str, dict] = field(default_factory=dict)
    open: list[dict] = field(default_factory=list)
    accepted: list[dict] = field(default_factory=list)
    uncovered: list[dict] = field(default_factory=list)
    expired_allowances: list[dict] = field(default_factory=list)

    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Only an advisory affecting a pin, not accepted, fails the audit; everything else is a warning."""
        return not self.open


def audit(pins: dict[str, str], pypi: dict[str, dict], osv: dict, allow: list[Allow], today: date) -> Report:
    report = Report()
    osv_packages = {normalize(p) for p in osv.get("packages", [])}
    for name, version in sorted(pins.items()):
        covered_by, findings = [], {}
        answer = pypi.get(name, {})
        if "vulnerabilities" in answer:
            covered_by.append(f"pypi:{answer['endpoint']}")
            for vuln in answer["vulnerabilities"]:
                if not vuln.get("withdrawn"):
                    findings[vuln["id"]] = {
                        "id": vuln["id"],
                        "aliases": vuln.get("aliases") or [],
                        "fixed_in": vuln.get("fixed_in") or [],
                        "source": "pypi",
                        "summary": (vuln.get("summary") or vuln.get("details") or "")[:160],
                    }
        if name in osv_packages:
            covered_by.append("osv-snapshot")
            for adv in osv.get("advisories", []):
                if normalize(adv["package"]) == name and osv_affects(version, adv):
                    known = {adv["id"], *adv.get("aliases", [])}
                    if not any(known & {f["id"], *f["aliases"]} for f in findings.values()):
                        findings[adv["id"]] = {
                            "id": adv["id"],
                            "aliases": adv.get("aliases", []),
                            "fixed_in": fixed_versions(adv),
                            "source": "osv-snapshot",
                            "summary": adv.get("summary", "")[:160],
                        }
        report.pins[name] = {"version": version, "covered_by": covered_by, "advisories": sorted(findings)}
        if not covered_by:
            report.uncovered.append(
                {
                    "package": name,
                    "version": version,
                    "why": answer.get("unanswered", "no source answered for this release"),
                }
            )
        for finding in findings.values():
            ids = {finding["id"], *finding["aliases"]}
            accepted = next((a for a in allow if a.package == name and a.id in ids), None)
            row = {"package": name, "version": version, **finding}
            if accepted and accepted.review_by >= today:
                report.accepted.append({**row, "reason": accepted.reason, "review_by": accepted.review_by.isoformat()})
            else:
                report.open.append(row)
    for a in allow:
        if a.review_by < today:
            report.expired_allowances.append({"id": a.id, "package": a.package, "review_by": a.review_by.isoformat()})
    return report


def recorded_date(record: dict) -> date:
    return datetime.fromisoformat(record["retrieved"]).date()


def recorded_answers(record: dict, pins: dict[str, str]) -> tuple[dict, str]:
    """The recorded PyPI answers that still apply to these pins (same version)."""
    answers = {n: a for n, a in record.get("answers", {}).items() if a.get("version") == pins.get(n)}
    answered = sum("vulnerabilities" in a for a in answers.values())
    return answers, (
        f"record of {recorded_date(record)} (PyPI answered for {answered} of {len(pins)} pins at their pinned version)"
    )


def print_report(report: Report) -> None:
    for key, value in report.sources.items():
        print(f"source {key}: {value}")
    print(
        f"{len(report.pins)} pins checked; {sum(len(p['advisories']) for p in report.pins.values())} advisories "
        f"affect them ({len(report.accepted)} accepted by the allow-list)"
    )
    for row in report.open:
        print(
            f"VULNERABLE {row['package']}=={row['version']}: {row['id']} ({', '.join(row['aliases'])}) "
            f"fixed in {', '.join(row['fixed_in']) or 'no release yet'} [{row['source']}] {row['summary']}"
        )
    for row in report.accepted:
        print(f"accepted   {row['package']}=={row['version']}: {row['id']} until {row['review_by']}: {row['reason']}")
    for row in report.uncovered:
        print(f"WARNING    {row['package']}=={row['version']} not checked: {row['why']}")
    for row in report.expired_allowances:
        print(
            f"WARNING    allow-list entry {row['id']} ({row['package']}) is past its review date {row['review_by']}: "
            f"re-decide it or remove it"
        )
    for text in report.warnings:
        print(f"WARNING    {text}")
    print(
        "audit: ok" + (f" ({len(report.uncovered)} pins not checked, see the warnings)" if report.uncovered else "")
        if report.ok
        else "audit: FAILED"
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--allowlist", type=Path, default=ROOT / "deploy" / "audit-allowlist.toml")
    parser.add_argument("--osv-snapshot", type=Path, default=ADVISORIES / "pypa-advisory-snapshot.json")
    parser.add_argument(
        "--record",
        type=Path,
        default=ADVISORIES / "pypi-vulnerabilities.json",
        help="PyPI's answers from the last online run (read offline, written by --refresh)",
    )
    parser.add_argument("--index-url", default=DEFAULT_INDEX, help="PyPI JSON API base (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-age-days", type=int, default=60, help="warn when the record used is older")
    parser.add_argument("--today", type=date.fromisoformat, default=None, help=argparse.SUPPRESS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true", help="use only the record and the OSV snapshot")
    mode.add_argument("--refresh", action="store_true", help="ask PyPI (must answer) and rewrite the record")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    try:
        pins = read_pins(args.constraints)
        allow = read_allowlist(args.allowlist)
    except (BadInput, tomllib.TOMLDecodeError, ValueError) as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    osv = json.loads(args.osv_snapshot.read_text()) if args.osv_snapshot.exists() else {}
    sources = {
        "osv-snapshot": f"{args.osv_snapshot.name}: {', '.join(osv.get('packages', [])) or 'none'} "
        f"(retrieved {osv.get('retrieved', '-')})"
    }
    pypi: dict[str, dict] = {}
    if not args.offline:
        try:
            pypi = ask_pypi_all(args.index_url, pins, args.timeout)
            sources["pypi"] = f"{args.index_url} (live)"
        except Unreachable as e:
            if args.refresh:
                print(f"audit: the index did not answer: {e}", file=sys.stderr)
                return 2
            sources["pypi-live"] = f"unreachable ({e}); falling back to the record"
    if args.refresh:
        stamp = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        record = {
            "source": args.index_url,
            "retrieved": stamp,
            "answers": {n: {"version": pins[n], **a} for n, a in sorted(pypi.items())},
        }
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    warnings = []
    record_day = None
    if not pypi and not args.refresh:
        if not args.record.exists():
            print(f"audit: no live answer and no record at {args.record}", file=sys.stderr)
            return 2
        record = json.loads(args.record.read_text())
        record_day = recorded_date(record)
        pypi, sources["pypi"] = recorded_answers(record, pins)
        age = (datetime.now(timezone.utc).date() - record_day).days
        if age > args.max_age_days:
            warnings.append(
                f"the record of PyPI's answers is {age} days old (over {args.max_age_days}): advisories "
                f"published since {record_day} are not seen offline; run `make audit-refresh`"
            )
    # Review dates: judged today when PyPI answered now; offline, on the record's date, so that the verdict of a
    # commit does not change with the calendar.
    today = args.today or (record_day if args.offline and record_day else datetime.now(timezone.utc).date())

    report = audit(pins, pypi, osv, allow, today)
    report.sources = sources
    report.warnings = warnings
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report.__dict__, indent=1, default=str) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
