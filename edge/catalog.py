"""What the edge knows about each stream, derived from the playlists in the store (through the cache).

State, resolution, bitrate and frame rate come from the master playlist (RESOLUTION, BANDWIDTH,
FRAME-RATE of the top variant; without FRAME-RATE, the newest segment's samples over its
duration); the age of the last segment from the newest
PROGRAM-DATE-TIME plus its duration in that variant's media playlist; ``offline`` from
EXT-X-ENDLIST or a last segment older than three target durations.

Stream names are refreshed in the background (``refresh``) without listing every object under
``streams/`` (on S3 that is every segment kept: thousands of requests each time): the store
names the folders directly under ``streams/`` (one delimited listing, ``Browsable.children``).
A folder whose master playlist is not written yet (or was deleted) is a name with no summary
(``summary`` is None), which the stream list and the API skip. A store that cannot name
folders is listed in full.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from camflow.errors import MediaFormatError, NotFound
from camflow.hls.scan import master_variants, media_facts
from camflow.keys import is_rendition, is_stream_name, master_playlist_key, media_playlist_key
from camflow.mp4 import iter_boxes
from camflow.store import Store
from camflow.store.base import Browsable
from edge.cache import Fetch
from edge.errors import BadPath
from edge.paths import LIVE_PREFIX, parse_live_path

STALE_TARGETS = 3.0  # a live stream whose last segment is older than this many target durations is offline
MIN_STALE = 10.0


def sample_count(segment: bytes) -> int:
    """Samples in every fragment's first track run (``moof/traf/trun`` sample_count)."""
    total = 0
    for kind, offset, size in iter_boxes(segment):
        if kind != b"moof":
            continue
        for child, c_off, c_size in iter_boxes(segment, offset + 8, offset + size):
            if child != b"traf":
                continue
            for box, b_off, b_size in iter_boxes(segment, c_off + 8, c_off + c_size):
                if box == b"trun" and b_size >= 16:
                    total += int.from_bytes(segment[b_off + 12 : b_off + 16], "big")
            break  # the first track
    return total


class StreamState(enum.Enum):
    LIVE = "live"
    OFFLINE = "offline"


@dataclass(frozen=True)
class StreamSummary:
    stream: str
    state: StreamState
    renditions: list[str]
    resolution: str | None
    bitrate: int | None  # bits/s of the top variant (BANDWIDTH)
    fps: float | None
    last_segment_age: float | None  # seconds since the newest segment's media ended
    target_duration: float | None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        return out


class StreamCatalog:
    def __init__(self, store: Store, fetch: Fetch, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._fetch = fetch
        self._clock = clock
        self._names: list[str] = []

    @property
    def names(self) -> list[str]:
        return list(self._names)

    async def refresh(self) -> list[str]:
        """The streams in the store: the folders under ``streams/`` (else the keys of master playlists)."""
        if isinstance(self._store, Browsable):
            folders = await self._store.children("streams/")
            self._names = sorted(n for n in folders if is_stream_name(n))
            return self.names
        keys = await self._store.list("streams/")
        names = sorted(
            {
                parts[1]
                for parts in (k.split("/") for k in keys)
                if len(parts) == 3 and parts[2] == "master.m3u8" and is_stream_name(parts[1])
            }
        )
        self._names = names
        return names

    async def _segment_fps(self, stream: str, uri: str, duration: float) -> float | None:
        """Frames per second of the newest segment: its samples (trun) over its EXTINF duration."""
        try:
            key = parse_live_path(f"{LIVE_PREFIX}{stream}/{uri}").key
            segment = await self._fetch(key)
        except (BadPath, NotFound):
            return None
        memo = segment.derived.get("fps")
        if isinstance(memo, float):
            return memo
        try:
            samples = sample_count(segment.data)
        except MediaFormatError:
            return None
        fps = round(samples / duration, 2) if samples and duration > 0 else None
        if fps is not None:
            segment.derived["fps"] = fps
        return fps

    async def summary(self, stream: str) -> StreamSummary | None:
        """The stream's summary, or None when it has no master playlist."""
        try:
            master = await self._fetch(master_playlist_key(stream))
        except NotFound:
            return None
        variants = master_variants(master.data.decode("utf-8", "replace"))
        renditions = [v.uri.removesuffix(".m3u8") for v in variants]
        top = variants[0] if variants else None
        last_age: float | None = None
        target: float | None = None
        fps = top.frame_rate if top else None
        ended = False
        if top is not None and is_rendition(top.uri.removesuffix(".m3u8")):
            try:
                media = await self._fetch(media_playlist_key(stream, top.uri.removesuffix(".m3u8")))
            except NotFound:
                media = None
            if media is not None:
                facts = media_facts(media.data.decode("utf-8", "replace"))
                target, ended = facts.target_duration, facts.ended
                if facts.last_pdt is not None:
                    end = facts.last_pdt + (facts.last_duration or 0.0)
                    last_age = round(max(0.0, self._clock() - end), 3)
                if fps is None and facts.last_uri and facts.last_duration:
                    fps = await self._segment_fps(stream, facts.last_uri, facts.last_duration)
        stale = max(MIN_STALE, STALE_TARGETS * (target or 2.0))
        live = not ended and last_age is not None and last_age <= stale
        return StreamSummary(
            stream=stream,
            state=StreamState.LIVE if live else StreamState.OFFLINE,
            renditions=renditions,
            resolution=f"{top.width}x{top.height}" if top and top.width and top.height else None,
            bitrate=top.bandwidth if top else None,
            fps=fps,
            last_segment_age=last_age,
            target_duration=target,
        )
