"""One rule for where a command's data comes from: the DuckDB file, or the worker that owns it.

1. `--url` given: the worker at that URL.
2. Otherwise the file is opened (read-only unless the command changes something). DuckDB refuses a second process
   while a worker holds the file, so a file that opens has no worker, and any `<db>.worker.json` beside it is stale.
3. The file is held: the worker named by the sidecar, if it answers. If it does not (killed, stuck, starting), or
   no sidecar names it, a clear error says so; never a traceback, never a stale address trusted first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from rmm_monitor.core.client import WorkerClient
from rmm_monitor.core.errors import RmmError
from rmm_monitor.core.settings import Settings
from rmm_monitor.store import Store, StoreLocked


class NoData(RmmError):
    """Neither the file nor a worker can answer."""


@dataclass
class Data:
    """A command's data: exactly one of a local store and a worker client."""

    store: Optional[Store] = None
    client: Optional[WorkerClient] = None

    @property
    def con(self) -> Any:
        """The local store's connection (only when the command reads the file)."""
        if self.store is None:
            raise NoData("this command reads through the worker, not the file")
        return self.store.con

    @property
    def where(self) -> str:
        return self.client.url if self.client else (self.store.path if self.store else "-")

    def run(self, local: Callable[[Any], Any], change: bool = False) -> Any:
        """`local(con)` on the file (in one transaction when it changes something)."""
        if not change:
            return local(self.con)
        assert self.store is not None
        with self.store.transaction() as con:
            return local(con)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> "Data":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sidecar(db: str) -> Optional[dict]:
    """What the worker that owns `db` wrote beside it: {"url", "pid", "started_at"}, or None."""
    try:
        with open(db + ".worker.json") as fh:
            found = json.load(fh)
        return found if isinstance(found, dict) and found.get("url") else None
    except (OSError, ValueError):
        return None


def open_data(settings: Settings, db: Optional[str], url: Optional[str], writable: bool = False) -> Data:
    if url:
        return Data(client=WorkerClient(url, settings.token))
    if not db or not os.path.exists(db):
        raise NoData(f"no database at {db!r} (give --db PATH or --url WORKER)")
    try:
        return Data(store=Store(db, read_only=not writable))
    except StoreLocked:
        pass
    found = sidecar(db)
    if found is None:
        raise NoData(f"{db} is held by another process that left no address beside it; give --url WORKER")
    client = WorkerClient(found["url"], settings.token)
    if not client.answers():
        raise NoData(
            f"{db} is held by the worker that {db}.worker.json names (pid {found.get('pid')}, "
            f"{found['url']}), and it does not answer: is it still starting, stuck, or stopping?"
        )
    return Data(client=client)
