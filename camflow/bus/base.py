"""What every bus offers, whether in-process or Kafka."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


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
