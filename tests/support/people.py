"""Users for tests: an admin, a QPPV, a PV analyst and a viewer made in a DuckDB file before a worker opens it (the
way `rmm users bootstrap` and `rmm users add` do on the file), each with a token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rmm_monitor.access import Principal, users
from rmm_monitor.store import Store

PASSWORDS = {
    "root.admin": "admin-password-0001",
    "qppv.wang": "qppv-password-0002",
    "pv.chen": "analyst-password-0003",
    "audit.liu": "viewer-password-0004",
}
ROLES = {"root.admin": "admin", "qppv.wang": "qppv", "pv.chen": "pv_analyst", "audit.liu": "viewer"}
NAMES = {"root.admin": "Ada Admin", "qppv.wang": "Wang Li", "pv.chen": "Chen Jing", "audit.liu": "Liu Yang"}


@dataclass(frozen=True)
class People:
    tokens: dict[str, str]  # user_id -> API token

    def __getitem__(self, user_id: str) -> str:
        return self.tokens[user_id]


def make_people(db: Path, ttl_hours: float = 24.0) -> People:
    admin = Principal("root.admin", NAMES["root.admin"], "admin")
    tokens = {}
    with Store(db) as store, store.transaction() as con:
        users.bootstrap(con, admin.user_id, admin.full_name, PASSWORDS[admin.user_id])
        for user_id, role in ROLES.items():
            if user_id != admin.user_id:
                users.add_user(con, admin, user_id, NAMES[user_id], role, PASSWORDS[user_id], "test account")
        for user_id, role in ROLES.items():
            tokens[user_id] = users.issue_token(con, Principal(user_id, NAMES[user_id], role), ttl_hours)["token"]
    return People(tokens)
