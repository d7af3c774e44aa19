"""The audit log is tamper-evident: with plain SQL on the DuckDB file, edit, delete and reorder rows, or rewrite the
whole chain consistently, and `rmm audit verify` names the first broken entry and exits 1; an untouched store
verifies. `rmm audit export` writes the entries of a time range for an inspector."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import timedelta

import pytest

from rmm_monitor.access import Principal, audit
from rmm_monitor.alerting import decisions as D
from rmm_monitor.alerting import records as R
from rmm_monitor.core import clock
from rmm_monitor.store import Store

from support.people import PASSWORDS, make_people
from support.workers import run_cli

QPPV = Principal("qppv.wang", "Wang Li", "qppv")
ANALYST = Principal("pv.chen", "Chen Jing", "pv_analyst")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A file with users, tokens, alerts, review cases, decisions and signatures, all through the product."""
    db = tmp_path_factory.mktemp("audit") / "history.duckdb"
    make_people(db)
    now = clock.now()
    with Store(db) as store:
        with store.transaction() as con:
            for section in ("crs_management", "alert_card", "ltfu"):
                R.fire(con, R.NewAlert("safety_information_updated", "CTX-19", "", section, "", "warning",
                                       f"update {section}", now - timedelta(hours=2)), (), now)  # fmt: skip
        with store.transaction() as con:
            D.acknowledge(con, ANALYST, "AL-000001", "looking")
            D.start_review(con, ANALYST, "RC-000001", "reviewing the CRS section")
        with store.transaction() as con:
            D.close_case(con, QPPV, PASSWORDS["qppv.wang"], "RC-000001", "material_updated", 3, "text updated")
    return db


def copy(history, tmp_path, name: str = "copy"):
    target = tmp_path / f"{name}.duckdb"
    shutil.copy(history, target)
    shutil.copy(f"{history}.audit-heads.jsonl", f"{target}.audit-heads.jsonl")
    return target


def verify(db) -> tuple[int, dict]:
    out = run_cli("audit", "verify", "--db", str(db), "--json")
    return out.returncode, json.loads(out.stdout)


def entry_of(db, table: str, key: str) -> int:
    with Store(db, read_only=True) as store:
        return store.con.execute(
            "SELECT max(seq) FROM audit_log WHERE record_table = ? AND record_key = ?", [table, key]
        ).fetchall()[0][0]


def sql(db, *statements: str) -> None:
    with Store(db) as store:
        for s in statements:
            store.con.execute(s).fetchall()


def test_an_untouched_store_verifies(history, tmp_path):
    code, verdict = verify(copy(history, tmp_path))
    assert code == 0 and verdict["ok"], verdict
    assert verdict["entries"] == verdict["published_heads"] > 20


def test_an_edited_record_is_named_by_its_entry(history, tmp_path):
    db = copy(history, tmp_path)
    sql(db, "UPDATE alert_history SET actor = 'qppv.wang' WHERE alert_id = 'AL-000001' AND state = 'acknowledged'")
    code, verdict = verify(db)
    seq = entry_of(db, "alert_history", "AL-000001/2")
    assert code == 1 and verdict["first_broken"]["seq"] == seq
    assert "alert_history AL-000001/2 was changed" in verdict["first_broken"]["problem"]


def test_a_deleted_record_is_named(history, tmp_path):
    db = copy(history, tmp_path)
    sql(db, "DELETE FROM review_case_history WHERE case_id = 'RC-000001' AND state = 'closed'")
    code, verdict = verify(db)
    assert code == 1 and "RC-000001/3" in verdict["first_broken"]["problem"] and "deleted" in verdict[
        "first_broken"]["problem"]  # fmt: skip


def test_an_inserted_record_is_named(history, tmp_path):
    db = copy(history, tmp_path)
    sql(db, "INSERT INTO user_history SELECT user_id, seq + 1, 'promoted', full_name, 'admin', false, 'root.admin', "
            "changed_at, 'quietly' FROM user_history WHERE user_id = 'pv.chen'")  # fmt: skip
    code, verdict = verify(db)
    assert code == 1 and any("user_history pv.chen/2 is in no audit entry" in p["problem"] for p in verdict["problems"])


