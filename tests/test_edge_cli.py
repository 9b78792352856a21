"""`camflow edge` as a real process: worker processes sharing a port, and operator tokens."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.process import CAMFLOW, free_port, stop_process

pytestmark = pytest.mark.integration


def healthz(port: int) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body: dict[str, object] = json.loads(resp.read())
        return body


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_edge_workers_share_the_port_and_stop_with_the_parent(tmp_path: Path) -> None:
    port = free_port()
    args = [*CAMFLOW, "edge", "--host", "127.0.0.1", "--http-port", str(port), "--data-dir", str(tmp_path)]
    err = (tmp_path / "edge.err").open("wb")
    proc = subprocess.Popen(
        [*args, "--workers", "3", "--cache-mb", "16"], stdout=subprocess.DEVNULL, stderr=err
    )
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 3 and time.monotonic() < deadline:
            try:
                pids.add(int(str(healthz(port)["pid"])))
            except OSError:
                time.sleep(0.1)
        assert len(pids) == 3, (pids, (tmp_path / "edge.err").read_text()[-2000:])
        assert proc.pid in pids
    finally:
        assert stop_process(proc) == 0
        err.close()
    for _ in range(100):
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


def test_admin_tokens_take_star(tmp_path: Path) -> None:
    base = [*CAMFLOW, "token"]
    ok = subprocess.run([*base, "admin", "*", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("v2.")  # a new data dir: a key with an id
    bad = subprocess.run(
        [*base, "admin", "cam1", "--data-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "admin tokens take '*'" in bad.stderr
    star = subprocess.run([*base, "view", "*", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert star.returncode == 2
