"""Versioned events: the only things that travel on the bus.

Every event is a frozen dataclass with a schema version and an explicit wire form::

    b"CFE1" | u32 big-endian length of the JSON header | JSON header | binary payload

The JSON header always holds ``"type"`` and ``"v"`` (the major version), and ``"minor"`` when the
minor version is above 0; the payload is empty except for a raw segment, whose fMP4 bytes
travel there untouched. The fields are written and read by their types (``camflow.jsonform``):
a field added with a default is read as that default from a header that does not have it, and a
name the reader does not know is ignored.

Versions are ``major.minor``, so that a rolling deploy never breaks a consumer:

- A reader accepts an event of its own major at ANY minor: a newer minor's added fields are
  ignored, an older minor's missing ones read as their defaults. Producers and consumers of
  a minor change are upgraded in either order.
- A reader accepts an older major: the header is upgraded one major at a time by the steps in
  ``UPGRADES`` (one per event type and major), then read like the current one.
- A newer major (or a type it does not know) is an ``EventVersionError``: a consumer puts it on
  the dead-letter topic (``camflow.bus.dead``), never commits it away. Consumers of a major
  change are upgraded before its producers (docs/architecture.md, "Event versions").

A minor change may only add a field with a default that means what a writer without the field
meant. Anything else (a field removed, renamed, retyped, made required; a new enum value or
``Literal`` option in a field an older reader checks; a changed meaning) is a new major. The
majors below were all cut before minors existed.

History:

- ``raw-segment`` v1 had no ``wall_clock`` (the packager then used the time it received
  the segment); v2 adds it.
- ``segment-ready`` v1 had no ``wall_clock``; v2 adds it.
- ``stream-state`` v1 had no ``last_seq``; v2 adds it (``None`` when unknown).
- ``raw-segment`` and ``segment-ready`` v3 add ``damaged`` (packets of a reference picture
  were lost) and ``discontinuity`` (the camera's clock jumped: a new continuous timeline
  starts here, EXT-X-DISCONTINUITY downstream); v1 and v2 are read as ``False``.
  ``segment-ready`` v3 renditions also carry ``frame_rate`` (0 when unknown, and in v1/v2).
- ``segment-dead`` v1: a raw segment the transcoder gave up on (dead-letter topic).
- ``segment-ready`` v4 renditions carry ``kind`` (``video`` or ``audio``), ``channels`` and
  ``sample_rate`` (audio; 0 for video): an audio-only rendition (AAC, ``mp4a.40.2``) sits beside
  the video ones. v3 and earlier renditions are read as video.
- ``health-sample`` v1: one service's view of one stream's health (``camflow.health``, keyed by
  stream); fields a service does not measure are ``null``.
- ``health-sample`` v2 adds ``corrections``: ingest's media fixes of the session by kind
  (``params_inserted``, ``reordered``, ``audio_gaps_filled``, ...); v1 is read as ``None``.
- ``health-sample`` 2.1 adds ``store_outage`` (a minor: an optional field): transcode/package,
  seconds the store has been unavailable to the service (0 while it answers); read as ``None``
  where absent.
- ``health-sample`` 2.2 adds ``spool_dropped`` (a minor): segments of the stream ingest's spool
  dropped because it was full; read as ``None`` where absent.
- ``raw-part`` v1, ``part-ready`` v1 and ``playlists-changed`` v1: low-latency HLS (docs/low-latency.md).
  A raw part is one CMAF part of the segment ingest is still cutting (``camflow.parts.raw``, keyed by
  stream); a part ready names that part's rendition objects in the store (``camflow.segments.ready``,
  beside the segments, so the packager sees a stream's parts and segments in one order); playlists
  changed tells the edges where each live media playlist of a stream now ends
  (``camflow.playlists``). ``raw-part`` v1 carries ``last`` (the segment's final part: the part
  worker flushes its rungs' decoder there); it was added before v1 was released, with the default
  ``False`` that a part cut without knowing it meant.
"""

from __future__ import annotations

import enum
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from camflow import jsonform
from camflow.errors import EventDecodeError, EventVersionError, JsonFormError

