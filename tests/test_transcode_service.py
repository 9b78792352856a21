"""The worker on the in-process bus and a file store, with real clips: objects, thumbnails,
ready events, bounded retries and the dead-letter event; and the commit order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import pytest

from camflow.bus import LocalBus, Message
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
from camflow.store import FileStore
from tests import defaults
from tests.transcode_clips import TIMESCALE, RawClipSegment, cut, make_clip
from transcode.ladder import parse_ladder
from transcode.service import TranscodeWorker
from transcode.stats import percentile

EPOCH = "20261121T101500123Z"


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[RawClipSegment]:
    return cut(make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 6, "640x360"))


def raw_event(seg: RawClipSegment, data: bytes | None = None) -> RawSegment:
    return RawSegment(
        stream="cam1",
        epoch=EPOCH,
        seq=seg.seq,
        start=seg.start,
        duration=seg.duration,
        timescale=TIMESCALE,
        codecs="avc1.64001e",
        width=640,
        height=360,
        wall_clock=time.time(),
        data=seg.data if data is None else data,
    )


async def collect(consumer: object, count: int, timeout: float = 60.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        msg = await consumer.get(timeout=0.5)  # type: ignore[attr-defined]
        if msg is not None:
            got.append(msg)
    return got


async def test_worker_writes_renditions_thumbnails_and_dead_letters_a_corrupt_segment(
    segments: list[RawClipSegment], tmp_path: Path
) -> None:
    bus, store = LocalBus(), FileStore(tmp_path / "store")
    await store.start()
    out = await bus.subscribe([TOPIC_READY, TOPIC_DEAD], "test")
    worker = TranscodeWorker(
        bus,
        store,
        **defaults.transcoder(
            ladder=parse_ladder("source,180p:200k"), processes=1, concurrency=2, max_attempts=2
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)
    corrupt = raw_event(segments[1], segments[1].data[:1500] + bytes(len(segments[1].data) - 1500))
    for event in (raw_event(segments[0]), corrupt, raw_event(segments[2])):
        await bus.publish(TOPIC_RAW, f"cam1/{EPOCH}/{event.seq}", encode(event))
    messages = await collect(out, 3)
    stop.set()
    await asyncio.wait_for(task, 30)

    events = [decode(m.value) for m in messages]
    ready = sorted((e for e in events if isinstance(e, SegmentReady)), key=lambda e: e.seq)
    dead = [e for e in events if isinstance(e, SegmentDead)]
    assert [e.seq for e in ready] == [0, 2]
    assert len(dead) == 1 and dead[0].seq == 1 and dead[0].attempts == 2
    assert "does not decode" in dead[0].reason or "no picture" in dead[0].reason, dead[0].reason
    assert dead[0].raw == encode(corrupt) and dead[0].topic == TOPIC_RAW
    assert [m.topic for m in messages if isinstance(decode(m.value), SegmentDead)] == [TOPIC_DEAD]
    assert worker.stats.failed_attempts == 2 and worker.stats.dead_lettered == 1
    assert worker.stats.segments == 2

    for done in ready:
        assert [r.name for r in done.renditions] == ["source", "180p"]
        for ref in done.renditions:
            media = await store.get(ref.key)
            init = await store.get(ref.init_key)
            assert media[4:8] in (b"styp", b"moof") and b"moov" in init
        thumb = await store.get(thumbnail_key("cam1", EPOCH, done.seq))
        with av.open(str(store.root / thumbnail_key("cam1", EPOCH, done.seq))) as container:
            assert next(container.decode(video=0)).height == 180
        assert thumb[:3] == b"\xff\xd8\xff"
    assert await store.get(latest_thumbnail_key("cam1")) == await store.get(thumbnail_key("cam1", EPOCH, 2))
    snapshot = worker.stats.snapshot()
    assert snapshot["transcode_p95_seconds"] >= snapshot["transcode_p50_seconds"] > 0
    assert snapshot["dead_lettered"] == 1 and snapshot["in_flight"] == 0


def test_percentile() -> None:
    assert percentile([], 50) == 0.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)


async def test_an_idle_worker_logs_no_stats_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    from transcode import service

    monkeypatch.setattr(service, "STATS_EVERY", 0.02)
    worker = TranscodeWorker(LocalBus(), FileStore(tmp_path), **defaults.transcoder(processes=1))
    stop = asyncio.Event()
    with capture_logs() as logs:
        reporter = asyncio.create_task(worker._report(stop))
        await asyncio.sleep(0.2)  # ten intervals with nothing done: nothing said
        assert [e for e in logs if e["event"] == "transcode_stats"] == []
        worker.stats.segments += 1
        await asyncio.sleep(0.2)  # one figure changed: one line, then quiet again
        stop.set()
        await asyncio.wait_for(reporter, 1)
    stats = [e for e in logs if e["event"] == "transcode_stats"]
    assert len(stats) == 1 and stats[0]["segments"] == 1
