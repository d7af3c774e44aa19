"""Processes as the kernel sees them (/proc): which children a process started, and whether they still run.
For the tests that end a demo or a worker with a signal and check that nothing it started outlives it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    starttime: int  # clock ticks after boot: with the pid, names one process even after its pid is reused
    cmdline: str

    def alive(self) -> bool:
        """Running or stopped; a zombie (exited, not yet reaped) or a new process under the same pid is gone."""
        stat = _stat(self.pid)
        return stat is not None and stat["starttime"] == self.starttime and stat["state"] != "Z"


def _stat(pid: int) -> dict | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name in (...) may hold spaces
    return {"state": fields[0], "ppid": int(fields[1]), "starttime": int(fields[19])}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children(pid: int) -> list[Proc]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat["ppid"] == pid and stat["state"] != "Z":
                out.append(Proc(int(entry), stat["starttime"], _cmdline(int(entry))))
    return out


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Wait until none of `procs` runs; returns those still running after `timeout` (empty when all ended)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if p.alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
