"""The data-quality suites validated in a process of their own, so a long-running worker keeps its memory.

A run holds every row in scope as pandas frames: at 10 M stored events ~1 GB of frames and a 2.3 GB peak with
GX, of which the worker kept ~1.7 GB after the run (freed Python objects leave fragmented heaps; GX's import is
~170 MB more). So the worker only writes the frames, streamed from DuckDB as Arrow IPC files into a private
temporary directory (bounded memory: one record batch at a time), and a child process reads them, builds the
same pandas frames (`suites._to_pandas` of the same Arrow tables, as in-process) and validates them with GX. The
child prints the result rows as JSON and exits; its memory goes with it.

The child is started by streams/quality_task.py with `die_with_parent` and killed if the worker's task is
cancelled: it never outlives the worker.

    python -m rmm_monitor.quality.isolated <frames dir> <run_at ISO 8601> <expectations dir>
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from rmm_monitor.core import clock
from rmm_monitor.core.periods import parse_period

from . import suites as dq

BATCH_ROWS = 256 * 1024  # rows per Arrow record batch written: bounds the worker's memory while it writes
COMPRESSION = "lz4"  # the files are read once, right away: fast over small


def write_frames(
    con, directory: Path, as_of: Optional[datetime], period: Optional[str], suites: tuple[dq.Suite, ...]
) -> dict[str, int]:
    """Each suite's frame as `<directory>/<suite>.arrow`, streamed from DuckDB (on the thread owning `con`); the
    rows written per suite."""
    import pyarrow as pa

    as_of = as_of or clock.now()
    per = parse_period(period or "all", as_of)
    options = pa.ipc.IpcWriteOptions(compression=COMPRESSION)
    written: dict[str, int] = {}
    for suite in suites:
        sql, params = dq.frame_query(suite, as_of, per)
        reader = con.sql(sql, params=params).to_arrow_reader(BATCH_ROWS)
        n = 0
        with pa.OSFile(str(directory / f"{suite.name}.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, reader.schema, options=options) as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    n += batch.num_rows
        written[suite.name] = n
    return written


def read_frames(directory: Path, suites: tuple[dq.Suite, ...]) -> dict[str, Any]:
    """The pandas frames `suites.build_frames` would have built from the same rows."""
    import pyarrow as pa

    frames = {}
    for suite in suites:
        with pa.memory_map(str(directory / f"{suite.name}.arrow"), "r") as source:
            frames[suite.name] = dq._to_pandas(pa.ipc.open_file(source).read_all())
    return frames


def rows_to_json(rows: list[dict]) -> str:
    return json.dumps([{**r, "run_at": r["run_at"].isoformat()} for r in rows])


def rows_from_json(text: str) -> list[dict]:
    return [{**r, "run_at": datetime.fromisoformat(r["run_at"])} for r in json.loads(text)]


def main(argv: list[str]) -> int:
    directory, run_at, expectations = Path(argv[0]), datetime.fromisoformat(argv[1]), Path(argv[2])
    suites = dq.load_suites(expectations)
    rows = dq.validate(read_frames(directory, suites), suites, run_at=run_at)
    sys.stdout.write(rows_to_json(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
