"""Nothing secret where it does not belong, on a real `camflow run` with real clients.

A camera password (a pull source given in ``CAMFLOW_PULL``, whose camera is down so every retry
logs), the token secret, and every token used (publish, view, admin, and wrong ones: tampered,
a view token used to publish) must not appear in the JSON logs, in /api answers, in error bodies,
or on the process's command line. The banner prints tokens on stdout by design (the operator's
terminal), never in a log line.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.process import TOKEN_RE, camflow_run, ffmpeg_push, free_port, make_clip

pytestmark = pytest.mark.integration

CAMERA_PASSWORD = "pull-pass-7c1e9f"


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None
        ) -> tuple[int, str]:  # fmt: skip
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def rtsp_announce_status(port: int, url: str) -> int:
    request = (
        f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(4096).split(b" ")[1])


def test_no_secret_in_logs_api_error_bodies_or_the_command_line(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens: the pull source fails and retries, logging each time
    pull = f"cam9=rtsp://viewer:{CAMERA_PASSWORD}@127.0.0.1:{dead}/stream1"
    clip = make_clip(tmp_path / "clip.mp4", 3, "320x240", rate=15, gop=15)
    extra = ["--ladder", "source", "--log-format", "json"]
    with camflow_run(tmp_path, extra, env={"CAMFLOW_PULL": pull}) as cf:
        publish, view, admin = cf.token("publish", "cam1"), cf.token("view", "cam1"), cf.token("admin", "*")
        tampered = view[:-4] + ("AAAA" if not view.endswith("AAAA") else "BBBB")
        pushed = ffmpeg_push(clip, cf.rtsp_url("cam1", publish))
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        bodies: list[str] = []
        deadline = time.monotonic() + 60
        while (status := get(cf.http_url(f"/live/cam1/master.m3u8?token={view}")))[0] != 200:
            assert time.monotonic() < deadline, cf.log[-2000:]
            time.sleep(0.5)
        bodies.append(get(cf.http_url(f"/api/streams?token={admin}"))[1])
        bodies.append(get(cf.metrics_url())[1])
        for url, headers in (
            (f"/live/cam1/master.m3u8?token={tampered}", None),  # 403 token_invalid
            (f"/live/cam2/master.m3u8?token={view}", None),  # 403 token_scope
            (f"/api/streams?token={view}", None),  # 403: a view token is no operator's
            ("/metrics", {"Authorization": f"Bearer {tampered}"}),
        ):
            status, body = get(cf.http_url(url), headers)
            assert status in (401, 403), (url, status)
            bodies.append(body)
        offer = b"v=0\r\n"
        for token in (view, tampered):  # WHIP: a view token cannot publish; a tampered one is refused
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
            status, body = get(cf.http_url("/whip/cam1"), headers, "POST", offer)
            assert status == 401, body
            bodies.append(body)
        for token in (view, tampered):
            assert rtsp_announce_status(cf.rtsp_port, cf.rtsp_url("cam1", token)) == 401
        time.sleep(3)  # the pull source's retries log meanwhile
        cmdline = Path(f"/proc/{cf.proc.pid}/cmdline").read_bytes().decode(errors="replace")
        logs, banner = cf.log, cf.output
    keys = re.split(r"[\s:]+", (cf.data_dir / "secret").read_text())  # a secret, or key ids and secrets
    secrets = {"camera password": CAMERA_PASSWORD, "publish token": publish, "view token": view,
               "admin token": admin, "tampered token": tampered}  # fmt: skip
    secrets |= {f"token secret {i}": key for i, key in enumerate(keys) if len(key) >= 16}
    assert any(name.startswith("token secret") for name in secrets)
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines and any(line.get("event") == "token_refused" for line in lines)
    assert any(str(line.get("stream_id")) == "cam9" for line in lines)  # the pull source did log
    for name, value in secrets.items():
        assert value not in logs, f"{name} in the logs"
        assert not [b for b in bodies if value in b], f"{name} in an answer"
        assert value not in cmdline, f"{name} on the command line"
    printed = {m.removeprefix("token=") for m in TOKEN_RE.findall(banner)}  # by design, on stdout only
    assert len(printed) >= 3
    assert not [t for t in printed if t in logs], "a banner token in the logs"
    assert not [line for line in lines if "token=" in json.dumps(line)]
