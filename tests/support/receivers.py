"""Real receivers on loopback for the alert channels: an SMTP server (aiosmtpd), an HTTP webhook receiver, and
the weak-site scenario fed to a worker."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from email import message_from_bytes, policy
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from rmm_monitor.alerting.signals import breach_targets
from rmm_monitor.dev import simulate
from rmm_monitor.dev.broker import free_port
from rmm_monitor.kpi import Engine
from rmm_monitor.store import Store, process_batch

from support.workers import NOW

WEAK_SITE = "GZ-03"  # simulate.WEAK_SITES: late or missing alert cards


@lru_cache(maxsize=1)
def weak_site_events() -> tuple[dict, ...]:
    """The simulator's GZ-03 events plus the programme's material releases (without them every infusion would
    also fail trained_on_current_material), the programme ending at the suite's NOW (conftest: every process of
    the suite runs on that clock), so the worker's current quarter holds the same units on any day.
    At NOW the engine finds one breach, alert_card_issued CTX-19 GZ-03 6/11 (`expected_breaches`)."""
    events = simulate.generate(seed=7, patients=600, end=NOW)
    return tuple(e for e in events if e["site_id"] == WEAK_SITE or e["event_type"] == "material_version_released")


def expected_breaches(events, workdir: Path) -> list[dict]:
    """The KPI rows that must page, by the same engine the worker runs, over a replay of the same events."""
    with Store(workdir / "expected.duckdb") as store:
        process_batch(store, [json.dumps(e).encode() for e in events])
        return breach_targets(Engine(store.con).compute(by="site"))


class SmtpSink:
    """aiosmtpd on a free loopback port; optional STARTTLS (self-signed cert) and AUTH."""

    def __init__(self, tls_dir: Optional[Path] = None, user: Optional[str] = None, password: Optional[str] = None):
        self.messages: list = []
        self.received_at: list[float] = []
        self.port = free_port()
        self.cert = None
        kwargs = {}
        if tls_dir is not None:
            import ssl

            self.cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    str(key),
                    "-out",
                    str(self.cert),
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ],
                check=True,
                capture_output=True,
            )
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert, key)
            kwargs.update(tls_context=ctx, require_starttls=True)
        if user is not None:

            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = auth_data.login == user.encode() and auth_data.password == password.encode()
                return AuthResult(success=ok, handled=False)

            kwargs.update(authenticator=authenticator, auth_require_tls=tls_dir is not None)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.received_at.append(time.monotonic())
        return "250 OK"

    def __enter__(self) -> "SmtpSink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


class WebhookReceiver:
    """ThreadingHTTPServer that records every POST; answers 503 to the first `fail_first` requests."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                failed = len(receiver.requests) < receiver.fail_first
                receiver.requests.append(
                    {
                        "headers": dict(self.headers),
                        "body": body,
                        "at": time.monotonic(),
                        "answered": 503 if failed else 200,
                    }
                )
                self.send_response(503 if failed else 200)
                self.end_headers()

            def log_message(self, *args):
                """No access log: the test reads `receiver.requests`, not stderr."""

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)

    def ok(self) -> list[dict]:
        return [r for r in self.requests if r["answered"] == 200]

    def json_ok(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.ok()]

    def __enter__(self) -> "WebhookReceiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
