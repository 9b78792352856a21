"""Date-times as HLS writes them (EXT-X-PROGRAM-DATE-TIME) and as camflow reads them back.

Every wall-clock time camflow writes (playlists, the recording index's JSON, the edge's
``?start=``/``?end=``) is ISO 8601 UTC with milliseconds, e.g. ``2026-11-21T10:15:00.123Z``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from camflow.hls.errors import DateTimeError


def format_date_time(unix_seconds: float) -> str:
    """UNIX seconds as ISO 8601 UTC with milliseconds, e.g. ``2026-11-21T10:15:00.123Z``."""
    total_ms = round(unix_seconds * 1000)
    dt = datetime.fromtimestamp(total_ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{total_ms % 1000:03d}Z"


def parse_date_time(text: str) -> float:
    """An ISO 8601 time with a zone (``Z``, ``z`` or ``+01:00``) as UNIX seconds.

    Raises ``DateTimeError`` (a ValueError) naming the text when it is not one.
    """
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise DateTimeError(f"time {text!r} is not ISO 8601 like 2026-11-21T10:15:00.123Z") from exc
    if dt.tzinfo is None:
        raise DateTimeError(f"time {text!r} has no zone: expected e.g. 2026-11-21T10:15:00Z")
    value = dt.timestamp()
    if not math.isfinite(value):
        raise DateTimeError(f"time {text!r} is out of range")
    return value


def read_date_time(text: str) -> float | None:
    """``parse_date_time`` for readers that skip what they cannot read: None instead of an error."""
    try:
        return parse_date_time(text)
    except (DateTimeError, OverflowError):
        return None
