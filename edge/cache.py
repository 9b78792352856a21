"""An in-memory object cache in front of the store: LRU bounded in bytes, with request coalescing.

N concurrent requests for an object that is not cached cause exactly one store read: the first
starts the load, the others await the same future. Immutable objects (segments, init sections)
stay until evicted; playlists carry an expiry (a fraction of their target duration).

An entry's ETag is a hash of its bytes, so every edge replica gives the same ETag for the same
object (a CDN revalidating against another replica still gets 304). ``last_modified`` is when
this edge first saw these bytes: a playlist re-read with unchanged bytes keeps its old time.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

Loader = Callable[[str], Awaitable[bytes]]

# What the last ``get`` in this task was: hit, miss or coalesced (the edge counts requests by it).
CACHE_RESULT: ContextVar[str] = ContextVar("camflow_edge_cache_result", default="none")


@dataclass(frozen=True)
class CachedObject:
    key: str
    data: bytes
    etag: str  # quoted, strong
    last_modified: float  # UNIX seconds, whole
    expires: float | None  # time.monotonic() deadline, None for immutable
    derived: dict[object, object] = field(default_factory=dict, compare=False)  # memos per entry

    @property
    def size(self) -> int:
        return len(self.data)

    def fresh(self, now: float) -> bool:
        return self.expires is None or now < self.expires


Fetch = Callable[[str], Awaitable[CachedObject]]


def content_etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    loads: int = 0
    evictions: int = 0
    uncacheable: int = 0


class ObjectCache:
    """LRU of whole objects, at most ``max_bytes`` in all; a larger object is served, not kept."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache size is {max_bytes} bytes, expected 0 or more")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._clock = clock
        self._entries: OrderedDict[str, CachedObject] = OrderedDict()
        self._bytes = 0
        self._loading: dict[str, asyncio.Task[CachedObject]] = {}
        self._detached: set[asyncio.Task[CachedObject]] = set()  # loads ``expire`` left to finish

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: str) -> CachedObject | None:
        """The cached entry, fresh or not, without touching the LRU order."""
        return self._entries.get(key)

    def fresh(self, key: str) -> CachedObject | None:
        """The entry when it is cached and fresh (a hit, counted), else None; never loads."""
        entry = self._entries.get(key)
        if entry is None or not entry.fresh(self._clock()):
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry

    async def get(self, key: str, load: Loader, ttl: Callable[[bytes], float | None]) -> CachedObject:
        """The object under ``key``: from memory when fresh, else from ``load`` (once, however many ask).

        ``ttl(data)`` gives the seconds the loaded bytes stay fresh, or ``None`` for immutable.
        Whatever ``load`` raises (e.g. ``NotFound``) reaches every waiter and nothing is cached.
        """
        entry = self._entries.get(key)
        if entry is not None and entry.fresh(self._clock()):
            self._entries.move_to_end(key)
            self.stats.hits += 1
            CACHE_RESULT.set("hit")
            return entry
        task = self._loading.get(key)
        if task is None:
            self.stats.misses += 1
            CACHE_RESULT.set("miss")
            task = asyncio.create_task(self._load(key, load, ttl, entry), name=f"cache-load:{key}")
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        else:
            self.stats.coalesced += 1
            CACHE_RESULT.set("coalesced")
        # A waiter that goes away (viewer disconnected) does not cancel the load the others await.
        return await asyncio.shield(task)

    async def _load(
        self, key: str, load: Loader, ttl: Callable[[bytes], float | None], previous: CachedObject | None
    ) -> CachedObject:
        current = asyncio.current_task()
        try:
            data = await load(key)
            if self._loading.get(key) is not current:  # expired meanwhile: serve, do not keep
                return CachedObject(key, data, content_etag(data), float(int(time.time())), 0.0)
            return self._admit(key, data, ttl(data), previous)
        finally:
            self.stats.loads += 1
            if self._loading.get(key) is current:
                del self._loading[key]

    def _admit(self, key: str, data: bytes, ttl: float | None, previous: CachedObject | None) -> CachedObject:
        etag = content_etag(data)
        if previous is not None and previous.etag == etag:
            modified = previous.last_modified
        else:
            modified = float(int(time.time()))
        expires = None if ttl is None else self._clock() + ttl
        obj = CachedObject(key, data, etag, modified, expires)
        self._remove(key)
        if len(data) > self.max_bytes:
            self.stats.uncacheable += 1
            return obj
        self._entries[key] = obj
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            old_key, _ = next(iter(self._entries.items()))
            self._remove(old_key)
            self.stats.evictions += 1
        return obj

    def _remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def invalidate(self, key: str) -> None:
        self._remove(key)

    def expire(self, key: str) -> None:
        """The object changed in the store: the next ``get`` loads it again, even while a load
        started before this call is still in flight (its waiters get what it read; nothing keeps it)."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires is not None:
            self._entries[key] = CachedObject(
                key, entry.data, entry.etag, entry.last_modified, 0.0, entry.derived
            )
        elif entry is not None:
            self._remove(key)
        task = self._loading.pop(key, None)
        if task is not None and not task.done():  # still cancelled at close
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)

    async def close(self) -> None:
        """Cancel loads still in flight (at shutdown) and drop every entry."""
        tasks = [*self._loading.values(), *self._detached]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
        self._bytes = 0


def _retrieve(task: asyncio.Task[CachedObject]) -> None:
    """Mark a failed load's exception as seen: the waiters, if any are left, get it themselves."""
    if not task.cancelled():
        task.exception()
