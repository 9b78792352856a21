"""The transcoder during a bus outage (LocalBus made to refuse, a FileStore, a real segment through
the real pool). Kafka stopped for a while: the ready event's publish fails as KafkaBus fails it
(``KafkaTimeoutError`` once the delivery timeout passes, ``KafkaError`` when send() finds no
metadata) and polls can raise. None of it ends the worker (the chaos scenario ``kafka-stopped`` saw
``camflow transcode`` exit 1 and the rest of the push lost): the ready event is published again
until acknowledged, its offset committed only then; a failed poll is polled again; a stop while
the bus refuses ends the worker at once with the segment uncommitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError

from camflow.bus import Message
from camflow.bus.retry import Polls, pause_before, publish_until_acknowledged
from camflow.errors import BusRetryStopped
from camflow.events import TOPIC_DEAD, TOPIC_RAW, TOPIC_READY, SegmentReady, decode, encode
from camflow.log import get_logger
from camflow.store import FileStore
from tests import defaults
from tests.test_packager import RecordingBus, RecordingConsumer
from tests.test_transcode_service import raw_event
from tests.transcode_clips import RawClipSegment, cut, make_clip
from tests.waits import until
from transcode.ladder import parse_ladder
from transcode.service import TranscodeWorker

log = get_logger("test")


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> RawClipSegment:
    return cut(make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 2, "640x360"))[0]


class DownBus(RecordingBus):
    """A bus whose ready topic is away while ``down`` (its publishes raise, as KafkaBus's do) and whose
    consumers' polls raise ``poll_failures`` times."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0
        self.poll_failures = 0

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if self.down and topic == TOPIC_READY:
            self.refused += 1
            await asyncio.sleep(0.01)
            if self.refused % 2:
                raise KafkaTimeoutError(f"publish to {topic!r} not acknowledged within 122 s")
            raise KafkaError(f"no metadata for {topic!r}: Failed to update metadata after 5.0 secs.")
        await super().publish(topic, key, value, headers)

    async def subscribe(self, topics: Sequence[str], group: str) -> RecordingConsumer:  # type: ignore[override]
        consumer = await super().subscribe(topics, group)
        inner_get = consumer.get

        async def get(timeout: float = 1.0) -> Message | None:
            if self.poll_failures > 0:
                self.poll_failures -= 1
                raise KafkaError("NodeNotReadyError: the coordinator is away")
            return await inner_get(timeout)

        consumer.get = get  # type: ignore[method-assign]
        return consumer


class Rig:
    def __init__(self, bus: DownBus, root: Path, worker: TranscodeWorker, task: asyncio.Task[None]) -> None:
        self.bus, self.root, self.worker, self.task = bus, root, worker, task
        self.raw = bus.consumer  # the worker's: what it committed


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, asyncio.Event]]:
    bus, store = DownBus(), FileStore(tmp_path)
    await store.start()
    worker = TranscodeWorker(
        bus, store, **defaults.transcoder(ladder=parse_ladder("source"), processes=1, concurrency=1)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)
    yield Rig(bus, tmp_path, worker, task), stop
    bus.down = False
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_a_ready_event_the_bus_refuses_is_published_again_and_committed_after(
    rig: tuple[Rig, asyncio.Event], segment: RawClipSegment
) -> None:
    r, _ = rig
    published = await r.bus.subscribe([TOPIC_READY, TOPIC_DEAD], "test")
    r.bus.down = True
    await r.bus.publish(TOPIC_RAW, "cam1", encode(raw_event(segment)))
    await until("the bus refuses the ready event twice", lambda: r.bus.refused >= 2)
    await asyncio.sleep(0.5)
    assert not r.task.done(), r.task.exception() if r.task.done() else None  # the worker lives on
    assert r.raw.committed == [] and await published.get(timeout=0.1) is None
    r.bus.down = False  # Kafka is back
    message = await published.get(timeout=30)
    assert message is not None and message.topic == TOPIC_READY
    ready = decode(message.value)
    assert isinstance(ready, SegmentReady) and ready.seq == segment.seq
    await until("committed", lambda: len(r.raw.committed) == 1)
    stats = r.worker.stats
    assert stats.segments == 1 and stats.publish_retries >= 2
    assert stats.failed_attempts == 0 and stats.dead_lettered == 0 and not r.task.done()


async def test_a_poll_that_fails_is_polled_again(
    rig: tuple[Rig, asyncio.Event], segment: RawClipSegment
) -> None:
    r, _ = rig
    published = await r.bus.subscribe([TOPIC_READY], "test")
    r.bus.poll_failures = 2
    await until("both failed polls", lambda: r.bus.poll_failures == 0, timeout=10)
    await r.bus.publish(TOPIC_RAW, "cam1", encode(raw_event(segment)))
    assert await published.get(timeout=30) is not None
    await until("committed", lambda: len(r.raw.committed) == 1)
    assert r.worker.stats.poll_errors == 2 and not r.task.done()


async def test_a_stop_while_the_bus_refuses_ends_at_once_without_committing(
    rig: tuple[Rig, asyncio.Event], segment: RawClipSegment
) -> None:
    r, stop = rig
    r.bus.down = True
    await r.bus.publish(TOPIC_RAW, "cam1", encode(raw_event(segment)))
    await until("the bus refuses the ready event", lambda: r.bus.refused >= 1)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(r.task, 10)  # returns: no exception out of the worker
    assert time.monotonic() - started < 3.0  # the pool's shutdown included
    assert r.raw.committed == [] and r.worker.stats.segments == 0


async def test_publish_until_acknowledged_backs_off_and_stops() -> None:
    assert [pause_before(n) for n in (1, 2, 3, 4, 5, 100)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    bus = DownBus()
    bus.down = True
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.7, stop.set)
    started = time.monotonic()
    with pytest.raises(BusRetryStopped):
        await publish_until_acknowledged(bus, TOPIC_READY, "cam1", b"x", stop=stop, log=log)
    assert bus.refused == 2 and time.monotonic() - started < 1.5  # at 0, at 0.5 s; the stop at 0.7 s


async def test_polls_answer_none_on_a_failed_poll_and_pass_messages_on() -> None:
    bus = DownBus()
    consumer = await bus.subscribe([TOPIC_RAW], "g")
    polls, stop = Polls(consumer, log), asyncio.Event()
    bus.poll_failures = 1
    await bus.publish(TOPIC_RAW, "cam1", b"v")
    assert await polls.get(0.1, stop) is None and polls.errors == 1
    message = await polls.get(0.1, stop)
    assert message is not None and message.value == b"v" and polls.errors == 1
