"""Retention: recorded segments older than a stream's retention are deleted, in batches.

Run by the packager on a schedule (``Packager.run``), for the streams it owns, so the index
chunks it edits are the ones it appends to (one writer per stream). A sweep, per stream:

1. For each index chunk whose bucket began before the cutoff (now - retention), drop the
   segments that ended before the cutoff, except those a live or DVR playlist still names
   (``StreamPackager.named``): they go in a later sweep, once the window moved on; and except
   those a locked event covers (``packager.locks``): they stay until the event is deleted.
2. Write the chunk back (or delete it when empty), then its day summary
   (``packager.index.IndexWriter.save``), *before* deleting the objects: a reader of the index
   never gets a key that is gone. A crash between the two leaves orphans,
   which the S3 lifecycle rule (or the next epoch clean-up) removes.
3. Delete the segment objects, and once no chunk of an epoch is left and no playlist names
   it, everything else under the epoch (init sections, thumbnails, skipped seqs).

At most ``batch`` objects are deleted per sweep; the rest wait for the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from camflow.errors import NotFound
from camflow.keys import recordings_prefix, segment_key, stream_prefix, thumbnail_key
from camflow.log import get_logger
from camflow.recordings import BUCKET_SECONDS, IndexChunk, RecordingIndexError, parse_chunk_key
from camflow.store import Store
from packager.index import IndexWriter
from packager.locks import EventLocks

DEFAULT_BATCH = 500
LIFECYCLE_MARGIN_DAYS = 1  # the bucket rule is a backstop: it runs a day after the sweeper would


@runtime_checkable
class LifecycleStore(Protocol):
    """A store that can have the server expire objects itself (S3 lifecycle)."""

    async def set_expiration(self, prefix: str, days: int) -> None: ...


@dataclass
class RetentionStats:
    sweeps: int = 0
    segments_deleted: int = 0
    objects_deleted: int = 0
    chunks_deleted: int = 0
    kept_named: int = 0
    kept_locked: int = 0  # segments past the retention an event's lock kept, last sweep of each stream
    events_expired: int = 0  # unlocked events deleted with their footage
    objects_locked: int = 0  # objects tagged for the lifecycle backstop to leave
    errors: int = 0


class Retention:
    """``retain`` seconds for every stream, ``per_stream`` overrides; None keeps forever."""

    def __init__(
        self,
        store: Store,
        *,
        retain: float | None,
        per_stream: dict[str, float],
        batch: int = DEFAULT_BATCH,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retain = retain
        self._per_stream = per_stream
        self._batch = batch
        self._wall_clock = wall_clock
        self.stats = RetentionStats()
        self._log: Any = get_logger("packager.retention")
        self._locks = EventLocks(store, self._log)
        self._kept_locked: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self._retain is not None or bool(self._per_stream)

    def retention_of(self, stream: str) -> float | None:
        return self._per_stream.get(stream, self._retain)

    async def install_lifecycle(self) -> bool:
        """With an S3 store and a global retention: an equivalent bucket rule (whole days, plus a margin)."""
        if self._retain is None or not isinstance(self._store, LifecycleStore):
            return False
        longest = max([self._retain, *self._per_stream.values()])
        days = -(-int(longest) // 86400) + LIFECYCLE_MARGIN_DAYS
        await self._store.set_expiration("streams/", days)
        self._log.info("lifecycle rule installed", prefix="streams/", days=days)
        return True

    async def sweep(
        self,
        stream: str,
        named: set[tuple[str, int]],
        index: IndexWriter,
    ) -> int:
        """One pass over ``stream``; returns the number of objects deleted."""
        retain = self.retention_of(stream)
        if retain is None:
            return 0
        self.stats.sweeps += 1
        index.begin(stream)  # a stream recorded before day summaries existed gets them
        cutoff = self._wall_clock() - retain
        deleted = 0
        locks, expired = await self._locks.scan(stream, cutoff)
        self.stats.events_expired += expired
        keys = await self._store.list(recordings_prefix(stream))
        epochs_left: dict[str, int] = {}
        candidates: list[tuple[str, int, str]] = []
        for key in keys:
            parsed = parse_chunk_key(stream, key)
            if parsed is None:
                continue
            bucket, epoch = parsed
            epochs_left[epoch] = epochs_left.get(epoch, 0) + 1
            if bucket < cutoff:
                candidates.append((key, bucket, epoch))
        for key, bucket, epoch in sorted(candidates, key=lambda c: c[1]):
            if deleted >= self._batch:
                break
            chunk = index.cached_chunk(stream, epoch, bucket) or await self._load(key)
            if chunk is None:
                continue
            keep = {seq for (e, seq) in named if e == epoch}
            locked = [s for s in chunk.segments.values() if s.end <= cutoff and locks.keeps(s)]
            self.stats.objects_locked += await self._locks.tag(stream, epoch, locked)
            gone = chunk.remove_before(cutoff, keep | {s.seq for s in locked})
            budget = max(1, (self._batch - deleted) // max(1, len(chunk.renditions) + 1))
            if len(gone) > budget:  # put back what this batch will not delete
                for s in gone[budget:]:
                    chunk.segments[s.seq] = s
                gone = gone[:budget]
            self.stats.kept_named += sum(1 for s in chunk.segments.values() if s.end <= cutoff)
            if not gone:
                continue
            if await index.save(chunk):  # the chunk and its day summary, before the objects
                self.stats.chunks_deleted += 1
                epochs_left[epoch] -= 1
            for s in gone:
                for rendition in s.renditions:
                    await self._store.delete(segment_key(stream, epoch, rendition, s.seq))
                    deleted += 1
                await self._store.delete(thumbnail_key(stream, epoch, s.seq))
            self.stats.segments_deleted += len(gone)
        for epoch, left in epochs_left.items():
            if left == 0 and not any(e == epoch for e, _ in named) and deleted < self._batch:
                for key in await self._store.list(f"{stream_prefix(stream)}{epoch}/"):
                    await self._store.delete(key)
                    deleted += 1
        self.stats.objects_deleted += deleted
        self._kept_locked[stream] = locks.segments
        self.stats.kept_locked = sum(self._kept_locked.values())
        self._locks.report(locks)
        if deleted:
            self._log.info("retention swept", stream_id=stream, deleted=deleted, cutoff=round(cutoff, 3))
        return deleted

    async def _load(self, key: str) -> IndexChunk | None:
        try:
            return IndexChunk.parse(await self._store.get(key))
        except NotFound:
            return None
        except RecordingIndexError as exc:
            self.stats.errors += 1
            self._log.warning("index chunk unreadable; left alone", key=key, error=str(exc))
            return None


__all__ = ["BUCKET_SECONDS", "LifecycleStore", "Retention", "RetentionStats"]
