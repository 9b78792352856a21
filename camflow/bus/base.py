"""What every bus offers, whether in-process or Kafka."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: bytes = field(repr=False)
    headers: Mapping[str, bytes] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0


class Consumer(Protocol):
    async def get(self, timeout: float = 1.0) -> Message | None:
        """The next message of the group's share, or None when none came within ``timeout`` seconds."""
        ...

    async def commit(self, message: Message) -> None:
        """Mark ``message`` (and everything before it in its partition) as processed."""
        ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        """Durably publish (for Kafka: acknowledged by all in-sync replicas) or raise."""
        ...

    async def subscribe(self, topics: Sequence[str], group: str) -> Consumer:
        """Join consumer group ``group``: its members share the messages of ``topics``."""
        ...


@runtime_checkable
class Rebalancing(Protocol):
    """A consumer whose share of partitions can change while it runs (Kafka). ``generation``
    goes up with every new assignment; whoever keeps per-partition state in memory drops it
    then and rebuilds it from the store, since another member may have moved it on."""

    generation: int

    def owns(self, topic: str, key: str) -> bool:
        """Whether messages keyed ``key`` on ``topic`` are this consumer's share now."""
        ...


@runtime_checkable
class LagReporting(Protocol):
    async def lag(self) -> int | None:
        """Messages behind the end of what this consumer reads (None when unknown yet)."""
        ...


@runtime_checkable
class Following(Protocol):
    async def follow(self, topics: Sequence[str], since: float = 0.0) -> Consumer:
        """Read ``topics`` outside any consumer group, starting ``since`` seconds back where kept."""
        ...


async def consumer_lag(consumer: object) -> int | None:
    """The consumer's lag in messages, or None when it cannot tell (or the query failed)."""
    if not isinstance(consumer, LagReporting):
        return None
    try:
        return await consumer.lag()
    except Exception:
        return None
