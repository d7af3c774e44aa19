"""`rmm export --quarter`: every file, checked as a person would (xlsx opened by openpyxl and by LibreOffice
headless, PDF pages turned into PNG with pdftoppm and looked at for charts), byte-identical on a re-run with
the same as-of — also when the second run goes through the HTTP API of a worker that owns the DB and keeps
ingesting meanwhile."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import threading
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest
from openpyxl import load_workbook
from PIL import Image

from rmm_monitor.core.periods import parse_time
from rmm_monitor.dev.producer import produce_events
from rmm_monitor.dev.simulate import generate
from rmm_monitor.kpi import catalog_hash, load_catalog
from rmm_monitor.store import Store

from support.workers import http_text, run_cli

# meant to keep the module on one xdist process (`make test` uses loadgroup); see `offline` for why it is not enough
pytestmark = [pytest.mark.xdist_group(name="export"), pytest.mark.long]

END = datetime(2026, 9, 30, 12, 0, tzinfo=timezone.utc)  # as in conftest.py (the `offline` store)
AS_OF = "2026-10-15T00:00:00Z"
QUARTER = "2026Q3"
KPI_FILES = ("kpis.csv", "kpis.parquet", "units.parquet", "manifest.json")
ALL_FILES = KPI_FILES + ("kpis.xlsx", "report.html", "report.pdf")


def test_export_writes_every_file_with_a_manifest(offline):
    db, out, stderr = offline
    assert sorted(p.name for p in out.iterdir()) == sorted(ALL_FILES)
    assert "[export" in stderr and f"units {len(load_catalog())}/{len(load_catalog())}" in stderr  # progress
    m = json.loads((out / "manifest.json").read_text())
    assert m["as_of"] == AS_OF and m["quarter"] == QUARTER
    # the catalog as known at the as-of time: definitions, and the rule versions and changes known then
    assert m["catalog"]["hash"] == catalog_hash(as_of=parse_time(AS_OF)) != catalog_hash()
    assert m["software"]["version"]
    with Store(db, read_only=True) as store:
        assert m["event_counts_by_topic"] == store.counts_by_topic()
    for name in ALL_FILES:
        if name == "manifest.json":
            continue
        assert m["files"][name]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    assert "infusion_administered.lot_received_at_site" not in m["data_quality"]["failed"]  # a Q1 problem
    assert "events.duplicate_facts_rate_below_0_1_percent" in m["data_quality"]["failed"]


def test_kpi_files_hold_the_rows_of_rmm_kpis(offline):
    db, out, _ = offline
    res = run_cli("kpis", "--db", str(db), "--as-of", AS_OF, "--period", QUARTER, "--by", "site", "--json")
    want = json.loads(res.stdout)
    with open(out / "kpis.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == len(want) > 16
    for g, w in zip(got, want):
        assert (
            g["kpi"],
            g["product"],
            g["site_id"] or None,
            int(g["numerator"]),
            int(g["denominator"]),
            g["status"],
            json.loads(g["stats"]),
        ) == (w["kpi"], w["product"], w["site_id"], w["numerator"], w["denominator"], w["status"], w["stats"])
    table = pq.read_table(out / "kpis.parquet").to_pylist()
    assert [(r["kpi"], r["site_id"], r["value"]) for r in table] == [(w["kpi"], w["site_id"], w["value"]) for w in want]
    units = pq.read_table(out / "units.parquet")
    assert {"kpi", "unit_id", "outcome", "patient_ref", "detail"} <= set(units.column_names)
    assert not {"name", "summary", "event_id"} & set(units.column_names)
    rows = units.to_pylist()
    programme = {(w["kpi"], w["product"]): w for w in want if w["site_id"] is None}
    for (kpi, product), w in programme.items():  # the units behind each number add up to it
        mine = [u for u in rows if u["kpi"] == kpi and u["product"] == product]
        assert sum(u["outcome"] == "pending" for u in mine) == w["pending"], kpi
        assert sum(u["outcome"] in ("success", "failure") for u in mine) == w["denominator"], kpi
    # units a rule leaves out (US AEs on the label, ...) are listed as excluded, beside the counted ones
    excluded = [u for u in rows if u["outcome"] == "excluded"]
    assert excluded and all("not a unit" in u["detail"] for u in excluded)


def test_xlsx_opens_with_formatting(offline):
    _, out, _ = offline
    wb = load_workbook(out / "kpis.xlsx")
    catalog = load_catalog()
    assert wb.sheetnames[0] == "Summary"
    assert {"Alerts and reviews", "Data quality", "Definitions", "Rules", "Audit trail"} <= set(wb.sheetnames)
    assert len(wb.sheetnames) == 6 + len(catalog)
    ws = wb["Summary"]
    assert ws.freeze_panes == "B2"
    header = [c.value for c in ws[1]]
    assert ws.cell(row=2, column=header.index("value") + 1).number_format == "0.0%"
    rules = [r for rng in ws.conditional_formatting for r in rng.rules]
    assert any('="breach"' in r.formula[0] for r in rules)
    statuses = {ws.cell(row=i, column=header.index("status") + 1).value for i in range(2, ws.max_row + 1)}
    assert "breach" in statuses and statuses <= {"ok", "warning", "breach", "insufficient_data"}
    assert wb["Definitions"].max_row == len(catalog) + 1
    dq = wb["Data quality"]
    assert "failed" in [c.value for c in dq["D"]]
    assert wb["alert_card_issued"]["L1"].value == "Patient alert card issued"


def test_xlsx_converts_with_libreoffice(offline, tmp_path):
    _, out, _ = offline
    res = subprocess.run(
        [
            "soffice",
            "--headless",
            "--norestore",
            f"-env:UserInstallation=file://{tmp_path}/lo",
            "--convert-to",
            "csv",
            "--outdir",
            str(tmp_path),
            str(out / "kpis.xlsx"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "kpis.csv").read_text()  # the first sheet: Summary
    assert text.startswith("KPI,title,aRMM") and "alert_card_issued" in text


def test_pdf_pages_show_the_report_with_charts(offline, tmp_path):
    _, out, _ = offline
    pdf = out / "report.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(next(x.split()[-1] for x in info.splitlines() if x.startswith("Pages:")))
    assert pages >= 8
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    headings = (
        "Programme summary",
        "1. Reach",
        "2. Knowledge",
        "3. Behaviour",
        "4. Outcome",
        "Alerts and review cases",
        "Audit trail",
        "Data quality",
        "Method notes",
        "Wilson",
        "US rules from 2025-06-26",  # the rule versions known at the as-of time, with their sources
        "EMA clock",
    )
    flowing = " ".join(text.split())  # table cells wrap their text over lines
    for heading in headings:
        assert heading in flowing, heading
    # in the order an effectiveness evaluation reads them (GVP XVI)
    assert [flowing.index(h) for h in headings[1:5]] == sorted(flowing.index(h) for h in headings[1:5])
    assert "pre-specified sample" in flowing
    subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "5", str(pdf), str(tmp_path / "p")], check=True)
    coloured_pages = 0
    for png in sorted(tmp_path.glob("p-*.png")):
        img = Image.open(png).convert("RGB").resize((200, 283))
        # chart lines and status bars: saturated pixels (text and table rules are grey or one table blue)
        sat = sum(1 for r, g, b in img.getdata() if max(r, g, b) - min(r, g, b) > 80)
        coloured_pages += sat > 150
    assert coloured_pages >= 3
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_report_names_every_site_in_breach_or_warning_under_its_kpi(offline):
    """The per-site chart shows sites as points; the report names each flagged site in a table under its KPI
    (and says how many site rows there are), so no breach is only a dot. kpis.xlsx keeps every site."""
    import re

    _, out, _ = offline
    with open(out / "kpis.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["site_id"]]
    page = (out / "report.html").read_text()
    flagged = [r for r in rows if r["status"] in ("breach", "warning")]
    assert any(r["status"] == "breach" for r in flagged)
    for kpi in load_catalog():
        section = page.split(f"({kpi.id})</h3>", 1)[1].split("<h3>", 1)[0].split("<h2>", 1)[0]
        mine = [r for r in rows if r["kpi"] == kpi.id]
        if not mine:
            continue
        assert f"Per site: {len(mine)} site rows" in section, kpi.id
        sites = section.split("Per site:", 1)[1]  # the programme table above it has status rows too
        listed = re.findall(r'<tr class="(?:breach|warning)"><td>([^<]*)</td><td>([^<]*)</td>', sites)
        assert sorted(listed) == sorted(
            (r["site_id"], r["product"]) for r in mine if r["status"] in ("breach", "warning")
        ), kpi.id


def test_export_through_the_worker_is_identical_and_does_not_block_it(
    offline, broker, worker_factory, events, tmp_path
):
    _, first, _ = offline
    # a DQ run every 5 s from the start; KPI refresh slowed so the test's export does not queue behind it
    worker = worker_factory(
        broker.bootstrap, RMM_DQ_FIRST_DELAY="0", RMM_DQ_SECONDS="5", RMM_REFRESH_SECONDS="30"
    ).start()
    produce_events(events, broker.bootstrap)
    unique = len({e["event_id"] for e in events})
    worker.wait_for(lambda s: s["ingested"] >= unique, timeout=120, what="the simulation ingested")

    # keeps arriving while the export runs; recorded after the as-of time, so the export must not see it
    late = [{**e, "recorded_at": "2026-11-01T00:00:00Z"} for e in generate(seed=11, patients=20, end=END)]
    feeder = threading.Thread(target=produce_events, args=(late, broker.bootstrap), kwargs={"rate": 400})
    feeder.start()
    out = tmp_path / "via-worker"
    res = run_cli(
        "export", "--quarter", QUARTER, "--db", str(worker.db), "--out", str(out), "--as-of", AS_OF, timeout=300
    )
    feeder.join()
    assert res.returncode == 0, res.stderr
    assert "from http://127.0.0.1:" in res.stderr  # the locked DB was read through the worker's API
    for name in ALL_FILES:
        assert (out / name).read_bytes() == (first / name).read_bytes(), name
    n_late = len({e["event_id"] for e in late})
    worker.wait_for(lambda s: s["ingested"] >= unique + n_late, timeout=60, what="ingest went on")

    # the periodic DQ run publishes per-expectation results on /metrics
    def dq_published(_status) -> bool:
        return (
            'rmm_dq_expectation_success{expectation="lot_received_at_site",suite="infusion_administered"} 0.0'
            in http_text(worker.url + "/metrics")
        )

    worker.wait_for(dq_published, timeout=90, what="DQ results on /metrics")
    metrics = http_text(worker.url + "/metrics")
    assert 'rmm_dq_expectation_success{expectation="event_id_present",suite="events"} 1.0' in metrics
    assert worker.stop() == 0
    with Store(worker.db, read_only=True) as store:
        failing = store.con.execute(
            "SELECT DISTINCT suite || '.' || expectation FROM dq_results WHERE critical AND NOT success"
        ).fetchall()
    assert ("infusion_administered.lot_received_at_site",) in failing


def test_alerts_and_review_cases_appear_with_their_audit_trail_as_of_t(offline, tmp_path):
    """Transitions made after T are not in an export as of T (so the re-run stays identical)."""
    import shutil

    from rmm_monitor.alerting import records as alerts
    from rmm_monitor.core.periods import parse_time
    from rmm_monitor.export import LocalSource, Progress, gather
    from rmm_monitor.export.xlsx import write_xlsx

    db = tmp_path / "alerts.duckdb"
    shutil.copy(offline[0], db)
    with Store(db) as store:
        fired = parse_time("2026-09-20T08:00:00Z")
        alert_id = alerts.fire(
            store.con,
            alerts.NewAlert(
                signal="kpi_breach",
                product="CTX-19",
                site_id="GZ-03",
                section="alert_card",
                kpi="alert_card_issued",
                severity="critical",
                title="alert_card_issued breached at GZ-03",
                triggered_at=fired,
            ),
            [],
            now=fired,
        )
        alerts.acknowledge(store.con, alert_id, "qppv", "looking into it", now=parse_time("2026-10-01T09:00:00Z"))
        alerts.resolve(store.con, alert_id, "qppv", "fixed", now=parse_time("2026-10-20T09:00:00Z"))  # after T

    class NoGx(LocalSource):  # the audit trail is what this test is about; GX runs in the tests above
        def dq(self, as_of, period):
            return []

    with Store(db, read_only=True) as store:
        snap = gather(NoGx(store.con), QUARTER, parse_time(AS_OF), Progress(enabled=False))
    assert [(a["alert_id"], a["state"]) for a in snap.alerts] == [(alert_id, "firing"), (alert_id, "acknowledged")]
    assert [c["state"] for c in snap.cases] == ["open"]
    write_xlsx(snap, tmp_path / "kpis.xlsx")
    ws = load_workbook(tmp_path / "kpis.xlsx")["Alerts and reviews"]
    rows = [[c.value for c in r] for r in ws.iter_rows(min_row=2)]
    assert [(r[0], r[1], r[7], r[8]) for r in rows] == [
        ("alert", alert_id, "firing", "system"),
        ("alert", alert_id, "acknowledged", "qppv"),
        ("review case", snap.cases[0]["case_id"], "open", "system"),
    ]


def test_each_kpi_is_computed_once_for_every_period_it_shows(offline):
    """LocalSource.figures derives the quarter, the previous quarter, the trend months and the units from one
    run of each KPI's SQL over a window; each must equal what the engine answers for that period alone."""
    from rmm_monitor.core.periods import Period, parse_period, parse_time, previous_quarter
    from rmm_monitor.export.evaluation import trend_months
    from rmm_monitor.export.sources import LocalSource, units_table
    from rmm_monitor.kpi import Engine

    as_of = parse_time(AS_OF)
    quarter = parse_period(QUARTER, as_of)
    prev = parse_period(previous_quarter(QUARTER), as_of)
    months = trend_months(quarter)
    window = Period("export", min(months.start, prev.start), quarter.end)
    first, last = months.start.strftime("%Y-%m"), "2026-09"
    with Store(offline[0], read_only=True) as store:
        engine, source = Engine(store.con), LocalSource(store.con)
        trend = engine.trend(as_of=as_of, period="all")
        seen_units = 0
        for kpi in engine.catalog:
            got = source.figures(kpi, as_of, quarter, prev, window)
            assert got.rows == engine.compute(as_of=as_of, period=QUARTER, by="site", kpi_ids=[kpi.id]), kpi.id
            assert got.previous == engine.compute(as_of=as_of, period=prev.label, by="product", kpi_ids=[kpi.id])
            assert [t for t in got.trend if first <= t["month"] <= last] == [
                t for t in trend if t["kpi"] == kpi.id and first <= t["month"] <= last
            ], kpi.id
            want = units_table(
                engine.units(
                    kpi.id, as_of=as_of, period=QUARTER, outcomes=["success", "failure", "pending", "excluded"]
                )
            )
            assert got.units.equals(want), kpi.id
            seen_units += got.units.num_rows
        assert seen_units > 1000 and any(t["month"] < "2026-07" for t in trend)


