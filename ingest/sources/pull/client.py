"""Pull sources: cameras that only serve RTSP, pulled with PyAV's RTSP client into the same segment path.

Each source runs one reader thread per connection (PyAV's demuxer blocks), which turns
packets into access units (H.264 or H.265; Annex B or length-prefixed in, NAL units out,
parameter sets from the stream's extradata re-inserted before random access pictures that
lack them, timestamps on the 90 kHz timeline) and hands them to the event loop through a
bounded queue; the loop hands them to the media path (a ``Publisher`` of the stream's codec) as
every source does. Each connection is a new epoch: ``live`` on connect,
``offline`` (last partial segment flushed, with the audio still inside the AAC encoder of
transcoded audio) when the source fails or the service stops. A failed connection, also the
first one, is retried with capped, jittered exponential backoff until the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
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
from camflow.tls import client_context
from ingest.codecs.aac import AudioConfig, AudioCounters, AudioUnit
from ingest.errors import ParseError
from ingest.media.live import LiveFeeds
from ingest.media.publisher import Publisher
from ingest.media.segmenter import TIMESCALE
from ingest.media.units import AccessUnit
from ingest.sources.pull.assembler import (
    SYNTAXES,
    AudioAssembler,
    PullCounters,
    UnitAssembler,
)
from ingest.sources.pull.tls import TlsRelay

TRANSPORTS = ("tcp", "udp")
MAX_QUEUED_UNITS = 800  # ~10 s of 30 fps video and 48 kHz AAC waiting for the loop; more are dropped, counted
STOP_JOIN_SECONDS = 15.0
log = get_logger("ingest.sources.pull.client")


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
            raise ConfigError(
                f"pull source {self.name} URL {self.shown!r}: expected rtsp:// or rtsps://HOST[:PORT]/PATH"
            )
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"pull source {self.name} transport {self.transport!r}: expected tcp or udp")
        if self.secure and self.transport != "tcp":
            raise ConfigError(
                f"pull source {self.name}: rtsps:// is pulled over tcp only (RTP interleaved inside TLS; "
                "over udp it would travel unencrypted)"
            )

    @property
    def secure(self) -> bool:
        """An ``rtsps://`` source: RTSP and its RTP inside TLS (``ingest.sources.pull.tls``)."""
        return self.url.lower().startswith("rtsps://")

    def _credentials(self) -> tuple[str | None, str]:
        """``(password, the URL with the password as ***)``; password None when the URL has none."""
        scheme, _, rest = self.url.partition("://")
        netloc, slash, path = rest.partition("/")
        userinfo, at, hostport = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if not at or not colon:
            return None, self.url
        return password, f"{scheme}://{user}:***@{hostport}{slash}{path}"

    @property
    def shown(self) -> str:
        """The URL as logs, errors and health show it: its password (if any) is ``***``."""
        return self._credentials()[1]

    def scrub(self, text: str) -> str:
        """``text`` (an error from the RTSP client, which names the URL) without the password."""
        password, shown = self._credentials()
        if password is None:
            return text
        text = text.replace(self.url, shown)
        return text.replace(password, "***") if len(password) >= 4 else text  # not a stray "a" or "1"


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


# --- one connection ------------------------------------------------------------------------------

Post = Callable[[tuple[str, object]], None]


@dataclass(frozen=True)
class Opened:
    """What the reader found when the source opened (posted as ``("open", Opened)``)."""

    codec: str
    counters: PullCounters  # the video assembler's, updated by the reader thread
    audio: AudioConfig | None  # the AAC track the segments get, None = video only
    audio_counters: AudioCounters | None


