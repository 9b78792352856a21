"""Where the edge's health figures come from.

- ``CatalogHealth`` derives a sample from what the edge itself knows (the stream's playlists and
  its viewers here): it works with no bus at all.
- ``HealthFeed``, when the edge has a bus (``camflow run``, ``camflow edge --kafka``), follows
  ``camflow.health``: it keeps the latest sample of every stream and service (a
  ``camflow.health.HealthBoard``), hands every new sample to the ``/api/health`` streams, and
  publishes the edge's own samples (viewers). ``/api/streams/{stream}/health`` overlays the
  board's picture (the publish state with its reason, ingest and transcode figures) on the
  catalog's.

One edge publishes one ``instance``: with ``camflow edge --workers N`` only the process that
started the workers publishes (``publish``), with every worker's viewers united; the workers follow
the topic but publish nothing. A stream whose viewers fall to 0 gets one sample saying 0, and so
does every stream with viewers when the edge stops, so the board does not keep counting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from aiohttp import web

from camflow.bus import Bus
from camflow.bus.follow import keep_following
from camflow.events import HealthSample
from camflow.health import HealthBoard, HealthReporter, follow_health
from camflow.log import get_logger
from camflow.metrics import Readiness, instance_name
from edge.auth import ViewerCounter
from edge.catalog import StreamCatalog

FOLLOW_RETRY_SECONDS = 5.0
log = get_logger("edge.health")
SUBSCRIBER_QUEUE = 1024  # samples an /api/health client may fall behind by (then the oldest go)


class HealthSource(Protocol):
    async def sample(self, stream: str) -> dict[str, Any] | None:
        """The stream's latest health sample as JSON-ready data, or None when the stream is unknown."""
        ...


class CatalogHealth:
    def __init__(self, catalog: StreamCatalog, viewers: ViewerCounter) -> None:
        self._catalog = catalog
        self._viewers = viewers

    async def sample(self, stream: str) -> dict[str, Any] | None:
        summary = await self._catalog.summary(stream)
        if summary is None:
            return None
        await self._viewers.census()
        return {
            **summary.as_json(),
            "viewers": self._viewers.count(stream),
            "time": round(time.time(), 3),
            "source": "edge",
        }


class HealthFeed:
    """The ``camflow.health`` topic as the edge sees it; ``readiness`` adds the other services'
    checks to the edge's ``/readyz`` (``camflow run``: every service in one process)."""

    def __init__(self, bus: Bus | None, *, interval: float, readiness: Readiness | None = None) -> None:
        self.bus = bus
        self.interval = interval
        self.readiness = readiness
        self.board = HealthBoard()
        self.instance = instance_name()
        self.publish = True  # False in the extra workers of `camflow edge --workers N`
        self._stopping = False
        self._subscribers: set[asyncio.Queue[HealthSample]] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reporter: HealthReporter | None = None

    def add(self, sample: HealthSample) -> None:
        self.board.add(sample)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(sample)

    def subscribe(self) -> asyncio.Queue[HealthSample]:
        queue: asyncio.Queue[HealthSample] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[HealthSample]) -> None:
        self._subscribers.discard(queue)

    async def start(self, viewers: ViewerCounter, names: Any) -> None:
        """Follow the topic and publish the edge's viewer samples (when there is a bus)."""
        if self.bus is None:
            return
        self._stop.clear()
        self._stopping = False
        self._tasks.append(asyncio.create_task(self._follow(self.bus), name="edge-health"))
        self._tasks.append(asyncio.create_task(self._prune(), name="edge-health-prune"))
        if not self.publish:
            return
        watched: set[str] = set()  # streams whose last sample had viewers

        async def collect() -> list[HealthSample]:
            nonlocal watched
            await viewers.census()
            now = time.time()
            counts = {stream: 0 if self._stopping else viewers.count(stream) for stream in names()}
            counts.update({stream: 0 for stream in watched - counts.keys()})  # left the catalog
            samples = [
                HealthSample(stream, "edge", self.instance, now, viewers=n)
                for stream, n in counts.items()
                if n > 0 or stream in watched
            ]
            watched = {stream for stream, n in counts.items() if n > 0}
            return samples

        self._reporter = HealthReporter(self.bus, "edge", collect, self.interval)
        self._reporter.start()

    async def _follow(self, bus: Bus) -> None:
        """Follow the topic; when the bus fails (Kafka unreachable), log it and try again."""
        await keep_following(
            lambda: follow_health(bus, self.add, self._stop),
            self._stop,
            name="health_feed",
            retry_seconds=FOLLOW_RETRY_SECONDS,
        )

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(30.0)
            self.board.prune()

    async def stop(self) -> None:
        self._stop.set()
        self._stopping = True  # the reporter's last round says 0 viewers
        if self._reporter is not None:
            await self._reporter.stop()
            self._reporter = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


HEALTH_FEED = web.AppKey("edge-health-feed", HealthFeed)
