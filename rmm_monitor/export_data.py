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
    if _table_exists(con, "alerts") and _table_exists(con, "alert_history"):
        alerts = _query(con, """
            SELECT a.alert_id, a.signal, a.product, a.site_id, a.kpi, a.section, a.severity, a.period, a.title,
                   a.case_id, h.seq, h.state, h.actor, h.at, h.comment
            FROM alerts a JOIN alert_history h USING (alert_id)
            WHERE a.fired_at <= ? AND h.at <= ? ORDER BY a.alert_id, h.seq""", [as_of, as_of])
    if _table_exists(con, "review_cases") and _table_exists(con, "review_case_history"):
        cases = _query(con, """
            SELECT c.case_id, c.product, c.section, c.triggered_at, c.opened_at, h.seq, h.state, h.outcome,
                   h.material_version, h.actor, h.at, h.comment
            FROM review_cases c JOIN review_case_history h USING (case_id)
            WHERE c.opened_at <= ? AND h.at <= ? ORDER BY c.case_id, h.seq""", [as_of, as_of])
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
