"""Edge worker processes die with the `camflow edge` process that started them.

A worker started by ``camflow edge --workers N`` knows its parent's PID (``CAMFLOW_EDGE_PARENT``).
Two guards, so that a parent killed with SIGKILL (which runs no cleanup) leaves no workers behind
holding the port:

1. Linux ``prctl(PR_SET_PDEATHSIG, SIGUSR2)`` (``camflow.lifeline``): the kernel sends the
   worker SIGUSR2 when its parent exits, and the worker shuts down. Set by the worker itself at
   start, then checked against a parent that died before the call (the worker is already
   orphaned). A signal of its own, not SIGTERM, so that the worker can tell its parent's death
   from its parent stopping it: the kernel sends it while the parent's threads are still dying,
   and ``os.getppid()`` can still name the parent at that moment.
2. A watchdog (every platform, and the fallback if prctl is unavailable): every second the
   worker compares ``os.getppid()`` with the parent's PID; once it differs, it stops.

Either way ``parent_gone()`` is True from then on: the worker, the last of its edge, removes
what the parent would have removed on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from camflow.lifeline import die_with_parent
from camflow.log import get_logger

PARENT_ENV = "CAMFLOW_EDGE_PARENT"
PARENT_DEATH_SIGNAL = signal.SIGUSR2
WATCH_INTERVAL = 1.0
_gone = False  # set once this process saw its parent die


def parent_gone() -> bool:
    """True once a ``ParentWatch`` in this process saw its parent die."""
    return _gone


def parent_pid_from_env() -> int | None:
    """The PID of the process that started this worker, or None outside a worker."""
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isascii() and value.isdigit() else None


class ParentWatch:
    """Sets ``stop`` once the process ``parent`` is no longer this process's parent."""

    def __init__(
        self, parent: int, stop: asyncio.Event, *, interval: float = WATCH_INTERVAL, pdeathsig: bool = True
    ) -> None:
        self.parent = parent
        self._pdeathsig = pdeathsig
        self._stop = stop
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("edge")

    def orphaned(self) -> bool:
        return os.getppid() != self.parent

    def start(self) -> None:
        prctl = False
        if self._pdeathsig:
            # The handler first: the signal's default action would end the process on the spot.
            asyncio.get_running_loop().add_signal_handler(PARENT_DEATH_SIGNAL, self._gone, "signal")
            prctl = die_with_parent(PARENT_DEATH_SIGNAL)
        if self.orphaned():  # the parent died before prctl took effect
            self._gone("start")
            return
        self._log.debug("edge_parent_watch", parent=self.parent, pdeathsig=prctl)
        self._task = asyncio.create_task(self._watch(), name="edge-parent-watch")

    def _gone(self, seen_by: str) -> None:
        global _gone
        if not _gone:
            self._log.warning("edge_parent_gone", parent=self.parent, seen_by=seen_by)
        _gone = True
        self._stop.set()

    async def _watch(self) -> None:
        while not self._stop.is_set():
            if self.orphaned():
                self._gone("watch")
                return
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
