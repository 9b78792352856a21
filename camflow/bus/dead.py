"""Dead letters: what a consumer group cannot use goes to ``camflow.segments.dead``, never committed away.

A consumer that commits offsets (the transcoder on the raw topic, the packager on the ready and
streams topics) hands a message it cannot use to ``DeadLetters`` and commits it only once the
dead letter is acknowledged: ``send`` retries, with capped backoff, until it is (cancelling it
leaves the message uncommitted, to be delivered again). So a rolling deploy that puts a newer
writer in front of an older reader (an event of a newer major) or a corrupt value never drops
data silently: it is on the dead-letter topic with the reason, and can be read again
(``camflow dead``).

Every record on the topic says which kind it is in its headers (``dead-kind``):

- ``message``: a consumed message its consumer could not use. The value is the original bytes
  unchanged, the key the original key, the original headers are kept, and ``dead-*`` headers say
  why and whence: ``dead-reason`` (``version``: a type or major the reader does not take, upgrade
  it; ``malformed``: not an event; ``rejected``: an event this consumer does not take there),
  ``dead-error`` (the reader's message), ``dead-topic``, ``dead-key``, ``dead-partition``,
  ``dead-offset``, ``dead-group``, ``dead-at`` (UNIX time).
- ``segment``: a raw segment the transcoder gave up on after its attempts. The value is a
  ``SegmentDead`` event (the raw event inside it), ``dead-reason`` is ``transcode-failed``; the
  other headers as above. Records written before these headers existed have none: a value that
  decodes as ``SegmentDead`` is read as this kind.

Readers that commit nothing (``follow``: the health feed, ``camflow tail``) skip what they cannot
decode: ``Skips`` counts and logs it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from camflow.bus.base import Bus, Message
from camflow.errors import EventDecodeError, EventVersionError
from camflow.events import TOPIC_DEAD, SegmentDead, decode, encode
from camflow.log import get_logger
from camflow.metrics import DEAD_LETTERS, EVENTS_SKIPPED

RETRY_FIRST = 0.5  # seconds before the first retry of a dead letter the bus refused; doubles
RETRY_MAX = 10.0  # seconds between retries at most
PREFIX = "dead-"

log = get_logger("bus.dead")


class DeadKind(enum.Enum):
    MESSAGE = "message"  # the value is the consumed message's bytes, unchanged
    SEGMENT = "segment"  # the value is a SegmentDead event


class DeadReason(enum.Enum):
    VERSION = "version"  # a well-formed event of a type or major this reader does not take
    MALFORMED = "malformed"  # not an event: frame, JSON or a field of the wrong form
    REJECTED = "rejected"  # an event, but not one this consumer takes on this topic
    TRANSCODE_FAILED = "transcode-failed"  # a raw segment the transcoder gave up on


def reason_of(exc: EventDecodeError) -> DeadReason:
    """``version`` for an event of a newer release, ``malformed`` for anything else."""
    return DeadReason.VERSION if isinstance(exc, EventVersionError) else DeadReason.MALFORMED


class DeadLetters:
    """The dead-letter publisher of one consumer group (``group`` names it in the records)."""

    def __init__(self, bus: Bus, group: str) -> None:
        self._bus = bus
        self._group = group
        self.sent = 0
        self.publish_failures = 0

    async def undecodable(self, message: Message, exc: EventDecodeError) -> None:
        """``message`` did not decode: on the dead-letter topic, with why, once this returns."""
        await self.send(message, reason_of(exc), str(exc))

    async def rejected(self, message: Message, why: str) -> None:
        """``message`` decoded to an event this consumer does not take there (``why`` says which)."""
        await self.send(message, DeadReason.REJECTED, why)

    async def send(self, message: Message, reason: DeadReason, error: str) -> None:
        """Publish ``message`` as it came, with ``reason`` and ``error``; retry until acknowledged."""
        headers = {**message.headers, **self._headers(DeadKind.MESSAGE, message, reason, error)}
        await self._publish(message.key, message.value, headers, message, reason)
        log.error(
            "event_dead_lettered",
            stream_id=message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            group=self._group,
            reason=reason.value,
            error=error,
            bytes=len(message.value),
        )

    async def segment(self, message: Message, dead: SegmentDead) -> None:
        """The transcoder gave up on the raw segment in ``message``: ``dead`` on the topic (the
        transcoder logs it, with its attempts)."""
        reason = DeadReason.TRANSCODE_FAILED
        headers = self._headers(DeadKind.SEGMENT, message, reason, dead.reason)
        await self._publish(dead.stream, encode(dead), headers, message, reason)

    def _headers(self, kind: DeadKind, message: Message, reason: DeadReason, error: str) -> dict[str, bytes]:
        fields = {
            "kind": kind.value,
            "reason": reason.value,
            "error": error,
            "topic": message.topic,
            "key": message.key,
            "partition": str(message.partition),
            "offset": str(message.offset),
            "group": self._group,
            "at": f"{time.time():.3f}",
        }
        return {PREFIX + name: value.encode() for name, value in fields.items()}

    async def _publish(
        self, key: str, value: bytes, headers: Mapping[str, bytes], message: Message, reason: DeadReason
    ) -> None:
        def failed(state: RetryCallState) -> None:  # the bus is down or refuses it: not committed
            self.publish_failures += 1
            log.warning(
                "dead_letter_publish_failed",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                error=repr(state.outcome.exception() if state.outcome else None),
                retry_in=state.upcoming_sleep,
            )

        async for attempt in AsyncRetrying(  # until acknowledged: RETRY_FIRST doubling to RETRY_MAX
            wait=wait_exponential(multiplier=RETRY_FIRST, max=RETRY_MAX), before_sleep=failed
        ):
            with attempt:
                await self._bus.publish(TOPIC_DEAD, key, value, headers)
        self.sent += 1
        DEAD_LETTERS.labels(message.topic, reason.value).inc()


class Skips:
    """What one reader that commits nothing (the health feed, ``camflow tail``) could not decode:
    counted by topic and reason (``camflow_events_skipped``) and logged at a power-of-two count."""

    def __init__(self, reader: str) -> None:
        self._reader = reader
        self.count = 0

    def note(self, message: Message, exc: EventDecodeError) -> None:
        reason = reason_of(exc).value
        EVENTS_SKIPPED.labels(message.topic, reason).inc()
        self.count += 1
        if self.count & (self.count - 1) == 0:
            log.warning(
                "event_skipped",
                reader=self._reader,
                topic=message.topic,
                reason=reason,
                error=str(exc),
                count=self.count,
            )


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, as ``camflow dead`` shows it."""

    kind: DeadKind
    reason: str
    error: str
    topic: str  # where the dead message was consumed from ("" when unknown)
    partition: int
    offset: int
    group: str
    at: float
    key: str  # the consumed message's key
    value: bytes = field(repr=False)  # MESSAGE: the original bytes; SEGMENT: the SegmentDead event
    headers: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # the original ones

    def replay(self) -> tuple[str, str, bytes, Mapping[str, bytes]] | None:
        """``(topic, key, value, headers)`` that puts the dead message back where it was consumed
        from (a dead segment: its raw event); None when the record does not say where."""
        if not self.topic:
            return None
        if self.kind is DeadKind.MESSAGE:
            return self.topic, self.key, self.value, self.headers
        try:
            event = decode(self.value)
        except EventDecodeError:
            return None
        return (self.topic, self.key, event.raw, {}) if isinstance(event, SegmentDead) else None

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        """Read a record of the topic (one without ``dead-*`` headers as a SegmentDead event, as
        the transcoder wrote them before the headers existed; failing that, reason ``unknown``)."""
        h = {
            name[len(PREFIX) :]: value.decode("utf-8", "replace")
            for name, value in message.headers.items()
            if name.startswith(PREFIX)
        }
        if h.get("kind") in {kind.value for kind in DeadKind}:
            return cls(
                kind=DeadKind(h["kind"]),
                reason=h.get("reason", ""),
                error=h.get("error", ""),
                topic=h.get("topic", ""),
                partition=_int(h.get("partition")),
                offset=_int(h.get("offset")),
                group=h.get("group", ""),
                at=_float(h.get("at")),
                key=h.get("key", message.key),
                value=message.value,
                headers={k: v for k, v in message.headers.items() if not k.startswith(PREFIX)},
            )
        try:
            event = decode(message.value)
        except EventDecodeError as exc:
            return cls._unknown(message, str(exc))
        if not isinstance(event, SegmentDead):
            return cls._unknown(message, f"a {event.TYPE} event without dead-letter headers")
        return cls(
            kind=DeadKind.SEGMENT,
            reason=DeadReason.TRANSCODE_FAILED.value,
            error=event.reason,
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
            group="",
            at=event.at,
            key=message.key,
            value=message.value,
        )

    @classmethod
    def _unknown(cls, message: Message, error: str) -> DeadLetter:
        return cls(DeadKind.MESSAGE, "unknown", error, "", -1, -1, "", 0.0, message.key, message.value)


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
