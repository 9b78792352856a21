"""Dead letters on the in-process bus: records and their headers, retries until the bus takes one,
the reading back of every kind (and of records from before the headers), skips of readers that
commit nothing, and their metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping

import pytest
from prometheus_client import REGISTRY

from camflow.bus import LocalBus, Message
from camflow.bus import dead as dead_module
from camflow.bus.dead import DeadKind, DeadLetter, DeadLetters, DeadReason, Skips
from camflow.errors import EventDecodeError, EventVersionError
from camflow.events import TOPIC_DEAD, TOPIC_HEALTH, TOPIC_RAW, HealthSample, SegmentDead, decode, encode
from camflow.health import follow_health

CONSUMED = Message(TOPIC_RAW, "cam-1", b"\x00corrupt\xff", {"trace": b"abc"}, partition=5, offset=41)
DEAD = SegmentDead("cam-1", "e1", 7, "no picture", 3, 1_700_000_000.0, TOPIC_RAW, 5, 41, b"CFE1raw")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def dead_record(bus: LocalBus, send: Awaitable[None]) -> Message:
    reader = await bus.follow([TOPIC_DEAD])
    await send
    message = await reader.get(timeout=1.0)
    assert message is not None
    return message


async def test_an_undecodable_message_is_published_as_it_came_with_why_and_whence() -> None:
    bus = LocalBus()
    before = metric("camflow_dead_letters_total", topic=TOPIC_RAW, reason="version")
    letters = DeadLetters(bus, "camflow-transcode")
    record = await dead_record(bus, letters.undecodable(CONSUMED, EventVersionError("raw-segment v9")))
    assert (record.key, record.value, record.headers["trace"]) == ("cam-1", CONSUMED.value, b"abc")
    assert {k: v for k, v in record.headers.items() if k != "dead-at"} == {
        "trace": b"abc",
        "dead-kind": b"message",
        "dead-reason": b"version",
        "dead-error": b"raw-segment v9",
        "dead-topic": TOPIC_RAW.encode(),
        "dead-key": b"cam-1",
        "dead-partition": b"5",
        "dead-offset": b"41",
        "dead-group": b"camflow-transcode",
    }
    letter = DeadLetter.from_message(record)
    assert (letter.kind, letter.reason, letter.topic, letter.partition, letter.offset) == (
        DeadKind.MESSAGE,
        "version",
        TOPIC_RAW,
        5,
        41,
    )
    assert abs(letter.at - time.time()) < 5 and letter.group == "camflow-transcode"
    assert metric("camflow_dead_letters_total", topic=TOPIC_RAW, reason="version") == before + 1


async def test_a_malformed_message_and_a_rejected_event_say_so() -> None:
    bus = LocalBus()
    letters = DeadLetters(bus, "g")
    malformed = await dead_record(bus, letters.undecodable(CONSUMED, EventDecodeError("not JSON")))
    rejected = await dead_record(bus, letters.rejected(CONSUMED, "a health-sample event"))
    assert [DeadLetter.from_message(r).reason for r in (malformed, rejected)] == ["malformed", "rejected"]
    assert letters.sent == 2


async def test_a_dead_segment_is_its_segment_dead_event_marked_as_the_segment_kind() -> None:
    bus = LocalBus()
    record = await dead_record(bus, DeadLetters(bus, "camflow-transcode").segment(CONSUMED, DEAD))
    assert decode(record.value) == DEAD and record.key == "cam-1"
    letter = DeadLetter.from_message(record)
    assert (letter.kind, letter.reason, letter.error) == (DeadKind.SEGMENT, "transcode-failed", "no picture")


def test_a_segment_dead_record_from_before_the_headers_reads_from_its_event() -> None:
    letter = DeadLetter.from_message(Message(TOPIC_DEAD, "cam-1", encode(DEAD)))
    assert (letter.kind, letter.reason, letter.topic, letter.partition, letter.offset, letter.at) == (
        DeadKind.SEGMENT,
        "transcode-failed",
        TOPIC_RAW,
        5,
        41,
        DEAD.at,
    )


@pytest.mark.parametrize(
    ("value", "headers", "error"),
    [
        (b"junk-junk", {}, "expected b'CFE1'"),
        (encode(HealthSample("c", "edge", "h/1", 1.0)), {}, "a health-sample event"),
        (b"x", {"dead-kind": b"message", "dead-offset": b"many", "dead-at": b"soon"}, ""),
    ],
)
def test_records_without_usable_headers_still_read(
    value: bytes, headers: Mapping[str, bytes], error: str
) -> None:
    letter = DeadLetter.from_message(Message(TOPIC_DEAD, "k", value, headers))
    assert error in letter.error and letter.value == value and letter.kind is DeadKind.MESSAGE


class FlakyBus(LocalBus):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        await super().publish(topic, key, value, headers)


async def test_a_refused_dead_letter_is_retried_until_the_bus_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dead_module, "RETRY_FIRST", 0.01)
    bus = FlakyBus(failures=3)
    letters = DeadLetters(bus, "g")
    record = await dead_record(bus, letters.send(CONSUMED, DeadReason.MALFORMED, "bad"))
    assert record.value == CONSUMED.value
    assert (letters.publish_failures, letters.sent, bus.failures) == (3, 1, 0)


async def test_cancelled_while_retrying_it_returns_nothing_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dead_module, "RETRY_FIRST", 0.01)
    letters = DeadLetters(FlakyBus(failures=10**6), "g")
    task = asyncio.create_task(letters.send(CONSUMED, DeadReason.MALFORMED, "bad"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert letters.sent == 0 and letters.publish_failures >= 2


def test_skips_count_by_topic_and_reason() -> None:
    before = metric("camflow_events_skipped_total", topic=TOPIC_HEALTH, reason="malformed")
    skips = Skips("test")
    message = Message(TOPIC_HEALTH, "cam", b"junk")
    skips.note(message, EventDecodeError("junk"))
    skips.note(message, EventVersionError("v9"))
    assert skips.count == 2
    assert metric("camflow_events_skipped_total", topic=TOPIC_HEALTH, reason="malformed") == before + 1


async def test_the_health_feed_skips_what_it_cannot_decode_and_goes_on() -> None:
    bus = LocalBus()
    before = metric("camflow_events_skipped_total", topic=TOPIC_HEALTH, reason="malformed")
    got: list[HealthSample] = []
    stop = asyncio.Event()
    task = asyncio.create_task(follow_health(bus, got.append, stop))
    await asyncio.sleep(0.05)
    sample = HealthSample("cam", "edge", "h/1", 1.0, viewers=2)
    await bus.publish(TOPIC_HEALTH, "cam", b"junk")
    await bus.publish(TOPIC_HEALTH, "cam", encode(sample))
    for _ in range(50):
        if got:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert got == [sample]
    assert metric("camflow_events_skipped_total", topic=TOPIC_HEALTH, reason="malformed") == before + 1
