"""Blocking playlist reload, delta updates and held parts: curl against `camflow edge --workers 2` on real
MinIO and Kafka, the test writing LL playlists and parts to the store and publishing PlaylistsChanged
itself (as the packager does: objects first, then the event).

Latency is measured as the time an aiohttp client reads the status line minus the time just before
the event was published (curl's ``--trace-time`` is only true to the second); printed with 1 and 100
waiters. curl checks the answers (statuses, headers, bodies) and bounds when they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import m3u8
import pytest

from camflow.bus.kafka import KafkaBus
from camflow.events import TOPIC_PLAYLISTS, PlaylistEnd, PlaylistsChanged, encode
from camflow.hls.lowlatency import playlist_end
from camflow.keys import media_playlist_key, part_key
from camflow.store.s3 import S3Location, S3Store
from tests import services
from tests.ll_playlists import EPOCH, ll_playlist, part_uri
from tests.process import CAMFLOW, free_port
from tests.process import camflow_service as service

pytestmark = pytest.mark.integration
SECRET = "blocking-functional-secret-0123456789"


@dataclass
class Edge:
    url: str
    s3: str
    prefix: str
    kafka: str
    token: str
    tmp: Path


def start_edge(stack: ExitStack, tmp: Path, s3: str, label: str, bus: list[str]) -> str:
    port = free_port()
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}
    args = ["edge", "--host", "127.0.0.1", "--http-port", str(port), "--s3", s3, "--workers", "2", *bus]
    stack.enter_context(service(tmp, label, args, env))
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    kafka, s3 = services.require("kafka"), services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    prefix, s3 = f"ll{run_id}.", f"{s3.rstrip('/')}/{run_id}"
    tmp = tmp_path_factory.mktemp("edge")
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}
    token = subprocess.run(
        [*CAMFLOW, "token", "view", "cam1"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    with ExitStack() as stack:
        url = start_edge(stack, tmp, s3, "edge", ["--kafka", kafka, "--kafka-prefix", prefix])
        yield Edge(url, s3, prefix, kafka, token, tmp)


class Pipeline:
    """What the packager does, by hand: objects and playlists into MinIO, then PlaylistsChanged on Kafka."""

    def __init__(self, edge: Edge) -> None:
        self.store = S3Store(S3Location.parse(edge.s3))
        self.bus = KafkaBus(edge.kafka, client_id="ll-test", prefix=edge.prefix)
        self.end = (0, -1)  # what the last event said
        self.heartbeat: asyncio.Task[None] | None = None

    async def playlist(self, msn: int, part: int, window: int = 10) -> None:
        text = ll_playlist(msn, part, window=window)
        await self.store.put(media_playlist_key("cam1", "source"), text.encode())

    async def changed(self, msn: int, part: int) -> float:
        """Publish the event; the wall time just before it."""
        self.end = (msn, part)
        at = time.time()
        event = PlaylistsChanged("cam1", (PlaylistEnd("source", msn, part),), at)
        await self.bus.publish(TOPIC_PLAYLISTS, "cam1", encode(event))
        return at

    async def beat(self) -> None:
        """As a live packager: an event every part (0.2 s), here repeating the last end."""
        while True:
            await asyncio.sleep(0.2)
            await self.changed(*self.end)


@pytest.fixture
async def pipeline(edge: Edge) -> AsyncIterator[Pipeline]:
    p = Pipeline(edge)
    await p.store.start()
    await p.bus.start()
    p.heartbeat = asyncio.create_task(p.beat())
    try:
        yield p
    finally:
        p.heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await p.heartbeat
        await p.bus.close()
        await p.store.close()


@dataclass
class Answer:
    status: int
    at: float  # wall time curl was done
    body: bytes
    headers: str


async def curl(urls: list[str], out: Path) -> list[Answer]:
    """One curl process fetching ``urls`` in parallel; each answer's status, headers and body, and when
    curl was done (all answers: ``at``)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "curl",
        "-s",
        "--no-progress-meter",
        "-i",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "200",
    ]
    for i, url in enumerate(urls):
        args += ["-o", str(out / f"{i}.out"), url]
    proc = await asyncio.create_subprocess_exec(*args)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    done = time.time()
    answers = []
    for i in range(len(urls)):
        head, _, body = (out / f"{i}.out").read_bytes().partition(b"\r\n\r\n")
        answers.append(Answer(int(head.split(b" ", 2)[1]), done, body, head.decode("latin-1")))
    return answers


def playlist_url(edge: Edge, query: str = "") -> str:
    return f"{edge.url}/live/cam1/source.m3u8?token={edge.token}{'&' + query if query else ''}"


