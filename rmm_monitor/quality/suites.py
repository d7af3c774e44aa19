"""Data-quality suites: expectations/<suite>.json (Great Expectations 1.x) validated against the frame that
expectations/<suite>.sql builds from the DuckDB store.

Two halves, so the worker can run them on different threads: `build_frames` queries DuckDB (the store's
reader), `validate` runs GX on the DataFrames. GX is imported lazily inside `validate` (the import takes
seconds) and validates pandas DataFrames, never DuckDB directly (its SQL data sources have open DuckDB bugs).

Every row in scope is in its suite's frame and GX evaluates every one (no sampling). What makes that cheap at
millions of events: DuckDB computes the per-row facts (references, minutes, content keys) vectorised; a frame
holds only the columns its expectations read; strings arrive as Arrow dictionaries (pandas categoricals: GX's
set checks and its batch fingerprint, a hash of every row, work on small integer codes); and each suite's batch
is built (fingerprinted) once, not once for the batch and again for the validator.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from rmm_monitor.contract import TOPIC_OF_TYPE
from rmm_monitor.core import clock, settings
from rmm_monitor.core.periods import Period, parse_period


def _contract_topics() -> str:
    """The contract's table of event types and their topics as SQL rows, so no suite keeps a copy of it."""
    return ", ".join(f"('{etype}', '{topic}')" for etype, topic in sorted(TOPIC_OF_TYPE.items()))


# `scoped` holds the rows a suite checks; `known` is what references are resolved against; `contract_topics`
# (event_type, topic) is generated from the event contract.
_FRAME_PREFIX = f"""
WITH known AS NOT MATERIALIZED (SELECT * FROM events WHERE known_at <= $as_of),
scoped AS NOT MATERIALIZED (
    SELECT * FROM known
    WHERE ($p_start IS NULL OR occurred_at >= $p_start) AND ($p_end IS NULL OR occurred_at < $p_end)),
contract_topics AS (SELECT * FROM (VALUES {_contract_topics()}) t(event_type, topic))
"""


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    frame_sql: str
    spec: dict  # the GX suite JSON as committed

    def expectation_names(self) -> list[str]:
        return [e["meta"]["name"] for e in self.spec["expectations"]]


def expectations_dir() -> Path:
    override = settings.current().expectations_dir
    return Path(override) if override else Path(str(resources.files("rmm_monitor.expectations")))


