"""Where the quarterly export reads from: the DuckDB file directly, or the worker's HTTP API when the worker
owns the file. Both sources answer the same questions with the same JSON-shaped values, so the export (and a
re-run of it) cannot tell them apart."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Optional

from .periods import iso

_OUTCOMES = ["success", "failure", "pending"]


def _table_exists(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
                            ).fetchall()[0][0])


def _change_time(con, table: str) -> Optional[str]:
    """The transition-time column of an audit-trail table (the alerting schema is young; look it up)."""
    cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                      "AND data_type LIKE 'TIMESTAMP%' ORDER BY ordinal_position", [table]).fetchall()]
    for name in ("changed_at", "at"):
        if name in cols:
            return name
    return cols[0] if cols else None


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{k: iso(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]


def _query(con, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return _jsonable([dict(zip(names, rec)) for rec in cur.fetchall()])


def extras(con, as_of: datetime) -> dict:
    """Event counts per topic known at `as_of`, and the alerts and review cases with every transition made at or
    before `as_of` (so a re-run with the same as-of sees the same audit trail). Alert tables come from the
    alerting module (issue 5); a store without them gives empty lists."""
    counts = dict(con.execute("SELECT topic, count(*) FROM events WHERE known_at <= ? GROUP BY topic ORDER BY topic",
                              [as_of]).fetchall())
    alerts: list[dict] = []
    cases: list[dict] = []
    a_time, c_time = _change_time(con, "alert_history"), _change_time(con, "review_case_history")
    if _table_exists(con, "alerts") and a_time:
        alerts = _query(con, f"""
            SELECT a.* EXCLUDE (details), h.* EXCLUDE (alert_id), h.{a_time} AS at
            FROM alerts a JOIN alert_history h USING (alert_id)
            WHERE a.fired_at <= ? AND h.{a_time} <= ? ORDER BY a.alert_id, h.seq""", [as_of, as_of])
    if _table_exists(con, "review_cases") and c_time:
        cases = _query(con, f"""
            SELECT c.*, h.* EXCLUDE (case_id), h.{c_time} AS at
            FROM review_cases c JOIN review_case_history h USING (case_id)
            WHERE c.opened_at <= ? AND h.{c_time} <= ? ORDER BY c.case_id, h.seq""", [as_of, as_of])
    return {"counts_by_topic": counts, "alerts": alerts, "cases": cases}


class LocalSource:
    """Reads a DuckDB file that no worker holds (read-only connection)."""

    def __init__(self, con):
        from .kpis import Engine

        self.con = con
        self.engine = Engine(con)
        self.where = "db"

    def kpis(self, as_of: datetime, period: str, by: str = "site") -> list[dict]:
        return self.engine.compute(as_of=as_of, period=period, by=by)

    def units(self, kpi: str, as_of: datetime, period: str) -> list[dict]:
        return self.engine.units(kpi, as_of=as_of, period=period, outcomes=_OUTCOMES)

    def trend(self, as_of: datetime, period: str) -> list[dict]:
        return self.engine.trend(as_of=as_of, period=period)

    def extras(self, as_of: datetime) -> dict:
        return extras(self.con, as_of)

    def dq(self, as_of: datetime, period: str) -> list[dict]:
        from . import dq

        rows = dq.validate(dq.build_frames(self.con, as_of, period))
        return _jsonable(rows)


class RemoteSource:
    """Asks the worker that owns the DuckDB file (its /api endpoints); never touches the file."""

    def __init__(self, client):
        self.client = client
        self.where = client.url

    def kpis(self, as_of: datetime, period: str, by: str = "site") -> list[dict]:
        return self.client.get("/api/kpis", {"as_of": iso(as_of), "period": period, "by": by})

    def units(self, kpi: str, as_of: datetime, period: str) -> list[dict]:
        return self.client.get("/api/units", {"as_of": iso(as_of), "period": period, "kpi": kpi, "outcome": _OUTCOMES})

    def trend(self, as_of: datetime, period: str) -> list[dict]:
        return self.client.get("/api/trend", {"as_of": iso(as_of), "period": period})

    def extras(self, as_of: datetime) -> dict:
        return self.client.get("/api/export/extras", {"as_of": iso(as_of)})

    def dq(self, as_of: datetime, period: str) -> list[dict]:
        return self.client.get("/api/dq", {"as_of": iso(as_of), "period": period})


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
