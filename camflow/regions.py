"""Regions: where each stream is live (the stream directory), and how far behind each peer region's
replica is (heartbeats). Both are objects in the store, and reach the other regions through the
store's own replication (MinIO site replication, S3 cross-region replication): no cross-region
service, and a region answers from its own replica when the others are gone.

Keys (``camflow.keys``)::

    directory/{stream}.json          the stream's owner: region, epoch, live, edge URL, written at
    regions/{region}/heartbeat.json  a region's clock and edge URL, written every HEARTBEAT_SECONDS

Ownership (DESIGN.md#multi-region): the region of a stream's newest epoch owns the stream, and
only the owner writes what is per stream (live and DVR playlists, the master, the day summaries of
the recording index, retention's edits). What is under an epoch is written only by the region the
session is in. So no key has two writers, and when a region comes back after a failover, it
leaves the stream to the region that took it over. Epochs are UTC times (``camflow.keys.new_epoch``),
so the newest session wins wherever it is; the regions' clocks are assumed within a second (NTP).

Versioned JSON (``"v": 1``)::

    {"v": 1, "stream": "cam1", "region": "a", "epoch": "20261204T180102345Z", "live": true,
     "edge": "https://edge.a.example", "at": "2026-12-04T18:01:03.000Z"}
    {"v": 1, "region": "a", "edge": "https://edge.a.example", "at": "2026-12-04T18:01:03.500Z"}

The documents are pure code; ``RegionWatch`` is the store I/O, with the replication lag it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from camflow.errors import CamflowError, NotFound
from camflow.hls.dates import format_date_time, parse_date_time
from camflow.keys import REGIONS_PREFIX, directory_key, heartbeat_key, is_epoch, is_region, is_stream_name
from camflow.log import get_logger
from camflow.store import Store

VERSION = 1
CONTENT_TYPE = "application/json"
HEARTBEAT_SECONDS = 0.5  # a packager writes its region's heartbeat this often
POLL_SECONDS = 0.1  # ... and reads its peers' this often (a lag sample is late by at most this)
PEERS_SECONDS = 10.0  # the regions under regions/ listed again this often
DIRECTORY_SECONDS = 2.0  # a directory entry or a peer's heartbeat read is trusted this long
LAG_SAMPLES = 20  # the replication lag is the smallest of this many samples (10 s of heartbeats)
STREAMS_CACHED = 10_000  # directory answers kept in memory (an edge's per-stream cache)
STALE_SECONDS = 10.0  # a region whose heartbeat is older than this here is taken as gone
# A packager that starts trusts its replica's directory at once when its own region's heartbeat there
# is fresh or absent (the region was not away: a restart, a new pod, a new region) and every peer's is
# fresh (replication flows). Otherwise (the region was away, or a peer is) once every peer's heartbeat
# has advanced here and SETTLE_SECONDS have passed since (owners rewrite their entries every
# packager.ownership.CHECK_SECONDS), or once GONE_SECONDS have passed (the peers that never advanced
# are gone): a region coming back reads its peers' newer claims before it writes anything per stream.
SETTLE_SECONDS = 12.0
GONE_SECONDS = 60.0


class RegionError(CamflowError):
    """A directory entry or heartbeat that is not one."""


@dataclass(frozen=True)
class RegionConfig:
    """The region this process is in, and the base URL of that region's edge (no trailing slash)."""

    name: str
    edge_url: str


