"""The device registry on Kafka: compacted topics keyed by device name.

``camflow.devices`` holds each device's record (a tombstone once removed), ``camflow.devices.seen``
its last seen and address (written by ingest). Both are created with the other topics
(``camflow.bus.kafka.TOPICS``), one partition each. A reader assigns itself every partition (no
consumer group: each ingest node reads everything), reads from the beginning to the end offsets
it found on opening (``loaded``), then follows: a change reaches every node within a poll
(``POLL_SECONDS``). Writes go through a ``KafkaBus`` (acks=all). Two operators changing the
same device at the same moment: the last write wins.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from camflow.bus.kafka import KafkaBus
from camflow.bus.security import KafkaSecurity, connecting
from camflow.devices.backend import UnavailableLog
from camflow.devices.model import Device, DeviceError, Seen, decode, encode
from camflow.devices.registry import DeviceRegistry
from camflow.events import TOPIC_DEVICES, TOPIC_DEVICES_SEEN
from camflow.log import get_logger

POLL_SECONDS = 0.5
RETRY_SECONDS = 2.0
BOOTSTRAP_SECONDS = 3.0
CLOSE_SECONDS = 5.0
log = get_logger("devices")


class TopicReader:
    """Every record of one topic from the beginning, on its own thread (KafkaConsumer is blocking)."""

    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.security = security
        self._consumer: Any = None
        self._ends: dict[Any, int] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="devices")

    def _open(self) -> bool:
        """Assign every partition at its beginning; False while the topic does not exist."""
        if self._consumer is None:
            with connecting(self.security, self.bootstrap):
                self._consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    group_id=None,
                    enable_auto_commit=False,
                    client_id="camflow-devices",
                    allow_auto_create_topics=False,  # created compacted by KafkaBus, never with defaults
                    request_timeout_ms=10_000,
                    bootstrap_timeout_ms=int(BOOTSTRAP_SECONDS * 1000),  # no broker: fail (and retry) soon
                    **self.security.client_config(),
                )
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            self._consumer.topics()  # refresh the metadata: the topic may exist next time
            return False
        partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_beginning(*partitions)
        self._ends = dict(self._consumer.end_offsets(partitions))
        return True

    def _poll(self, timeout: float) -> tuple[list[tuple[str, bytes | None]], bool]:
        """(key, value) records, and whether every partition is read up to the opening's end offsets."""
        records = []
        for batch in self._consumer.poll(timeout_ms=int(timeout * 1000)).values():
            for r in batch:
                records.append(((r.key or b"").decode("utf-8", "replace"), r.value))
        caught_up = all(self._consumer.position(tp) >= end for tp, end in self._ends.items())
        return records, caught_up

    async def open(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    async def poll(self, timeout: float) -> tuple[list[tuple[str, bytes | None]], bool]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._poll, timeout)

    async def read_all(self, deadline: float = 30.0) -> list[tuple[str, bytes | None]]:
        """Every record up to the end offsets as of now (none if the topic does not exist)."""
        if not await self.open():
            return []
        records: list[tuple[str, bytes | None]] = []
        stop = time.monotonic() + deadline
        while time.monotonic() < stop:
            batch, caught_up = await self.poll(0.5)
            records += batch
            if caught_up:
                return records
        raise TimeoutError(f"topic {self.topic!r} not read to its end within {deadline:g} s")

    async def close(self) -> None:
        if self._consumer is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=False)


def _latest(records: list[tuple[str, bytes | None]], cls: type[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in records:
        if not value:
            out.pop(key, None)
            continue
        try:
            record = decode(cls, value)
        except DeviceError as exc:
            log.warning("device_record_skipped", key=key[:80], error=str(exc))
            continue
        if record.name == key:
            out[key] = record
    return out


class KafkaDevices:
    def __init__(
        self, bootstrap: str, *, prefix: str = "", replication: int = 1, bus: KafkaBus | None = None
    ):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self._own_bus = bus is None
        self.bus = bus or KafkaBus(
            bootstrap, client_id="camflow-devices", prefix=prefix, replication=replication
        )

    async def start(self) -> None:
        """Start the writer (creating the topics when missing); only ``camflow device`` needs it."""
        if self._own_bus:
            await self.bus.start()

    async def close(self) -> None:
        if self._own_bus:
            await self.bus.close()

    async def _read(self, topic: str) -> list[tuple[str, bytes | None]]:
        reader = TopicReader(self.bootstrap, self.prefix + topic, self.bus.security)
        try:
            return await reader.read_all()
        finally:
            await reader.close()

    async def devices(self) -> dict[str, Device]:
        return _latest(await self._read(TOPIC_DEVICES), Device)

    async def seen(self) -> dict[str, Seen]:
        return _latest(await self._read(TOPIC_DEVICES_SEEN), Seen)

    async def put(self, device: Device) -> None:
        await self.bus.publish(TOPIC_DEVICES, device.name, encode(device))

    async def remove(self, name: str) -> None:
        await self.bus.publish(TOPIC_DEVICES, name, None)
        await self.bus.publish(TOPIC_DEVICES_SEEN, name, None)

    async def put_seen(self, seen: Seen) -> None:
        await self.bus.publish(TOPIC_DEVICES_SEEN, seen.name, encode(seen))

    async def follow(self, registry: DeviceRegistry) -> None:
        """Keep ``registry`` current until cancelled. Kafka unavailable: retried every few seconds and
        logged (at most every ``backend.ERROR_LOG_SECONDS``), never raised; the registry stays as it was."""
        unavailable = UnavailableLog("kafka")
        while True:
            reader = TopicReader(self.bootstrap, self.prefix + TOPIC_DEVICES, self.bus.security)
            try:
                await self._follow(reader, registry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                unavailable.failed(registry, exc)
            finally:  # bounded: a reader stuck on an unreachable broker must not hold up a shutdown
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader.close()), CLOSE_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self, reader: TopicReader, registry: DeviceRegistry) -> None:
        while not await reader.open():  # no device was ever added: an empty registry
            if not registry.loaded.is_set():
                registry.replace({})
                registry.loaded.set()
                log.info("device_registry_loaded", backend="kafka", devices=0)
            await asyncio.sleep(RETRY_SECONDS)
        # Read up to the end first, then apply the whole registry at once: no older record of a
        # device (one not compacted away yet) is ever in force, not even between two polls.
        pending: list[tuple[str, bytes | None]] = []
        caught_up = False
        while not caught_up:
            records, caught_up = await reader.poll(POLL_SECONDS)
            pending += records
        registry.replace(_latest(pending, Device))
        if not registry.loaded.is_set():
            registry.loaded.set()
            log.info("device_registry_loaded", backend="kafka", devices=len(registry))
        while True:
            records, _ = await reader.poll(POLL_SECONDS)
            for name, device in _latest_each(records):
                registry.apply(name, device)


def _latest_each(records: list[tuple[str, bytes | None]]) -> list[tuple[str, Device | None]]:
    """Records in order, each decoded (None: a tombstone); undecodable ones skipped."""
    out: list[tuple[str, Device | None]] = []
    for key, value in records:
        if not value:
            out.append((key, None))
            continue
        found = _latest([(key, value)], Device)
        if key in found:
            out.append((key, found[key]))
    return out
