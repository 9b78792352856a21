"""HLS playlists (RFC 8216, version 7, fMP4): plain classes, entries in and text out, no I/O.

``MediaPlaylist`` is the live sliding window of one rendition; ``render_master`` writes
the master playlist naming one media playlist per rendition.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from packager.errors import PlaylistError

VERSION = 7
DEFAULT_WINDOW = 60.0


def format_pdt(unix_seconds: float) -> str:
    """UNIX seconds as ISO 8601 UTC with milliseconds, e.g. ``2026-11-21T10:15:00.123Z``."""
    total_ms = round(unix_seconds * 1000)
    dt = datetime.fromtimestamp(total_ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{total_ms % 1000:03d}Z"


def format_duration(seconds: float) -> str:
    return f"{seconds:.3f}"


def rounded_target(seconds: float) -> int:
    """The smallest target duration that covers an EXTINF written as ``format_duration(seconds)``."""
    return math.ceil(float(format_duration(seconds)))


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


class MediaPlaylist:
    """A live media playlist: a sliding window of at least ``window`` seconds.

    Entries slide out from the front while the rest still covers ``window`` seconds;
    every entry that slides out advances EXT-X-MEDIA-SEQUENCE, and every one that
    carried a discontinuity advances EXT-X-DISCONTINUITY-SEQUENCE. EXT-X-TARGETDURATION
    is the ceiling of the longest entry ever appended, so it never decreases.
    """

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        if not window > 0:
            raise PlaylistError(f"playlist window {window!r} is not a positive number of seconds")
        self.window = window
        self._entries: deque[PlaylistEntry] = deque()
        self._total = 0.0
        self.media_sequence = 0
        self.discontinuity_sequence = 0
        self.target_duration = 1
        self.ended = False

    @property
    def entries(self) -> tuple[PlaylistEntry, ...]:
        return tuple(self._entries)

    @property
    def last(self) -> PlaylistEntry | None:
        return self._entries[-1] if self._entries else None

    def append(self, entry: PlaylistEntry) -> None:
        """Add an entry at the live edge and slide the window.

        An ended playlist reopens only for an entry that starts with a discontinuity
        (a new publish session): EXT-X-ENDLIST is removed.
        """
        if not (math.isfinite(entry.duration) and entry.duration > 0):
            raise PlaylistError(f"segment {entry.epoch}/{entry.seq} duration {entry.duration!r} is not > 0 s")
        if self.ended:
            if not entry.discontinuity:
                raise PlaylistError(
                    f"playlist has ended; segment {entry.epoch}/{entry.seq} can reopen it only "
                    "with a discontinuity"
                )
            self.ended = False
        self._entries.append(entry)
        self._total += entry.duration
        self.target_duration = max(self.target_duration, rounded_target(entry.duration))
        while len(self._entries) > 1 and self._total - self._entries[0].duration >= self.window:
            gone = self._entries.popleft()
            self._total -= gone.duration
            self.media_sequence += 1
            if gone.discontinuity:
                self.discontinuity_sequence += 1

    def end(self) -> None:
        """No more entries will follow (EXT-X-ENDLIST), until a new epoch reopens it."""
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
            # Rendered even on the first entry: dropping it there would shift the
            # discontinuity number of every entry after it once the window slides.
            if e.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if e.map_uri != map_uri:
                lines.append(f'#EXT-X-MAP:URI="{e.map_uri}"')
                map_uri = e.map_uri
            if e.program_date_time is not None:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(e.program_date_time)}")
            lines.append(f"#EXTINF:{format_duration(e.duration)},")
            if e.gap:
                lines.append("#EXT-X-GAP")
            lines.append(e.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Variant:
    """One rendition as the master playlist names it (bandwidths in bits/s)."""

    uri: str
    bandwidth: int
    average_bandwidth: int
    codecs: str
    width: int
    height: int


def render_master(variants: Iterable[Variant]) -> str:
    """The master playlist: one EXT-X-STREAM-INF per variant, highest bandwidth first."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: (-v.bandwidth, v.uri)):
        if v.bandwidth <= 0 or '"' in v.codecs:
            raise PlaylistError(f"variant {v.uri!r} has bandwidth {v.bandwidth} or codecs {v.codecs!r}")
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth},"
            f'CODECS="{v.codecs}",RESOLUTION={v.width}x{v.height}'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


class MasterPlaylist:
    """Variants keyed by rendition name; ``render`` gives the master playlist text."""

    def __init__(self) -> None:
        self.variants: dict[str, Variant] = {}

    def set(self, name: str, variant: Variant) -> None:
        self.variants[name] = variant

    def remove(self, name: str) -> None:
        self.variants.pop(name, None)

    def render(self) -> str:
        return render_master(self.variants.values())
