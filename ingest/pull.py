"""Pull sources: cameras that only serve RTSP, pulled with PyAV's RTSP client into the same segment path.

Each source runs one reader thread per connection (PyAV's demuxer blocks), which turns
packets into access units (Annex B or AVCC in, NAL units out, parameter sets from the
stream's extradata re-inserted before IDRs that lack them, timestamps on the 90 kHz
timeline) and hands them to the event loop through a bounded queue; the loop feeds them
to a ``Publisher`` exactly as RTP from a pushing camera would be. Each connection is a
new epoch: ``live`` on connect, ``offline`` (last partial segment flushed) when the
source fails. A failed connection, also the first one, is retried with capped, jittered
exponential backoff until the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from camflow.bus import Bus
from camflow.errors import ConfigError
from camflow.keys import check_stream_name
from camflow.log import get_logger
from ingest.h264 import NAL_IDR, NAL_PPS, NAL_SPS, is_vcl, split_annexb
from ingest.publisher import Publisher
from ingest.rtp.base import AccessUnit
from ingest.rtp.packet import RtpPacket
from ingest.segmenter import TIMESCALE

TRANSPORTS = ("tcp", "udp")
MAX_QUEUED_UNITS = 300  # ~10 s of 30 fps video waiting for the event loop; more are dropped and counted
STOP_JOIN_SECONDS = 15.0
log = get_logger("ingest.pull")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class PullSource:
    name: str
    url: str
    transport: str = "tcp"

    def __post_init__(self) -> None:
        try:
            check_stream_name(self.name)
        except Exception as exc:
            raise ConfigError(f"pull source name {self.name!r}: {exc}") from None
        if not self.url.lower().startswith(("rtsp://", "rtsps://")):
            raise ConfigError(f"pull source {self.name} URL {self.url!r}: expected rtsp://HOST[:PORT]/PATH")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"pull source {self.name} transport {self.transport!r}: expected tcp or udp")


def parse_pull(text: str) -> PullSource:
    """``NAME=rtsp://...`` (the ``--pull`` flag) to a source pulled over TCP."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"--pull {text!r}: expected NAME=rtsp://HOST[:PORT]/PATH")
    return PullSource(name.strip(), url.strip())