MAGIC = b"CFE1"
_HEADER = struct.Struct(">4sI")
MAX_HEADER_BYTES = 1 << 20

TOPIC_RAW = "camflow.segments.raw"
TOPIC_READY = "camflow.segments.ready"
TOPIC_STREAMS = "camflow.streams"
TOPIC_HEALTH = "camflow.health"
TOPIC_DEAD = "camflow.segments.dead"
TOPIC_DEVICES = "camflow.devices"  # device records (camflow.devices), compacted, keyed by device name
TOPIC_DEVICES_SEEN = "camflow.devices.seen"  # their last seen / last address, compacted, likewise
TOPIC_PARTS = "camflow.parts.raw"  # low-latency parts, ingest -> transcode's ordered part workers
TOPIC_PLAYLISTS = "camflow.playlists"  # packager -> edges: live playlists changed (wakes blocked reloads)


class StreamStateKind(enum.Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALLED = "stalled"
    OFFLINE = "offline"


@dataclass(frozen=True)
class _SegmentSpan:
    """The fields every segment event starts with: which segment, and its span of the epoch's timeline."""

    stream: str
    epoch: str
    seq: int
    start: int
    duration: int
    timescale: int

    @property
    def duration_s(self) -> float:
        return self.duration / self.timescale


@dataclass(frozen=True)
class RawSegment(_SegmentSpan):
    """An IDR-aligned, self-contained fMP4 segment cut by ingest (init section included).

    ``start`` and ``duration`` are in ``timescale`` ticks on the epoch's timeline;
    ``wall_clock`` is the camera's (or ingest's) UNIX time of the first frame.
    """

    TYPE: ClassVar[str] = "raw-segment"
    VERSION: ClassVar[int] = 3
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = "data"  # the field that travels as the binary payload

    codecs: str
    width: int
    height: int
    wall_clock: float
    data: bytes = field(repr=False)
    damaged: bool = False
    discontinuity: bool = False


RenditionKind: TypeAlias = Literal["video", "audio"]


def _rendition_kind(value: Any, path: str) -> RenditionKind:
    if value == "audio":
        return "audio"
    if value == "video":
        return "video"
    raise JsonFormError(f"rendition kind {value!r} ({path}): expected 'video' or 'audio'")


@dataclass(frozen=True)
class RenditionRef:
    """One rendition of a ready segment: where its objects are and what it is."""

    name: str
    width: int
    height: int
    bandwidth: int
    codecs: str
    init_key: str
    key: str
    size: int
    frame_rate: float = 0.0  # frames per second; 0 when unknown (v3 adds it, earlier read as 0)
    # v4 adds it, earlier read as "video"
    kind: RenditionKind = field(default="video", metadata=jsonform.read_with(_rendition_kind))
    channels: int = 0  # audio channels; 0 for video
    sample_rate: int = 0  # audio samples per second; 0 for video

    @property
    def is_audio(self) -> bool:
        return self.kind == "audio"

    def to_json(self) -> dict[str, Any]:
        return jsonform.to_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RenditionRef:
        """A rendition from its JSON form (fields added after v1 read as their defaults when absent)."""
        return jsonform.from_json(cls, d)


@dataclass(frozen=True)
class SegmentReady(_SegmentSpan):
    """Every rendition of one segment is in the store (written before this event)."""

    TYPE: ClassVar[str] = "segment-ready"
    VERSION: ClassVar[int] = 4
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = None

    wall_clock: float
    renditions: tuple[RenditionRef, ...]
    damaged: bool = False
    discontinuity: bool = False


@dataclass(frozen=True)
class _PartSpan(_SegmentSpan):
    """A part of segment ``seq``: ``start`` and ``duration`` are the part's own, on the epoch's timeline."""

    part: int  # its index in the segment, from 0 (part 0 starts on the segment's IDR)
    independent: bool  # starts with a key picture (EXT-X-PART INDEPENDENT=YES)
    wall_clock: float  # the UNIX time of its first frame, as for the segment


@dataclass(frozen=True)
class RawPart(_PartSpan):
    """One CMAF part of a segment ingest is still cutting (low-latency HLS).

    ``data`` is self-contained like a raw segment's: an init section and one fragment (video, and
    the stream's audio over the same span). A segment's parts, in order, hold exactly the samples
    (times included) of the raw segment cut later, so a player moving from parts to the segment
    sees one timeline. Parts are live-only: never spooled, and dropped (counted) when the bus
    cannot take them.
    """

    TYPE: ClassVar[str] = "raw-part"
    VERSION: ClassVar[int] = 1
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = "data"

    codecs: str
    width: int
    height: int
    data: bytes = field(repr=False)
    discontinuity: bool = False
    # the segment's final part (the next unit was the next segment's IDR, or the session ended):
    # the part worker flushes its rungs' decoder there, so a rung's parts hold every picture
    last: bool = False


@dataclass(frozen=True)
class PartReady(_PartSpan):
    """Low-latency renditions of one part are in the store (written before this event).

    A part's renditions may come in more than one part-ready, each rendition in one: the part
    worker announces its copies and audio as soon as they are written and its encoded rungs once
    they are (a rung may have no part: skipped until an independent part). Per rendition the
    parts come in order; readers take each rendition's parts on their own.

    Each ``RenditionRef.key`` names the part's object (``camflow.keys.part_key``) and ``size`` its
    bytes; ``init_key`` is the rendition's init section, the same one its segments use.
    """

    TYPE: ClassVar[str] = "part-ready"
    VERSION: ClassVar[int] = 1
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = None

    renditions: tuple[RenditionRef, ...]
    discontinuity: bool = False


@dataclass(frozen=True)
class PlaylistEnd:
    """Where one live media playlist ends: its last media sequence number and that segment's last part."""

    rendition: str
    msn: int
    part: int  # -1: the segment at ``msn`` is complete and lists no part after it


@dataclass(frozen=True)
class PlaylistsChanged:
    """The packager wrote a stream's live media playlists (written before this event); edges wake
    the viewers waiting for them (blocking playlist reload, preload hints)."""

    TYPE: ClassVar[str] = "playlists-changed"
    VERSION: ClassVar[int] = 1
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = None

    stream: str
    ends: tuple[PlaylistEnd, ...]
    at: float


@dataclass(frozen=True)
class StreamState:
    """A stream's publish session changed state.

    ``last_seq`` on ``offline`` is the last segment sequence number published in the
    epoch (``-1`` when none was), so the packager can end the playlist once every
    segment before it is in, whatever order the events arrive in.
    """

    TYPE: ClassVar[str] = "stream-state"
    VERSION: ClassVar[int] = 2
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = None

    stream: str
    epoch: str
    state: StreamStateKind
    reason: str
    at: float
    last_seq: int | None = None


@dataclass(frozen=True)
class SegmentDead:
    """A raw segment that failed to transcode ``attempts`` times, with the last ``reason``.

    The payload is the raw segment's event exactly as it was consumed (from ``topic``,
    ``partition``, ``offset``), so it can be inspected or published again.
    """

    TYPE: ClassVar[str] = "segment-dead"
    VERSION: ClassVar[int] = 1
    MINOR: ClassVar[int] = 0
    PAYLOAD: ClassVar[str | None] = "raw"

    stream: str
    epoch: str
    seq: int
    reason: str
    attempts: int
    at: float
    topic: str
    partition: int
    offset: int
    raw: bytes = field(repr=False)


def _counts(value: Any, path: str) -> dict[str, int] | None:
    """Counts by kind, never negative, in the order of their kinds (``null``: not measured)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise JsonFormError(f"{path} {value!r}: expected an object of counts by kind")
    return dict(sorted(value.items()))


@dataclass(frozen=True)
class HealthSample:
    """One service's view of one stream, published every few seconds on ``camflow.health``.

    ``service`` is ``ingest``, ``transcode``, ``package`` or ``edge``; ``instance`` names the
    process (``host/pid``). Only ingest knows the publish ``state`` (``None`` elsewhere). A
    figure the service does not measure is ``None``. Units: bits/s, frames/s, seconds, messages.
    """

    TYPE: ClassVar[str] = "health-sample"
    VERSION: ClassVar[int] = 2
    # 2.1: store_outage; 2.2: spool_dropped; 2.3: whep; 2.4: region, owner, replication_lag
    MINOR: ClassVar[int] = 4
    PAYLOAD: ClassVar[str | None] = None

    stream: str
    service: str
    instance: str
    at: float
    state: StreamStateKind | None = None
    reason: str = ""
    epoch: str = ""
    bitrate: float | None = None  # ingest: bits/s received
    fps: float | None = None  # ingest: frames/s received
    gop_seconds: float | None = None  # ingest: duration of the newest segment (IDR to IDR)
    timestamp_corrections: int | None = None  # ingest: timestamp fixes this session
    packets_lost: int | None = None  # ingest: RTP packets lost this session
    segment_age: float | None = None  # ingest: since the newest segment was cut; package: live edge age
    transcode_latency: float | None = None  # transcode: seconds for this stream's newest segment
    consumer_lag: int | None = None  # transcode/package: messages behind in its consumer group
    playlist_age: float | None = None  # package: seconds since the playlists were written
    viewers: int | None = None  # edge
    # ingest: what it corrected or dropped this session, by kind, only the kinds that happened
    # (see ``ingest.health.CORRECTION_KINDS``); ``{}`` when nothing was
    corrections: dict[str, int] | None = field(default=None, metadata=jsonform.read_with(_counts))
    store_outage: float | None = None  # transcode/package: seconds the store has been unavailable, else 0
    spool_dropped: int | None = None  # ingest: segments its spool dropped (full) since the process started
    whep: str = ""  # ingest: the base URL its WHEP is served at (``--whep-public-url``), "" without WHEP
    region: str = ""  # package: the region it is in (``--region``), "" with one region
    owner: str = ""  # package: the region that owns the stream (the directory), "" with one region
    # package: seconds the newest heartbeat of the slowest peer region took to replicate here
    replication_lag: float | None = None

    FIGURES: ClassVar[tuple[str, ...]] = (
        "bitrate",
        "fps",
        "gop_seconds",
        "timestamp_corrections",
        "packets_lost",
        "segment_age",
        "transcode_latency",
        "consumer_lag",
        "playlist_age",
        "viewers",
        "store_outage",
        "spool_dropped",
        "replication_lag",
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (also the wire header, less ``type`` and ``v``)."""
        return jsonform.to_json(self)


Event: TypeAlias = (
    RawSegment
    | SegmentReady
    | StreamState
    | SegmentDead
    | HealthSample
    | RawPart
    | PartReady
    | PlaylistsChanged
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        RawSegment,
        SegmentReady,
        StreamState,
        SegmentDead,
        HealthSample,
        RawPart,
        PartReady,
        PlaylistsChanged,
    )
}


