"""``camflow device add|list|revoke|remove|streams``, and the registry an ingest process follows.

The registry lives where the services meet: with ``--kafka``, the compacted topic
``camflow.devices`` (``camflow.devices.kafka``); else the store (``--s3``, or files under
``--data-dir``; ``camflow.devices.store``), where ``camflow run --data-dir`` on the same directory
sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from camflow.bus import Bus
from camflow.devices import Device, DeviceRegistry, Seen, SeenWriter
from camflow.devices.backend import DeviceBackend
from camflow.errors import ConfigError
from camflow.log import get_logger
from camflow.store import FileStore, Store

LOAD_WAIT_SECONDS = 5.0  # at start, how long ingest waits for the registry before taking cameras anyway
log = get_logger("devices")


def device_backend(
    args: argparse.Namespace, store: Store | None = None, bus: Bus | None = None
) -> DeviceBackend:
    """The registry's home for these flags: Kafka with ``--kafka`` (writing through ``bus`` when it is
    a started KafkaBus), else ``store`` (or the one ``--s3`` / ``--data-dir`` name)."""
    if args.kafka:
        from camflow.bus.kafka import KafkaBus
        from camflow.devices.kafka import KafkaDevices

        return KafkaDevices(
            args.kafka,
            prefix=args.kafka_prefix,
            replication=args.kafka_replication,
            bus=bus if isinstance(bus, KafkaBus) else None,
        )
    from camflow.devices.store import StoreDevices

    if store is None:
        if getattr(args, "s3", None):
            from camflow.store.s3 import S3Location, S3Store

            store = S3Store(S3Location.parse(args.s3))
        else:
            store = FileStore(Path(args.data_dir) / "store")
    return StoreDevices(store)


@dataclass
class DeviceFollower:
    """An ingest process's registry: loaded from the backend, then kept current by a task."""

    registry: DeviceRegistry
    seen: SeenWriter
    task: asyncio.Task[None]

    started: float

    @classmethod
    def begin(cls, backend: DeviceBackend) -> DeviceFollower:
        """Start following ``backend`` (in a task; ``ready`` waits for its first read)."""
        registry = DeviceRegistry()
        task = asyncio.create_task(backend.follow(registry), name="device-registry")
        return cls(registry, SeenWriter(backend.put_seen), task, time.monotonic())

    async def ready(self, wait: float = LOAD_WAIT_SECONDS) -> None:
        """Wait until the registry was read, at most ``wait`` seconds after ``begin``. A backend still
        unavailable then is not fatal: device credentials are refused until it answers."""
        left = self.started + wait - time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.registry.loaded.wait()), max(left, 0.0))
        if not self.registry.loaded.is_set():
            log.warning(
                "device_registry_not_loaded",
                waited=wait,
                effect="device credentials are refused until the registry is read; HMAC tokens work",
            )

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.seen.close()


# --- camflow device ---------------------------------------------------------------------------


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at else "-"


def _row(device: Device, seen: Seen | None) -> dict[str, object]:
    return {
        "name": device.name,
        "streams": list(device.streams),
        "created": device.created,
        "last_seen": seen.at if seen else None,
        "last_address": seen.address if seen else None,
        "revoked": device.revoked,
    }


def _table(devices: dict[str, Device], seen: dict[str, Seen]) -> str:
    header = ("NAME", "STREAMS", "CREATED", "LAST SEEN", "LAST ADDRESS", "STATE")
    rows = [header]
    for name in sorted(devices):
        d, s = devices[name], seen.get(name)
        state = f"revoked {_when(d.revoked)}" if d.revoked else "active"
        rows.append(
            (
                name,
                ",".join(d.streams),
                _when(d.created),
                _when(s.at if s else None),
                s.address if s else "-",
                state,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _add_lines(device: Device, credential: str) -> list[str]:
    stream = device.streams[0]
    return [
        f"device {device.name} added; it may publish: {', '.join(device.streams)}",
        f"  RTSP Digest/Basic: rtsp://{device.name}:<credential>@HOST:8554/{stream}"
        f"  (user {device.name}, realm camflow)",
        f"  RTSP ?token=:      rtsp://HOST:8554/{stream}?token=<credential>",
        f"  WHIP:              Authorization: Bearer <credential>  (POST http://HOST:8080/whip/{stream})",
        "  camflow keeps only hashes of it: the credential below is shown this once.",
        credential,
    ]


async def _device(args: argparse.Namespace, backend: DeviceBackend) -> int:
    command, name = args.device_command, getattr(args, "name", None)
    devices = await backend.devices()
    if command == "list":
        seen = await backend.seen()
        if args.json:
            print(json.dumps([_row(devices[n], seen.get(n)) for n in sorted(devices)], indent=2))
        else:
            print(_table(devices, seen))
        return 0
    assert name is not None
    found = devices.get(name)
    if command == "add":
        if found is not None:
            state = "revoked" if found.revoked else "active"
            print(
                f"camflow: device {name!r} exists ({state}); `camflow device remove {name}` first",
                file=sys.stderr,
            )
            return 1
        device, credential = Device.create(name, tuple(args.stream or ()), time.time())
        await backend.put(device)
        print("\n".join(_add_lines(device, credential)), flush=True)
        return 0
    if found is None:
        print(f"camflow: no device {name!r} (`camflow device list` shows them)", file=sys.stderr)
        return 1
    if command == "revoke":
        if found.revoked is None:
            await backend.put(found.revoke(time.time()))
        print(f"device {name} revoked: every ingest node refuses it within 5 s and ends its sessions")
    elif command == "remove":
        await backend.remove(name)
        print(f"device {name} removed")
    elif command == "streams":
        await backend.put(found.with_streams(tuple(args.streams)))
        print(f"device {name} may publish: {', '.join(args.streams)}")
    return 0


async def _run(args: argparse.Namespace) -> int:
    backend = device_backend(args)
    try:
        await backend.start()
    except Exception as exc:
        raise ConfigError(
            f"device registry unavailable ({'Kafka' if args.kafka else 'store'}): {exc}"
        ) from None
    try:
        return await _device(args, backend)
    finally:
        await backend.close()


def device_command(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