def load_sources(path: Path) -> list[PullSource]:
    """A TOML sources file: ``cam7 = "rtsp://..."`` or a table ``[cam7]`` with ``url`` and ``transport``."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"sources file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f'sources file {path}: {exc}; expected TOML like cam7 = "rtsp://..."') from None
    sources = []
    for name, value in data.items():
        if isinstance(value, str):
            sources.append(PullSource(name, value))
        elif isinstance(value, dict) and isinstance(value.get("url"), str):
            unknown = set(value) - {"url", "transport"}
            if unknown:
                raise ConfigError(f"sources file {path} [{name}]: unknown keys {sorted(unknown)}")
            sources.append(PullSource(name, value["url"], str(value.get("transport", "tcp")).lower()))
        else:
            raise ConfigError(
                f"sources file {path}: {name} = {value!r}: expected a URL string or a table with url"
            )
    return sources


def check_unique(sources: Sequence[PullSource]) -> None:
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"pull sources {dupes}: each stream name may be pulled once")


# --- packets to access units -----------------------------------------------------------------


def parameter_sets(extradata: bytes | None) -> tuple[list[bytes], int]:
    """SPS/PPS NAL units and the NAL length size (0 = Annex B) from H.264 extradata (Annex B or avcC)."""
    if not extradata:
        return [], 0
    if extradata[0] != 1:  # Annex B, as FFmpeg's RTSP demuxer makes it from sprop-parameter-sets
        return [n for n in split_annexb(extradata) if n[0] & 0x1F in (NAL_SPS, NAL_PPS)], 0
    if len(extradata) < 7:
        return [], 4
    length_size = (extradata[4] & 0x03) + 1
    nalus: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count (5 bits), then PPS count
        if pos >= len(extradata):
            break
        count = extradata[pos] & count_mask
        pos += 1
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            nalus.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return [n for n in nalus if n], length_size


def split_length_prefixed(data: bytes, length_size: int) -> list[bytes]:
    nalus = []
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            break
        nalus.append(data[pos : pos + size])
        pos += size
    return nalus


class UnitAssembler:
    """PyAV packets of one H.264 stream to access units on the 90 kHz timeline."""

    def __init__(self, extradata: bytes | None, time_base: Any) -> None:
        params, self.length_size = parameter_sets(extradata)
        self._sps = next((n for n in params if n[0] & 0x1F == NAL_SPS), None)
        self._pps = next((n for n in params if n[0] & 0x1F == NAL_PPS), None)
        self._num = int(time_base.numerator) * TIMESCALE if time_base else 1
        self._den = int(time_base.denominator) if time_base else 1
        self._held: list[bytes] = []  # parameter sets or SEI that came in a packet of their own
        self._last_pts: int | None = None
        self.params_inserted = 0
        self.pts_missing = 0

    def push(self, data: bytes, pts: int | None, dts: int | None) -> AccessUnit | None:
        if data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01":
            nalus = split_annexb(data)
        else:
            nalus = split_length_prefixed(data, self.length_size or 4)
        nalus = self._held + nalus
        types = [n[0] & 0x1F for n in nalus]
        if not any(is_vcl(t) for t in types):
            self._held = nalus[-16:]
            return None
        self._held = []
        for nal, kind in zip(nalus, types, strict=True):
            if kind == NAL_SPS:
                self._sps = nal
            elif kind == NAL_PPS:
                self._pps = nal
        is_idr = NAL_IDR in types
        if is_idr and (NAL_SPS not in types or NAL_PPS not in types):
            missing = [n for n, k in ((self._sps, NAL_SPS), (self._pps, NAL_PPS)) if n and k not in types]
            if missing:
                self.params_inserted += 1
                at = next(i for i, t in enumerate(types) if is_vcl(t))
                nalus = nalus[:at] + missing + nalus[at:]
        stamp = pts if pts is not None else dts
        if stamp is None:
            self.pts_missing += 1
            ticks = 0 if self._last_pts is None else self._last_pts + TIMESCALE // 30
        else:
            ticks = stamp * self._num // self._den
        self._last_pts = ticks
        return AccessUnit(pts=ticks, nalus=tuple(nalus), is_idr=is_idr)


class _NoRtp:
    """A pulled source reaches the Publisher as access units (``on_unit``): no RTP to depacketize."""

    clock_rate = TIMESCALE

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        return []

    def flush(self) -> list[AccessUnit]:
        return []


# --- one connection ------------------------------------------------------------------------------

Post = Callable[[tuple[str, object]], None]


class _Reader(threading.Thread):
    """Opens the source and demuxes it (blocking PyAV calls), posting ("open"|"unit"|"end", value) items."""

    def __init__(self, source: PullSource, post: Post, open_timeout: float, read_timeout: float) -> None:
        super().__init__(name=f"pull-{source.name}", daemon=True)
        self.source = source
        self.post = post
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.stopping = threading.Event()

    def run(self) -> None:
        error: BaseException | None = None
        container = None
        try:
            options = {
                "rtsp_transport": self.source.transport,
                "timeout": str(int(self.read_timeout * 1_000_000)),  # socket I/O timeout, microseconds
            }
            timeouts = (self.open_timeout, self.read_timeout)
            container = av.open(self.source.url, options=options, timeout=timeouts)
            if not container.streams.video:
                raise ConfigError(f"{self.source.url}: no video stream, expected H.264")
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                codec = stream.codec_context.name
                raise ConfigError(f"{self.source.url}: video codec {codec}, expected h264")
            assembler = UnitAssembler(stream.codec_context.extradata, stream.time_base)
            self.post(("open", stream.codec_context.name))
            for packet in container.demux(stream):
                if self.stopping.is_set():
                    break
                if packet.size == 0:
                    continue
                unit = assembler.push(bytes(packet), packet.pts, packet.dts)
                if unit is not None:
                    self.post(("unit", unit))
            else:
                error = EOFError("the source ended the stream")
        except Exception as exc:
            error = exc
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
            self.post(("end", error))


# --- the source's lifetime ---------------------------------------------------------------------------


@dataclass
class PullStats:
    attempts: int = 0
    connects: int = 0
    failures: int = 0
    units: int = 0
    units_dropped: int = 0
    last_error: str = ""
    state: str = "connecting"


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds before retry number ``failures`` (1-based): doubling, capped, jittered to 50-100 %."""
        base = min(self.cap, self.initial * 2 ** max(0, failures - 1))
        return float(base * random.uniform(0.5, 1.0))


