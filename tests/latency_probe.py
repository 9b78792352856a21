"""Live latency as a viewer sees it: headless Chromium plays a stream with camflow's player (hls.js in
low-latency mode) and, every 250 ms while the video plays, samples the wall clock minus the program
date-time of the frame on screen (``Date.now() - hls.playingDate``). Used by tests/test_latency_chromium.py
and bench/bench_latency.py (one measurement, two callers). This module holds no tests.

The camera is ``ffmpeg`` pushing RTSP (TCP): testsrc2 at 30 fps, 1280x720 unless told (``size``), with a
2 s GOP (libx264 ``-tune zerolatency``) and a 440 Hz sine as AAC, read with ``-re`` from lavfi, running
until stopped. The camera's RTCP sender reports put its wall clock on the media, so a camera that cannot
encode in real time (a starved machine) shows as latency: tests push a smaller picture than the bench.

A camflow target is measured on its own page (``/watch/{stream}?token=``); a peer's LL-HLS (mediamtx)
by opening its HTTP origin and putting the same page (hls.min.js and edge/static/player.js, given
the playlist URL) into the tab, so every target plays with the same player and settings.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.pages import default_static_dir, hlsjs_path
from tests.chromium import DevTools, chromium, devtools
from tests.process import stop_process

TICK_S = 0.25  # one sample every 250 ms
WARMUP_S = 5.0  # playback before sampling starts (the start-up seek and catch-up settle)
START_TIMEOUT_S = 60.0  # from opening the page to the first frame playing
FPS, GOP = 30, 60
SIZE = "1280x720"  # the bench's camera; tests/test_latency_chromium.py pushes 640x360 (see there)

PROBE = """(() => { const c = window.camflow; const v = document.getElementById('video');
  if (!c || !c.hls || !v) return null; const d = c.hls.playingDate;
  return JSON.stringify({now: Date.now(), pdt: d ? d.getTime() : null,
    playing: c.playing && !v.paused && v.readyState >= 3, t: v.currentTime, waits: c.waits,
    seeks: c.liveSeeks.length, errors: c.errors.length, fatal: c.fatal, target: c.hls.targetLatency,
    rate: v.playbackRate,
    ahead: v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0,
    last: c.errors.length ? c.errors[c.errors.length - 1].details : null}); })()"""


def push_args(url: str, size: str = SIZE) -> list[str]:
    """The camera: the same ffmpeg RTSP push for every target (runs until stopped)."""
    return [
        *("ffmpeg", "-loglevel", "error", "-nostdin"),
        *("-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}"),
        *("-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
        *("-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"),
        *("-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0"),
        *("-c:a", "aac", "-b:a", "64k"),
        *("-f", "rtsp", "-rtsp_transport", "tcp", url),
    ]


@contextmanager
def pushing(url: str, log: Path, size: str = SIZE) -> Iterator[subprocess.Popen[bytes]]:
    """ffmpeg pushing to ``url`` for the duration of the block; stopped by PID."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            push_args(url, size), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        yield proc
    finally:
        stop_process(proc, timeout=10)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latency:
    """What one viewer saw: ``samples`` (seconds behind the camera clock, every TICK_S while playing),
    ``stalls`` (the video waited for data after it had started), ``seeks`` (the player's jumps to the
    live edge), ``startup`` (seconds from opening the page to the first frame)."""

    target: str
    samples: list[float] = field(default_factory=list)
    stalls: int = 0
    seeks: int = 0
    errors: int = 0
    ticks: int = 0  # sampling ticks (playing or not)
    startup: float = 0.0
    hold: float | None = None  # hls.js's target latency (PART-HOLD-BACK, or 3 target durations)
    ahead: list[float] = field(default_factory=list)  # seconds buffered ahead of the playhead, per tick
    last_error: str | None = None  # the last hls.js error's details

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)

    @property
    def playing_share(self) -> float:
        return len(self.samples) / self.ticks if self.ticks else 0.0

    def summary(self) -> str:
        if not self.samples:
            return f"{self.target}: no sample (never played)"
        hold = "-" if self.hold is None else f"{self.hold:.2f}"
        return (
            f"{self.target}: p50 {self.p50:.2f} s, p95 {self.p95:.2f} s over {len(self.samples)} samples "
            f"({self.playing_share:.0%} of ticks playing), {self.stalls} stalls, "
            f"{self.seeks} live-edge seeks, {self.errors} hls.js errors ({self.last_error or '-'}), "
            f"buffered ahead p50 {percentile(self.ahead, 50):.1f} s min {min(self.ahead):.1f} s, "
            f"first frame after {self.startup:.1f} s, hls.js target latency {hold} s"
        )


