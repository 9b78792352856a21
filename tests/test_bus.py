from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator

import pytest

from camflow.bus import LocalBus, Message
from camflow.events import TOPIC_RAW, TOPIC_READY
from tests import services

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with importlib.resources.open_text, deprecated in 3.11;
    # the warning is attributed to importlib, so pyproject's "DeprecationWarning:kafka.*" filter misses it.
    warnings.filterwarnings("ignore", "open_text is deprecated", DeprecationWarning)
    from camflow.bus.kafka import KafkaBus, KafkaConsumerAdapter

# --- LocalBus -------------------------------------------------------------------------------------


async def drain(consumer: object, timeout: float = 0.01) -> list[Message]:
    out: list[Message] = []
    for _ in range(1000):
        message = await consumer.get(timeout)  # type: ignore[attr-defined]
        if message is None:
            return out
        out.append(message)
    raise AssertionError("consumer never ran dry")


async def test_local_group_members_compete() -> None:
    bus = LocalBus()
    a = await bus.subscribe([TOPIC_RAW], "transcode")
    b = await bus.subscribe([TOPIC_RAW], "transcode")
    for i in range(10):
        await bus.publish(TOPIC_RAW, "cam", str(i).encode())
    got_a = [m.value for m in (await a.get(0.1), await a.get(0.1), await a.get(0.1)) if m]
    got_b = [m.value for m in await drain(b)]
    assert len(got_a) == 3
    assert sorted(got_a + got_b, key=int) == [str(i).encode() for i in range(10)]
    assert await a.get(0.01) is None


async def test_local_two_groups_each_get_every_message() -> None:
    bus = LocalBus()
    transcode = await bus.subscribe([TOPIC_RAW], "transcode")
    archive = await bus.subscribe([TOPIC_RAW, TOPIC_READY], "archive")
    await bus.publish(TOPIC_RAW, "cam", b"raw-0", {"h": b"1"})
    await bus.publish(TOPIC_READY, "cam", b"ready-0")
    await bus.publish(TOPIC_RAW, "cam", b"raw-1")
    assert [m.value for m in await drain(transcode)] == [b"raw-0", b"raw-1"]
    got = await drain(archive)
    assert [(m.topic, m.value, m.offset) for m in got] == [
        (TOPIC_RAW, b"raw-0", 0),
        (TOPIC_READY, b"ready-0", 0),
        (TOPIC_RAW, b"raw-1", 1),
    ]
    assert got[0].headers == {"h": b"1"} and got[0].key == "cam"


async def test_local_full_queue_makes_publish_wait() -> None:
    bus = LocalBus(queue_size=2)
    consumer = await bus.subscribe([TOPIC_RAW], "slow")
    await bus.publish(TOPIC_RAW, "cam", b"0")
    await bus.publish(TOPIC_RAW, "cam", b"1")
    blocked = asyncio.create_task(bus.publish(TOPIC_RAW, "cam", b"2"))
    done, _ = await asyncio.wait({blocked}, timeout=0.05)
    assert not done, "publish into a full queue returned instead of waiting"
    first = await consumer.get(0.1)
    assert first is not None and first.value == b"0"
    await asyncio.wait_for(blocked, timeout=1.0)
    assert [m.value for m in await drain(consumer)] == [b"1", b"2"]


async def test_local_publish_without_group_is_counted_and_dropped() -> None:
    bus = LocalBus()
    await bus.publish(TOPIC_RAW, "cam", b"lost")
    await bus.publish(TOPIC_RAW, "cam", b"lost too")
    consumer = await bus.subscribe([TOPIC_RAW], "late")
    await bus.publish(TOPIC_RAW, "cam", b"kept")
    assert bus.dropped_unsubscribed == {TOPIC_RAW: 2}
    got = await drain(consumer)
    assert [(m.value, m.offset) for m in got] == [(b"kept", 2)]


async def test_local_get_times_out_with_none() -> None:
    consumer = await LocalBus().subscribe([TOPIC_RAW], "idle")
    started = time.monotonic()
    assert await consumer.get(0.05) is None
    assert 0.04 <= time.monotonic() - started < 1.0


async def test_local_closed_consumer_gets_none() -> None:
    bus = LocalBus()
    consumer = await bus.subscribe([TOPIC_RAW], "g")
    await bus.publish(TOPIC_RAW, "cam", b"x")
    await consumer.close()
    assert await consumer.get(0.01) is None


# --- KafkaBus (real broker) -----------------------------------------------------------------------

RECEIVE_SECONDS = 60.0  # first poll of a new group waits for the group join and assignment


@pytest.fixture
async def kafka() -> AsyncIterator[KafkaBus]:
    bootstrap = services.require("kafka")
    bus = KafkaBus(bootstrap, client_id="camflow-test", prefix=f"t{uuid.uuid4().hex}.")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


async def receive(consumer: KafkaConsumerAdapter, seconds: float = RECEIVE_SECONDS) -> Message:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await consumer.get(timeout=0.5)
        if message is not None:
            return message
    raise AssertionError(f"no message within {seconds} s")


async def nothing_within(consumer: KafkaConsumerAdapter, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await consumer.get(timeout=0.5)
        assert message is None, f"unexpected redelivery at offset {message.offset}"


async def test_kafka_round_trip_of_a_large_value_with_headers(kafka: KafkaBus) -> None:
    value = os.urandom(5 * 1024 * 1024)
    consumer = await kafka.subscribe([TOPIC_RAW], "big")
    await kafka.publish(TOPIC_RAW, "cam-1", value, {"content-type": b"video/mp4", "bin": b"\x00\xff"})
    message = await receive(consumer)
    assert message.topic == TOPIC_RAW and message.key == "cam-1"
    assert message.headers == {"content-type": b"video/mp4", "bin": b"\x00\xff"}
    assert len(message.value) == len(value) and message.value == value


async def test_kafka_uncommitted_message_is_redelivered_to_the_group(kafka: KafkaBus) -> None:
    await kafka.publish(TOPIC_READY, "cam-1", b"segment-1")
    first = await kafka.subscribe([TOPIC_READY], "packager")
    message = await receive(first)
    assert message.value == b"segment-1"
    await first.close()  # crashed before commit

    second = await kafka.subscribe([TOPIC_READY], "packager")
    again = await receive(second)
    assert (again.value, again.partition, again.offset) == (b"segment-1", message.partition, message.offset)
    await second.commit(again)
    await second.close()

    third = await kafka.subscribe([TOPIC_READY], "packager")
    await kafka.publish(TOPIC_READY, "cam-1", b"segment-2")
    assert (await receive(third)).value == b"segment-2"  # not segment-1: its offset was committed
    await nothing_within(third, 1.0)


async def test_kafka_two_groups_each_get_the_message(kafka: KafkaBus) -> None:
    transcode = await kafka.subscribe([TOPIC_RAW], "transcode")
    archive = await kafka.subscribe([TOPIC_RAW], "archive")
    await kafka.publish(TOPIC_RAW, "cam-1", b"one")
    got = await asyncio.gather(receive(transcode), receive(archive))
    assert [m.value for m in got] == [b"one", b"one"]


async def test_kafka_publish_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        await KafkaBus("127.0.0.1:9").publish(TOPIC_RAW, "cam", b"x")
