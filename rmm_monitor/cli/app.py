"""The `rmm` console script: one parser built from the commands that registered (one module each in this
package), the settings read once from the environment, and the monitor's own errors as one line on stderr.
Heavy modules are imported inside the commands, so `rmm --help` stays instant."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from rmm_monitor.core import clock
from rmm_monitor.core.errors import ApiError, AuthError, Forbidden, RmmError
from rmm_monitor.core.settings import Settings, use

from .registry import COMMANDS

COMMAND_MODULES = (
    "broker",
    "worker",
    "replay",
    "kpis",
    "simulate",
    "demo",
    "export",
    "alerts",
    "users",
    "audit",
    "rules",
)


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")
    parser = argparse.ArgumentParser(prog="rmm", description="CAR-T aRMM effectiveness monitor")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help)
        cmd.arguments(p, settings)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        settings = use(Settings.from_env())
    except RmmError as exc:  # a setting from the environment that does not parse: say which, start nothing
        print(f"rmm: {exc}", file=sys.stderr)
        return 2
    try:
        clock.configure(settings.clock)
    except ValueError as exc:
        print(f"rmm: RMM_CLOCK={settings.clock!r}: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    try:
        return args.run(args, settings) or 0
    except ApiError as exc:
        print(f"rmm {args.command}: worker answered {exc.status}: {exc}", file=sys.stderr)
        return {401: 3, 403: 4}.get(exc.status, 2)
    except (AuthError, Forbidden) as exc:
        print(f"rmm {args.command}: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, AuthError) else 4
    except RmmError as exc:
        print(f"rmm {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
