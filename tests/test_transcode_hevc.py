"""An H.265 camera through the transcoder and the real packager: browsers start on the H.264
ladder, the H.265 original is an extra variant, and ffprobe plays both from the playlists."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from camflow.bus import LocalBus
from camflow.events import TOPIC_RAW, TOPIC_STREAMS, RawSegment, StreamState, StreamStateKind, encode
from camflow.keys import master_playlist_key, media_playlist_key
from camflow.store import FileStore
from packager.service import Packager
from tests import defaults
from tests.transcode_clips import TIMESCALE, cut, make_clip
from transcode.ladder import parse_ladder
from transcode.service import TranscodeWorker

EPOCH = "20261121T101500123Z"
PROBE = ("ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of", "json")


async def run_pipeline(tmp: Path, clip: Path) -> FileStore:
    bus, store = LocalBus(), FileStore(tmp / "store")
    await store.start()
    stop = asyncio.Event()
    worker = TranscodeWorker(
        bus, store, **defaults.transcoder(ladder=parse_ladder("source,180p:200k"), processes=1)
    )
    packager = Packager(bus, store, **defaults.packager(offline_grace=0.0, dvr_window=0.0, gap_timeout=30.0))
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(packager.run(stop))]
    await asyncio.wait_for(asyncio.gather(worker.ready.wait(), packager.ready.wait()), 30)
    segs = cut(clip)
    for s in segs:
        event = RawSegment(
            "cam1", EPOCH, s.seq, s.start, s.duration, TIMESCALE, "hvc1", 640, 360, time.time(), s.data
        )
        await bus.publish(TOPIC_RAW, f"cam1/{EPOCH}/{s.seq}", encode(event))
    offline = StreamState("cam1", EPOCH, StreamStateKind.OFFLINE, "test", time.time(), len(segs) - 1)
    await bus.publish(TOPIC_STREAMS, "cam1", encode(offline))
    deadline = time.monotonic() + 120
    playlist = store.root / media_playlist_key("cam1", "source-hevc")
    while time.monotonic() < deadline:
        if playlist.exists() and "#EXT-X-ENDLIST" in playlist.read_text():
            break
        await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return store


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hevc") / "hevc.mp4", 6, "640x360", "libx265")


def test_h265_camera_master_starts_on_h264_and_keeps_the_original(hevc_clip: Path, tmp_path: Path) -> None:
    store = asyncio.run(run_pipeline(tmp_path, hevc_clip))
    master = (store.root / master_playlist_key("cam1")).read_text()
    infos = [line for line in master.splitlines() if line.startswith("#EXT-X-STREAM-INF")]
    uris = [line for line in master.splitlines() if line.endswith(".m3u8")]
    assert uris[-1] == "source-hevc.m3u8" and set(uris) == {"source.m3u8", "180p.m3u8", "source-hevc.m3u8"}
    assert 'CODECS="avc1.' in infos[0] and "RESOLUTION=640x360" in infos[0], master  # the browser default
    assert 'CODECS="hvc1.1.6.L' in infos[-1] and "RESOLUTION=640x360" in infos[-1], master
    for name, codec in (("source", "h264"), ("180p", "h264"), ("source-hevc", "hevc")):
        playlist = (store.root / media_playlist_key("cam1", name)).read_text()
        assert "#EXT-X-GAP" not in playlist and playlist.count(".m4s") == 3, playlist
        probe = subprocess.run(
            [*PROBE, str(store.root / media_playlist_key("cam1", name))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr
        info = json.loads(probe.stdout)
        assert info["streams"][0]["codec_name"] == codec
        assert abs(float(info["format"]["duration"]) - 6.0) < 0.1, info
