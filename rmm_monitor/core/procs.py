"""Child processes that end with the process that started them."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGTERM when the process that started it dies, even by SIGKILL, so no
    broker, worker, export or data-quality run outlives the demo, test or worker that started it (Linux; tied to
    the starting thread, so start children from a thread that lives as long as they should)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
