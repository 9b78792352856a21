"""The transcoder during a store outage (LocalBus, a FileStore that can be "down", a real segment
through the real pool): the segment waits for the store, counts no failed attempt and is never
dead-lettered; its offset is committed only once its writes landed; a stop during the outage ends
the worker at once without committing it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from camflow.bus import Consumer
from camflow.events import TOPIC_DEAD, TOPIC_RAW, TOPIC_READY, encode
from tests import defaults
from tests.test_packager import RecordingBus
from tests.test_store_retry import FlakyStore
from tests.test_transcode_service import EPOCH, raw_event
from tests.transcode_clips import RawClipSegment, cut, make_clip
from tests.waits import until
from transcode.ladder import parse_ladder
from transcode.service import TranscodeWorker


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> RawClipSegment:
    return cut(make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 2, "640x360"))[0]


class Rig:
    def __init__(self, bus: RecordingBus, store: FlakyStore, worker: TranscodeWorker) -> None:
        self.bus, self.store, self.worker = bus, store, worker
        self.raw = bus.consumer  # the worker's: what it committed


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, asyncio.Event, asyncio.Task[None]]]:
    bus, store = RecordingBus(), FlakyStore(tmp_path)
    await store.start()
    worker = TranscodeWorker(
        bus, store, **defaults.transcoder(ladder=parse_ladder("source"), processes=1, concurrency=1)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)
    yield Rig(bus, store, worker), stop, task
    store.down = False
    stop.set()
    await asyncio.wait_for(task, 30)


async def in_outage(r: Rig, segment: RawClipSegment) -> Consumer:
    """The store goes down and a segment comes in: once the worker meets the outage, a reader of
    what it publishes (ready and dead-letter topics)."""
    published = await r.bus.subscribe([TOPIC_READY, TOPIC_DEAD], "test")
    r.store.down = True
    await r.bus.publish(TOPIC_RAW, "cam1", encode(raw_event(segment)))
    await until("the worker meets the outage", lambda: not r.worker.store_outage.up)
    return published


async def test_a_segment_waits_out_the_outage_and_is_committed_after_its_writes(
    rig: tuple[Rig, asyncio.Event, asyncio.Task[None]], segment: RawClipSegment
) -> None:
    r, _, _ = rig
    ready = await in_outage(r, segment)
    await asyncio.sleep(2.0)  # longer than the attempts' delays: an outage is no attempt
    assert r.worker.stats.failed_attempts == 0 and r.worker.stats.dead_lettered == 0
    assert r.raw.committed == [] and await ready.get(timeout=0.1) is None
    r.store.down = False
    message = await ready.get(timeout=30)
    assert message is not None and message.topic == TOPIC_READY
    await until("committed", lambda: len(r.raw.committed) == 1)
    assert r.worker.stats.failed_attempts == 0 and r.worker.stats.dead_lettered == 0
    assert r.worker.store_outage.up and r.worker.store_outage.outages == 1
    assert (r.store.root / f"streams/cam1/{EPOCH}/source/00000000.m4s").exists()


async def test_a_stop_during_the_outage_ends_at_once_without_committing(
    rig: tuple[Rig, asyncio.Event, asyncio.Task[None]], segment: RawClipSegment
) -> None:
    r, stop, task = rig
    ready = await in_outage(r, segment)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 3.0  # the pool's shutdown included
    assert r.raw.committed == [] and await ready.get(timeout=0.1) is None
    assert r.worker.stats.dead_lettered == 0