async def measure(
    url: str,
    seconds: float,
    work: Path,
    *,
    target: str,
    playlist: bool = False,
    after: Callable[[DevTools], Awaitable[None]] | None = None,
) -> Latency:
    """Open ``url`` in a fresh headless Chromium and measure for ``seconds`` after WARMUP_S of playback.

    ``url`` is camflow's player page, or with ``playlist=True`` a playlist on any origin (a peer's):
    the player is then put into a page of that origin. ``after`` runs on the same tab once the
    samples are taken. Raises RuntimeError when nothing plays within START_TIMEOUT_S.
    """
    parts = urlsplit(url)
    start = f"{parts.scheme}://{parts.netloc}/" if playlist else url
    work.mkdir(parents=True, exist_ok=True)
    with chromium(work / "profile", start, work / "chromium.log") as port:
        async with devtools(port) as tools:
            opened = time.monotonic()
            if playlist:
                await _put_player(tools, url)
            result = await _sample(tools, seconds, opened, Latency(target))
            if after is not None:
                await after(tools)
            return result


async def _put_player(tools: DevTools, url: str) -> None:
    """The watch page's DOM, hls.js and player.js in the current tab (its origin serves ``url``, so no
    cross-origin request): the document is replaced over DevTools, the scripts evaluated in it."""
    for _ in range(100):  # the origin's page (a 404 is fine) has loaded: at most 10 s
        if await tools.evaluate("document.readyState") == "complete":
            break
        await asyncio.sleep(0.1)
    config = html.escape(json.dumps({"stream": "peer", "src": url, "health": False}), quote=True)
    body = (
        f'<main id=player data-config="{config}"><video id=video muted autoplay playsinline></video>'
        "<p id=health></p><p id=latency></p><p id=status></p></main>"
    )
    tree = await tools.call("Page.getFrameTree")
    page = f"<!doctype html><html><head><meta charset=utf-8></head><body>{body}</body></html>"
    await tools.call("Page.setDocumentContent", frameId=tree["frameTree"]["frame"]["id"], html=page)
    for _ in range(50):  # the new document is in place (a navigation still landing can replace it): 5 s
        if await tools.evaluate("document.getElementById('player') !== null"):
            break
        await asyncio.sleep(0.1)
        await tools.call("Page.setDocumentContent", frameId=tree["frameTree"]["frame"]["id"], html=page)
    for script in (hlsjs_path(), default_static_dir() / "player.js"):
        result = await tools.call("Runtime.evaluate", expression=script.read_text(), returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{script.name} failed in the page: {result['exceptionDetails']}")


async def _sample(tools: DevTools, seconds: float, opened: float, result: Latency) -> Latency:
    """Wait for the first frame, let WARMUP_S pass, then sample every TICK_S for ``seconds``."""
    last: dict[str, Any] | None = None
    while True:  # bounded by START_TIMEOUT_S
        raw = await tools.evaluate(PROBE)
        last = json.loads(raw) if raw else last
        if last and last["playing"]:
            break
        if time.monotonic() - opened > START_TIMEOUT_S:
            hlsjs = await tools.evaluate("typeof window.Hls")  # 'undefined': hls.js did not load
            raise RuntimeError(
                f"{result.target}: nothing played within {START_TIMEOUT_S:.0f} s (typeof Hls: {hlsjs}); "
                f"last: {last}"
            )
        await asyncio.sleep(TICK_S)
    result.startup = time.monotonic() - opened
    await asyncio.sleep(WARMUP_S)
    first: dict[str, Any] | None = None
    began = time.monotonic()
    for tick in range(int(seconds / TICK_S)):
        await asyncio.sleep(max(0.0, began + tick * TICK_S - time.monotonic()))
        raw = await tools.evaluate(PROBE)
        if raw is None:
            continue
        last = json.loads(raw)
        first = first or last
        result.ticks += 1
        result.ahead.append(last["ahead"])
        if last["playing"] and last["pdt"] is not None:
            result.samples.append((last["now"] - last["pdt"]) / 1000)
    if first is not None and last is not None:
        result.stalls = last["waits"] - first["waits"]
        result.seeks = last["seeks"] - first["seeks"]
        result.errors = last["errors"] - first["errors"]
        result.hold = last["target"]
        result.last_error = last["last"]
    return result


async def returns_to_the_live_edge(tools: DevTools, within: float = 10.0) -> dict[str, Any]:
    """Put the playhead more than BEHIND_FACTOR (3) x the target latency behind the live edge (as a
    long stall or a tab in the background would) and wait until the player has jumped back: returns
    {"behind": latency before, "after": latency after, "seeks": the player's jumps}. Raises
    AssertionError when it has not come back within ``within`` seconds."""
    moved = await tools.evaluate(
        """(() => { const h = window.camflow.hls; const v = document.getElementById('video');
        const back = 3 * h.targetLatency + 2 - h.latency; if (back > 0) v.currentTime -= back;
        return h.targetLatency; })()"""
    )
    state: dict[str, Any] = {}
    for _ in range(int(within / TICK_S)):  # bounded
        await asyncio.sleep(TICK_S)
        raw = await tools.evaluate(
            "JSON.stringify({latency: window.camflow.hls.latency, seeks: window.camflow.liveSeeks})"
        )
        state = json.loads(raw)
        jumps = [s for s in state["seeks"] if s["reason"] == "behind"]
        if jumps and state["latency"] < 2 * moved:
            return {"behind": jumps[-1]["to"] - jumps[-1]["from"], "after": state["latency"], **state}
    raise AssertionError(f"the player did not return to the live edge within {within:g} s: {state}")


async def returns_after_a_stall(tools: DevTools, within: float = 40.0) -> dict[str, Any]:
    """Take the tab offline (DevTools network emulation) until the video has played what it had
    buffered, for half the target latency and 4 s (at least 3 s) more, then online again, and wait
    until the player has jumped to the live edge and plays:
    returns {"waited": seconds offline, "seeks": the player's jumps, "latency": hls.latency after}.
    Raises AssertionError when any step takes more than ``within`` seconds."""
    probe = """(() => { const c = window.camflow; const v = document.getElementById('video');
      return JSON.stringify({seeks: c.liveSeeks, latency: c.hls.latency, target: c.hls.targetLatency,
        playing: !v.paused && v.readyState >= 3,
        ahead: v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0}); })()"""
    before = json.loads(await tools.evaluate(probe))
    await tools.call("Network.enable")
    offline = time.monotonic()
    conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    await tools.call("Network.emulateNetworkConditions", offline=True, **conditions)
    try:
        state = before
        for _ in range(int(within / TICK_S)):  # until the buffer ran dry and the video waits
            await asyncio.sleep(TICK_S)
            state = json.loads(await tools.evaluate(probe))
            if not state["playing"] and state["ahead"] < 0.5:
                break
        else:
            raise AssertionError(f"the video never ran out of data while offline for {within:g} s: {state}")
        # Stalled long enough to fall more than the player's slack (half the target) behind.
        await asyncio.sleep(max(3.0, state["target"] / 2 + 4))
    finally:
        await tools.call("Network.emulateNetworkConditions", offline=False, **conditions)
    waited = time.monotonic() - offline
    for _ in range(int(within / TICK_S)):
        await asyncio.sleep(TICK_S)
        state = json.loads(await tools.evaluate(probe))
        jumps = [s for s in state["seeks"][len(before["seeks"]) :] if s["reason"] == "stall"]
        if jumps and state["playing"] and state["latency"] < 2 * state["target"]:
            return {"waited": waited, "seeks": jumps, "latency": state["latency"]}
    raise AssertionError(f"the player did not jump back to the live edge after the stall: {state}")
