"""The audit log: one hash-chained entry per change to a record, its heads published outside the DuckDB file, and
the check that finds the first entry (or record) that was changed behind the product's back.

An entry says who (`actor`), when (`at`), what (`action` on `record_table` / `record_key`), why (`reason`), and
the sha256 of the record as it was written (`record_hash`); `entry_hash` = sha256 over the previous entry's hash and
all of this, so an edited, deleted or reordered entry breaks the chain at that point. The chain alone does not catch
a rewrite of the whole chain with consistent hashes, so every entry's (seq, entry_hash) is also appended, after the
transaction commits, to a file beside the database (`<db>.audit-heads.jsonl`, or `RMM_AUDIT_HEADS`: point it at
write-once storage in production). `verify` walks the chain, compares it with the published heads, and recomputes
the hash of every audited record, so an UPDATE, DELETE or INSERT with plain SQL on any of them is named.

Records are never updated or deleted by the product: a change is a new row (a history row, a revocation, a new key),
so the latest entry for a record always describes the row as it stands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Optional

from rmm_monitor.core import clock, settings
from rmm_monitor.core.periods import iso
from rmm_monitor.store import after_commit

# Every table whose rows are records, and the columns that identify a row. A row of these without an audit entry,
# or whose content no longer hashes to its entry's record_hash, fails verification.
AUDITED: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "user_history": ("user_id", "seq"),
    "user_keys": ("key_id",),
    "api_tokens": ("token_hash",),
    "token_revocations": ("token_hash",),
    "signatures": ("signature_id",),
    "alerts": ("alert_id",),
    "alert_history": ("alert_id", "seq"),
    "review_cases": ("case_id",),
    "review_case_history": ("case_id", "seq"),
}
GENESIS = "0" * 64
log = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """A stored value as JSON writes it: times as RFC 3339 in UTC, dates as ISO dates, lists element-wise."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def canonical(obj: Any) -> bytes:
    """The one byte form everything here is hashed in: sorted keys, no spaces, instants in UTC."""
    if isinstance(obj, dict):
        obj = {k: plain(v) for k, v in obj.items()}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_key(values: tuple) -> str:
    return "/".join(str(v) for v in values)


def read_record(con, table: str, key: tuple) -> Optional[dict]:
    cols = AUDITED[table]
    cur = con.execute(f"SELECT * FROM {table} WHERE {' AND '.join(f'{c} = ?' for c in cols)}", list(key))
    rows = cur.fetchall()
    if not rows:
        return None
    return dict(zip([d[0] for d in cur.description], rows[0]))


def record_hash(row: dict) -> str:
    return sha256(canonical(row))


def _entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, table: str, key: str, rhash: str,
                reason: str) -> str:  # fmt: skip
    body = {
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "record_table": table,
        "record_key": key,
        "record_hash": rhash,
        "reason": reason,
    }
    return sha256(prev_hash.encode() + b"\n" + canonical(body))


def record(con, table: str, key: tuple, action: str, actor: str, reason: str, at: Optional[datetime] = None) -> int:
    """Append the entry for the row of `table` identified by `key`, as it now stands (call it in the transaction
    that wrote the row). Its head is published once the transaction commits. Returns the entry's seq."""
    if table not in AUDITED:
        raise ValueError(f"{table} is not an audited table")
    row = read_record(con, table, key)
    if row is None:
        raise ValueError(f"no row {record_key(key)} in {table} to audit")
    at = at or clock.now()
    last = con.execute("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchall()
    seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
    rkey, rhash = record_key(key), record_hash(row)
    reason = (reason or "").strip() or action
    ehash = _entry_hash(prev, seq, at, actor, action, table, rkey, rhash, reason)
    con.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [seq, at, actor, action, table, rkey, rhash, reason, prev, ehash],
    ).fetchall()
    path = heads_path(con)
    if path is not None:
        after_commit(con, lambda: publish(path, [(seq, ehash)]))
    return seq


# --- published heads -------------------------------------------------------------------------------------------
def heads_path(con) -> Optional[Path]:
    """Where this database's heads are published: RMM_AUDIT_HEADS, else beside the file (None in memory)."""
    configured = settings.current().audit_heads
    if configured:
        return Path(configured)
    rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    if not rows or not rows[0][0]:
        return None
    return Path(str(rows[0][0]) + ".audit-heads.jsonl")


