"""KafkaBus: the bus on Apache Kafka (kafka-python).

The producer is idempotent with ``acks=all``: ``publish`` returns only once every in-sync
replica has the message, and raises when that does not happen within ``delivery_timeout``
seconds (a broker down or hung); it never blocks the event loop. kafka-python clients are
blocking: the producer's ``send`` (which can wait up to ``MAX_BLOCK_MS`` for metadata) runs on
the producer's own threads and its futures are bridged to asyncio, while every call on a
consumer runs on that consumer's own single thread (KafkaConsumer is not thread-safe).
Offsets are committed explicitly, after processing, never automatically.

Every client (producer, consumers, admin) is built with the bus's ``KafkaSecurity``
(``camflow.bus.security``: TLS, mutual TLS, SASL, from the ``CAMFLOW_KAFKA_*`` environment).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    InvalidReplicationFactorError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition

from camflow.bus.base import Message
from camflow.bus.security import KafkaSecurity, connecting
from camflow.errors import ConfigError
from camflow.events import (
    TOPIC_DEAD,
    TOPIC_DEVICES,
    TOPIC_DEVICES_SEEN,
    TOPIC_HEALTH,
    TOPIC_PARTS,
    TOPIC_PLAYLISTS,
    TOPIC_RAW,
    TOPIC_READY,
    TOPIC_STREAMS,
)
from camflow.log import get_logger
from camflow.metrics import BUS_PUBLISH_ERRORS, BUS_PUBLISH_SECONDS

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_BLOCK_MS = 5_000  # longest a send() waits for topic metadata (on a producer thread, never the loop)
REQUEST_TIMEOUT_MS = 10_000  # one produce request without an answer (a hung broker) is retried after this
# Seconds from send() to acknowledged or failed, retries included (Kafka's default): an outage
# shorter than this the producer rides out itself (no resend, no duplicate); after a longer one the
# publish fails and the caller retries (ingest's spool, through a new producer: _healthy_producer).
DELIVERY_TIMEOUT = 120.0
RECONNECT_BACKOFF_MAX_MS = 2_000
DELIVERY_GRACE = 2.0  # seconds past the delivery timeout a publish still waits for kafka-python's verdict
SEND_THREADS = 4  # one thread per slot; a key always goes through the same one (see ``publish``)

# name -> (partitions, topic configs)
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    TOPIC_RAW: (8, {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": str(6 * 3600 * 1000)}),
    TOPIC_READY: (8, {"retention.ms": str(24 * 3600 * 1000)}),
    TOPIC_STREAMS: (8, {"cleanup.policy": "compact"}),  # as many as READY: one packager owns both
    TOPIC_HEALTH: (4, {"retention.ms": str(3600 * 1000)}),
    # low-latency parts: live only, so kept minutes, not hours; keyed by stream (one ordered worker)
    TOPIC_PARTS: (8, {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": str(10 * 60 * 1000)}),
    TOPIC_PLAYLISTS: (4, {"retention.ms": str(10 * 60 * 1000)}),  # followed by every edge, from its end
    # dead letters: what a consumer group could not use, with the reason (camflow.bus.dead)
    TOPIC_DEAD: (4, {"max.message.bytes": str(MAX_MESSAGE_BYTES), "retention.ms": str(7 * 24 * 3600 * 1000)}),
    # the device registry (camflow.devices.kafka): one partition, read whole by every ingest node
    TOPIC_DEVICES: (1, {"cleanup.policy": "compact"}),
    TOPIC_DEVICES_SEEN: (1, {"cleanup.policy": "compact"}),
}

log = get_logger("bus.kafka")


def min_insync_replicas(replication: int) -> int:
    """The replicas that must have a write before ``acks=all`` acknowledges it: 2 of 3 (or more), so
    one broker may be down without stopping writes and an acknowledged segment is on two brokers;
    with 2 replicas 1 (else one broker down stops every write), with 1 replica 1."""
    return max(1, min(2, replication - 1))


def topic_requests(prefix: str, replication: int, existing: set[str]) -> list[NewTopic]:
    """The topics to create: every camflow topic not in ``existing``, each partition on
    ``replication`` brokers, ``min.insync.replicas`` set for it (``min_insync_replicas``), whatever
    the cluster's default. A topic that exists keeps the replication it was created with."""
    isr = {"min.insync.replicas": str(min_insync_replicas(replication))}
    return [
        NewTopic(
            prefix + name,
            num_partitions=parts,
            replication_factor=replication,
            topic_configs={**configs, **isr},
        )
        for name, (parts, configs) in TOPICS.items()
        if prefix + name not in existing
    ]


