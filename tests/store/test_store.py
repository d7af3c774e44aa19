"""The store's layout (schema 3): topic tables behind the `events` view, the event_id ledger, the move of a
schema-1 file (one wide `events` table) into it, and a schema-2 file gaining the columns of contract v1.1, without
changing any stored value or KPI."""

import duckdb

from rmm_monitor.core.periods import parse_time
from rmm_monitor.dev import simulate
from rmm_monitor.kpi import Engine
from rmm_monitor.kpi.fixtures import encode
from rmm_monitor.store import EVENT_COLUMNS, SCHEMA_VERSION, TOPIC_TABLES, Store, process_batch

from support.workers import NOW

AS_OF = parse_time("2026-11-01T00:00:00Z")
# The schema-1 DDL as it shipped: every contract column, the store columns, the key on the table itself.
V1_DDL = (
    f"CREATE TABLE events ({', '.join(f'{n} {t}' for n, t in EVENT_COLUMNS)}, topic VARCHAR NOT NULL, "
    f"seq BIGINT NOT NULL, ingested_at TIMESTAMPTZ NOT NULL, known_at TIMESTAMPTZ NOT NULL, "
    f"PRIMARY KEY (event_id)); CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR); "
    f"INSERT INTO store_meta VALUES ('schema_version', '1');"
)


def _programme() -> list[bytes]:
    """A small simulated programme, each event once (the simulator also sends duplicates on purpose)."""
    seen, out = set(), []
    for event in simulate.generate(seed=5, patients=60, end=NOW):
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            out.append(event)
    return encode(out)


def _rows(con) -> list[tuple]:
    return con.execute("SELECT * FROM events ORDER BY seq").fetchall()


