"""The part worker (``transcode.parts.PartWorker``) on the in-process bus and a file store: raw
parts in, part objects and init sections in the store, part-ready events out in order, each after
its objects, a part's copies announced before its encoded rungs are done; a broken part and a
foreign event go to the dead-letter topic and the stream goes on; an idle stream's encoders close;
``--no-low-latency`` parses."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

import transcode.parts
from camflow.bus import LocalBus
from camflow.cli.args import build_parser
from camflow.errors import StoreUnavailable
from camflow.events import (
    TOPIC_DEAD,
    TOPIC_PARTS,
    TOPIC_READY,
    PartReady,
    SegmentDead,
    StreamState,
    decode,
    encode,
)
from camflow.events import StreamStateKind as Kind
from camflow.keys import init_key, part_key
from camflow.store import FileStore
from tests.part_clips import EPOCH, ClipSegment, cut, make_clip
from transcode.encoder import RenditionMedia
from transcode.ladder import parse_ladder
from transcode.parts import GROUP, PartWorker


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[ClipSegment]:
    return cut(make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 4, "320x180"))


async def run_worker(
    root: Path, events: list[bytes], want: int, idle: float = 10.0
) -> tuple[list[object], PartWorker, FileStore]:
    bus, store = LocalBus(), FileStore(root)
    await store.start()
    out = await bus.subscribe([TOPIC_READY, TOPIC_DEAD], "test")
    worker = PartWorker(bus, store, ladder=parse_ladder("source,90p:100k"), idle_seconds=idle)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)
    for value in events:
        await bus.publish(TOPIC_PARTS, "cam1", value)
    got: list[object] = []
    while len(got) < want:
        message = await asyncio.wait_for(out.get(timeout=30), 60)
        assert message is not None
        event = decode(message.value)
        if isinstance(event, PartReady):  # its objects are in the store before it is published
            for ref in event.renditions:
                assert await store.head(ref.key) is not None and await store.head(ref.init_key) is not None
        got.append(event)
    if idle < 10:
        for _ in range(40):
            if not worker._lanes:
                break
            await asyncio.sleep(0.25)
        assert not worker._lanes  # idle: the stream's encoders and thread are closed
    stop.set()
    await asyncio.wait_for(task, 30)
    return got, worker, store


def test_parts_become_part_ready_events_in_order(tmp_path: Path, segments: list[ClipSegment]) -> None:
    parts = [p for seg in segments for p in seg.raw_parts("cam1", "avc1.64000d")]
    got, worker, _ = asyncio.run(run_worker(tmp_path, [encode(p) for p in parts], 2 * len(parts), idle=0.5))
    ready = [e for e in got if isinstance(e, PartReady)]
    # each part: its copies and audio first, then its encoded rung; the parts in order
    assert [(e.seq, e.part) for e in ready] == [(p.seq, p.part) for p in parts for _ in range(2)]
    assert [[r.name for r in e.renditions] for e in ready] == [["source", "audio"], ["90p"]] * len(parts)
    assert [e.independent for e in ready[::2]] == [p.independent for p in parts]
    first = ready[0]
    assert [r.kind for r in first.renditions] == ["video", "audio"]
    assert [r.kind for r in ready[1].renditions] == ["video"]
    source = first.renditions[0]
    assert source.key == part_key("cam1", EPOCH, "source", 0, 0) and source.init_key == init_key(
        "cam1", EPOCH, "source"
    )
    assert (first.start, first.duration, first.timescale) == (parts[0].start, parts[0].duration, 90_000)
    assert ready[1].renditions[0].key == part_key("cam1", EPOCH, "90p", 0, 0)
    assert worker.stats.parts == len(parts) and worker.stats.bad_parts == 0
    counters = {(name, labels): value for name, labels, value in worker.samples()}
    assert counters[("camflow_transcode_parts", ("ok",))] == len(parts)
    assert counters[("camflow_transcode_part_rungs_skipped", ())] == 0
    snapshot = worker.stats.snapshot()
    assert 0 < snapshot["first_p50_seconds"] <= snapshot["part_p50_seconds"]


class _HeldRungs(transcode.parts.StreamParts):
    """A stream's part state whose rungs are encoded only once ``release`` is set."""

    release = threading.Event()

    def finish(self) -> tuple[RenditionMedia, ...]:
        assert self.release.wait(30)
        return super().finish()


