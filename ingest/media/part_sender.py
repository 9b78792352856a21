"""Parts (low-latency HLS) from one publish session to the bus: live only, never spooled, never waited for.

A part is worth something for a second or two; a segment is the record. So parts skip ingest's spool
(``ingest.media.spooled_bus``) and go straight to the bus behind it, from a small bounded queue with
one sender task keeping up to ``IN_FLIGHT`` publishes in flight, in order (one at a time, a bus round
trip slower than a part, as on a loaded machine, dropped parts): when the bus is down or slow (a
publish not acknowledged within ``timeout``), parts are dropped, the oldest first when the queue is
full, counted (``parts_dropped``, a media correction of the health sample and of
``camflow_ingest_media_corrections``) and logged at most once per ``LOG_INTERVAL``. Segments keep
going to the spool as before; nothing here waits on the camera's path.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from camflow.bus import Bus
from camflow.events import TOPIC_PARTS, RawPart, encode
from ingest.media.cuts import CutPart
from ingest.media.mux import SegmentMuxer

QUEUE_PARTS = 8  # parts waiting for the bus (1.6 s of 200 ms parts); a full queue drops its oldest
IN_FLIGHT = 4  # publishes awaiting their acknowledgement at once (in order: see ``_run``)
PUBLISH_TIMEOUT = 1.0  # seconds a publish may take before its part counts as dropped
CLOSE_SECONDS = 2.0  # at the end of a session, how long the last parts may take to go
LOG_INTERVAL = 10.0  # seconds between two log lines about dropped parts


@dataclass
class PartCounters:
    parts_dropped: int = 0  # the bus was down, slow, or the queue full
    parts_unmuxable: int = 0


class PartSender:
    def __init__(
        self,
        bus: Bus,
        stream: str,
        log: Any,
        *,
        queue: int = QUEUE_PARTS,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.log = log
        self.counters = PartCounters()
        self.cut = 0
        self.published = 0
        self._queue: deque[RawPart] = deque()
        self._max = queue
        self._timeout = PUBLISH_TIMEOUT if timeout is None else timeout
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._clock = clock
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._logged_at: float | None = None
        self._unlogged = 0

    def mux(self, muxer: SegmentMuxer, part: CutPart) -> tuple[bytes, str, int, int] | None:
        """(data, codecs, width, height) of a part, with the segments' muxer; None (counted) if it fails."""
        self.cut += 1
        try:
            data = muxer.mux(part)
        except Exception as exc:
            self.counters.parts_unmuxable += 1
            self._dropped(f"unmuxable: {exc}", count=False)
            return None
        params = muxer.params
        assert params is not None
        return data, params.codecs, params.width, params.height

    def send(self, event: RawPart) -> None:
        """Queue a part for the bus (returns at once; a full queue drops its oldest part)."""
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self._dropped("queue full: bus too slow")
        self._queue.append(event)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"parts-{self.stream}")

    async def _run(self) -> None:
        while not self._closing:
            while self._queue and not self._closing:
                await self._slots.acquire()
                if not self._queue or self._closing:
                    self._slots.release()
                    break
                # Started in queue order, each task reaches the bus's publish before the next: the bus
                # takes them in that order (KafkaBus: one send thread per key) and acknowledges each
                # on its own; several in flight keep a slow round trip from capping the part rate.
                task = asyncio.create_task(self._publish(self._queue.popleft()))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            self._wake.clear()
            await self._wake.wait()

    async def _publish(self, event: RawPart) -> None:
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that comes as
            # the publish completes, and this task would then never end
            async with asyncio.timeout(self._timeout):
                await self.bus.publish(TOPIC_PARTS, self.stream, encode(event))
        except Exception as exc:  # TimeoutError included: the bus is down or slow
            self._dropped(f"publish failed: {exc!r}")
        else:
            self.published += 1
        finally:
            self._slots.release()
            self._wake.set()

    async def close(self) -> None:
        """Send what is queued and in flight (bounded in time), then stop; what is left counts as
        dropped."""
        if self._task is None:
            return
        deadline = self._clock() + CLOSE_SECONDS
        while (self._queue or self._in_flight) and self._clock() < deadline:
            await asyncio.sleep(0.02)
        # The flag ends the loop even if a cancellation is swallowed on its way (a publish that
        # completes as it is cancelled); the wait is bounded either way.
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        left = [*self._in_flight]
        for pending in (task, *left):
            pending.cancel()
        await asyncio.wait({task, *left}, timeout=CLOSE_SECONDS)
        if not all(t.done() for t in (task, *left)):
            self.log.error("part_sender_stuck", timeout=CLOSE_SECONDS)
        unsent = len(self._queue) + sum(1 for t in left if t.cancelled() or not t.done())
        for _ in range(unsent):
            self._dropped("session ended")
        self._queue.clear()

    def _dropped(self, reason: str, *, count: bool = True) -> None:
        if count:
            self.counters.parts_dropped += 1
        self._unlogged += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= LOG_INTERVAL:
            total = self.counters.parts_dropped
            self.log.warning("parts_dropped", reason=reason, since_last_log=self._unlogged, total=total)
            self._logged_at, self._unlogged = now, 0
