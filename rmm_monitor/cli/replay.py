"""`rmm replay FILE.jsonl --db PATH`: a JSON-lines file through the same validation and store as the worker, in
batches; each refused line goes to `<db stem>.rejected.jsonl` with its line number and reason."""

from __future__ import annotations

import json
from pathlib import Path

from rmm_monitor.core.settings import Settings

from .output import print_json
from .registry import command


def rejected_path(db: str) -> Path:
    p = Path(db)
    return p.with_name(p.stem + ".rejected.jsonl")


def _arguments(p, settings: Settings) -> None:
    p.add_argument("file")
    p.add_argument("--db", required=True)
    p.add_argument("--batch", type=int, default=50000)


@command("replay", "ingest a JSON-lines file through the same validation and store", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.store import Store, process_batch

    totals = {"accepted": 0, "rejected": 0, "duplicates": 0}
    store = Store(args.db)
    with store, open(args.file, "rb") as src, open(rejected_path(args.db), "w", encoding="utf-8") as rejects:

        def flush(lines: list[tuple[int, bytes]]) -> None:
            outcome = process_batch(store, [raw for _, raw in lines])
            totals["accepted"] += outcome.inserted
            totals["duplicates"] += outcome.duplicates
            totals["rejected"] += len(outcome.rejects)
            for r in outcome.rejects:
                line_no, raw = lines[r.index]
                rejects.write(
                    json.dumps({"line": line_no, "reason": r.reason, "original": raw.decode("utf-8", "replace")}) + "\n"
                )

        batch: list[tuple[int, bytes]] = []
        for line_no, line in enumerate(src, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are skipped, not rejected (docs/contract.md)
            batch.append((line_no, raw))
            if len(batch) >= args.batch:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    print_json(totals)
    return 0
