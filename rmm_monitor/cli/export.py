"""`rmm export` (the quarterly effectiveness evaluation) and `rmm dq` (the data-quality suites), from the file or
from the worker that owns it (cli/data.py). Light imports only: the work is imported inside the commands."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from rmm_monitor.core import clock
from rmm_monitor.core.errors import ConfigError
from rmm_monitor.core.settings import Settings

from .data import open_data
from .identity import add_password_flag, principal, read_password, with_password
from .output import print_json
from .registry import command


def _as_of(text: Optional[str]) -> datetime:
    from rmm_monitor.core.periods import parse_time

    return parse_time(text) if text else clock.now().replace(microsecond=0)


def _export_arguments(x, settings: Settings) -> None:
    x.add_argument("action", nargs="?", choices=["verify"], help="verify DIR: the files, the manifest, the signature")
    x.add_argument("target", nargs="?", help="the export directory to verify")
    x.add_argument("--quarter", help="e.g. 2026Q3")
    x.add_argument("--out", help="output directory")
    x.add_argument("--db", default=settings.db)
    x.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    x.add_argument("--as-of", dest="as_of", help="RFC 3339 time; default now (give it to reproduce an export)")
    x.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    x.add_argument("--sign", action="store_true", help="sign it as the user of RMM_TOKEN (qppv; asks the password)")
    x.add_argument(
        "--lang",
        help="language(s) of the report and the xlsx: en, zh, or zh,en / en,zh (bilingual, the first leads); "
        "default: the deployment's RMM_LANG (en)",
    )
    x.add_argument("--meaning", default="approved", choices=["approved", "reviewed"], help="what the signature means")
    add_password_flag(x)


@command(
    "export",
    "quarterly effectiveness evaluation: xlsx, csv/parquet, html/pdf, manifest [--sign]; `export verify DIR`",
    _export_arguments,
)
def run_export(args, settings: Settings) -> int:
    if args.action == "verify":
        return _verify(args, settings)
    if not args.quarter or not args.out:
        raise ConfigError("rmm export needs --quarter and --out (or: rmm export verify DIR)")
    from rmm_monitor.core.lang import parse_langs
    from rmm_monitor.export import LocalSource, Progress, RemoteSource, export

    # a bad --lang stops here, before any work (exit 2, as for other arguments)
    langs = parse_langs(args.lang or settings.lang)
    as_of = _as_of(args.as_of)
    out = Path(args.out)
    with open_data(settings, args.db, args.url, writable=args.sign) as data:
        signer = _signer(args, settings, data) if args.sign else None
        source = RemoteSource(data.client) if data.client else LocalSource(data.con)
        signing = signer[0] if signer else None
        manifest = export(source, args.quarter, out, as_of, Progress(enabled=not args.quiet), signing, langs)
        if signer is not None:
            _sign(data, settings, signer, manifest, out)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "quarter": manifest["quarter"],
                "as_of": manifest["as_of"],
                "languages": manifest["languages"],
                "files": sorted(manifest["files"]) + ["manifest.json"] + (["signature.json"] if signer else []),
                "data_quality_failed": manifest["data_quality"]["failed"],
                "signed_by": signer[0]["user_id"] if signer else None,
            }
        )
    )
    return 0


def _signer(args, settings: Settings, data) -> tuple[dict, str]:
    """Who signs, checked before the export is written (role and password), and the signing details the report
    and the manifest will name: ({user_id, full_name, meaning, signed_at}, password)."""
    from rmm_monitor.access import users
    from rmm_monitor.core.periods import iso

    password = read_password(args, "password (to sign the export): ")
    if data.client:
        me = data.client.get("/api/whoami")
        data.client.post(
            "/api/signatures", {"kind": "export", "dry_run": True, "password": password, "meaning": args.meaning}
        )
        user_id, full_name = me["user_id"], me["full_name"]
    else:
        who = data.run(lambda con: principal(con, settings)).require("sign_export")
        with_password(data.store, who.user_id, lambda con: users.check_password(con, who.user_id, password))
        user_id, full_name = who.user_id, who.full_name
    signed_at = iso(clock.now().replace(microsecond=0))
    return {"user_id": user_id, "full_name": full_name, "meaning": args.meaning, "signed_at": signed_at}, password


def _sign(data, settings: Settings, signer: tuple[dict, str], manifest: dict, out: Path) -> None:
    from rmm_monitor.access import signatures, users
    from rmm_monitor.core.periods import parse_time
    from rmm_monitor.export.signing import manifest_hash, record_id, write_signature

    details, password = signer
    rid, rhash = record_id(manifest), manifest_hash(out)
    if data.client:
        sig = data.client.post(
            "/api/signatures",
            {"kind": "export", "record_id": rid, "record_hash": rhash, "meaning": details["meaning"],
             "password": password, "signed_at": details["signed_at"]},
        )  # fmt: skip
        key = data.client.get("/api/signatures", {"kind": "export", "record_id": rid})[-1]["public_key"]
    else:
        who = data.run(lambda con: principal(con, settings))
        at = parse_time(details["signed_at"])
        sig = with_password(
            data.store,
            who.user_id,
            lambda con: signatures.sign(con, who, password, "export", rid, rhash, details["meaning"], at),
        )
        key = data.run(lambda con: users.public_key(con, sig["key_id"]))
    write_signature(out, sig, key)


def _verify(args, settings: Settings) -> int:
    from rmm_monitor.export.signing import verify_dir

    if not args.target:
        raise ConfigError("rmm export verify DIR")
    registered = None
    if args.url or (args.db and Path(args.db).exists()):
        with open_data(settings, args.db, args.url) as data:
            if data.client:
                keys = {s["key_id"]: s["public_key"] for s in data.client.get("/api/signatures", {"kind": "export"})}
                registered = keys.get
            else:
                known = dict(data.run(lambda con: con.execute("SELECT key_id, public_key FROM user_keys").fetchall()))
                registered = known.get
    result = verify_dir(Path(args.target), registered)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _dq_arguments(q, settings: Settings) -> None:
    q.add_argument("--db", default=settings.db)
    q.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    q.add_argument("--period", help="only events that occurred in it (2026Q3, 2026, 2026-07, all); default all")
    q.add_argument("--as-of", dest="as_of")
    q.add_argument("--json", action="store_true")


@command("dq", "run the Great Expectations data-quality suites (expectations/)", _dq_arguments)
def run_dq(args, settings: Settings) -> int:
    """Exit 1 when a critical expectation fails, so a scheduler can act on it."""
    from rmm_monitor.core.periods import iso
    from rmm_monitor.quality import suites

    as_of = _as_of(args.as_of)
    started = time.perf_counter()
    with open_data(settings, args.db, args.url, writable=True) as data:
        if data.client:
            rows = data.client.get("/api/dq", {"as_of": iso(as_of), "period": args.period})
        else:
            rows = suites.validate(suites.build_frames(data.con, as_of, args.period))
            data.run(lambda con: suites.record(con, rows), change=True)
            rows = [{**r, "run_at": iso(r["run_at"])} for r in rows]
    elapsed = time.perf_counter() - started
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            mark = "ok  " if r["success"] else ("FAIL" if r["critical"] else "warn")
            print(f"{mark} {r['suite']:<22} {r['expectation']:<42} {r['observed']}")
        failed = [r for r in rows if not r["success"]]
        print(
            f"{len(rows)} expectations, {len(failed)} failed "
            f"({sum(1 for r in failed if r['critical'])} critical) in {elapsed:.1f} s",
            file=sys.stderr,
        )
    return 1 if suites.failing(rows, critical_only=True) else 0
