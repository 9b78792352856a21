"""RFC 8216 rules camflow's playlists keep, checked on written text: a list of violations, empty when clean.

``check_media`` looks at one media playlist; ``check_update`` at two successive renders
of the same playlist (what a client sees when it reloads); ``check_master`` at a master;
``check_low_latency`` at the LL tags of a media playlist (RFC 8216bis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from camflow.hls.errors import PlaylistError
from camflow.hls.lowlatency import EXT_X_PART_INF, EXT_X_SERVER_CONTROL, LL_VERSION, PARTS_KEPT_TARGETS
from camflow.hls.media import MediaPlaylist
from camflow.hls.scan import scan_media
from camflow.hls.tags import (
    EXT_X_MEDIA,
    EXT_X_STREAM_INF,
    EXTM3U,
    VERSION,
    attributes,
    format_duration,
    nearest,
)

_PDT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_STREAM_INF_RE = re.compile(
    r'^BANDWIDTH=(\d+),AVERAGE-BANDWIDTH=(\d+),CODECS="[^"]+",RESOLUTION=\d+x\d+'
    r'(?:,FRAME-RATE=\d+\.\d{3})?(?:,AUDIO="([^"]+)")?$'
)


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


def check_media(text: str) -> list[Violation]:
    p = scan_media(text)
    out = [Violation(rule, detail) for rule, detail in p.problems]
    expected = LL_VERSION if EXT_X_PART_INF + ":" in text else VERSION
    if p.version != expected:
        out.append(Violation("version", f"EXT-X-VERSION is {p.version}, expected {expected}"))
    if p.target_duration is None:
        out.append(Violation("target-duration", "EXT-X-TARGETDURATION is missing"))
    for s in p.segments:
        if p.target_duration is not None and nearest(s.duration or 0.0) > p.target_duration:
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
    a, b = scan_media(before), scan_media(after)
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
    if not lines or lines[0] != EXTM3U:
        out.append(Violation("extm3u", "the first line is not #EXTM3U"))
    bandwidths: list[int] = []
    media = [attributes(ln.partition(":")[2]) for ln in lines if ln.startswith(EXT_X_MEDIA + ":")]
    groups = {m["GROUP-ID"] for m in media if m.get("TYPE") == "AUDIO" and "GROUP-ID" in m}
    for i, ln in enumerate(lines):
        if not ln.startswith(EXT_X_STREAM_INF + ":"):
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


SHORT_PART = 0.85  # of PART-TARGET: a shorter part must be INDEPENDENT or its segment's last


def check_low_latency(text: str) -> list[Violation]:
    """RFC 8216bis rules of a low-latency media playlist (what a blocking LL player relies on)."""
    try:
        pl = MediaPlaylist.parse(text)
    except PlaylistError as exc:
        return [Violation("parse", str(exc))]
    ll = pl.low_latency
    if ll is None:
        return [Violation("part-inf", "no EXT-X-PART-INF")]
    out: list[Violation] = []
    target = pl.target_duration
    control = next((ln for ln in text.splitlines() if ln.startswith(EXT_X_SERVER_CONTROL + ":")), "")
    server = attributes(control.partition(":")[2])
    if server.get("CAN-BLOCK-RELOAD") != "YES":
        out.append(Violation("server-control", f"{control!r} lacks CAN-BLOCK-RELOAD=YES"))
    hold_back = float(server.get("PART-HOLD-BACK") or 0)
    if hold_back < 2 * ll.part_target:
        out.append(Violation("server-control", f"PART-HOLD-BACK {hold_back} < 2 x PART-TARGET"))
    if ll.can_skip_until < 6 * target:
        out.append(Violation("server-control", f"CAN-SKIP-UNTIL {ll.can_skip_until} < 6 x TARGETDURATION"))
    first, count = pl.media_sequence + ll.skipped, len(pl.segments)
    limit = float(format_duration(ll.part_target))
    ends = [0.0]
    for s in pl.segments:
        ends.append(ends[-1] + s.duration)
    in_progress = sum(p.duration for p in ll.parts.get(first + count, ()))
    end = ends[-1] + in_progress
    for msn, parts in sorted(ll.parts.items()):
        i = msn - first
        if not 0 <= i <= count:
            out.append(Violation("part", f"parts of msn {msn}, which is not in the playlist"))
            continue
        for k, p in enumerate(parts):
            if p.duration > limit:
                out.append(Violation("part", f"{p.uri} of {p.duration} s is above PART-TARGET {limit}"))
            # Apple's rule: at least 85 % of PART-TARGET, but for INDEPENDENT parts and a segment's last
            # (the last listed of the segment in progress may turn out to be its last).
            if p.duration < SHORT_PART * limit and not p.independent and k < len(parts) - 1:
                out.append(Violation("part", f"{p.uri} of {p.duration} s is below 85 % of PART-TARGET"))
        if parts and not parts[0].independent:
            out.append(Violation("part", f"the first part of msn {msn} ({parts[0].uri}) is not INDEPENDENT"))
        if i < count:
            total = sum(p.duration for p in parts)
            if abs(total - pl.segments[i].duration) > 0.001 * (len(parts) + 1):
                out.append(
                    Violation("part", f"parts of msn {msn} last {total:.3f} s, its EXTINF says otherwise")
                )
            if end - ends[i] > PARTS_KEPT_TARGETS * target + 0.001:
                out.append(
                    Violation("part", f"parts of msn {msn} are more than 3 target durations from the end")
                )
    listed = {p.uri for parts in ll.parts.values() for p in parts}
    if not pl.ended and ll.preload_hint is None:
        out.append(Violation("preload-hint", "a live low-latency playlist without EXT-X-PRELOAD-HINT"))
    if ll.preload_hint is not None and ll.preload_hint in listed:
        out.append(Violation("preload-hint", f"hint {ll.preload_hint} names a part already listed"))
    for r in ll.reports:
        if r.last_msn < 0 or (r.last_part is not None and r.last_part < 0):
            out.append(
                Violation("rendition-report", f"{r.uri}: LAST-MSN/LAST-PART {r.last_msn}/{r.last_part}")
            )
    return out
