"""Headless Chromium plays the player page of a distributed edge over WebRTC: the four services on
Kafka + MinIO, an ffmpeg RTSP push into `camflow ingest`; `/watch/cam1` on the edge tries WHEP by
default, the edge answers the page's POST with a 307 to the ingest node (another origin: CORS
preflight, then the redirect followed by Chromium's own ``fetch``), and the page plays the ingest
node's WebRTC. On 127.0.0.1 in this machine's network (every service binds 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.barcode_camera import HEIGHT, WIDTH, BarcodeCamera
from tests.chromium import chromium, devtools
from tests.latency_targets import STREAM, kafka_minio
from tests.whep_player_chromium import until, wait_for_playlist

pytestmark = pytest.mark.integration


async def redirecting(url: str, seconds: float = 30) -> None:
    """Until the edge redirects WHEP of the stream (the ingest node's first live health sample comes
    up to --health-interval after the first segment; a page opened before plays HLS)."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.post(url, data="v=0", allow_redirects=False) as r:
                if r.status == 307:
                    return
                body = await r.text()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the edge did not redirect {url} within {seconds} s: {body[:200]}")
            await asyncio.sleep(0.25)


async def test_chromium_plays_a_distributed_edge_over_webrtc_through_its_redirect(tmp_path: Path) -> None:
    with kafka_minio(tmp_path) as d:
        camera = BarcodeCamera(d.publish_url())
        try:
            wait_for_playlist(d.http(f"/live/{STREAM}/master.m3u8"), seconds=60)
            await redirecting(d.http(f"/whep/{STREAM}"))
            flags = ["--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream"]
            page = d.http(f"/watch/{STREAM}")  # no transport: WebRTC, the default where WHEP is served
            with chromium(tmp_path / "profile", page, tmp_path / "chromium.log", flags) as port:
                async with devtools(port) as tools:
                    first = await until(
                        tools, "plays over WebRTC", lambda s: s["transport"] == "webrtc" and s["playing"], 40
                    )
                    playing = await until(
                        tools, "WebRTC frames", lambda s: s["frames"] > first["frames"] + 30
                    )
        finally:
            camera.stop()
        edge_log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("edge-*.err"))
        ingest_log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("ingest-*.err"))
    assert playing["status"] == "playing over WebRTC (WHEP)" and playing["error"] is None, playing
    assert (playing["width"], playing["height"]) == (WIDTH, HEIGHT), playing
    redirected = [json.loads(line) for line in edge_log.splitlines() if '"whep_redirected"' in line]
    assert redirected and redirected[0]["stream_id"] == STREAM, edge_log[-2000:]
    assert '"whep_session_started"' in ingest_log