async def fetch_all(session: aiohttp.ClientSession, url: str, count: int) -> list[tuple[int, float, bytes]]:
    """``count`` concurrent GETs of ``url``: status, the wall time the status line came, body."""

    async def one() -> tuple[int, float, bytes]:
        async with session.get(url) as response:
            at = time.time()
            return response.status, at, await response.read()

    return await asyncio.gather(*(one() for _ in range(count)))


async def wait_followed(edge: Edge, p: Pipeline, session: aiohttp.ClientSession, msn: int) -> None:
    """Until both edge workers read camflow.playlists: blocked reloads answered soon after an event."""
    for attempt in range(20):
        await p.playlist(msn + attempt, 0)
        await p.changed(msn + attempt, 0)
        url = playlist_url(edge, f"_HLS_msn={msn + attempt}&_HLS_part=1")
        held = asyncio.create_task(fetch_all(session, url, 8))
        await asyncio.sleep(0.5)
        await p.playlist(msn + attempt, 1)
        at = await p.changed(msn + attempt, 1)
        answers = await held
        if all(status == 200 and 0 <= answered - at < 0.15 for status, answered, _ in answers):
            return
    raise AssertionError("the edge never answered blocked reloads on an event")


async def measure(
    edge: Edge, p: Pipeline, session: aiohttp.ClientSession, waiters: int, msn: int, rounds: int
) -> list[float]:
    latencies = []
    for r in range(rounds):
        await p.playlist(msn + r, 2)
        await p.changed(msn + r, 2)
        held = asyncio.create_task(
            fetch_all(session, playlist_url(edge, f"_HLS_msn={msn + r}&_HLS_part=3"), waiters)
        )
        await asyncio.sleep(0.5 + waiters * 0.005)  # every request is in and held
        await p.playlist(msn + r, 3)
        at = await p.changed(msn + r, 3)
        answers = await held
        assert all(
            status == 200 and playlist_end(body.decode()) == (msn + r, 3) for status, _, body in answers
        )
        latencies += [answered - at for _, answered, _ in answers]
    return latencies


