"""Versioned events: the only things that travel on the bus.

Every event is a frozen dataclass with a schema version and an explicit wire form::

    b"CFE1" | u32 big-endian length of the JSON header | JSON header | binary payload

The JSON header always holds ``"type"`` and ``"v"``; the payload is empty except for a
raw segment, whose fMP4 bytes travel there untouched. A reader accepts the current
version and the previous one, so a rolling deploy never breaks a consumer: previous
versions are upgraded by the ``_upgrade_v{N}`` readers below.

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
"""

from __future__ import annotations

import enum
import functools
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias, TypeVar, get_type_hints

from camflow.errors import EventDecodeError

MAGIC = b"CFE1"
_HEADER = struct.Struct(">4sI")
MAX_HEADER_BYTES = 1 << 20

TOPIC_RAW = "camflow.segments.raw"
TOPIC_READY = "camflow.segments.ready"
TOPIC_STREAMS = "camflow.streams"
TOPIC_HEALTH = "camflow.health"
TOPIC_DEAD = "camflow.segments.dead"


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
    PAYLOAD: ClassVar[str | None] = "data"  # the field that travels as the binary payload

    codecs: str
    width: int
    height: int
    wall_clock: float
    data: bytes = field(repr=False)
    damaged: bool = False
    discontinuity: bool = False


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
    kind: str = "video"  # "video" or "audio" (v4 adds it, earlier read as "video")
    channels: int = 0  # audio channels; 0 for video
    sample_rate: int = 0  # audio samples per second; 0 for video

    @property
    def is_audio(self) -> bool:
        return self.kind == "audio"

    def to_json(self) -> dict[str, Any]:
        return _fields_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RenditionRef:
        # frame_rate (v3) and kind, channels, sample_rate (v4) are absent from older renditions.
        return _fields_from(
            cls,
            d,
            frame_rate=lambda d: float(d.get("frame_rate", 0.0)),
            kind=lambda d: _rendition_kind(d.get("kind", "video")),
            channels=lambda d: int(d.get("channels", 0)),
            sample_rate=lambda d: int(d.get("sample_rate", 0)),
        )


def _rendition_kind(value: object) -> str:
    if value not in ("video", "audio"):
        raise ValueError(f"rendition kind {value!r}: expected 'video' or 'audio'")
    return str(value)


@dataclass(frozen=True)
class SegmentReady(_SegmentSpan):
    """Every rendition of one segment is in the store (written before this event)."""

    TYPE: ClassVar[str] = "segment-ready"
    VERSION: ClassVar[int] = 4
    PAYLOAD: ClassVar[str | None] = None

    wall_clock: float
    renditions: tuple[RenditionRef, ...]
    damaged: bool = False
    discontinuity: bool = False


@dataclass(frozen=True)
class StreamState:
    """A stream's publish session changed state.

    ``last_seq`` on ``offline`` is the last segment sequence number published in the
    epoch (``-1`` when none was), so the packager can end the playlist once every
    segment before it is in, whatever order the events arrive in.
    """

    TYPE: ClassVar[str] = "stream-state"
    VERSION: ClassVar[int] = 2
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


@dataclass(frozen=True)
class HealthSample:
    """One service's view of one stream, published every few seconds on ``camflow.health``.

    ``service`` is ``ingest``, ``transcode``, ``package`` or ``edge``; ``instance`` names the
    process (``host/pid``). Only ingest knows the publish ``state`` (``None`` elsewhere). A
    figure the service does not measure is ``None``. Units: bits/s, frames/s, seconds, messages.
    """

    TYPE: ClassVar[str] = "health-sample"
    VERSION: ClassVar[int] = 2
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
    corrections: dict[str, int] | None = None

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
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (also the wire header, less ``type`` and ``v``)."""
        return _fields_json(self)


Event: TypeAlias = RawSegment | SegmentReady | StreamState | SegmentDead | HealthSample


def _frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return _HEADER.pack(MAGIC, len(blob)) + blob + payload


def encode(event: Event) -> bytes:
    """Serialise an event at its current version."""
    header = {"type": event.TYPE, "v": event.VERSION, **_fields_json(event, skip=event.PAYLOAD)}
    payload: bytes = getattr(event, event.PAYLOAD) if event.PAYLOAD else b""
    return _frame(header, payload)


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [item.to_json() for item in value]  # renditions
    return value


def _fields_json(obj: Any, skip: str | None = None) -> dict[str, Any]:
    """A dataclass's fields in their order, as JSON values (enums by value, renditions as objects)."""
    return {f.name: _json_value(getattr(obj, f.name)) for f in fields(obj) if f.name != skip}


_Field = Callable[[dict[str, Any]], Any]
_T = TypeVar("_T")
_PLAIN: dict[Any, Callable[[Any], Any]] = {str: str, int: int, float: float}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _fields_from(cls: type[_T], h: dict[str, Any], payload: bytes = b"", /, **special: _Field) -> _T:
    """``cls`` from the header ``h``, field by field in their order.

    A field named in ``special`` is read by it; the ``PAYLOAD`` field is ``payload``; a
    ``bool`` must be a JSON boolean (``_flag``); a ``str``, ``int`` or ``float`` is converted.
    """
    dataclass_: Any = cls  # a dataclass (typeshed has no name for it at run time)
    types = _field_types(dataclass_)
    values: dict[str, Any] = {}
    for f in fields(dataclass_):
        name = f.name
        if name in special:
            values[name] = special[name](h)
        elif name == getattr(cls, "PAYLOAD", None):
            values[name] = payload
        elif types[name] is bool:
            values[name] = _flag(h, name)
        else:
            values[name] = _PLAIN[types[name]](h[name])
    return cls(**values)


