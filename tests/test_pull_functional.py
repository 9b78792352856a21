"""Pull sources against a real RTSP server: GStreamer's gst-rtsp-server (python3-gi, system Python).

The server serves ``videotestsrc ! x264enc ! rtph264pay`` (SPS/PPS only in the SDP, as many
cameras do); `camflow run --pull` pulls it; ffprobe plays the HLS the edge serves. The server
is stopped (the stream goes offline) and restarted (the source reconnects into a new epoch),
and a source that is down at start is pulled once it comes up. An H.265 camera
(``x265enc ! rtph265pay``, VPS/SPS/PPS in the SDP and in-band only before the first picture) is
pulled into the same segments as a pushed one; a codec ingest does not take is a clear error.
(Pulled audio: test_pull_audio_functional.)
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.process import Camflow, camflow_run, free_port, stop_process
from tests.test_h265_functional import hevc_variant
from tests.test_health_functional import first_sse_data, scrape, value
from tests.test_pipeline_functional import fetch, wait_for_ended

pytestmark = pytest.mark.integration
SEGMENT = "????????.m4s"  # a segment's object name (low-latency parts are NNNNNNNN.PPP.m4s)
SYSTEM_PYTHON = "/usr/bin/python3"

GST_SERVER = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer


Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
video, audio = sys.argv[2], sys.argv[3]
factory.set_launch(
    f"( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 ! {video} {audio} )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/test", factory)
if server.attach(None) == 0:
    sys.exit("could not listen")
print("ready", flush=True)
GLib.MainLoop().run()
"""


H264 = (
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=500 ! rtph264pay name=pay0 pt=96"
)
# x265 writes VPS/SPS/PPS before its first picture only (repeat-headers off): later IRAPs get the SDP's.
H265 = (
    "x265enc speed-preset=ultrafast key-int-max=25 bitrate=500 "
    'option-string="bframes=2:scenecut=0:open-gop=0" ! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96'
)


def gst_rtsp_available() -> bool:
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def _need_gst_rtsp_server() -> None:
    if not gst_rtsp_available():
        pytest.fail("gst-rtsp-server missing: run scripts/install-system.sh (gir1.2-gst-rtsp-server-1.0)")


@contextmanager
def rtsp_server(
    tmp: Path, port: int, audio: str = "", video: str = H264
) -> Iterator[subprocess.Popen[bytes]]:
    """gst-rtsp-server on 127.0.0.1:port/test until it prints ready (bounded); stopped by PID after.
    ``video``: encoder and payloader (named pay0) after the test source; ``audio``: a second branch of
    the served pipeline, ending in a payloader named pay1."""
    script, log = tmp / "gst_rtsp_server.py", tmp / f"gst-{port}-{time.monotonic_ns()}.log"
    with gst_server("gst-rtsp-server", script, GST_SERVER, [str(port), video, audio], log) as proc:
        yield proc


