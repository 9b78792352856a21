"""``camflow dead``: list the dead-letter topic, and put its letters back where they came from.

Reads ``camflow.segments.dead`` outside any consumer group (nothing committed, so every run sees
the whole topic, as far back as ``--since`` and the topic's retention reach) up to its end, then
stops. ``--replay`` publishes each listed letter again to the topic it was consumed from, its
bytes, key and headers as they were (a dead segment: its raw event): once the consumers that
could not read it are upgraded, or the segment's cause is gone. A replayed message is processed
like any other: writes are idempotent, so replaying one twice repeats work and adds nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from camflow.bus.dead import DeadLetter, DeadReason
from camflow.bus.kafka import KafkaBus, KafkaFollower
from camflow.events import TOPIC_DEAD

READ_SECONDS = 60.0  # at most, to reach the end of the topic
REASONS = tuple(r.value for r in DeadReason)


@dataclass(frozen=True)
class DeadOptions:
    kafka: str
    prefix: str
    since: float
    streams: tuple[str, ...]
    reasons: tuple[str, ...]
    json: bool
    replay: bool


def options_from(args: argparse.Namespace) -> DeadOptions:
    return DeadOptions(
        kafka=args.kafka,
        prefix=args.kafka_prefix,
        since=args.since,
        streams=tuple(args.stream or ()),
        reasons=tuple(args.reason or ()),
        json=args.json,
        replay=args.replay,
    )


def selected(letter: DeadLetter, streams: Sequence[str], reasons: Sequence[str]) -> bool:
    """Whether ``letter`` passes the filters (a key names its stream first: ``stream/epoch/seq``)."""
    stream = letter.key.split("/", 1)[0]
    return (not streams or stream in streams) and (not reasons or letter.reason in reasons)


def as_json(letter: DeadLetter) -> dict[str, object]:
    return {
        "at": letter.at,
        "kind": letter.kind.value,
        "reason": letter.reason,
        "error": letter.error,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": letter.key,
        "group": letter.group,
        "bytes": len(letter.value),
    }


def as_line(letter: DeadLetter) -> str:
    at = datetime.fromtimestamp(letter.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if letter.at else "-"
    where = f"{letter.topic or '?'}[{letter.partition}]@{letter.offset}"
    return (
        f"{at}  {letter.reason:<16} {where}  key={letter.key}  group={letter.group or '-'}  "
        f"{len(letter.value)} B  {letter.error}"
    )


async def read_letters(reader: KafkaFollower, limit: float = READ_SECONDS) -> AsyncIterator[DeadLetter]:
    """Every record from where ``reader`` starts to the end of the topic (as far as ``limit`` seconds go)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        message = await reader.get(timeout=0.5)
        if message is not None:
            yield DeadLetter.from_message(message)
        elif await reader.lag() == 0:
            return


async def run_dead(options: DeadOptions, out: TextIO = sys.stdout) -> int:
    bus = KafkaBus(options.kafka, client_id="camflow-dead", prefix=options.prefix)
    if options.replay:
        await bus.start()
    reader = await bus.follow([TOPIC_DEAD], options.since)
    listed = replayed = 0
    try:
        async for letter in read_letters(reader):
            if not selected(letter, options.streams, options.reasons):
                continue
            listed += 1
            print(json.dumps(as_json(letter)) if options.json else as_line(letter), file=out, flush=True)
            if not options.replay:
                continue
            target = letter.replay()
            if target is None:
                print(f"camflow dead: not replayed (source unknown): {as_line(letter)}", file=sys.stderr)
                continue
            await bus.publish(*target)
            replayed += 1
    finally:
        await reader.close()
        await bus.close()
    summary = f"{listed} dead letters" + (f", {replayed} replayed" if options.replay else "")
    print(f"camflow dead: {summary}", file=sys.stderr)
    return 0


def dead_command(args: argparse.Namespace) -> int:
    return asyncio.run(run_dead(options_from(args)))
