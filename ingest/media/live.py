"""The live fan-out: each stream's video access units, as they arrive, to every live viewer (WHEP).
Pure logic, no I/O.

The media path (``ingest.media.publisher``) pushes every unit here before it segments it, so a viewer
gets the camera's H.264 as it arrived (no decode, no encode) with no segment or part in between. A
``LiveFeed`` keeps the units since the last IDR (bounded: ``max_cached_units``, ``max_cached_bytes``;
a longer GOP drops the cache until the next IDR), so a new viewer starts at once on a keyframe
instead of waiting for the next one. Those cached units reach the viewer as a burst with timestamps
one tick apart (``ViewerClock``): it decodes them all and shows the newest picture straight away, and
the live units that follow keep the camera's own spacing.

Each viewer (``LiveViewer``) has a bounded queue: a viewer that falls behind loses what is queued,
counted, and resumes on the next IDR (never on a picture whose references it lacks). A new
publisher of the stream (a camera that reconnects) keeps the feed and its viewers: they wait for
the new publisher's first IDR and their clock continues from where it was (``ViewerClock.resync``).

Audio goes beside the video as Opus packets (``push_opus``: a WHIP publisher's own, or the stream's
AAC encoded once by ``ingest.media.live_audio``), to each viewer once its video has started, in a
queue of ``AUDIO_QUEUE`` that drops its oldest packet when the viewer is behind.

``LiveFeeds`` is one ingest process's feeds, by stream name; the WHEP endpoint
(``ingest.sources.whip.whep``) subscribes to them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ingest.media.units import AccessUnit

START_CODE = b"\x00\x00\x00\x01"
MAX_CACHED_UNITS = 600  # 20 s at 30 fps: longer GOPs are not cached (viewers wait for the next IDR)
MAX_CACHED_BYTES = 16 * 1024 * 1024
VIEWER_QUEUE = 90  # units a viewer may be behind (3 s at 30 fps) before it drops to the next IDR
FRAME_TICKS = 3000  # 90 kHz ticks between a resumed viewer's last unit and its next (one 30 fps frame)
AUDIO_QUEUE = 50  # Opus packets a viewer may be behind (1 s of 20 ms packets); older ones are dropped
OPUS_TICKS = 960  # 48 kHz ticks of one 20 ms Opus packet


@dataclass(frozen=True)
class LiveFrame:
    """One access unit as a viewer's packetizer takes it: Annex B bytes (built once per unit, shared)."""

    pts: int  # 90 kHz, the source's
    data: bytes  # the NAL units, each after a 4-byte start code
    is_idr: bool


def annexb(unit: AccessUnit) -> LiveFrame:
    return LiveFrame(unit.pts, b"".join(START_CODE + nal for nal in unit.nalus if nal), unit.is_idr)


@dataclass
class ViewerCounters:
    frames: int = 0  # units handed to the viewer
    dropped: int = 0  # units lost because the viewer was behind, or before its first IDR
    overflows: int = 0  # times its queue overflowed
    resyncs: int = 0  # times it waited for an IDR (start without a cache, overflow, new publisher)
    audio_packets: int = 0  # Opus packets handed to the viewer
    audio_dropped: int = 0  # Opus packets lost because the viewer was behind


class ViewerClock:
    """A viewer's output timestamps (90 kHz): strictly increasing across catch-up bursts, a slow viewer's
    drops and a new publisher's timeline."""

    def __init__(self) -> None:
        self._offset: int | None = None
        self.last: int | None = None

    def catch_up(self, frames: list[LiveFrame]) -> list[int]:
        """Timestamps for a burst of cached ``frames`` (oldest first): one tick apart, ending where the
        newest one's live successors continue with the camera's spacing."""
        start = 0 if self.last is None else self.last + FRAME_TICKS
        stamps = [start + i for i in range(len(frames))]
        if frames:
            self._offset = stamps[-1] - frames[-1].pts
            self.last = stamps[-1]
        return stamps

    def resync(self) -> None:
        """The next frame starts a new run (after drops, or on a new publisher's timeline)."""
        self._offset = None

    def stamp(self, frame: LiveFrame) -> int:
        if self._offset is None:
            start = 0 if self.last is None else self.last + FRAME_TICKS
            self._offset = start - frame.pts
        out = frame.pts + self._offset
        if self.last is not None and out <= self.last - 10 * 90_000:  # the source's clock went back
            self._offset = self.last + FRAME_TICKS - frame.pts
            out = frame.pts + self._offset
        self.last = out if self.last is None else max(self.last, out)
        return out


