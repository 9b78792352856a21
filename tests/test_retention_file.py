"""Retention with the file store reaches streams this packager never saw: a camera that
published and left before `camflow run` started again still has its old segments deleted,
and nothing a stored playlist names goes; its index, as written before day summaries existed,
gets them (backfilled by the sweep) and they agree with the chunks retention left."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import m3u8

from camflow.recording_reader import RecordingReader
from camflow.recordings import covered
from camflow.store import FileStore
from tests.process import camflow_run, ffmpeg_push, make_clip
from tests.recording_synth import every_chunk

STREAM = "gone-cam"


def segment_files(data: Path) -> set[str]:
    root = data / "store" / "streams" / STREAM
    return {p.relative_to(root).as_posix() for p in root.rglob("*.m4s")}


def test_retention_sweeps_a_stream_seen_before_this_start(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip12.mp4", 12, size="426x240")
    common = ["--ladder", "source", "--live-window", "4", "--dvr-window", "0", "--offline-grace", "0"]
    with camflow_run(tmp_path, common) as cf:
        pushed = ffmpeg_push(clip, cf.rtsp_url(STREAM, cf.token("publish", STREAM)))
        assert pushed.returncode == 0, pushed.stderr
        playlist = cf.data_dir / "store" / "streams" / STREAM / "source.m3u8"
        deadline = time.monotonic() + 60
        while not (playlist.exists() and "#EXT-X-ENDLIST" in playlist.read_text()):
            assert time.monotonic() < deadline, "the stream never ended"
            time.sleep(0.25)
        data = cf.data_dir
    before = segment_files(data)
    assert len(before) >= 5, before
    days = data / "store" / "streams" / STREAM / "recording-days"
    assert (days / "v1.json").exists()
    shutil.rmtree(days)  # as an index written before day summaries existed: chunks only

    retain = [*common, "--retain", "1s", "--retention-interval", "1"]
    with camflow_run(tmp_path, retain) as cf:
        named = {s.uri.split("?")[0] for s in m3u8.loads(playlist.read_text()).segments}
        assert named and named < before
        deadline = time.monotonic() + 30
        while segment_files(data) != named:
            assert time.monotonic() < deadline, (sorted(segment_files(data)), sorted(named))
            time.sleep(0.5)
        assert "retention swept" in cf.log
        time.sleep(2)  # more sweeps: the named ones stay
        assert segment_files(data) == named
    # the sweep backfilled the day summaries, and they say what the chunks left say
    assert (days / "v1.json").exists()
    store = FileStore(data / "store")
    listed = asyncio.run(RecordingReader(store).covered(STREAM))
    chunks = asyncio.run(every_chunk(store, STREAM))
    assert listed == covered(chunks) and sum(r.segments for r in listed) == len(named)
