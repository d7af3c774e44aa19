"""`rmm simulate`: the realistic programme generator, to a JSON-lines file and/or to Kafka."""

from __future__ import annotations

from rmm_monitor.core.errors import ConfigError
from rmm_monitor.core.settings import Settings

from .output import print_json
from .registry import command


def _arguments(s, settings: Settings) -> None:
    s.add_argument("--out")
    s.add_argument("--to-kafka", action="store_true")
    s.add_argument("--bootstrap", default=settings.bootstrap)
    s.add_argument("--rate", type=float, default=0.0, help="events per second when producing (0 = as fast as possible)")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--patients", type=int, default=200)
    s.add_argument("--days", type=int, default=270)
    s.add_argument("--end", help="programme end time (default now)")
    s.add_argument(
        "--dq-faults",
        action="store_true",
        help="seed the schema-valid data problems of simulate.DQ_FAULTS (for the DQ suites)",
    )


@command("simulate", "generate a realistic CAR-T programme's events", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.core.periods import parse_time
    from rmm_monitor.dev import simulate

    if not args.out and not args.to_kafka:
        raise ConfigError("give --out FILE.jsonl and/or --to-kafka")
    end = parse_time(args.end) if args.end else None
    events = simulate.generate(
        seed=args.seed, patients=args.patients, end=end, days=args.days, dq_faults=args.dq_faults
    )
    if args.out:
        simulate.to_jsonl(events, args.out)
        print_json({"events": len(events), "out": args.out})
    if args.to_kafka:
        from rmm_monitor.dev.producer import produce_events

        sent = produce_events(events, args.bootstrap, rate=args.rate)
        print_json({"produced": sent, "bootstrap": args.bootstrap})
    return 0
