"""`camflow loadgen`: 20 concurrent publish sessions into `camflow run`, no frame lost.

Frames lost = frames the load generator sent per stream minus access units ingest got
for that stream (its ``publish_ended`` event), which must be zero for every stream.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.process import CAMFLOW, camflow_run, make_clip

SEGMENT = "????????.m4s"  # a segment's object name (low-latency parts are NNNNNNNN.PPP.m4s)

pytestmark = pytest.mark.integration
STREAMS = 20
ROW = re.compile(r"^(lg\d{3})\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s*(.*)$")


def loadgen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAMFLOW, "loadgen", *args], capture_output=True, text=True, timeout=timeout)


def test_twenty_streams_into_camflow_run_lose_no_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 4, size="640x360", gop=30)  # shorter than the run: it loops
    with camflow_run(tmp_path, ["--ladder", "source", "--segment-duration", "1", "--processes", "1"]) as cf:
        out = loadgen(
            "--url", f"rtsp://127.0.0.1:{cf.rtsp_port}", "--streams", str(STREAMS), "--duration", "6",
            "--clip", str(clip), "--prefix", "lg", "--token-secret-from", str(cf.data_dir),
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        sent = {m[1]: (int(m[2]), int(m[3])) for m in map(ROW.match, out.stdout.splitlines()) if m}
        assert len(sent) == STREAMS and f"{STREAMS} sessions, 0 failed" in out.stdout

        deadline = time.monotonic() + 60
        ended: dict[str, dict[str, object]] = {}
        while len(ended) < STREAMS and time.monotonic() < deadline:
            for line in cf.log.splitlines():
                if '"publish_ended"' in line:
                    event = json.loads(line)
                    ended[str(event["stream_id"])] = event
            time.sleep(0.5)
        assert sorted(ended) == sorted(sent)
        for stream, (packets, frames) in sent.items():
            event = ended[stream]
            assert frames >= 170, (stream, frames)  # ~6 s at 30 fps
            assert event["rtp_packets"] == packets, (stream, event)
            assert event["units"] == frames, (stream, event)  # zero frames lost
            assert event["segments_dropped"] == 0 and event["segments_unmuxable"] == 0, event

        store = cf.data_dir / "store" / "streams"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with_segments = {p.parts[-4] for p in store.glob(f"lg*/*/source/{SEGMENT}")}
            if len(with_segments) == STREAMS:
                break
            time.sleep(0.5)
        assert len(with_segments) == STREAMS


def test_refuses_remote_targets_and_bad_input(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 1, size="320x240", gop=30)
    remote = loadgen("--url", "rtsp://10.1.2.3:8554", "--clip", str(clip), "--duration", "1")
    assert remote.returncode == 2 and "not loopback" in remote.stderr
    too_many = loadgen("--url", "rtsp://127.0.0.1:9", "--clip", str(clip), "--streams", "5000")
    assert too_many.returncode == 2 and "--streams 5000" in too_many.stderr
    # Nothing listens: every session fails, and the exit code says so.
    down = loadgen("--url", "rtsp://127.0.0.1:9", "--clip", str(clip), "--streams", "2", "--duration", "1")
    assert down.returncode == 1 and "2 sessions, 2 failed" in down.stdout
