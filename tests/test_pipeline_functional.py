"""End to end: ffmpeg pushes RTSP into `camflow run`; ffprobe plays the HLS the edge serves.

Runs twice: the embedded default (in-process bus, files) and on the real Kafka and MinIO
that `make test` starts.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests import services
from tests.process import camflow_run, ffmpeg_push, make_clip

pytestmark = pytest.mark.integration
CLIP_SECONDS = 20


@pytest.fixture(scope="session")
def clip20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip20.mp4", CLIP_SECONDS)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_ended(master_url: str, variants: int, timeout: float = 90.0) -> str:
    """Poll until the master names ``variants`` renditions and each media playlist has ENDLIST."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status, master = fetch(master_url)
        if status == 200:
            uris = [line for line in master.splitlines() if line and not line.startswith("#")]
            base = master_url.rsplit("/", 1)[0]
            ended = [fetch(f"{base}/{uri}") for uri in uris]
            if len(uris) == variants and all(s == 200 and "#EXT-X-ENDLIST" in body for s, body in ended):
                return master
            last = master
        time.sleep(0.5)
    raise AssertionError(f"playlists did not end within {timeout} s; last master:\n{last}")


def ffprobe(url: str) -> dict[str, object]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "json",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def backend_args(backend: str) -> tuple[list[str], dict[str, str]]:
    if backend == "embedded":
        return [], {}
    services.require("kafka")
    services.require("s3")
    kafka, s3 = services.kafka_bootstrap(), services.s3_url()
    assert kafka and s3
    run_id = uuid.uuid4().hex[:10]
    return ["--kafka", kafka, "--kafka-prefix", f"t{run_id}.", "--s3", f"{s3.rstrip('/')}/{run_id}"], {}


@pytest.mark.parametrize("backend", ["embedded", "kafka+minio"])
def test_rtsp_push_plays_as_hls(backend: str, clip20: Path, tmp_path: Path) -> None:
    extra, env = backend_args(backend)
    with camflow_run(tmp_path, extra, env) as cf:
        publish, view = cf.token("publish", "cam1"), cf.token("view", "cam1")
        pushed = ffmpeg_push(clip20, cf.rtsp_url("cam1", publish))
        assert pushed.returncode == 0, pushed.stderr
        master_url = cf.http_url(f"/live/cam1/master.m3u8?token={view}")
        master = wait_for_ended(master_url, variants=2)
        assert 'CODECS="avc1.' in master
        assert "RESOLUTION=1280x720" in master and "RESOLUTION=640x360" in master
        assert master.count("FRAME-RATE=30.000") == 2, master  # the clip is 30 fps, both rungs

        probe = ffprobe(master_url)
        streams = probe["streams"]
        assert isinstance(streams, list)
        sizes = sorted((s["width"], s["height"]) for s in streams)
        assert sizes == [(640, 360), (1280, 720)], probe
        assert all(s["codec_name"] == "h264" for s in streams)
        fmt = probe["format"]
        assert isinstance(fmt, dict)
        assert float(fmt["duration"]) >= 16.0, probe

        # Every rendition decodes in a real decoder, frame for frame.
        for index in (0, 1):
            decoded = subprocess.run(
                ["ffmpeg", "-v", "error", "-i", master_url, "-map", f"0:v:{index}", "-f", "null", "-"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert decoded.returncode == 0 and decoded.stderr.strip() == "", decoded.stderr