@dataclass
class PullClient:
    bus: Bus
    source: PullSource
    segment_target: float = 2.0
    backoff: Backoff = field(default_factory=Backoff)
    open_timeout: float = 5.0
    read_timeout: float = 5.0
    stats: PullStats = field(default_factory=PullStats)

    def __post_init__(self) -> None:
        self.log = get_logger("ingest.pull", stream_id=self.source.name)
        self.publisher: Publisher | None = None
        self._stop = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, object]] | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._queue is not None:
            self._queue.put_nowait(("stop", None))

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            delivered = await self._connect_once()
            if self._stop.is_set():
                break
            failures = 1 if delivered else failures + 1
            delay = self.backoff.delay(failures)
            self.log.warning(
                "pull_failed",
                attempt=self.stats.attempts,
                error=self.stats.last_error,
                retry_in=round(delay, 2),
                connects=self.stats.connects,
                failures=self.stats.failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        self.stats.state = "stopped"

    async def _connect_once(self) -> bool:
        """One connection, until it fails or the client stops; True when it delivered media."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._queue = queue

        def deliver(item: tuple[str, object]) -> None:
            if item[0] == "unit" and queue.qsize() >= MAX_QUEUED_UNITS:
                self.stats.units_dropped += 1
                return
            queue.put_nowait(item)

        def post(item: tuple[str, object]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a thread that outlived it
                loop.call_soon_threadsafe(deliver, item)

        self.stats.attempts += 1
        self.stats.state = "connecting"
        self.log.info("pull_connecting", attempt=self.stats.attempts, transport=self.source.transport)
        reader = _Reader(self.source, post, self.open_timeout, self.read_timeout)
        reader.start()
        delivered = False
        reason = "source failed"
        try:
            while True:
                kind, value = await queue.get()
                if kind == "unit" and self.publisher is not None:
                    assert isinstance(value, AccessUnit)
                    self.stats.units += 1
                    delivered = True
                    self.publisher.on_unit(value)
                elif kind == "open":
                    await self._went_live()
                elif kind == "end":
                    error = value if isinstance(value, BaseException) else EOFError("ended")
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(error).__name__}: {error}"
                    reason = f"source failed: {self.stats.last_error}"[:200]
                    return delivered
                elif kind == "stop":
                    reason = "server stopping"
                    reader.stopping.set()
                    return delivered
        finally:
            reader.stopping.set()
            self._queue = None
            if self.publisher is not None:
                publisher, self.publisher = self.publisher, None
                await asyncio.shield(publisher.close(reason))
            self.stats.state = "offline"
            deadline = time.monotonic() + STOP_JOIN_SECONDS
            while reader.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    async def _went_live(self) -> None:
        self.stats.connects += 1
        self.stats.state = "live"
        publisher = Publisher(self.bus, self.source.name, _NoRtp(), segment_target=self.segment_target)
        await publisher.start()
        self.publisher = publisher
        self.log.info("pull_connected", attempt=self.stats.attempts, epoch=publisher.epoch)


class PullSources:
    """Every configured pull source, each in its own task; ``stop`` flushes and ends them all."""

    def __init__(self, bus: Bus, sources: Sequence[PullSource], *, segment_target: float = 2.0) -> None:
        check_unique(sources)
        self.clients = [PullClient(bus, s, segment_target) for s in sources]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for client in self.clients:
            self._tasks.append(asyncio.create_task(client.run(), name=f"pull-{client.source.name}"))
        log.info("pull_sources_started", sources=[c.source.name for c in self.clients])

    async def stop(self) -> None:
        for client in self.clients:
            client.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