@lru_cache(maxsize=4)
def _load(directory: str) -> tuple[Suite, ...]:
    suites = []
    for path in sorted(Path(directory).glob("*.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        meta = spec.get("meta", {})
        sql = (path.parent / meta.get("frame", path.stem + ".sql")).read_text(encoding="utf-8").strip().rstrip(";")
        suites.append(Suite(spec["name"], int(meta.get("version", 1)), meta.get("description", ""), sql, spec))
    if not suites:
        raise FileNotFoundError(f"no expectation suites in {directory}")
    return tuple(suites)


def load_suites(directory: Optional[Path] = None) -> tuple[Suite, ...]:
    return _load(str(directory or expectations_dir()))


def build_frames(
    con, as_of: Optional[datetime] = None, period: Optional[str] = None, suites: Optional[tuple[Suite, ...]] = None
) -> dict[str, Any]:
    """One pandas DataFrame per suite, from the store (runs on whatever thread owns `con`)."""
    as_of = as_of or clock.now()
    per = parse_period(period or "all", as_of)
    frames = {}
    for suite in suites or load_suites():
        sql, params = frame_query(suite, as_of, per)
        frames[suite.name] = _to_pandas(con.sql(sql, params=params).to_arrow_table())
    return frames


def frame_query(suite: Suite, as_of: datetime, per: Period) -> tuple[str, dict]:
    """A suite's frame as SQL and the parameters it names."""
    params = {"as_of": as_of, "p_start": per.start, "p_end": per.end}
    sql = _FRAME_PREFIX + suite.frame_sql
    return sql, {k: v for k, v in params.items() if f"${k}" in sql}


def _to_pandas(table):
    """Arrow -> pandas with each string column of few distinct values dictionary-encoded (a pandas categorical:
    same values, same nulls; small integer codes for GX to compare and hash). Columns of mostly distinct strings
    (AE keys, ids) stay strings: a categorical of them would cost more than it saves."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for field, column in zip(table.schema, table.columns):
        if (
            pa.types.is_string(field.type)
            or pa.types.is_large_string(field.type)
            or pa.types.is_string_view(field.type)
        ):
            column = column.cast(pa.string())
            head = column.slice(0, 20000)  # decides the representation only; every value is kept either way
            if pc.count_distinct(head, mode="all").as_py() * 16 <= max(len(head), 1):
                column = pc.dictionary_encode(column)
        columns.append(column)
    return pa.table(columns, names=table.column_names).to_pandas()


_context = None


def _gx_context():
    """One ephemeral GX context per process, with analytics and progress bars off (no network, quiet logs)."""
    global _context
    if _context is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        # GX logs hundreds of INFO lines about its own registries on first use; they say nothing about the data
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _context = ctx
    return _context


def _observed(result: dict) -> tuple[str, Optional[int], Optional[int]]:
    """A short, id-free description of what GX saw (never the unexpected values: they can be patient refs)."""
    if "unexpected_count" in result:
        n, bad = result.get("element_count") or 0, result.get("unexpected_count") or 0
        pct = 100.0 * bad / n if n else 0.0
        return f"{bad} of {n} rows unexpected ({pct:.2f} %)", n, bad
    value = result.get("observed_value")
    if isinstance(value, float):
        value = round(value, 6)
    return f"observed {value}", None, None


def validate(
    frames: dict[str, Any], suites: Optional[tuple[Suite, ...]] = None, run_at: Optional[datetime] = None
) -> list[dict]:
    """Validate each suite's frame with GX 1.x (ephemeral context, pandas data source, dataframe asset, a
    whole-dataframe batch definition and GX's v1 Validator over it); one result row per expectation, in the
    suite's own order."""
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.validator.v1_validator import Validator

    ctx = _gx_context()
    run_at = run_at or clock.now()
    try:
        source = ctx.data_sources.get("rmm")
    except (KeyError, ValueError, LookupError):
        source = ctx.data_sources.add_pandas("rmm")
    rows: list[dict] = []
    for suite in suites or load_suites():
        frame = frames[suite.name]
        asset_name = f"{suite.name}_v{suite.version}"
        try:
            asset = source.get_asset(asset_name)
        except LookupError:
            asset = source.add_dataframe_asset(asset_name)
        try:
            batch_def = asset.get_batch_definition("whole")
        except (KeyError, LookupError, ValueError):
            batch_def = asset.add_batch_definition_whole_dataframe("whole")
        gx_suite = ExpectationSuite(**json.loads(json.dumps(suite.spec)))
        # what Batch.validate does, minus building (and fingerprinting every row of) the batch a second time
        outcome = Validator(
            batch_definition=batch_def, batch_parameters={"dataframe": frame}
        ).validate_expectation_suite(gx_suite)
        by_name = {r.expectation_config.meta["name"]: r for r in outcome.results if r.expectation_config is not None}
        for spec in suite.spec["expectations"]:
            name = spec["meta"]["name"]
            res = by_name[name]
            observed, n, bad = _observed(res.result or {})
            if res.exception_info and res.exception_info.get("raised_exception"):
                observed = "error: " + str(res.exception_info.get("exception_message"))[:200]
            rows.append(
                {
                    "run_at": run_at,
                    "suite": suite.name,
                    "suite_version": suite.version,
                    "expectation": name,
                    "type": spec["type"],
                    "severity": spec.get("severity", "critical"),
                    "critical": spec.get("severity", "critical") == "critical",
                    "success": bool(res.success),
                    "observed": observed,
                    "element_count": n if n is not None else len(frame),
                    "unexpected_count": bad,
                    "why": spec["meta"].get("why", ""),
                }
            )
    return rows


def run(con, as_of: Optional[datetime] = None, period: Optional[str] = None) -> tuple[list[dict], dict]:
    """Frames + validation in one go (CLI, tests); returns (rows, timings in seconds)."""
    suites = load_suites()
    t0 = time.perf_counter()
    frames = build_frames(con, as_of, period, suites)
    t1 = time.perf_counter()
    rows = validate(frames, suites)
    t2 = time.perf_counter()
    return rows, {
        "frames_seconds": round(t1 - t0, 3),
        "validate_seconds": round(t2 - t1, 3),
        "rows_checked": sum(len(f) for f in frames.values()),
    }


def record(con, rows: list[dict]) -> None:
    """Append a run to dq_results (the alerting channel reads failing critical rows from there)."""
    if not rows:
        return
    con.executemany(
        "INSERT INTO dq_results (run_at, suite, expectation, success, observed, critical) VALUES (?, ?, ?, ?, ?, ?)",
        [(r["run_at"], r["suite"], r["expectation"], r["success"], r["observed"], r["critical"]) for r in rows],
    )


def failing(rows: list[dict], critical_only: bool = False) -> list[dict]:
    return [r for r in rows if not r["success"] and (r["critical"] or not critical_only)]
