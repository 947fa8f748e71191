"""Children that die with their parent: a worker or stack process must not outlive a daemon
that was killed with -9 (no atexit, no finally runs then)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (a no-op elsewhere).
    Meant as a ``preexec_fn`` or called first thing in a child."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def own_group_dying_with_parent() -> None:
    """``preexec_fn`` for a child the parent stops itself, in order: a session (and process
    group) of its own, so a Ctrl-C in the terminal reaches only the parent, yet SIGTERM from
    the kernel if the parent dies first, so the child never outlives it."""
    os.setsid()
    die_with_parent(signal.SIGTERM)
