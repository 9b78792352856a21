"""The packager's live playlists: plain classes, entries in and text out, no I/O.

``LivePlaylist`` is the live (or DVR) sliding window of one rendition; ``MasterPlaylist``
names one media playlist per rendition (and audio renditions as EXT-X-MEDIA). The text is
written and read by the HLS contract (``camflow.hls``), which the edge's VOD playlists of
recordings use too.

Target duration (RFC 8216 6.2.1: EXT-X-TARGETDURATION MUST NOT change once published) is
fixed when a live playlist is created, from configuration, never from the segments seen
so far. ``LivePlaylist.append`` refuses an entry whose EXTINF, rounded to the nearest
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
from dataclasses import dataclass, replace

from camflow.hls.errors import PlaylistError
from camflow.hls.lowlatency import LowLatency
from camflow.hls.master import AudioRendition, Variant, render_master
from camflow.hls.media import MediaPlaylist
from camflow.hls.tags import rounded

DEFAULT_WINDOW = 60.0
DEFAULT_TARGET = 4
_SEGMENT_URI_RE = re.compile(
    r"^(?P<epoch>[0-9]{8}T[0-9]{9}Z)/(?P<rendition>[a-z0-9_-]+)/(?P<seq>[0-9]{8})\.m4s$"
)


@dataclass(frozen=True)
class PlaylistEntry:
    """One media segment of a live playlist: the ``seq``-th segment of publish session ``epoch``.

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


class LivePlaylist:
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
        self._fresh = False  # restarted: the next entry starts a new presentation

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
            self.restart()
        if self._fresh:
            self._fresh = False
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

    def restart(self) -> None:
        """Start the new presentation of an ended playlist now (its old entries all go): the next entry
        carries EXT-X-DISCONTINUITY. Low-latency parts may lead the new presentation's first entry."""
        while self._entries:
            self._drop_front()
        self._total = 0.0
        self.target_duration = self._configured_target  # a new presentation may take a new target
        self.ended = False
        self._fresh = True

    @property
    def fresh(self) -> bool:
        """Restarted, and no entry appended since (the next one starts the new presentation)."""
        return self._fresh

    def end(self) -> None:
        """No more entries will follow (EXT-X-ENDLIST); a later entry starts a new presentation."""
        self.ended = True

    def render(self, low_latency: LowLatency | None = None) -> str:
        return MediaPlaylist(
            self.target_duration,
            tuple(self._entries),  # a PlaylistEntry is a SegmentLike
            self.media_sequence,
            self.discontinuity_sequence,
            ended=self.ended,
            low_latency=low_latency,
        ).render()

    @classmethod
    def parse(cls, text: str, window: float, target_duration: int) -> LivePlaylist:
        """A playlist ``render`` wrote, read back (to rebuild state after a restart).

        The window and target duration are the configured ones, not the text's: a changed
        configuration applies to the next new presentation, and the window slides at the
        next append. Raises PlaylistError on text this class did not write.
        """
        parsed = MediaPlaylist.parse(text)
        pl = cls(window, target_duration)
        pl.target_duration = parsed.target_duration  # published: it stays until a new presentation
        pl.media_sequence = parsed.media_sequence
        pl.discontinuity_sequence = parsed.discontinuity_sequence or 0
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
                s.program_date_time,
                discontinuity=s.discontinuity,
                gap=s.gap,
            )
            pl._entries.append(entry)
            pl._total += entry.duration
        pl.ended = parsed.ended
        return pl


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
