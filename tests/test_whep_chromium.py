"""Browser as viewer: headless Chromium plays over WHEP, from `camflow run`, the H.264 of an ffmpeg RTSP
push (with glass-to-glass latency read off the frames on screen) and of Chromium's own WHIP publish.

The page runs in tests/whep_chromium.py inside a loopback-only network namespace (``unshare -rn``), so
every ICE candidate is 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
SECONDS = 8
GOP_MS = 2000  # the RTSP camera's IDR interval (tests/barcode_camera.py)
P50_TARGET_MS = 500  # issue 17's target


def play(tmp_path: Path, source: str) -> dict[str, Any]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to keep Chromium's WebRTC on loopback")
    proc = subprocess.Popen(
        ["unshare", "-rn", sys.executable, "-m", "tests.whep_chromium", str(tmp_path), source, str(SECONDS)],
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
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert "error" not in result, (result, err[-3000:])
    page = result["page"]
    assert page["ok"] and page["status"] == 201 and page["delete"] == 200, page
    assert "connected" in page["states"] and page["location"].startswith("/whep/cam/"), page
    ended = [json.loads(line) for line in result["log"] if '"whep_session_ended"' in line]
    assert len(ended) == 1 and ended[0]["reason"] == "deleted", result["log"]
    return result


def test_chromium_plays_an_rtsp_push_over_whep_with_low_glass_to_glass_latency(tmp_path: Path) -> None:
    result = play(tmp_path, "rtsp")
    page = result["page"]
    assert (page["width"], page["height"]) == (640, 360), page
    stats = page["stats"]
    # Frames dropped at the renderer (late for their display deadline) track the machine's load, not
    # the stream: 50 of 254 on a loaded 2-core CI run with none lost on the wire. A third is a bound a
    # broken stream (timestamps, references) exceeds.
    decoded, dropped = stats["framesDecoded"], stats["framesDropped"]
    assert decoded > 20 * SECONDS and dropped <= decoded / 3, stats
    # It started on the cached IDR (or the first one), not after waiting for the next GOP.
    assert page["firstFrame"] is not None and page["firstFrame"] < GOP_MS * 0.75, page
    latencies = page["latencies"]
    assert len(latencies) >= 10 * (SECONDS - 2), len(latencies)  # stamps read back off the screen
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"WHEP glass-to-glass: p50 {p50:.0f} ms, p95 {p95:.0f} ms over {len(latencies)} frames")
    assert p50 <= P50_TARGET_MS, (p50, p95)


def test_chromium_plays_its_own_whip_publish_over_whep(tmp_path: Path) -> None:
    result = play(tmp_path, "whip")
    page = result["page"]
    assert (page["width"], page["height"]) == (640, 480), page
    stats = page["stats"]
    assert stats["framesDecoded"] > 5 * SECONDS and stats["keyFramesDecoded"] >= 1, stats
    # Its Opus, sent back as it came (no re-encoding): about 50 packets a second.
    audio = page["audio"]
    assert audio["packetsReceived"] > 25 * (SECONDS - 2) and audio["totalSamplesReceived"] > 0, audio
    started = [json.loads(line) for line in result["log"] if '"whep_session_started"' in line]
    assert len(started) == 1, result["log"]


def test_the_player_falls_back_to_hls_and_switches_between_webrtc_and_hls(tmp_path: Path) -> None:
    """`/watch/cam?transport=webrtc` with the stream's one WebRTC slot taken: LL-HLS, saying why; the
    slot freed, WebRTC on request (with its latency), then HLS again (tests/whep_player_chromium.py)."""
    proc = subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "tests.whep_player_chromium", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, (result, proc.stderr[-3000:])
    fallback, webrtc, hls = result["fallback"], result["webrtc"], result["hls"]
    assert fallback["transport"] == "hls" and fallback["error"].startswith("too_many_viewers"), fallback
    assert "LL-HLS" in fallback["latency"] and fallback["button"] == "Switch to WebRTC", fallback
    assert result["released"] == 200
    assert webrtc["status"] == "playing over WebRTC (WHEP)" and webrtc["button"] == "Switch to HLS", webrtc
    assert (webrtc["width"], webrtc["height"]) == (640, 360) and "latency (WebRTC): " in webrtc["latency"]
    assert hls["transport"] == "hls" and hls["playing"], hls
    ended = [json.loads(line) for line in result["log"] if '"whep_session_ended"' in line]
    assert [e["reason"] for e in ended] == ["deleted", "deleted"], result["log"]  # the player's DELETE too