def _raw_segment(h: dict[str, Any], payload: bytes) -> RawSegment:
    return _fields_from(RawSegment, h, payload)


def _segment_ready(h: dict[str, Any], payload: bytes) -> SegmentReady:
    renditions: _Field = lambda h: tuple(RenditionRef.from_json(r) for r in h["renditions"])  # noqa: E731
    return _fields_from(SegmentReady, h, payload, renditions=renditions)


def _stream_state(h: dict[str, Any], payload: bytes) -> StreamState:
    return _fields_from(
        StreamState,
        h,
        payload,
        state=lambda h: StreamStateKind(h["state"]),
        last_seq=lambda h: None if h.get("last_seq") is None else int(h["last_seq"]),
    )


def _segment_dead(h: dict[str, Any], payload: bytes) -> SegmentDead:
    return _fields_from(SegmentDead, h, payload)


def _optional(h: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = h.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} {value!r}: expected a number or null")
    return kind(value)


def _corrections(h: dict[str, Any]) -> dict[str, int] | None:
    value = h.get("corrections")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ValueError(f"corrections {value!r}: expected an object of counts by kind")
    return dict(sorted(value.items()))


def health_sample_from_json(h: dict[str, Any]) -> HealthSample:
    """A sample from its JSON form (the wire header, or a line of ``camflow tail --json``)."""
    types = _field_types(HealthSample)
    figures: dict[str, _Field] = {
        name: functools.partial(_optional, name=name, kind=int if types[name] == int | None else float)
        for name in HealthSample.FIGURES
    }
    return _fields_from(
        HealthSample,
        h,
        state=lambda h: None if h.get("state") is None else StreamStateKind(h["state"]),
        reason=lambda h: str(h.get("reason") or ""),
        epoch=lambda h: str(h.get("epoch") or ""),
        corrections=_corrections,
        **figures,
    )


def _health_sample(h: dict[str, Any], payload: bytes) -> HealthSample:
    return health_sample_from_json(h)


def _flag(h: dict[str, Any], name: str) -> bool:
    value = h[name]
    if not isinstance(value, bool):
        raise ValueError(f"{name} {value!r}: expected true or false")
    return value


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


def _from_v1_segment(h: dict[str, Any]) -> dict[str, Any]:
    return _without_v3_flags(_with_received_wall_clock(h))


def _with_received_wall_clock(h: dict[str, Any]) -> dict[str, Any]:
    # v1 carried no wall clock: the time the reader received it is the best it can do.
    return {**h, "wall_clock": time.time()}


def _with_unknown_last_seq(h: dict[str, Any]) -> dict[str, Any]:
    return {**h, "last_seq": None}


_Reader = Callable[[dict[str, Any], bytes], Event]
_Upgrade = Callable[[dict[str, Any]], dict[str, Any]]

# (type, version) -> (upgrade of the header to the current version, reader of the current version)
_READERS: dict[tuple[str, int], tuple[_Upgrade | None, _Reader]] = {
    (RawSegment.TYPE, 3): (None, _raw_segment),
    (RawSegment.TYPE, 2): (_without_v3_flags, _raw_segment),
    (RawSegment.TYPE, 1): (_from_v1_segment, _raw_segment),
    (SegmentReady.TYPE, 4): (None, _segment_ready),
    (SegmentReady.TYPE, 3): (_video_renditions, _segment_ready),
    (SegmentReady.TYPE, 2): (_without_v3_flags, _segment_ready),
    (SegmentReady.TYPE, 1): (_from_v1_segment, _segment_ready),
    (StreamState.TYPE, 2): (None, _stream_state),
    (StreamState.TYPE, 1): (_with_unknown_last_seq, _stream_state),
    (SegmentDead.TYPE, 1): (None, _segment_dead),
    (HealthSample.TYPE, 2): (None, _health_sample),
    (HealthSample.TYPE, 1): (None, _health_sample),  # no "corrections": read as None
}


def decode(data: bytes) -> Event:
    """Parse an event of the current or the previous version; anything else is an EventDecodeError."""
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
    key = (header.get("type"), header.get("v"))
    # Only a string type and an integer version can name a reader (a list is unhashable; True == 1).
    valid = isinstance(key[0], str) and type(key[1]) is int
    entry = _READERS.get(key) if valid else None  # type: ignore[arg-type]
    if entry is None:
        raise EventDecodeError(
            f"event type {key[0]!r} version {key[1]!r} is not one this reader accepts "
            f"(accepted: {sorted(_READERS)})"
        )
    upgrade, reader = entry
    if upgrade is not None:
        header = upgrade(header)
    try:
        return reader(header, data[_HEADER.size + length :])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity)
        raise EventDecodeError(f"{key[0]} v{key[1]} event has a bad field: {exc!r}") from exc
