"""Real pushers over every transport and auth form into `camflow run`, each ending in playable HLS;
cameras that drop the connection or go silent; 500 idle connections that must not lock a camera out."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import Camflow, camflow_run, make_clip
from tests.test_rtsp_functional import gst_launch

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 3
GST_ENCODE = (
    "videotestsrc num-buffers={frames} is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 "
    "! videoconvert ! video/x-raw,format=I420 "
    "! x264enc tune=zerolatency key-int-max=30 speed-preset=veryfast ! video/x-h264,profile=high ! h264parse "
)


@pytest.fixture(scope="module")
def camflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Camflow]:
    """Digest and Basic offered, short session and handshake timeouts, few connections allowed."""
    extra = [
        *("--rtsp-session-timeout", str(SESSION_TIMEOUT), "--rtsp-handshake-timeout", "4"),
        *("--rtsp-max-connections", "300", "--processes", "1", "--ladder", "source"),
    ]
    with camflow_run(tmp_path_factory.mktemp("camflow"), extra) as cf:
        yield cf


@pytest.fixture(scope="module")
def camflow_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Camflow]:
    """Only Basic offered (--rtsp-auth basic): cameras keep using expiring tokens as passwords."""
    extra = ["--rtsp-auth", "basic", "--processes", "1", "--ladder", "source"]
    with camflow_run(tmp_path_factory.mktemp("camflow-basic"), extra) as cf:
        yield cf


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip5.mp4", 5, size="320x240", gop=30)


def ffmpeg(clip: Path, url: str, transport: str) -> subprocess.Popen[str]:
    args = ["ffmpeg", "-loglevel", "warning", "-re", "-i", str(clip), "-c", "copy", "-f", "rtsp"]
    return subprocess.Popen(
        [*args, "-rtsp_transport", transport, url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return proc.returncode, err


def gst_push(
    location: str, *, tcp: bool, frames: int, user: str | None = None, password: str | None = None
) -> str:
    """rtspclientsink (UDP unless ``tcp``); returns its output with GStreamer's RTCP session debug log.

    gst-launch 1.22 races its own shutdown (see tests/test_rtsp_functional.py, ``gst_launch``).
    """
    sink = f"rtspclientsink location={location}"
    if tcp:
        sink += " protocols=tcp"
    if user is not None and password is not None:
        sink += f" user-id={user} user-pw={password}"
    pipeline = GST_ENCODE.format(frames=frames) + "! " + sink
    env = {**os.environ, "GST_DEBUG": "rtpsession:5", "GST_DEBUG_NO_COLOR": "1"}
    out = gst_launch(pipeline, timeout=frames / 30 + 30, env=env)
    assert "Got error response" not in out, out[-3000:]
    return out


def wait_for_ended(cf: Camflow, stream: str, count: int = 1, timeout: float = 60.0) -> str:
    """The stream's source playlist once it has ``count`` segments and EXT-X-ENDLIST."""
    url = cf.http_url(f"/live/{stream}/source.m3u8?token={cf.token('view', stream)}")
    deadline, body = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = bytes(resp.read()).decode()
            if body.count("#EXTINF") >= count and "#EXT-X-ENDLIST" in body:
                return body
        except urllib.error.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"{stream}: not ended with {count} segments within {timeout} s:\n{body}\n{cf.log[-3000:]}"
    )


def assert_playable(cf: Camflow, stream: str) -> None:
    master = cf.http_url(f"/live/{stream}/master.m3u8?token={cf.token('view', stream)}")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json", master],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    streams = json.loads(probe.stdout)["streams"]
    assert {"codec_name": "h264", "width": 320, "height": 240} in streams, streams


def session_ended(cf: Camflow, stream: str) -> dict[str, object]:
    for line in cf.log.splitlines():
        if '"rtsp_session_ended"' in line and f'"stream_id": "{stream}"' in line:
            event: dict[str, object] = json.loads(line)
            return event
    raise AssertionError(f"no rtsp_session_ended for {stream}:\n{cf.log[-3000:]}")


# --- ffmpeg ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_ffmpeg_publishes(camflow: Camflow, clip: Path, transport: str) -> None:
    stream = f"ff{transport}"
    code, err = finish(ffmpeg(clip, camflow.rtsp_url(stream, camflow.token("publish", stream)), transport))
    assert code == 0, err
    wait_for_ended(camflow, stream, 2)
    assert_playable(camflow, stream)
    ended = session_ended(camflow, stream)
    assert ended["transport"] == transport and ended["reason"] == "teardown"
    assert ended["sender_reports"] >= 1  # type: ignore[operator]


def test_ffmpeg_basic_with_an_expiring_token_when_only_basic_is_offered(
    camflow_basic: Camflow, clip: Path
) -> None:
    token = camflow_basic.token("publish", "ffbasic", ttl=600)
    url = f"rtsp://ffbasic:{token}@127.0.0.1:{camflow_basic.rtsp_port}/ffbasic"
    code, err = finish(ffmpeg(clip, url, "udp"))
    assert code == 0, err
    wait_for_ended(camflow_basic, "ffbasic", 2)
    assert_playable(camflow_basic, "ffbasic")


