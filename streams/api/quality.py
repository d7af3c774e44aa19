"""/api/dq: the data-quality suites as of a time (for `rmm dq` and the export while the worker owns the file)."""

from __future__ import annotations

from rmm_monitor.core.periods import iso, parse_time


def register(app, dq_task, auth) -> None:
    @app.page("/api/dq")
    async def dq_page(web, request):
        _who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        q = request.query
        try:
            as_of = parse_time(q["as_of"]) if q.get("as_of") else None
            rows = await dq_task.evaluate(as_of, q.get("period"))
        except (KeyError, ValueError) as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json([{**r, "run_at": iso(r["run_at"])} for r in rows])
