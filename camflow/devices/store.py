"""The device registry in the store (the embedded default, or any S3 bucket without Kafka).

Objects::

    devices/registry/{device}.json   a device's record (camflow.devices.model)
    devices/seen/{device}.json       its last seen and last address, written by ingest
    devices/generation               a random value rewritten after every change of the registry

A follower (ingest) reads ``devices/generation`` every ``interval`` seconds (one small GET) and
reads the records again only when it changed, so a change is seen within about ``interval``
seconds. A writer writes the record, then the generation. Two operators changing the same device
at the same moment: the last write wins.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TypeVar

from camflow.devices.backend import UnavailableLog
from camflow.devices.model import Device, DeviceError, Seen, decode, encode
from camflow.devices.registry import DeviceRegistry
from camflow.errors import NotFound
from camflow.log import get_logger
from camflow.store import Store

REGISTRY_PREFIX = "devices/registry/"
SEEN_PREFIX = "devices/seen/"
GENERATION_KEY = "devices/generation"
POLL_SECONDS = 1.0
log = get_logger("devices")
_T = TypeVar("_T", Device, Seen)


def _name(key: str, prefix: str) -> str:
    return key[len(prefix) :].removesuffix(".json")


class StoreDevices:
    def __init__(self, store: Store, *, interval: float = POLL_SECONDS) -> None:
        self.store = store
        self.interval = interval

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    async def _records(self, prefix: str, cls: type[_T]) -> dict[str, _T]:
        out: dict[str, _T] = {}
        for key in await self.store.list(prefix):
            if not key.endswith(".json"):
                continue
            try:
                record = decode(cls, await self.store.get(key))
            except NotFound:
                continue  # removed between the listing and the read
            except DeviceError as exc:
                log.warning("device_record_skipped", key=key, error=str(exc))
                continue
            if record.name == _name(key, prefix):
                out[record.name] = record
        return out

    async def devices(self) -> dict[str, Device]:
        return await self._records(REGISTRY_PREFIX, Device)

    async def seen(self) -> dict[str, Seen]:
        return await self._records(SEEN_PREFIX, Seen)

    async def put(self, device: Device) -> None:
        await self.store.put(f"{REGISTRY_PREFIX}{device.name}.json", encode(device), "application/json")
        await self._bump()

    async def remove(self, name: str) -> None:
        await self.store.delete(f"{REGISTRY_PREFIX}{name}.json")
        await self.store.delete(f"{SEEN_PREFIX}{name}.json")
        await self._bump()

    async def put_seen(self, seen: Seen) -> None:
        await self.store.put(f"{SEEN_PREFIX}{seen.name}.json", encode(seen), "application/json")

    async def _bump(self) -> None:
        await self.store.put(GENERATION_KEY, secrets.token_hex(16).encode(), "text/plain")

    async def _generation(self) -> bytes:
        try:
            return await self.store.get(GENERATION_KEY)
        except NotFound:
            return b""

    async def follow(self, registry: DeviceRegistry) -> None:
        """Keep ``registry`` current until cancelled; an unavailable store leaves it as it was
        (before the first read: not loaded, device credentials refused) and is logged, not raised."""
        seen_generation: bytes | None = None
        unavailable = UnavailableLog("store")
        while True:
            try:
                generation = await self._generation()
                if generation != seen_generation:
                    registry.replace(await self.devices())
                    seen_generation = generation
                    if not registry.loaded.is_set():
                        registry.loaded.set()
                        log.info("device_registry_loaded", backend="store", devices=len(registry))
            except Exception as exc:
                unavailable.failed(registry, exc)
            await asyncio.sleep(self.interval)
