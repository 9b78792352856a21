"""Devices with real clients: ffmpeg (RTSP Digest, ?token=), GStreamer rtspclientsink (Digest with
user-id/user-pw) and FFmpeg's WHIP muxer (Bearer) publish as a device added by `camflow device add`;
another device's stream is refused; `camflow device revoke` ends a live ffmpeg session within 5 s
and refuses its reconnect, embedded (`camflow run --data-dir`) and on Kafka with two
`camflow ingest` nodes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import services
from tests.process import (
    CAMFLOW,
    Camflow,
    camflow_run,
    camflow_service,
    ffmpeg_push,
    free_port,
    make_clip,
    stop_process,
)
from tests.test_rtsp_functional import gst_launch

pytestmark = pytest.mark.integration
SECRET = "devices-functional-secret-0123456789"


def device(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAMFLOW, "device", *args], capture_output=True, text=True, timeout=60)


def add_device(name: str, backend: list[str], streams: tuple[str, ...] = ()) -> str:
    """`camflow device add`: the credential, its output's last line."""
    extra = [arg for s in streams for arg in ("--stream", s)]
    added = device("add", name, *extra, *backend)
    assert added.returncode == 0, added.stderr
    lines = added.stdout.strip().splitlines()
    assert lines[-1].startswith(f"cfd1.{name}.") and all(lines[-1] not in line for line in lines[:-1]), lines
    return lines[-1]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def count(log: str, event: str, **fields: str) -> int:
    """Log lines (JSON) of ``event`` with ``fields``."""
    found = 0
    for line in log.splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            found += 1
    return found


def ffmpeg_loop(clip: Path, url: str) -> subprocess.Popen[str]:
    """ffmpeg publishing ``clip`` over and over (a camera that stays on), until it is stopped or cut off."""
    args = ["ffmpeg", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy"]
    args += ["-f", "rtsp", "-rtsp_transport", "tcp", url]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def gst_push(port: int, stream: str, user: str, password: str) -> str:
    pipeline = (
        "videotestsrc num-buffers=60 is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 "
        "! videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency key-int-max=30 "
        "speed-preset=ultrafast ! h264parse "
        f"! rtspclientsink protocols=tcp location=rtsp://127.0.0.1:{port}/{stream} "
        f"user-id={user} user-pw={password}"
    )
    return gst_launch(pipeline)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip2.mp4", 2, size="320x240", gop=30)


@pytest.fixture(scope="module")
def camflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Camflow]:
    extra = ["--ladder", "source", "--processes", "1", "--rtsp-udp-ports", "off"]
    with camflow_run(tmp_path_factory.mktemp("camflow"), extra) as cf:
        yield cf


