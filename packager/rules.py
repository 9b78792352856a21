"""RFC 8216 rules the packager owns, checked on rendered text: a list of violations, empty when clean.

``check_media`` looks at one media playlist; ``check_update`` at two successive renders
of the same playlist (what a client sees when it reloads); ``check_master`` at a master.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_PDT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_EXTINF_RE = re.compile(r"^(\d+(?:\.\d+)?),")
_MAP_RE = re.compile(r'^URI="([^"]+)"')
_STREAM_INF_RE = re.compile(
    r'^BANDWIDTH=(\d+),AVERAGE-BANDWIDTH=(\d+),CODECS="[^"]+",RESOLUTION=\d+x\d+'
    r'(?:,FRAME-RATE=\d+\.\d{3})?(?:,AUDIO="([^"]+)")?$'
)
_MEDIA_GROUP_RE = re.compile(r'TYPE=AUDIO,GROUP-ID="([^"]+)"')


def nearest(seconds: float) -> int:
    """An EXTINF rounded to the nearest integer, halves up (what RFC 8216 4.3.3.1 compares)."""
    return math.floor(seconds + 0.5)


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass
class ParsedSegment:
    msn: int
    dsn: int
    duration: float
    uri: str
    map_uri: str | None
    pdt: str | None
    gap: bool


@dataclass
class ParsedMedia:
    version: int | None = None
    target_duration: int | None = None
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    endlist: bool = False
    playlist_type: str | None = None
    segments: list[ParsedSegment] = field(default_factory=list)
    problems: list[Violation] = field(default_factory=list)


def parse_media(text: str) -> ParsedMedia:
    """Just enough of a media playlist to check our rules (not a general parser)."""
    p = ParsedMedia()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "#EXTM3U":
        p.problems.append(Violation("extm3u", "the first line is not #EXTM3U"))
    dsn_offset = 0
    map_uri: str | None = None
    duration: float | None = None
    pdt: str | None = None
    gap = False
    for ln in lines[1:]:
        tag, _, value = ln.partition(":")
        if tag == "#EXT-X-VERSION":
            p.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            p.target_duration = int(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            p.media_sequence = int(value)
        elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
            p.discontinuity_sequence = int(value)
        elif tag == "#EXT-X-DISCONTINUITY":
            dsn_offset += 1
        elif tag == "#EXT-X-MAP":
            m = _MAP_RE.match(value)
            map_uri = m.group(1) if m else None
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            pdt = value
        elif tag == "#EXTINF":
            m = _EXTINF_RE.match(value)
            if m is None:
                p.problems.append(Violation("extinf", f"EXTINF {value!r} is not '<decimal seconds>,'"))
            duration = float(m.group(1)) if m else 0.0
        elif tag == "#EXT-X-GAP":
            gap = True
        elif tag == "#EXT-X-ENDLIST":
            p.endlist = True
        elif tag == "#EXT-X-PLAYLIST-TYPE":
            p.playlist_type = value
        elif not ln.startswith("#"):
            if duration is None:
                p.problems.append(Violation("extinf", f"segment {ln!r} has no EXTINF"))
            msn = p.media_sequence + len(p.segments)
            dsn = p.discontinuity_sequence + dsn_offset
            p.segments.append(ParsedSegment(msn, dsn, duration or 0.0, ln, map_uri, pdt, gap))
            duration, pdt, gap = None, None, False
    return p


def check_media(text: str) -> list[Violation]:
    p = parse_media(text)
    out = list(p.problems)
    if p.version != 7:
        out.append(Violation("version", f"EXT-X-VERSION is {p.version}, expected 7"))
    if p.target_duration is None:
        out.append(Violation("target-duration", "EXT-X-TARGETDURATION is missing"))
    for s in p.segments:
        if p.target_duration is not None and nearest(s.duration) > p.target_duration:
            out.append(
                Violation(
                    "target-duration",
                    f"segment {s.msn} EXTINF {s.duration} rounds above target duration {p.target_duration}",
                )
            )
        if s.map_uri is None:
            out.append(Violation("map", f"segment {s.msn} ({s.uri}) is under no EXT-X-MAP"))
        if s.pdt is not None and _PDT_RE.match(s.pdt) is None:
            out.append(
                Violation(
                    "program-date-time", f"segment {s.msn} PDT {s.pdt!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
                )
            )
    return out


def check_update(before: str, after: str) -> list[Violation]:
    """Rules between a render and the next one of the same playlist."""
    a, b = parse_media(before), parse_media(after)
    out: list[Violation] = []
    if b.media_sequence < a.media_sequence:
        out.append(Violation("media-sequence", f"went back from {a.media_sequence} to {b.media_sequence}"))
    if b.discontinuity_sequence < a.discontinuity_sequence:
        out.append(
            Violation(
                "discontinuity-sequence",
                f"went back from {a.discontinuity_sequence} to {b.discontinuity_sequence}",
            )
        )
    if a.endlist and before != after:
        # The client stopped reloading: what follows is a new presentation at the same URI.
        # Sequence numbers must still not go back (a stray reload must not confuse it).
        if b.segments and a.segments and b.segments[0].msn <= a.segments[-1].msn:
            out.append(
                Violation("endlist", "an ended playlist was reopened: it gained entries after ENDLIST")
            )
        return out
    if a.target_duration != b.target_duration:
        out.append(Violation("target-duration", f"changed from {a.target_duration} to {b.target_duration}"))
    old = {s.msn: s for s in a.segments}
    for s in b.segments:
        prev = old.get(s.msn)
        if prev is None:
            continue
        if prev.uri != s.uri:
            out.append(Violation("media-sequence", f"segment {s.msn} was {prev.uri}, is now {s.uri}"))
        if prev.dsn != s.dsn:
            out.append(
                Violation(
                    "discontinuity-sequence",
                    f"segment {s.msn} had discontinuity number {prev.dsn}, now {s.dsn}",
                )
            )
    return out


def check_master(text: str) -> list[Violation]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out: list[Violation] = []
    if not lines or lines[0] != "#EXTM3U":
        out.append(Violation("extm3u", "the first line is not #EXTM3U"))
    bandwidths: list[int] = []
    groups = {
        m.group(1) for ln in lines if (m := _MEDIA_GROUP_RE.search(ln)) and ln.startswith("#EXT-X-MEDIA:")
    }
    for i, ln in enumerate(lines):
        if not ln.startswith("#EXT-X-STREAM-INF:"):
            continue
        m = _STREAM_INF_RE.match(ln.partition(":")[2])
        if m is None:
            out.append(
                Violation("stream-inf", f"{ln!r} lacks BANDWIDTH, AVERAGE-BANDWIDTH, CODECS or RESOLUTION")
            )
            continue
        peak, avg = int(m.group(1)), int(m.group(2))
        if m.group(3) is not None and m.group(3) not in groups:
            out.append(Violation("stream-inf", f"AUDIO group {m.group(3)!r} has no EXT-X-MEDIA"))
        if avg > peak:
            out.append(Violation("stream-inf", f"AVERAGE-BANDWIDTH {avg} is above BANDWIDTH {peak}"))
        bandwidths.append(peak)
        if i + 1 >= len(lines) or lines[i + 1].startswith("#"):
            out.append(Violation("stream-inf", f"{ln!r} is not followed by a URI"))
    if not bandwidths:
        out.append(Violation("stream-inf", "the master names no variant"))
    if bandwidths != sorted(bandwidths, reverse=True):
        out.append(Violation("stream-inf", f"variants are not sorted by bandwidth descending: {bandwidths}"))
    return out
