"""Dead letters through the real Kafka, with the real transcoder and packager in this process.

- A next-minor raw segment and a next-minor ready event (hand-built as a newer release would write
  them, ``tests.newer_events``) are processed: the stream's playlist names them.
- A corrupt raw value, a next-major raw segment, a health sample on the ready topic and a corrupt
  stream-state value land on the dead-letter topic with their reason, group and source, their bytes
  and key unchanged; every offset of both groups is committed after.
- While the dead-letter publish fails, the transcoder retries it and commits nothing; once it goes
  through, the dead letter is on the topic and the offset moves past it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from camflow.bus import Bus, Message
from camflow.bus.dead import DeadKind, DeadLetter
from camflow.bus.kafka import KafkaBus, KafkaConsumerAdapter
from camflow.errors import NotFound
from camflow.events import (
    TOPIC_DEAD,
    TOPIC_RAW,
    TOPIC_READY,
    TOPIC_STREAMS,
    HealthSample,
    RenditionRef,
    encode,
)
from camflow.keys import init_key, media_playlist_key, segment_key
from camflow.store import FileStore
from packager.service import GROUP as PACKAGER_GROUP
from packager.service import Packager
from tests import defaults, services
from tests.kafka_groups import committed
from tests.newer_events import RawSegmentNextMajor, RawSegmentNextMinor, SegmentReadyNextMinor
from tests.transcode_clips import TIMESCALE, cut, make_clip
from transcode.ladder import parse_ladder
from transcode.service import GROUP as TRANSCODE_GROUP
from transcode.service import TranscodeWorker

pytestmark = pytest.mark.integration
EPOCH = "20261203T100000000Z"
WAIT = 60.0


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.3)


async def drain(consumer: KafkaConsumerAdapter, want: int, into: list[Message]) -> list[Message]:
    """Read until ``into`` holds ``want`` messages (or the wait is over)."""
    deadline = time.monotonic() + WAIT
    while len(into) < want and time.monotonic() < deadline:
        message = await consumer.get(timeout=0.5)
        if message is not None:
            into.append(message)
    return into


@asynccontextmanager
async def kafka_bus() -> AsyncIterator[tuple[str, str, KafkaBus]]:
    kafka = services.require("kafka")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    bus = KafkaBus(kafka, prefix=prefix)
    await bus.start()
    try:
        yield kafka, prefix, bus
    finally:
        await bus.close()


@asynccontextmanager
async def running(*services_: TranscodeWorker | Packager) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in services_]
    try:
        for s in services_:
            await asyncio.wait_for(s.ready.wait(), WAIT)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)


def transcoder(bus: Bus, store: FileStore) -> TranscodeWorker:
    return TranscodeWorker(
        bus, store, **defaults.transcoder(ladder=parse_ladder("source"), processes=1, max_attempts=1)
    )


async def test_newer_minors_are_processed_and_the_undecodable_dead_lettered(tmp_path: Path) -> None:
    clip = cut(make_clip(tmp_path / "clip.mp4", 2, "320x180"))[0]
    store = FileStore(tmp_path / "store")
    await store.start()
    span: dict[str, Any] = {
        "epoch": EPOCH,
        "seq": 0,
        "start": clip.start,
        "duration": clip.duration,
        "timescale": TIMESCALE,
    }
    newer_raw = RawSegmentNextMinor(
        stream="cam-raw", **span, codecs="avc1.64000d", width=320, height=180, wall_clock=time.time(),
        data=clip.data, lens="tele",
    )  # fmt: skip
    ref = RenditionRef(
        "source",
        320,
        180,
        300_000,
        "avc1.64000d",
        init_key("cam-ready", EPOCH, "source"),
        segment_key("cam-ready", EPOCH, "source", 0),
        9,
    )
    newer_ready = SegmentReadyNextMinor(
        stream="cam-ready", **span, wall_clock=time.time(), renditions=(ref,), origin="site-b"
    )
    major = RawSegmentNextMajor(**{**newer_raw.__dict__, "stream": "cam-major"})
    corrupt_raw = b'CFE1\x00\x00\x00\x09{"type":' + bytes(range(256))
    corrupt_state = b"\x00not an event at all"
    health = HealthSample("cam-h", "ingest", "host/1", time.time())
    bad = [
        (TOPIC_RAW, "cam-x", corrupt_raw, "malformed", TRANSCODE_GROUP),
        (TOPIC_RAW, "cam-major", encode(major), "version", TRANSCODE_GROUP),
        (TOPIC_READY, "cam-h", encode(health), "rejected", PACKAGER_GROUP),
        (TOPIC_STREAMS, "cam-y", corrupt_state, "malformed", PACKAGER_GROUP),
    ]
    async with kafka_bus() as (kafka, prefix, bus):
        dead = await bus.subscribe([TOPIC_DEAD], "test-dead")
        sources = await bus.subscribe([TOPIC_RAW, TOPIC_READY, TOPIC_STREAMS], "test-sources")
        packager = Packager(bus, store, **defaults.packager())
        async with running(transcoder(bus, store), packager):
            for topic, key, value, _, _ in bad[:2]:
                await bus.publish(topic, key, value, {"origin": b"test"})
            await bus.publish(TOPIC_RAW, "cam-raw", encode(newer_raw))
            for topic, key, value, _, _ in bad[2:]:
                await bus.publish(topic, key, value, {"origin": b"test"})
            await bus.publish(TOPIC_READY, "cam-ready", encode(newer_ready))

            async def listed(stream: str, uri: str) -> bool:
                try:
                    return uri in (await store.get(media_playlist_key(stream, "source"))).decode()
                except NotFound:
                    return False

            await until(
                lambda: listed("cam-raw", f"{EPOCH}/source/00000000.m4s"), "the newer-minor raw segment"
            )
            await until(
                lambda: listed("cam-ready", f"{EPOCH}/source/00000000.m4s"), "the newer-minor ready event"
            )
            records = await drain(dead, len(bad), [])
            letters = [DeadLetter.from_message(m) for m in records]
            # 3 raw, 3 ready (the transcoder's own), 1 streams: every one committed by its group
            for group, topic, count in [
                (TRANSCODE_GROUP, TOPIC_RAW, 3),
                (PACKAGER_GROUP, TOPIC_READY, 3),
                (PACKAGER_GROUP, TOPIC_STREAMS, 1),
            ]:

                async def done(group: str = group, topic: str = topic, count: int = count) -> bool:
                    return await asyncio.to_thread(committed, kafka, prefix + group, prefix + topic) == count

                await until(done, f"{group} committed {count} on {topic}")
        origin = {m.value: m for m in await drain(sources, 7, [])}

    assert sorted((d.topic, d.key, d.value, d.reason, d.group) for d in letters) == sorted(
        (t, k, v, r, g) for t, k, v, r, g in bad
    )
    assert all(m.headers["origin"] == b"test" and m.headers["dead-kind"] == b"message" for m in records)
    for letter in letters:
        assert letter.kind is DeadKind.MESSAGE and letter.error and letter.at > 0
        source = origin[letter.value]
        assert (letter.partition, letter.offset) == (source.partition, source.offset)
    by_reason = {d.reason: d.error for d in letters}
    assert "version 4 is not one this reader accepts" in by_reason["version"]
    assert "health-sample event of stream 'cam-h'" in by_reason["rejected"]
    assert packager.stats.decode_errors == 1 and packager.stats.rejected == 1


class RefusingDeadLetters:
    """The real bus, but a publish to the dead-letter topic fails while ``refuse`` is set, as it
    does when the broker is unreachable. (Lowering the topic's max.message.bytes under the record
    is no way to do it: kafka-python's idempotent producer takes MessageSizeTooLarge from the
    broker as fatal and refuses every publish after it.)"""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self.refuse = True
        self.refused = 0

    async def start(self) -> None:
        await self._bus.start()

    async def close(self) -> None:
        await self._bus.close()

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if topic == TOPIC_DEAD and self.refuse:
            self.refused += 1
            raise KafkaTimeoutError(f"{topic}: refused by the test")
        await self._bus.publish(topic, key, value, headers)

    async def subscribe(self, topics: Sequence[str], group: str) -> KafkaConsumerAdapter:
        return await self._bus.subscribe(topics, group)


async def test_no_commit_until_the_dead_letter_is_on_the_topic(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    corrupt = b"CFE1" + bytes(4096)
    async with kafka_bus() as (kafka, prefix, bus):
        gate = RefusingDeadLetters(bus)
        dead = await bus.subscribe([TOPIC_DEAD], "test-dead")
        worker = transcoder(gate, store)
        async with running(worker):
            await bus.publish(TOPIC_RAW, "cam-1", corrupt)

            async def refused() -> bool:
                return gate.refused >= 3

            await until(refused, "the dead-letter publish refused three times")
            assert (
                await asyncio.to_thread(committed, kafka, prefix + TRANSCODE_GROUP, prefix + TOPIC_RAW) == 0
            )
            assert worker.dead_letters.sent == 0 and worker.dead_letters.publish_failures == 3
            gate.refuse = False
            letter = DeadLetter.from_message((await drain(dead, 1, []))[0])

            async def moved_on() -> bool:
                count = await asyncio.to_thread(
                    committed, kafka, prefix + TRANSCODE_GROUP, prefix + TOPIC_RAW
                )
                return count == 1

            await until(moved_on, "the raw offset committed after the dead letter")
    assert (letter.value, letter.reason, letter.topic, letter.key) == (
        corrupt,
        "malformed",
        TOPIC_RAW,
        "cam-1",
    )
    assert worker.dead_letters.sent == 1 and worker.stats.decode_errors == 1
