"""Real workers and CLIs for the tests: `rmm worker` and `rmm ...` as subprocesses of the test, on the suite's
clock (NOW, set in the environment they inherit), and small HTTP helpers for the worker's API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from rmm_monitor.core import clock
from rmm_monitor.core.procs import die_with_parent
from rmm_monitor.dev.broker import free_port

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)  # day 55 of 2026Q4: no day, quarter or year boundary near


def use_suite_clock() -> None:
    """Every process of the suite agrees that it is NOW (an offset from the machine's clock, inherited)."""
    os.environ[clock.ENV] = clock.offset_to(NOW)
    clock.configure(os.environ[clock.ENV])


def http_json(url: str, timeout: float = 10.0, token: Optional[str] = None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


@dataclass
class WorkerProc:
    db: Path
    bootstrap: str
    log: Path
    env_extra: dict = field(default_factory=dict)
    port: int = 0
    proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "WorkerProc":
        self.port = free_port()
        env = dict(
            os.environ,
            RMM_KAFKA_BOOTSTRAP=self.bootstrap,
            RMM_DB=str(self.db),
            RMM_WEB_PORT=str(self.port),
            RMM_REFRESH_SECONDS="1",
            RMM_RECHECK_SECONDS="1",  # what time alone changes shows within a second too (30 s as deployed)
            RMM_LOG_LEVEL="info",
        )
        env.update(self.env_extra)  # a test may override the defaults above (e.g. a slower KPI refresh)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rmm_monitor.cli", "worker"],
            env=env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self  # exited (a failpoint test may expect this); callers check
            with contextlib.suppress(OSError):  # not answering yet; retried until the deadline
                if http_json(self.url + "/healthz", 2).get("ok"):
                    return self
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy in {timeout}s; log:\n{self.log.read_text()[-3000:]}")

    def status(self) -> dict:
        return http_json(self.url + "/api/status")

    def ingesting(self, timeout: float = 60.0) -> "WorkerProc":
        """Wait until the ingest consumer holds its partitions: the group join takes seconds after /healthz answers,
        and a test that times a window from its first event must not spend that budget on the join."""
        self.wait_for(lambda s: s["assigned_partitions"] > 0, timeout, "the ingest consumer's partitions")
        return self

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        last = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}) waiting for {what}; log:\n{self.log.read_text()[-3000:]}"
                )
            with contextlib.suppress(OSError):  # a busy worker may not answer at once; retried until the deadline
                last = self.status()
                if predicate(last):
                    return last
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; last status {last}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        return self.proc.returncode if self.proc else 0


def run_cli(
    *args: str, env: Optional[dict] = None, timeout: float = 120, input_text: Optional[str] = None
) -> subprocess.CompletedProcess:
    """`rmm ARGS` as a subprocess; `input_text` goes to its standard input (a password with --password-stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "rmm_monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
