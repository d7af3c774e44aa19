"""The root of the monitor's own errors. Every part raises subclasses of `RmmError` for what it refuses or cannot
do (a locked store, an unknown KPI, a transition the lifecycle forbids), so a caller can tell the monitor's
reasons from bugs, and the CLI turns them into one line and an exit code instead of a traceback."""

from __future__ import annotations


class RmmError(Exception):
    """Something the monitor refused or could not do, with a message for the person who asked."""


class ConfigError(RmmError, ValueError):
    """A setting, a catalog file or a command-line value cannot be used as given (also a ValueError, which is what
    it is to code that only validates)."""


class ApiError(RmmError):
    """The worker's HTTP API answered with an error status (or not at all: status 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class AuthError(RmmError):
    """Missing, wrong, expired or revoked credentials (HTTP 401; `rmm` exits 3)."""


class Forbidden(RmmError):
    """Authenticated, but the user's role does not allow it (HTTP 403; `rmm` exits 4)."""
