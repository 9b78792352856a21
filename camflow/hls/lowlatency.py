"""Low-latency HLS (RFC 8216bis): the LL tags of a media playlist, written and read, in one place.

The model (``LowLatency``: part target, parts by media sequence number, preload hint, rendition
reports) is carried by ``camflow.hls.media.MediaPlaylist``, which writes and parses it with the
rest of the playlist. Written form of a low-latency playlist (version 9)::

    #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=24.000
    #EXT-X-PART-INF:PART-TARGET=0.200
    ...
    #EXT-X-PROGRAM-DATE-TIME:...                  (a segment's tags come before its parts)
    #EXT-X-PART:DURATION=0.200,URI="...000.m4s",INDEPENDENT=YES
    #EXT-X-PART:DURATION=0.200,URI="...001.m4s"
    #EXTINF:2.000,
    uri
    #EXT-X-PROGRAM-DATE-TIME:...                  (the segment in progress: its tags, its parts)
    #EXT-X-PART:DURATION=0.200,URI="...000.m4s",INDEPENDENT=YES
    #EXT-X-PRELOAD-HINT:TYPE=PART,URI="...001.m4s"
    #EXT-X-RENDITION-REPORT:URI="720p.m3u8",LAST-MSN=12,LAST-PART=0

For the edge's hot path (no model objects, as ``camflow.hls.scan``): ``playlist_end`` is where a
playlist ends (``End(msn, part)``, what a blocking reload waits for), ``facts`` that and what the
edge's blocking reloads and held requests need (PART-TARGET, TARGETDURATION, what
EXT-X-SERVER-CONTROL allows, EXT-X-ENDLIST, the preload hint and the last URI listed), and
``delta`` the playlist as a delta update (``_HLS_skip=YES``: ``EXT-X-SKIP`` in place of the
segments older than a bound; camflow writes no EXT-X-DATERANGE, so ``_HLS_skip=v2`` is the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from camflow.hls.errors import PlaylistError
from camflow.hls.scan import block_duration, first_kept, split_media
from camflow.hls.tags import (
    EXT_X_ENDLIST,
    EXT_X_MEDIA_SEQUENCE,
    EXT_X_PART,
    EXT_X_TARGETDURATION,
    EXT_X_VERSION,
    EXTM3U,
    attributes,
    format_duration,
)

LL_VERSION = 9  # EXT-X-SKIP (a delta update of the playlist) needs version 9
EXT_X_SERVER_CONTROL = "#EXT-X-SERVER-CONTROL"
EXT_X_PART_INF = "#EXT-X-PART-INF"
EXT_X_PRELOAD_HINT = "#EXT-X-PRELOAD-HINT"
EXT_X_RENDITION_REPORT = "#EXT-X-RENDITION-REPORT"
EXT_X_SKIP = "#EXT-X-SKIP"
PART_HOLD_BACK_PARTS = 3  # PART-HOLD-BACK in part targets (the spec asks for at least 2, advises 3)
SKIP_TARGETS = 6  # CAN-SKIP-UNTIL in target durations (the spec's least)
PARTS_KEPT_TARGETS = 3  # parts of segments further than this many target durations from the end drop out


@dataclass(frozen=True, slots=True)
class Part:
    """One partial segment (EXT-X-PART); ``independent``: it starts with a key picture."""

    uri: str
    duration: float
    independent: bool = False


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """Where another rendition of the stream ends (EXT-X-RENDITION-REPORT); ``last_part`` None when
    that rendition lists no part of its last segment."""

    uri: str
    last_msn: int
    last_part: int | None = None


@dataclass(frozen=True, slots=True)
class NextSegment:
    """The tags of the segment in progress, written before its parts."""

    map_uri: str | None = None
    program_date_time: float | None = None
    discontinuity: bool = False


@dataclass(frozen=True)
class LowLatency:
    """The LL part of a media playlist.

    ``parts`` maps a media sequence number to that segment's parts; the number after the last
    segment's holds the parts of the segment in progress (``next_segment`` its tags).
    """

    part_target: float
    can_skip_until: float
    parts: Mapping[int, tuple[Part, ...]] = field(default_factory=dict)
    next_segment: NextSegment | None = None
    preload_hint: str | None = None
    reports: tuple[RenditionReport, ...] = ()
    skipped: int = 0  # EXT-X-SKIP:SKIPPED-SEGMENTS (a delta update); 0: a full playlist

    @property
    def part_hold_back(self) -> float:
        return PART_HOLD_BACK_PARTS * self.part_target

    def header(self) -> list[str]:
        """EXT-X-SERVER-CONTROL and EXT-X-PART-INF."""
        return [
            f"{EXT_X_SERVER_CONTROL}:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={format_duration(self.part_hold_back)},"
            f"CAN-SKIP-UNTIL={format_duration(self.can_skip_until)}",
            f"{EXT_X_PART_INF}:PART-TARGET={format_duration(self.part_target)}",
        ]

    def tail(self) -> list[str]:
        """The preload hint and the rendition reports (after the last segment and its parts)."""
        lines = []
        if self.preload_hint is not None:
            lines.append(f'{EXT_X_PRELOAD_HINT}:TYPE=PART,URI="{self.preload_hint}"')
        for r in self.reports:
            report = f'{EXT_X_RENDITION_REPORT}:URI="{r.uri}",LAST-MSN={r.last_msn}'
            lines.append(report if r.last_part is None else f"{report},LAST-PART={r.last_part}")
        return lines


def part_line(part: Part) -> str:
    line = f'{EXT_X_PART}:DURATION={format_duration(part.duration)},URI="{part.uri}"'
    return f"{line},INDEPENDENT=YES" if part.independent else line


def can_skip_until(target_duration: int) -> float:
    return float(SKIP_TARGETS * target_duration)


# -- the edge's hot path: text in, text out ------------------------------------------------------------


def _header_int(head: list[str], tag: str, default: int | None) -> int | None:
    for line in head:
        name, _, value = line.partition(":")
        if name == tag:
            try:
                return int(value)
            except ValueError:
                raise PlaylistError(f"{tag} {value!r} is not a decimal integer") from None
    return default


class End(NamedTuple):
    """Where a media playlist ends (``camflow.events.PlaylistEnd`` without the rendition): ``msn`` of
    its last segment, complete or in progress, and the last part listed of that segment (-1: the
    segment is complete and no part of the next one is listed). Ordered as the playlist grows."""

    msn: int
    part: int


@dataclass(frozen=True, slots=True)
class LowLatencyFacts:
    """What the edge needs of an LL media playlist: ``end`` as ``playlist_end``, what its
    EXT-X-SERVER-CONTROL allows, the URI of its preload hint (TYPE=PART) and of the last part or
    segment it lists (the newest object named, with the hint)."""

    part_target: float
    target_duration: int | None
    can_block: bool
    can_skip_until: float | None
    preload_hint: str | None
    end: End | None
    endlist: bool = False
    last_uri: str | None = None

    @property
    def blocking(self) -> bool:
        """Whether a reload may block (``_HLS_msn``): CAN-BLOCK-RELOAD=YES and no EXT-X-ENDLIST."""
        return self.can_block and not self.endlist


def facts(text: str) -> LowLatencyFacts | None:
    """The LL facts of a media playlist; None when it is not a low-latency one (no EXT-X-PART-INF).
    PlaylistError when the text is not a media playlist or its LL numbers are not numbers."""
    head, blocks, rest = split_media(text)
    part_inf = next((ln for ln in head if ln.startswith(EXT_X_PART_INF + ":")), None)
    if part_inf is None:
        return None
    control = attributes(next((ln for ln in head if ln.startswith(EXT_X_SERVER_CONTROL + ":")), ""))
    hint = attributes(next((ln for ln in rest if ln.startswith(EXT_X_PRELOAD_HINT + ":")), ""))
    try:
        part_target = float(attributes(part_inf.partition(":")[2])["PART-TARGET"])
        skip = control.get("CAN-SKIP-UNTIL")
        can_skip = None if skip is None else float(skip)
    except (KeyError, ValueError):
        raise PlaylistError(
            f"{part_inf!r} / CAN-SKIP-UNTIL={control.get('CAN-SKIP-UNTIL')!r}: "
            "expected PART-TARGET and CAN-SKIP-UNTIL seconds"
        ) from None
    trailing = [attributes(ln.partition(":")[2]).get("URI") for ln in rest if ln.startswith(EXT_X_PART + ":")]
    return LowLatencyFacts(
        part_target,
        _header_int(head, EXT_X_TARGETDURATION, None),
        control.get("CAN-BLOCK-RELOAD") == "YES",
        can_skip,
        hint.get("URI") if hint.get("TYPE") == "PART" else None,
        _end(head, blocks, rest),
        EXT_X_ENDLIST in rest,
        trailing[-1] if trailing else blocks[-1][-1] if blocks else None,
    )


def playlist_end(text: str) -> End | None:
    """Where a media playlist ends: ``End(msn, part)`` of its last segment, complete or in progress.

    ``part`` is the last part listed of the segment in progress, -1 when the last segment is
    complete and no part of the next one is listed (``camflow.events.PlaylistEnd``). None when
    the playlist lists nothing. PlaylistError when the text is not a media playlist.
    """
    return _end(*split_media(text))


def _end(head: list[str], blocks: list[list[str]], rest: list[str]) -> End | None:
    if not head or head[0] != EXTM3U:
        raise PlaylistError("text is not a media playlist (no #EXTM3U)")
    sequence = _header_int(head, EXT_X_MEDIA_SEQUENCE, 0)
    assert sequence is not None
    skipped = 0
    skip = next((ln for ln in head if ln.startswith(EXT_X_SKIP + ":")), None)
    if skip is not None:  # a delta update: the skipped segments still count
        value = attributes(skip.partition(":")[2]).get("SKIPPED-SEGMENTS", "")
        if not (value.isascii() and value.isdigit()):
            raise PlaylistError(f"{skip!r}: expected SKIPPED-SEGMENTS=<decimal integer>")
        skipped = int(value)
    last = sequence + skipped + len(blocks) - 1
    trailing = sum(1 for ln in rest if ln.startswith(EXT_X_PART + ":"))
    if trailing:
        return End(last + 1, trailing - 1)
    return None if last < sequence else End(last, -1)


def delta(text: str, skip_until: float) -> str:
    """A delta update of a low-latency media playlist (``_HLS_skip=YES``, RFC 8216bis 6.2.5.1).

    The segments that end ``skip_until`` seconds or more before the end of the playlist (its
    CAN-SKIP-UNTIL; the last segment stays) are replaced by ``EXT-X-SKIP:SKIPPED-SEGMENTS=n``;
    MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE stay as they are (they number the skipped
    segments), and the EXT-X-MAP of the first kept segment is repeated. A playlist with nothing to skip comes
    back whole. PlaylistError when the text is not a playlist this can cut.
    """
    head, blocks, rest = split_media(text)
    if not head or head[0] != EXTM3U:
        raise PlaylistError("text is not a media playlist (no #EXTM3U)")
    durations = [block_duration(b) for b in blocks]
    # A segment is skipped when it ends at least skip_until before the end (the Skip Boundary): what
    # follows it is summed from the end (the parts of the segment in progress, then the segments).
    after = 0.0
    for ln in rest:
        if ln.startswith(EXT_X_PART + ":"):
            try:
                after += float(attributes(ln.partition(":")[2]).get("DURATION", "0") or 0)
            except ValueError:
                raise PlaylistError(f"{ln!r}: expected DURATION=<decimal seconds>") from None
    skip = 0
    for i in range(len(blocks) - 1, 0, -1):  # the last segment stays
        after += durations[i]
        if after >= skip_until:
            skip = i
            break
    if skip == 0:
        return text
    first = first_kept(blocks, skip)
    out = []
    for line in head:
        if line.startswith(EXT_X_VERSION + ":"):
            line = f"{EXT_X_VERSION}:{max(LL_VERSION, _header_int([line], EXT_X_VERSION, 0) or 0)}"
        out.append(line)
    out.append(f"{EXT_X_SKIP}:SKIPPED-SEGMENTS={skip}")
    out.extend(first)
    for b in blocks[skip + 1 :]:
        out.extend(b)
    out.extend(rest)
    return "\n".join(out) + "\n"
