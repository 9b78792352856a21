"""A viewer who opens a new stream at once. An epoch's first segment lists its parts as they come; its
playlists are written as soon as that segment is complete (from its parts: the next segment's first part
came), before its transcoded segment is written, so the first playlist a viewer gets already holds the
first segment's parts and the second's in progress: low latency from the first segment on. (A playlist
of parts only is not written: hls.js 1.7 refuses it with levelEmptyError, fatal after two retries, and
ffmpeg with "Empty segment".) Headless Chromium (the edge's hls.js player page) and ffmpeg must play it.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import m3u8
import pytest

from camflow.hls.rules import check_low_latency
from tests.chromium import advanced, chromium, devtools, sample
from tests.process import camflow_run, stop_process
from tests.test_ll_push_functional import STREAM, camera
from tests.test_player_chromium import PROBE

pytestmark = pytest.mark.integration


def first_playlist(url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return str(resp.read().decode())
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no playlist at {url} within {timeout} s")


async def test_a_viewer_of_a_new_stream_gets_parts_from_the_first_segment_and_plays(tmp_path: Path) -> None:
    with camflow_run(tmp_path, ["--ladder", "source"]) as cf:
        view = cf.token("view", STREAM)
        media = cf.http_url(f"/live/{STREAM}/source.m3u8?token={view}")
        started = time.monotonic()
        cam = camera(cf.rtsp_url(STREAM, cf.token("publish", STREAM)))
        try:
            text = first_playlist(media)
            joined = time.monotonic() - started
            master = first_playlist(cf.http_url(f"/live/{STREAM}/master.m3u8?token={view}"))
            probe = subprocess.run(
                ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-i", media, "-t", "2", "-f", "null", "-"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            page = cf.http_url(f"/watch/{STREAM}?token={view}&transport=hls")
            with chromium(tmp_path / "profile", page, tmp_path / "chromium.log") as port:
                async with devtools(port) as tools:
                    samples = await sample(tools, PROBE, 30, lambda s: advanced(s) > 6.0)
        finally:
            stop_process(cam, timeout=10)
    parsed = m3u8.loads(text)
    first = next((s for s in samples if s["t"] > 0), None)
    last = samples[-1]
    print(f"\nfirst playlist {joined:.2f} s after the push began:\n{text}\nlast sample {last}")
    assert check_low_latency(text) == []
    assert parsed.media_sequence == 0 and parsed.segments[0].uri and len(parsed.segments[0].parts) >= 5
    assert "#EXT-X-STREAM-INF" in master
    assert probe.returncode == 0, probe.stderr
    assert first is not None and advanced(samples) > 6.0, samples
    assert last["cf"]["fatal"] is None and last["cf"]["errors"] == [], last["cf"]