def test_an_edited_entry_a_deleted_entry_and_reordered_entries_are_named(history, tmp_path):
    db = copy(history, tmp_path)
    sql(db, "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 5")
    code, verdict = verify(db)
    assert code == 1 and verdict["first_broken"] == {
        "seq": 5,
        "problem": "entry 5 was changed: its content does not hash to its entry hash",
    }

    db = copy(history, tmp_path, "second")
    sql(db, "DELETE FROM audit_log WHERE seq = 7")
    code, verdict = verify(db)
    assert code == 1 and verdict["first_broken"]["seq"] == 7 and "missing" in verdict["first_broken"]["problem"]

    db = copy(history, tmp_path, "third")
    sql(db, "UPDATE audit_log SET seq = -9 WHERE seq = 9", "UPDATE audit_log SET seq = 9 WHERE seq = 10",
        "UPDATE audit_log SET seq = 10 WHERE seq = -9")  # fmt: skip
    code, verdict = verify(db)
    assert code == 1 and verdict["first_broken"]["seq"] == 9


def test_a_consistently_rewritten_chain_is_caught_by_the_published_heads(history, tmp_path):
    """Change who acknowledged, then recompute that record's hash and every entry from there on: the chain is
    whole again, but its heads no longer match the ones published beside the file."""
    db = copy(history, tmp_path)
    seq = entry_of(db, "alert_history", "AL-000001/2")
    with Store(db) as store:
        con = store.con
        con.execute("UPDATE alert_history SET actor = 'qppv.wang' WHERE alert_id = 'AL-000001' AND seq = 2").fetchall()
        row = audit.read_record(con, "alert_history", ("AL-000001", 2))
        con.execute("UPDATE audit_log SET record_hash = ?, actor = 'qppv.wang' WHERE seq = ?",
                    [audit.record_hash(row), seq]).fetchall()  # fmt: skip
        rows = con.execute("SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq", [seq]).fetchall()
        prev = con.execute("SELECT entry_hash FROM audit_log WHERE seq = ?", [seq - 1]).fetchall()[0][0]
        for s, at, actor, action, table, key, rhash, reason, _prev, _ehash in rows:
            ehash = audit._entry_hash(prev, s, at, actor, action, table, key, rhash, reason)
            con.execute("UPDATE audit_log SET prev_hash = ?, entry_hash = ? WHERE seq = ?", [prev, ehash, s]).fetchall()
            prev = ehash
    code, verdict = verify(db)
    assert code == 1 and verdict["first_broken"] == {
        "seq": seq,
        "problem": f"entry {seq} differs from its published head: the chain was rewritten from here",
    }
    # without the heads file, the rewrite would pass the chain check: the heads are what catches it
    (tmp_path / "copy.duckdb.audit-heads.jsonl").unlink()
    code, verdict = verify(db)
    assert code == 1 and all("never published" in p["problem"] for p in verdict["problems"])


def test_audit_export_writes_the_entries_of_a_time_range(history, tmp_path):
    out = tmp_path / "trail.csv"
    now = clock.now()
    res = run_cli("audit", "export", "--db", str(history), "--from", (now - timedelta(days=1)).isoformat(),
                  "--to", (now + timedelta(days=1)).isoformat(), "--out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows and [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    closing = [r for r in rows if r["record_table"] == "review_case_history" and r["action"] == "closed"]
    assert closing and (closing[0]["actor"], closing[0]["reason"]) == ("qppv.wang", "text updated")
    signed = [r for r in rows if r["record_table"] == "signatures"]
    assert signed and signed[0]["action"] == "signed (closed: material updated)"
    assert not any(p in out.read_text() for p in PASSWORDS.values()), "no secret in the trail"
