"""Real headless Chromium (Debian `chromium` + `chromium-driver`) driven over the W3C WebDriver protocol.

Plain HTTP+JSON to chromedriver, so no client library and no browser download: the browser is the system's.

    with Browser(tmp_path) as browser:
        browser.get("http://127.0.0.1:6066/")
        browser.wait_for("return document.title")
        browser.screenshot(path)
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from rmm_monitor.dev.broker import free_port

from support.promserver import stop_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# As root on an offline machine: no sandbox, and nothing that phones home (its connections are refused here).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


class WebDriverError(AssertionError):
    """chromedriver answered with an error; a test that drives the browser fails with its message."""


class Browser:
    def __init__(self, workdir: Path, width: int = 1400, height: int = 1800):
        self.dir = Path(workdir) / "chromium"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "chromedriver.log"
        self.proc: Optional[subprocess.Popen] = None
        self.session: Optional[str] = None

    def _call(self, method: str, path: str, body: Optional[dict] = None, timeout: float = 60.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from None

    def start(self) -> "Browser":
        self.proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            if self._driver_ready():
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise WebDriverError(f"chromedriver not ready; log:\n{self._log_tail()}")
            time.sleep(0.2)
        args = CHROMIUM_ARGS + [
            f"--user-data-dir={self.dir / 'profile'}",
            f"--window-size={self.size[0]},{self.size[1]}",
        ]
        caps = {
            "capabilities": {
                "alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]
        return self

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def get(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll a script until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.run(script)
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what or script!r}; last {last!r}")

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return path

    def _driver_ready(self) -> bool:
        try:
            return bool(self._call("GET", "/status", timeout=2).get("ready"))
        except (OSError, WebDriverError):  # not listening yet; the caller's deadline bounds the wait
            return False

    def stop(self) -> None:
        if self.session:
            # the browser may be gone already; the driver process is stopped below either way
            with contextlib.suppress(OSError, WebDriverError):
                self._call("DELETE", f"/session/{self.session}", timeout=10)
            self.session = None
        stop_process(self.proc)

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