@contextmanager
def gst_server(
    what: str, script: Path, text: str, args: Sequence[str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``text`` written to ``script`` and run by the system Python (PyGObject) with ``args`` until it
    prints ready (at most 30 s); stopped by PID after. ``what`` names it in the error."""
    script.write_text(text)
    with log.open("wb") as out:
        proc = subprocess.Popen([SYSTEM_PYTHON, str(script), *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc)


def wait_until(what: str, check: object, timeout: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s")


def events(cf: Camflow, name: str) -> list[dict[str, object]]:
    found = []
    for line in cf.log.splitlines():
        if f'"{name}"' in line:
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [e for e in found if e.get("event") == name]


def epochs_with_segments(cf: Camflow, stream: str) -> list[str]:
    root = cf.data_dir / "store" / "streams" / stream
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob(f"source/{SEGMENT}")))


def ffprobe_video(url: str) -> dict[str, object]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    streams = json.loads(out.stdout)["streams"]
    assert streams, out.stdout
    first: dict[str, object] = streams[0]
    return first


def test_pull_plays_goes_offline_and_reconnects_into_a_new_epoch(tmp_path: Path) -> None:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/test"
    extra = ["--ladder", "source", "--segment-duration", "1", "--pull", f"cam7={url}"]
    with rtsp_server(tmp_path, port) as server, camflow_run(tmp_path, extra) as cf:
        view = cf.token("view", "cam7")
        wait_until(
            "first epoch has 3 segments",
            lambda: len(list((cf.data_dir / "store" / "streams" / "cam7").glob(f"*/source/{SEGMENT}"))) >= 3,
            60,
        )
        master = cf.http_url(f"/live/cam7/master.m3u8?token={view}")
        video = ffprobe_video(master)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240), video
        first_epochs = epochs_with_segments(cf, "cam7")
        assert len(first_epochs) == 1

        stop_process(server)
        wait_until("publish_ended after the server stopped", lambda: events(cf, "publish_ended"), 30)
        ended = events(cf, "publish_ended")[0]
        assert str(ended["reason"]).startswith("source failed"), ended
        assert ended["segments_published"] and ended["segments_dropped"] == 0, ended
        wait_until("a retry failed while the server is down", lambda: events(cf, "pull_failed"), 30)

        with rtsp_server(tmp_path, port):
            wait_until("a second epoch with segments", lambda: len(epochs_with_segments(cf, "cam7")) == 2, 90)
            connected = events(cf, "pull_connected")
            assert len(connected) == 2 and connected[0]["epoch"] != connected[1]["epoch"], connected
            assert ffprobe_video(master)["codec_name"] == "h264"
    states = [e for e in events(cf, "publish_started") if e.get("stream_id") == "cam7"]
    assert len(states) == 2


def test_pulled_h265_camera_is_segmented_like_a_pushed_one(tmp_path: Path) -> None:
    port = free_port()
    extra = [
        "--ladder",
        "source",
        "--segment-duration",
        "1",
        "--pull",
        f"cam265=rtsp://127.0.0.1:{port}/test",
    ]
    with rtsp_server(tmp_path, port, video=H265) as server, camflow_run(tmp_path, extra) as cf:
        view = cf.token("view", "cam265")
        wait_until(
            "4 segments",
            lambda: (
                len(list((cf.data_dir / "store" / "streams" / "cam265").glob(f"*/source/{SEGMENT}"))) >= 4
            ),
            90,
        )
        [connected] = events(cf, "pull_connected")
        assert connected["codec"] == "hevc", connected
        # Health, as an operator sees it while the source is live: a pulled session, counted frames,
        # the stream live, and the per-stream health feed.
        metrics = scrape(cf.metrics_url())
        assert value(metrics, "camflow_ingest_sessions", protocol="pull") == 1
        assert value(metrics, "camflow_ingest_frames_total", protocol="pull") > 0
        assert value(metrics, "camflow_stream_state", stream="cam265", state="live") == 1
        health = first_sse_data(cf.http_url(f"/api/streams/cam265/health?token={view}"))
        assert health["state"] == "live", health
        # The IRAPs after the first carry no VPS/SPS/PPS: the SDP's are put before them, and logged.
        corrected = events(cf, "media_corrected")
        assert corrected and all(e["stream_id"] == "cam265" for e in corrected), corrected
        assert sum(int(str(e.get("params_inserted", 0))) for e in corrected) >= 2, corrected

        stop_process(server)
        wait_until("publish_ended", lambda: events(cf, "publish_ended"), 30)
        master_url = cf.http_url(f"/live/cam265/master.m3u8?token={view}")
        master = wait_for_ended(master_url, variants=2)  # source (H.264), source-hevc
        assert 'CODECS="hvc1.1.6.L' in master and master.count("RESOLUTION=320x240") == 2, master
        hevc_url = master_url.rsplit("/", 1)[0] + "/" + hevc_variant(master)
        decoded = subprocess.run(
            [
                *("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"),
                *("-show_entries", "stream=codec_name,codec_tag_string,width,height,nb_read_frames"),
                *("-of", "json", hevc_url),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert decoded.returncode == 0 and decoded.stderr.strip() == "", decoded.stderr
        (stream,) = json.loads(decoded.stdout)["streams"]
        assert (stream["codec_name"], stream["codec_tag_string"]) == ("hevc", "hvc1"), stream
        assert (stream["width"], stream["height"]) == (320, 240), stream
        segments = sum(1 for line in fetch(hevc_url)[1].splitlines() if line.startswith("#EXTINF"))
        assert segments >= 4 and int(stream["nb_read_frames"]) >= 3 * 25, (segments, stream)
        [ended] = events(cf, "publish_ended")
        assert ended["segments_dropped"] == ended["segments_unmuxable"] == 0, ended
        assert int(str(ended["params_inserted"])) >= segments - 1, ended  # one IRAP a segment, 1 s GOP


def test_a_codec_ingest_does_not_take_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    extra = ["--ladder", "source", "--pull", f"cam3=rtsp://127.0.0.1:{port}/test"]
    vp8 = "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96"
    with rtsp_server(tmp_path, port, video=vp8), camflow_run(tmp_path, extra) as cf:
        wait_until("a failed pull", lambda: events(cf, "pull_failed"), 30)
        failed = events(cf, "pull_failed")[0]
        assert "video codec vp8, expected h264 or hevc" in str(failed["error"]), failed
        assert failed["connects"] == 0 and not events(cf, "publish_started"), failed


def test_source_down_at_start_is_pulled_once_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    sources = tmp_path / "sources.toml"
    # The camera's URL carries credentials (the server here asks for none): they never show.
    sources.write_text(f'[cam8]\nurl = "rtsp://cam:Secr3t-pw@127.0.0.1:{port}/test"\ntransport = "udp"\n')
    extra = [
        "--ladder",
        "source",
        "--segment-duration",
        "1",
        "--sources",
        str(sources),
        "--health-interval",
        "1",
    ]
    with camflow_run(tmp_path, extra) as cf:
        wait_until(
            "two failed attempts with the source down", lambda: len(events(cf, "pull_failed")) >= 2, 30
        )
        failed = events(cf, "pull_failed")
        assert all(e["stream_id"] == "cam8" and e["connects"] == 0 for e in failed), failed
        assert float(str(failed[1]["retry_in"])) > 0
        # An operator sees the camera that never came up: its state, why, and when it is tried next.
        admin, view = cf.token("admin", "*"), cf.token("view", "cam8")

        def listed() -> dict[str, object]:
            streams = json.loads(fetch(cf.http_url(f"/api/streams?token={admin}"))[1])["streams"]
            return next((s for s in streams if s["stream"] == "cam8"), {})

        wait_until("cam8 listed by /api/streams", lambda: listed().get("state") == "offline", 30)
        row = listed()
        assert re.search(
            r"^pull failed .*\(attempt \d+, (next in [\d.]+ s|trying now)\)$", str(row["reason"])
        ), row
        health = first_sse_data(cf.http_url(f"/api/streams/cam8/health?token={view}"))
        assert health["state"] == "offline" and "pull failed" in str(health["reason"]), health
        metrics = scrape(cf.metrics_url())
        assert value(metrics, "camflow_ingest_pull_failures_total", stream="cam8") >= 2
        assert value(metrics, "camflow_ingest_pull_connected", stream="cam8") == 0
        with rtsp_server(tmp_path, port):
            wait_until(
                "segments from the source",
                lambda: (
                    len(list((cf.data_dir / "store" / "streams" / "cam8").glob(f"*/source/{SEGMENT}"))) >= 2
                ),
                90,
            )
            view = cf.token("view", "cam8")
            video = ffprobe_video(cf.http_url(f"/live/cam8/master.m3u8?token={view}"))
            assert (video["width"], video["height"]) == (320, 240)
            assert value(scrape(cf.metrics_url()), "camflow_ingest_pull_connected", stream="cam8") == 1
        assert events(cf, "pull_connected")[0]["stream_id"] == "cam8"
        assert "Secr3t-pw" not in cf.log


def test_bad_pull_flag_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *__import__("tests.process", fromlist=["CAMFLOW"]).CAMFLOW,
            "ingest",
            "--kafka",
            "127.0.0.1:1",
            "--pull",
            "cam7-http://x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "expected NAME=rtsp://" in out.stderr
