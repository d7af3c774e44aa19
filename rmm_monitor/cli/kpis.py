"""`rmm kpis`: the KPI table, the units behind a KPI (`--explain`), the monthly trend; from the file, or from the
worker that owns it (cli/data.py)."""

from __future__ import annotations

from rmm_monitor.core.fmt import pct
from rmm_monitor.core.settings import Settings

from .data import open_data
from .output import print_json
from .registry import command


def _arguments(k, settings: Settings) -> None:
    k.add_argument("--db", default=settings.db)
    k.add_argument("--url", help="a running worker's base URL (used automatically when it holds --db)")
    k.add_argument("--as-of", dest="as_of")
    k.add_argument("--period")
    k.add_argument("--by", default="product", choices=["product", "site", "none"])
    k.add_argument("--product")
    k.add_argument("--kpi", action="append", help="only this KPI (repeatable)")
    k.add_argument("--explain", metavar="KPI_ID", help="list the failing and pending units behind a KPI")
    k.add_argument("--outcome", action="append", choices=["success", "failure", "pending", "excluded"])
    k.add_argument("--site")
    k.add_argument("--trend", action="store_true", help="monthly series (with --period YEAR)")
    k.add_argument("--json", action="store_true")


@command("kpis", "print the KPI table (docs/kpi-rules.md)", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.core.periods import iso, parse_time
    from rmm_monitor.kpi import format_table

    as_of = parse_time(args.as_of) if args.as_of else None
    params = {"as_of": iso(as_of), "period": args.period, "product": args.product}
    with open_data(settings, args.db, args.url) as data:
        if data.client:
            client = data.client
            if args.explain:
                result = client.get(
                    "/api/units", {**params, "kpi": args.explain, "site": args.site, "outcome": args.outcome}
                )
            elif args.trend:
                result = client.get("/api/trend", params)
            else:
                result = client.get("/api/kpis", {**params, "by": args.by, "kpi": args.kpi})
        else:
            from rmm_monitor.kpi import Engine

            engine = Engine(data.con)
            if args.explain:
                result = engine.units(
                    args.explain,
                    as_of=as_of,
                    period=args.period,
                    product=args.product,
                    site=args.site,
                    outcomes=args.outcome,
                )
            elif args.trend:
                result = engine.trend(as_of=as_of, period=args.period, product=args.product)
            else:
                result = engine.compute(
                    as_of=as_of, period=args.period, by=args.by, product=args.product, kpi_ids=args.kpi
                )
    if args.json:
        print_json(result)
    elif args.explain:
        for u in result:
            print(f"{u['outcome']:<8} {u['product']:<8} {u['site_id']:<10} {u['unit_id']:<22} {u['detail']}")
        print(f"{len(result)} units")
    elif args.trend:
        for r in result:
            print(
                f"{r['kpi']:<36} {r['product']:<10} {r['month']}  {pct(r['value']):>6}  "
                f"{r['numerator']}/{r['denominator']}  {r['status']}"
            )
    else:
        print(format_table(result))
    return 0
