"""End to end with H.265: ffmpeg pushes a libx265 clip over RTSP (TCP) into `camflow run`; ffprobe
and ffmpeg play the HLS the edge serves. The transcoder keeps the camera's H.265 as a stream copy
(``hvc1``, the ``source-hevc`` rendition) beside an H.264 ladder that browsers play.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from tests.process import camflow_run
from tests.test_pipeline_functional import fetch, ffprobe, wait_for_ended

pytestmark = pytest.mark.integration
CLIP_SECONDS = 10


@pytest.fixture(scope="module")
def clip265(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """640x360 at 25 fps, libx265 with B-frames and an IDR every 2 s, like an H.265 camera."""
    path = tmp_path_factory.mktemp("clips") / "clip265.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"),
            *("-t", str(CLIP_SECONDS), "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
            *("-x265-params", "keyint=50:min-keyint=50:scenecut=0:bframes=3:no-open-gop=1:log-level=error"),
            *("-tag:v", "hvc1", str(path)),
        ],
        check=True,
        timeout=120,
    )
    return path


def hevc_variant(master: str) -> str:
    """The URI of the master's one H.265 variant."""
    lines = master.splitlines()
    found = [lines[i + 1] for i, line in enumerate(lines[:-1]) if 'CODECS="hvc1.' in line]
    assert len(found) == 1, master
    return found[0]


def push(clip: Path, url: str, transport: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *("ffmpeg", "-loglevel", "warning", "-re", "-i", str(clip), "-c", "copy"),
            *("-f", "rtsp", "-rtsp_transport", transport, url),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_h265_push_plays_as_hls(clip265: Path, tmp_path: Path, transport: str) -> None:
    first = random.randrange(40_000, 59_000, 100)  # a small UDP port range of this test's own
    extra = ["--ladder", "source,180p:300k", "--rtsp-udp-ports", f"{first}-{first + 19}"]
    with camflow_run(tmp_path, extra) as cf:
        publish, view = cf.token("publish", "cam265"), cf.token("view", "cam265")
        pushed = push(clip265, cf.rtsp_url("cam265", publish), transport)
        assert pushed.returncode == 0, pushed.stderr
        master_url = cf.http_url(f"/live/cam265/master.m3u8?token={view}")
        master = wait_for_ended(master_url, variants=3)  # source (H.264), source-hevc, 180p
        assert 'CODECS="hvc1.1.6.L' in master, master  # Main profile, from the camera's SPS
        assert master.count("RESOLUTION=640x360") == 2 and "RESOLUTION=320x180" in master

        probe = ffprobe(master_url)
        streams = probe["streams"]
        assert isinstance(streams, list)
        codecs = sorted((s["codec_name"], s["width"], s["height"]) for s in streams)
        assert codecs == [("h264", 320, 180), ("h264", 640, 360), ("hevc", 640, 360)], probe
        fmt = probe["format"]
        assert isinstance(fmt, dict) and float(fmt["duration"]) >= CLIP_SECONDS - 2.5, probe

        # The H.265 rendition decodes frame for frame, with no decoder complaint.
        hevc_url = master_url.rsplit("/", 1)[0] + "/" + hevc_variant(master)
        status, text = fetch(hevc_url)
        assert status == 200 and "#EXT-X-ENDLIST" in text
        decoded = subprocess.run(
            [
                *("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"),
                *("-show_entries", "stream=codec_name,codec_tag_string,nb_read_frames", "-of", "json"),
                hevc_url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert decoded.returncode == 0 and decoded.stderr.strip() == "", decoded.stderr
        (stream,) = json.loads(decoded.stdout)["streams"]
        assert (stream["codec_name"], stream["codec_tag_string"]) == ("hevc", "hvc1")
        assert int(stream["nb_read_frames"]) >= (CLIP_SECONDS - 2) * 25, stream
        ended = [json.loads(line) for line in cf.log.splitlines() if '"publish_ended"' in line]
        assert len(ended) == 1 and ended[0]["segments_published"] >= 4, ended
        assert ended[0]["packets_lost"] == ended[0]["units_damaged"] == 0  # 127.0.0.1 loses nothing
        sessions = [json.loads(line) for line in cf.log.splitlines() if '"rtsp_session_ended"' in line]
        assert [s["transport"] for s in sessions] == [transport]
        assert ("holes_skipped" in ended[0]) == (transport == "udp")  # the jitter buffer: UDP only
