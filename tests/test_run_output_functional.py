"""What `camflow run` prints works when pasted: the stream list URL (curl, with its admin token) and
the `camflow tail` command of the operator's view; and the banner names the running `camflow`."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camflow.cli.banner import camflow_command
from tests.process import CAMFLOW, READY_LINE, camflow_run, free_port, stop_process

pytestmark = pytest.mark.integration


def _line(output: str, label: str) -> str:
    (line,) = [line for line in output.splitlines() if line.strip().startswith(label)]
    return line.strip()[len(label) :].strip()


def test_the_printed_stream_list_and_tail_commands_work(tmp_path: Path) -> None:
    with camflow_run(tmp_path) as cf:
        curl = shlex.split(_line(cf.output, "streams:"))
        assert curl[0] == "curl" and "/api/streams?token=" in curl[-1]
        listed = subprocess.run(curl, capture_output=True, text=True, timeout=30, check=True)
        assert isinstance(json.loads(listed.stdout), (list, dict)), listed.stdout

        assign, *tail = shlex.split(_line(cf.output, "health:"))
        name, _, admin = assign.partition("=")  # the token in tail's environment, not on its command line
        assert name == "CAMFLOW_TOKEN" and admin and admin not in " ".join(tail)
        assert tail[:3] == [sys.executable, "-m", "camflow.cli"] and tail[3] == "tail"
        started = time.monotonic()
        done = subprocess.run(
            [*tail, "--duration", "3"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**cf.env, "CAMFLOW_TOKEN": admin},
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "answered" not in done.stderr and "reconnecting" not in done.stderr, done.stderr
        assert elapsed < 15, elapsed  # --duration 3 (plus the interpreter's start), not a read timeout

        other = _line(cf.output, "other streams:").replace("publish|view STREAM", "view cam2")
        made = subprocess.run(shlex.split(other), capture_output=True, text=True, timeout=30, env=cf.env)
        assert made.returncode == 0, made.stderr
        view = made.stdout.strip()  # signed with the running camflow's secret: the edge takes it
        url = cf.http_url(f"/api/streams?token={view}")
        refused = subprocess.run(["curl", "-s", url], capture_output=True, text=True, timeout=30)
        assert "token_scope" in refused.stdout, refused.stdout  # refused for its scope, not its key


def test_the_banner_names_the_camflow_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "venv" / "bin" / "camflow"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert camflow_command(str(script)) == str(script)  # `make run`: .venv/bin/camflow, venv not on PATH
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin:/bin")
    assert camflow_command(str(script)) == "camflow"  # the venv is active
    assert camflow_command("/x/camflow/cli/__main__.py") == f"{shlex.quote(sys.executable)} -m camflow.cli"


def test_ctrl_c_stops_camflow_run_quietly(tmp_path: Path) -> None:
    """Ctrl-C on a terminal signals the whole foreground process group: camflow run and its transcode
    pool. It stops with status 0 and no traceback (the pool processes leave SIGINT to it)."""
    err = tmp_path / "camflow.err"
    args = [*CAMFLOW, "run", "--host", "127.0.0.1", "--rtsp-port", str(free_port())]
    args += ["--http-port", str(free_port()), "--data-dir", str(tmp_path / "data"), "--processes", "2"]
    args += ["--drain-seconds", "1", "--rtsp-udp-ports", "off"]
    with err.open("wb") as fe:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=fe, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if READY_LINE.encode() in line:
                break
        time.sleep(1.0)  # the pool processes are up (the transcoder warms them before it is ready)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0, err.read_text()[-3000:]
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    log = err.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
