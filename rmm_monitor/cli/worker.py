"""`rmm worker`: the stream processor (settings from RMM_*; the flags override them)."""

from __future__ import annotations

from rmm_monitor.core.settings import Settings, use

from .registry import command


def _arguments(p, settings: Settings) -> None:
    p.add_argument("--db", help=f"DuckDB file (RMM_DB; now {settings.db})")
    p.add_argument("--bootstrap", help=f"Kafka bootstrap servers (RMM_KAFKA_BOOTSTRAP; now {settings.bootstrap})")
    p.add_argument("--port", type=int, help=f"web port (RMM_WEB_PORT; now {settings.web_port})")


@command("worker", "run the stream processor (RMM_KAFKA_BOOTSTRAP, RMM_DB)", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.streams.app import run_worker

    return run_worker(use(settings.replace(db=args.db, bootstrap=args.bootstrap, web_port=args.port)))
