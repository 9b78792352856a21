"""``camflow dead`` as a process against the real Kafka: it lists every kind of dead letter
(and a segment-dead record from before the dead-letter headers), filters by stream and reason,
and ``--replay`` puts letters back on the topic they came from, bytes, key and headers unchanged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import pytest

from camflow.bus import Message
from camflow.bus.dead import DeadLetters
from camflow.bus.kafka import KafkaBus
from camflow.errors import EventDecodeError, EventVersionError
from camflow.events import TOPIC_DEAD, TOPIC_RAW, TOPIC_READY, SegmentDead, encode
from tests import services
from tests.process import CAMFLOW

pytestmark = pytest.mark.integration
NEWER = b'CFE1\x00\x00\x00\x1c{"type":"raw-segment","v":9}\x00moof'
RAW = b"CFE1 a raw segment that would not transcode"


def dead(kafka: str, prefix: str, *flags: str) -> tuple[list[str], str]:
    """``camflow dead``'s stdout lines and stderr."""
    done = subprocess.run(
        [*CAMFLOW, "dead", "--kafka", kafka, "--kafka-prefix", prefix, *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines(), done.stderr


async def fill(kafka: str, prefix: str) -> None:
    bus = KafkaBus(kafka, prefix=prefix)
    await bus.start()
    try:
        transcode, packager = DeadLetters(bus, "camflow-transcode"), DeadLetters(bus, "camflow-packager")
        newer = Message(TOPIC_RAW, "cam-a/E/3", NEWER, {"trace": b"t-1"}, partition=2, offset=9)
        await transcode.undecodable(newer, EventVersionError("raw-segment version 9"))
        await packager.undecodable(
            Message(TOPIC_READY, "cam-b", b"\x00junk", partition=1, offset=4), EventDecodeError("junk")
        )
        segment = SegmentDead("cam-c", "E", 4, "no picture", 3, time.time(), TOPIC_RAW, 1, 7, RAW)
        await transcode.segment(Message(TOPIC_RAW, "cam-c/E/4", RAW, partition=1, offset=7), segment)
        before_headers = SegmentDead("cam-d", "E", 5, "decoder crashed", 3, time.time(), TOPIC_RAW, 0, 2, RAW)
        await bus.publish(TOPIC_DEAD, "cam-d", encode(before_headers))
    finally:
        await bus.close()


async def raw_topic(kafka: str, prefix: str, want: int) -> list[Message]:
    bus = KafkaBus(kafka, prefix=prefix)
    got: list[Message] = []
    try:
        consumer = await bus.subscribe([TOPIC_RAW], "test-raw")
        deadline = time.monotonic() + 60
        while len(got) < want and time.monotonic() < deadline:
            message = await consumer.get(timeout=0.5)
            if message is not None:
                got.append(message)
    finally:
        await bus.close()
    return got


def test_dead_lists_filters_and_replays() -> None:
    kafka = services.require("kafka")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    asyncio.run(fill(kafka, prefix))

    lines, err = dead(kafka, prefix, "--json")
    rows = sorted((json.loads(line) for line in lines), key=lambda r: r["key"])
    assert "4 dead letters" in err
    assert [
        (r["key"], r["kind"], r["reason"], r["topic"], r["partition"], r["offset"], r["group"]) for r in rows
    ] == [
        ("cam-a/E/3", "message", "version", TOPIC_RAW, 2, 9, "camflow-transcode"),
        ("cam-b", "message", "malformed", TOPIC_READY, 1, 4, "camflow-packager"),
        ("cam-c/E/4", "segment", "transcode-failed", TOPIC_RAW, 1, 7, "camflow-transcode"),
        ("cam-d", "segment", "transcode-failed", TOPIC_RAW, 0, 2, ""),
    ]
    assert rows[0]["error"] == "raw-segment version 9" and rows[0]["bytes"] == len(NEWER)

    text, _ = dead(kafka, prefix, "--reason", "version")
    assert (
        len(text) == 1
        and "version" in text[0]
        and f"{TOPIC_RAW}[2]@9" in text[0]
        and "key=cam-a/E/3" in text[0]
    )

    _, err = dead(kafka, prefix, "--stream", "cam-a", "--replay")
    assert "1 dead letters, 1 replayed" in err
    _, err = dead(kafka, prefix, "--reason", "transcode-failed", "--replay")
    assert "2 dead letters, 2 replayed" in err
    back = sorted(asyncio.run(raw_topic(kafka, prefix, 3)), key=lambda m: m.key)
    assert [(m.key, m.value, dict(m.headers)) for m in back] == [
        ("cam-a/E/3", NEWER, {"trace": b"t-1"}),
        ("cam-c/E/4", RAW, {}),
        ("cam-d", RAW, {}),
    ]
