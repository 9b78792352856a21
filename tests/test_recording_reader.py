"""camflow.recording_reader over a FileStore that the packager's index writer filled (two days of a
2 s camera): the listing and time ranges equal what every chunk says, in a bounded number of store
requests (counted by a store wrapper); an index from before day summaries still reads right and is
backfilled once; retention keeps the summaries right; a broken summary is read around."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from camflow.keys import recording_days_marker_key, recording_days_prefix
from camflow.recording_days import DAY_SECONDS, DaySummary, day_of
from camflow.recording_reader import RecordingReader, rebuild_day
from camflow.recordings import BUCKET_SECONDS, IndexChunk, RecordedSegment, chunk_key, covered, select
from camflow.store import FileStore
from camflow.store.base import StoreWrapper
from packager.index import IndexWriter
from packager.output import IndexAppend
from packager.retention import Retention
from tests.recording_synth import LADDER, NAMES, START, every_chunk, synthesise

T = TypeVar("T")
STREAM = "cam1"


class CountingStore(StoreWrapper):
    """Counts every store call by operation."""

    def __init__(self, inner: FileStore) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        self.calls[op] += 1
        return await call()

    def take(self) -> Counter[str]:
        calls, self.calls = self.calls, Counter()
        return calls


def ranges(rs: list[object]) -> list[tuple[object, ...]]:
    out = []
    for r in rs:
        epoch, start, end, segments = (getattr(r, n) for n in ("epoch", "start", "end", "segments"))
        out.append((epoch, round(start, 3), round(end, 3), segments))
    return out


async def truth(
    store: FileStore, start: float = -math.inf, end: float = math.inf
) -> list[tuple[object, ...]]:
    runs = select(await every_chunk(store, STREAM), start, end)
    chunks = [IndexChunk(STREAM, r.epoch, 0, r.renditions, {s.seq: s for s in r.segments}) for r in runs]
    return ranges(list(covered(chunks)))


@pytest.fixture
async def store(tmp_path: Path) -> FileStore:
    s = FileStore(tmp_path)
    await s.start()
    # two days, a new epoch after 30 h (30 s gap), one segment in 500 missing
    await synthesise(s, STREAM, 2.0, epoch_seconds=30 * 3600.0, missing_every=500)
    return s


async def test_listing_and_ranges_equal_the_chunks_in_bounded_requests(store: FileStore) -> None:
    counting = CountingStore(store)
    reader = RecordingReader(counting)
    everything = await reader.covered(STREAM)
    assert ranges(list(everything)) == await truth(store)
    assert len({r.epoch for r in everything}) == 2 and len(everything) > 100  # the gaps are there
    calls = counting.take()
    assert calls == {"list": 1, "get": 2}, calls  # the days folder, then its 2 day summaries

    # a window with edges inside chunks: only the chunks across the edges are read
    start, end = START + 5000.3, START + 86400 + 7000.9
    assert ranges(list(await reader.covered(STREAM, start, end))) == await truth(store, start, end)
    calls = counting.take()
    assert calls == {"get": 4}, calls  # 2 day summaries (the marker was listed just now), 2 edge chunks

    # an hour across midnight and the epoch change: the chunks of that hour only
    start = START + 30 * 3600.0 - 1800.0
    end = start + 3600.0
    runs = await reader.runs(STREAM, start, end)
    want = select(await every_chunk(store, STREAM), start, end)
    assert runs == want and len(runs) == 2
    calls = counting.take()
    assert calls["list"] == 0 and calls["get"] <= 2 + 3600 // BUCKET_SECONDS + 2 * 2, calls

    # nothing in the window: no chunk read
    assert await reader.runs(STREAM, START - 7200, START - 3600) == []
    assert counting.take() == {"get": 1}  # the day before: not there
    assert await RecordingReader(counting).runs(STREAM, START - 7200, START - 3600) == []
    assert counting.take() == {"list": 1}  # a fresh reader lists the days first: none in the window


async def test_an_index_from_before_summaries_reads_right_and_is_backfilled_once(store: FileStore) -> None:
    for key in await store.list(recording_days_prefix(STREAM)):
        await store.delete(key)  # as written before day summaries existed: chunks only
    counting = CountingStore(store)
    reader = RecordingReader(counting)
    want = await truth(store)
    assert ranges(list(await reader.covered(STREAM))) == want  # read from every chunk
    assert counting.take()["get"] > 100

    # the packager's first append to the stream starts the backfill in a task, and does not wait for it
    writer = IndexWriter(counting)
    last = max(await every_chunk(store, STREAM), key=lambda c: c.bucket)
    seg = max(last.segments.values(), key=lambda s: s.seq)
    extra = RecordedSegment(seg.seq + 1, seg.end, 2.0, NAMES)
    await writer.append(STREAM, [IndexAppend(last.epoch, extra, LADDER)])
    assert await store.head(recording_days_marker_key(STREAM)) is None  # not yet
    for _ in range(200):
        if await store.head(recording_days_marker_key(STREAM)) is not None:
            break
        await asyncio.sleep(0.05)
    await writer.close()
    assert writer.backfilled_days == 2
    assert await store.head(recording_days_marker_key(STREAM)) is not None
    want = await truth(store)
    counting.take()
    await IndexWriter(counting).ensure(STREAM)  # done once: the marker is there
    assert counting.take() == {"head": 1}
    assert ranges(list(await reader.covered(STREAM))) == want
    assert counting.take() == {"list": 1, "get": 3}  # 3 days now


async def test_retention_keeps_the_summaries_right(tmp_path: Path) -> None:
    store = FileStore(tmp_path)  # 30 s segments: retention deletes every segment's objects, one by one
    await synthesise(store, STREAM, 2.0, segment=30.0, epoch_seconds=30 * 3600.0, missing_every=50)
    cutoff_at = START + 86400 + 3 * 3600.0 + 123.0  # the first day, and 3 h of the second, expire
    retention = Retention(
        store, retain=3600.0, per_stream={}, batch=10**6, wall_clock=lambda: cutoff_at + 3600
    )
    writer = IndexWriter(store)
    await retention.sweep(STREAM, set(), writer)
    reader = RecordingReader(store)
    left = await reader.covered(STREAM)
    assert ranges(list(left)) == await truth(store)
    assert min(r.start for r in left) >= cutoff_at - 30.0
    days = await store.list(recording_days_prefix(STREAM))
    assert DaySummary(STREAM, day_of(START)).key not in days  # the first day's summary went with its chunks
    assert recording_days_marker_key(STREAM) in days


async def test_a_broken_summary_is_read_around_and_a_stale_one_repaired(store: FileStore) -> None:
    second = DaySummary(STREAM, day_of(START) + DAY_SECONDS)
    await store.put(second.key, b'{"v": 1, "stream": "cam1"}')
    assert ranges(list(await RecordingReader(store).covered(STREAM))) == await truth(store)

    await store.put(second.key, (await rebuild_day(store, STREAM, second.day)).render())
    # a crash between a chunk's write and its summary's: the summary lags until the next append of
    # that chunk, a duplicate (redelivered) one included
    writer = IndexWriter(store)
    last = max(await every_chunk(store, STREAM), key=lambda c: c.bucket)
    seg = max(last.segments.values(), key=lambda s: s.seq)
    extra = RecordedSegment(seg.seq + 1, seg.end, 2.0, NAMES)
    last.add(extra, LADDER)
    await store.put(chunk_key(last), last.render())  # chunk written, then the "crash"
    assert ranges(list(await RecordingReader(store).covered(STREAM))) != await truth(store)
    await writer.append(STREAM, [IndexAppend(last.epoch, extra, LADDER)])  # delivered again
    assert ranges(list(await RecordingReader(store).covered(STREAM))) == await truth(store)


async def test_the_marker_is_written_again_each_new_day(tmp_path: Path) -> None:
    """An S3 lifecycle rule expires objects by age: a stream that records keeps its marker young."""
    store = FileStore(tmp_path)
    marker = recording_days_marker_key(STREAM)
    puts: list[str] = []

    class Recording(StoreWrapper):
        async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
            puts.append(key)
            await self.inner.put(key, data, content_type)

    writer = IndexWriter(Recording(store))
    await writer.ensure(STREAM)  # an empty index: nothing to backfill, the marker written
    for n, t in enumerate([START, START + 2, START + 86400, START + 86402, START + 2 * 86400]):
        await writer.append(
            STREAM, [IndexAppend("20261101T000000250Z", RecordedSegment(n, t, 2.0, NAMES), LADDER)]
        )
    assert puts.count(marker) == 1 + 3  # the backfill of an empty index, then each day's first summary
