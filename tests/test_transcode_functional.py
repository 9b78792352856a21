"""Transcode workers as real `camflow` processes on the real Kafka and MinIO.

- A corrupt raw segment is retried, lands in the dead-letter topic with the reason, its
  offset is committed, and the segments after it are transcoded.
- Two workers share a stream; one is killed with SIGKILL mid-stream; the other takes its
  partitions over and the packager's playlists are contiguous, without gap or duplicate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from camflow.bus.kafka import KafkaBus
from camflow.events import (
    TOPIC_DEAD,
    TOPIC_RAW,
    TOPIC_READY,
    RawSegment,
    SegmentDead,
    SegmentReady,
    decode,
    encode,
)
from camflow.keys import latest_thumbnail_key, thumbnail_key
from camflow.store.s3 import S3Location, S3Store
from tests import services
from tests.kafka_groups import committed
from tests.process import CAMFLOW, ffmpeg_push, free_port
from tests.process import camflow_service as service
from tests.transcode_clips import TIMESCALE, cut, make_clip
from transcode.service import GROUP

pytestmark = pytest.mark.integration
EPOCH = "20261121T101500123Z"
SECRET = "0123456789abcdef" * 4
T = TypeVar("T")


def backends() -> tuple[str, str, str]:
    """(kafka bootstrap, unique topic prefix, unique S3 URL)."""
    kafka, s3 = services.require("kafka"), services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    return kafka, f"t{run_id}.", f"{s3.rstrip('/')}/{run_id}"


def raw(seg_seq: int, start: int, duration: int, data: bytes) -> RawSegment:
    return RawSegment(
        "cam1", EPOCH, seg_seq, start, duration, TIMESCALE, "avc1.64001e", 640, 360, time.time(), data
    )


async def publish_and_collect(kafka: str, prefix: str, events: list[RawSegment], want: int) -> list[object]:
    bus = KafkaBus(kafka, prefix=prefix)
    await bus.start()
    try:
        consumer = await bus.subscribe([TOPIC_READY, TOPIC_DEAD], "test-reader")
        for event in events:
            await bus.publish(TOPIC_RAW, f"{event.stream}/{event.epoch}/{event.seq}", encode(event))
        got: list[object] = []
        deadline = time.monotonic() + 120
        while len(got) < want and time.monotonic() < deadline:
            msg = await consumer.get(timeout=1.0)
            if msg is not None:
                got.append(decode(msg.value))
                await consumer.commit(msg)
        return got
    finally:
        await bus.close()


def test_corrupt_segment_goes_to_the_dead_letter_topic(tmp_path: Path) -> None:
    kafka, prefix, s3 = backends()
    segs = cut(make_clip(tmp_path / "clip.mp4", 6, "640x360"))
    bad = segs[1].data[:1500] + bytes(len(segs[1].data) - 1500)
    events = [raw(s.seq, s.start, s.duration, bad if s.seq == 1 else s.data) for s in segs]
    args = ["transcode", "--kafka", kafka, "--kafka-prefix", prefix, "--s3", s3, "--processes", "1"]
    with service(tmp_path, "transcode", [*args, "--ladder", "source,180p", "--attempts", "2"], {}) as proc:
        got = asyncio.run(publish_and_collect(kafka, prefix, events, want=3))
        ready = sorted(e.seq for e in got if isinstance(e, SegmentReady))
        dead = [e for e in got if isinstance(e, SegmentDead)]
        assert ready == [0, 2], got
        assert [(d.seq, d.attempts, d.raw) for d in dead] == [(1, 2, encode(events[1]))]
        assert "raw segment" in dead[0].reason
        # Every raw offset is committed, the dead one too: a restart does not retry it forever.
        deadline = time.monotonic() + 30
        while committed(kafka, prefix + GROUP, prefix + TOPIC_RAW) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(kafka, prefix + GROUP, prefix + TOPIC_RAW) == 3
        assert proc.poll() is None
    log = (tmp_path / "transcode.err").read_text()
    assert log.count('"event": "segment_attempt_failed"') == 2 and '"event": "segment_dead_lettered"' in log

    async def thumbs() -> tuple[bytes, bytes]:
        store = S3Store(S3Location.parse(s3))
        await store.start()
        try:
            return await store.get(thumbnail_key("cam1", EPOCH, 2)), await store.get(
                latest_thumbnail_key("cam1")
            )
        finally:
            await store.close()

    per_segment, latest = asyncio.run(thumbs())
    assert per_segment[:3] == b"\xff\xd8\xff" and latest == per_segment


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s")


SEGMENT_RE = re.compile(r"/(\d{8})\.m4s")


def test_sigkill_of_a_worker_mid_stream_leaves_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    kafka, prefix, s3 = backends()
    clip = make_clip(tmp_path / "clip.mp4", 24, "640x360")
    env = {"CAMFLOW_SECRET": SECRET}
    bus = ["--kafka", kafka, "--kafka-prefix", prefix]
    rtsp_port, http_port = free_port(), free_port()
    common = ["--host", "127.0.0.1", "--log-level", "debug"]
    transcode = ["transcode", *common, *bus, "--s3", s3, "--processes", "1", "--ladder", "source,180p:200k"]
    with ExitStack() as stack:
        stack.enter_context(service(tmp_path, "package", ["package", *common, *bus, "--s3", s3], env))
        stack.enter_context(
            service(tmp_path, "edge", ["edge", *common, *bus, "--s3", s3, "--http-port", str(http_port)], env)
        )
        victim = stack.enter_context(service(tmp_path, "transcode-a", transcode, env))
        stack.enter_context(service(tmp_path, "transcode-b", transcode, env))
        stack.enter_context(
            service(tmp_path, "ingest", ["ingest", *common, *bus, "--rtsp-port", str(rtsp_port)], env)
        )
        token = subprocess.run(
            [*CAMFLOW, "token", "publish", "cam1"],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        ).stdout.strip()
        view = subprocess.run(
            [*CAMFLOW, "token", "view", "cam1"],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        ).stdout.strip()
        url = f"rtsp://127.0.0.1:{rtsp_port}/cam1?token={token}"
        with ExitStack() as push_stack:
            pusher = push_stack.enter_context(_background(lambda: ffmpeg_push(clip, url, timeout=120)))
            victim_log = tmp_path / "transcode-a.err"
            wait_until(
                lambda: victim_log.read_text().count('"event": "segment_transcoded"') >= 2,
                60,
                "worker A transcoded no segment",
            )
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            killed_after = victim_log.read_text().count('"event": "segment_transcoded"')
            pushed = pusher.result(timeout=150)
            assert pushed.returncode == 0, pushed.stderr
        base = f"http://127.0.0.1:{http_port}/live/cam1"
        wait_until(
            lambda: all(
                "#EXT-X-ENDLIST" in _maybe(f"{base}/{name}.m3u8?token={view}") for name in ("source", "180p")
            ),
            120,
            "playlists did not end",
        )
        survivor_log = (tmp_path / "transcode-b.err").read_text()
        for name in ("source", "180p"):
            playlist = fetch(f"{base}/{name}.m3u8?token={view}")
            seqs = [int(m) for m in SEGMENT_RE.findall(playlist)]
            assert "#EXT-X-GAP" not in playlist, playlist
            assert seqs == list(range(len(seqs))) and len(seqs) >= 10, playlist
            assert playlist.count("#EXT-X-DISCONTINUITY\n") == 0, playlist
        # Both workers did a share of the stream, and the survivor finished it.
        assert killed_after >= 2 and survivor_log.count('"event": "segment_transcoded"') >= 2
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                f"{base}/master.m3u8?token={view}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0 and float(probe.stdout.strip()) >= 20.0, probe


def _maybe(url: str) -> str:
    try:
        return fetch(url)
    except OSError:
        return ""


@contextmanager
def _background(fn: Callable[[], T]) -> Iterator[concurrent.futures.Future[T]]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        yield pool.submit(fn)
    finally:
        pool.shutdown(wait=True)
