"""End to end over WHIP: FFmpeg's own WHIP muxer (PyAV, in a subprocess) publishes H.264 + Opus to
`camflow run` on 127.0.0.1; the HLS at the edge (H.264 as published, Opus as AAC) plays in ffprobe
with the published duration.

FFmpeg 8.1's muxer offers ``a=setup:passive`` and a P-224 certificate: this passing is the DTLS
interop fix of ingest/sources/whip/dtls.py (stock publisher, no certificate given to it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from camflow.bus.kafka import KafkaBus
from camflow.events import TOPIC_RAW, TOPIC_STREAMS, RawSegment, StreamState, StreamStateKind, decode
from tests import services
from tests.process import CAMFLOW, Camflow, camflow_run, free_port, stop_process
from tests.test_health_functional import Metrics, scrape, value
from tests.test_pipeline_functional import backend_args, fetch, ffprobe, wait_for_ended

pytestmark = pytest.mark.integration
SECONDS = 10


def whip_publish(url: str, token: str, seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.whip_publish", url, token, str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )


def whip_metrics(metrics: Metrics) -> tuple[float, float, float]:
    """(sessions, frames, bytes) of protocol ``whip`` in a /metrics scrape."""
    return (
        value(metrics, "camflow_ingest_sessions", protocol="whip"),
        value(metrics, "camflow_ingest_frames_total", protocol="whip"),
        value(metrics, "camflow_ingest_bytes_total", protocol="whip"),
    )


def scrape_during_publish(cf: Camflow, proc: subprocess.Popen[bytes]) -> list[tuple[float, float, float]]:
    """Scrapes of the edge's /metrics while ``proc`` publishes: until two show the session live with
    frames and bytes that moved between them (or the publisher exits, or 30 s)."""
    seen: list[tuple[float, float, float]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        now = whip_metrics(scrape(cf.metrics_url()))
        if now[0] == 1 and now[1] > 0:
            seen.append(now)
            if len(seen) >= 2 and seen[-1][1] > seen[0][1] and seen[-1][2] > seen[0][2]:
                break
        time.sleep(0.5)
    return seen


@pytest.mark.parametrize("backend", ["embedded", "kafka+minio"])
def test_ffmpeg_whip_publish_plays_as_hls(backend: str, tmp_path: Path) -> None:
    extra, env = backend_args(backend)
    extra += ["--offline-grace", "1", "--webrtc-ports", "42100-42199"]
    with camflow_run(tmp_path, extra, env) as cf:
        publish, view = cf.token("publish", "wcam"), cf.token("view", "wcam")
        args = [sys.executable, "-m", "tests.whip_publish", cf.http_url("/whip/wcam"), publish, str(SECONDS)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            during = scrape_during_publish(cf, proc)
            _, err = proc.communicate(timeout=SECONDS + 60)
        finally:
            stop_process(proc)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        # The session gauge (protocol="whip") while it published; its frame and byte counters moved.
        assert len(during) >= 2 and during[-1][1] > during[0][1] and during[-1][2] > during[0][2], during
        master_url = cf.http_url(f"/live/wcam/master.m3u8?token={view}")
        master = wait_for_ended(master_url, variants=1)
        # The camera's own H.264 (x264 Baseline) reaches the playlist: segmented and stream-copied,
        # never re-encoded (the ladder's encodes are Main profile).
        assert 'CODECS="avc1.42' in master and "RESOLUTION=320x240" in master, master
        probe = ffprobe(master_url)
        streams = probe["streams"]
        assert isinstance(streams, list) and sorted(s["codec_name"] for s in streams) == ["aac", "h264"], (
            probe
        )
        fmt = probe["format"]
        assert isinstance(fmt, dict)
        assert SECONDS - 1.0 <= float(fmt["duration"]) <= SECONDS + 0.5, probe
        log = cf.log
        assert '"whip_connected"' in log and '"reason": "deleted"' in log, log[-3000:]
        assert "TYPE=AUDIO" in master and "mp4a.40.2" in master, master  # Opus became AAC
        assert '"audio_frames": 0' not in log and '"opus_undecodable": 0' in log, log[-3000:]
        status, _ = fetch(cf.http_url("/healthz"))
        assert status == 200
        assert whip_metrics(scrape(cf.metrics_url()))[0] == 0  # the session ended


async def test_distributed_camflow_ingest_serves_whip_on_its_http_port(tmp_path: Path) -> None:
    """`camflow ingest --kafka --http-port`: WHIP on its own listener; raw segments and states on Kafka."""
    kafka = services.require("kafka")
    prefix = f"w{uuid.uuid4().hex[:10]}."
    env = {**os.environ, "CAMFLOW_SECRET": "whip-test-secret-0123456789abcdef"}
    http_port = free_port()
    args = [*CAMFLOW, "ingest", "--host", "127.0.0.1", "--kafka", kafka, "--kafka-prefix", prefix]
    args += ["--rtsp-port", str(free_port()), "--rtsp-udp-ports", "off", "--http-port", str(http_port)]
    token = subprocess.run(
        [*CAMFLOW, "token", "publish", "dcam"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    bus = KafkaBus(kafka, client_id="whip-test", prefix=prefix)
    await bus.start()
    err = tmp_path / "ingest.err"
    with err.open("wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert b"running" in ready, err.read_text()[-3000:]
        follower = await bus.follow([TOPIC_RAW, TOPIC_STREAMS])
        await follower.get(timeout=1.0)  # positions the reader at the end now, before the publish
        publishing = asyncio.create_task(
            asyncio.to_thread(whip_publish, f"http://127.0.0.1:{http_port}/whip/dcam", token, 6)
        )
        raw: list[RawSegment] = []
        states: list[StreamState] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and StreamStateKind.OFFLINE not in [s.state for s in states]:
            message = await follower.get(timeout=1.0)
            if message is None:
                continue
            event = decode(message.value)
            if isinstance(event, RawSegment) and event.stream == "dcam":
                raw.append(event)
            elif isinstance(event, StreamState) and event.stream == "dcam":
                states.append(event)
        done = await publishing
        assert done.returncode == 0, done.stderr[-3000:]
        assert [s.state for s in states] == [StreamStateKind.LIVE, StreamStateKind.OFFLINE], states
        assert states[1].reason == "deleted" and states[1].last_seq == len(raw) - 1
        assert len(raw) >= 2 and all(r.codecs.startswith("avc1.42") for r in raw), raw
        assert 5.0 <= sum(r.duration for r in raw) / raw[0].timescale <= 6.5
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        await bus.close()


def test_publisher_that_vanishes_ends_the_session_within_the_timeout(tmp_path: Path) -> None:
    """SIGKILL the publisher mid-stream (no DELETE, no BYE): the session ends after --webrtc-timeout,
    its segments so far play, and the playlist ends (the stream went offline)."""
    extra = ["--offline-grace", "1", "--webrtc-timeout", "3"]
    with camflow_run(tmp_path, extra) as cf:
        publish, view = cf.token("publish", "gone"), cf.token("view", "gone")
        args = [sys.executable, "-m", "tests.whip_publish", cf.http_url("/whip/gone"), publish, "60"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while '"seq": 1' not in cf.log and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)  # until two segments are cut
        finally:
            proc.kill()
            proc.wait(10)
        killed = time.monotonic()
        master_url = cf.http_url(f"/live/gone/master.m3u8?token={view}")
        wait_for_ended(master_url, variants=1)
        log = cf.log
        assert '"reason": "media_timeout"' in log or '"reason": "ice_failed"' in log, log[-3000:]
        assert time.monotonic() - killed < 30
        probe = ffprobe(master_url)
        fmt = probe["format"]
        assert isinstance(fmt, dict) and float(fmt["duration"]) >= 2.0, probe