def test_each_topic_has_its_table_and_the_view_shows_every_column(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        outcome = process_batch(store, _programme())
        per_table = dict(
            store.con.execute(
                " UNION ALL ".join(f"SELECT '{t.topic}', count(*) FROM {t.name}" for t in TOPIC_TABLES.values())
            ).fetchall()
        )
        per_topic = dict(store.con.execute("SELECT topic, count(*) FROM events GROUP BY ALL").fetchall())
        types_where = {
            t.topic: {r[0] for r in store.con.execute(f"SELECT DISTINCT event_type FROM {t.name}").fetchall()}
            for t in TOPIC_TABLES.values()
        }
        view_columns = [d[0] for d in store.con.execute("SELECT * FROM events LIMIT 0").description]
        pruned = store.con.execute(
            "EXPLAIN SELECT * FROM events WHERE event_type = 'infusion_administered' AND topic = 'rmm.infusion'"
        ).fetchall()[0][1]
    assert outcome.inserted == sum(per_table.values()) > 0
    assert per_table == per_topic == outcome.inserted_by_topic
    assert all(types <= set(TOPIC_TABLES[topic].event_types) for topic, types in types_where.items())
    assert view_columns == [n for n, _ in EVENT_COLUMNS] + ["topic", "seq", "ingested_at", "known_at"]
    # a query naming the topic reads that topic's table only: the other branches of the view are dropped (an
    # event_type filter alone drops a branch only where the table's min/max statistics rule it out, kpi/engine.py)
    assert "ev_infusion" in pruned and not any(
        t.name in pruned for t in TOPIC_TABLES.values() if t.topic != "rmm.infusion"
    )


def test_a_redelivered_batch_is_ignored_and_a_reopened_store_continues_seq(tmp_path):
    raws = _programme()
    with Store(tmp_path / "s.duckdb") as store:
        first = process_batch(store, raws[:500])
        again = process_batch(store, raws[:500])
    with Store(tmp_path / "s.duckdb") as store:
        rest = process_batch(store, raws[400:])
        seqs = [s for (s,) in store.con.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
        assert store.event_count() == len(raws) == len(seqs)
    assert (again.inserted, again.duplicates) == (0, 500)
    assert rest.duplicates == 100 and first.inserted == 500
    assert len(set(seqs)) == len(seqs)  # no seq handed out twice across the restart


def test_a_schema_1_file_is_moved_into_the_type_tables_unchanged(tmp_path):
    with Store(tmp_path / "v2.duckdb") as store:
        process_batch(store, _programme())
        want_rows = _rows(store.con)
        want_kpis = Engine(store.con).compute(as_of=AS_OF, period="all", by="site")
    old = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(old))
    con.execute("SET TimeZone = 'UTC'").fetchall()
    con.execute(V1_DDL).fetchall()
    con.execute(f"ATTACH '{tmp_path / 'v2.duckdb'}' AS v2 (READ_ONLY)").fetchall()
    con.execute("INSERT INTO events SELECT * FROM v2.events").fetchall()
    con.close()

    with Store(old) as store:
        assert _rows(store.con) == want_rows
        assert Engine(store.con).compute(as_of=AS_OF, period="all", by="site") == want_kpis
        assert store.con.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall() == [
            (str(SCHEMA_VERSION),)
        ]
        kinds = dict(store.con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
        assert kinds["events"] == "VIEW" and "events_v1" not in kinds
        # the ledger came along: the old events are duplicates now, and new ones get fresh seq numbers
        again = process_batch(store, _programme()[:50])
        assert (again.inserted, again.duplicates) == (0, 50)


V11_COLUMNS = [n for n, _ in EVENT_COLUMNS[[n for n, _ in EVENT_COLUMNS].index("expected") :]]


def test_a_schema_2_file_gains_the_columns_of_contract_v11_and_keeps_every_value(tmp_path):
    """A file written before contract v1.1 (schema 2: the topic tables without the v1.1 columns) opens as schema
    3: the new columns are added (NULL in the old rows), every stored value and KPI stays, v1.1 events go in."""
    path = tmp_path / "v2.duckdb"
    # a schema-2 file cannot hold ae_onset.expected: the programme without it
    programme = [raw.replace(b',"expected":true', b"").replace(b',"expected":false', b"") for raw in _programme()]
    assert programme != _programme()
    with Store(path) as store:
        process_batch(store, programme)
        want_kpis = Engine(store.con).compute(as_of=AS_OF, period="all", by="site")
        want_rows = store.con.execute(
            f"SELECT * EXCLUDE ({', '.join(V11_COLUMNS)}) FROM events WHERE event_type NOT IN "
            "(SELECT unnest(?)) ORDER BY seq",
            [["material_distributed", "knowledge_assessed", "audit_finding_raised", "capa_closed",
              "post_infusion_contact"]],
        ).fetchall()  # fmt: skip
        # back to schema 2: the v1.1 events out, their columns dropped, the version noted as 2
        store.con.execute(
            "DELETE FROM event_keys WHERE event_id IN (SELECT event_id FROM events WHERE event_type IN "
            "('material_distributed', 'knowledge_assessed', 'audit_finding_raised', 'capa_closed', "
            "'post_infusion_contact'))"
        ).fetchall()
        store.con.execute("DROP VIEW events").fetchall()
        for table in TOPIC_TABLES.values():
            store.con.execute(
                f"DELETE FROM {table.name} WHERE event_type IN ('material_distributed', 'knowledge_assessed', "
                "'audit_finding_raised', 'capa_closed', 'post_infusion_contact')"
            ).fetchall()
            for column in V11_COLUMNS:
                if column in table.fields:
                    store.con.execute(f"ALTER TABLE {table.name} DROP COLUMN {column}").fetchall()
        store.con.execute("UPDATE store_meta SET value = '2' WHERE key = 'schema_version'").fetchall()

    with Store(path) as store:
        assert store.con.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall() == [("3",)]
        assert [d[0] for d in store.con.execute("SELECT * FROM events LIMIT 0").description][: len(EVENT_COLUMNS)] == [
            n for n, _ in EVENT_COLUMNS
        ]
        got = store.con.execute(f"SELECT * EXCLUDE ({', '.join(V11_COLUMNS)}) FROM events ORDER BY seq").fetchall()
        assert got == want_rows
        assert store.con.execute(
            f"SELECT count(*) FROM events WHERE {' OR '.join(f'{c} IS NOT NULL' for c in V11_COLUMNS)}"
        ).fetchall() == [(0,)]
        # the v1.1 events go in now (the same ids again: the ledger forgot them with the rows), and every KPI is
        # what the file gave before it was taken back to schema 2
        again = process_batch(store, programme)
        assert again.inserted > 0 and again.inserted == len(programme) - len(want_rows)
        assert Engine(store.con).compute(as_of=AS_OF, period="all", by="site") == want_kpis
