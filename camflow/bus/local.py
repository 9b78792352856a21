"""LocalBus: the embedded default, in-process and bounded.

Each consumer group has one bounded queue fed by every topic it subscribed to; the
members of a group compete for its messages, as Kafka consumers of one group share
partitions. A publisher waits when a group's queue is full (backpressure: ingest
keeps its own bounded buffer and drop policy in front of the bus, so a camera is
never blocked). Messages for a topic no
group has subscribed to yet are counted and dropped: nothing reads them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence

from camflow.bus.base import Message

DEFAULT_QUEUE_SIZE = 64


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

    async def close(self) -> None:
        self._closed = True


class LocalBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._groups: dict[str, set[str]] = defaultdict(set)
        self._offsets: dict[str, int] = defaultdict(int)
        self.dropped_unsubscribed: dict[str, int] = defaultdict(int)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        offset = self._offsets[topic]
        self._offsets[topic] = offset + 1
        groups = self._groups.get(topic)
        if not groups:
            self.dropped_unsubscribed[topic] += 1
            return
        msg = Message(topic=topic, key=key, value=value, headers=dict(headers or {}), offset=offset)
        for group in groups:
            await self._queues[group].put(msg)

    async def subscribe(self, topics: Sequence[str], group: str) -> LocalConsumer:
        queue = self._queues.get(group)
        if queue is None:
            queue = asyncio.Queue(maxsize=self._queue_size)
            self._queues[group] = queue
        for topic in topics:
            self._groups[topic].add(group)
        return LocalConsumer(queue)