class LiveViewer:
    """One viewer's queue of frames. ``on_ready`` (set by its transport) is called when a frame is
    queued or the viewer ends."""

    def __init__(self, feed: LiveFeed, max_queue: int = VIEWER_QUEUE) -> None:
        self.feed = feed
        self.max_queue = max_queue
        self.counters = ViewerCounters()
        self.clock = ViewerClock()
        self.ended = False
        self.on_ready: Callable[[], None] | None = None
        self.on_audio: Callable[[], None] | None = None
        self._queue: deque[tuple[LiveFrame, int]] = deque()
        self._wants_idr = True
        self._audio: deque[tuple[bytes, int]] = deque()
        self._audio_offset: int | None = None
        self._audio_last: int | None = None

    def _start(self, cached: list[LiveFrame]) -> None:
        if cached:
            for frame, stamp in zip(cached, self.clock.catch_up(cached), strict=True):
                self._queue.append((frame, stamp))
            self._wants_idr = False
        else:
            self.counters.resyncs += 1

    def offer(self, frame: LiveFrame) -> None:
        if self.ended:
            return
        if self._wants_idr:
            if not frame.is_idr:
                self.counters.dropped += 1
                return
            self._wants_idr = False
        if len(self._queue) >= self.max_queue:
            self.counters.overflows += 1
            self.counters.resyncs += 1
            self.counters.dropped += len(self._queue)
            self._queue.clear()
            self.clock.resync()
            self._wants_idr = not frame.is_idr
            if self._wants_idr:
                self.counters.dropped += 1
                return
        self._queue.append((frame, self.clock.stamp(frame)))
        self._wake()

    def offer_audio(self, data: bytes, pts: int) -> None:
        """One Opus packet (``pts``: 48 kHz, the source's): queued once the viewer's video has started,
        the oldest dropped when it is ``AUDIO_QUEUE`` behind."""
        if self.ended or self._wants_idr:
            return
        if self._audio_offset is None:
            start = 0 if self._audio_last is None else self._audio_last + OPUS_TICKS
            self._audio_offset = start - pts
        stamp = pts + self._audio_offset
        if self._audio_last is not None and stamp <= self._audio_last:  # the source's clock went back
            self._audio_offset = self._audio_last + OPUS_TICKS - pts
            stamp = self._audio_last + OPUS_TICKS
        self._audio_last = stamp
        if len(self._audio) >= AUDIO_QUEUE:
            self._audio.popleft()
            self.counters.audio_dropped += 1
        self._audio.append((data, stamp))
        if self.on_audio is not None:
            self.on_audio()

    def take_audio(self) -> tuple[bytes, int] | None:
        """The next Opus packet and its output timestamp (48 kHz); None when none is queued."""
        if not self._audio:
            return None
        self.counters.audio_packets += 1
        return self._audio.popleft()

    def restart(self) -> None:
        """A new publisher of the stream: what is queued belongs to the old one; wait for the new IDR."""
        self.counters.dropped += len(self._queue)
        self._queue.clear()
        self._audio.clear()
        self._audio_offset = None
        self.clock.resync()
        self._wants_idr = True
        self.counters.resyncs += 1

    def take(self) -> tuple[LiveFrame, int] | None:
        """The next frame and its output timestamp (90 kHz); None when none is queued."""
        if not self._queue:
            return None
        self.counters.frames += 1
        return self._queue.popleft()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """The viewer leaves (or its feed is gone): nothing more is queued."""
        if not self.ended:
            self.ended = True
            self._queue.clear()
            self._audio.clear()
            self.feed.viewers.discard(self)
            self._wake()
            if self.on_audio is not None:
                self.on_audio()

    def _wake(self) -> None:
        if self.on_ready is not None:
            self.on_ready()


