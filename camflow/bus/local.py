"""LocalBus: the embedded default, in-process and bounded.

Each consumer group has one bounded queue fed by every topic it subscribed to; the
members of a group compete for its messages, as Kafka consumers of one group share
partitions. A publisher waits when a group's queue is full (backpressure: ingest
keeps its own bounded buffer and drop policy in front of the bus, so a camera is
never blocked). Messages for a topic no
group has subscribed to yet are counted and dropped: nothing reads them.

``follow`` is a reader outside any group (``camflow tail``, the edge's health board): it gets
what is published from then on in a bounded queue that drops its oldest message when full, so
a slow follower never holds a publisher up.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence

from camflow.bus.base import Message
from camflow.metrics import BUS_PUBLISH_SECONDS

DEFAULT_QUEUE_SIZE = 64
FOLLOW_QUEUE_SIZE = 1024


class LocalConsumer:
    def __init__(self, queue: asyncio.Queue[Message]) -> None:
        self._queue = queue
        self._closed = False

    async def get(self, timeout: float = 1.0) -> Message | None:
        if self._closed:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def commit(self, message: Message) -> None:
        return None

    async def lag(self) -> int:
        """Messages waiting in the group's queue."""
        return self._queue.qsize()

    async def close(self) -> None:
        self._closed = True


class LocalFollower(LocalConsumer):
    """A reader outside any group; its queue drops the oldest message when full (``dropped``)."""

    def __init__(self, queue: asyncio.Queue[Message], bus: LocalBus) -> None:
        super().__init__(queue)
        self._bus = bus
        self.dropped = 0

    def offer(self, message: Message) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(message)

    async def close(self) -> None:
        await super().close()
        self._bus.unfollow(self)


class LocalBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._groups: dict[str, set[str]] = defaultdict(set)
        self._offsets: dict[str, int] = defaultdict(int)
        self.dropped_unsubscribed: dict[str, int] = defaultdict(int)
        self._followers: dict[str, list[LocalFollower]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        started = time.perf_counter()
        offset = self._offsets[topic]
        self._offsets[topic] = offset + 1
        groups = self._groups.get(topic)
        followers = self._followers.get(topic)
        if not groups and not followers:
            self.dropped_unsubscribed[topic] += 1
            return
        msg = Message(topic=topic, key=key, value=value, headers=dict(headers or {}), offset=offset)
        for follower in followers or ():
            follower.offer(msg)
        for group in groups or ():
            await self._queues[group].put(msg)
        BUS_PUBLISH_SECONDS.labels(topic).observe(time.perf_counter() - started)

    async def subscribe(self, topics: Sequence[str], group: str) -> LocalConsumer:
        queue = self._queues.get(group)
        if queue is None:
            queue = asyncio.Queue(maxsize=self._queue_size)
            self._queues[group] = queue
        for topic in topics:
            self._groups[topic].add(group)
        return LocalConsumer(queue)

    async def follow(self, topics: Sequence[str], since: float = 0.0) -> LocalFollower:
        """Read ``topics`` from now on, outside any group (``since`` is ignored: nothing is kept)."""
        follower = LocalFollower(asyncio.Queue(maxsize=FOLLOW_QUEUE_SIZE), self)
        for topic in topics:
            self._followers[topic].append(follower)
        return follower

    def unfollow(self, follower: LocalFollower) -> None:
        for followers in self._followers.values():
            if follower in followers:
                followers.remove(follower)
