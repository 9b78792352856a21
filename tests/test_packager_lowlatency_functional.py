"""The packager's low-latency playlists through a real bus and store: part-ready and segment-ready events
published as the transcoder would (objects first), LL playlists read back from the store, the
playlists-changed events read from the bus; part objects out of the playlists deleted, segments kept.
On Kafka + MinIO (kafka-python, the S3 API) and embedded (LocalBus + FileStore); both print the time
from a part-ready taken off the bus to its playlists-changed published (median / p95)."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import m3u8
import pytest

from camflow.bus import Bus
from camflow.bus.base import Following
from camflow.bus.kafka import KafkaBus
from camflow.bus.local import LocalBus
from camflow.events import (
    TOPIC_PLAYLISTS,
    TOPIC_READY,
    PartReady,
    PlaylistsChanged,
    SegmentReady,
    StreamState,
    decode,
    encode,
)
from camflow.hls.lowlatency import playlist_end
from camflow.hls.rules import check_low_latency, check_media, check_update
from camflow.keys import dvr_playlist_key, media_playlist_key, segment_key
from camflow.store import FileStore, Store
from camflow.store.s3 import S3Location, S3Store
from packager.health import PackagerHealth
from packager.service import Packager
from packager.stream import PackagerStats, StreamPackager
from tests import defaults, services
from tests.process import make_clip
from tests.test_packager import EPOCH_A, STREAM, offline, ready
from tests.test_packager_lowlatency import PARTS, part
from tests.test_pipeline_functional import ffprobe

SEGMENTS = 8  # segment 0 from its segment-ready, then 1..7 from parts (80 parts), each segment-ready after


@dataclass
class Rig:
    bus: Bus
    store: Store
    packager: Packager


@pytest.fixture(params=["embedded", "kafka+minio"])
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    bus: Bus
    store: Store
    if request.param == "embedded":
        bus, store = LocalBus(), FileStore(tmp_path)
    else:
        kafka, s3 = services.require("kafka"), services.require("s3")
        run = uuid.uuid4().hex[:10]
        bus = KafkaBus(kafka, client_id="ll-packager-test", prefix=f"t{run}.")
        await bus.start()
        store = S3Store(S3Location.parse(f"{s3.rstrip('/')}/{run}"))
    await store.start()
    packager = Packager(bus, store, **defaults.packager(dvr_window=0.0, offline_grace=0.0))
    packager.part_linger = 1.0
    stop = asyncio.Event()
    task = asyncio.create_task(packager.run(stop))
    try:
        await asyncio.wait_for(packager.ready.wait(), 30)
        yield Rig(bus, store, packager)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await store.close()
        if isinstance(bus, KafkaBus):
            await bus.close()


async def publish(rig: Rig, ev: PartReady | SegmentReady) -> None:
    """As the transcoder does: the objects, then the event."""
    for ref in ev.renditions:
        await rig.store.put(ref.key, b"m4s", "video/iso.segment")
    await rig.bus.publish(TOPIC_READY, ev.stream, encode(ev))


async def test_ll_playlists_and_playlists_changed_through_the_bus_and_the_store(rig: Rig) -> None:
    assert isinstance(rig.bus, Following)
    follower = await rig.bus.follow([TOPIC_PLAYLISTS])
    await asyncio.sleep(0.5)  # the follower is at the end before anything is published
    await publish(rig, ready(EPOCH_A, 0))
    for seq in range(1, SEGMENTS):
        for i in range(PARTS):
            await publish(rig, part(EPOCH_A, seq, i))
            await asyncio.sleep(0.05)
        if seq > 1:
            await publish(rig, ready(EPOCH_A, seq - 1))  # a segment-ready lags its parts
    await publish(rig, part(EPOCH_A, SEGMENTS, 0))
    want = (SEGMENTS, 0)
    events: list[PlaylistsChanged] = []
    deadline = time.monotonic() + 120  # a loaded machine: the group join can be slow
    while time.monotonic() < deadline:
        msg = await follower.get(1.0)
        if msg is None:
            continue
        ev = decode(msg.value)
        assert isinstance(ev, PlaylistsChanged) and msg.key == STREAM
        events.append(ev)
        if all((e.msn, e.part) == want for e in ev.ends) and len(ev.ends) == 2:
            break
    await follower.close()
    assert events, "no playlists-changed event"
    assert [(e.rendition, e.msn, e.part) for e in events[-1].ends] == [("360p", *want), ("720p", *want)]
    for name in ("720p", "360p"):
        text = (await rig.store.get(media_playlist_key(STREAM, name))).decode()
        assert check_media(text) == [] and check_low_latency(text) == []
        assert playlist_end(text) == want
        parsed = m3u8.loads(text)
        assert [s.uri for s in parsed.segments if s.uri] == [
            segment_key(STREAM, EPOCH_A, name, n).split(f"{STREAM}/", 1)[1] for n in range(SEGMENTS)
        ]

    # Parts out of the playlists go after part_linger; segments stay.
    async def parts_left() -> set[int]:
        keys = await rig.store.list(f"streams/{STREAM}/{EPOCH_A}/720p/")
        return {int(k.rsplit("/", 1)[1][:8]) for k in keys if k.count(".") == 2}

    for _ in range(100):
        if await parts_left() == {3, 4, 5, 6, 7, 8}:  # 12 s back from the end: seqs 3.. keep theirs
            break
        await asyncio.sleep(0.1)
    assert await parts_left() == {3, 4, 5, 6, 7, 8}
    segments = await rig.store.list(f"streams/{STREAM}/{EPOCH_A}/720p/")
    assert {k for k in segments if k.count(".") == 1} == {
        segment_key(STREAM, EPOCH_A, "720p", n) for n in range(SEGMENTS - 1)
    }
    times = sorted(rig.packager.part_latency)
    assert len(times) >= (SEGMENTS - 1) * PARTS
    median, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
    print(f"\npart-ready -> playlists-changed: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
    assert p95 < 1.0
    stats = rig.packager.stats
    assert stats.parents_early == 2 * (SEGMENTS - 1) and stats.parts_deleted > 0 and stats.publish_errors == 0
    parts = {
        labels: v
        for name, labels, v in PackagerHealth(rig.packager).samples()
        if name == "camflow_packager_parts"
    }
    assert parts[("listed",)] == 2 * (SEGMENTS - 1) * PARTS + 2 and parts[("deleted",)] == stats.parts_deleted


async def test_a_restarted_packager_continues_the_ll_playlists_it_finds_in_the_store(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.start()

    async def running(events: list[PartReady | SegmentReady]) -> Packager:
        bus = LocalBus()
        packager = Packager(bus, store, **defaults.packager(offline_grace=0.0))
        stop = asyncio.Event()
        task = asyncio.create_task(packager.run(stop))
        await asyncio.wait_for(packager.ready.wait(), 10)
        rig = Rig(bus, store, packager)
        for ev in events:
            await publish(rig, ev)
        for _ in range(200):
            if packager.stats.parts_listed + packager.stats.duplicates >= 2 * sum(
                isinstance(e, PartReady) for e in events
            ):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 10)
        return packager

    first: list[PartReady | SegmentReady] = [ready(EPOCH_A, 0), *(part(EPOCH_A, 1, i) for i in range(PARTS))]
    first += [part(EPOCH_A, 2, i) for i in range(4)]  # seq 1 listed from its parts, seq 2 in progress
    await running(first)
    before = (await store.get(media_playlist_key(STREAM, "720p"))).decode()
    assert playlist_end(before) == (2, 3)
    # Delivered again from the last commit (here: the last two parts), then new events.
    again: list[PartReady | SegmentReady] = [part(EPOCH_A, 2, 2), part(EPOCH_A, 2, 3), ready(EPOCH_A, 1)]
    again += [*(part(EPOCH_A, 2, i) for i in range(4, PARTS)), part(EPOCH_A, 3, 0)]
    second = await running(again)
    after = (await store.get(media_playlist_key(STREAM, "720p"))).decode()
    assert check_update(before, after) == [] and check_low_latency(after) == []
    assert playlist_end(after) == (3, 0)
    parsed = m3u8.loads(after)
    assert [len(s.parts) for s in parsed.segments] == [0, PARTS, PARTS, 1]
    dvr = m3u8.loads((await store.get(dvr_playlist_key(STREAM, "720p"))).decode())
    assert [s.uri for s in dvr.segments] == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    assert second.stats.restored == 1 and second.stats.duplicates == 4  # 2 parts x 2 renditions
    await store.close()


def test_a_plain_hls_client_plays_the_ll_playlists(tmp_path: Path) -> None:
    """ffmpeg's HLS demuxer knows no LL tag: the live LL playlist and the ended one play, by segments."""
    clip = make_clip(tmp_path / "clip.mp4", 8, size="320x180")
    hls = tmp_path / "hls"
    hls.mkdir()
    subprocess.run(
        [
            *("ffmpeg", "-loglevel", "error", "-i", str(clip), "-c", "copy", "-f", "hls", "-hls_time", "2"),
            *(
                "-hls_segment_type",
                "fmp4",
                "-hls_list_size",
                "0",
                "-hls_segment_filename",
                str(hls / "%d.m4s"),
            ),
            str(hls / "out.m3u8"),
        ],
        check=True,
        timeout=60,
    )
    root = tmp_path / "store"
    folder = root / "streams" / STREAM / EPOCH_A / "720p"
    folder.mkdir(parents=True)
    shutil.copy(hls / "init.mp4", folder / "init.mp4")
    for n in range(4):
        shutil.copy(hls / f"{n}.m4s", folder / f"{n:08d}.m4s")
    sp = StreamPackager(
        STREAM, live_window=60.0, gap_timeout=10.0, stats=PackagerStats(), target_duration=4, part_target=0.2
    )
    texts: dict[str, str] = {}

    def send(*events: PartReady | SegmentReady | StreamState) -> str:
        for ev in events:
            if isinstance(ev, PartReady):
                sp.on_part(ev, 0, 1.0)
            elif isinstance(ev, SegmentReady):
                sp.on_segment(ev, 0, 1.0)
            else:
                sp.on_state(ev, 0, 1.0)
        texts.update(sp.take_output(1.0).writes)
        text = texts[media_playlist_key(STREAM, "720p")]
        (root / media_playlist_key(STREAM, "720p")).write_text(text)
        return text

    def one(seq: int) -> SegmentReady:
        return ready(EPOCH_A, seq, names=("720p",))

    def parts(seq: int, upto: int = PARTS) -> list[PartReady]:
        return [part(EPOCH_A, seq, i, names=("720p",)) for i in range(upto)]

    live = send(one(0), *parts(1), one(1), *parts(2), *parts(3, 3))
    assert "#EXT-X-PRELOAD-HINT" in live and "#EXT-X-ENDLIST" not in live
    ended = send(offline(EPOCH_A, 3), *parts(3)[3:], one(2), one(3))
    assert "#EXT-X-PART:" not in ended and "#EXT-X-ENDLIST" in ended  # no live edge: its parts went
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{media_playlist_key(STREAM, '720p')}"
        (root / "live.m3u8").write_text(live.replace(f"{EPOCH_A}/", f"streams/{STREAM}/{EPOCH_A}/"))
        probe = ffprobe(f"http://127.0.0.1:{server.server_port}/live.m3u8")
        assert probe["streams"] == [{"codec_name": "h264", "width": 320, "height": 180}]
        out = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", url, "-map", "0:v", "-c", "copy", "-f", "framemd5", "-"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        frames = [ln for ln in out.stdout.splitlines() if ln and not ln.startswith("#")]
        assert len(frames) == 4 * 60  # every segment of the ended LL playlist, none of its parts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
