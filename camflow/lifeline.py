"""A child process that dies with its parent, even when the parent is killed with SIGKILL.

Linux's ``prctl(PR_SET_PDEATHSIG, sig)`` asks the kernel to send ``sig`` to the calling process
when its parent exits (strictly: when the parent *thread* that started it exits, so a child
must be started from a thread that lives as long as its process, e.g. the event loop's). A
parent that died before the call is not noticed by the kernel: the caller checks
``os.getppid()`` against the parent it expects right after.

Used by the edge's worker processes (``edge.lifeline``) and the transcoder's pool processes
(``transcode.pool``); elsewhere than Linux it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