def _doc(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegionError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise RegionError(f"{what} is not a version {VERSION} document")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise RegionError(f"{what}: {name!r} is missing or not a {kind.__name__}")
    return value


def _time(doc: dict[str, Any], what: str) -> float:
    try:
        return parse_date_time(_field(doc, "at", str, what))
    except ValueError as exc:
        raise RegionError(f"{what}: {exc}") from exc


@dataclass(frozen=True)
class DirectoryEntry:
    """Where a stream is live: the region of its newest epoch (the owner), and that region's edge."""

    stream: str
    region: str
    epoch: str
    live: bool
    edge: str
    at: float  # when the owner wrote it (UNIX seconds, its clock)

    def render(self) -> bytes:
        doc = {
            "v": VERSION,
            "stream": self.stream,
            "region": self.region,
            "epoch": self.epoch,
            "live": self.live,
            "edge": self.edge,
            "at": format_date_time(self.at),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> DirectoryEntry:
        what = "directory entry"
        doc = _doc(data, what)
        entry = cls(
            stream=_field(doc, "stream", str, what),
            region=_field(doc, "region", str, what),
            epoch=_field(doc, "epoch", str, what),
            live=_field(doc, "live", bool, what),
            edge=_field(doc, "edge", str, what),
            at=_time(doc, what),
        )
        if not (is_stream_name(entry.stream) and is_region(entry.region) and is_epoch(entry.epoch)):
            raise RegionError(f"{what}: stream, region or epoch is not a valid name")
        return entry


def owns(region: str, epoch: str, entry: DirectoryEntry | None) -> bool:
    """Whether ``region``, whose newest epoch of the stream is ``epoch``, owns the stream that
    ``entry`` (the directory as this region's replica has it) names: no entry, the entry is its
    own, or its epoch is the newer (same epoch in two regions: the first region name wins)."""
    if entry is None or entry.region == region:
        return True
    return (epoch, entry.region) > (entry.epoch, region)


@dataclass(frozen=True)
class Heartbeat:
    region: str
    edge: str
    at: float

    def render(self) -> bytes:
        doc = {"v": VERSION, "region": self.region, "edge": self.edge, "at": format_date_time(self.at)}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> Heartbeat:
        what = "heartbeat"
        doc = _doc(data, what)
        region, edge = _field(doc, "region", str, what), _field(doc, "edge", str, what)
        beat = cls(region=region, edge=edge, at=_time(doc, what))
        if not is_region(beat.region):
            raise RegionError(f"{what}: region {beat.region!r} is not a valid name")
        return beat


@dataclass
class Peer:
    """What this region's replica shows of another region."""

    region: str
    edge: str = ""
    written_at: float | None = None  # the newest heartbeat seen (the peer's clock)
    # Each heartbeat is seen up to a poll (POLL_SECONDS) after it arrived; the smallest of the
    # last LAG_SAMPLES (when each was first seen here minus when it was written) is the lag: the
    # polls' phase drifts over the beats', so some sample is taken just after its beat arrived.
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))
    advanced_at: float | None = None  # when a heartbeat newer than the first seen arrived (here)

    @property
    def lag(self) -> float | None:
        """Seconds a heartbeat takes to replicate here (None before two were seen)."""
        return min(self.samples) if self.samples else None

    def age(self, now: float) -> float | None:
        """Seconds since the newest heartbeat seen was written: everything the peer wrote before
        ``now - age`` has replicated here (the recovery point, were the peer lost now)."""
        return None if self.written_at is None else max(0.0, now - self.written_at)


@dataclass
class _Read:
    value: Any
    at: float


