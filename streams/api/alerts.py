"""The operator API of alerts and review cases: GET lists and records, POST lifecycle transitions.

Every POST needs a user's token (`Authorization: Bearer ...`, from `rmm login`); the actor is that user, never a
name in the body. pv_analyst and qppv acknowledge alerts and start reviews; only a qppv resolves an alert or closes
a review, and signs it with their password in the same request. Each change carries a reason, runs on the store's
writer thread in one transaction (history row, audit entry, signature) and answers 401/403/400/404/409 without
changing anything when it cannot be made (alerting/decisions.py). GETs need `viewer` once users exist.
"""

from __future__ import annotations

from typing import Any

from faust.web import View

from rmm_monitor.access import AuthError
from rmm_monitor.alerting import decisions as D
from rmm_monitor.alerting import records as R
from rmm_monitor.store import transaction

from .auth import Auth, answer_errors, body_of


def _in_transaction(con, fn, *args):
    with transaction(con, "alert or review change"):
        return fn(con, *args)


def register(app, alerting, auth: Auth) -> None:
    """The eight endpoints of /api/alerts and /api/reviews on the faust app, served by `alerting`'s store threads."""
    stores = alerting.stores
    channels = alerting.enabled

    async def transition(view, request, action: str, fn, signed: bool = False) -> Any:
        who, denied = await auth.allow(view, request, action)
        if denied is not None:
            return denied
        assert who is not None  # a change always needs a user (only reads are open while no user exists)
        try:
            body = await body_of(request)
            if signed:
                password = str(body.get("password") or "")
                if not password:
                    raise AuthError("a signature needs your password")
                result = await auth.with_password(who.user_id, fn, who, body)
            else:
                result = await stores.write(_in_transaction, stores.store.con, fn, who, body)
        except R.NotFound as exc:
            return view.json({"error": str(exc)}, status=404)
        except R.TransitionError as exc:
            return view.json({"error": str(exc)}, status=409)
        except Exception as exc:  # the access errors have their own answers; anything else is a bad request
            answer = answer_errors(view, exc)
            if answer is not None:
                return answer
            if isinstance(exc, ValueError):
                return view.json({"error": str(exc)}, status=400)
            raise
        await alerting.changed()
        return view.json(result)

    async def read(view, request, fn, *args) -> Any:
        _who, denied = await auth.allow(view, request, "read")
        if denied is not None:
            return denied
        try:
            return view.json(await stores.read(fn, *args))
        except R.NotFound as exc:
            return view.json({"error": str(exc)}, status=404)

    def reason(b: dict) -> Any:
        return b.get("reason", b.get("comment"))

    class AlertList(View):
        async def get(self, request):
            q = request.query
            return await read(self, request, R.list_alerts, q.get("state"), q.get("signal"))

    class AlertOne(View):
        async def get(self, request, alert_id):
            return await read(self, request, D.show_alert, alert_id)

    class AlertAck(View):
        async def post(self, request, alert_id):
            return await transition(
                self, request, "acknowledge_alert", lambda con, w, b: D.acknowledge(con, w, alert_id, reason(b))
            )

    class AlertResolve(View):
        async def post(self, request, alert_id):
            return await transition(
                self,
                request,
                "resolve_alert",
                lambda con, w, b: D.resolve(con, w, str(b["password"]), alert_id, reason(b), channels),
                signed=True,
            )

    class CaseList(View):
        async def get(self, request):
            return await read(self, request, R.list_cases, request.query.get("state"))

    class CaseOne(View):
        async def get(self, request, case_id):
            return await read(self, request, D.show_case, case_id)

    class CaseStart(View):
        async def post(self, request, case_id):
            return await transition(
                self, request, "start_review", lambda con, w, b: D.start_review(con, w, case_id, reason(b))
            )

    class CaseClose(View):
        async def post(self, request, case_id):
            def close(con, w, b):
                version = b.get("material_version")
                outcome = str(b.get("outcome") or ("material_updated" if version is not None else "no_change"))
                if outcome not in D.MEANING_OF_OUTCOME:
                    raise R.TransitionError(f"outcome must be one of {tuple(D.MEANING_OF_OUTCOME)}")
                return D.close_case(
                    con,
                    w,
                    str(b["password"]),
                    case_id,
                    outcome,
                    int(version) if version is not None else None,
                    reason(b),
                    channels,
                )

            return await transition(self, request, "close_review", close, signed=True)

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
