"""HLS playlists (RFC 8216, version 7, fMP4): plain classes, entries in and text out, no I/O.

``MediaPlaylist`` is the live sliding window of one rendition; ``MasterPlaylist`` names one
media playlist per rendition (and audio renditions as EXT-X-MEDIA). VOD playlists of
recordings are written by the edge (``edge.vod``) from the recording index.

Target duration (RFC 8216 6.2.1: EXT-X-TARGETDURATION MUST NOT change once published) is
fixed when a live playlist is created, from configuration, never from the segments seen
so far. ``MediaPlaylist.append`` refuses an entry whose EXTINF, rounded to the nearest
integer, is above it: the caller (``packager.stream``) decides what to put there instead.

End and restart (RFC 8216 6.2.1 allows only appending, removing from the front and adding
EXT-X-ENDLIST; a client that saw EXT-X-ENDLIST stops reloading, hls.js included): an ended
playlist is never reopened. An entry appended after the end starts a *new presentation*
at the same URI: the old entries are all removed at once (MEDIA-SEQUENCE and
DISCONTINUITY-SEQUENCE advance past them, so sequence numbers still never repeat) and the
first new entry carries EXT-X-DISCONTINUITY.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from packager.errors import PlaylistError
from packager.rules import parse_media

VERSION = 7
DEFAULT_WINDOW = 60.0
DEFAULT_TARGET = 4
_SEGMENT_URI_RE = re.compile(
    r"^(?P<epoch>[0-9]{8}T[0-9]{9}Z)/(?P<rendition>[a-z0-9_-]+)/(?P<seq>[0-9]{8})\.m4s$"
)


def format_pdt(unix_seconds: float) -> str:
    """UNIX seconds as ISO 8601 UTC with milliseconds, e.g. ``2026-11-21T10:15:00.123Z``."""
    total_ms = round(unix_seconds * 1000)
    dt = datetime.fromtimestamp(total_ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{total_ms % 1000:03d}Z"


def parse_pdt(text: str) -> float:
    """``format_pdt`` read back (any ISO 8601 with a zone); PlaylistError when it is not one."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PlaylistError(
            f"PROGRAM-DATE-TIME {text!r} is not ISO 8601 like 2026-11-21T10:15:00.123Z"
        ) from exc
    if dt.tzinfo is None:
        raise PlaylistError(f"PROGRAM-DATE-TIME {text!r} has no time zone")
    return dt.timestamp()


def format_duration(seconds: float) -> str:
    return f"{seconds:.3f}"


def rounded(seconds: float) -> int:
    """The EXTINF as written, rounded to the nearest integer, halves up (RFC 8216 4.3.3.1)."""
    return math.floor(float(format_duration(seconds)) + 0.5)


def rounded_target(seconds: float) -> int:
    """The smallest target duration that covers an EXTINF written as ``format_duration(seconds)``."""
    return max(1, rounded(seconds))


@dataclass(frozen=True)
class PlaylistEntry:
    """One media segment of a media playlist.

    ``program_date_time`` is UNIX seconds of the first frame; ``discontinuity`` puts an
    EXT-X-DISCONTINUITY before the entry; ``gap`` marks a segment that will never exist
    (EXT-X-GAP): players skip its duration instead of loading ``uri``.
    """

    epoch: str
    seq: int
    duration: float
    uri: str
    map_uri: str
    program_date_time: float | None = None
    discontinuity: bool = False
    gap: bool = False


def _entry_lines(e: PlaylistEntry, map_uri: str | None) -> list[str]:
    lines: list[str] = []
    # Rendered even on the first entry: dropping it there would shift the discontinuity
    # number of every entry after it once the window slides.
    if e.discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if e.map_uri != map_uri:
        lines.append(f'#EXT-X-MAP:URI="{e.map_uri}"')
    if e.program_date_time is not None:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(e.program_date_time)}")
    lines.append(f"#EXTINF:{format_duration(e.duration)},")
    if e.gap:
        lines.append("#EXT-X-GAP")
    lines.append(e.uri)
    return lines


