"""A transcoder killed with SIGKILL leaves no pool processes behind (`camflow run` and `camflow transcode`).

The pool processes ask the kernel for SIGKILL when their parent dies (``transcode.pool``); without
that they, and multiprocessing's resource tracker, were re-parented to init and ran on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests import services
from tests.process import camflow_run, camflow_service, children_of, running

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]


def pool_of(proc: subprocess.Popen[bytes], expected: int) -> list[int]:
    """The transcoder's children once ``expected`` of them run (the pool starts before "running")."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = [pid for pid in children_of(proc.pid) if running(pid)]
        if len(kids) >= expected:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"{len(children_of(proc.pid))} children of {proc.pid}, expected {expected}")


def assert_all_end_with(proc: subprocess.Popen[bytes], kids: list[int]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 15
    while (left := [pid for pid in kids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # never leave them behind, even when the test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"pool processes {left} outlived their SIGKILLed transcoder {proc.pid}"


def test_camflow_run_killed_leaves_no_pool_processes(tmp_path: Path) -> None:
    with camflow_run(tmp_path) as cf:  # --processes 2: two pool processes and the resource tracker
        kids = pool_of(cf.proc, 3)
        assert_all_end_with(cf.proc, kids)


def test_camflow_transcode_killed_leaves_no_pool_processes(tmp_path: Path) -> None:
    kafka, s3 = services.require("kafka"), services.require("s3")
    prefix = f"orphans-{uuid.uuid4().hex[:8]}."
    args = ["transcode", "--kafka", kafka, "--kafka-prefix", prefix, "--s3", s3, "--processes", "2"]
    with camflow_service(tmp_path, "transcode", args, {}) as proc:
        kids = pool_of(proc, 3)
        assert_all_end_with(proc, kids)
