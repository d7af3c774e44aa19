"""Who a command acts as, and how it asks for a password.

A change is attributed to the user of the API token in RMM_TOKEN (from `rmm login`), whether the command goes
through the worker or, with no worker running, opens the file itself; never to a name given on the command line.
A password (signing in, signing) is read from the terminal without echo, or with `--password-stdin` from the first
line of standard input (scripts, tests); never from a flag or a variable.
"""

from __future__ import annotations

import getpass
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from rmm_monitor.core.errors import AuthError
from rmm_monitor.core.settings import Settings

if TYPE_CHECKING:
    from rmm_monitor.access import Principal


def add_password_flag(p) -> None:
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )


def read_password(args, prompt: str = "password: ") -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AuthError("no terminal to ask the password on: give --password-stdin and send it on standard input")
    return getpass.getpass(prompt)


def new_password(args, user_id: str) -> str:
    """A new password, typed twice at a terminal (once with --password-stdin)."""
    first = read_password(args, f"new password for {user_id}: ")
    if not getattr(args, "password_stdin", False) and getpass.getpass("again: ") != first:
        raise AuthError("the two passwords differ")
    return first


def principal(con, settings: Settings) -> "Principal":
    """The user of RMM_TOKEN, checked against the file's tokens."""
    from rmm_monitor.access import users

    if not settings.token:
        raise AuthError("sign in first: RMM_TOKEN=$(rmm login USER) (changes are attributed to your user)")
    return users.principal_for_token(con, settings.token)


def with_password(store, user_id: str, fn: Callable[[Any], Any]) -> Any:
    """`fn(con)` in one transaction on the file, which checks `user_id`'s password: after the guessing delay, and
    with the attempt recorded (a failure outside the failed transaction)."""
    from rmm_monitor.access import users

    delay = users.delay_before_check(store.con, user_id)
    if delay:
        print(f"(waiting {delay:.0f} s after recent failed attempts for {user_id})", file=sys.stderr)
        time.sleep(delay)
    try:
        with store.transaction() as con:
            result = fn(con)
    except AuthError:
        with store.transaction() as con:
            users.note_attempt(con, user_id, False)
        raise
    with store.transaction() as con:
        users.note_attempt(con, user_id, True)
    return result