# --- GStreamer --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_gstreamer_digest_with_a_never_expiring_token(camflow: Camflow, tcp: bool) -> None:
    stream = "gstdigest" + ("tcp" if tcp else "udp")
    token = camflow.token("publish", stream, "never")
    out = gst_push(
        f"rtsp://127.0.0.1:{camflow.rtsp_port}/{stream}", tcp=tcp, frames=240, user=stream, password=token
    )
    wait_for_ended(camflow, stream, 2)
    assert_playable(camflow, stream)
    ended = session_ended(camflow, stream)
    assert ended["transport"] == ("tcp" if tcp else "udp")
    assert ended["receiver_reports"] >= 1  # type: ignore[operator]
    if tcp:  # sent interleaved on channel 1, but rtspclientsink 1.22's rtpsession log never shows it arriving
        return
    # GStreamer's RTP session took our receiver report, with a block about its own source.
    assert "got RR packet" in out and re.search(r"RB 0: SSRC [0-9a-f]+, jitter", out), out[-3000:]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_gstreamer_basic_with_an_expiring_token(camflow_basic: Camflow, tcp: bool) -> None:
    stream = "gstbasic" + ("tcp" if tcp else "udp")
    token = camflow_basic.token("publish", stream, ttl=600)
    gst_push(
        f"rtsp://127.0.0.1:{camflow_basic.rtsp_port}/{stream}",
        tcp=tcp,
        frames=90,
        user=stream,
        password=token,
    )
    wait_for_ended(camflow_basic, stream, 1)
    assert_playable(camflow_basic, stream)


def test_gstreamer_digest_with_an_expiring_token_is_refused(camflow: Camflow) -> None:
    stream = "gstwrong"
    expiring = camflow.token("publish", stream, ttl=600)  # Digest needs the never-expiring one
    sink = f"rtspclientsink protocols=tcp location=rtsp://127.0.0.1:{camflow.rtsp_port}/{stream}"
    pipeline = GST_ENCODE.format(frames=30) + f"! {sink} user-id={stream} user-pw={expiring}"
    proc = subprocess.run(
        ["gst-launch-1.0", "-q", *pipeline.split()], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "Unauthorized" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "never-expiring publish token" in camflow.log


# --- cameras that vanish -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["silent", "dropped"])
def test_camera_that_vanishes_goes_offline_with_its_last_segment(
    camflow: Camflow, clip: Path, how: str
) -> None:
    stream = f"vanish{how}"
    proc = ffmpeg(clip, camflow.rtsp_url(stream, camflow.token("publish", stream)), "udp")
    try:
        time.sleep(3.5)  # publishing: at least one segment cut, another one in hand
        assert proc.poll() is None
        # silent: the process freezes, its TCP connection stays open and nothing arrives any more;
        # dropped: the kernel closes its connection, no TEARDOWN.
        os.kill(proc.pid, signal.SIGSTOP if how == "silent" else signal.SIGKILL)
        stopped = time.monotonic()
        body = wait_for_ended(camflow, stream, 1, timeout=SESSION_TIMEOUT + 30)
        waited = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        finish(proc, 10)
    ended = session_ended(camflow, stream)
    assert ended["transport"] == "udp"
    if how == "silent":
        assert str(ended["reason"]).startswith("session timeout"), ended
    else:
        assert ended["reason"] in ("connection closed", "connection reset"), ended
    # The partial segment was flushed: more media than the one segment cut while live.
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+)", body)]
    assert sum(durations) >= 2.5, body
    assert waited < SESSION_TIMEOUT + 30


# --- idle connections ---------------------------------------------------------------------------------


def test_500_idle_connections_do_not_lock_a_camera_out(camflow: Camflow, clip: Path) -> None:
    idle: list[socket.socket] = []
    try:
        for i in range(500):
            s = socket.create_connection(("127.0.0.1", camflow.rtsp_port), timeout=10)
            if i % 2:
                s.sendall(b"OPTIONS rtsp://127.0.0.1/x RTSP/1.0\r\nCSeq: 1\r\n")  # never finished
            idle.append(s)
        code, err = finish(ffmpeg(clip, camflow.rtsp_url("busy", camflow.token("publish", "busy")), "tcp"))
        assert code == 0, err
        wait_for_ended(camflow, "busy", 2)
        # Every idle connection was closed by the server: evicted (300 allowed) or timed out (4 s).
        deadline = time.monotonic() + 30
        for s in idle:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):  # an evicted connection is reset
                assert s.recv(1024) == b""
    finally:
        for s in idle:
            s.close()
    assert '"rtsp_connection_refused"' not in camflow.log  # idle ones were evicted, the camera never refused
    closed = [
        json.loads(line) for line in camflow.log.splitlines() if '"rtsp_idle_connections_closed"' in line
    ]
    assert sum(int(event["evicted"]) for event in closed) >= 200
    total = sum(int(event["evicted"]) + int(event["handshake_timeouts"]) for event in closed)
    assert total >= 500, "\n".join(line for line in camflow.log.splitlines() if "rtsp" in line)[-6000:]
