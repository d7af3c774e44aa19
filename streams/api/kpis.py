"""/metrics, /healthz, /api/status and the KPI reads: /api/kpis, /api/units (the units behind a KPI, as
`rmm kpis --explain`), /api/trend, /api/periods (the quarters and products that have events: the page's choices).
Every read runs on the store's reader thread; `as_of` reproduces a past answer; a bad parameter is a 400 with the
reason. The KPI reads need `viewer` once users exist (the units list pseudonymous patients); /metrics, /healthz and
/api/status stay open."""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from rmm_monitor import __version__
from rmm_monitor.core import clock
from rmm_monitor.core.periods import parse_time
from rmm_monitor.kpi import Engine


async def query(stores, web, fn: Callable, q, auth=None, request=None) -> Any:
    """`fn(con, as_of)` on the reader thread, as the JSON answer; a missing or bad parameter is a 400; with `auth`,
    the caller must be allowed to read (api/auth.py)."""
    if auth is not None:
        _who, denied = await auth.allow(web, request, "read")
        if denied is not None:
            return denied
    try:
        as_of = parse_time(q["as_of"]) if q.get("as_of") else None
        result = await stores.read(fn, as_of)
    except (KeyError, ValueError) as exc:
        return web.json({"error": str(exc)}, status=400)
    return web.json(result)


def periods_and_products(con, as_of) -> dict:
    """The UTC calendar quarters in which stored events occurred (newest first, then `all`) and the products that
    have events, as known at `as_of`: one DISTINCT over the events' two columns."""
    rows = con.execute(
        "SELECT DISTINCT product, year(t) AS y, quarter(t) AS q "
        "FROM (SELECT product, occurred_at AT TIME ZONE 'UTC' AS t FROM events WHERE known_at <= $as_of)",
        {"as_of": as_of or clock.now()},
    ).fetchall()
    quarters = sorted({(y, q) for _p, y, q in rows}, reverse=True)
    return {"periods": [f"{y}Q{q}" for y, q in quarters] + ["all"], "products": sorted({p for p, _y, _q in rows})}


def register(app, worker, auth) -> None:
    stores = worker.stores

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(worker.metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"ok": stores.store is not None, "version": __version__})

    @app.page("/api/status")
    async def status(web, request):
        return web.json(worker.status())

    @app.page("/api/kpis")
    async def kpis(web, request):
        q = request.query
        return await query(
            stores,
            web,
            lambda con, as_of: Engine(con).compute(
                as_of=as_of,
                period=q.get("period"),
                by=q.get("by", "product"),
                product=q.get("product"),
                kpi_ids=q.getall("kpi") if "kpi" in q else None,
            ),
            q,
            auth,
            request,
        )

    @app.page("/api/units")
    async def units(web, request):
        q = request.query
        outcomes = q.getall("outcome") if "outcome" in q else None
        return await query(
            stores,
            web,
            lambda con, as_of: Engine(con).units(
                q["kpi"],
                as_of=as_of,
                period=q.get("period"),
                product=q.get("product"),
                site=q.get("site"),
                outcomes=outcomes,
            ),
            q,
            auth,
            request,
        )

    @app.page("/api/periods")
    async def periods(web, request):
        return await query(stores, web, periods_and_products, request.query, auth, request)

    @app.page("/api/trend")
    async def trend(web, request):
        q = request.query
        return await query(
            stores,
            web,
            lambda con, as_of: Engine(con).trend(as_of=as_of, period=q.get("period"), product=q.get("product")),
            q,
            auth,
            request,
        )