class MediaPlaylist:
    """A live media playlist: a sliding window of at least ``window`` seconds.

    Entries slide out from the front while the rest still covers ``window`` seconds;
    every entry that slides out advances EXT-X-MEDIA-SEQUENCE, and every one that
    carried a discontinuity advances EXT-X-DISCONTINUITY-SEQUENCE. EXT-X-TARGETDURATION
    is ``target_duration``, fixed for the playlist's life.
    """

    def __init__(self, window: float = DEFAULT_WINDOW, target_duration: int = DEFAULT_TARGET) -> None:
        if not window > 0:
            raise PlaylistError(f"playlist window {window!r} is not a positive number of seconds")
        if not (isinstance(target_duration, int) and target_duration >= 1):
            raise PlaylistError(f"target duration {target_duration!r} is not a whole number of seconds >= 1")
        self.window = window
        self.target_duration = target_duration
        self._configured_target = target_duration
        self._entries: deque[PlaylistEntry] = deque()
        self._total = 0.0
        self.media_sequence = 0
        self.discontinuity_sequence = 0
        self.ended = False

    @property
    def entries(self) -> tuple[PlaylistEntry, ...]:
        return tuple(self._entries)

    @property
    def last(self) -> PlaylistEntry | None:
        return self._entries[-1] if self._entries else None

    def fits(self, duration: float) -> bool:
        return rounded(duration) <= self.target_duration

    def holds(self, epoch: str, seq: int) -> bool:
        """True when an entry of ``epoch`` at or after ``seq`` is in the window (a re-delivery)."""
        return any(e.epoch == epoch and e.seq >= seq for e in self._entries)

    def append(self, entry: PlaylistEntry) -> None:
        """Add an entry at the live edge and slide the window.

        After ``end`` the entry starts a new presentation (see the module docstring): it
        always carries a discontinuity.
        """
        if not (math.isfinite(entry.duration) and entry.duration > 0):
            raise PlaylistError(f"segment {entry.epoch}/{entry.seq} duration {entry.duration!r} is not > 0 s")
        if not self.fits(entry.duration):
            raise PlaylistError(
                f"segment {entry.epoch}/{entry.seq} of {entry.duration:.3f} s rounds above the target "
                f"duration of {self.target_duration} s"
            )
        if self.ended:
            self._restart()
            entry = replace(entry, discontinuity=True)
        self._entries.append(entry)
        self._total += entry.duration
        while len(self._entries) > 1 and self._total - self._entries[0].duration >= self.window:
            self._drop_front()

    def _drop_front(self) -> None:
        gone = self._entries.popleft()
        self._total -= gone.duration
        self.media_sequence += 1
        if gone.discontinuity:
            self.discontinuity_sequence += 1

    def _restart(self) -> None:
        while self._entries:
            self._drop_front()
        self._total = 0.0
        self.target_duration = self._configured_target  # a new presentation may take a new target
        self.ended = False

    def end(self) -> None:
        """No more entries will follow (EXT-X-ENDLIST); a later entry starts a new presentation."""
        self.ended = True

    def render(self) -> str:
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ]
        map_uri: str | None = None
        for e in self._entries:
            lines.extend(_entry_lines(e, map_uri))
            map_uri = e.map_uri
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, window: float, target_duration: int) -> MediaPlaylist:
        """A playlist this module rendered, read back (to rebuild state after a restart).

        The window and target duration are the configured ones, not the text's: a changed
        configuration applies to the next new presentation, and the window slides at the
        next append. Raises PlaylistError on text this module did not write.
        """
        parsed = parse_media(text)
        if parsed.problems or parsed.target_duration is None:
            raise PlaylistError(f"stored playlist is not one the packager wrote: {parsed.problems}")
        pl = cls(window, target_duration)
        pl.target_duration = parsed.target_duration  # published: it stays until a new presentation
        pl.media_sequence = parsed.media_sequence
        pl.discontinuity_sequence = parsed.discontinuity_sequence
        dsn = parsed.discontinuity_sequence
        for s in parsed.segments:
            m = _SEGMENT_URI_RE.match(s.uri)
            if m is None or s.map_uri is None:
                raise PlaylistError(f"stored playlist names {s.uri!r}, expected EPOCH/RENDITION/NNNNNNNN.m4s")
            entry = PlaylistEntry(
                m["epoch"],
                int(m["seq"]),
                s.duration,
                s.uri,
                s.map_uri,
                None if s.pdt is None else parse_pdt(s.pdt),
                discontinuity=s.dsn != dsn,
                gap=s.gap,
            )
            dsn = s.dsn
            pl._entries.append(entry)
            pl._total += entry.duration
        pl.ended = parsed.endlist
        return pl


@dataclass(frozen=True)
class Variant:
    """One video rendition as the master playlist names it (bandwidths in bits/s).

    ``frame_rate`` 0 means unknown (no FRAME-RATE attribute); ``audio`` names the
    EXT-X-MEDIA group the variant plays with, whose codec must then be in ``codecs``.
    """

    uri: str
    bandwidth: int
    average_bandwidth: int
    codecs: str
    width: int
    height: int
    frame_rate: float = 0.0
    audio: str | None = None


@dataclass(frozen=True)
class AudioRendition:
    """An audio rendition (EXT-X-MEDIA:TYPE=AUDIO) of group ``group``: its own media playlist
    at ``uri`` (aligned with the video ones), and variants that name ``group``.
    ``channels`` 0 means unknown (no CHANNELS attribute).
    """

    group: str
    name: str
    uri: str
    language: str = ""
    default: bool = True
    channels: int = 0


def _quoted_ok(*values: str) -> bool:
    return all('"' not in v and "\n" not in v for v in values)


