"""Reading the recording index by time: the one range resolver of the recordings list, VOD
playlists, clip export and the timeline.

``RecordingReader(store)``:

- ``covered(stream, start, end)``: the covered time ranges (contiguous segments of one epoch
  merged) that overlap ``[start, end)`` (default: everything), cut to the segments in it;
- ``runs(stream, start, end)``: the segments overlapping ``[start, end)``, one ``EpochRun`` per
  epoch, with their renditions (what a VOD playlist or a clip is made of).

Both read the day summaries (``camflow.recording_days``), so the store requests per query are
bounded by the window, not by the history kept:

- one LIST of the stream's ``recording-days/`` folder (one page: up to 1000 days), which also
  tells whether the index has its summaries (the marker); for a window of at most three days of
  a stream whose marker was listed in the last ``MARKER_TTL`` seconds, no LIST;
- one GET per day summary in the window (``days_between``), ``concurrency`` at once;
- ``runs``: one GET per chunk with a span in the window (per epoch: window / 600 s + 2);
- ``covered``: one GET per chunk with a span across ``start`` or ``end`` (its segments are cut
  to the window; at most two per epoch and edge day).

An index without the summaries' marker (written before they existed, not yet backfilled by the
packager) is read as before: every chunk key listed, the chunks of the window read (slow, right).
A day summary that cannot be parsed is rebuilt in memory from that day's chunks (logged).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from camflow.errors import NotFound
from camflow.keys import (
    recording_day_key,
    recording_days_marker_key,
    recording_days_prefix,
    recording_index_key,
    recordings_prefix,
)
from camflow.log import get_logger
from camflow.recording_days import (
    DAY_SECONDS,
    DaySummary,
    Span,
    day_of,
    format_day,
    merge_spans,
    parse_day_key,
)
from camflow.recordings import (
    BUCKET_SECONDS,
    CoveredRange,
    EpochRun,
    IndexChunk,
    RecordingIndexError,
    buckets_between,
    covered_runs,
    format_bucket,
    parse_chunk_key,
    select,
)
from camflow.store.base import Store

DEFAULT_CONCURRENCY = 16
MARKER_TTL = 60.0  # seconds a stream's marker, once listed, is taken to be there without listing again
DIRECT_DAYS = 2  # a window of at most this many days (plus one) reads its days without a listing
T = TypeVar("T")


class RecordingReader:
    def __init__(self, store: Store, *, concurrency: int = DEFAULT_CONCURRENCY, log: Any = None) -> None:
        self._store = store
        self._concurrency = concurrency
        self._marked: dict[str, float] = {}  # stream -> when its marker was last listed (monotonic)
        self._log: Any = log if log is not None else get_logger("camflow.recording_reader")

    async def covered(
        self, stream: str, start: float = -math.inf, end: float = math.inf
    ) -> list[CoveredRange]:
        days = await self._days(stream, start, end)
        if days is None:
            return covered_runs(select(await self._legacy_chunks(stream, start, end), start, end))
        spans: list[tuple[str, Span]] = []
        edges: list[tuple[str, int]] = []
        for day in days:
            for ref, chunk_spans in day.chunks.items():
                inside = [s for s in chunk_spans if s[0] < end and s[1] > start]
                if any(s[0] < start or s[1] > end for s in inside):
                    edges.append(ref)  # its segments are cut to the window below
                else:
                    spans.extend((ref[0], s) for s in inside)
        if edges:
            for run in select(await self._chunks(stream, edges), start, end):
                spans.extend((r.epoch, (r.start, r.end, r.segments)) for r in covered_runs([run]))
        return merge_spans(spans)

    async def runs(self, stream: str, start: float, end: float) -> list[EpochRun]:
        days = await self._days(stream, start, end)
        if days is None:
            return select(await self._legacy_chunks(stream, start, end), start, end)
        refs = [ref for day in days for ref in day.refs(start, end)]
        return select(await self._chunks(stream, refs), start, end)

    # --- the summaries -------------------------------------------------------------------------

    async def _days(self, stream: str, start: float, end: float) -> list[DaySummary] | None:
        """The day summaries of the window; None when the stream's index has no marker (not backfilled)."""
        first = day_of(start - BUCKET_SECONDS) if math.isfinite(start) else -math.inf
        last = day_of(end) if math.isfinite(end) else math.inf
        now = time.monotonic()
        if (
            last - first <= DIRECT_DAYS * DAY_SECONDS
            and now - self._marked.get(stream, -math.inf) < MARKER_TTL
        ):
            # a short window of a stream known to have its summaries: each day read, no listing
            days = [int(first) + n * DAY_SECONDS for n in range(int(last - first) // DAY_SECONDS + 1)]
            wanted = [(day, recording_day_key(stream, format_day(day))) for day in days]
        else:
            keys = await self._store.list(recording_days_prefix(stream))
            if recording_days_marker_key(stream) not in keys:
                self._marked.pop(stream, None)
                return None
            self._marked[stream] = now
            found = [(day, key) for key in keys if (day := parse_day_key(stream, key)) is not None]
            wanted = [(day, key) for day, key in found if first <= day <= last]
        return await gather_limited((self._day(stream, day, key) for day, key in wanted), self._concurrency)

    async def _day(self, stream: str, day: int, key: str) -> DaySummary:
        try:
            return DaySummary.parse(await self._store.get(key))
        except NotFound:  # deleted by retention since the listing
            return DaySummary(stream, day)
        except RecordingIndexError as exc:
            self._log.warning("day summary unreadable; chunks read", stream_id=stream, error=str(exc))
            return await rebuild_day(self._store, stream, day, self._concurrency)

    async def _chunks(self, stream: str, refs: Iterable[tuple[str, int]]) -> list[IndexChunk]:
        keys = [recording_index_key(stream, format_bucket(bucket), epoch) for epoch, bucket in refs]
        found = await gather_limited((self._chunk(stream, key) for key in keys), self._concurrency)
        return [c for c in found if c is not None]

    async def _chunk(self, stream: str, key: str) -> IndexChunk | None:
        try:
            return IndexChunk.parse(await self._store.get(key))
        except NotFound:
            return None  # deleted by retention since the summary was read
        except RecordingIndexError as exc:
            self._log.warning("index chunk unreadable", stream_id=stream, key=key, error=str(exc))
            return None

    async def _legacy_chunks(self, stream: str, start: float, end: float) -> list[IndexChunk]:
        wanted = set(buckets_between(start, end)) if math.isfinite(start) and math.isfinite(end) else None
        keys = []
        for key in await self._store.list(recordings_prefix(stream)):
            parsed = parse_chunk_key(stream, key)
            if parsed is not None and (wanted is None or parsed[0] in wanted):
                keys.append(key)
        found = await gather_limited((self._chunk(stream, key) for key in keys), self._concurrency)
        return [c for c in found if c is not None]


async def gather_limited(calls: Iterable[Awaitable[T]], concurrency: int) -> list[T]:
    """Every call's result, in order, at most ``concurrency`` of them running at once."""
    limit = asyncio.Semaphore(concurrency)

    async def limited(call: Awaitable[T]) -> T:
        async with limit:
            return await call

    return list(await asyncio.gather(*(limited(c) for c in calls)))


async def rebuild_day(
    store: Store, stream: str, day: int, concurrency: int = DEFAULT_CONCURRENCY
) -> DaySummary:
    """A day's summary made from its chunks: one LIST of the day's bucket folders, one GET per chunk
    (an unreadable chunk is left out)."""
    keys = [
        key
        for key in await store.list(recordings_prefix(stream) + format_day(day))
        if parse_chunk_key(stream, key) is not None
    ]

    async def load(key: str) -> IndexChunk | None:
        try:
            return IndexChunk.parse(await store.get(key))
        except (NotFound, RecordingIndexError):
            return None

    summary = DaySummary(stream, day)
    for chunk in await gather_limited((load(key) for key in keys), concurrency):
        if chunk is not None and day_of(chunk.bucket) == day:
            summary.set_chunk(chunk)
    return summary
