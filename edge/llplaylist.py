"""What the edge reads of a low-latency media playlist (RFC 8216bis), and the delta updates it cuts; no I/O.

- ``ll_view``: where the playlist ends (``End``: the last segment's media sequence number, complete
  or in progress, and that segment's last listed part), its target durations, what its
  ``EXT-X-SERVER-CONTROL`` allows, and the newest object it names (for holding a request for a part
  or segment not written yet);
- ``BlockingQuery.parse``: the ``_HLS_msn`` / ``_HLS_part`` / ``_HLS_skip`` of a request, or
  ``BadQuery`` naming the value and the expected form;
- ``delta_update``: the playlist with the segments older than ``CAN-SKIP-UNTIL`` replaced by
  ``EXT-X-SKIP:SKIPPED-SEGMENTS=n`` (RFC 8216bis 4.4.5.2, 6.2.5.1).

The packager writes part and segment URIs relative to the playlist, ``{epoch}/{rendition}/NNNNNNNN.m4s``
and ``{epoch}/{rendition}/NNNNNNNN.PPP.m4s``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from camflow.hls.tags import attributes

SERVER_CONTROL = "#EXT-X-SERVER-CONTROL"
PART_INF = "#EXT-X-PART-INF"
PART = "#EXT-X-PART"
PRELOAD_HINT = "#EXT-X-PRELOAD-HINT"
SKIP = "#EXT-X-SKIP"
MAP = "#EXT-X-MAP"
VERSION = "#EXT-X-VERSION"
SKIP_VERSION = 9  # EXT-X-SKIP needs EXT-X-VERSION 9 (RFC 8216bis 4.4.5.2)
ADVANCE_PART_LIMIT = 3  # RFC 8216bis 6.2.5.2: _HLS_part beyond the last part by more is a 400
ADVANCE_MSN_LIMIT = 2  # _HLS_msn beyond the last segment's by more is a 400
# Tags of a media segment: dropped with the segments an EXT-X-SKIP replaces.
SEGMENT_TAGS = frozenset(
    (
        "#EXTINF",
        "#EXT-X-BYTERANGE",
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-PROGRAM-DATE-TIME",
        "#EXT-X-GAP",
        "#EXT-X-BITRATE",
        "#EXT-X-KEY",
        MAP,
        PART,
    )
)
OBJECT_URI = re.compile(r"(?:^|/)(?P<epoch>[0-9]{8}T[0-9]{9}Z)/[^/]+/(?P<seq>[0-9]{8})(?:\.[0-9]{3})?\.m4s")
MSN_PARAM, PART_PARAM, SKIP_PARAM = "_HLS_msn", "_HLS_part", "_HLS_skip"
SKIP_VALUES = ("YES", "v2")


class BadQuery(ValueError):
    """A ``_HLS_*`` query parameter that is malformed or asks for what the spec refuses (400)."""


@dataclass(frozen=True, order=True, slots=True)
class End:
    """Where a media playlist ends: ``msn`` of its last segment (complete or in progress) and the last
    part listed of that segment (-1: the segment is complete and no part of the next is listed)."""

    msn: int
    part: int


@dataclass(frozen=True, slots=True)
class LlView:
    end: End | None  # None: no segment or part listed yet
    last_complete: int  # msn of the last complete segment (-1: none)
    target_duration: float
    part_target: float | None  # None: no EXT-X-PART-INF (not a low-latency playlist)
    can_block: bool
    can_skip_until: float | None
    endlist: bool
    newest: tuple[str, int] | None  # (epoch, seq) of the newest object named (hint, part or segment)

    @property
    def blocking(self) -> bool:
        return self.can_block and not self.endlist


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def ll_view(text: str) -> LlView:
    """The facts of a media playlist the blocking edge needs; lines it cannot read are ignored."""
    media_sequence = 0
    segments = 0
    parts = 0  # parts listed since the last segment line
    target = 0.0
    part_target: float | None = None
    can_block = False
    can_skip: float | None = None
    endlist = False
    newest: tuple[str, int] | None = None
    hint: tuple[str, int] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            segments += 1
            parts = 0
            newest = _object(line) or newest
            continue
        tag, _, value = line.partition(":")
        if tag == PART:
            parts += 1
            newest = _object(attributes(value).get("URI", "")) or newest
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            media_sequence = int(_number(value) or 0)
        elif tag == "#EXT-X-TARGETDURATION":
            target = _number(value) or 0.0
        elif tag == PART_INF:
            part_target = _number(attributes(value).get("PART-TARGET", ""))
        elif tag == SERVER_CONTROL:
            attrs = attributes(value)
            can_block = attrs.get("CAN-BLOCK-RELOAD") == "YES"
            can_skip = _number(attrs.get("CAN-SKIP-UNTIL", ""))
        elif tag == PRELOAD_HINT:
            attrs = attributes(value)
            if attrs.get("TYPE") == "PART":
                hint = _object(attrs.get("URI", ""))
        elif tag == SKIP:  # a delta update: the skipped segments still count
            segments += int(_number(attributes(value).get("SKIPPED-SEGMENTS", "")) or 0)
        elif tag == "#EXT-X-ENDLIST":
            endlist = True
    last_complete = media_sequence + segments - 1
    if parts:
        end: End | None = End(last_complete + 1, parts - 1)
    elif segments:
        end = End(last_complete, -1)
    else:
        end = None
    return LlView(end, last_complete, target, part_target, can_block, can_skip, endlist, hint or newest)


def _object(uri: str) -> tuple[str, int] | None:
    m = OBJECT_URI.search(uri.partition("?")[0])
    return None if m is None else (m["epoch"], int(m["seq"]))


@dataclass(frozen=True, slots=True)
class BlockingQuery:
    """A request's ``_HLS_*`` parameters: ``msn`` None means no blocking (a skip request alone)."""

    msn: int | None
    part: int | None
    skip: bool

    @property
    def blocks(self) -> bool:
        return self.msn is not None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> BlockingQuery | None:
        """None when the request has no ``_HLS_*`` parameter; ``BadQuery`` for a malformed one."""
        if MSN_PARAM not in query and PART_PARAM not in query and SKIP_PARAM not in query:
            return None
        msn = _count(query, MSN_PARAM)
        part = _count(query, PART_PARAM)
        if part is not None and msn is None:
            raise BadQuery(f"{PART_PARAM}={query[PART_PARAM]} without {MSN_PARAM}: expected both")
        skip = query.get(SKIP_PARAM)
        if skip is not None and skip not in SKIP_VALUES:
            raise BadQuery(f"{SKIP_PARAM}={skip!r} is not valid: expected YES or v2")
        return cls(msn, part, skip is not None)

    def reached(self, view: LlView) -> bool:
        """True when the playlist holds segment ``msn`` whole, or part ``part`` of it (or a later one)."""
        assert self.msn is not None
        if view.last_complete >= self.msn:
            return True
        end = view.end
        return self.part is not None and end is not None and end.msn == self.msn and end.part >= self.part

    def too_far(self, end: End) -> str | None:
        """Why the request asks beyond what the spec lets a server wait for (a 400), or None."""
        assert self.msn is not None
        if self.msn > end.msn + ADVANCE_MSN_LIMIT:
            return (
                f"{MSN_PARAM}={self.msn} is more than {ADVANCE_MSN_LIMIT} beyond the playlist's last "
                f"media sequence number {end.msn}"
            )
        if self.part is not None and self.msn == end.msn and self.part > end.part + ADVANCE_PART_LIMIT:
            return (
                f"{PART_PARAM}={self.part} is more than {ADVANCE_PART_LIMIT} beyond the last part "
                f"{end.part} of segment {end.msn}"
            )
        return None


