"""The transcoder's process pool: spawned processes that keep freed memory and die with the transcoder.

``new_pool`` starts the processes with the "spawn" method (the transcoder runs threads, Kafka
clients and executors, that a fork would copy mid-state). Each process runs ``init_pool_process``
first:

- ``keep_freed_memory`` (``transcode.memory``): freed encoder buffers stay for the next segment.
- ``die_with_parent(SIGKILL)`` (``camflow.lifeline``): a transcoder (``camflow transcode`` or
  ``camflow run``) killed with SIGKILL runs no cleanup, and its pool processes, blocked reading
  their call queue, would outlive it (measured: both pool processes and multiprocessing's resource
  tracker still ran, re-parented to init). With the kernel's parent-death signal they end with it,
  and the resource tracker, whose pipe they held open, ends after them. A process whose parent is
  already gone when it starts ends at once.
- SIGINT ignored: Ctrl-C on a terminal reaches the whole foreground process group; the transcoder
  takes it and shuts its pool down, while pool processes interrupted mid-wait would print a
  KeyboardInterrupt traceback each.

The pool is created from the event loop's thread (the first ``run_in_executor`` starts its
processes), which lives as long as the transcoder: the parent-death signal follows the thread
that started a process, not the process.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal

from camflow.lifeline import die_with_parent
from transcode.memory import keep_freed_memory

# What init_pool_process set up in this process: (freed memory kept, parent-death signal set).
SETUP: tuple[bool, bool] | None = None


def init_pool_process(parent: int) -> None:
    """The first thing each pool process runs (see the module's docstring)."""
    global SETUP
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the transcoder's to handle
    pdeathsig = die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the transcoder died before the signal was asked for
        os._exit(1)
    SETUP = (keep_freed_memory(), pdeathsig)


def pool_setup() -> tuple[bool, bool] | None:
    """``SETUP`` of the pool process this runs in (a task for tests)."""
    return SETUP


def new_pool(processes: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_pool_process,
        initargs=(os.getpid(),),
    )
