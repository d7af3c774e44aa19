"""Electronic signatures: made with the password at the moment of signing, bound to the exact record, failing when
the record, the signer, the meaning or the time changes, or when copied onto another record; kept verifiable after
the signer's password is reset; refused to the wrong role."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rmm_monitor.access import AuthError, Forbidden, Principal, signatures, users
from rmm_monitor.alerting import decisions as D
from rmm_monitor.alerting import records as R
from rmm_monitor.core import clock
from rmm_monitor.store import Store

from support.people import PASSWORDS, make_people

QPPV = Principal("qppv.wang", "Wang Li", "qppv")
ADMIN = Principal("root.admin", "Ada Admin", "admin")


@pytest.fixture
def store(tmp_path):
    db = tmp_path / "sig.duckdb"
    make_people(db)
    now = clock.now()
    s = Store(db)
    with s.transaction() as con:
        for section in ("crs_management", "alert_card"):
            R.fire(con, R.NewAlert("safety_information_updated", "CTX-19", "", section, "", "warning",
                                   f"update {section}", now - timedelta(hours=1)), (), now)  # fmt: skip
    yield s
    s.close()


def close(store, case_id: str, who=QPPV, password=PASSWORDS["qppv.wang"]) -> dict:
    with store.transaction() as con:
        return D.close_case(con, who, password, case_id, "no_change", None, "wording already covers it")


def test_a_closed_case_carries_a_valid_signature_bound_to_it(store):
    case = close(store, "RC-000001")
    [sig] = case["signatures"]
    assert (sig["user_id"], sig["full_name"], sig["meaning"], sig["valid"]) == (
        "qppv.wang",
        "Wang Li",
        "closed: no change",
        True,
    )
    assert sig["text"].startswith("Wang Li (qppv.wang) — closed: no change — ")
    # the record changes after signing (plain SQL): the signature no longer holds for it
    store.con.execute("UPDATE review_case_history SET comment = 'something else' WHERE case_id = 'RC-000001' "
                      "AND state = 'closed'").fetchall()  # fmt: skip
    [sig] = D.show_case(store.con, "RC-000001")["signatures"]
    assert (sig["valid"], sig["check"]) == (False, "the record changed after it was signed")


def test_a_signature_fails_when_its_signer_meaning_or_time_changes_or_it_is_copied(store):
    close(store, "RC-000001")
    close(store, "RC-000002")

    def check(case_id):
        return D.show_case(store.con, case_id)["signatures"][0]

    con = store.con
    con.execute("UPDATE signatures SET full_name = 'Someone Else' WHERE signature_id = 'SG-000001'").fetchall()
    assert check("RC-000001")["valid"] is False
    con.execute("UPDATE signatures SET full_name = 'Wang Li', meaning = 'closed: material updated' "
                "WHERE signature_id = 'SG-000001'").fetchall()  # fmt: skip
    assert check("RC-000001")["valid"] is False
    con.execute("UPDATE signatures SET meaning = 'closed: no change', signed_at = signed_at + INTERVAL 1 DAY "
                "WHERE signature_id = 'SG-000001'").fetchall()  # fmt: skip
    assert check("RC-000001")["valid"] is False
    con.execute("UPDATE signatures SET signed_at = signed_at - INTERVAL 1 DAY WHERE signature_id = 'SG-000001'")
    assert check("RC-000001")["valid"] is True  # restored: valid again
    # copying case 2's signature onto case 1's record: its hash is of another record
    rid1 = con.execute("SELECT record_id FROM signatures WHERE signature_id = 'SG-000001'").fetchall()[0][0]
    con.execute("DELETE FROM signatures WHERE signature_id = 'SG-000001'").fetchall()
    con.execute("UPDATE signatures SET record_id = ? WHERE signature_id = 'SG-000002'", [rid1]).fetchall()
    [copied] = D.show_case(store.con, "RC-000001")["signatures"]
    assert copied["valid"] is False
    # signed by another user's name with the first user's key: refused
    con.execute("UPDATE signatures SET user_id = 'pv.chen' WHERE signature_id = 'SG-000002'").fetchall()
    assert D.show_case(store.con, "RC-000001")["signatures"][0]["check"] == "the signer's key is unknown"


def test_signing_needs_the_password_and_the_role(store):
    with pytest.raises(AuthError):
        close(store, "RC-000001", password="not-the-password")
    assert D.show_case(store.con, "RC-000001")["state"] == "open", "nothing changed"
    with pytest.raises(Forbidden):
        close(store, "RC-000001", who=ADMIN, password=PASSWORDS["root.admin"])  # no QPPV signature by an admin
    analyst = Principal("pv.chen", "Chen Jing", "pv_analyst")
    with pytest.raises(Forbidden):
        close(store, "RC-000001", who=analyst, password=PASSWORDS["pv.chen"])
    assert store.con.execute("SELECT count(*) FROM signatures").fetchall() == [(0,)]


def test_old_signatures_still_verify_after_a_password_reset(store):
    close(store, "RC-000001")
    with store.transaction() as con:
        users.reset(con, ADMIN, "qppv.wang", "a-brand-new-password", "forgotten")
    with pytest.raises(AuthError):
        close(store, "RC-000002")  # the old password no longer signs
    case = close(store, "RC-000002", password="a-brand-new-password")
    assert case["signatures"][0]["valid"] and D.show_case(store.con, "RC-000001")["signatures"][0]["valid"]
    keys = [r[0] for r in store.con.execute("SELECT key_id FROM signatures ORDER BY signature_id").fetchall()]
    assert keys == ["qppv.wang#k1", "qppv.wang#k2"]


def test_an_export_or_catalog_signature_checks_against_its_content(store):
    with store.transaction() as con:
        sig = signatures.sign(con, QPPV, PASSWORDS["qppv.wang"], "export", "2026Q3@2026-10-15T00:00:00Z", "ab" * 32,
                              "approved")  # fmt: skip
    row = signatures.for_record(store.con, "export", "2026Q3@2026-10-15T00:00:00Z")[0]
    assert signatures.verify(store.con, row, "ab" * 32).ok
    assert not signatures.verify(store.con, row, "cd" * 32).ok
    assert sig["text"].startswith("Wang Li (qppv.wang) — approved")
    with pytest.raises(ValueError):  # a meaning the kind does not have
        with store.transaction() as con:
            signatures.sign(con, QPPV, PASSWORDS["qppv.wang"], "export", "x", "ab" * 32, "closed: no change")
