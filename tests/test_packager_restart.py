"""A restarted packager continues each stream from what its previous owner stored; long segments; DVR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import m3u8
import pytest

from camflow.events import SegmentReady
from camflow.hls.rules import check_media, check_update
from camflow.keys import dvr_playlist_key, master_playlist_key
from camflow.recordings import IndexChunk
from camflow.store import FileStore
from packager.service import Packager
from packager.stream import PackagerStats, StreamPackager
from tests import defaults
from tests.test_packager import (
    EPOCH_A,
    EPOCH_B,
    STREAM,
    RecordingBus,
    RecordingStore,
    Rig,
    media,
    offline,
    ready,
    seg_uri,
    uris,
)


async def run_packager(tmp_path: Path, *events: object, **options: float) -> tuple[Rig, Packager]:
    bus, store = RecordingBus(), RecordingStore(tmp_path)
    await store.start()
    packager = Packager(bus, store, **{**defaults.packager(offline_grace=0.0, dvr_window=0.0), **options})
    stop = asyncio.Event()
    task = asyncio.create_task(packager.run(stop))
    await asyncio.wait_for(packager.ready.wait(), 2)
    rig = Rig(bus, store, packager)
    await rig.send(*events)  # type: ignore[arg-type]
    await rig.settle()
    stop.set()
    await asyncio.wait_for(task, 5)
    return rig, packager


def stream_packager(live_window: float = 10.0, **options: float) -> StreamPackager:
    return StreamPackager(STREAM, live_window=live_window, gap_timeout=10.0, stats=PackagerStats(), **options)  # type: ignore[arg-type]


async def test_restart_recognises_redelivered_segments(tmp_path: Path) -> None:
    first, _ = await run_packager(tmp_path, *(ready(EPOCH_A, n) for n in range(4)))
    before = await first.text(media())
    assert before is not None
    # The restarted packager gets the uncommitted tail again, then new segments.
    again, packager = await run_packager(tmp_path, ready(EPOCH_A, 2), ready(EPOCH_A, 3), ready(EPOCH_A, 4))
    after = await again.text(media())
    assert after is not None
    assert uris(after) == [seg_uri(EPOCH_A, n) for n in range(5)]
    assert check_media(after) == [] and check_update(before, after) == []
    assert (packager.stats.restored, packager.stats.duplicates, packager.stats.segments_appended) == (1, 2, 1)
    chunks = [k for k in await again.store.list(f"streams/{STREAM}/recordings/")]
    [chunk] = [IndexChunk.parse(await again.store.get(k)) for k in chunks]
    assert sorted(chunk.segments) == [0, 1, 2, 3, 4]


async def test_restart_completes_a_rendition_the_crash_left_behind(tmp_path: Path) -> None:
    sp = stream_packager()
    for n in range(3):
        sp.on_segment(ready(EPOCH_A, n), n, 0.0)
    out = sp.take_output()
    stored = dict(out.writes)
    # A crash after 720p.m3u8 got seq 3 and before 360p.m3u8 did.
    sp.on_segment(ready(EPOCH_A, 3), 3, 0.0)
    stored[media("720p")] = dict(sp.take_output().writes)[media("720p")]
    restarted = stream_packager()
    restarted.restore(
        stored[master_playlist_key(STREAM)],
        {"720p": stored[media("720p")], "360p": stored[media("360p")]},
        {},
    )
    restarted.on_segment(ready(EPOCH_A, 3), 10, 0.0)  # re-delivered: completes 360p only
    restarted.on_segment(ready(EPOCH_A, 4), 11, 0.0)
    out = restarted.take_output()
    texts = dict(out.writes)
    assert uris(texts[media("720p")]) == [seg_uri(EPOCH_A, n) for n in range(5)]
    assert uris(texts[media("360p")]) == [seg_uri(EPOCH_A, n, "360p") for n in range(5)]
    assert check_update(stored[media("720p")], texts[media("720p")]) == []
    assert out.done == [10, 11]
    assert [a.segment.seq for a in out.index] == [3, 4]  # the index is idempotent per seq


async def test_restart_after_end_keeps_the_end_and_a_new_epoch_starts_fresh(tmp_path: Path) -> None:
    first, _ = await run_packager(tmp_path, ready(EPOCH_A, 0), ready(EPOCH_A, 1), offline(EPOCH_A, 1))
    ended = await first.text(media())
    assert ended is not None and "#EXT-X-ENDLIST" in ended
    again, packager = await run_packager(tmp_path, offline(EPOCH_A, 1), ready(EPOCH_A, 1), ready(EPOCH_B, 0))
    text = await again.text(media())
    assert text is not None
    assert uris(text) == [seg_uri(EPOCH_B, 0)] and check_update(ended, text) == []
    assert m3u8.loads(text).media_sequence == 2
    assert packager.stats.rejected + packager.stats.duplicates == 1


def test_segment_longer_than_target_becomes_gap_pieces_live() -> None:
    sp = stream_packager(live_window=60.0, target_duration=4)
    long = SegmentReady(**{**ready(EPOCH_A, 1).__dict__, "duration": 9 * 90_000})
    for n, ev in enumerate([ready(EPOCH_A, 0), long, ready(EPOCH_A, 2)]):
        sp.on_segment(ev, n, 0.0)
    out = sp.take_output()
    text = dict(out.writes)[media()]
    assert check_media(text) == []
    segs = m3u8.loads(text).segments
    assert [(bool(s.gap_tag), s.duration) for s in segs] == [
        (False, 2.0),
        (True, 3.0),
        (True, 3.0),
        (True, 3.0),
        (False, 2.0),
    ]
    assert segs[2].program_date_time.timestamp() == pytest.approx(ready(EPOCH_A, 1).wall_clock + 3.0)
    assert sp.stats.overlong == 1
    assert [a.segment.duration for a in out.index] == [2.0, 9.0, 2.0]  # the recording keeps it whole


def test_dvr_playlist_reaches_further_back() -> None:
    sp = stream_packager(dvr_window=30.0)
    for n in range(12):
        sp.on_segment(ready(EPOCH_A, n), n, 0.0)
    texts = dict(sp.take_output().writes)
    assert len(uris(texts[media()])) == 5  # 10 s window
    dvr = texts[dvr_playlist_key(STREAM, "720p")]
    assert uris(dvr) == [seg_uri(EPOCH_A, n) for n in range(12)] and check_media(dvr) == []
    assert (EPOCH_A, 0) in sp.named() and (EPOCH_A, 11) in sp.named()


async def test_unreadable_stored_playlist_starts_afresh(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.start()
    await store.put(
        master_playlist_key(STREAM),
        b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1,CODECS="a",RESOLUTION=1x1\n720p.m3u8\n',
    )
    await store.put(media(), b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:2.0,\nnot/ours.m4s\n")
    rig, packager = await run_packager(tmp_path, ready(EPOCH_A, 0))
    assert uris(await rig.text(media()) or "") == [seg_uri(EPOCH_A, 0)]
    assert packager.stats.restored == 0
