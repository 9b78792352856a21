"""Headless Chromium plays a camera's audio: ffmpeg pushes live H.264 with AAC (44.1 kHz stereo) or G.711
µ-law (becoming 8 kHz mono AAC) into `camflow run`; the edge's player page (hls.js) selects the
EXT-X-MEDIA audio track, and Chromium's media pipeline decodes audio bytes while the video advances, with
no hls.js error."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import chromium, devtools, sample, unexpected_errors
from tests.process import camflow_run, stop_process
from tests.test_audio_functional import AUDIO
from tests.test_player_chromium import wait_for_master

pytestmark = pytest.mark.integration
PROBE = """(() => { try { const v = document.getElementById('video'); const h = window.camflow.hls;
  return JSON.stringify({t: v.currentTime, audio: v.webkitAudioDecodedByteCount,
    tracks: h ? h.audioTracks.map(a => a.name) : null, errors: window.camflow.errors,
    stalls: window.camflow.stalls});
} catch (e) { return null; } })()"""


async def play(port: int) -> list[dict[str, Any]]:
    """Poll the page once a second (at most 40 s) until 6 s of playback decoded audio."""
    async with devtools(port) as tools:
        return await sample(tools, PROBE, 40, lambda s: s[-1]["t"] > 6.0 and s[-1]["audio"] > 0)


@pytest.mark.parametrize("codec", ["aac", "pcm_mulaw"])
async def test_chromium_plays_the_audio_track(codec: str, tmp_path: Path) -> None:
    with camflow_run(tmp_path, ["--ladder", "source"]) as cf:
        publish, view = cf.token("publish", "camaud"), cf.token("view", "camaud")
        push = subprocess.Popen(
            [
                *(
                    "ffmpeg",
                    "-loglevel",
                    "warning",
                    "-re",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=320x240:rate=25",
                ),
                *("-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "30"),
                *("-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", *AUDIO[codec]),
                *("-f", "rtsp", "-rtsp_transport", "tcp", cf.rtsp_url("camaud", publish)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_master(cf.http_url(f"/live/camaud/master.m3u8?token={view}"))
            page = cf.http_url(f"/watch/camaud?token={view}&transport=hls")
            with chromium(tmp_path / "profile", page, tmp_path / "chromium.log") as port:
                samples = await play(port)
        finally:
            stop_process(push, timeout=10)
    last = samples[-1]
    print("\nlast", last)
    assert last["tracks"] == ["audio"], samples  # hls.js picked up the EXT-X-MEDIA rendition
    assert last["t"] > 6.0 and last["audio"] > 0, samples  # Chromium decoded the AAC while playing
    # No stall and no error, except that hls.js may jump once over the sliver (under a frame) where a
    # live join starts between the two tracks' first samples: non-fatal, playback goes on.
    assert last["stalls"] == 0, last
    assert unexpected_errors(last["errors"]) == [], last