def topic_shortfalls(prefix: str, replication: int, described: Sequence[Mapping[str, Any]]) -> list[str]:
    """What an existing camflow topic lacks against what this deployment asks for, one sentence
    each: fewer replicas per partition than ``replication`` (it was created with a smaller
    factor; Kafka does not change that by itself), fewer partitions than camflow creates."""
    out = []
    for topic in described:
        name = str(topic.get("name") or topic.get("topic") or "")
        wanted = TOPICS.get(name[len(prefix) :]) if name.startswith(prefix) else None
        partitions = list(topic.get("partitions") or ())
        if wanted is None or not partitions:
            continue
        replicas = min(len(p.get("replica_nodes") or p.get("replicas") or ()) for p in partitions)
        if replicas < replication:
            out.append(
                f"topic {name!r} has {replicas} replica(s) per partition, {replication} asked "
                "(raise it with kafka-reassign-partitions.sh, or delete the topic to have it recreated)"
            )
        if len(partitions) < wanted[0]:
            out.append(f"topic {name!r} has {len(partitions)} partitions, camflow creates {wanted[0]}")
    return out


class _Generations(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts assignments. Called during ``poll`` (kafka-python 3: on its network thread): the records a
    poll returns after a rebalance are of the new assignment only, and the buffer is empty
    then (``get`` polls only when it is)."""

    def __init__(self, adapter: KafkaConsumerAdapter) -> None:
        self._adapter = adapter

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked", group=self._adapter._group, partitions=len(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        adapter = self._adapter
        adapter.assigned = {(tp.topic[len(adapter._prefix) :], tp.partition) for tp in assigned}
        # kafka-python 3 calls this on its network thread, where a blocking call (such as
        # partitions_for_topic when the topic's metadata is not cached) raises RuntimeError and
        # fails the whole poll: counts come from the cache here, and those it lacks are read by
        # the poll thread once the poll returns (``_count_partitions``).
        adapter.partitions = {}
        for topic, _ in adapter.assigned:
            cached = adapter._cached_partitions(topic)
            if cached:
                adapter.partitions[topic] = cached
            else:
                adapter.recount = True
        adapter.generation += 1
        log.info(
            "partitions assigned",
            group=self._adapter._group,
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            generation=self._adapter.generation,
        )


class KafkaConsumerAdapter:
    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        group: str,
        prefix: str = "",
        security: KafkaSecurity | None = None,
    ) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"kc-{group}")
        self._bootstrap = bootstrap
        self._security = security or KafkaSecurity()
        self._prefix = prefix
        self._topics = [prefix + t for t in topics]
        self._group = prefix + group
        self._consumer: Any = None
        self._buffer: deque[Message] = deque()
        # +1 on every partition assignment (see ``Rebalancing``); only the poll thread writes it
        self.generation = 0
        self.assigned: set[tuple[str, int]] = set()  # (topic without prefix, partition)
        self.partitions: dict[str, int] = {}  # topic -> partition count, as of the assignment
        self.recount = False  # partition counts the rebalance listener left to the poll thread

    def _open(self) -> None:
        with connecting(self._security, self._bootstrap):
            self._consumer = KafkaConsumer(
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
                **self._security.client_config(),
            )
        self._consumer.subscribe(self._topics, listener=_Generations(self))

    def _cached_partitions(self, topic: str) -> int:
        """The partition count of ``topic`` the client's metadata holds now (0 if none); never blocks."""
        cluster = getattr(self._consumer, "_cluster", None) or getattr(
            getattr(self._consumer, "_client", None), "cluster", None
        )
        partitions = cluster.partitions_for_topic(self._prefix + topic) if cluster is not None else None
        return len(partitions or ())

    def _count_partitions(self) -> None:
        """On the poll thread: the counts the rebalance listener could not take from the cache (a
        metadata request: while the brokers are away it fails, and is made again after the next poll)."""
        if not self.recount:
            return
        self.recount = False
        for topic, _ in self.assigned:
            if topic not in self.partitions:
                try:
                    count = len(self._consumer.partitions_for_topic(self._prefix + topic) or ())
                except KafkaError as exc:
                    self.recount = True
                    log.warning("kafka_partitions_not_counted", topic=topic, error=repr(exc))
                    continue
                if count:
                    self.partitions[topic] = count
                else:  # no metadata for it yet: asked again after the next poll
                    self.recount = True

    def owns(self, topic: str, key: str) -> bool:
        """Whether messages keyed ``key`` on ``topic`` come to this member now (the producer's
        default partitioner: murmur2 of the key)."""
        count = self.partitions.get(topic, 0)
        return bool(count) and (topic, (murmur2(key.encode()) & 0x7FFFFFFF) % count) in self.assigned

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _poll(self, timeout: float) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        self._count_partitions()
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

    def _lag(self) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        assigned = list(consumer.assignment())
        if not assigned:
            return 0
        # Bounded: this runs on the poll thread, and a member that does not poll holds up
        # every rebalance of its group (the default request timeout is 30 s).
        ends = consumer.end_offsets(assigned, timeout_ms=1000)
        behind = 0
        for tp in assigned:
            position = consumer.position(tp, timeout_ms=1000)
            if position is None:
                return None
            behind += max(0, int(ends.get(tp, position)) - int(position))
        return behind + len(self._buffer)  # polled but not handed out yet

    async def lag(self) -> int | None:
        """End offsets minus this member's positions over its assigned partitions, plus its buffer."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._lag)

    async def close(self) -> None:
        if self._consumer is not None:
            # Uncommitted buffered messages are redelivered to the group: at-least-once.
            self._buffer.clear()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=False)


class KafkaBus:
    """``prefix`` namespaces every topic and consumer group: several deployments (or tests) on one
    cluster. ``replication``: brokers holding each partition of the topics ``start`` creates."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "camflow",
        prefix: str = "",
        replication: int = 1,
        *,
        delivery_timeout: float = DELIVERY_TIMEOUT,
        security: KafkaSecurity | None = None,
    ) -> None:
        """``delivery_timeout``: seconds a publish may take to be acknowledged before it raises.
        ``security``: how every client reaches the brokers (default: from the environment,
        ``KafkaSecurity.from_env``; a ConfigError when it is set wrong)."""
        if replication < 1:
            raise ConfigError(
                f"Kafka replication factor {replication}: expected 1 or more brokers per partition"
            )
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.replication = replication
        self.security = KafkaSecurity.from_env() if security is None else security
        self._client_id = client_id
        self._producer: Any = None
        self._consumers: list[KafkaConsumerAdapter] = []
        self.delivery_timeout = delivery_timeout
        self._api_version: Any = None  # the broker version the first producer found
        self._broken: Any = None  # the producer a publish timed out on, replaced by the next publish
        self._replacing = asyncio.Lock()
        self._retired: list[asyncio.Task[None]] = []  # closing producers that were replaced
        # send() can block (metadata, up to max_block_ms): it runs on threads, never on the loop. One
        # single-thread executor per slot, a key always on the same slot: publishes of one key that a
        # caller keeps in flight together (ingest's part sender) reach the producer in the order they
        # were called, and the idempotent producer keeps that order on the partition.
        self._senders = [
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"kafka-send-{i}")
            for i in range(SEND_THREADS)
        ]

    def _ensure_topics(self) -> None:
        log.info("kafka_connecting", bootstrap=self.bootstrap, **self.security.describe())
        for warning in self.security.warnings():
            log.warning("kafka_security_weak", bootstrap=self.bootstrap, warning=warning)
        with connecting(self.security, self.bootstrap):
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id=f"{self._client_id}-admin",
                **self.security.client_config(),
            )
        try:
            existing = set(admin.list_topics())
            self._check_existing(admin, existing)
            missing = topic_requests(self.prefix, self.replication, existing)
            if missing:
                answer = admin.create_topics(missing, raise_errors=False)
                for topic in answer.get("topics", []):
                    code, reason = topic.get("error_code", 0), topic.get("error_message") or ""
                    if code in (0, TopicAlreadyExistsError.errno):  # already there: another service was first
                        continue
                    if code == InvalidReplicationFactorError.errno:
                        raise ConfigError(
                            f"Kafka at {self.bootstrap} cannot create topic {topic.get('name')!r} with "
                            f"replication factor {self.replication}: {reason} Expected --kafka-replication "
                            "(env CAMFLOW_KAFKA_REPLICATION) at most the number of brokers."
                        )
                    raise for_code(code)(f"creating topic {topic.get('name')!r}: {reason}")
                log.info("topics_created", topics=[t.name for t in missing], replication=self.replication)
        finally:
            admin.close()

    def _check_existing(self, admin: Any, existing: set[str]) -> None:
        """Warn (``kafka_topic_shortfall``, once per start) about topics that exist with less than
        asked; the service runs on (a deployment may grow its cluster and reassign later)."""
        ours = sorted(self.prefix + name for name in TOPICS if self.prefix + name in existing)
        if not ours:
            return
        try:
            described = admin.describe_topics(ours)
        except Exception as exc:  # the check is advice: a cluster that will not say is no reason to stop
            log.warning("kafka_topics_not_described", topics=ours, error=repr(exc))
            return
        for problem in topic_shortfalls(self.prefix, self.replication, described):
            log.warning("kafka_topic_shortfall", problem=problem, bootstrap=self.bootstrap)

    def _start(self) -> None:
        self._ensure_topics()
        self._producer = self._new_producer()

    def _new_producer(self) -> Any:
        """A producer; a replacement takes the broker version the first one found, so building it
        needs no broker (kafka-python otherwise bootstraps, blocking up to 30 s, in the constructor)."""
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES,
            linger_ms=2,
            request_timeout_ms=min(REQUEST_TIMEOUT_MS, int(self.delivery_timeout * 1000) - 10),
            delivery_timeout_ms=int(self.delivery_timeout * 1000),
            max_block_ms=min(MAX_BLOCK_MS, int(self.delivery_timeout * 1000)),
            # back within seconds of a broker's return (kafka-python's default waits up to 30 s)
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **({"api_version": self._api_version} if self._api_version else {}),
            **self.security.client_config(),
        )
        self._api_version = producer.config["api_version"]
        return producer

    async def _healthy_producer(self) -> Any:
        """The producer, replaced first when a publish through it timed out: kafka-python 3.0's
        idempotent producer sends nothing more to a partition whose in-flight batch expired (a
        hung broker; measured on Kafka 4.3 with SIGSTOP, and it did not recover in 70 s after
        SIGCONT). A new producer has a new producer id: a record the old one may still have
        written can be repeated (at-least-once, as everywhere on the bus), never lost."""
        if self._broken is None or self._broken is not self._producer:
            return self._producer  # the common case: no lock taken on the publish path
        async with self._replacing:
            if self._broken is not None and self._broken is self._producer:
                old = self._producer
                self._producer = await asyncio.to_thread(self._new_producer)
                self._broken = None
                log.warning("kafka_producer_replaced", reason="a publish was not acknowledged in time")
                self._retired.append(asyncio.create_task(asyncio.to_thread(old.close, 0)))
        return self._producer

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.close()
        self._consumers.clear()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.to_thread(producer.close, 10)
        for retired in self._retired:
            with contextlib.suppress(Exception):
                await retired
        for sender in self._senders:
            sender.shutdown(wait=False)

    async def publish(
        self, topic: str, key: str, value: bytes | None, headers: Mapping[str, bytes] | None = None
    ) -> None:
        """``value`` None: a tombstone (a compacted topic forgets ``key``)."""
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish before start()")
        producer = await self._healthy_producer()
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

        send = functools.partial(
            producer.send,
            self.prefix + topic,
            key=key.encode(),
            value=value,
            headers=[(k, v) for k, v in (headers or {}).items()],
        )
        started = time.perf_counter()
        try:
            # send() may wait for metadata (up to max_block_ms): on a producer thread, not the loop.
            # Its failure (no metadata: the broker is away) says nothing against the producer.
            try:
                slot = self._senders[zlib.crc32(key.encode()) % SEND_THREADS]
                fut = await loop.run_in_executor(slot, send)
            except KafkaTimeoutError as exc:
                raise KafkaError(f"no metadata for {topic!r}: {exc}") from None
            fut.add_callback(ok)
            fut.add_errback(failed)
            # kafka-python should fail the future after delivery_timeout_ms, but a request in flight to
            # a hung broker is not always expired then (measured with SIGSTOP): bound the wait here
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for returns the result of a future that
                # completes as the caller is cancelled, swallowing the cancellation (a caller that
                # cancels a publishing task then waits for it forever: ingest's part sender did)
                async with asyncio.timeout(self.delivery_timeout + DELIVERY_GRACE):
                    await done
            except TimeoutError:
                waited = self.delivery_timeout + DELIVERY_GRACE
                raise KafkaTimeoutError(
                    f"publish to {topic!r} not acknowledged within {waited:g} s"
                ) from None
        except KafkaTimeoutError:
            self._broken = producer
            BUS_PUBLISH_ERRORS.labels(topic).inc()
            raise
        except BaseException:
            BUS_PUBLISH_ERRORS.labels(topic).inc()
            raise
        BUS_PUBLISH_SECONDS.labels(topic).observe(time.perf_counter() - started)

    async def subscribe(self, topics: Sequence[str], group: str) -> KafkaConsumerAdapter:
        consumer = KafkaConsumerAdapter(self.bootstrap, topics, group, self.prefix, self.security)
        await consumer.open()
        self._consumers.append(consumer)
        return consumer

    async def follow(self, topics: Sequence[str], since: float = 0.0) -> KafkaFollower:
        """Read every partition of ``topics`` outside any group, from ``since`` seconds ago."""
        follower = KafkaFollower(self.bootstrap, topics, self.prefix, since, self.security)
        await follower.open()
        return follower


