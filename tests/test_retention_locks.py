"""Retention and events (``packager.locks``): footage a locked event covers outlives the retention
until the event is deleted; a bookmark (unlocked) goes with its footage; on a store with a
lifecycle backstop the kept objects are tagged out of it. File store, synthesised recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

from camflow.hls.dates import parse_date_time
from camflow.keys import init_key, segment_key, thumbnail_key
from camflow.recordings import BUCKET_SECONDS, IndexChunk, RecordedRendition, RecordedSegment, chunk_key
from camflow.store import FileStore
from camflow.stream_events import new_event
from packager.index import IndexWriter
from packager.retention import Retention

STREAM, EPOCH = "cam1", "20261201T100000000Z"
T0 = parse_date_time("2026-12-01T10:00:00Z")  # a bucket boundary
NOW = T0 + 3 * 86_400
RETAIN = 86_400.0
SOURCE = RecordedRendition("source", 640, 360, "avc1.64001e", 900_000)


class TaggingStore(FileStore):
    """A file store that records what retention takes out of the lifecycle backstop."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.locked: set[str] = set()

    async def set_locked(self, keys: list[str], locked: bool) -> int:
        assert locked
        self.locked.update(keys)
        return len(keys)


async def recorded(store: FileStore, segments: int) -> None:
    """An epoch of 2 s segments from T0, with their objects."""
    chunk = IndexChunk(STREAM, EPOCH, int(T0 // BUCKET_SECONDS) * BUCKET_SECONDS)
    await store.put(init_key(STREAM, EPOCH, "source"), b"init")
    for seq in range(segments):
        chunk.add(RecordedSegment(seq, T0 + 2 * seq, 2.0, ("source",)), [SOURCE])
        await store.put(segment_key(STREAM, EPOCH, "source", seq), b"seg")
        await store.put(thumbnail_key(STREAM, EPOCH, seq), b"jpg")
    await store.put(chunk_key(chunk), chunk.render(), "application/json")


async def sweep(retention: Retention, store: FileStore) -> int:
    return await retention.sweep(STREAM, set(), IndexWriter(store))


async def segments_left(store: FileStore) -> set[int]:
    keys = await store.list(f"streams/{STREAM}/{EPOCH}/source/")
    return {int(k.rsplit("/", 1)[1][:8]) for k in keys if k.endswith(".m4s")}


def test_a_locked_event_keeps_its_footage_until_it_is_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = TaggingStore(tmp_path)
        await store.start()
        await recorded(store, 30)  # 60 s
        locked = new_event(
            STREAM,
            {"type": "motion", "time": "2026-12-01T10:00:20Z", "pre_roll": 3, "post_roll": 3},
            by="admin",
            now=T0,
        )  # footage 17..23 s: segments 8, 9, 10, 11
        bookmark = new_event(
            STREAM, {"type": "note", "time": "2026-12-01T10:00:40Z", "lock": False}, by="admin", now=T0
        )
        for event in (locked, bookmark):
            await store.put(event.key, event.render(), "application/json")
        retention = Retention(store, retain=RETAIN, per_stream={}, wall_clock=lambda: NOW)

        await sweep(retention, store)
        assert await segments_left(store) == {8, 9, 10, 11}
        assert retention.stats.kept_locked == 4 and retention.stats.events_expired == 1
        assert await store.head(bookmark.key) is None and await store.head(locked.key) is not None
        index = IndexChunk.parse(
            await store.get(next(iter(await store.list(f"streams/{STREAM}/recordings/"))))
        )
        assert sorted(index.segments) == [8, 9, 10, 11]  # still listed, still playable
        assert {segment_key(STREAM, EPOCH, "source", 9), thumbnail_key(STREAM, EPOCH, 9)} <= store.locked
        assert init_key(STREAM, EPOCH, "source") in store.locked
        assert await store.head(init_key(STREAM, EPOCH, "source")) is not None

        await sweep(retention, store)  # a second sweep keeps them (tags nothing new but init sections)
        assert await segments_left(store) == {8, 9, 10, 11}

        await store.delete(locked.key)  # DELETE /api/streams/cam1/events/{id}
        await sweep(retention, store)
        assert await segments_left(store) == set()
        assert retention.stats.kept_locked == 0
        assert await store.list(f"streams/{STREAM}/recordings/") == []

    asyncio.run(scenario())