def _count(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise BadQuery(f"{name}={value!r} is not valid: expected a decimal integer 0 or more")
    return int(value)


def delta_update(text: str, can_skip_until: float) -> str:
    """The playlist as a delta update: segments that end more than ``can_skip_until`` seconds before
    the playlist's end are replaced by one ``EXT-X-SKIP``; the text as it was when none can be.

    The EXT-X-MAP in effect for the first segment kept is repeated before it; EXT-X-VERSION is raised
    to 9 where lower. MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE stay (skipped segments count as listed).
    """
    lines = text.splitlines()
    head: list[str] = []
    blocks: list[tuple[list[str], float]] = []  # (a segment's lines, its duration)
    pending: list[str] = []
    started = False
    for line in lines:
        stripped = line.strip()
        if not started and (not stripped.startswith("#") or stripped.partition(":")[0] in SEGMENT_TAGS):
            started = True
        if not started:
            head.append(line)
            continue
        pending.append(line)
        if stripped and not stripped.startswith("#"):
            blocks.append((pending, _extinf(pending)))
            pending = []
    tail = pending  # the in-progress segment's parts, the hint, rendition reports, ENDLIST
    remaining = sum(_part_durations(tail))
    skipped = 0
    for i in range(len(blocks) - 1, -1, -1):
        if remaining >= can_skip_until:
            skipped = i + 1
            break
        remaining += blocks[i][1]
    if skipped == 0:
        return text
    current_map: str | None = None
    for block, _ in blocks[:skipped]:
        for line in block:
            if line.strip().partition(":")[0] == MAP:
                current_map = line.strip()
    kept = blocks[skipped:]
    out = [_version(line) for line in head]
    out.append(f"{SKIP}:SKIPPED-SEGMENTS={skipped}")
    first = kept[0][0] if kept else tail
    if current_map is not None and not any(ln.strip().partition(":")[0] == MAP for ln in _tags_of(first)):
        out.append(current_map)
    for block, _ in kept:
        out.extend(block)
    out.extend(tail)
    return "\n".join(out) + "\n"


def _tags_of(block: list[str]) -> list[str]:
    """The tags before a segment's URI line (all of a tail)."""
    out = []
    for line in block:
        if line.strip() and not line.strip().startswith("#"):
            break
        out.append(line)
    return out


def _version(line: str) -> str:
    tag, _, value = line.strip().partition(":")
    if tag == VERSION and (_number(value) or 0) < SKIP_VERSION:
        return f"{VERSION}:{SKIP_VERSION}"
    return line


def _extinf(block: list[str]) -> float:
    for line in block:
        if line.strip().startswith("#EXTINF:"):
            return _number(line.strip()[len("#EXTINF:") :].partition(",")[0]) or 0.0
    return 0.0


def _part_durations(lines: list[str]) -> list[float]:
    out = []
    for line in lines:
        tag, _, value = line.strip().partition(":")
        if tag == PART:
            out.append(_number(attributes(value).get("DURATION", "")) or 0.0)
    return out
