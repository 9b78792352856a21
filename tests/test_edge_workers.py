"""`camflow edge --workers N`: the worker processes die with their parent, even when it gets SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edge.lifeline import ParentWatch
from tests.process import CAMFLOW, children_of, free_port, running, stop_edge


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_die_when_the_parent_is_killed(tmp_path: Path) -> None:
    port = free_port()
    err = (tmp_path / "edge.err").open("wb")
    proc = subprocess.Popen(
        [
            *CAMFLOW,
            "edge",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--workers",
            "3",
            "--cache-mb",
            "16",
        ],
        stdout=subprocess.PIPE,
        stderr=err,
    )
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "camflow edge: running" once the workers are spawned
        assert b"running" in line, (tmp_path / "edge.err").read_text()[-2000:]
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = children_of(proc.pid)
            time.sleep(0.1)
        assert len(workers) == 2, workers
        environ = Path(f"/proc/{min(workers)}/environ").read_bytes().split(b"\0")
        env = dict(kv.decode().split("=", 1) for kv in environ if b"=" in kv)
        shared = Path(env["CAMFLOW_EDGE_METRICS_DIR"])
        assert shared.is_dir()
        # Wait until both workers serve (each answers on its metrics socket once it is up), so the
        # SIGKILL below finds them running their parent watch, however slow the machine.
        deadline = time.monotonic() + 60
        sockets = {shared / f"{pid}.sock" for pid in workers}
        while not all(s.exists() for s in sockets) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(s.exists() for s in sockets), sorted(p.name for p in shared.iterdir())
        assert all(running(pid) for pid in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in workers if running(pid)]
        assert not left, f"workers {left} outlived their SIGKILLed parent {proc.pid}"
        assert not shared.exists(), "an orphaned worker removes the metrics folder"
    finally:
        stop_edge(proc, workers)
        err.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pdeathsig_is_set_on_linux() -> None:
    """In a child process (not pytest itself): prctl(PR_GET_PDEATHSIG) reads back SIGUSR2."""
    script = (
        "import ctypes, ctypes.util\n"
        "from camflow.lifeline import die_with_parent\n"
        "from edge.lifeline import PARENT_DEATH_SIGNAL\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "before = ctypes.c_int(-1); libc.prctl(2, ctypes.byref(before), 0, 0, 0)\n"
        "ok = die_with_parent(PARENT_DEATH_SIGNAL)\n"
        "after = ctypes.c_int(-1); libc.prctl(2, ctypes.byref(after), 0, 0, 0)\n"
        "print(before.value, ok, after.value)\n"
    )
    child = subprocess.run(
        [*CAMFLOW[:1], "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert child.stdout.split() == ["0", "True", str(int(signal.SIGUSR2))]


async def test_watchdog_stops_a_worker_whose_parent_is_gone() -> None:
    """The fallback without prctl: a parent PID that is not ours any more sets the stop event."""
    stop = asyncio.Event()
    watch = ParentWatch(os.getppid(), stop, interval=0.05, pdeathsig=False)  # no prctl on pytest itself
    watch.start()
    await asyncio.sleep(0.2)
    assert not stop.is_set()  # our real parent is alive
    watch.parent = -1  # as if the parent had died and we had been re-parented
    await asyncio.wait_for(stop.wait(), timeout=5)
    await watch.stop()