def test_units_parquet_is_written_row_group_by_row_group_with_the_same_bytes(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq_

    from rmm_monitor.export import evaluation as export

    table = pa.table({"a": [f"unit-{i}" if i % 7 else None for i in range(2500)]})
    chunked = pa.concat_tables([table.slice(0, 900), table.slice(900)])
    monkeypatch.setattr(export, "_ROW_GROUP", 1000)
    export._write_parquet(chunked, tmp_path / "streamed.parquet")
    pq_.write_table(
        table,
        tmp_path / "whole.parquet",
        row_group_size=1000,
        compression="zstd",
        write_statistics=True,
        store_schema=False,
    )
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq_.ParquetFile(tmp_path / "streamed.parquet").metadata.num_row_groups == 3
    export._write_parquet(table.slice(0, 0), tmp_path / "empty.parquet")
    assert pq_.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_charts_drawn_in_worker_processes_are_the_charts_drawn_inline(offline):
    from rmm_monitor.core.periods import parse_time
    from rmm_monitor.export import LocalSource, Progress, gather
    from rmm_monitor.export.report import Charts, build

    class NoGx(LocalSource):  # charts do not depend on data quality
        def dq(self, as_of, period):
            return []

    with Store(offline[0], read_only=True) as store:
        snap = gather(NoGx(store.con), QUARTER, parse_time(AS_OF), Progress(enabled=False))
    charts = Charts(snap, workers=2)
    try:
        ahead = [b.image for b in build(snap, lambda _: None, charts) if b.kind == "img"]
    finally:
        charts.close()
    inline = [b.image for b in build(snap, lambda _: None) if b.kind == "img"]
    assert len(inline) == 1 + len(snap.catalog) and ahead == inline


def test_data_quality_process_reads_the_file_with_one_duckdb_thread(offline, monkeypatch):
    """Beside the KPI queries (which keep both cores busy) the suites' own process uses one DuckDB thread."""
    from rmm_monitor.export import sources as export_data

    monkeypatch.setattr(
        export_data,
        "_dq_on",
        lambda con, tz, as_of, period: con.execute("SELECT current_setting('threads')").fetchall()[0][0],
    )
    assert export_data._dq_of_file(str(offline[0]), "UTC", None, QUARTER) == 1


def test_data_quality_is_the_same_in_a_process_of_its_own_and_on_a_cursor(offline, tmp_path):
    """A read-only file gets the suites in a separate process; a file this process holds for writing (no other
    process may open it) gets them on a cursor of the same connection. Same rows either way."""
    import shutil

    from rmm_monitor.core.periods import parse_time
    from rmm_monitor.export import LocalSource

    def without_run_time(rows):
        return [{k: v for k, v in r.items() if k != "run_at"} for r in rows]

    db = tmp_path / "held.duckdb"
    shutil.copy(offline[0], db)
    with Store(offline[0], read_only=True) as store:
        apart = LocalSource(store.con).dq(parse_time(AS_OF), QUARTER)
    with Store(db) as store:
        beside = LocalSource(store.con).dq(parse_time(AS_OF), QUARTER)
    assert len(apart) > 10 and without_run_time(apart) == without_run_time(beside)
    assert any(not r["success"] for r in apart)
