"""What the edge reads out of HLS playlists, with no I/O: text in, frozen facts out.

Media playlists give the target duration (for cache lifetimes), whether they are VOD or ended,
and the newest segment's PROGRAM-DATE-TIME (for the age of the last segment). Master playlists
give each variant's BANDWIDTH, RESOLUTION and FRAME-RATE (for ``/api/streams``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


@dataclass(frozen=True)
class MediaFacts:
    target_duration: float | None
    vod: bool
    ended: bool
    segments: int
    last_uri: str | None
    last_pdt: float | None  # UNIX seconds when the newest segment starts
    last_duration: float | None


@dataclass(frozen=True)
class VariantFacts:
    uri: str
    bandwidth: int | None
    width: int | None
    height: int | None
    frame_rate: float | None
    codecs: str | None


def parse_pdt(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def attributes(text: str) -> dict[str, str]:
    """``KEY=value,KEY="quoted, value"`` as a dict (quotes removed)."""
    return {m[1]: m[2].strip('"') for m in _ATTR.finditer(text)}


def media_facts(text: str) -> MediaFacts:
    target: float | None = None
    vod = ended = False
    segments = 0
    last_uri: str | None = None
    pdt: float | None = None
    last_pdt: float | None = None
    duration: float | None = None
    last_duration: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = _float(line.partition(":")[2])
        elif line.startswith("#EXT-X-PLAYLIST-TYPE:"):
            vod = line.partition(":")[2].strip() == "VOD"
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = parse_pdt(line.partition(":")[2])
        elif line.startswith("#EXTINF:"):
            duration = _float(line.partition(":")[2].partition(",")[0])
        elif not line.startswith("#"):
            segments += 1
            last_uri, last_pdt, last_duration = line, pdt, duration
            pdt = None if pdt is None or duration is None else pdt + duration
    return MediaFacts(target, vod, ended or vod, segments, last_uri, last_pdt, last_duration)


def master_variants(text: str) -> list[VariantFacts]:
    out: list[VariantFacts] = []
    pending: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = attributes(line.partition(":")[2])
        elif line and not line.startswith("#") and pending is not None:
            width = height = None
            if "x" in pending.get("RESOLUTION", ""):
                w, _, h = pending["RESOLUTION"].partition("x")
                width, height = _int(w), _int(h)
            out.append(
                VariantFacts(
                    uri=line,
                    bandwidth=_int(pending.get("BANDWIDTH", "")),
                    width=width,
                    height=height,
                    frame_rate=_float(pending.get("FRAME-RATE", "")),
                    codecs=pending.get("CODECS"),
                )
            )
            pending = None
    return out


def is_master(text: str) -> bool:
    return "#EXT-X-STREAM-INF:" in text


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