# The header's own names, never an event's field names (tests check it).
RESERVED = ("type", "v", "minor")


def encode(event: Event) -> bytes:
    """Serialise an event at its current version (``"minor"`` only when above 0: the wire form of
    a minor-0 event is the one readers from before minors existed know)."""
    version: dict[str, int] = {"v": event.VERSION, **({"minor": event.MINOR} if event.MINOR else {})}
    header = {"type": event.TYPE, **version, **jsonform.to_json(event, skip=event.PAYLOAD)}
    payload: bytes = getattr(event, event.PAYLOAD) if event.PAYLOAD else b""
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return _HEADER.pack(MAGIC, len(blob)) + blob + payload


def health_sample_from_json(h: dict[str, Any]) -> HealthSample:
    """A sample from its JSON form (the wire header, or a line of ``camflow tail --json``)."""
    return jsonform.from_json(HealthSample, h)


# --- upgrades: a header of version N as version N + 1 would have said it ---------------

_Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def _with_received_wall_clock(h: dict[str, Any]) -> dict[str, Any]:
    # v1 carried no wall clock: the time the reader received it is the best it can do.
    return {**h, "wall_clock": time.time()}


def _without_v3_flags(h: dict[str, Any]) -> dict[str, Any]:
    # v2 and earlier knew nothing of lost packets or clock jumps.
    return {**h, "damaged": False, "discontinuity": False}