def publish(path: Path, heads: list[tuple[int, str]]) -> None:
    """Append (seq, entry_hash) lines and make them durable before going on. The entry is committed already: if
    the heads cannot be written, say so loudly and go on (verify then reports the entry as never published)."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            for seq, ehash in heads:
                fh.write(json.dumps({"seq": seq, "entry_hash": ehash}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        log.error("audit heads %s not published to %s: %s", [s for s, _ in heads], path, exc)


def read_heads(path: Optional[Path]) -> dict[int, str]:
    if path is None or not path.exists():
        return {}
    heads: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            h = json.loads(line)
            heads.setdefault(int(h["seq"]), str(h["entry_hash"]))  # the first publication of a seq counts
    return heads


# --- verification ----------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    entries: int = 0
    published: int = 0
    problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, seq: Optional[int], what: str, **more: Any) -> None:
        self.problems.append({"seq": seq, "problem": what, **more})

    def as_dict(self) -> dict:
        first = self.problems[0] if self.problems else None
        return {
            "ok": self.ok,
            "entries": self.entries,
            "published_heads": self.published,
            "first_broken": first,
            "problems": self.problems,
        }


def verify(con, heads: Optional[Path] = None) -> Verdict:
    """Walk the chain, compare it with the published heads, recompute every audited record's hash. Problems come
    in the order found; the first names the first broken entry (or the record no entry covers)."""
    v = Verdict()
    rows = con.execute(
        "SELECT seq, logged_at, actor, action, record_table, record_key, record_hash, reason, prev_hash, entry_hash "
        "FROM audit_log ORDER BY seq"
    ).fetchall()
    v.entries = len(rows)
    prev, expected_seq = GENESIS, 1
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for seq, at, actor, action, table, key, rhash, reason, prev_hash, ehash in rows:
        if seq != expected_seq:
            v.fail(expected_seq, f"entry {expected_seq} is missing (the next entry is {seq})")
        if prev_hash != prev:
            v.fail(seq, f"entry {seq} does not follow entry {seq - 1}: its previous hash differs")
        if _entry_hash(prev_hash, seq, at, actor, action, table, key, rhash, reason) != ehash:
            v.fail(seq, f"entry {seq} was changed: its content does not hash to its entry hash")
        prev, expected_seq = ehash, seq + 1
        latest[(table, key)] = (seq, rhash)
    published = read_heads(heads if heads is not None else heads_path(con))
    v.published = len(published)
    by_seq = {r[0]: r[9] for r in rows}
    for seq in sorted(published):
        if seq not in by_seq:
            v.fail(seq, f"entry {seq} was published but is not in the log")
        elif by_seq[seq] != published[seq]:
            v.fail(seq, f"entry {seq} differs from its published head: the chain was rewritten from here")
    for seq in sorted(set(by_seq) - set(published)):
        v.fail(seq, f"entry {seq} was never published (added outside the product, or a crash right after commit)")
    for table, cols in AUDITED.items():
        cur = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        seen = set()
        for r in cur.fetchall():
            row = dict(zip(names, r))
            key = record_key(tuple(row[c] for c in cols))
            seen.add(key)
            entry = latest.get((table, key))
            if entry is None:
                v.fail(None, f"{table} {key} is in no audit entry (inserted outside the product)")
            elif entry[1] != record_hash(row):
                v.fail(entry[0], f"{table} {key} was changed after entry {entry[0]} recorded it")
        for (t, key), (seq, _h) in latest.items():
            if t == table and key not in seen:
                v.fail(seq, f"{table} {key} recorded by entry {seq} was deleted")
    v.problems.sort(key=lambda p: (p["seq"] is None, p["seq"] or 0))
    return v


def entries(con, start: Optional[datetime] = None, end: Optional[datetime] = None) -> list[dict]:
    """Audit entries with `at` in [start, end), for an inspector (rmm audit export, the quarterly export)."""
    cur = con.execute(
        "SELECT seq, logged_at AS at, actor, action, record_table, record_key, reason, record_hash, entry_hash "
        "FROM audit_log WHERE (?::TIMESTAMPTZ IS NULL OR logged_at >= ?) AND (?::TIMESTAMPTZ IS NULL OR logged_at < ?) "
        "ORDER BY seq",
        [start, start, end, end],
    )
    names = [d[0] for d in cur.description]
    return [{k: plain(v) for k, v in zip(names, r)} for r in cur.fetchall()]
