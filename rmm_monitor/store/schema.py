"""The tables of the other parts, declared by each part beside its code.

The store owns the events' tables (event_store.py, generated from the contract). Every other part that keeps
records in the store declares them in a `tables.sql` beside its modules (`alerting/tables.sql`,
`quality/tables.sql`): idempotent statements (CREATE ... IF NOT EXISTS, CREATE OR REPLACE VIEW). A writable
`Store` runs all of them when it opens a file, so every file the monitor writes holds every part's tables, whatever
the process imported. The store reads them as package data; it imports no code of the parts above it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

TABLES_FILE = "tables.sql"


@lru_cache(maxsize=1)
def part_tables() -> tuple[tuple[str, str], ...]:
    """(part, DDL) of every subpackage of rmm_monitor that holds a tables.sql, in name order."""
    root = resources.files("rmm_monitor")
    found = []
    for part in sorted(root.iterdir(), key=lambda p: p.name):
        ddl = part / TABLES_FILE
        if part.is_dir() and ddl.is_file():
            found.append((part.name, ddl.read_text(encoding="utf-8")))
    return tuple(found)
