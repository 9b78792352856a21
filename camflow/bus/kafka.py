"""KafkaBus: the bus on Apache Kafka (kafka-python).

The producer is idempotent with ``acks=all``: ``publish`` returns only once the broker
has the message. kafka-python clients are blocking; the producer is thread-safe and its
futures are bridged to asyncio, while every call on a consumer runs on that consumer's
own single thread (KafkaConsumer is not thread-safe). Offsets are committed explicitly,
after processing, never automatically.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from camflow.bus.base import Message
from camflow.events import TOPIC_DEAD, TOPIC_HEALTH, TOPIC_RAW, TOPIC_READY, TOPIC_STREAMS
from camflow.log import get_logger

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

# name -> (partitions, topic configs)
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    TOPIC_RAW: (8, {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": str(6 * 3600 * 1000)}),
    TOPIC_READY: (8, {"retention.ms": str(24 * 3600 * 1000)}),
    TOPIC_STREAMS: (8, {"cleanup.policy": "compact"}),  # as many as READY: one packager owns both
    TOPIC_HEALTH: (4, {"retention.ms": str(3600 * 1000)}),
    # raw segments the transcoder gave up on, with the reason (keyed by stream)
    TOPIC_DEAD: (4, {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": str(7 * 24 * 3600 * 1000)}),
}

log = get_logger("bus.kafka")


class KafkaConsumerAdapter:
    def __init__(self, bootstrap: str, topics: Sequence[str], group: str, prefix: str = "") -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"kc-{group}")
        self._bootstrap = bootstrap
        self._prefix = prefix
        self._topics = [prefix + t for t in topics]
        self._group = prefix + group
        self._consumer: Any = None
        self._buffer: deque[Message] = deque()

    def _open(self) -> None:
        self._consumer = KafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=2 * MAX_MESSAGE_BYTES,
            max_poll_records=16,
            max_poll_interval_ms=600_000,
            # A member killed with SIGKILL loses its partitions after 6 s (the broker's minimum),
            # well inside the packager's gap timeout.
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
            client_id=f"camflow-{self._group}",
        )

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _poll(self, timeout: float) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        out: list[Message] = []
        for records in batches.values():
            for r in records:
                out.append(
                    Message(
                        topic=r.topic[len(self._prefix) :],
                        key=(r.key or b"").decode("utf-8", "replace"),
                        value=r.value or b"",
                        headers={k: v for k, v in (r.headers or [])},
                        partition=r.partition,
                        offset=r.offset,
                    )
                )
        return out

    async def get(self, timeout: float = 1.0) -> Message | None:
        if not self._buffer:
            loop = asyncio.get_running_loop()
            self._buffer.extend(await loop.run_in_executor(self._executor, self._poll, timeout))
        return self._buffer.popleft() if self._buffer else None

    def _commit(self, message: Message) -> None:
        tp = TopicPartition(self._prefix + message.topic, message.partition)
        self._consumer.commit({tp: OffsetAndMetadata(message.offset + 1, "", -1)})

    async def commit(self, message: Message) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._commit, message)

    async def close(self) -> None:
        if self._consumer is not None:
            # Uncommitted buffered messages are redelivered to the group: at-least-once.
            self._buffer.clear()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=False)


class KafkaBus:
    """``prefix`` namespaces every topic and consumer group: several deployments (or tests) on one cluster."""

    def __init__(self, bootstrap: str, client_id: str = "camflow", prefix: str = "") -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self._client_id = client_id
        self._producer: Any = None
        self._consumers: list[KafkaConsumerAdapter] = []

    def _ensure_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self._client_id}-admin")
        try:
            existing = set(admin.list_topics())
            missing = [
                NewTopic(
                    self.prefix + name, num_partitions=parts, replication_factor=1, topic_configs=configs
                )
                for name, (parts, configs) in TOPICS.items()
                if self.prefix + name not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):  # another service was first
                    admin.create_topics(missing)
                log.info("topics_created", topics=[t.name for t in missing])
        finally:
            admin.close()

    def _start(self) -> None:
        self._ensure_topics()
        self._producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES,
            linger_ms=2,
            request_timeout_ms=30_000,
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.close()
        self._consumers.clear()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.to_thread(producer.close, 10)

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish before start()")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

        def ok(_: Any) -> None:
            loop.call_soon_threadsafe(settle, None)

        def failed(exc: BaseException) -> None:
            loop.call_soon_threadsafe(settle, exc)

        fut = self._producer.send(
            self.prefix + topic,
            key=key.encode(),
            value=value,
            headers=[(k, v) for k, v in (headers or {}).items()],
        )
        fut.add_callback(ok)
        fut.add_errback(failed)
        await done

    async def subscribe(self, topics: Sequence[str], group: str) -> KafkaConsumerAdapter:
        consumer = KafkaConsumerAdapter(self.bootstrap, topics, group, self.prefix)
        await consumer.open()
        self._consumers.append(consumer)
        return consumer
