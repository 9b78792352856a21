"""The packager service: ready segments and stream states from the bus, playlists into the store.

One ``StreamPackager`` per stream holds that stream's playlists and reorder buffer (see
``packager.stream`` for the ordering, gap and end-of-stream policy). After each event
the service writes what changed, media playlists before the master, and then commits
every message whose effects are now written (``CommitTracker``).

Playlists are not rebuilt from the store on restart yet: a restarted packager starts
each stream afresh from the first uncommitted event. ``StreamPackager`` is built from
events alone, so seeding it from stored playlists can be added in front of ``run``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from camflow.bus import Bus, Consumer, Message
from camflow.errors import EventDecodeError
from camflow.events import TOPIC_READY, TOPIC_STREAMS, SegmentReady, StreamState, decode
from camflow.keys import is_stream_name
from camflow.log import get_logger
from camflow.store import Store
from packager.commits import CommitTracker
from packager.stream import PackagerStats, StreamPackager

GROUP = "camflow-packager"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
POLL_SECONDS = 0.5


class Packager:
    """Consumes ``camflow.segments.ready`` and ``camflow.streams`` as group ``camflow-packager``.

    ``ready`` is set once subscribed (a LocalBus drops what is published before that);
    ``stats`` counts what happened across every stream.
    """

    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        live_window: float = 60.0,
        gap_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._store = store
        self._live_window = live_window
        self._gap_timeout = gap_timeout
        self._clock = clock
        self.stats = PackagerStats()
        self.ready = asyncio.Event()
        self._streams: dict[str, StreamPackager] = {}
        self._tracker = CommitTracker()
        self._written: dict[str, str] = {}
        self._log: Any = get_logger("packager")

    async def run(self, stop: asyncio.Event) -> None:
        consumer = await self._bus.subscribe([TOPIC_READY, TOPIC_STREAMS], GROUP)
        self.ready.set()
        self._log.info("packager started", live_window=self._live_window, gap_timeout=self._gap_timeout)
        try:
            while not stop.is_set():
                msg = await consumer.get(self._poll_timeout())
                if msg is not None:
                    await self._handle(consumer, msg)
                await self._tick(consumer)
        finally:
            await consumer.close()
            self._log.info("packager stopped", **asdict(self.stats))

    async def _handle(self, consumer: Consumer, msg: Message) -> None:
        token = self._tracker.track(msg)
        try:
            event = decode(msg.value)
        except EventDecodeError as exc:
            self.stats.decode_errors += 1
            self._log.warning(
                "event undecodable",
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                error=str(exc),
            )
            await self._commit(consumer, [token])
            return
        if not isinstance(event, SegmentReady | StreamState) or not is_stream_name(event.stream):
            self.stats.rejected += 1
            self._log.warning("event rejected", topic=msg.topic, offset=msg.offset, type=type(event).__name__)
            await self._commit(consumer, [token])
            return
        stream = self._streams.get(event.stream)
        if stream is None:
            stream = self._streams[event.stream] = StreamPackager(
                event.stream, live_window=self._live_window, gap_timeout=self._gap_timeout, stats=self.stats
            )
        if isinstance(event, SegmentReady):
            stream.on_segment(event, token, self._clock())
        else:
            stream.on_state(event, token, self._clock())
        await self._flush(consumer, stream)

    async def _tick(self, consumer: Consumer) -> None:
        now = self._clock()
        for stream in self._streams.values():
            deadline = stream.deadline()
            if deadline is not None and deadline <= now:
                stream.tick(now)
                await self._flush(consumer, stream)

    def _poll_timeout(self) -> float:
        deadlines = [d for s in self._streams.values() if (d := s.deadline()) is not None]
        if not deadlines:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, min(deadlines) - self._clock()))

    async def _flush(self, consumer: Consumer, stream: StreamPackager) -> None:
        out = stream.take_output()
        for key, text in out.writes:
            if self._written.get(key) == text:
                continue
            await self._store.put(key, text.encode(), PLAYLIST_CONTENT_TYPE)
            self._written[key] = text
        await self._commit(consumer, out.done)

    async def _commit(self, consumer: Consumer, tokens: Iterable[int]) -> None:
        latest: dict[tuple[str, int], Message] = {}
        for token in tokens:
            msg = self._tracker.done(token)
            if msg is not None:
                latest[(msg.topic, msg.partition)] = msg
        for msg in latest.values():
            await consumer.commit(msg)