class LiveFeed:
    """One stream's live video: the units since the last IDR, and its viewers."""

    def __init__(
        self,
        stream: str,
        codec: str,
        *,
        max_cached_units: int = MAX_CACHED_UNITS,
        max_cached_bytes: int = MAX_CACHED_BYTES,
    ) -> None:
        self.stream = stream
        self.codec = codec
        self.live = False  # a publisher is pushing units
        self.generation = 0  # its publisher's number: a replaced publisher's late units are ignored
        self.max_cached_units = max_cached_units
        self.max_cached_bytes = max_cached_bytes
        self.viewers: set[LiveViewer] = set()
        self.cache_overflows = 0
        self.request_keyframe: Callable[[], None] | None = None  # the source's, when it can be asked
        self._cache: list[LiveFrame] = []
        self._cache_bytes = 0
        self._caching = False  # False until an IDR, and after an overflow until the next IDR
        self._keyframe_asked: float | None = None  # when the source was last asked (want_keyframe)
        self.keyframe_requests = 0

    def push(self, unit: AccessUnit, generation: int) -> None:
        """A unit of publisher ``generation`` (``begin``'s number; another one's units are ignored)."""
        if generation != self.generation or not self.live:
            return
        frame = annexb(unit)
        if frame.is_idr:
            self._cache, self._cache_bytes, self._caching = [], 0, True
        if self._caching:
            if (
                len(self._cache) >= self.max_cached_units
                or self._cache_bytes + len(frame.data) > self.max_cached_bytes
            ):
                self.cache_overflows += 1
                self._cache, self._cache_bytes, self._caching = [], 0, False
            else:
                self._cache.append(frame)
                self._cache_bytes += len(frame.data)
        for viewer in list(self.viewers):
            viewer.offer(frame)

    def want_keyframe(self, now: float, interval: float) -> bool:
        """A viewer lost a picture (its PLI): ask the source for an IDR, at most once per ``interval``
        seconds (``now``: a monotonic clock); True when it was asked."""
        if self.request_keyframe is None:
            return False
        if self._keyframe_asked is not None and now - self._keyframe_asked < interval:
            return False
        self._keyframe_asked = now
        self.keyframe_requests += 1
        self.request_keyframe()
        return True

    def push_opus(self, data: bytes, pts: int, generation: int) -> None:
        """An Opus packet (20 ms, ``pts`` on 48 kHz) of publisher ``generation``, to every viewer."""
        if generation != self.generation or not self.live:
            return
        for viewer in list(self.viewers):
            viewer.offer_audio(data, pts)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def subscribe(self, max_queue: int = VIEWER_QUEUE) -> LiveViewer:
        """A new viewer, its queue primed with the cached units (from the last IDR) when there are any
        (the newest ``max_queue`` of them would not start on the IDR: it then waits for the next)."""
        viewer = LiveViewer(self, max_queue)
        cached = self._cache if len(self._cache) <= max_queue else []
        viewer._start(list(cached))
        self.viewers.add(viewer)
        if not cached and self.request_keyframe is not None:
            self.request_keyframe()
        return viewer

    def begin(self, codec: str) -> int:
        """A publisher starts (possibly replacing one): its units follow, on a timeline of their own.
        Returns its generation, for ``push`` and ``end``."""
        self.generation += 1
        self.codec = codec
        self.live = True
        self._cache, self._cache_bytes, self._caching = [], 0, False
        for viewer in list(self.viewers):
            viewer.restart()
        return self.generation

    def end(self, generation: int) -> None:
        """Publisher ``generation`` ended (a replaced one's end changes nothing): nothing is cached;
        viewers stay (a reconnecting camera continues)."""
        if generation != self.generation:
            return
        self.live = False
        self.request_keyframe = None
        self._cache, self._cache_bytes, self._caching = [], 0, False


class LiveFeeds:
    """One ingest process's live feeds, by stream (a feed outlives its publishers while it has viewers)."""

    def __init__(self) -> None:
        self.feeds: dict[str, LiveFeed] = {}

    def publishing(self, stream: str, codec: str) -> tuple[LiveFeed, int]:
        """The feed a new publisher of ``stream`` pushes to, and the publisher's generation in it."""
        feed = self.feeds.get(stream)
        if feed is None:
            feed = self.feeds[stream] = LiveFeed(stream, codec)
        return feed, feed.begin(codec)

    def ended(self, feed: LiveFeed, generation: int) -> None:
        """Publisher ``generation`` of ``feed`` ended; the feed goes with its last viewer (``forget``)."""
        feed.end(generation)
        self.forget(feed)

    def forget(self, feed: LiveFeed) -> None:
        if not feed.live and not feed.viewers and self.feeds.get(feed.stream) is feed:
            del self.feeds[feed.stream]

    def get(self, stream: str) -> LiveFeed | None:
        return self.feeds.get(stream)

    @property
    def viewers(self) -> int:
        return sum(len(feed.viewers) for feed in self.feeds.values())