def _video_renditions(h: dict[str, Any]) -> dict[str, Any]:
    # v3 and earlier had video renditions only (a "kind" there would not be ours to trust).
    renditions = h.get("renditions")
    if not isinstance(renditions, list):
        return h
    video = {"kind": "video", "channels": 0, "sample_rate": 0}
    plain = [{**r, **video} if isinstance(r, dict) else r for r in renditions]
    return {**h, "renditions": plain}


def _with_unknown_last_seq(h: dict[str, Any]) -> dict[str, Any]:
    return {**h, "last_seq": None}


def _same_fields(h: dict[str, Any]) -> dict[str, Any]:
    # v2 only added a field with a default: a header without it reads as the default.
    return h


# (type, version N) -> the header of version N + 1. A version is accepted when it is the current
# one or has a step here; every chain of steps ends at the current version (tests check it).
UPGRADES: dict[tuple[str, int], _Upgrade] = {
    (RawSegment.TYPE, 1): _with_received_wall_clock,
    (RawSegment.TYPE, 2): _without_v3_flags,
    (SegmentReady.TYPE, 1): _with_received_wall_clock,
    (SegmentReady.TYPE, 2): _without_v3_flags,
    (SegmentReady.TYPE, 3): _video_renditions,
    (StreamState.TYPE, 1): _with_unknown_last_seq,
    (HealthSample.TYPE, 1): _same_fields,  # no "corrections": read as None
}

