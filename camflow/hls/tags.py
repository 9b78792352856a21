"""The HLS vocabulary camflow writes: tag names, attribute lists, and the numbers in them.

One attribute-list reader (``attributes``), the EXTINF and target-duration arithmetic
(RFC 8216 4.3.3.1 compares EXTINF rounded to the nearest integer), and the names both the
packager and the edge put in playlists (the audio group).
"""

from __future__ import annotations

import math
import re

VERSION = 7
AUDIO_GROUP = "aud"  # the EXT-X-MEDIA group of a stream's audio rendition (live and VOD masters)

EXTM3U = "#EXTM3U"
EXT_X_VERSION = "#EXT-X-VERSION"
EXT_X_TARGETDURATION = "#EXT-X-TARGETDURATION"
EXT_X_MEDIA_SEQUENCE = "#EXT-X-MEDIA-SEQUENCE"
EXT_X_DISCONTINUITY_SEQUENCE = "#EXT-X-DISCONTINUITY-SEQUENCE"
EXT_X_PLAYLIST_TYPE = "#EXT-X-PLAYLIST-TYPE"
EXT_X_INDEPENDENT_SEGMENTS = "#EXT-X-INDEPENDENT-SEGMENTS"
EXT_X_DISCONTINUITY = "#EXT-X-DISCONTINUITY"
EXT_X_MAP = "#EXT-X-MAP"
EXT_X_PROGRAM_DATE_TIME = "#EXT-X-PROGRAM-DATE-TIME"
EXTINF = "#EXTINF"
EXT_X_GAP = "#EXT-X-GAP"
EXT_X_ENDLIST = "#EXT-X-ENDLIST"
EXT_X_PART = "#EXT-X-PART"  # a low-latency part (camflow.hls.lowlatency): it starts a segment's lines
EXT_X_MEDIA = "#EXT-X-MEDIA"
EXT_X_STREAM_INF = "#EXT-X-STREAM-INF"
SEGMENT_TAGS = frozenset({EXT_X_DISCONTINUITY, EXT_X_MAP, EXT_X_PROGRAM_DATE_TIME, EXTINF, EXT_X_GAP})
VOD = "VOD"  # EXT-X-PLAYLIST-TYPE of a playlist that never changes

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(text: str) -> dict[str, str]:
    """An attribute list (``KEY=value,KEY="quoted, value"``) as a dict, quotes removed."""
    return {m[1]: m[2].strip('"') for m in _ATTRIBUTE.finditer(text)}


def quotable(*values: str) -> bool:
    """True when every value can be written as a quoted-string (no quote, no newline)."""
    return all('"' not in v and "\n" not in v for v in values)


def format_duration(seconds: float) -> str:
    """An EXTINF duration as written: milliseconds, e.g. ``2.000``."""
    return f"{seconds:.3f}"


def nearest(seconds: float) -> int:
    """Seconds rounded to the nearest integer, halves up (what RFC 8216 4.3.3.1 compares)."""
    return math.floor(seconds + 0.5)


def rounded(seconds: float) -> int:
    """The EXTINF as written (``format_duration``), rounded to the nearest integer, halves up."""
    return nearest(float(format_duration(seconds)))


def rounded_target(seconds: float) -> int:
    """The smallest target duration that covers an EXTINF written as ``format_duration(seconds)``."""
    return max(1, rounded(seconds))
