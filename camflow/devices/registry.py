"""The registry as an ingest node holds it: every device in memory, kept current by a backend's
follower (``camflow.devices.store``, ``camflow.devices.kafka``), checked on every publish.

Until the follower has read the backend once (``loaded``), device credentials are refused (fail
closed); HMAC publish tokens do not depend on it. When a change takes a stream from a device
(revoked, removed, its streams changed, its credential replaced), every listener hears of it
(``DeviceChange``) and ends that device's sessions of the streams it lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from camflow.devices.model import Device, DeviceError, DeviceRefused, Seen, credential_device
from camflow.log import get_logger

SEEN_INTERVAL = 30.0  # seconds between two writes of one device's last seen (unless its address changed)
log = get_logger("devices")


@dataclass(frozen=True)
class DeviceChange:
    device: str
    allowed: frozenset[str]  # the streams it may still publish (none: revoked or removed)
    reason: str


def _change(name: str, old: Device | None, new: Device | None) -> DeviceChange | None:
    if old is None or old.revoked is not None:
        return None  # it had nothing to lose
    if new is None:
        return DeviceChange(name, frozenset(), "device removed")
    if new.revoked is not None:
        return DeviceChange(name, frozenset(), "device revoked")
    if new.secret_hash != old.secret_hash:
        return DeviceChange(name, frozenset(), "device credential replaced")
    lost = set(old.streams) - set(new.streams)
    if lost:
        return DeviceChange(name, frozenset(new.streams), f"stream(s) {', '.join(sorted(lost))} removed")
    return None


class DeviceRegistry:
    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self._listeners: list[Callable[[DeviceChange], object]] = []
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, name: str) -> Device | None:
        return self._devices.get(name)

    def listen(self, listener: Callable[[DeviceChange], object]) -> None:
        self._listeners.append(listener)

    def apply(self, name: str, device: Device | None) -> None:
        """One record of the backend: ``device`` is now ``name``'s record (None: removed)."""
        old = self._devices.pop(name, None)
        if device is not None:
            self._devices[name] = device
        change = _change(name, old, device)
        if old != device and self.loaded.is_set():  # the first read is logged once, by its follower
            log.info("device_registry_changed", device=name, revoked=bool(device and device.revoked))
        if change is not None:
            for listener in self._listeners:
                try:
                    listener(change)
                except Exception:  # one listener's bug must not keep the others from ending sessions
                    log.exception("device_change_listener_failed", device=name)

    def replace(self, devices: Mapping[str, Device]) -> None:
        """The whole registry as the backend holds it now."""
        for name in set(self._devices) - set(devices):
            self.apply(name, None)
        for name, device in devices.items():
            if self._devices.get(name) != device:
                self.apply(name, device)

    def check_credential(self, credential: str, stream: str) -> Device:
        """The device whose credential this is, if it may publish ``stream``; else DeviceRefused."""
        try:
            name = credential_device(credential)
        except DeviceError as exc:
            raise DeviceRefused(str(exc)) from None
        if not self.loaded.is_set():
            raise DeviceRefused("the device registry is not loaded yet (its backend is unavailable)")
        device = self._devices.get(name)
        if device is None:
            raise DeviceRefused(f"no device {name!r}")
        if device.revoked is None and not device.holds(credential):
            raise DeviceRefused(f"credential of device {name!r} does not match")
        reason = device.refusal(stream)
        if reason is not None:
            raise DeviceRefused(reason)
        return device


class SeenWriter:
    """Last seen and last address of each device, written through the backend at most once per
    ``interval`` per device (sooner when the address changes), never on the publish path: the write
    runs in a task, and a failure is logged (at most once per ``interval``) and forgotten."""

    def __init__(
        self,
        write: Callable[[Seen], Awaitable[None]],
        *,
        interval: float = SEEN_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._write = write
        self._interval = interval
        self._clock = clock
        self._last: dict[str, Seen] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed_logged = 0.0

    def note(self, name: str, address: str) -> Seen | None:
        """A publish by ``name`` from ``address`` was accepted: the record written now, if one is."""
        now = self._clock()
        last = self._last.get(name)
        if last is not None and last.address == address and now - last.at < self._interval:
            return None
        seen = self._last[name] = Seen(name, now, address)
        task = asyncio.get_running_loop().create_task(self._put(seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return seen

    async def _put(self, seen: Seen) -> None:
        try:
            await self._write(seen)
        except Exception as exc:
            if self._clock() - self._failed_logged >= self._interval:
                self._failed_logged = self._clock()
                log.warning("device_seen_not_written", device=seen.name, error=repr(exc))

    async def close(self, wait: float = 5.0) -> None:
        """Let the writes in flight finish, for at most ``wait`` seconds (a backend that is down
        must not hold up a shutdown; last seen is advice, not a record to keep at any cost)."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=wait)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
