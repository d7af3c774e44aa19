"""The operator API of alerts and review cases: GET lists and records, POST lifecycle transitions.

POST endpoints need `Authorization: Bearer $RMM_ADMIN_TOKEN` (constant-time compare; no token configured means no
changes): 401 and nothing changes otherwise. GET endpoints are open like /api/kpis and /api/units: they serve the
same pseudonymous data, and the worker binds to loopback by default. Every change runs on the store's writer thread
in one transaction and keeps its history row (alerting/records.py).
"""

from __future__ import annotations

import hmac
from typing import Any

from faust.web import View

from rmm_monitor.alerting import records as R
from rmm_monitor.store import transaction


def _in_transaction(con, fn, *args):
    with transaction(con, "alert or review change"):
        return fn(con, *args)


def authorized(token: str, request) -> bool:
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


def register(app, alerting) -> None:
    """The eight endpoints of /api/alerts and /api/reviews on the faust app, served by `alerting`'s store threads."""
    stores = alerting.stores
    token = alerting.worker.settings.admin_token
    channels = alerting.enabled

    async def body_of(request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not str(body.get("actor") or "").strip():
            raise ValueError("JSON body with a non-empty 'actor' is required")
        return body

    async def transition(view, request, fn) -> Any:
        if not authorized(token, request):
            return view.json({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await body_of(request)
            result = await stores.write(_in_transaction, stores.store.con, fn, body)
        except R.NotFound as exc:
            return view.json({"error": str(exc)}, status=404)
        except R.TransitionError as exc:
            return view.json({"error": str(exc)}, status=409)
        except ValueError as exc:
            return view.json({"error": str(exc)}, status=400)
        await alerting.changed()
        return view.json(result)

    async def read(view, fn, *args) -> Any:
        try:
            return view.json(await stores.read(fn, *args))
        except R.NotFound as exc:
            return view.json({"error": str(exc)}, status=404)

    class AlertList(View):
        async def get(self, request):
            q = request.query
            return await read(self, R.list_alerts, q.get("state"), q.get("signal"))

    class AlertOne(View):
        async def get(self, request, alert_id):
            return await read(self, R.get_alert, alert_id)

    class AlertAck(View):
        async def post(self, request, alert_id):
            return await transition(
                self, request, lambda con, b: R.acknowledge(con, alert_id, b["actor"], b.get("comment"))
            )

    class AlertResolve(View):
        async def post(self, request, alert_id):
            return await transition(
                self, request, lambda con, b: R.resolve(con, alert_id, b["actor"], b.get("comment"), channels)
            )

    class CaseList(View):
        async def get(self, request):
            return await read(self, R.list_cases, request.query.get("state"))

    class CaseOne(View):
        async def get(self, request, case_id):
            return await read(self, R.get_case, case_id)

    class CaseStart(View):
        async def post(self, request, case_id):
            return await transition(
                self, request, lambda con, b: R.start_review(con, case_id, b["actor"], b.get("comment"))
            )

    class CaseClose(View):
        async def post(self, request, case_id):
            def close(con, b):
                version = b.get("material_version")
                return R.close_case(
                    con,
                    case_id,
                    b["actor"],
                    str(b.get("outcome")),
                    int(version) if version is not None else None,
                    b.get("comment"),
                    channels,
                )

            return await transition(self, request, close)

    for path, view in (
        ("/api/alerts", AlertList),
        ("/api/alerts/{alert_id}", AlertOne),
        ("/api/alerts/{alert_id}/ack", AlertAck),
        ("/api/alerts/{alert_id}/resolve", AlertResolve),
        ("/api/reviews", CaseList),
        ("/api/reviews/{case_id}", CaseOne),
        ("/api/reviews/{case_id}/start", CaseStart),
        ("/api/reviews/{case_id}/close", CaseClose),
    ):
        app.page(path, name="rmm-" + path.strip("/").replace("/", "-").replace("{", "").replace("}", ""))(view)
