"""Headless Chromium drives the player page's timeline (edge/static/timeline.js) over a real recording.

ffmpeg pushes a 30 s clip into `camflow run`, then, after a pause, a second one that stays live
while the test runs: the recording has two ranges and a gap. Chromium opens /watch/cam1; over
the DevTools protocol the test moves and clicks a real mouse and presses real keys:

- the timeline (zoomed to 10 min, then in with the mouse wheel; 7 d at the end) shows both ranges
  and the gap between them;
- hovering over the first range shows that moment's thumbnail (/api/streams/cam1/thumb?at=);
- a click there plays the recording from that moment (hls.js's program date-time near it);
- + + sets 4x, and the video then advances about 4 s a second; the left arrow seeks back 5 s;
  space pauses and plays;
- L returns to live (a few seconds behind the live edge);
- a shift-drag selects a clip whose download link answers 200 video/mp4 of about that length;
- events: drawn when the edge has the events API (one is posted); when it answers 404, none are
  drawn, then two are given to the page's fetch in the API's documented shape (a moment, and a
  locked span whose marker, clicked, plays from its start).

Screenshots are saved in the test's tmp folder (paths printed) and in .run/artifacts/timeline-*.png.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import DevTools, chromium, devtools
from tests.process import Camflow, camflow_run, ffmpeg_push, make_clip, stop_process
from tests.test_player_chromium import PUSH, wait_for_master

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CAMFLOW_ARTIFACTS", REPO / ".run" / "artifacts"))
SHIFT = 8  # CDP modifier bit
PROBE = """(() => { try { const v = document.getElementById('video'); const c = window.camflow;
  const tl = window.camflowTimeline; const h = c.hls;
  return JSON.stringify({t: v.currentTime, paused: v.paused, rate: v.playbackRate, mode: c.mode,
    speed: c.speed, playing: c.playing, position: window.camflowPlayer.position(), now: Date.now(),
    latency: h ? h.latency : null, errors: c.errors, fatal: c.fatal, loads: tl.loads,
    ranges: [...document.querySelectorAll('#track .range')].map(r => [Date.parse(r.dataset.start),
      Date.parse(r.dataset.end)]),
    events: document.querySelectorAll('#track .event').length, eventsStatus: tl.eventsStatus,
    span: tl.view.span,
    thumbs: tl.thumbs, preview: !document.getElementById('preview').hidden,
    previewImg: document.querySelector('#preview img').naturalWidth,
    summary: document.getElementById('summary').textContent,
    clip: document.getElementById('clip-link').hidden ? null
      : document.getElementById('clip-link').getAttribute('href'),
    selection: tl.selection});
} catch (e) { return null; } })()"""
GRID = """(() => { try { const imgs = [...document.querySelectorAll('.card img')];
  return JSON.stringify({streams: [...document.querySelectorAll('.card strong')].map(e => e.textContent),
    widths: imgs.map(i => i.complete ? i.naturalWidth : -1),
    reloaded: imgs.length > 0 && imgs.every(i => i.src.includes('&r=') && i.naturalWidth > 0),
    columns: getComputedStyle(document.querySelector('.streams')).display});
} catch (e) { return null; } })()"""
STUB_EVENTS = """(() => { const real = window.fetch;
  window.fetch = (url, opts) => String(url).includes('/events?')
  ? Promise.resolve(new Response(JSON.stringify({stream: 'cam1', events: [
      {id: 'e1', type: 'motion', label: 'person', time: new Date(%(a)d).toISOString(), start: null, end: null,
       lock: false, created: new Date().toISOString(), by: 'test'},
      {id: 'e2', type: 'alarm', label: 'door', time: null, start: new Date(%(b)d).toISOString(),
       end: new Date(%(c)d).toISOString(), lock: true, created: new Date().toISOString(), by: 'test'}]}),
    {status: 200, headers: {'Content-Type': 'application/json'}}))
  : real(url, opts); return true; })()"""
KEYS = {
    "+": {"key": "+", "code": "Equal", "windowsVirtualKeyCode": 187, "text": "+"},
    " ": {"key": " ", "code": "Space", "windowsVirtualKeyCode": 32, "text": " "},
    "L": {"key": "L", "code": "KeyL", "windowsVirtualKeyCode": 76, "text": "L"},
    "ArrowLeft": {"key": "ArrowLeft", "code": "ArrowLeft", "windowsVirtualKeyCode": 37},
}


class Page:
    def __init__(self, tools: DevTools, tmp: Path) -> None:
        self.tools = tools
        self.tmp = tmp
        self.shots: list[Path] = []

    async def probe(self, expression: str = PROBE) -> dict[str, Any]:
        raw = await self.tools.evaluate(expression)
        return json.loads(raw) if raw else {}

    async def until(
        self, what: str, test: Any, seconds: float, every: float = 0.25, probe: str = PROBE
    ) -> dict[str, Any]:
        """Probe every ``every`` s until ``test(sample)`` holds, at most ``seconds``; the last sample."""
        sample: dict[str, Any] = {}
        for _ in range(int(seconds / every)):
            sample = await self.probe(probe)
            if sample and test(sample):
                return sample
            await asyncio.sleep(every)
        raise AssertionError(f"{what}: not within {seconds} s; last sample {sample}")

    async def x_of(self, ms: float) -> tuple[float, float]:
        raw = await self.tools.evaluate(
            f"JSON.stringify([window.camflowTimeline.xOf({ms}), (r => r.top + r.height / 2)"
            "(document.getElementById('track').getBoundingClientRect())])"
        )
        x, y = json.loads(raw)
        return float(x), float(y)

    async def mouse(self, kind: str, ms: float, modifiers: int = 0) -> None:
        x, y = await self.x_of(ms)
        params: dict[str, Any] = {"type": kind, "x": x, "y": y, "modifiers": modifiers}
        params.update({"button": "none"} if kind == "mouseMoved" else {"button": "left", "clickCount": 1})
        await self.tools.call("Input.dispatchMouseEvent", **params)

    async def drag(self, a: float, b: float, modifiers: int = 0) -> None:
        await self.mouse("mousePressed", a, modifiers)
        for i in range(1, 6):
            x, y = await self.x_of(a + (b - a) * i / 5)
            await self.tools.call(
                "Input.dispatchMouseEvent",
                type="mouseMoved",
                x=x,
                y=y,
                button="left",
                buttons=1,
                modifiers=modifiers,
            )
        await self.mouse("mouseReleased", b, modifiers)

    async def key(self, name: str) -> None:
        spec = KEYS[name]
        await self.tools.call("Input.dispatchKeyEvent", type="keyDown", **spec)
        await self.tools.call(
            "Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in spec.items() if k != "text"}
        )

    async def screenshot(self, name: str) -> Path:
        shot = await self.tools.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        path = self.tmp / name
        path.write_bytes(data)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"timeline-{name}").write_bytes(data)
        self.shots.append(path)
        return path


def post_event(cf: Camflow, at: float) -> int:
    """POST one event (the lead's events API); its status, 404/405 when this edge has no such route."""
    body = json.dumps({"type": "motion", "label": "person at the door", "time": iso(at)}).encode()
    url = cf.http_url(f"/api/streams/cam1/events?token={cf.token('admin', '*')}")
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def iso(unix_seconds: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix_seconds))
        + f".{int(unix_seconds % 1 * 1000):03d}Z"
    )