def test_device_publishes_with_every_scheme_and_only_its_streams(camflow: Camflow, clip: Path) -> None:
    backend = ["--data-dir", str(camflow.data_dir)]
    cred = add_device("dcam", backend, ("dcam", "dcam2"))
    other = add_device("other", backend)
    port = camflow.rtsp_port
    wait_until(lambda: count(camflow.log, "device_registry_changed", device="other") > 0, 5, "registry seen")

    pushed = ffmpeg_push(clip, f"rtsp://dcam:{cred}@127.0.0.1:{port}/dcam")  # offered both: Digest
    assert pushed.returncode == 0, pushed.stderr
    pushed = ffmpeg_push(clip, f"rtsp://127.0.0.1:{port}/dcam2?token={cred}")
    assert pushed.returncode == 0, pushed.stderr
    output = gst_push(port, "dcam2", "dcam", cred)
    assert "Got error response" not in output, output
    url = camflow.http_url("/whip/dcam")
    whip = subprocess.run(
        [sys.executable, "-m", "tests.whip_publish", url, cred, "2"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert whip.returncode == 0, whip.stderr[-3000:]
    wait_until(
        lambda: count(camflow.log, "publish_ended", stream_id="dcam") >= 2, 20, "two dcam sessions ended"
    )
    assert count(camflow.log, "publish_started", stream_id="dcam2") >= 2  # ffmpeg ?token= and GStreamer

    # Another device's stream, by Digest and by ?token=; and a WHIP Bearer for it: refused, nothing published.
    refused = ffmpeg_push(clip, f"rtsp://other:{other}@127.0.0.1:{port}/dcam")
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    refused = ffmpeg_push(clip, f"rtsp://127.0.0.1:{port}/dcam2?token={other}")
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    whip = subprocess.run(
        [sys.executable, "-m", "tests.whip_publish", url, other, "1"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert whip.returncode != 0 and "401" in whip.stderr, whip.stderr[-2000:]
    assert (
        count(
            camflow.log,
            "publish_refused",
            scheme="digest",
            reason="device 'other' may publish other, not 'dcam'",
        )
        == 1
    )
    assert count(camflow.log, "publish_started", stream_id="other") == 0
    assert cred not in camflow.log and cred.split(".")[2] not in camflow.log  # no credential in any log line

    listed = device("list", "--json", *backend)
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["dcam"]["last_address"] == "127.0.0.1" and rows["dcam"]["last_seen"] > rows["dcam"]["created"]
    assert rows["dcam"]["streams"] == ["dcam", "dcam2"] and rows["other"]["last_seen"] is None
    table = device("list", *backend).stdout
    assert "dcam2" in table and "127.0.0.1" in table and "active" in table


def revoke_ends(
    procs: list[subprocess.Popen[str]], backend: list[str], name: str, also: Callable[[], bool] = lambda: True
) -> float:
    """`camflow device revoke NAME`: seconds from starting it until every publishing ffmpeg ended
    (and ``also`` holds)."""
    done = time.monotonic()
    revoked = device("revoke", name, *backend)
    assert revoked.returncode == 0, revoked.stderr
    try:
        wait_until(lambda: all(p.poll() is not None for p in procs) and also(), 10, "sessions cut off")
    finally:
        for proc in procs:
            stop_process(proc)  # type: ignore[arg-type]
            proc.communicate(timeout=10)  # closes its stderr pipe
    took = time.monotonic() - done
    print(f"{name}: revoked -> every session ended in {took:.2f} s")
    return took


def test_revoke_ends_a_live_session_and_refuses_the_reconnect(camflow: Camflow, clip: Path) -> None:
    backend = ["--data-dir", str(camflow.data_dir)]
    cred = add_device("rcam", backend, ("rcam", "rwhip"))
    wait_until(lambda: count(camflow.log, "device_registry_changed", device="rcam") > 0, 5, "registry seen")
    url = f"rtsp://rcam:{cred}@127.0.0.1:{camflow.rtsp_port}/rcam"
    proc = ffmpeg_loop(clip, url)
    whip_url = camflow.http_url("/whip/rwhip")
    whip = subprocess.Popen(
        [sys.executable, "-m", "tests.whip_publish", whip_url, cred, "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for stream in ("rcam", "rwhip"):
            wait_until(
                lambda stream=stream: count(camflow.log, "publish_started", stream_id=stream) == 1,  # type: ignore[misc]
                30,
                f"{stream} publishing",
            )
        took = revoke_ends(
            [proc], backend, "rcam", lambda: count(camflow.log, "publish_ended", stream_id="rwhip") == 1
        )
    finally:
        stop_process(whip)
    assert took < 5.0, took
    for protocol in ("rtsp", "whip"):
        ended = count(
            camflow.log, "device_session_ended", device="rcam", reason="device revoked", protocol=protocol
        )
        assert ended == 1, protocol
    again = ffmpeg_push(clip, url)
    assert again.returncode != 0 and "401" in again.stderr, again.stderr
    assert count(camflow.log, "publish_started", stream_id="rcam") == 1
    assert "revoked" in device("list", *backend).stdout


def test_two_kafka_ingest_nodes_both_refuse_within_5s(clip: Path, tmp_path: Path) -> None:
    kafka = services.require("kafka")
    backend = ["--kafka", kafka, "--kafka-prefix", f"d{uuid.uuid4().hex[:10]}."]
    env = {"CAMFLOW_SECRET": SECRET}
    cred = add_device("kcam", backend, ("k1", "k2"))  # the registry exists before the nodes start
    nodes = []
    with contextlib.ExitStack() as stack:
        for label in ("a", "b"):
            rtsp = free_port()
            args = ["ingest", "--host", "127.0.0.1", "--rtsp-port", str(rtsp), "--rtsp-udp-ports", "off"]
            args += ["--http-port", str(free_port()), "--data-dir", str(tmp_path / label), *backend]
            stack.enter_context(camflow_service(tmp_path, label, args, env))
            nodes.append((rtsp, tmp_path / f"{label}.err"))
        (port_a, log_a), (port_b, log_b) = nodes
        procs = [
            ffmpeg_loop(clip, f"rtsp://kcam:{cred}@127.0.0.1:{port_a}/k1"),  # Digest to node a
            ffmpeg_loop(clip, f"rtsp://127.0.0.1:{port_b}/k2?token={cred}"),  # ?token= to node b
        ]
        for (_, log), stream in zip(nodes, ("k1", "k2"), strict=True):
            wait_until(
                lambda log=log, stream=stream: (
                    count(log.read_text(), "publish_started", stream_id=stream) == 1
                ),  # type: ignore[misc]
                30,
                stream,
            )
        took = revoke_ends(procs, backend, "kcam")
        assert took < 5.0, took
        for log in (log_a, log_b):
            assert count(log.read_text(), "device_session_ended", device="kcam", reason="device revoked") == 1
        for url in (
            f"rtsp://kcam:{cred}@127.0.0.1:{port_a}/k1",
            f"rtsp://127.0.0.1:{port_b}/k2?token={cred}",
        ):
            again = ffmpeg_push(clip, url)
            assert again.returncode != 0 and "401" in again.stderr, again.stderr
        assert cred.split(".")[2] not in log_a.read_text() + log_b.read_text()
    rows = {row["name"]: row for row in json.loads(device("list", "--json", *backend).stdout)}
    assert rows["kcam"]["revoked"] and rows["kcam"]["last_address"] == "127.0.0.1"


def test_ingest_without_its_registry_refuses_devices_and_takes_hmac_tokens(
    clip: Path, tmp_path: Path
) -> None:
    """Kafka unreachable at start: `camflow ingest` runs anyway (its spool holds the segments), fails
    closed for device credentials and keeps taking HMAC publish tokens."""
    rtsp, down = free_port(), free_port()  # nothing listens on ``down``
    args = ["ingest", "--host", "127.0.0.1", "--rtsp-port", str(rtsp), "--rtsp-udp-ports", "off"]
    args += ["--http-port", str(free_port()), "--data-dir", str(tmp_path), "--kafka", f"127.0.0.1:{down}"]
    env = {"CAMFLOW_SECRET": SECRET}
    token = subprocess.run(
        [*CAMFLOW, "token", "publish", "h1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with camflow_service(tmp_path, "ingest", args, env):
        log = tmp_path / "ingest.err"
        assert count(log.read_text(), "device_registry_not_loaded") == 1
        device_cred = "cfd1.h1." + "A" * 43
        refused = ffmpeg_push(clip, f"rtsp://127.0.0.1:{rtsp}/h1?token={device_cred}")
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        reason = "the device registry is not loaded yet (its backend is unavailable)"
        assert count(log.read_text(), "publish_refused", stream_id="h1", reason=reason) >= 1
        pushed = ffmpeg_push(clip, f"rtsp://127.0.0.1:{rtsp}/h1?token={token}")
        assert pushed.returncode == 0, pushed.stderr
        assert count(log.read_text(), "publish_started", stream_id="h1") == 1


def test_device_command_on_s3(tmp_path: Path) -> None:
    """`camflow device --s3`: the registry in a bucket (MinIO), as `camflow run --s3` follows it."""
    s3 = services.require("s3")
    backend = ["--s3", f"{s3.rstrip('/')}/{uuid.uuid4().hex[:10]}", "--data-dir", str(tmp_path)]
    add_device("s3cam", backend, ("a", "b"))
    assert device("streams", "s3cam", "a", *backend).returncode == 0
    assert device("revoke", "s3cam", *backend).returncode == 0
    (row,) = json.loads(device("list", "--json", *backend).stdout)
    assert row["name"] == "s3cam" and row["streams"] == ["a"] and row["revoked"] > row["created"]
    assert device("remove", "s3cam", *backend).returncode == 0
    assert json.loads(device("list", "--json", *backend).stdout) == []
    missing = device("revoke", "s3cam", *backend)
    assert missing.returncode == 1 and "no device 's3cam'" in missing.stderr
    assert not (tmp_path / "store").exists()  # nothing went to the local directory
