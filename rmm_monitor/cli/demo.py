"""`rmm demo`: the embedded default (rmm_monitor/dev/demo.py)."""

from __future__ import annotations

from rmm_monitor.core.settings import Settings

from .registry import command


def _arguments(d, settings: Settings) -> None:
    d.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")
    d.add_argument("--dir", default=None, help="working directory for the demo's DB and logs")
    d.add_argument(
        "--patients", type=int, default=600, help="patients treated in China (the US and EU centres add 20 %%)"
    )
    d.add_argument("--rate", type=float, default=2000.0, help="simulator events per second")
    d.add_argument("--port", type=int, default=0, help="web port of the worker (default: a free port)")
    d.add_argument("--no-export", action="store_true", help="skip the quarterly export on exit")


@command("demo", "bundled broker + worker + simulator + metrics, then a final JSON line", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.dev.demo import run_demo

    return run_demo(
        duration=args.duration,
        workdir=args.dir,
        patients=args.patients,
        rate=args.rate,
        port=args.port,
        export=not args.no_export,
    )