class _Reader(threading.Thread):
    """Opens the source and demuxes it (blocking PyAV calls), posting ("open"|"unit"|"audio"|"end", value)
    items. Audio is turned into AAC units here too (encoding G.711 is CPU work: off the event loop)."""

    def __init__(
        self, source: PullSource, url: str, post: Post, open_timeout: float, read_timeout: float
    ) -> None:
        """``url``: what PyAV opens (the source's, or its TLS relay's for ``rtsps://``)."""
        super().__init__(name=f"pull-{source.name}", daemon=True)
        self.source = source
        self.url = url
        self.post = post
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.stopping = threading.Event()

    def run(self) -> None:
        error: BaseException | None = None
        container = None
        audio: AudioAssembler | None = None
        try:
            options = {
                "rtsp_transport": self.source.transport,
                "timeout": str(int(self.read_timeout * 1_000_000)),  # socket I/O timeout, microseconds
            }
            timeouts = (self.open_timeout, self.read_timeout)
            container = av.open(self.url, options=options, timeout=timeouts)
            expected = " or ".join(SYNTAXES)
            if not container.streams.video:
                raise ConfigError(f"{self.source.shown}: no video stream, expected {expected}")
            stream = container.streams.video[0]
            syntax = SYNTAXES.get(stream.codec_context.name)
            if syntax is None:
                codec = stream.codec_context.name
                raise ConfigError(f"{self.source.shown}: video codec {codec}, expected {expected}")
            assembler = UnitAssembler(stream.codec_context.extradata, stream.time_base, syntax)
            audio = self._audio(container)
            config = audio.config if audio is not None else None
            audio_counters = audio.counters if audio is not None else None
            self.post(("open", Opened(stream.codec_context.name, assembler.counters, config, audio_counters)))
            streams = [stream] if audio is None else [stream, container.streams.audio[0]]
            for packet in container.demux(*streams):
                if self.stopping.is_set():
                    break
                if packet.size == 0:
                    continue
                if audio is not None and packet.stream_index != stream.index:
                    for audio_unit in audio.push(packet):
                        self.post(("audio", audio_unit))
                    continue
                unit = assembler.push(bytes(packet), packet.pts, packet.dts)
                if unit is not None:
                    self.post(("unit", unit))
            else:
                error = EOFError("the source ended the stream")
        except Exception as exc:
            error = exc
        finally:
            if audio is not None:
                self._flush(audio)
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
            self.post(("end", error))

    def _flush(self, audio: AudioAssembler) -> None:
        """The audio still inside the AAC encoder (transcoded G.711: up to two frames, 256 ms at 8 kHz)
        goes out before ``end``, so the last segment's audio reaches its video's end."""
        try:
            units = audio.flush()
        except Exception as exc:  # a broken encoder must not keep "end" from the loop
            log.warning("pull_audio_flush_failed", stream_id=self.source.name, error=str(exc))
            return
        for unit in units:
            self.post(("audio", unit))

    def _audio(self, container: Any) -> AudioAssembler | None:
        """The first audio stream's assembler; audio the segments cannot carry is logged and skipped."""
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        try:
            return AudioAssembler(stream)
        except ParseError as exc:
            log.warning("pull_audio_ignored", stream_id=self.source.name, error=str(exc))
            return None


# --- the source's lifetime ---------------------------------------------------------------------------


