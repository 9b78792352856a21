"""WHEP from the running services, with aiortc as the viewer (on 127.0.0.1: this process's ICE offers
loopback): a camera pulled by `camflow run --pull` (gst-rtsp-server, SPS/PPS only in its SDP), and
an ffmpeg RTSP push with AAC into a distributed `camflow ingest` on Kafka, played from ingest's own
HTTP listener. Each decodes at the camera's size; the AAC arrives as Opus. And the four services on
Kafka + MinIO: a viewer that POSTs to the edge is redirected (307) to the ingest node holding the
stream and plays from it; once that node is killed, the edge answers 404 ``stream_not_live``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from yarl import URL

from ingest.sources.whip.ice import IcePolicy, install
from tests import services
from tests.barcode_camera import HEIGHT, WIDTH, BarcodeCamera
from tests.latency_targets import STREAM, kafka_minio
from tests.process import CAMFLOW, camflow_run, camflow_service, free_port
from tests.test_pull_functional import H264, rtsp_server

pytestmark = pytest.mark.integration
FRAMES = 40
SECRET = "w" * 43


@dataclass
class Played:
    sizes: list[tuple[int, int]]  # of the decoded video frames
    audio: list[int]  # sample rates of the decoded audio frames
    deleted: int  # the DELETE's status
    session: str  # the session's URL (on the node that answered)


async def play(url: str, token: str, frames: int = FRAMES, audio: bool = False) -> Played:
    """The first ``frames`` video frames (and with ``audio`` audio frames) a WHEP viewer of ``url``
    decodes, and the DELETE's status (the POST retried while the stream is not live: 404, 30 s)."""
    install(IcePolicy(("127.0.0.1",)))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    tracks: dict[str, asyncio.Queue[Any]] = {"video": asyncio.Queue(), "audio": asyncio.Queue()}
    pc.on("track", lambda track: tracks[track.kind].put_nowait(track))
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(60):
                async with http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
                    status, answer, location = r.status, await r.text(), r.headers.get("Location", "")
                    session = r.url.join(URL(location))  # from where a redirect sent the offer
                if status != 404:
                    break
                await asyncio.sleep(0.5)
            assert status == 201, (status, answer)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            video = await asyncio.wait_for(tracks["video"].get(), 10)
            sizes = []
            for _ in range(frames):
                frame = await asyncio.wait_for(video.recv(), 10)
                sizes.append((frame.width, frame.height))
            rates = []
            if audio:
                sound = await asyncio.wait_for(tracks["audio"].get(), 10)
                for _ in range(frames):
                    rates.append((await asyncio.wait_for(sound.recv(), 10)).sample_rate)
            async with http.delete(session) as r:
                return Played(sizes, rates, r.status, str(session))
    finally:
        await pc.close()


async def test_a_pulled_camera_plays_over_whep(tmp_path: Path) -> None:
    port = free_port()
    with rtsp_server(tmp_path, port, video=H264):
        extra = ["--ladder", "source", "--pull", f"cam7=rtsp://127.0.0.1:{port}/test"]
        with camflow_run(tmp_path, extra) as cf:
            played = await play(cf.http_url("/whep/cam7"), cf.token("view", "cam7"))
    assert set(played.sizes) == {(320, 240)} and played.deleted == 200


async def test_distributed_ingest_serves_whep_of_an_rtsp_push(tmp_path: Path) -> None:
    services.require("kafka")
    kafka = services.kafka_bootstrap()
    assert kafka
    rtsp, http = free_port(), free_port()
    args = ["ingest", "--host", "127.0.0.1", "--rtsp-port", str(rtsp), "--rtsp-udp-ports", "off"]
    args += ["--http-port", str(http), "--data-dir", str(tmp_path), "--kafka", kafka]
    args += ["--kafka-prefix", f"t{uuid.uuid4().hex[:10]}."]
    env = {"CAMFLOW_SECRET": SECRET}
    full_env = {**os.environ, **env}
    publish, view = await token("publish", full_env), await token("view", full_env)
    with camflow_service(tmp_path, "ingest", args, env):
        camera = BarcodeCamera(f"rtsp://127.0.0.1:{rtsp}/cam?token={publish}", audio=True)
        try:
            played = await play(f"http://127.0.0.1:{http}/whep/cam", view, audio=True)
        finally:
            errors = camera.stop()
    assert set(played.sizes) == {(WIDTH, HEIGHT)} and played.deleted == 200, errors
    assert set(played.audio) == {48_000}, played.audio  # the camera's AAC as Opus
    log = (tmp_path / "ingest.err").read_text()
    assert '"whep_session_ended"' in log and '"reason": "deleted"' in log


async def test_the_edge_redirects_whep_to_the_ingest_node_and_refuses_once_it_died(tmp_path: Path) -> None:
    with kafka_minio(tmp_path) as d:
        camera = BarcodeCamera(d.publish_url())
        try:
            edge_url = d.http(f"/whep/{STREAM}")  # the view token as ?token=, carried by the redirect
            played = await play(edge_url, "", frames=20)
            assert set(played.sizes) == {(WIDTH, HEIGHT)} and played.deleted == 200
            node = URL(played.session)  # the session lives on the ingest node, not on the edge
            assert node.host == "127.0.0.1" and node.port != d.http_port, played
            assert node.path.startswith(f"/whep/{STREAM}/"), played
            ingest_http = node.port
            async with aiohttp.ClientSession() as http:
                async with http.post(edge_url, data="v=0", allow_redirects=False) as r:
                    assert r.status == 307 and r.headers["Access-Control-Allow-Origin"] == "*"
                    assert r.headers["Location"].startswith(
                        f"http://127.0.0.1:{ingest_http}/whep/{STREAM}?token="
                    )
                d.send("ingest", signal.SIGKILL)
                killed = time.monotonic()
                for _ in range(60):  # its samples stop: after WHEP_FRESH (10 s) the edge sends nobody there
                    async with http.post(edge_url, data="v=0", allow_redirects=False) as r:
                        status, body = r.status, await r.text()
                    if status != 307:
                        break
                    await asyncio.sleep(0.5)
                waited = time.monotonic() - killed
        finally:
            camera.stop()
    assert status == 404 and json.loads(body)["error"] == "stream_not_live", (status, body)
    assert waited < 15, waited


async def token(action: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *CAMFLOW, "token", action, "cam", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()
