"""The player page over WebRTC: headless Chromium on `/watch/cam` of `camflow run` (WebRTC by default there)
with ``--webrtc-max-viewers 1`` while an ffmpeg RTSP push plays.

    unshare -rn python -m tests.whep_player_chromium WORKDIR   # prints one JSON line

An aiortc viewer (this process) holds the stream's only WebRTC slot first, so the page's WHEP POST
is refused (503 too_many_viewers) and the player falls back to LL-HLS, saying why; once that viewer
leaves, the page is switched to WebRTC (``camflowPlayer.transport``), then back to HLS. Each step is
sampled over the DevTools protocol. Inside a loopback-only network namespace (``unshare -rn``), as
tests/whep_chromium.py. This module holds no tests (tests/test_whep_chromium.py runs it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ingest.sources.whip.ice import IcePolicy, install
from tests.barcode_camera import BarcodeCamera
from tests.chromium import DevTools, chromium, devtools
from tests.process import camflow_run
from tests.test_pipeline_functional import fetch

PROBE = """JSON.stringify((() => { const c = window.camflow; const v = document.getElementById('video');
  return c ? {transport: c.transport, playing: c.playing, error: c.webrtcError, mode: c.mode,
    status: document.getElementById('status').textContent,
    latency: document.getElementById('latency').textContent,
    button: document.getElementById('transport').textContent,
    frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, height: v.videoHeight}
  : null; })())"""


async def hold_the_slot(url: str, token: str) -> tuple[RTCPeerConnection, str]:
    """An aiortc WHEP viewer of ``url`` that has decoded a frame (POST retried while not live)."""
    install(IcePolicy(("127.0.0.1",)))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue[Any] = asyncio.Queue()
    pc.on("track", tracks.put_nowait)
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        for _ in range(60):
            async with http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
                status, answer, location = r.status, await r.text(), r.headers.get("Location", "")
            if status != 404:
                break
            await asyncio.sleep(0.5)
    if status != 201:
        raise RuntimeError(f"WHEP POST {status}: {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    track = await asyncio.wait_for(tracks.get(), 10)
    await asyncio.wait_for(track.recv(), 10)
    return pc, location


def wait_for_playlist(url: str, seconds: float = 30) -> None:
    """Until the stream's master playlist is served (its first segment is out), so HLS can start."""
    deadline = time.monotonic() + seconds
    while fetch(url)[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no playlist at {url} within {seconds} s")
        time.sleep(0.25)


async def until(tools: DevTools, what: str, check: Any, seconds: float = 30) -> dict[str, Any]:
    """Samples of the page every 250 ms until ``check(sample)`` (at most ``seconds``); the last one."""
    sample: dict[str, Any] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raw = await tools.evaluate(PROBE)
        sample = json.loads(raw) if raw and raw != "null" else {}
        if sample and check(sample):
            return sample
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{what}: not within {seconds} s; last {sample}")


async def run(workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with camflow_run(workdir, ["--ladder", "source", "--webrtc-max-viewers", "1"]) as cf:
        publish, view = cf.token("publish", "cam"), cf.token("view", "cam")
        camera = BarcodeCamera(cf.rtsp_url("cam", publish))
        try:
            pc, location = await hold_the_slot(cf.http_url("/whep/cam"), view)
            await asyncio.to_thread(wait_for_playlist, cf.http_url(f"/live/cam/master.m3u8?token={view}"))
            url = cf.http_url(f"/watch/cam?token={view}")  # no transport: WebRTC, the default here
            # Without media permission Chromium hides its host addresses behind mDNS names, which
            # nothing resolves in a loopback-only namespace; the fake UI grants it (as whip_chromium).
            flags = ["--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream"]
            with chromium(workdir / "profile", url, workdir / "chromium.log", flags) as port:
                async with devtools(port) as tools:
                    result["fallback"] = await until(
                        tools,
                        "fell back to LL-HLS",
                        lambda s: s["transport"] == "hls" and s["playing"] and "LL-HLS" in s["latency"],
                    )
                    async with aiohttp.ClientSession() as http, http.delete(cf.http_url(location)) as r:
                        result["released"] = r.status
                    await pc.close()
                    await tools.evaluate("window.camflowPlayer.transport('webrtc')")
                    first = await until(
                        tools, "plays over WebRTC", lambda s: s["transport"] == "webrtc" and s["playing"]
                    )
                    result["webrtc"] = await until(
                        tools,
                        "WebRTC frames and a latency",
                        lambda s: s["frames"] > first["frames"] + 30 and " s " in s["latency"],
                    )
                    await tools.evaluate("window.camflowPlayer.transport('hls')")
                    result["hls"] = await until(
                        tools, "back on HLS", lambda s: s["transport"] == "hls" and s["playing"]
                    )
        finally:
            result["camera_errors"] = camera.stop()[-2000:]
        deadline = time.monotonic() + 10  # the player's DELETE (sent as it switched to HLS) is logged
        while cf.log.count('"whep_session_ended"') < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        result["log"] = [line for line in cf.log.splitlines() if '"whep_' in line]
    return result


def main() -> None:
    workdir = Path(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    try:
        result = asyncio.run(run(workdir))
    except Exception as exc:
        result = {"error": repr(exc)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
