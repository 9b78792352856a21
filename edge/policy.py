"""How long things stay cached: in the edge's memory and, through ``Cache-Control``, in CDNs and players.

- Segments and init sections never change under their key: ``public, max-age=31536000, immutable``,
  kept in memory until evicted.
- Live media playlists change every segment: ``max-age`` of about half the target duration
  (whole seconds, at least 1), kept in memory for a quarter of it, so a playlist is at most
  ~3/4 of a target duration stale by the time a player sees it.
- Master playlists change only when renditions come or go: the live playlist lifetime.
- VOD playlists (``EXT-X-PLAYLIST-TYPE:VOD``) never change: a day.
- Parts (low-latency HLS) are immutable like segments; the answer to a blocking reload
  (``_HLS_msn``, the query in the CDN's key) lives a second: viewers asking for the same part at
  about the same time share it, and a later one asking the same URL gets the playlist of that
  time, which still holds the part.

``--playlist-max-age`` overrides the live header lifetime for every playlist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from camflow.hls.scan import is_master, media_facts

IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"
BLOCKING_MAX_AGE = 1  # seconds: a blocking reload's answer (its URL names a part that is there for good)
VOD_MAX_AGE = 86400
DEFAULT_TARGET = 2.0  # seconds, when a playlist does not say (a master playlist)
MEMORY_FRACTION = 0.25  # of the target duration, for live playlists in the edge's memory
HEADER_FRACTION = 0.5  # of the target duration, for live playlists' max-age


class TokenCheck(enum.Enum):
    """Where the edge checks viewer tokens.

    ``ALL``: every request (the default; a CDN in front must key its cache by token).
    ``PLAYLISTS``: playlists only; segments and init sections are served to anyone who knows
    their URL (an epoch and a sequence number), so a CDN can share them across all viewers.
    """

    ALL = "all"
    PLAYLISTS = "playlists"


@dataclass(frozen=True)
class PlaylistPolicy:
    max_age_override: float | None = None  # --playlist-max-age

    def memory_ttl(self, data: bytes) -> float:
        """Seconds a playlist stays fresh in the edge's memory."""
        text = data.decode("utf-8", "replace")
        if is_master(text):
            return DEFAULT_TARGET * MEMORY_FRACTION
        facts = media_facts(text)
        if facts.vod:
            return float(VOD_MAX_AGE)
        target = facts.target_duration or DEFAULT_TARGET
        ttl = target * MEMORY_FRACTION
        if self.max_age_override is not None:
            ttl = min(ttl, self.max_age_override)
        return ttl

    def blocking_cache_control(self) -> str:
        return f"public, max-age={BLOCKING_MAX_AGE}"

    def cache_control(self, data: bytes) -> str:
        text = data.decode("utf-8", "replace")
        facts = None if is_master(text) else media_facts(text)  # read once
        if facts is not None and facts.vod:
            return f"public, max-age={VOD_MAX_AGE}"
        if self.max_age_override is not None:
            return f"public, max-age={max(1, int(self.max_age_override))}"
        target = DEFAULT_TARGET if facts is None else facts.target_duration or DEFAULT_TARGET
        return f"public, max-age={max(1, int(target * HEADER_FRACTION))}"