async def test_blocked_reloads_are_answered_within_tens_of_ms_of_the_event(
    edge: Edge, pipeline: Pipeline
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await wait_followed(edge, pipeline, session, 5)
        one = await measure(edge, pipeline, session, 1, 30, 10)
        hundred = await measure(edge, pipeline, session, 100, 50, 3)
    # and curl, held the same way
    await pipeline.playlist(60, 2)
    await pipeline.changed(60, 2)
    held = asyncio.create_task(curl([playlist_url(edge, "_HLS_msn=60&_HLS_part=3")] * 10, edge.tmp / "curl"))
    await asyncio.sleep(0.5)
    await pipeline.playlist(60, 3)
    await pipeline.changed(60, 3)
    answers = await held
    assert all(a.status == 200 and playlist_end(a.body.decode()) == (60, 3) for a in answers)
    assert all("Cache-Control: public, max-age=1" in a.headers for a in answers)
    m1, m100 = statistics.median(one), statistics.median(hundred)
    print(f"event -> answer: 1 waiter median {m1 * 1000:.1f} ms (max {max(one) * 1000:.1f}); "
          f"100 waiters median {m100 * 1000:.1f} ms (max {max(hundred) * 1000:.1f})")  # fmt: skip
    assert m1 < 0.1 and m100 < 0.3 and max(hundred) < 1.0


async def test_refusals_timeouts_and_delta_updates(edge: Edge, pipeline: Pipeline) -> None:
    await pipeline.playlist(70, 2, window=20)
    await pipeline.changed(70, 2)
    bad = await curl(
        [
            playlist_url(edge, "_HLS_msn=73"),  # more than 2 beyond the last msn
            playlist_url(edge, "_HLS_part=1"),  # a part without msn
            playlist_url(edge, "_HLS_msn=x1"),
            playlist_url(edge, "_HLS_msn=70&_HLS_part=9"),  # beyond the last part by more than 3
            playlist_url(edge, "_HLS_msn=70&_HLS_skip=NO"),
            f"{edge.url}/live/cam1/source.m3u8?_HLS_msn=70",  # no token: refused as before
        ],
        edge.tmp / "bad",
    )
    assert sorted(a.status for a in bad) == [400, 400, 400, 400, 400, 401]
    for a in bad:
        assert json.loads(a.body)["error"] in ("bad_query", "token_missing")
    # 3 target durations (2 s) without the part: 503 with a JSON body
    started = time.time()
    (late,) = await curl([playlist_url(edge, "_HLS_msn=71&_HLS_part=0")], edge.tmp / "late")
    assert late.status == 503 and json.loads(late.body)["error"] == "playlist_not_ready"
    assert 5.9 <= late.at - started < 8 and "no-store" in late.headers
    # a delta update: EXT-X-SKIP, m3u8 reads it, the token carried into every URI
    (delta,) = await curl([playlist_url(edge, "_HLS_msn=70&_HLS_part=2&_HLS_skip=YES")], edge.tmp / "delta")
    text = delta.body.decode()
    assert (
        delta.status == 200
        and "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in text
        and "cache-control: public, max-age=1" in delta.headers.lower()
    )
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 50 and all(
        f"token={edge.token}" in s.uri for s in parsed.segments if s.uri
    )
    # plain requests: as before (the playlist's own lifetime, no skip)
    (plain,) = await curl([playlist_url(edge)], edge.tmp / "plain")
    assert plain.status == 200 and "#EXT-X-SKIP" not in plain.body.decode() and "max-age=1" in plain.headers


async def test_a_part_past_a_complete_segment_gets_the_playlist(edge: Edge, pipeline: Pipeline) -> None:
    """Segment 75 complete with 10 parts: _HLS_part=10 of it (RFC 8216bis 6.2.5.2: the next segment's
    part 0) and part 12 (more than 3 past its last listed part) get the playlist, not a 400."""
    await pipeline.playlist(75, -1)
    await pipeline.changed(75, -1)
    started = time.time()
    answers = await curl(
        [playlist_url(edge, "_HLS_msn=75&_HLS_part=10"), playlist_url(edge, "_HLS_msn=75&_HLS_part=12")],
        edge.tmp / "past",
    )
    assert [a.status for a in answers] == [200, 200], [a.body for a in answers]
    assert all(playlist_end(a.body.decode()) == (75, -1) for a in answers)
    assert max(a.at for a in answers) - started < 1.0


async def test_a_future_part_is_held_until_it_exists(edge: Edge, pipeline: Pipeline) -> None:
    await pipeline.playlist(80, 2)
    await pipeline.changed(80, 2)
    hint = part_uri(80, 3)
    url = f"{edge.url}/live/cam1/{hint}?token={edge.token}"
    held = asyncio.create_task(curl([url] * 20, edge.tmp / "part"))
    await asyncio.sleep(0.4)
    data = b"part 80.3 " * 100
    await pipeline.store.put(part_key("cam1", EPOCH, "source", 80, 3), data)
    await pipeline.playlist(80, 3)
    at = await pipeline.changed(80, 3)
    answers = await held
    assert all(a.status == 200 and a.body == data for a in answers)
    assert all("immutable" in a.headers for a in answers) and max(a.at - at for a in answers) < 0.5
    # a segment listed before its transcode worker wrote it: held until it is there
    segment = f"{edge.url}/live/cam1/{EPOCH}/source/00000079.m4s?token={edge.token}"
    held_segment = asyncio.create_task(curl([segment] * 5, edge.tmp / "segment"))
    await asyncio.sleep(0.5)
    assert not held_segment.done()
    await pipeline.store.put(f"streams/cam1/{EPOCH}/source/00000079.m4s", b"segment 79")
    written = time.time()
    segments = await held_segment  # found on the next event (one every 0.2 s)
    assert all(a.status == 200 and a.body == b"segment 79" for a in segments)
    assert max(a.at for a in segments) - written < 1.0
    # far from the playlist's end: not held, 404 at once
    started = time.time()
    (far,) = await curl([f"{edge.url}/live/cam1/{part_uri(100, 0)}?token={edge.token}"], edge.tmp / "far")
    assert far.status == 404 and far.at - started < 0.5
    # the next part, never written: 404 after its hold (1 s)
    (never,) = await curl([f"{edge.url}/live/cam1/{part_uri(80, 4)}?token={edge.token}"], edge.tmp / "never")
    assert never.status == 404 and 0.9 <= never.at - at < 3
    # the figures, every worker's summed, on /metrics
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}
    admin = subprocess.run(
        [*CAMFLOW, "token", "admin", "*"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    (metrics,) = await curl([f"{edge.url}/metrics?token={admin}"], edge.tmp / "metrics")
    holds = re.search(rb'camflow_edge_low_latency_total\{what="holds"\} ([0-9.]+)', metrics.body)
    assert holds is not None and float(holds[1]) >= 26, metrics.body.decode()[-3000:]  # 20 + 5 + 1 held


async def test_without_the_bus_blocked_reloads_are_still_answered(
    edge: Edge, pipeline: Pipeline, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        url = start_edge(stack, tmp_path, edge.s3, "edge-nobus", [])
        plain = Edge(url, edge.s3, edge.prefix, edge.kafka, edge.token, tmp_path)
        await pipeline.playlist(90, 2)
        held = asyncio.create_task(
            curl([playlist_url(plain, "_HLS_msn=90&_HLS_part=3")] * 10, tmp_path / "nobus")
        )
        await asyncio.sleep(0.5)
        await pipeline.playlist(90, 3)
        written = time.time()
        answers = await held
        assert all(a.status == 200 and playlist_end(a.body.decode()) == (90, 3) for a in answers)
        assert max(a.at - written for a in answers) < 1.0  # re-read once per part target (0.2 s)