class KafkaFollower(KafkaConsumerAdapter):
    """A reader without a consumer group (nothing committed): every partition, from a point in time.

    ``since`` seconds back (by message timestamp; 0: only what comes next), so a new reader of a
    topic published every few seconds sees the current picture at once.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        prefix: str,
        since: float,
        security: KafkaSecurity | None = None,
    ) -> None:
        super().__init__(bootstrap, topics, "follow", prefix, security)
        self._since = since

    def _open(self) -> None:
        with connecting(self._security, self._bootstrap):
            self._consumer = KafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
                fetch_max_bytes=2 * MAX_MESSAGE_BYTES,
                max_poll_records=256,
                client_id="camflow-follow",
                **self._security.client_config(),
            )
            self._assign()

    def _assign(self) -> None:
        """Every partition of the topics, positioned ``since`` seconds back (topics not created yet:
        none, and ``_poll`` asks again)."""
        consumer = self._consumer
        partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        if self._since > 0:
            at = int((time.time() - self._since) * 1000)
            for tp, found in consumer.offsets_for_times({tp: at for tp in partitions}).items():
                if found is not None:
                    consumer.seek(tp, found.offset)

    def _poll(self, timeout: float) -> list[Message]:
        if not self._consumer.assignment():
            time.sleep(timeout)
            self._consumer.topics()  # refreshes the metadata: the topics may exist by now
            self._assign()
            return []
        return super()._poll(timeout)

    async def commit(self, message: Message) -> None:
        return None
