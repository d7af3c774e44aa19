"""/api/export/extras: what the quarterly export needs beside the KPIs (event counts per topic, alerts and review
cases with their history), as of a time, read on the store's reader thread."""

from __future__ import annotations

from rmm_monitor.core import clock
from rmm_monitor.core.periods import parse_time
from rmm_monitor.export import extras


def register(app, stores, auth) -> None:
    @app.page("/api/export/extras")
    async def extras_page(web, request):
        _who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
        q = request.query
        try:
            as_of = parse_time(q["as_of"]) if q.get("as_of") else clock.now()
            since = parse_time(q["from"]) if q.get("from") else None
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(await stores.read(extras, as_of, since))
