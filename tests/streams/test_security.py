"""Security: no patient_ref in /metrics or the aggregate API, bounded inputs, and event strings never become SQL.

(Users, roles, tokens and signatures are tested in tests/access/.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from rmm_monitor.contract import MAX_EVENT_BYTES, validate_batch, validate_one
from rmm_monitor.dev import simulate
from rmm_monitor.dev.producer import produce_events
from rmm_monitor.store import Store, process_batch

from support.workers import NOW, http_text, run_cli

INJECTIONS = [
    "x'); DROP TABLE events; --",
    "' OR '1'='1",
    "\"; DELETE FROM events WHERE '1'='1",
    "Robert'); DROP TABLE store_meta;--",
    "$1; ATTACH '/tmp/evil.db' AS evil",
    "1 UNION SELECT * FROM events --",
]


def test_metrics_and_aggregate_api_carry_no_patient_ref(broker, worker_factory):
    events = simulate.generate(seed=21, patients=80, end=NOW)
    refs = {e["patient_ref"] for e in events if e.get("patient_ref")}
    assert len(refs) >= 50
    worker = worker_factory(broker.bootstrap).start()
    produce_events(events, broker.bootstrap)
    n_unique = len({e["event_id"] for e in events})
    worker.wait_for(lambda s: s["stored"] == n_unique, timeout=90, what="events stored and KPIs refreshed")
    pages = {
        path: http_text(worker.url + path, timeout=60)
        for path in (
            "/metrics",
            "/api/kpis",
            "/api/kpis?by=site&period=all",
            "/api/trend?period=all",
            "/api/status",
            "/healthz",
        )
    }
    assert "rmm_kpi_value" in pages["/metrics"] and json.loads(pages["/api/kpis?by=site&period=all"])
    leaks = {path: sorted(r for r in refs if r in body)[:3] for path, body in pages.items()}
    assert not any(leaks.values()), leaks
    # the drill-down (/api/units) is where pseudonymous unit ids belong by design; /metrics labels never carry them
    assert "patient_ref" not in pages["/metrics"]


def test_event_size_is_bounded_at_64_kib():
    event = {
        "event_id": "size-1",
        "event_type": "tocilizumab_stock_reported",
        "schema_version": 1,
        "occurred_at": "2026-07-01T10:00:00Z",
        "product": "CTX-19",
        "site_id": "SH-01",
        "doses_on_hand": 4,
    }
    raw = json.dumps(event).encode()
    at_limit = raw[:-1] + b" " * (MAX_EVENT_BYTES - len(raw)) + b"}"  # JSON whitespace: same event, 64 KiB exactly
    over = raw[:-1] + b" " * (MAX_EVENT_BYTES - len(raw) + 1) + b"}"
    assert len(at_limit) == MAX_EVENT_BYTES and len(over) == MAX_EVENT_BYTES + 1
    assert validate_one(at_limit)[1] is None
    assert validate_one(over) == (None, "too_large")
    valid, rejects = validate_batch([at_limit, over, raw])
    assert valid == [0, 2] and [(r.index, r.reason) for r in rejects] == [(1, "too_large")]


def test_oversized_http_query_is_refused_and_the_worker_stays_up(broker, worker_factory):
    worker = worker_factory(broker.bootstrap).start()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{worker.url}/api/kpis?period={'9' * 100_000}", timeout=30)
    assert 400 <= err.value.code < 500
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{worker.url}/api/kpis?period={quote(INJECTIONS[0])}", timeout=30)
    assert err.value.code == 400
    assert json.loads(http_text(worker.url + "/healthz"))["ok"]


def _injected_events() -> list[dict]:
    out = []
    for i, text in enumerate(INJECTIONS):
        base = {
            "schema_version": 1,
            "occurred_at": "2026-07-01T10:00:00Z",
            "recorded_at": "2026-07-01T10:01:00Z",
            "product": "CTX-19",
            "site_id": "SH-01",
            "source": text,
        }
        out.append({**base, "event_id": text, "event_type": "site_registered", "name": text, "country": "CN"})
        out.append(
            {
                **base,
                "event_id": f"si-{i}",
                "event_type": "safety_information_updated",
                "sections": ["dosing"],
                "summary": text,
            }
        )
    return out


def test_sql_looking_strings_are_stored_verbatim_and_harmless(tmp_path):
    events = _injected_events()
    raws = [json.dumps(e).encode() for e in events]
    with Store(tmp_path / "inj.duckdb") as store:
        outcome = process_batch(store, raws)
        assert outcome.inserted == len(events) and not outcome.rejects
        rows = store.con.execute("SELECT event_id, source, name, summary FROM events ORDER BY seq").fetchall()
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"events", "store_meta"} <= tables
    assert [r[0] for r in rows] == [e["event_id"] for e in events]
    assert [r[1] for r in rows] == [e["source"] for e in events]
    assert [r[2] or r[3] for r in rows] == [e.get("name") or e.get("summary") for e in events]
    assert not (tmp_path / "evil.db").exists()


def test_sql_looking_cli_arguments_are_parameters(tmp_path):
    src = tmp_path / "inj.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in _injected_events()))
    db = tmp_path / "inj.duckdb"
    out = run_cli("replay", str(src), "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accepted"] == len(_injected_events())
    everything = run_cli("kpis", "--db", str(db), "--period", "all", "--json")
    injected = run_cli("kpis", "--db", str(db), "--period", "all", "--json", "--product", "x' OR '1'='1")
    assert everything.returncode == 0 and injected.returncode == 0, (everything.stderr, injected.stderr)
    assert json.loads(everything.stdout), "the real product has rows"
    assert json.loads(injected.stdout) == [], "a product filter is a value, never SQL"
    with Store(db, read_only=True) as store:
        assert store.event_count() == len(_injected_events())
