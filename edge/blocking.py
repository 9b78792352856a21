"""Where every live media playlist ends, learnt from the pipeline, and the requests waiting for it.

The packager publishes ``PlaylistsChanged`` on ``camflow.playlists`` after writing a stream's
playlists; every edge process follows the topic (``follow``, outside any group, from its end).
``LiveEnds`` keeps each (stream, rendition)'s end (msn, part) and wakes what waits for it:

- a blocking playlist reload (``_HLS_msn``/``_HLS_part``, ``reload``) waits on one shared future per
  rendition: an event resolves it once (one wake-up) and expires the cached playlist, so however
  many viewers wait, the playlist is read from the store once (``ObjectCache`` coalesces the
  loads). A waiter whose target the event's end does not reach reads nothing and waits on.
- a request for a part or segment not written yet (``hold``) joins one hold per object; on every
  event of its rendition the hold reads the object once (however many wait), until it is there.

Without events (no bus, or none of the stream's for a while: Kafka down), a waited-for rendition
is re-read once per part target by one task (``fallback_reads``), never once per waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from camflow.bus import Bus
from camflow.bus.base import Message
from camflow.bus.dead import Skips
from camflow.bus.follow import follow_events, keep_following
from camflow.errors import EventDecodeError, NotFound
from camflow.events import TOPIC_PLAYLISTS, PlaylistsChanged
from camflow.hls.errors import PlaylistError
from camflow.hls.lowlatency import End, LowLatencyFacts, facts
from camflow.keys import media_playlist_key
from camflow.log import get_logger
from edge.cache import CachedObject, Fetch, ObjectCache
from edge.hlsquery import BlockingQuery

log = get_logger("edge.blocking")
FOLLOW_RETRY_SECONDS = 2.0
DEFAULT_PART_TARGET = 0.2  # seconds between fallback re-reads when a playlist does not say
MIN_FALLBACK_INTERVAL = 0.1
MAX_FALLBACK_INTERVAL = 1.0
QUIET_PARTS = 5  # part targets without an event of a stream before its waiters fall back to re-reading
MAX_HOLDS = 10_000  # objects waited for at once (beyond: answered at once, as missing)
MAX_RENDITIONS = 10_000  # ends remembered (beyond: the ones nobody waits for are forgotten)


def view_of(cached: CachedObject) -> LowLatencyFacts | None:
    """The playlist's low-latency facts, read once per cached entry; None when it is not a
    low-latency playlist, or not one ``camflow.hls.lowlatency`` can read (logged once per entry):
    it is then served as it is, without blocking reloads or held objects."""
    if "ll" not in cached.derived:
        try:
            cached.derived["ll"] = facts(cached.data.decode("utf-8", "replace"))
        except PlaylistError as exc:
            log.warning("playlist_unreadable", etag=cached.etag, error=str(exc)[:200])
            cached.derived["ll"] = None
    return cast("LowLatencyFacts | None", cached.derived["ll"])


def _end(view: LowLatencyFacts | None) -> End | None:
    return None if view is None else view.end


def reload_wait(view: LowLatencyFacts | None) -> float:
    """How long a blocking reload waits: 3 target durations (2 s ones when the playlist says none)."""
    return 3.0 * ((0 if view is None else view.target_duration) or 2)


def _part_target(view: LowLatencyFacts | None) -> float:
    return (0.0 if view is None else view.part_target) or DEFAULT_PART_TARGET


@dataclass
class BlockingStats:
    events: int = 0  # PlaylistsChanged read from the bus
    wakeups: int = 0  # shared futures resolved (one per rendition and change with waiters)
    reloads_blocked: int = 0  # blocking reloads that had to wait
    reloads_timed_out: int = 0  # answered 503
    holds: int = 0  # object requests that had to wait
    holds_timed_out: int = 0
    holds_gone: int = 0  # answered 404 before the deadline: the playlist showed the object will never exist
    hold_reads: int = 0  # store reads made for held objects (one per hold and event)
    fallback_reads: int = 0  # playlist re-reads made because no event came
    undecodable: int = 0


@dataclass
class _Rendition:
    end: End | None = None
    generation: int = 0  # changes seen (events or fallback re-reads)
    changed: asyncio.Future[None] | None = None
    waiters: int = 0
    last_event: float = 0.0  # monotonic
    part_target: float = DEFAULT_PART_TARGET
    fallback: asyncio.Task[None] | None = None
    rechecked: float = -1e9  # monotonic: the last re-read before refusing a request as too far ahead
    holds: set[str] = field(default_factory=set)


Gone = Callable[[CachedObject], bool]  # given the rendition's playlist: the held object will never exist


@dataclass
class _Hold:
    key: str
    ids: tuple[str, str]
    found: asyncio.Future[CachedObject | None]  # None: it will never exist
    gone: Gone | None = None
    waiters: int = 0
    reading: asyncio.Task[None] | None = None


class LiveEnds:
    def __init__(
        self, cache: ObjectCache, fetch: Fetch, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cache = cache
        self._fetch = fetch
        self._clock = clock
        self._renditions: dict[tuple[str, str], _Rendition] = {}
        self._holds: dict[str, _Hold] = {}
        self.stats = BlockingStats()
        self.following = False  # reading camflow.playlists now
        self._skips = Skips("edge-playlists")

    # -- what the pipeline says --------------------------------------------------------------

    def end(self, stream: str, rendition: str) -> End | None:
        r = self._renditions.get((stream, rendition))
        return None if r is None else r.end

    def holding(self, key: str) -> bool:
        """True while requests wait for the object under ``key`` (a new one joins them, reading nothing)."""
        return key in self._holds

    def may_recheck(self, stream: str, rendition: str) -> bool:
        """Whether a request that looks too far ahead may re-read the playlist before it is refused:
        once per part target per rendition (so refusals cannot make the edge read the store per request)."""
        r = self._rendition(stream, rendition)
        now = self._clock()
        if now - r.rechecked < r.part_target:
            return False
        r.rechecked = now
        return True

    def generation(self, stream: str, rendition: str) -> int:
        return self._rendition(stream, rendition).generation

    def changed(self, event: PlaylistsChanged) -> None:
        self.stats.events += 1
        for end in event.ends:
            self.note(event.stream, end.rendition, End(end.msn, end.part), event=True)

    def note(
        self, stream: str, rendition: str, end: End, *, event: bool = False, expire: bool = True
    ) -> None:
        """The playlist of (stream, rendition) now ends at ``end``: expire its cached copy, wake its
        waiters (one future), and read each object held for it once."""
        r = self._rendition(stream, rendition)
        if event:
            r.last_event = self._clock()
        if end == r.end:
            for key in list(r.holds):  # a segment lags its listing: look again on every event
                self._read_hold(self._holds[key])
            return
        r.end = end
        r.generation += 1
        if expire:
            self._cache.expire(media_playlist_key(stream, rendition))
        if r.changed is not None:
            self.stats.wakeups += 1
            if not r.changed.done():
                r.changed.set_result(None)
            r.changed = None
        for key in list(r.holds):
            self._read_hold(self._holds[key])

    def _rendition(self, stream: str, rendition: str) -> _Rendition:
        ids = (stream, rendition)
        r = self._renditions.get(ids)
        if r is None:
            if len(self._renditions) >= MAX_RENDITIONS:
                for old in [k for k, v in self._renditions.items() if not v.waiters and not v.holds]:
                    del self._renditions[old]
            r = self._renditions[ids] = _Rendition()
        return r

    # -- blocking playlist reload --------------------------------------------------------------

    async def reload(
        self, stream: str, rendition: str, query: BlockingQuery, first: CachedObject, since: int
    ) -> CachedObject | None:
        """The playlist once it holds ``query``'s msn/part (``first`` if it does already); None when
        not within 3 target durations. ``since``: the generation before ``first`` was read."""
        key = media_playlist_key(stream, rendition)
        cached = first
        view = view_of(cached)
        if query.reached(_end(view)):
            return cached
        self.stats.reloads_blocked += 1
        deadline = self._clock() + reload_wait(view)
        r = self._rendition(stream, rendition)
        r.part_target = _part_target(view)
        lagging = False  # the events say the playlist holds it, but the store gave an older one
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                self.stats.reloads_timed_out += 1
                return None
            if lagging:  # no event may come to say so again: read again, once per part target
                await asyncio.sleep(min(r.part_target, remaining))
                if self.may_recheck(stream, rendition):
                    self._cache.expire(key)
            else:
                await self._wait(stream, rendition, since, remaining)
            r = self._rendition(stream, rendition)
            since = r.generation
            if r.end is not None and not query.reached(r.end):
                lagging = False
                continue  # the event says it is not there yet: nothing to read
            cached = await self._fetch(key)
            if query.reached(_end(view_of(cached))):
                return cached
            lagging = query.reached(r.end)

    async def _wait(self, stream: str, rendition: str, since: int, timeout: float) -> None:
        """Until the rendition changes after generation ``since`` (or ``timeout`` seconds)."""
        r = self._rendition(stream, rendition)
        if r.generation != since:
            return
        if r.changed is None:
            r.changed = asyncio.get_running_loop().create_future()
        future = r.changed
        r.waiters += 1
        self._ensure_fallback(stream, rendition, r)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            r.waiters -= 1

    # -- objects not written yet --------------------------------------------------------------

    async def hold(
        self, key: str, stream: str, rendition: str, timeout: float, since: int, gone: Gone | None = None
    ) -> CachedObject | None:
        """The object under ``key`` once it is in the store (read once per change of the rendition,
        however many wait for it); None after ``timeout`` seconds, when too many are held, or as soon as
        ``gone`` says of the rendition's playlist (read before the object, on each change) that the
        object will never exist."""
        h = self._holds.get(key)
        r = self._rendition(stream, rendition)
        if h is None:
            if len(self._holds) >= MAX_HOLDS:
                return None
            h = _Hold(key, (stream, rendition), asyncio.get_running_loop().create_future(), gone)
            self._holds[key] = h
            r.holds.add(key)
            if r.generation != since:  # it changed while the first read was out
                self._read_hold(h)
        self.stats.holds += 1
        h.waiters += 1
        r.waiters += 1
        self._ensure_fallback(stream, rendition, r)
        try:
            return await asyncio.wait_for(asyncio.shield(h.found), timeout)
        except TimeoutError:
            self.stats.holds_timed_out += 1
            return None
        finally:
            h.waiters -= 1
            r.waiters -= 1
            if h.waiters == 0:
                self._drop_hold(h)

    def _drop_hold(self, h: _Hold) -> None:
        self._forget_hold(h)
        if h.reading is not None:
            h.reading.cancel()
        if not h.found.done():
            h.found.cancel()

    def _read_hold(self, h: _Hold) -> None:
        if h.reading is None and not h.found.done():
            h.reading = asyncio.create_task(self._read_held(h), name=f"edge-hold:{h.key}")

    async def _read_held(self, h: _Hold) -> None:
        self.stats.hold_reads += 1
        found: CachedObject | None = None
        try:
            # The playlist first: an object it lists is in the store before it is listed, so once the
            # playlist shows the object will never come, a miss that follows is final.
            never = h.gone is not None and h.gone(await self._fetch(media_playlist_key(*h.ids)))
            try:
                found = await self._fetch(h.key)
            except NotFound:
                if not never:
                    return
                self.stats.holds_gone += 1
        except NotFound:
            return
        except Exception as exc:  # a store error: the next change tries again
            log.warning("hold_read_failed", key=h.key, error=repr(exc))
            return
        finally:
            h.reading = None
        if not h.found.done():
            h.found.set_result(found)
        if h.waiters == 0:
            self._drop_hold(h)
        else:
            self._forget_hold(h)

    def _forget_hold(self, h: _Hold) -> None:
        """Found (or nobody waits): later requests read the cache or start a hold of their own."""
        if self._holds.get(h.key) is h:
            del self._holds[h.key]
        r = self._renditions.get(h.ids)
        if r is not None:
            r.holds.discard(h.key)

    # -- without events -------------------------------------------------------------------------

    def _ensure_fallback(self, stream: str, rendition: str, r: _Rendition) -> None:
        if r.fallback is None or r.fallback.done():
            r.fallback = asyncio.create_task(
                self._fall_back(stream, rendition, r), name=f"edge-ll-fallback:{stream}/{rendition}"
            )

    async def _fall_back(self, stream: str, rendition: str, r: _Rendition) -> None:
        """While anyone waits on the rendition: when no event of it came for a while, re-read its
        playlist once per part target (one read for all its waiters) and wake them if it moved."""
        key = media_playlist_key(stream, rendition)
        while r.waiters > 0:
            interval = min(MAX_FALLBACK_INTERVAL, max(MIN_FALLBACK_INTERVAL, r.part_target))
            await asyncio.sleep(interval)
            quiet = self._clock() - r.last_event > QUIET_PARTS * interval
            if r.waiters == 0 or not (quiet or not self.following):
                continue
            self.stats.fallback_reads += 1
            self._cache.expire(key)
            try:
                view = view_of(await self._fetch(key))
            except Exception as exc:
                log.debug("fallback_read_failed", key=key, error=repr(exc))
                continue
            r.part_target = _part_target(view)
            end = _end(view)
            if end is not None:
                self.note(stream, rendition, end, expire=False)
            for held in list(r.holds):  # segments lag their listing: look again even if unchanged
                self._read_hold(self._holds[held])

    # -- the bus ---------------------------------------------------------------------------------

    async def follow(self, bus: Bus, stop: asyncio.Event) -> None:
        """Read ``camflow.playlists`` until ``stop``; when the bus fails, log it and try again."""
        await keep_following(
            lambda: follow_events(
                bus,
                [TOPIC_PLAYLISTS],
                PlaylistsChanged,
                self.changed,
                stop,
                on_skip=self._undecodable,
                on_open=self._following,
            ),
            stop,
            name="playlists_feed",
            retry_seconds=FOLLOW_RETRY_SECONDS,
        )

    def _following(self, now: bool) -> None:
        self.following = now

    def _undecodable(self, message: Message, exc: EventDecodeError) -> None:
        self.stats.undecodable += 1
        self._skips.note(message, exc)

    async def close(self) -> None:
        tasks = [r.fallback for r in self._renditions.values() if r.fallback is not None]
        tasks += [h.reading for h in self._holds.values() if h.reading is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