def time_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def download(url: str, out: Path) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=60) as resp:
        out.write_bytes(resp.read())
        return int(resp.status), str(resp.headers["Content-Type"])


def probe_duration(path: Path) -> float:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return float(result.stdout.strip())


async def test_the_timeline_shows_gaps_previews_seeks_speeds_goes_live_and_exports(tmp_path: Path) -> None:
    first = make_clip(tmp_path / "first.mp4", 30, size="640x360", rate=25, gop=50)
    second = make_clip(tmp_path / "second.mp4", 120, size="640x360", rate=25, gop=50)
    with camflow_run(tmp_path, ["--ladder", "source"]) as cf:
        publish, view = cf.token("publish", "cam1"), cf.token("view", "cam1")
        pushed = ffmpeg_push(first, cf.rtsp_url("cam1", publish))
        assert pushed.returncode == 0, pushed.stderr
        time.sleep(6.0)  # the gap
        push = subprocess.Popen(
            [
                *PUSH,
                str(second),
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
            with chromium(
                tmp_path / "profile",
                cf.http_url(f"/watch/cam1?token={view}&transport=hls"),
                tmp_path / "chromium.log",
            ) as port:
                async with devtools(port) as tools:
                    await drive(Page(tools, tmp_path), cf, tmp_path)
        finally:
            stop_process(push, timeout=10)


async def drive(page: Page, cf: Camflow, tmp: Path) -> None:
    await page.until("live playback", lambda s: s["playing"] and s["mode"] == "live" and s["t"] > 1, 40)
    await page.tools.evaluate("document.querySelector('[data-span=\"600\"]').click()")
    shown = await page.until("two ranges on the timeline", lambda s: len(s["ranges"]) == 2, 30)
    (a0, a1), (b0, _) = shown["ranges"]
    print("\nranges", shown["ranges"], "\nsummary", shown["summary"])
    assert 26_000 < a1 - a0 < 34_000, shown["ranges"]  # the first push: 30 s
    assert b0 - a1 > 3_000, shown["ranges"]  # the gap: the pause between the pushes
    assert "2 ranges, 1 gap" in shown["summary"], shown["summary"]
    event_status = post_event(cf, (a0 + 10_000) / 1000)
    await page.screenshot("ranges.png")
    # The mouse wheel zooms in around the pointer (the gap): both ranges still shown, wider.
    for _ in range(7):
        x, y = await page.x_of((a1 + b0) / 2)
        await page.tools.call("Input.dispatchMouseEvent", type="mouseWheel", x=x, y=y, deltaX=0, deltaY=-100)
        await asyncio.sleep(0.1)
    zoomed = await page.until("zoomed in", lambda s: s["span"] < 150_000 and len(s["ranges"]) == 2, 10)
    print("wheel: span", zoomed["span"] / 1000, "s, ranges", zoomed["ranges"])
    assert zoomed["ranges"][0] == [a0, a1], zoomed["ranges"]
    await page.screenshot("zoomed.png")

    # Hover over the first range: its thumbnail.
    await page.mouse("mouseMoved", a0 + 6_000)
    hover = await page.until("a thumbnail on hover", lambda s: s["preview"] and s["previewImg"] > 0, 15)
    assert hover["thumbs"]["shown"] >= 1 and hover["thumbs"]["failed"] == 0, hover["thumbs"]
    await page.screenshot("hover.png")

    # Click a past moment: the recording plays from there.
    moment = a0 + 8_000
    await page.mouse("mousePressed", moment)
    await page.mouse("mouseReleased", moment)
    vod = await page.until(
        "the recording playing", lambda s: s["mode"] == "recording" and s["position"] and s["t"] > 0, 30
    )
    print("clicked", moment, "playing at", vod["position"], "offset", (vod["position"] - moment) / 1000)
    assert -1_000 <= vod["position"] - moment < 3_000, (moment, vod)
    assert not vod["fatal"], vod
    await page.screenshot("recording.png")

    # + + : 2x then 4x; the video advances about 4 s a wall second.
    await page.key("+")
    await page.key("+")
    fast = await page.until("4x", lambda s: s["speed"] == 4 and s["rate"] == 4, 5)
    await asyncio.sleep(1.0)
    fast = await page.probe()
    await asyncio.sleep(3.0)
    later = await page.probe()
    ratio = (later["t"] - fast["t"]) / ((later["now"] - fast["now"]) / 1000)
    print(
        "at 4x the video advanced",
        round(later["t"] - fast["t"], 2),
        "s in",
        later["now"] - fast["now"],
        "ms:",
        round(ratio, 2),
    )
    assert 3.0 < ratio < 4.6, (fast, later)
    await page.screenshot("speed-4x.png")

    # Left arrow: 5 s back (in the recording); space pauses, space plays.
    before = await page.probe()
    await page.key("ArrowLeft")
    back = await page.until(
        "5 s back", lambda s: s["position"] and s["position"] < before["position"] - 2_000, 5
    )
    print("left arrow: from", before["position"], "to", back["position"])
    await page.key(" ")
    await page.until("paused", lambda s: s["paused"], 5)
    await page.key(" ")
    await page.until("playing again", lambda s: not s["paused"], 5)

    # L: back to live, a few seconds behind the live edge.
    await page.key("L")
    back_live = await page.until(
        "live again", lambda s: s["mode"] == "live" and s["playing"] and s["latency"] and s["latency"] < 6, 30
    )
    print(
        "live again: latency",
        back_live["latency"],
        "s; position behind now",
        (back_live["now"] - back_live["position"]) / 1000,
    )
    assert back_live["rate"] <= 1.5, back_live
    await page.screenshot("live.png")

    # Shift-drag over the first range: a clip, downloadable as MP4.
    start, end = a0 + 4_000, a0 + 16_000
    await page.drag(start, end, SHIFT)
    chosen = await page.until("a clip selected", lambda s: s["clip"], 5)
    await page.screenshot("selection.png")
    status, kind = download(cf.http_url(chosen["clip"]), tmp / "clip.mp4")
    seconds = probe_duration(tmp / "clip.mp4")
    print("clip", chosen["clip"], status, kind, (tmp / "clip.mp4").stat().st_size, "bytes", seconds, "s")
    assert status == 200 and kind == "video/mp4"
    assert 10.0 <= seconds <= 14.5, seconds  # 12 s from the keyframe at or before the start

    # Events: drawn when the events API answers, none when the edge has none.
    final = await page.until("events asked", lambda s: s["eventsStatus"] is not None, 15)
    print("events: POST", event_status, "GET", final["eventsStatus"], "markers", final["events"])
    if event_status in (200, 201):
        marked = await page.until("the event marked", lambda s: s["events"] == 1, 15)
    else:
        assert final["eventsStatus"] == 404 and final["events"] == 0, final
        # No events API on this edge yet: the page's fetch answers the documented shape for it.
        await page.tools.evaluate(STUB_EVENTS % {"a": a0 + 10_000, "b": a0 + 20_000, "c": a0 + 26_000})
        marked = await page.until("the stubbed events marked", lambda s: s["events"] == 2, 15)  # 10 s refresh
    await page.screenshot("events.png")
    raw = await page.tools.evaluate(
        "JSON.stringify((r => [r.left + r.width / 2, r.top + r.height / 2])"
        "(document.querySelector('#track .event:last-child').getBoundingClientRect()))"
    )
    x, y = json.loads(raw)
    for kind in ("mousePressed", "mouseReleased"):
        await page.tools.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    from_event = await page.until(
        "playing from the event", lambda s: s["mode"] == "recording" and s["position"] and s["t"] > 0, 20
    )
    raw = await page.tools.evaluate("(e => e.start || e.time)(window.camflowTimeline.events.at(-1))")
    begins = max(a0, time_ms(raw))  # the event's start (pre-roll included), inside the recording
    print("events", marked["events"], "the last from", raw, "played from", from_event["position"])
    assert -1_000 <= from_event["position"] - begins < 3_000, (begins, from_event)
    assert all(not e["fatal"] for e in final["errors"]), final["errors"]
    # 7 days: everything recorded is one range at this scale (the gap is under a pixel).
    await page.tools.evaluate("document.querySelector('[data-span=\"604800\"]').click()")
    week = await page.until("the 7 d view", lambda s: s["span"] == 604_800_000 and len(s["ranges"]) == 1, 15)
    assert "1 range, 0 gaps" in week["summary"], week["summary"]

    # The stream list: the live stream's thumbnail in the grid, reloaded by the page.
    await page.tools.call("Page.navigate", url=cf.http_url(f"/?token={cf.token('admin', '*')}"))
    listing = await page.until("the stream list's thumbnails", lambda s: s.get("reloaded"), 20, probe=GRID)
    print("stream list", listing)
    assert listing["streams"] == ["cam1"] and listing["widths"][0] > 0, listing
    await page.screenshot("streams.png")
    for shot in page.shots:
        assert shot.stat().st_size > 10_000, shot
        print("screenshot", shot)