def render_master(variants: Iterable[Variant], audio: Iterable[AudioRendition] = ()) -> str:
    """The master playlist: EXT-X-MEDIA for audio, one EXT-X-STREAM-INF per variant, highest first."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    groups: set[str] = set()
    for a in sorted(audio, key=lambda a: (a.group, not a.default, a.name)):
        if not _quoted_ok(a.group, a.name, a.uri, a.language):
            raise PlaylistError(f"audio rendition {a.name!r} has a quote or newline in an attribute")
        media = [f'TYPE=AUDIO,GROUP-ID="{a.group}",NAME="{a.name}"']
        if a.language:
            media.append(f'LANGUAGE="{a.language}"')
        media.append(f"DEFAULT={'YES' if a.default else 'NO'},AUTOSELECT=YES")
        if a.channels > 0:
            media.append(f'CHANNELS="{a.channels}"')
        media.append(f'URI="{a.uri}"')
        lines.append("#EXT-X-MEDIA:" + ",".join(media))
        groups.add(a.group)
    # H.264 first: the first variant is where players start, and every browser plays avc1
    # (an H.265 camera's original, e.g. source-hevc, comes after the H.264 ladder).
    for v in sorted(variants, key=lambda v: (not v.codecs.startswith("avc1"), -v.bandwidth, v.uri)):
        if v.bandwidth <= 0 or not _quoted_ok(v.codecs):
            raise PlaylistError(f"variant {v.uri!r} has bandwidth {v.bandwidth} or codecs {v.codecs!r}")
        if v.audio is not None and v.audio not in groups:
            raise PlaylistError(f"variant {v.uri!r} names audio group {v.audio!r}, which has no EXT-X-MEDIA")
        attrs = (
            f"BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth},"
            f'CODECS="{v.codecs}",RESOLUTION={v.width}x{v.height}'
        )
        if v.frame_rate > 0:
            attrs += f",FRAME-RATE={v.frame_rate:.3f}"
        if v.audio is not None:
            attrs += f',AUDIO="{v.audio}"'
        lines.append(f"#EXT-X-STREAM-INF:{attrs}")
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


class MasterPlaylist:
    """Variants keyed by rendition name (and audio renditions); ``render`` gives the text."""

    def __init__(self) -> None:
        self.variants: dict[str, Variant] = {}
        self.audio: dict[str, AudioRendition] = {}

    def set(self, name: str, variant: Variant) -> None:
        self.variants[name] = variant

    def remove(self, name: str) -> None:
        self.variants.pop(name, None)
        self.audio.pop(name, None)

    def has(self, name: str) -> bool:
        return name in self.variants or name in self.audio

    def names(self) -> list[str]:
        """Every rendition the master names: variants, then audio renditions."""
        return [*self.variants, *self.audio]

    def set_audio(self, name: str, rendition: AudioRendition) -> None:
        self.audio[name] = rendition

    def render(self) -> str:
        return render_master(self.variants.values(), self.audio.values())


_ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def parse_master(text: str) -> dict[str, Variant]:
    """The variants of a master this module rendered, by rendition name (URI ``{name}.m3u8``)."""
    out: dict[str, Variant] = {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines[:-1]):
        if not ln.startswith("#EXT-X-STREAM-INF:"):
            continue
        attrs = {k: v.strip('"') for k, v in _ATTR_RE.findall(ln.partition(":")[2])}
        uri = lines[i + 1]
        try:
            width, _, height = attrs["RESOLUTION"].partition("x")
            variant = Variant(
                uri,
                int(attrs["BANDWIDTH"]),
                int(attrs["AVERAGE-BANDWIDTH"]),
                attrs["CODECS"],
                int(width),
                int(height),
                float(attrs.get("FRAME-RATE", 0.0)),
                attrs.get("AUDIO"),
            )
        except (KeyError, ValueError) as exc:
            raise PlaylistError(f"stored master has a variant {ln!r} this packager did not write") from exc
        out[uri.removesuffix(".m3u8")] = variant
    return out


def parse_master_audio(text: str) -> dict[str, AudioRendition]:
    """The audio renditions (EXT-X-MEDIA:TYPE=AUDIO) of a master this module rendered, by name."""
    out: dict[str, AudioRendition] = {}
    for ln in (ln.strip() for ln in text.splitlines()):
        if not ln.startswith("#EXT-X-MEDIA:"):
            continue
        attrs = {k: v.strip('"') for k, v in _ATTR_RE.findall(ln.partition(":")[2])}
        if attrs.get("TYPE") != "AUDIO":
            continue
        try:
            rendition = AudioRendition(
                attrs["GROUP-ID"],
                attrs["NAME"],
                attrs["URI"],
                attrs.get("LANGUAGE", ""),
                attrs.get("DEFAULT") == "YES",
                int(attrs.get("CHANNELS", "0").partition("/")[0]),
            )
        except (KeyError, ValueError) as exc:
            raise PlaylistError(f"stored master has an audio rendition {ln!r} it did not write") from exc
        out[rendition.uri.removesuffix(".m3u8")] = rendition
    return out
