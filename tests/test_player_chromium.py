"""Headless Chromium plays /watch/{stream} (hls.js served by the edge) during a live push.

ffmpeg pushes a 30 s clip with -re into `camflow run`; Chromium opens the player page; over
the DevTools protocol (aiohttp websocket) the test reads the video element and hls.js's error
list every second. Playback must advance more than 10 s within a bounded time, with no
hls.js error (no stall), and the page must show the stream's health line and the latency to
the live edge. A screenshot is saved (tmp dir and .run/artifacts/player.png).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import advanced, chromium, devtools, sample, unexpected_errors
from tests.process import camflow_run, make_clip, stop_process

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CAMFLOW_ARTIFACTS", REPO / ".run" / "artifacts"))
PUSH = ["ffmpeg", "-loglevel", "warning", "-re", "-i"]
PROBE = """(() => { try { return JSON.stringify({
  t: document.getElementById('video').currentTime,
  paused: document.getElementById('video').paused,
  cf: window.camflow ? {errors: window.camflow.errors, stalls: window.camflow.stalls,
                        fatal: window.camflow.fatal, samples: window.camflow.samples,
                        latency: window.camflow.latency, waits: window.camflow.waits,
                        liveSeeks: window.camflow.liveSeeks} : null,
  health: document.getElementById('health').textContent,
  latency: document.getElementById('latency').textContent,
  status: document.getElementById('status').textContent,
}); } catch (e) { return null; } })()"""  # null until the page has loaded


def wait_for_master(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200 and "#EXT-X-STREAM-INF" in resp.read().decode():
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no master playlist at {url} within {timeout} s")


async def test_chromium_plays_the_watch_page_during_a_live_push(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip30.mp4", 30, size="640x360", rate=25, gop=50)
    with camflow_run(tmp_path, ["--ladder", "source"]) as cf:
        publish, view = cf.token("publish", "cam1"), cf.token("view", "cam1")
        push = subprocess.Popen(
            [
                *PUSH,
                str(clip),
                "-c",
                "copy",
                "-f",
                "rtsp",
                "-rtsp_transport",
                "tcp",
                cf.rtsp_url("cam1", publish),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_master(cf.http_url(f"/live/cam1/master.m3u8?token={view}"))
            page = cf.http_url(f"/watch/cam1?token={view}&transport=hls")
            with chromium(tmp_path / "profile", page, tmp_path / "chromium.log") as port:
                samples = await watch(port, tmp_path / "player.png")
                listing = await operator_page(
                    port, cf.http_url(f"/?token={cf.token('admin', '*')}"), tmp_path
                )
        finally:
            stop_process(push, timeout=10)
    first = next(s for s in samples if s["t"] > 0)
    last = samples[-1]
    print("\nfirst", first, "\nlast", last)
    assert last["t"] - first["t"] > 10.0, samples
    # No stall and no error after the join (its first 3 s of playback), and no more than a live join
    # may have (one jump over a hole, one wait for a part: tests.chromium.unexpected_errors).
    joined = next(s for s in samples if s["t"] >= 3.0)["cf"]
    assert unexpected_errors(last["cf"]["errors"], joined["errors"]) == [], (first, last)
    assert joined["stalls"] <= 1 and last["cf"]["stalls"] == joined["stalls"], (first, last)
    assert last["health"].startswith("health: live · 640x360"), last["health"]
    assert " · 25.0 fps · " in last["health"] or " · 25 fps · " in last["health"], last["health"]
    assert re.search(r" · \d+ media fix(es)?$", last["health"]), last["health"]  # SPS/PPS put in-band
    assert "behind the live edge" in last["latency"], last["latency"]
    assert (tmp_path / "player.png").stat().st_size > 10_000
    # The operator's list shows the live stream with the transcoder's latest thumbnail.
    assert listing["streams"] == ["cam1"], listing
    assert listing["thumbs"] and listing["thumbs"][0] > 0, listing


async def operator_page(port: int, url: str, tmp_path: Path) -> dict[str, Any]:
    """Open ``url`` in the same browser tab; the stream cards and their thumbnails' pixel widths."""
    async with devtools(port) as tools:
        await tools.call("Page.navigate", url=url)
        probe = (
            "JSON.stringify({streams: [...document.querySelectorAll('.card strong')]"
            ".map(e => e.textContent), thumbs: [...document.images]"
            ".map(i => i.complete ? i.naturalWidth : -1)})"
        )
        listing: dict[str, Any] = {}
        for _ in range(40):  # bounded: up to 20 s for the page and a thumbnail
            await asyncio.sleep(0.5)
            raw = await tools.evaluate(probe)
            listing = json.loads(raw) if raw else {}
            if listing.get("thumbs") and listing["thumbs"][0] > 0:
                break
            if listing.get("streams") is not None and not listing.get("thumbs"):
                await tools.call("Page.reload")
        shot = await tools.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        (tmp_path / "streams.png").write_bytes(data)
        (ARTIFACTS / "streams.png").write_bytes(data)
    return listing


async def watch(port: int, screenshot: Path) -> list[dict[str, Any]]:
    """Poll the page once a second (at most 40 s) until playback advanced 12 s; then screenshot."""
    async with devtools(port) as tools:
        samples = await sample(tools, PROBE, 40, lambda s: advanced(s) > 12.0 and "live" in s[-1]["health"])
        shot = await tools.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        screenshot.write_bytes(data)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "player.png").write_bytes(data)
    return samples