def test_the_copies_are_announced_before_the_rungs_are_encoded(
    tmp_path: Path, segments: list[ClipSegment], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies' part-ready does not wait for the encoded rungs: while the rung of part 0 is
    held, its source and audio are already in the store and announced."""
    monkeypatch.setattr(transcode.parts, "StreamParts", _HeldRungs)
    _HeldRungs.release.clear()

    async def scenario() -> list[list[str]]:
        bus, store = LocalBus(), FileStore(tmp_path)
        await store.start()
        out = await bus.subscribe([TOPIC_READY], "test")
        worker = PartWorker(bus, store, ladder=parse_ladder("source,90p:100k"))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 30)
        for part in segments[0].raw_parts("cam1", "avc1.64000d")[:2]:
            await bus.publish(TOPIC_PARTS, "cam1", encode(part))
        got = []
        try:
            for _ in range(4):
                message = await asyncio.wait_for(out.get(timeout=30), 60)
                assert message is not None
                event = decode(message.value)
                assert isinstance(event, PartReady)
                got.append([f"{r.name}@{event.part}" for r in event.renditions])
                if len(got) == 1:
                    await asyncio.sleep(0.3)  # nothing more comes while the rung is held
                    assert await out.get(timeout=0.01) is None
                    assert worker.stats.parts == 0  # the part is not done yet
                    _HeldRungs.release.set()
        finally:
            _HeldRungs.release.set()
            stop.set()
            await asyncio.wait_for(task, 30)
        return got

    got = asyncio.run(scenario())
    assert got == [["source@0", "audio@0"], ["90p@0"], ["source@1", "audio@1"], ["90p@1"]]


def test_a_broken_part_is_dead_lettered_and_the_stream_goes_on(
    tmp_path: Path, segments: list[ClipSegment]
) -> None:
    parts = [p for seg in segments for p in seg.raw_parts("cam1", "avc1.64000d")][:12]
    broken = dataclasses.replace(parts[2], data=parts[2].data[:300] + bytes(len(parts[2].data) - 300))
    foreign = StreamState("cam1", EPOCH, Kind.LIVE, "", 0.0)
    values = [encode(p) for p in parts]
    values[2] = encode(broken)
    values.insert(5, encode(foreign))
    # 2 dead; parts 0, 1, 10 and 11 a part-ready for their copies and one for the rung, parts 3-9 one
    got, worker, _ = asyncio.run(run_worker(tmp_path, values, 2 + 4 * 2 + 7))
    dead = [e for e in got if isinstance(e, SegmentDead)]
    assert [(d.seq, d.raw) for d in dead] == [(0, encode(broken))] and "part 2" in dead[0].reason
    ready = [e for e in got if isinstance(e, PartReady)]
    after: dict[tuple[int, int], list[str]] = {}
    for e in ready:
        after.setdefault((e.seq, e.part), []).extend(r.name for r in e.renditions)
    assert list(after) == [(p.seq, p.part) for p in parts if p is not parts[2]]
    assert after[(0, 3)] == ["source", "audio"]  # the rung waits for the next segment's IDR
    assert after[(1, 0)] == ["source", "audio", "90p"]
    assert worker.stats.bad_parts == 1 and worker.stats.decode_errors == 1 and worker.stats.rungs_skipped == 7
    assert worker.dead_letters.sent == 2 and GROUP == "camflow-transcode-parts"


def test_no_low_latency_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["transcode", "--kafka", "k:1", "--no-low-latency"]).no_low_latency
    assert not parser.parse_args(["run"]).no_low_latency


class _Reassigned:
    """A consumer whose assignment moved on (``Rebalancing``): it now owns ``owned`` only."""

    def __init__(self, owned: set[str]) -> None:
        self.generation = 2
        self.owned = owned

    def owns(self, topic: str, key: str) -> bool:
        return topic == TOPIC_PARTS and key in self.owned


def test_a_rebalance_drops_the_streams_gone_elsewhere(tmp_path: Path, segments: list[ClipSegment]) -> None:
    async def scenario() -> tuple[set[str], int]:
        bus, store = LocalBus(), FileStore(tmp_path)
        worker = PartWorker(bus, store, ladder=parse_ladder("source"))
        consumer = await bus.subscribe([TOPIC_PARTS], GROUP)
        for stream in ("cam1", "cam2"):
            part = dataclasses.replace(segments[0].raw_parts(stream, "avc1")[0])
            await bus.publish(TOPIC_PARTS, stream, encode(part))
            message = await consumer.get(timeout=5)
            assert message is not None
            await worker._dispatch(consumer, message, 0.0, asyncio.Event())
        await asyncio.sleep(0.5)
        worker._rebalanced(_Reassigned({"cam2"}))  # type: ignore[arg-type]
        lanes = set(worker._lanes)
        for stream in list(worker._lanes):
            await worker._close_lane(stream, finish=True)
        return lanes, worker._commits.outstanding

    lanes, outstanding = asyncio.run(scenario())
    assert lanes == {"cam2"} and outstanding == 0


class _RefusingBus(LocalBus):
    """The bus refuses the first ``refuse`` part-ready events (a broker down past its timeout)."""

    def __init__(self, refuse: int) -> None:
        super().__init__()
        self.refuse = refuse

    async def publish(self, topic: str, key: str, value: bytes, headers: Any = None) -> None:
        if topic == TOPIC_READY and self.refuse:
            self.refuse -= 1
            raise KafkaTimeoutError("part-ready not acknowledged")
        await super().publish(topic, key, value, headers)


def test_a_refused_part_ready_skips_the_part_and_the_stream_goes_on(
    tmp_path: Path, segments: list[ClipSegment]
) -> None:
    async def scenario() -> tuple[list[tuple[int, int]], PartWorker]:
        bus, store = _RefusingBus(refuse=2), FileStore(tmp_path)
        await store.start()
        out = await bus.subscribe([TOPIC_READY], "test")
        worker = PartWorker(bus, store, ladder=parse_ladder("source"))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 30)
        parts = segments[0].raw_parts("cam1", "avc1")[:5]
        for part in parts:
            await bus.publish(TOPIC_PARTS, "cam1", encode(part))
        got = []
        for _ in range(3):
            message = await asyncio.wait_for(out.get(timeout=30), 60)
            assert message is not None
            event = decode(message.value)
            assert isinstance(event, PartReady)
            got.append((event.seq, event.part))
        stop.set()
        await asyncio.wait_for(task, 30)
        return got, worker

    got, worker = asyncio.run(scenario())
    assert got == [(0, 2), (0, 3), (0, 4)] and worker.stats.publish_failures == 2
    assert worker._commits.outstanding == 0  # the refused parts are committed too: no stall


class _DownStore(FileStore):
    """A store that is down for every write (MinIO stopped), as the retrying store sees it."""

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        raise StoreUnavailable(f"store down: {key}")


@pytest.mark.timeout(60)
def test_stopping_during_a_store_outage_with_a_full_lane_ends_the_worker(
    tmp_path: Path, segments: list[ClipSegment], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is down, so the lane waits on its first part and its queue fills; the worker,
    blocked handing it the next part, still ends when stopped, its parts left uncommitted."""
    monkeypatch.setattr(transcode.parts, "QUEUE_DEPTH", 2)

    async def scenario() -> tuple[bool, int]:
        bus, store = LocalBus(), _DownStore(tmp_path)
        await store.start()
        worker = PartWorker(bus, store, ladder=parse_ladder("source"))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 30)
        parts = [p for s in segments for p in s.raw_parts("cam1", "avc1")][:6]
        for part in parts:
            await bus.publish(TOPIC_PARTS, "cam1", encode(part))
        for _ in range(200):  # bounded: 20 s
            lane = worker._lanes.get("cam1")
            if lane is not None and lane.queue.full():
                break
            await asyncio.sleep(0.1)
        full = lane is not None and lane.queue.full()
        await asyncio.sleep(0.5)  # the worker is now waiting to hand over the next part
        stop.set()
        await asyncio.wait_for(task, 15)
        return full, worker._commits.outstanding

    full, outstanding = asyncio.run(scenario())
    assert full
    assert outstanding > 0  # nothing was committed: the group delivers those parts again
