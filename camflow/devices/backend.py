"""What a home of the device registry offers (``StoreDevices``, ``KafkaDevices``)."""

from __future__ import annotations

import time
from typing import Protocol

from camflow.devices.model import Device, Seen
from camflow.devices.registry import DeviceRegistry
from camflow.log import get_logger

ERROR_LOG_SECONDS = 30.0  # an unavailable backend is logged at most this often
log = get_logger("devices")


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


class UnavailableLog:
    """``device_registry_unavailable`` for a backend that ``follow`` cannot read, logged at most every
    ``ERROR_LOG_SECONDS``: a backend down for an hour is not a line a retry."""

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._logged = 0.0

    def failed(self, registry: DeviceRegistry, exc: Exception) -> None:
        if time.monotonic() - self._logged >= ERROR_LOG_SECONDS:
            self._logged = time.monotonic()
            log.warning(
                "device_registry_unavailable",
                backend=self._backend,
                loaded=registry.loaded.is_set(),
                error=repr(exc),
            )
