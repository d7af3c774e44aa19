"""Real Prometheus and Alertmanager (Debian packages) on free loopback ports, for integration tests.

with PrometheusServer(tmp_path, scrape_targets=["127.0.0.1:6066"], rule_files=[...],
                      alertmanager="127.0.0.1:9093") as prom:
    prom.wait_for_scrape()
    prom.query('rmm_kpi_value{kpi="alert_card_issued"}')
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import yaml

from rmm_monitor.dev.broker import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = (
    shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "/usr/bin/prometheus-alertmanager"
)


def _answers(url: str) -> bool:
    """True once the server answers 200; False while it is not listening yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited ({proc.returncode}); log:\n{log.read_text()[-2000:]}")
        if _answers(url):
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout}s; log:\n{log.read_text()[-2000:]}")


def stop_process(proc: Optional[subprocess.Popen], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class _Server:
    proc: Optional[subprocess.Popen] = None

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PrometheusServer(_Server):
    def __init__(
        self,
        workdir: Path,
        scrape_targets: list[str],
        rule_files: Optional[list[Path]] = None,
        alertmanager: Optional[str] = None,
        interval: str = "1s",
        evaluation_interval: str = "1s",
    ):
        self.dir = Path(workdir) / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": evaluation_interval},
            "scrape_configs": [{"job_name": "rmm-worker", "static_configs": [{"targets": scrape_targets}]}],
        }
        if rule_files:
            config["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"

    def start(self) -> "PrometheusServer":
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        _wait_ready(self.url + "/-/ready", self.proc, self.log)
        return self

    def query(self, promql: str, at: Optional[float] = None) -> list[dict]:
        """Instant query; returns the result vector. Raises AssertionError if Prometheus reports an error."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        body = _get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert body.get("status") == "success", f"query {promql!r} failed: {body}"
        return body["data"]["result"]

    def now(self) -> float:
        """Prometheus's own clock (unix seconds). Query times come from here, never from this process: Prometheus
        is a Go program that reads the clock without libc, so a shifted clock here (faketime) does not move it."""
        body = _get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': 'time()'})}")
        assert body.get("status") == "success", body
        return float(body["data"]["result"][1])

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict]:
        """Wait until a query returns at least one series."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql!r} returned no series within {timeout}s")

    def wait_for_scrape(self, timeout: float = 30.0) -> None:
        self.wait_for('up{job="rmm-worker"} == 1', timeout)

    def alerts(self) -> list[dict]:
        return _get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]


class AlertmanagerServer(_Server):
    def __init__(self, workdir: Path, config: Path):
        self.dir = Path(workdir) / "alertmanager"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        self.config = Path(config)
        self.log = self.dir / "alertmanager.log"

    def start(self) -> "AlertmanagerServer":
        self.proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={self.config}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # no HA cluster: a lone Alertmanager otherwise waits ~10 s for gossip to settle before it is ready
                "--cluster.listen-address=",
            ],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        _wait_ready(self.url + "/-/ready", self.proc, self.log)
        return self

    def alerts(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as resp:
            return json.loads(resp.read())
