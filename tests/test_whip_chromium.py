"""Browser as camera: headless Chromium publishes its fake camera over WHIP (VP8 and H.264) to
`camflow run`; the stream becomes HLS that ffprobe plays.

The publish runs in tests/whip_chromium.py inside a loopback-only network namespace (``unshare -rn``),
so Chromium's ICE candidates can only be 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SECONDS = 8


@pytest.mark.parametrize(("codec", "copied"), [("vp8", False), ("h264", True)])
def test_chromium_publishes_over_whip_and_plays_as_hls(codec: str, copied: bool, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to keep Chromium's WebRTC on loopback")
    proc = subprocess.Popen(
        ["unshare", "-rn", sys.executable, "-m", "tests.whip_chromium", str(tmp_path), codec, str(SECONDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert "error" not in result, (result, err[-3000:])
    page = result["page"]
    assert page["ok"] and page["status"] == 201 and page["delete"] == 200, page
    assert "connected" in page["states"] and page["location"].startswith("/whip/browser/"), page
    master = result["master"]
    # H.264 from the browser is segmented and stream-copied (Chromium's Constrained Baseline, 42);
    # VP8 is encoded to H.264 by the transcoder (Main, 4d).
    assert ('CODECS="avc1.42' in master) is copied and "RESOLUTION=640x480" in master, master
    # Its Opus becomes AAC beside the video, VP8 (NUT raw segments) as H.264 (fMP4 raw segments).
    assert "TYPE=AUDIO" in master and "mp4a.40.2" in master, master
    probe = result["probe"]
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["aac", "h264"], probe
    assert SECONDS - 2.0 <= float(probe["format"]["duration"]) <= SECONDS + 0.5, probe
    audio = result["audio_probe"]
    assert [s["codec_name"] for s in audio["streams"]] == ["aac"], audio
    assert SECONDS - 2.0 <= float(audio["format"]["duration"]) <= SECONDS + 0.5, audio
    ended = [json.loads(line) for line in result["log"] if '"whip_session_ended"' in line]
    assert len(ended) == 1 and ended[0]["reason"] == "deleted", result["log"]
    assert ended[0]["frames"] > 5 * SECONDS and ended[0]["audio_frames"] > 0, ended
    assert ended[0]["opus_frames"] > 0 and ended[0]["opus_undecodable"] == 0, ended
    # The browser sends a keyframe only when asked: the PLIs keep segments near the target.
    assert ended[0]["keyframe_requests"] >= 1 and ended[0]["keyframes"] >= 3, ended
