"""Slow clients against a running `camflow run`: hundreds of connections trickling a request one byte
a second into the edge and into RTSP do not stop a viewer or a camera, are closed at their deadline
(not kept by their trickle), and one address over the per-client cap is refused the excess.

The tricklers come from loopback addresses, 50 on each (127.0.10.10-19 for 500: under the cap
of 64), the cap probe from 127.0.0.99; `--client-cap-exempt none` puts loopback under the cap
(by default it is exempt: a reverse proxy on the machine). 500 edge + 500 RTSP tricklers is what
the issue asks for; ``CAMFLOW_SLOW_CLIENTS`` changes it (a longer run, or a smaller machine).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.process import camflow_run, make_clip, stop_process
from tests.test_health_functional import publisher

pytestmark = pytest.mark.integration

TRICKLERS = int(os.environ.get("CAMFLOW_SLOW_CLIENTS", "500"))  # per listener
ADDRESSES = [f"127.0.{10 + i // 200}.{10 + i % 200}" for i in range(max(10, -(-TRICKLERS // 50)))]  # 50 each
PROBE = "127.0.0.99"
CAP = 64
EXCESS = 5
HEAD_TIMEOUT = 10.0  # the defaults: --request-head-timeout, --rtsp-handshake-timeout
WATCH = 14.0  # seconds of trickling watched: the deadline, the once-a-second sweep, slack


@dataclass
class Trickler:
    writer: asyncio.StreamWriter
    opened: float
    first: bytes = b""  # what the server answered before closing
    closed: float | None = None
    reader_task: asyncio.Task[None] | None = field(default=None, repr=False)


async def watch(reader: asyncio.StreamReader, conn: Trickler) -> None:
    try:
        while data := await reader.read(4096):
            conn.first = conn.first or data
    except (ConnectionError, OSError):
        pass
    conn.closed = time.monotonic()


async def open_many(port: int, sources: list[str]) -> list[Trickler]:
    async def one(source: str) -> Trickler:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        conn = Trickler(writer, time.monotonic())
        conn.reader_task = asyncio.create_task(watch(reader, conn))
        return conn

    out: list[Trickler] = []
    for start in range(0, len(sources), 100):  # bounded bursts: the listen backlog is 100+
        out += await asyncio.gather(*(one(s) for s in sources[start : start + 100]))
    return out


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[float, int, bytes]:
    began = time.monotonic()
    async with http.get(url) as resp:
        body = await resp.read()
    return time.monotonic() - began, resp.status, body


def media_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def media_sequence(text: str) -> int:
    found = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    return (int(found.group(1)) if found else 0) + len(media_lines(text))


def metric(text: str, listener: str, reason: str) -> float:
    pattern = rf'camflow_connections_refused_total{{listener="{listener}",reason="{reason}"}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def test_tricklers_are_closed_at_their_deadline_while_viewers_and_cameras_carry_on(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8 * TRICKLERS + 1024  # both ends of every connection, in this process and in camflow
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))  # camflow inherits it
    clip = make_clip(tmp_path / "clip.mp4", 4, "320x240", rate=15, gop=15)
    extra = ["--ladder", "source", "--client-cap-exempt", "none", "--log-format", "json"]
    with camflow_run(tmp_path, extra) as cf:
        view, publish = cf.token("view", "cam1"), cf.token("publish", "cam1")
        camera = publisher(clip, cf.rtsp_url("cam1", publish), tmp_path / "ffmpeg.err")
        try:
            connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request
            async with aiohttp.ClientSession(connector=connector) as http:
                master = cf.http_url(f"/live/cam1/master.m3u8?token={view}")
                playlist = ""
                deadline = time.monotonic() + 60
                while not playlist:
                    assert time.monotonic() < deadline, f"no playlist: {cf.log[-2000:]}"
                    await asyncio.sleep(0.5)
                    _, status, body = await timed_get(http, master)
                    if status == 200:
                        media_url = cf.http_url(f"/live/cam1/{media_lines(body.decode())[0]}")
                        _, status, body = await timed_get(http, media_url)
                        playlist = body.decode() if status == 200 and media_lines(body.decode()) else ""
                published_before = media_sequence(playlist)

                spread = [ADDRESSES[i % len(ADDRESSES)] for i in range(TRICKLERS)]
                edge = await open_many(cf.http_port, spread)
                rtsp = await open_many(cf.rtsp_port, spread)
                edge_probe = await open_many(cf.http_port, [PROBE] * (CAP + EXCESS))
                rtsp_probe = await open_many(cf.rtsp_port, [PROBE] * (CAP + EXCESS))
                started = time.monotonic()
                edge_head = b"GET /live/cam1/master.m3u8 HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"a" * 64
                rtsp_head = f"OPTIONS rtsp://127.0.0.1:{cf.rtsp_port}/cam1 RTSP/1.0\r\nX-Slow: ".encode()
                rtsp_head += b"a" * 64
                latencies: list[float] = []
                for tick in range(int(WATCH)):  # bounded: WATCH seconds
                    for conns, head in ((edge, edge_head), (rtsp, rtsp_head)):
                        for conn in conns:
                            if conn.closed is None and not conn.writer.is_closing():
                                conn.writer.write(head[tick : tick + 1])
                    for url in (media_url, f"{media_url.rsplit('/', 1)[0]}/{media_lines(playlist)[-1]}"):
                        took, status, body = await timed_get(http, url)
                        assert status == 200, (url, status, body[:200])
                        latencies.append(took)
                        if url == media_url:
                            playlist = body.decode()
                    await asyncio.sleep(max(0.0, started + tick + 1 - time.monotonic()))
                published_after = media_sequence(playlist)
                _, _, scraped = await timed_get(http, cf.metrics_url())
        finally:
            stop_process(camera)
        for conn in edge + rtsp + edge_probe + rtsp_probe:
            conn.writer.close()
        await asyncio.gather(*(c.reader_task for c in edge + rtsp + edge_probe + rtsp_probe if c.reader_task))

    # The edge's deadline runs from a head's first byte (written at ``started``), RTSP's handshake
    # deadline from the connection.
    closes = {
        "edge": sorted((c.closed or 1e9) - started for c in edge),
        "rtsp": sorted((c.closed or 1e9) - c.opened for c in rtsp),
    }
    print(  # shown with -s: the figures docs/security.md quotes
        f"slow clients: {TRICKLERS} per listener; viewer max {max(latencies):.3f} s over "
        f"{len(latencies)} GETs; segments published meanwhile {published_after - published_before}; "
        "closed after " + ", ".join(f"{n} {a[0]:.1f}-{a[-1]:.1f} s" for n, a in closes.items())
    )
    # A viewer got playlists and segments within 1 s throughout; the camera kept publishing.
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    assert published_after - published_before >= 4, (published_before, published_after)
    # Every trickler was closed at its deadline, however it trickled: 10 s, seen within a second.
    for name, ages in closes.items():
        assert ages[0] > HEAD_TIMEOUT - 0.5 and ages[-1] < HEAD_TIMEOUT + 2.5, (name, ages[:3], ages[-3:])
    assert all(c.first.startswith(b"HTTP/1.1 408 ") for c in edge), {c.first[:40] for c in edge}
    # The probe address: the cap's excess refused at once (503), the rest held until their deadline.
    for name, conns, status in (
        ("edge", edge_probe, b"HTTP/1.1 503 "),
        ("rtsp", rtsp_probe, b"RTSP/1.0 503 "),
    ):
        refused = [c for c in conns if c.first.startswith(status)]
        assert len(refused) == EXCESS, (name, len(refused))
        assert all((c.closed or 1e9) - c.opened < 2.0 for c in refused)
    text = scraped.decode()
    assert metric(text, "edge", "head_timeout") == TRICKLERS
    assert metric(text, "edge", "per_client_cap") == EXCESS
    assert metric(text, "rtsp", "handshake_timeout") >= TRICKLERS + CAP
    assert metric(text, "rtsp", "per_client_cap") == EXCESS
    # Logged once per client address and reason, not once per connection.
    lines = [line for line in cf.log.splitlines() if '"connection_refused"' in line]
    assert 0 < len(lines) <= 2 * (len(ADDRESSES) + 1) * 2, len(lines)
