"""Publishing an event that must not be lost: repeated until the bus acknowledges it.

A consumer that publishes an event for a message before it commits that message's offset (the
transcoder's ``segment-ready``) cannot skip the event: committing without it would lose the
segment, and failing the whole service on a bus outage (Kafka stopped, its metadata not there yet
as it comes back, a delivery that timed out) ends every other segment in hand with it.
``publish_until_acknowledged`` repeats the publish, with capped exponential backoff, for as long
as the bus refuses it; the caller waits inside it, so its offset stays uncommitted meanwhile.

When the service stops first, it raises ``BusRetryStopped``: nothing was acknowledged, the offset
is not committed, and the bus delivers the message again to whoever consumes it next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from camflow.bus.base import Bus, Consumer, Message
from camflow.errors import BusRetryStopped

RETRY_FIRST = 0.5  # seconds before the first repeat; doubles
RETRY_MAX = 5.0  # seconds between repeats at most
LOG_EVERY = 10  # a failure is logged on the first attempt and every this many after


def pause_before(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...)."""
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** min(failures - 1, 16))


async def publish_until_acknowledged(
    bus: Bus,
    topic: str,
    key: str,
    value: bytes,
    *,
    stop: asyncio.Event,
    log: Any,
    headers: Mapping[str, bytes] | None = None,
) -> int:
    """Publish, repeating on any failure until acknowledged; the attempts that failed. Raises
    ``BusRetryStopped`` when ``stop`` is set before then (checked between attempts)."""
    failures = 0
    while True:
        try:
            await bus.publish(topic, key, value, headers)
        except Exception as exc:
            failures += 1
            pause = pause_before(failures)
            if failures == 1 or failures % LOG_EVERY == 0:
                log.warning(
                    "publish_failed",
                    topic=topic,
                    stream_id=key,
                    attempt=failures,
                    retry_in=pause,
                    error=repr(exc),
                )
        else:
            if failures:
                log.info("publish_recovered", topic=topic, stream_id=key, failed_attempts=failures)
            return failures
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
        if stop.is_set():
            raise BusRetryStopped(
                f"stopped before {topic!r} acknowledged the event ({failures} attempt(s) failed)"
            )


class Polls:
    """One consumer's polls, riding out a bus outage: a poll that fails (kafka-python can raise from
    a poll while the brokers are away or just back) is logged (its first failure and every
    ``LOG_EVERY``-th), counted in ``errors``, and answered None after a pause (capped backoff, cut
    short by ``stop``), so the caller's loop polls again instead of ending the service."""

    def __init__(self, consumer: Consumer, log: Any) -> None:
        self._consumer = consumer
        self._log = log
        self._failing = 0  # failures in a row
        self.errors = 0  # failures since start

    async def get(self, timeout: float, stop: asyncio.Event) -> Message | None:
        try:
            message = await self._consumer.get(timeout=timeout)
        except Exception as exc:
            self._failing += 1
            self.errors += 1
            pause = pause_before(self._failing)
            if self._failing == 1 or self._failing % LOG_EVERY == 0:
                self._log.warning("poll_failed", attempt=self._failing, retry_in=pause, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            return None
        if self._failing:
            self._log.info("poll_recovered", failed_polls=self._failing)
            self._failing = 0
        return message
