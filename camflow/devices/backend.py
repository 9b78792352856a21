"""What a home of the device registry offers (``StoreDevices``, ``KafkaDevices``)."""

from __future__ import annotations

from typing import Protocol

from camflow.devices.model import Device, Seen
from camflow.devices.registry import DeviceRegistry


class DeviceBackend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def devices(self) -> dict[str, Device]:
        """The registry as the backend holds it now, read to its end."""
        ...

    async def seen(self) -> dict[str, Seen]: ...

    async def put(self, device: Device) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def put_seen(self, seen: Seen) -> None: ...

    async def follow(self, registry: DeviceRegistry) -> None:
        """Keep ``registry`` current until cancelled (never raises for an unavailable backend)."""
        ...
