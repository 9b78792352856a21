"""The media playlist: a model (``MediaPlaylist`` of ``Segment``), its writer and its parser.

The writer is the only place camflow writes media playlist text: the packager's live and
DVR playlists (``packager.playlist.LivePlaylist``) and the edge's VOD playlists of recordings
(``edge.vod``). ``MediaPlaylist.parse`` reads one back through the ``m3u8`` package (the
packager restoring its state after a restart); ``MediaPlaylist.parse(t).render() == t`` for
every playlist the writer wrote.

Written form (RFC 8216, version 7)::

    #EXTM3U
    #EXT-X-VERSION:7
    #EXT-X-TARGETDURATION:4
    #EXT-X-MEDIA-SEQUENCE:0
    #EXT-X-DISCONTINUITY-SEQUENCE:0      (unless discontinuity_sequence is None)
    #EXT-X-PLAYLIST-TYPE:VOD             (when playlist_type is set)
    #EXT-X-INDEPENDENT-SEGMENTS
    #EXT-X-DISCONTINUITY                 (per segment, as flagged; rendered even on the first)
    #EXT-X-MAP:URI="..."                 (where the init section changes, and on the first)
    #EXT-X-PROGRAM-DATE-TIME:...         (when known)
    #EXTINF:2.000,
    #EXT-X-GAP                           (a segment that will never exist)
    uri
    #EXT-X-ENDLIST                       (when ended)

A low-latency playlist (``low_latency`` set; ``camflow.hls.lowlatency`` has its tags) is version 9
and adds EXT-X-SERVER-CONTROL and EXT-X-PART-INF to the header, each segment's EXT-X-PART lines
after its tags and before its EXTINF, the parts of the segment in progress after the last
segment, then EXT-X-PRELOAD-HINT and EXT-X-RENDITION-REPORT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import m3u8

from camflow.hls.dates import format_date_time
from camflow.hls.errors import PlaylistError
from camflow.hls.lowlatency import (
    LL_VERSION,
    LowLatency,
    NextSegment,
    Part,
    RenditionReport,
    part_line,
)
from camflow.hls.tags import (
    EXT_X_DISCONTINUITY,
    EXT_X_DISCONTINUITY_SEQUENCE,
    EXT_X_ENDLIST,
    EXT_X_GAP,
    EXT_X_INDEPENDENT_SEGMENTS,
    EXT_X_MAP,
    EXT_X_MEDIA_SEQUENCE,
    EXT_X_PART,
    EXT_X_PLAYLIST_TYPE,
    EXT_X_PROGRAM_DATE_TIME,
    EXT_X_TARGETDURATION,
    EXT_X_VERSION,
    EXTINF,
    EXTM3U,
    VERSION,
    format_duration,
)


class SegmentLike(Protocol):
    """What the writer reads of a segment (``Segment``, or e.g. the packager's ``PlaylistEntry``)."""

    @property
    def uri(self) -> str: ...
    @property
    def duration(self) -> float: ...
    @property
    def map_uri(self) -> str | None: ...
    @property
    def program_date_time(self) -> float | None: ...
    @property
    def discontinuity(self) -> bool: ...
    @property
    def gap(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Segment:
    """One media segment. ``program_date_time`` is UNIX seconds of its first frame; ``gap`` marks
    one that will never exist (EXT-X-GAP): players skip its duration instead of loading ``uri``."""

    uri: str
    duration: float
    map_uri: str | None = None
    program_date_time: float | None = None
    discontinuity: bool = False
    gap: bool = False


@dataclass(frozen=True)
class MediaPlaylist:
    """A media playlist as written. ``discontinuity_sequence`` None leaves the tag out.

    ``parse`` gives ``Segment``s; a writer may pass any ``SegmentLike`` (no copy per render).
    """

    target_duration: int
    segments: tuple[SegmentLike, ...] = ()
    media_sequence: int = 0
    discontinuity_sequence: int | None = 0
    playlist_type: str | None = None
    ended: bool = False
    low_latency: LowLatency | None = None

    def render(self) -> str:
        ll = self.low_latency
        lines = [
            EXTM3U,
            f"{EXT_X_VERSION}:{VERSION if ll is None else LL_VERSION}",
            f"{EXT_X_TARGETDURATION}:{self.target_duration}",
        ]
        if ll is not None:
            lines.extend(ll.header())
        lines.append(f"{EXT_X_MEDIA_SEQUENCE}:{self.media_sequence}")
        if self.discontinuity_sequence is not None:
            lines.append(f"{EXT_X_DISCONTINUITY_SEQUENCE}:{self.discontinuity_sequence}")
        if self.playlist_type is not None:
            lines.append(f"{EXT_X_PLAYLIST_TYPE}:{self.playlist_type}")
        lines.append(EXT_X_INDEPENDENT_SEGMENTS)
        map_uri: str | None = None
        parts = {} if ll is None else ll.parts
        msn = self.media_sequence + (0 if ll is None else ll.skipped)
        for s in self.segments:
            map_uri = _segment_tags(lines, s, map_uri)
            lines.extend(part_line(p) for p in parts.get(msn, ()))
            lines.append(f"{EXTINF}:{format_duration(s.duration)},")
            if s.gap:
                lines.append(EXT_X_GAP)
            lines.append(s.uri)
            msn += 1
        if ll is not None:
            if parts.get(msn):
                _segment_tags(lines, ll.next_segment or NextSegment(), map_uri)
                lines.extend(part_line(p) for p in parts[msn])
            lines.extend(ll.tail())
        if self.ended:
            lines.append(EXT_X_ENDLIST)
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> MediaPlaylist:
        """A media playlist read back (``m3u8``); PlaylistError when it is not one."""
        return _parse(text)


def _segment_tags(lines: list[str], s: SegmentLike | NextSegment, map_uri: str | None) -> str | None:
    """A segment's tags before its parts and EXTINF; the EXT-X-MAP in force after it."""
    if s.discontinuity:
        # Rendered even on the first segment: dropping it there would shift the
        # discontinuity number of every segment after it once a live window slides.
        lines.append(EXT_X_DISCONTINUITY)
    if s.map_uri is not None and s.map_uri != map_uri:
        lines.append(f'{EXT_X_MAP}:URI="{s.map_uri}"')
    if s.program_date_time is not None:
        lines.append(f"{EXT_X_PROGRAM_DATE_TIME}:{format_date_time(s.program_date_time)}")
    return s.map_uri


def _parts(raw: Any) -> tuple[Part, ...]:
    out = []
    for p in raw or ():
        if p.uri is None or p.duration is None:
            raise PlaylistError(f"{EXT_X_PART} without URI or DURATION: {p!s}")
        out.append(Part(p.uri, float(p.duration), str(p.independent or "").upper() == "YES"))
    return tuple(out)


def _trailing_tags(text: str) -> list[str]:
    """The tag lines between the last segment's URI and the first part of the segment in progress."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last_uri = max((i for i, ln in enumerate(lines) if not ln.startswith("#")), default=0)
    after = lines[last_uri + 1 :]
    first_part = next((i for i, ln in enumerate(after) if ln.startswith(EXT_X_PART + ":")), len(after))
    return after[:first_part]


def _low_latency(
    doc: Any, text: str, first_msn: int, segments: list[Any], trailing: Any
) -> LowLatency | None:
    if not doc.part_inf or doc.part_inf.part_target is None:
        return None
    parts: dict[int, tuple[Part, ...]] = {}
    for i, s in enumerate(segments):
        if s.parts:
            parts[first_msn + i] = _parts(s.parts)
    next_segment = None
    if trailing is not None and trailing.parts:
        parts[first_msn + len(segments)] = _parts(trailing.parts)
        tags = _trailing_tags(text)
        pdt = trailing.parts[0].program_date_time
        map_line = next((ln for ln in reversed(tags) if ln.startswith(EXT_X_MAP + ":")), None)
        next_segment = NextSegment(
            None if map_line is None else map_line.partition('URI="')[2].partition('"')[0],
            None if pdt is None else pdt.timestamp(),
            EXT_X_DISCONTINUITY in tags,
        )
    hint = doc.preload_hint
    reports = tuple(
        RenditionReport(r.uri, int(r.last_msn), None if r.last_part is None else int(r.last_part))
        for r in doc.rendition_reports
    )
    return LowLatency(
        part_target=float(doc.part_inf.part_target),
        can_skip_until=float(getattr(doc.server_control, "can_skip_until", None) or 0.0),
        parts=parts,
        next_segment=next_segment,
        preload_hint=None if hint is None else hint.uri,
        reports=reports,
        skipped=int(doc.skip.skipped_segments or 0) if doc.skip else 0,
    )


def _parse(text: str) -> MediaPlaylist:
    try:
        doc: Any = m3u8.loads(text)
    except Exception as exc:  # m3u8 raises what its parsing meets (ValueError, IndexError, ...)
        raise PlaylistError(f"text is not an HLS playlist: {exc!r}") from exc
    if not text.startswith(EXTM3U) or doc.is_variant:
        raise PlaylistError("text is not a media playlist (no #EXTM3U, or a master playlist)")
    if doc.target_duration is None:
        raise PlaylistError(f"media playlist has no {EXT_X_TARGETDURATION}")
    raw = list(doc.segments)
    trailing = raw.pop() if raw and raw[-1].uri is None and raw[-1].parts else None  # in progress
    segments: list[Segment] = []
    for s in raw:
        if s.duration is None:
            raise PlaylistError(f"segment {s.uri!r} has no {EXTINF}")
        pdt = s.program_date_time
        if pdt is not None and pdt.tzinfo is None:
            raise PlaylistError(f"segment {s.uri!r} has a PROGRAM-DATE-TIME without a zone")
        segments.append(
            Segment(
                s.uri,
                float(s.duration),
                None if s.init_section is None else s.init_section.uri,
                None if pdt is None else pdt.timestamp(),
                bool(s.discontinuity),
                bool(s.gap_tag),
            )
        )
    has_dsn = any(ln.startswith(EXT_X_DISCONTINUITY_SEQUENCE + ":") for ln in text.splitlines())
    sequence = int(doc.media_sequence or 0)
    ll = _low_latency(
        doc, text, sequence + (int(doc.skip.skipped_segments or 0) if doc.skip else 0), raw, trailing
    )
    return MediaPlaylist(
        target_duration=int(doc.target_duration),
        segments=tuple(segments),
        media_sequence=sequence,
        discontinuity_sequence=int(doc.discontinuity_sequence or 0) if has_dsn else None,
        playlist_type=None if doc.playlist_type is None else str(doc.playlist_type).upper(),
        ended=bool(doc.is_endlist),
        low_latency=ll,
    )
