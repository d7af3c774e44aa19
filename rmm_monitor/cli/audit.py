"""`rmm audit verify` and `rmm audit export`: the audit log for an inspector.

`verify` walks the hash chain, compares it with the heads published beside the file (or RMM_AUDIT_HEADS), and
recomputes the hash of every audited record; it names the first broken entry and exits 1 when anything was changed,
deleted, reordered or added outside the product. `export --from --to --out FILE.csv` writes the entries of a time
range (who, when, what, why, and the hashes that let anyone re-check them).
"""

from __future__ import annotations

import csv
import json
import sys

from rmm_monitor.core.settings import Settings

from .data import open_data
from .registry import command

COLUMNS = ("seq", "at", "actor", "action", "record_table", "record_key", "reason", "record_hash", "entry_hash")


def _arguments(a, settings: Settings) -> None:
    sub = a.add_subparsers(dest="action", required=True)
    for name, helptext in (("verify", "check the chain, its published heads and every record"),
                           ("export", "the entries of a time range as CSV")):  # fmt: skip
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--db", default=settings.db)
        p.add_argument("--url", help="a running worker's base URL (found from --db's sidecar otherwise)")
        if name == "verify":
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("--from", dest="start", help="RFC 3339 time (inclusive)")
            p.add_argument("--to", dest="end", help="RFC 3339 time (exclusive)")
            p.add_argument("--out", required=True)


@command("audit", "the tamper-evident audit log: verify, export", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.access import audit
    from rmm_monitor.core.periods import parse_time

    with open_data(settings, args.db, args.url) as data:
        if args.action == "verify":
            verdict = data.client.get("/api/audit/verify") if data.client else data.run(
                lambda con: audit.verify(con).as_dict())  # fmt: skip
            if args.json:
                print(json.dumps(verdict, indent=2))
            else:
                print(f"{verdict['entries']} entries, {verdict['published_heads']} published heads: "
                      + ("the chain and every record verify" if verdict["ok"] else "NOT VALID"))  # fmt: skip
                for p in verdict["problems"]:
                    print(f"  entry {p['seq'] if p['seq'] is not None else '-'}: {p['problem']}")
            return 0 if verdict["ok"] else 1
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
        if data.client:
            rows = data.client.get("/api/audit", {"from": args.start, "to": args.end})
        else:
            rows = data.run(lambda con: audit.entries(con, start, end))
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})
    print(f"{len(rows)} audit entries written to {args.out}", file=sys.stderr)
    return 0
