"""Real processes for functional tests: `camflow run` and media tools, stopped by PID.

This module holds no tests.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CAMFLOW = [sys.executable, "-m", "camflow.cli"]
READY_LINE = "Ctrl-C stops it."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM by PID, then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass
class Camflow:
    proc: subprocess.Popen[bytes]
    rtsp_port: int
    http_port: int
    data_dir: Path
    stdout_path: Path
    stderr_path: Path
    env: dict[str, str]

    @property
    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def token(self, action: str, stream: str, ttl: float | str | None = None) -> str:
        """A token from `camflow token`; ``ttl="never"`` for a camera's never-expiring publish token."""
        args = [*CAMFLOW, "token", action, stream, "--data-dir", str(self.data_dir)]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        return subprocess.run(args, check=True, capture_output=True, text=True, env=self.env).stdout.strip()

    def rtsp_url(self, stream: str, token: str | None) -> str:
        query = f"?token={token}" if token else ""
        return f"rtsp://127.0.0.1:{self.rtsp_port}/{stream}{query}"

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def metrics_url(self) -> str:
        """The edge's /metrics on the public port, with the operator token it needs there."""
        return self.http_url(f"/metrics?token={self.token('admin', '*')}")


@contextmanager
def camflow_run(tmp: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> Iterator[Camflow]:
    """`camflow run` on free 127.0.0.1 ports, until it prints its URLs (bounded), stopped by PID after."""
    rtsp_port, http_port = free_port(), free_port()
    data_dir = tmp / "data"
    out, err = tmp / "camflow.out", tmp / "camflow.err"
    full_env = {**os.environ, **(env or {})}
    args = [
        *CAMFLOW,
        "run",
        "--host",
        "127.0.0.1",
        "--rtsp-port",
        str(rtsp_port),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(data_dir),
        "--drain-seconds",
        "1",
        "--processes",
        "2",
        *extra,
    ]
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(args, stdout=fo, stderr=fe, env=full_env)
    cf = Camflow(proc, rtsp_port, http_port, data_dir, out, err, full_env)
    try:
        deadline = time.monotonic() + 60
        while READY_LINE not in cf.output:
            if proc.poll() is not None:
                raise RuntimeError(f"camflow run exited with {proc.returncode}:\n{cf.log[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"camflow run did not start within 60 s:\n{cf.log[-3000:]}")
            time.sleep(0.1)
        yield cf
    finally:
        stop_process(proc)


@contextmanager
def camflow_service(
    tmp: Path, label: str, args: Sequence[str], env: Mapping[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`camflow ARGS` (ARGS[0] names the service) with ``env`` over this environment, its output in
    LABEL.out / LABEL.err under ``tmp``, once it prints that it runs (bounded); stopped by PID after."""
    out, err = tmp / f"{label}.out", tmp / f"{label}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([*CAMFLOW, *args], stdout=fo, stderr=fe, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 60
        while ": running" not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = err.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"camflow {label} did not start ({proc.returncode}):\n{log}")
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc)


def make_clip(path: Path, seconds: int, size: str = "1280x720", rate: int = 30, gop: int = 60) -> Path:
    """An H.264 clip with B-frames (libx264 defaults), like a camera or a file a user has."""
    if not path.exists():
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={size}:rate={rate}",
                "-t",
                str(seconds),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-g",
                str(gop),
                "-keyint_min",
                str(gop),
                str(path),
            ],
            check=True,
            timeout=120,
        )
    return path


def ffmpeg_push(clip: Path, url: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "warning",
            "-re",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-f",
            "rtsp",
            "-rtsp_transport",
            "tcp",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


TOKEN_RE = re.compile(r"token=[A-Za-z0-9._-]+")


def ask_edge_worker(path: Path, request: bytes) -> bytes:
    """One edge worker's answer to ``request`` (``b"metrics\n"``, ``b"viewers\n"``) on its Unix
    socket in the edge's metrics folder (``edge.metrics.WorkerMetrics``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(request)
        chunks = []
        for _ in range(10_000):  # bounded: the worker closes after its answer
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc/*/stat), in order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def stop_edge(proc: subprocess.Popen[bytes], workers: Sequence[int]) -> None:
    """Stop a `camflow edge --workers N` by its PID, then SIGKILL any of its ``workers`` still
    running (only if the test failed: never leave them behind)."""
    stop_process(proc)
    if proc.stdout is not None:
        proc.stdout.close()
    for pid in workers:
        if running(pid):
            os.kill(pid, signal.SIGKILL)
