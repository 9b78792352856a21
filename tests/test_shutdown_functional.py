"""Graceful shutdown on SIGTERM (what Kubernetes sends a pod), on the real Kafka and MinIO.

- `camflow ingest` SIGTERMed while ffmpeg pushes: it stops taking sessions, flushes the session's
  partial segment onto camflow.segments.raw and publishes `offline`, then exits 0.
- `camflow transcode` SIGTERMed with a segment in hand: it finishes that segment (renditions in the
  store, ready event published, offset committed) and exits 0; a second worker of the group then
  takes the rest and redoes nothing, so every segment has exactly one ready event.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import pytest

from camflow.bus.kafka import KafkaBus
from camflow.events import (
    TOPIC_RAW,
    TOPIC_READY,
    TOPIC_STREAMS,
    RawSegment,
    SegmentReady,
    StreamState,
    decode,
)
from camflow.store.s3 import S3Location, S3Store
from tests import services
from tests.process import CAMFLOW, free_port, make_clip, stop_process

pytestmark = pytest.mark.integration
SECRET = "shutdown-test-secret-" + "x" * 32


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def log(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("event") == name]


@contextmanager
def camflow_service(tmp: Path, name: str, args: Sequence[str]) -> Iterator[Service]:
    """`camflow <args>` until it prints that it runs (bounded), stopped by PID after."""
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([*CAMFLOW, *args], stdout=fo, stderr=fe, env=env)
    service = Service(proc, err)
    try:
        deadline = time.monotonic() + 60
        while ": running" not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"camflow {args[0]} did not start:\n{err.read_text()[-3000:]}")
            time.sleep(0.1)
        yield service
    finally:
        stop_process(proc)


def sigterm(service: Service, timeout: float = 60.0) -> int:
    service.proc.send_signal(signal.SIGTERM)
    return service.proc.wait(timeout)


def token(stream: str) -> str:
    out = subprocess.run(
        [*CAMFLOW, "token", "publish", stream],
        env={**os.environ, "CAMFLOW_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


def push(clip: Path, url: str) -> subprocess.Popen[bytes]:
    args = ["ffmpeg", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "rtsp"]
    return subprocess.Popen([*args, "-rtsp_transport", "tcp", url], stderr=subprocess.DEVNULL)


def ingest_args(kafka: str, prefix: str, rtsp_port: int, tmp: Path) -> list[str]:
    return [
        "ingest",
        "--host",
        "127.0.0.1",
        "--rtsp-port",
        str(rtsp_port),
        "--rtsp-udp-ports",
        "off",
        "--http-port",
        str(free_port()),  # WHIP
        "--kafka",
        kafka,
        "--kafka-prefix",
        prefix,
        "--data-dir",
        str(tmp / "data"),
    ]


class Topics:
    """A test consumer (its own group) of raw segments, ready events and stream states."""

    def __init__(self, kafka: str, prefix: str) -> None:
        self.bus = KafkaBus(kafka, client_id="shutdown-test", prefix=prefix)
        self.raw: list[RawSegment] = []
        self.ready: list[SegmentReady] = []
        self.states: list[StreamState] = []

    async def __aenter__(self) -> Topics:
        await self.bus.start()
        self.consumer = await self.bus.subscribe(
            [TOPIC_RAW, TOPIC_READY, TOPIC_STREAMS], f"test-{uuid.uuid4().hex}"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()

    async def until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} within {timeout:g} s; raw={len(self.raw)} ready={len(self.ready)}"
                )
            message = await self.consumer.get(timeout=0.5)
            if message is None:
                continue
            event = decode(message.value)
            if isinstance(event, RawSegment):
                self.raw.append(event)
            elif isinstance(event, SegmentReady):
                self.ready.append(event)
            elif isinstance(event, StreamState):
                self.states.append(event)

    async def drain(self, seconds: float) -> None:
        """Keep reading for ``seconds``."""
        end = time.monotonic() + seconds
        await self.until(lambda: time.monotonic() > end, seconds + 5, "drain")

    def offline(self, stream: str) -> StreamState | None:
        return next((s for s in self.states if s.stream == stream and s.state.value == "offline"), None)


@pytest.fixture(scope="module")
def clip30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip30.mp4", 30, size="640x360")


@pytest.fixture(scope="module")
def clip12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip12.mp4", 12)


def frames_in(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_sigterm_ingest_flushes_partial_segment_and_goes_offline(clip30: Path, tmp_path: Path) -> None:
    kafka = services.require("kafka")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    rtsp_port = free_port()
    async with Topics(kafka, prefix) as topics:
        with camflow_service(tmp_path, "ingest", ingest_args(kafka, prefix, rtsp_port, tmp_path)) as ingest:
            ffmpeg = push(clip30, f"rtsp://127.0.0.1:{rtsp_port}/cam1?token={token('cam1')}")
            try:
                await topics.until(lambda: len(topics.raw) >= 3, 60, "3 raw segments")
                await asyncio.sleep(1.0)  # into the next 2 s GOP: a partial segment is in hand
                before = len(topics.raw)
                assert await asyncio.to_thread(sigterm, ingest) == 0, ingest.stderr_path.read_text()[-3000:]
            finally:
                stop_process(ffmpeg)
            await topics.until(lambda: topics.offline("cam1") is not None, 30, "offline state")
        offline = topics.offline("cam1")
        assert offline is not None and "stopping" in offline.reason, offline
        assert offline.last_seq is not None
        await topics.until(lambda: len(topics.raw) >= offline.last_seq + 1, 30, "every raw segment")
    segments = sorted((s for s in topics.raw if s.epoch == offline.epoch), key=lambda s: s.seq)
    assert [s.seq for s in segments] == list(range(offline.last_seq + 1))  # none lost, none twice
    assert len(segments) > before  # the flush published after SIGTERM
    last = segments[-1]
    assert 0 < last.duration_s < 1.9, f"last segment {last.duration_s:.2f} s: expected the partial one"
    # The partial segment is a whole, decodable fMP4 with as many pictures as its duration says.
    assert frames_in(last.data) == pytest.approx(last.duration_s * 30, abs=2)
    ended = ingest.events("publish_ended")
    assert ended and ended[-1]["last_seq"] == offline.last_seq and "stopping" in ended[-1]["reason"]


def transcode_args(kafka: str, prefix: str, s3: str) -> list[str]:
    return [
        "transcode",
        "--host",
        "127.0.0.1",
        "--kafka",
        kafka,
        "--kafka-prefix",
        prefix,
        "--s3",
        s3,
        "--processes",
        "1",  # one segment at a time: with a backlog there is always one in hand
        "--ladder",
        "720p,360p",
        "--log-level",
        "debug",
    ]


def seqs(service: Service, event: str) -> list[tuple[str, int]]:
    return [(e["epoch"], e["seq"]) for e in service.events(event)]


async def test_sigterm_transcode_finishes_segment_in_hand(clip12: Path, tmp_path: Path) -> None:
    kafka = services.require("kafka")
    s3_base = services.require("s3")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    s3 = f"{s3_base.rstrip('/')}/{prefix.rstrip('.')}"
    rtsp_port = free_port()
    async with Topics(kafka, prefix) as topics:
        # A backlog of raw segments from a real push.
        with camflow_service(tmp_path, "ingest", ingest_args(kafka, prefix, rtsp_port, tmp_path)):
            ffmpeg = push(clip12, f"rtsp://127.0.0.1:{rtsp_port}/cam1?token={token('cam1')}")
            try:
                await asyncio.to_thread(ffmpeg.wait, 60)
            finally:
                stop_process(ffmpeg)
            await topics.until(lambda: topics.offline("cam1") is not None, 30, "offline state")
        offline = topics.offline("cam1")
        assert offline is not None and offline.last_seq is not None and offline.last_seq >= 4
        expected = {(offline.epoch, seq) for seq in range(offline.last_seq + 1)}

        tmp1, tmp2 = tmp_path / "w1", tmp_path / "w2"
        tmp1.mkdir()
        tmp2.mkdir()
        with camflow_service(tmp1, "transcode", transcode_args(kafka, prefix, s3)) as first:
            deadline = time.monotonic() + 120
            while True:  # the second segment it takes is in hand: started, not finished
                started, done = seqs(first, "segment_started"), seqs(first, "segment_transcoded")
                if len(started) >= 2 and started[-1] not in done:
                    in_hand = started[-1]
                    break
                assert time.monotonic() < deadline and first.proc.poll() is None, "no segment in hand"
                await asyncio.sleep(0.05)
            signalled = time.time()
            assert await asyncio.to_thread(sigterm, first) == 0, first.stderr_path.read_text()[-3000:]
        started, done = seqs(first, "segment_started"), seqs(first, "segment_transcoded")
        assert in_hand in done, "the segment in hand was not finished"
        finished = next(e for e in first.events("segment_transcoded") if (e["epoch"], e["seq"]) == in_hand)
        assert datetime.fromisoformat(finished["timestamp"]).timestamp() > signalled, "not mid-segment"
        assert sorted(started) == sorted(done), "a segment was taken and dropped"
        assert len(done) < len(expected), "the first worker should have stopped early"
        assert first.events("transcoder_stopped")

        with camflow_service(tmp2, "transcode", transcode_args(kafka, prefix, s3)) as second:
            await topics.until(
                lambda: {(r.epoch, r.seq) for r in topics.ready} >= expected, 180, "every ready event"
            )
            await topics.drain(3.0)  # anything redone would publish a second ready event meanwhile
        redone = set(seqs(second, "segment_started")) & set(done)
        assert not redone, f"the second worker redid {sorted(redone)}"
    ready = [(r.epoch, r.seq) for r in topics.ready]
    assert sorted(ready) == sorted(expected), "every segment exactly one ready event"
    # The renditions of the segment that was in hand are in the store.
    event = next(r for r in topics.ready if (r.epoch, r.seq) == in_hand)
    assert {r.name for r in event.renditions} == {"720p", "360p"}
    store = S3Store(S3Location.parse(s3))
    await store.start()
    try:
        for ref in event.renditions:
            info = await store.head(ref.key)
            assert info is not None and info.size == ref.size, ref.key
            assert await store.head(ref.init_key) is not None
    finally:
        await store.close()
