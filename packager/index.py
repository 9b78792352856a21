"""The packager's side of the recording index: the chunks (``camflow.recordings``) and the day
summaries beside them (``camflow.recording_days``), one writer per stream.

- ``append(stream, appends)``: segments into their chunks; the chunks that changed are written,
  then the summaries of their days (an entry is set from the chunk as it now is, so a summary a
  crash left behind its chunk is repaired by the next append to that chunk, a duplicate included).
- ``save(chunk)``: retention's edit: the chunk written (deleted once empty), then its day's summary
  (deleted once empty).
- ``begin(stream)`` (on the first append, and for every stream retention sweeps): once per stream
  and process, in a task of its own so that the playlists of every stream go on meanwhile: without
  the marker (an index from before summaries existed) every day that has chunks and no summary
  gets one made from its chunks, then the marker is written; from then on readers trust the
  summaries. ``ensure(stream)`` does the same and waits for it; ``close()`` cancels what runs.

A day summary is read from the store the first time this process needs it, or, missing (a new
day) or unreadable, made from that day's chunks. The marker is written again with the first summary
of each new day, so a bucket lifecycle rule (which expires objects by age) never takes it from a
stream that records.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from camflow.errors import NotFound
from camflow.keys import recording_days_marker_key, recording_days_prefix, recordings_prefix
from camflow.log import get_logger
from camflow.recording_days import DaySummary, day_of, parse_day_key, render_marker
from camflow.recording_reader import gather_limited, rebuild_day
from camflow.recordings import IndexChunk, RecordingIndexError, bucket_of, chunk_key, parse_chunk_key
from camflow.store import Store
from packager.output import IndexAppend

INDEX_CONTENT_TYPE = "application/json"
CHUNKS_CACHED = 4  # index chunks kept in memory per stream (the current bucket and a late one)
DAYS_CACHED = 2  # day summaries kept in memory per stream (today and yesterday)
WRITES_AT_ONCE = 8


class IndexWriter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._chunks: dict[str, dict[tuple[str, int], IndexChunk]] = {}
        self._days: dict[str, dict[int, DaySummary]] = {}
        self._ensured: set[str] = set()
        self._backfills: dict[str, asyncio.Task[None]] = {}
        self._unwritten: set[tuple[str, int]] = set()  # summaries made from chunks, not yet in the store
        self.backfilled_days = 0
        self._log: Any = get_logger("packager.index")

    def clear(self) -> None:
        """Forget every stream (a rebalance: another packager may have written them meanwhile). A
        backfill under way goes on: it only adds what is missing, whoever owns the stream."""
        self._chunks.clear()
        self._days.clear()
        self._ensured.clear()
        self._unwritten.clear()

    def begin(self, stream: str) -> None:
        """Backfill the stream's day summaries in the background, once per process (see above)."""
        if stream in self._ensured or stream in self._backfills:
            return
        task = asyncio.create_task(self.ensure(stream), name=f"index-backfill-{stream}")
        self._backfills[stream] = task
        task.add_done_callback(functools.partial(self._backfilled, stream))

    def _backfilled(self, stream: str, task: asyncio.Task[None]) -> None:
        self._backfills.pop(stream, None)
        if not task.cancelled() and task.exception() is not None:  # tried again by the next begin()
            self._log.warning(
                "recording index backfill failed", stream_id=stream, error=repr(task.exception())
            )

    async def close(self) -> None:
        tasks = list(self._backfills.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def append(self, stream: str, appends: list[IndexAppend], *, summarise: bool = True) -> None:
        """``summarise``: False where another region owns the stream (``packager.ownership``): the
        chunks (under this region's epoch) are written, the day summaries left to the owner."""
        if not appends:
            return
        if summarise:
            self.begin(stream)
        touched: dict[str, IndexChunk] = {}
        changed: set[str] = set()
        for a in appends:
            chunk = await self._chunk(stream, a.epoch, a.segment.wall_clock)
            key = chunk_key(chunk)
            touched[key] = chunk
            if chunk.add(a.segment, a.renditions):
                changed.add(key)
        puts = (self._store.put(key, touched[key].render(), INDEX_CONTENT_TYPE) for key in sorted(changed))
        await gather_limited(puts, WRITES_AT_ONCE)
        if summarise:
            await self._summarise(stream, touched.values())

    async def save(self, chunk: IndexChunk) -> bool:
        """Write a chunk retention edited (delete it when it has no segment left), then its day's
        summary; True when the chunk was deleted."""
        if chunk.segments:
            await self._store.put(chunk_key(chunk), chunk.render(), INDEX_CONTENT_TYPE)
        else:
            await self._store.delete(chunk_key(chunk))
            self._chunks.get(chunk.stream, {}).pop((chunk.epoch, chunk.bucket), None)
        await self._summarise(chunk.stream, [chunk])
        return not chunk.segments

    def cached_chunk(self, stream: str, epoch: str, bucket: int) -> IndexChunk | None:
        """The in-memory index chunk (retention edits it there, so the next append keeps the edit)."""
        return self._chunks.get(stream, {}).get((epoch, bucket))

    async def ensure(self, stream: str) -> None:
        if stream in self._ensured:
            return
        if await self._store.head(recording_days_marker_key(stream)) is None:
            await self._backfill(stream)
        self._ensured.add(stream)

    async def _backfill(self, stream: str) -> None:
        have = {parse_day_key(stream, k) for k in await self._store.list(recording_days_prefix(stream))}
        days = set()
        for key in await self._store.list(recordings_prefix(stream)):
            parsed = parse_chunk_key(stream, key)
            if parsed is not None and day_of(parsed[0]) not in have:
                days.add(day_of(parsed[0]))
        made = 0
        for day in sorted(days):
            if day in self._days.get(stream, {}):
                continue  # the appends write this one (from its chunks, the first time)
            summary = await rebuild_day(self._store, stream, day)
            if summary.chunks:
                await self._store.put(summary.key, summary.render(), INDEX_CONTENT_TYPE)
                made += 1
        await self._store.put(recording_days_marker_key(stream), render_marker(), INDEX_CONTENT_TYPE)
        self.backfilled_days += made
        if made:
            self._log.info("recording index backfilled", stream_id=stream, days=made)

    async def _summarise(self, stream: str, chunks: Any) -> None:
        dirty: dict[int, DaySummary] = {}
        for chunk in chunks:
            summary = await self._day(stream, day_of(chunk.bucket))
            if summary.set_chunk(chunk) or (stream, summary.day) in self._unwritten:
                dirty[summary.day] = summary
        for summary in dirty.values():
            if summary.chunks:
                await self._store.put(summary.key, summary.render(), INDEX_CONTENT_TYPE)
            else:
                await self._store.delete(summary.key)
            if (stream, summary.day) in self._unwritten and summary.chunks and stream in self._ensured:
                # a new day of a stream whose summaries are complete: the marker written again, so an
                # S3 lifecycle rule (expiry by age) never takes it while the stream records
                await self._store.put(recording_days_marker_key(stream), render_marker(), INDEX_CONTENT_TYPE)
            self._unwritten.discard((stream, summary.day))

    async def _day(self, stream: str, day: int) -> DaySummary:
        cache = self._days.setdefault(stream, {})
        summary = cache.get(day)
        if summary is not None:
            return summary
        key = DaySummary(stream, day).key
        try:
            summary = DaySummary.parse(await self._store.get(key))
        except NotFound:
            summary = await rebuild_day(self._store, stream, day)
            self._unwritten.add((stream, day))
        except RecordingIndexError as exc:
            self._log.warning("day summary unreadable; rebuilt", stream_id=stream, key=key, error=str(exc))
            summary = await rebuild_day(self._store, stream, day)
            self._unwritten.add((stream, day))
        cache[day] = summary
        while len(cache) > DAYS_CACHED:
            oldest = min(d for d in cache if d != day)
            del cache[oldest]
            self._unwritten.discard((stream, oldest))
        return summary

    async def _chunk(self, stream: str, epoch: str, wall_clock: float) -> IndexChunk:
        bucket = bucket_of(wall_clock)
        cache = self._chunks.setdefault(stream, {})
        chunk = cache.get((epoch, bucket))
        if chunk is not None:
            return chunk
        chunk = IndexChunk(stream, epoch, bucket)
        try:
            chunk = IndexChunk.parse(await self._store.get(chunk_key(chunk)))
        except NotFound:
            pass
        except RecordingIndexError as exc:
            self._log.warning("index chunk unreadable; rewritten", stream_id=stream, error=str(exc))
        cache[(epoch, bucket)] = chunk
        while len(cache) > CHUNKS_CACHED:
            del cache[min(cache, key=lambda k: k[1])]
        return chunk
