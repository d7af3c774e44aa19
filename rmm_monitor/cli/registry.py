"""How a command joins `rmm`: its module decorates its handler with `@command`, naming the arguments it takes.
The parser is built from what registered (cli/app.py imports the command modules); nothing else imports cli/."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from rmm_monitor.core.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]
Arguments = Callable[[argparse.ArgumentParser, Settings], None]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Arguments
    run: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Arguments) -> Callable[[Handler], Handler]:
    """Register `run(args, settings) -> exit code` as `rmm NAME`; `arguments(parser, settings)` declares its flags
    (defaults may come from the settings, i.e. the environment)."""

    def register(run: Handler) -> Handler:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register