# (type, major) pairs a reader takes, at any minor.
ACCEPTED: tuple[tuple[str, int], ...] = tuple(
    sorted({(cls.TYPE, cls.VERSION) for cls in EVENT_TYPES.values()} | set(UPGRADES))
)


def _event_class(header: dict[str, Any]) -> type[Event]:
    """The class a header of an accepted type and major is read as."""
    kind, version, minor = header.get("type"), header.get("v"), header.get("minor", 0)
    # Only a string type and an integer version can name one (a list is unhashable; True == 1).
    if not isinstance(kind, str) or type(version) is not int or (kind, version) not in ACCEPTED:
        named = isinstance(kind, str) and type(version) is int
        refused = EventVersionError if named else EventDecodeError
        raise refused(
            f"event type {kind!r} version {version!r} is not one this reader accepts "
            f"(accepted: {list(ACCEPTED)}, any minor)"
        )
    if type(minor) is not int or minor < 0:
        raise EventDecodeError(
            f"{kind} v{version} event has minor version {minor!r}: expected an integer >= 0"
        )
    return EVENT_TYPES[kind]


def _upgraded(header: dict[str, Any], cls: type[Event]) -> dict[str, Any]:
    version: int = header["v"]
    while version < cls.VERSION:
        header = UPGRADES[(cls.TYPE, version)](header)
        version += 1
    return header


def decode(data: bytes) -> Event:
    """Parse an event of an accepted major at any minor (a newer minor's unknown fields ignored).

    Anything else is an ``EventDecodeError``: an ``EventVersionError`` when the bytes name a type
    and major this reader does not take (a newer major, a type from a newer release).
    """
    if len(data) < _HEADER.size:
        raise EventDecodeError(f"event of {len(data)} bytes is shorter than its {_HEADER.size}-byte frame")
    magic, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EventDecodeError(f"event starts with {magic!r}, expected {MAGIC!r}")
    if length > MAX_HEADER_BYTES or _HEADER.size + length > len(data):
        raise EventDecodeError(f"event header length {length} exceeds the {len(data)} bytes received")
    try:
        header = json.loads(data[_HEADER.size : _HEADER.size + length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EventDecodeError(f"event header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise EventDecodeError(f"event header is a {type(header).__name__}, expected an object")
    cls = _event_class(header)
    payload = {cls.PAYLOAD: data[_HEADER.size + length :]} if cls.PAYLOAD else {}
    try:
        return jsonform.from_json(cls, _upgraded(header, cls), **payload)
    except (KeyError, JsonFormError) as exc:  # KeyError: a field without a default is missing
        raise EventDecodeError(f"{cls.TYPE} v{header['v']} event has a bad field: {exc!r}") from exc
