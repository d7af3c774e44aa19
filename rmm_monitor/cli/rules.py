"""`rmm rules list` and `rmm rules sign ENTRY_ID`: the rule versions and dated catalog changes of metrics/rules/,
and the QPPV's signature on each (bound to the entry's content: an edited entry shows as signed for other content).

The entries themselves live in the catalog files (reviewed like code); the signature is the record that the QPPV
approved exactly that content. The export's "Rules" sheet says who signed each.
"""

from __future__ import annotations

import json
import sys

from rmm_monitor.core.errors import ConfigError
from rmm_monitor.core.settings import Settings

from .data import open_data
from .identity import add_password_flag, principal, read_password, with_password
from .registry import command


def _arguments(r, settings: Settings) -> None:
    sub = r.add_subparsers(dest="action", required=True)
    for name in ("list", "sign"):
        p = sub.add_parser(name, help="every entry and its signatures" if name == "list" else "approve an entry")
        p.add_argument("--db", default=settings.db)
        p.add_argument("--url", help="a running worker's base URL (found from --db's sidecar otherwise)")
        if name == "sign":
            p.add_argument("entry_id", help="as `rmm rules list` shows it")
            add_password_flag(p)


def _entries():
    from rmm_monitor.kpi.rulebook import load_rulebook

    book = load_rulebook()
    return {e.entry_id: e for e in (*book.versions, *book.changes)}


@command("rules", "rule versions and catalog changes: list, sign (qppv)", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.access import signatures

    entries = _entries()
    with open_data(settings, args.db, args.url, writable=args.action == "sign") as data:
        if args.action == "list":
            if data.client:
                signed = data.client.get("/api/signatures", {"kind": "catalog_change"})
            else:
                signed = data.run(
                    lambda con: [signatures.shown(s) for s in signatures.for_record(con, "catalog_change")]
                )
            out = []
            for entry_id, e in entries.items():
                mine = [s for s in signed if s["record_id"] == entry_id]
                out.append(
                    {
                        "entry_id": entry_id,
                        "content_hash": e.content_hash,
                        "signed_by": [s["text"] for s in mine if s["record_hash"] == e.content_hash],
                        "signed_other_content": [s["text"] for s in mine if s["record_hash"] != e.content_hash],
                    }
                )
            sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
            return 0
        entry = entries.get(args.entry_id)
        if entry is None:
            raise ConfigError(f"no rule version or catalog change {args.entry_id!r} (see rmm rules list)")
        password = read_password(args, "password (to sign): ")
        if data.client:
            sig = data.client.post(
                "/api/signatures",
                {"kind": "catalog_change", "record_id": args.entry_id, "record_hash": entry.content_hash,
                 "meaning": "approved", "password": password},
            )  # fmt: skip
        else:
            who = data.run(lambda con: principal(con, settings))
            sig = with_password(
                data.store,
                who.user_id,
                lambda con: signatures.sign(con, who, password, "catalog_change", args.entry_id, entry.content_hash,
                                            "approved"),
            )  # fmt: skip
    sys.stdout.write(json.dumps(sig, indent=2, ensure_ascii=False, default=str) + "\n")
    return 0