@dataclass
class PullStats:
    attempts: int = 0
    connects: int = 0
    failures: int = 0
    units: int = 0
    units_dropped: int = 0
    audio_units: int = 0
    audio_units_dropped: int = 0
    last_error: str = ""  # without the URL's password
    state: str = "connecting"  # connecting, live, offline (waiting to retry), stopped
    retry_at: float | None = None  # monotonic time of the next attempt while offline


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
    segment_target: float  # its default is the --segment-duration flag's
    backoff: Backoff = field(default_factory=Backoff)
    open_timeout: float = 5.0
    read_timeout: float = 5.0
    stats: PullStats = field(default_factory=PullStats)
    tls_context: ssl.SSLContext | None = None  # rtsps:// sources: how their certificate is checked
    part_target: float | None = None  # seconds of the low-latency parts (--part-duration); None: none
    live: LiveFeeds | None = None  # where its video also goes as it arrives (WHEP viewers)

    def __post_init__(self) -> None:
        self.log = get_logger("ingest.sources.pull.client", stream_id=self.source.name)
        self.publisher: Publisher | None = None
        self._stop = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, object]] | None = None
        self._origin: float | None = None  # UNIX time of pts 0 of this connection's timeline
        self._audio_pts = 0  # of the latest audio unit, in the audio's sample rate

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
            self.stats.retry_at = time.monotonic() + delay
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
            if item[0] in ("unit", "audio") and queue.qsize() >= MAX_QUEUED_UNITS:
                if item[0] == "unit":
                    self.stats.units_dropped += 1
                else:
                    self.stats.audio_units_dropped += 1
                return
            queue.put_nowait(item)

        def post(item: tuple[str, object]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a thread that outlived it
                loop.call_soon_threadsafe(deliver, item)

        self.stats.attempts += 1
        self.stats.state = "connecting"
        self.stats.retry_at = None
        self.log.info("pull_connecting", attempt=self.stats.attempts, transport=self.source.transport)
        relay: TlsRelay | None = None
        if self.source.secure:
            try:
                relay = await TlsRelay.open(self.source.url, self._tls(), self.open_timeout)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                self.stats.failures += 1
                self.stats.last_error = self.source.scrub(f"TLS: {type(exc).__name__}: {exc}")
                self.stats.state = "offline"
                self._queue = None
                return False
        reader = _Reader(
            self.source, relay.url if relay else self.source.url, post, self.open_timeout, self.read_timeout
        )
        reader.start()
        delivered = False
        reason = "source failed"
        stop_by: float | None = None  # loop time by which a stopping reader must have ended
        try:
            while True:
                if stop_by is None:
                    kind, value = await queue.get()
                else:
                    try:
                        kind, value = await asyncio.wait_for(queue.get(), max(0.0, stop_by - loop.time()))
                    except TimeoutError:
                        return delivered
                if kind == "unit" and self.publisher is not None:
                    assert isinstance(value, AccessUnit)
                    self.stats.units += 1
                    delivered = True
                    if value.is_idr:
                        self._sync(self.publisher, value.pts)
                    self.publisher.push_video(value)
                elif kind == "audio" and self.publisher is not None:
                    assert isinstance(value, AudioUnit)
                    self.stats.audio_units += 1
                    self._audio_pts = value.pts
                    self.publisher.push_audio(value)
                elif kind == "open":
                    assert isinstance(value, Opened)
                    await self._went_live(value)
                elif kind == "end" and stop_by is not None:  # stopped: the reader's tail is in
                    return delivered
                elif kind == "end":
                    error = value if isinstance(value, BaseException) else EOFError("ended")
                    self.stats.failures += 1
                    self.stats.last_error = self.source.scrub(f"{type(error).__name__}: {error}")
                    reason = f"source failed: {self.stats.last_error}"[:200]
                    return delivered
                elif kind == "stop" and stop_by is None:
                    # The reader stops at its next packet and posts what it still holds (the audio
                    # encoder's tail), then "end": deliver all that before the publisher closes.
                    reason = "server stopping"
                    reader.stopping.set()
                    stop_by = loop.time() + STOP_JOIN_SECONDS
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
            if relay is not None:
                await relay.close()

    def _tls(self) -> ssl.SSLContext:
        if self.tls_context is None:
            self.tls_context = client_context(None, insecure=False)  # the system CA store
        return self.tls_context

    async def _went_live(self, opened: Opened) -> None:
        self.stats.connects += 1
        self.stats.state = "live"
        publisher = Publisher(
            self.bus,
            self.source.name,
            codec=opened.codec,
            segment_target=self.segment_target,
            counters=(opened.counters,),
            part_target=self.part_target,
            live=self.live,
        )
        if opened.audio is not None:
            publisher.attach_audio(opened.audio, counters=opened.audio_counters)
        self._origin = None
        self._audio_pts = 0
        await publisher.start()
        self.publisher = publisher
        self.log.info(
            "pull_connected",
            attempt=self.stats.attempts,
            epoch=publisher.epoch,
            codec=opened.codec,
            audio=opened.audio.codecs if opened.audio is not None else None,
        )

    def _sync(self, publisher: Publisher, video_pts: int) -> None:
        """Tell the publisher how the two tracks' clocks relate, as a camera's RTCP sender reports would:
        PyAV already puts audio and video pts on one timeline (synchronised by the server's RTCP), so
        pts 0 of both is the same instant. Sent on every IDR, so the 32-bit RTP arithmetic in the
        publisher never sees a pts more than a GOP away from the last report."""
        if self._origin is None:
            self._origin = time.time() - video_pts / TIMESCALE
        publisher.sender_report(self._origin + video_pts / TIMESCALE, video_pts)
        if publisher.audio is not None:
            rate = publisher.audio.config.sample_rate
            publisher.audio_sender_report(self._origin + self._audio_pts / rate, self._audio_pts)


class PullSources:
    """Every configured pull source, each in its own task; ``stop`` flushes and ends them all.
    ``tls_context`` checks ``rtsps://`` sources (default: the system CA store, host names checked)."""

    def __init__(
        self,
        bus: Bus,
        sources: Sequence[PullSource],
        *,
        segment_target: float,
        tls_context: ssl.SSLContext | None = None,
        part_target: float | None = None,
        live: LiveFeeds | None = None,
    ) -> None:
        check_unique(sources)
        self.clients = [
            PullClient(bus, s, segment_target, tls_context=tls_context, part_target=part_target, live=live)
            for s in sources
        ]
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