@dataclass
class RegionWatch:
    """A region's view of the others, through its own store.

    ``run`` (a packager's task) writes this region's heartbeat and reads every peer's every
    ``HEARTBEAT_SECONDS``; ``peers`` holds what it saw. ``entry`` and ``heartbeat`` read the directory
    and a peer's heartbeat with a ``DIRECTORY_SECONDS`` cache (an edge's per-request lookups);
    ``claim`` writes this region's entry for a stream.
    """

    store: Store
    config: RegionConfig
    clock: Callable[[], float] = time.time
    peers: dict[str, Peer] = field(default_factory=dict)
    errors: int = 0
    _entries: dict[str, _Read] = field(default_factory=dict)
    _beats: dict[str, _Read] = field(default_factory=dict)
    _here: dict[str, float] = field(default_factory=dict)  # stream -> when elsewhere() found it at home
    settle_seconds: float = SETTLE_SECONDS
    gone_seconds: float = GONE_SECONDS
    _listed_at: float = -PEERS_SECONDS
    _started: float | None = None
    _settled: bool = False
    _away: bool = True  # this region's heartbeat was stale when this process started (or unread)

    async def run(self, stop: asyncio.Event) -> None:
        log: Any = get_logger("regions", region=self.config.name)
        try:  # before this process's first beat: how long ago did its region last beat?
            own = await self._read_beat(self.config.name)
            self._away = own is not None and self.clock() - own.at > STALE_SECONDS
        except Exception as exc:  # taken as away: the settling rule decides
            log.warning("own heartbeat unreadable", error=repr(exc))
        beaten = -HEARTBEAT_SECONDS
        while not stop.is_set():
            try:
                if self.clock() - beaten >= HEARTBEAT_SECONDS:
                    beaten = self.clock()
                    await self.beat()
                await self.look()
            except Exception as exc:  # the store is out: tried again next beat
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning("region heartbeat failed", error=repr(exc), errors=self.errors)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)

    async def beat(self) -> None:
        beat = Heartbeat(self.config.name, self.config.edge_url, self.clock())
        await self.store.put(heartbeat_key(self.config.name), beat.render(), CONTENT_TYPE)

    async def look(self) -> None:
        """Read every peer's heartbeat; a newer one than last time gives a lag sample."""
        now = self.clock()
        if now - self._listed_at >= PEERS_SECONDS:
            self._listed_at = now
            for key in await self.store.list(REGIONS_PREFIX):
                name = key[len(REGIONS_PREFIX) :].split("/", 1)[0]
                if is_region(name) and name != self.config.name:
                    self.peers.setdefault(name, Peer(name))
        for peer in self.peers.values():
            beat = await self._read_beat(peer.region)
            if beat is None:
                continue
            seen = self.clock()
            if peer.written_at is None or beat.at > peer.written_at:
                if peer.written_at is not None:  # the first one seen may be from long ago
                    peer.samples.append(max(0.0, seen - beat.at))
                    peer.advanced_at = peer.advanced_at or seen
                peer.written_at, peer.edge = beat.at, beat.edge
            self._beats[peer.region] = _Read(beat, seen)
        if self._started is None:  # the peers are known: settling starts (done at once if none was away)
            self._started = now
            fresh = all(
                p.written_at is not None and now - p.written_at <= STALE_SECONDS for p in self.peers.values()
            )
            self._settled = fresh and not self._away

    def settled(self) -> bool:
        """Whether this replica's directory can be trusted (see ``SETTLE_SECONDS``); once true, stays."""
        if self._settled or self._started is None:
            return self._settled
        now = self.clock()
        settle, peers = self.settle_seconds, self.peers.values()
        flowing = all(p.advanced_at is not None and now - p.advanced_at >= settle for p in peers)
        self._settled = flowing or now - self._started >= self.gone_seconds
        return self._settled

    def worst_lag(self) -> float | None:
        """The largest replication lag seen from any peer (None without peers or samples)."""
        lags = [p.lag for p in self.peers.values() if p.lag is not None]
        return max(lags) if lags else None

    async def _read_beat(self, region: str) -> Heartbeat | None:
        try:
            return Heartbeat.parse(await self.store.get(heartbeat_key(region)))
        except NotFound:
            return None
        except RegionError:
            self.errors += 1
            return None

    async def heartbeat(self, region: str) -> Heartbeat | None:
        """``region``'s newest heartbeat in this replica, read at most every ``DIRECTORY_SECONDS``."""
        now = self.clock()
        read = self._beats.get(region)
        if read is None or now - read.at >= DIRECTORY_SECONDS:
            read = self._beats[region] = _Read(await self._read_beat(region), now)
        beat: Heartbeat | None = read.value
        return beat

    async def entry(self, stream: str, *, fresh: bool = False) -> DirectoryEntry | None:
        """The stream's directory entry in this replica, read at most every ``DIRECTORY_SECONDS``
        (``fresh``: read now). An unreadable entry counts as none (and as an error)."""
        now = self.clock()
        read = self._entries.get(stream)
        if fresh or read is None or now - read.at >= DIRECTORY_SECONDS:
            try:
                data = await self.store.get(directory_key(stream))
                value: DirectoryEntry | None = DirectoryEntry.parse(data)
            except NotFound:
                value = None
            except RegionError:
                self.errors += 1
                value = None
            if len(self._entries) >= STREAMS_CACHED:  # bounded: forget everything, read again
                self._entries.clear()
                self._here.clear()
            read = self._entries[stream] = _Read(value, now)
        entry: DirectoryEntry | None = read.value
        return entry

    async def claim(self, stream: str, epoch: str, live: bool) -> DirectoryEntry:
        entry = DirectoryEntry(stream, self.config.name, epoch, live, self.config.edge_url, self.clock())
        await self.store.put(directory_key(stream), entry.render(), CONTENT_TYPE)
        self._entries[stream] = _Read(entry, self.clock())
        return entry

    async def elsewhere(self, stream: str) -> DirectoryEntry | None:
        """The entry of a stream live in another region that is there (its heartbeat fresh here),
        else None: a stream live here, not live, unknown, or whose region is gone."""
        entry = await self.entry(stream)
        if entry is not None and entry.region != self.config.name and entry.live:
            beat = await self.heartbeat(entry.region)
            if beat is not None and self.clock() - beat.at <= STALE_SECONDS:
                self._here.pop(stream, None)
                return entry
        self._here[stream] = self.clock()
        return None

    def found_here(self, stream: str) -> bool:
        """Whether ``elsewhere`` found the stream to be served here within ``DIRECTORY_SECONDS``."""
        at = self._here.get(stream)
        return at is not None and self.clock() - at < DIRECTORY_SECONDS
