"""The one HTTP client of the worker's API (the CLI's commands, the export's remote source, the demo).

Reads are GETs of JSON, changes POSTs; both carry the user's bearer token (from `rmm login`), which comes from the
settings (RMM_TOKEN in the environment), never from the command line where `ps` would show it.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from .errors import ApiError


class WorkerClient:
    def __init__(self, url: str, token: str = "", timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str, params: Optional[dict] = None, timeout: Optional[float] = None) -> Any:
        return self._call("GET", path, params, None, timeout)

    def post(self, path: str, body: dict, timeout: Optional[float] = None, headers: Optional[dict] = None) -> Any:
        return self._call("POST", path, None, body, timeout, headers)

    def answers(self, timeout: float = 2.0) -> bool:
        """True while the worker answers its health check."""
        try:
            return bool(self.get("/healthz", timeout=timeout).get("ok"))
        except ApiError:
            return False

    def _call(
        self,
        method: str,
        path: str,
        params: Optional[dict],
        body: Optional[dict],
        timeout: Optional[float],
        headers: Optional[dict] = None,
    ) -> Any:
        query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None], doseq=True)
        req = Request(
            f"{self.url}{path}" + (f"?{query}" if query else ""),
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
        )
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:  # a user's token (rmm login): every read needs one once users exist
            req.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urlopen(req, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read())
        except HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", "") if raw else ""
            except ValueError:
                message = raw.decode(errors="replace")
            raise ApiError(exc.code, message or str(exc.reason)) from None
        except (URLError, OSError) as exc:  # refused, reset, timed out: the worker is not answering
            raise ApiError(0, f"{self.url} does not answer: {getattr(exc, 'reason', exc)}") from None
