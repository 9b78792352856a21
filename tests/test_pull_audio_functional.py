"""A pulled camera's audio: gst-rtsp-server serves H.264 plus AAC (RFC 3640 ``mpeg4-generic`` or
``MP4A-LATM``) or G.711 A-law; `camflow run --pull` pulls it with PyAV; the HLS the edge serves has an
AAC audio rendition (EXT-X-MEDIA) whose segments are as long as the video's, that ffprobe reads and
ffmpeg decodes to the served tone.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest

from ingest.codecs.aac import AAC_FRAME
from tests.process import camflow_run, free_port, stop_process
from tests.test_pipeline_functional import fetch, wait_for_ended
from tests.test_pull_functional import events, gst_rtsp_available, rtsp_server, wait_until

SEGMENT = "????????.m4s"  # a segment's object name (low-latency parts are NNNNNNNN.PPP.m4s)

pytestmark = pytest.mark.integration
SEGMENTS = 4
TONE = "audiotestsrc is-live=true wave=sine freq=440 volume=0.5 ! audioconvert ! audioresample"
AUDIO = {  # served audio branch, (rate, channels) of the AAC in the segments
    "mpeg4-generic": (
        f"{TONE} ! audio/x-raw,rate=44100,channels=2 ! avenc_aac ! rtpmp4gpay name=pay1 pt=97",
        44100,
        2,
    ),
    "mp4a-latm": (
        f"{TONE} ! audio/x-raw,rate=48000,channels=1 ! avenc_aac ! rtpmp4apay name=pay1 pt=98",
        48000,
        1,
    ),
    "pcma": (f"{TONE} ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1", 8000, 1),
}


@pytest.fixture(scope="module", autouse=True)
def _need_gst_rtsp_server() -> None:
    if not gst_rtsp_available():
        pytest.fail("gst-rtsp-server missing: run scripts/install-system.sh (gir1.2-gst-rtsp-server-1.0)")


def probe(url: str) -> dict[str, object]:
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-show_entries"),
            *("stream=codec_type,codec_name,sample_rate,channels:format=duration", "-of", "json", url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("payload", sorted(AUDIO))
def test_pulled_camera_audio_reaches_the_hls(payload: str, tmp_path: Path) -> None:
    branch, rate, channels = AUDIO[payload]
    port = free_port()
    extra = ["--ladder", "source", "--segment-duration", "1", "--pull", f"cam9=rtsp://127.0.0.1:{port}/test"]
    with rtsp_server(tmp_path, port, branch) as server, camflow_run(tmp_path, extra) as cf:
        segments = cf.data_dir / "store" / "streams" / "cam9"
        wait_until(
            f"{SEGMENTS} segments", lambda: len(list(segments.glob(f"*/source/{SEGMENT}"))) >= SEGMENTS, 60
        )
        stop_process(server)  # the camera goes away: the partial segment is flushed, the playlists end
        wait_until("publish_ended", lambda: events(cf, "publish_ended"), 30)
        [connected] = events(cf, "pull_connected")
        assert connected["audio"] == "mp4a.40.2", connected

        view = cf.token("view", "cam9")
        master_url = cf.http_url(f"/live/cam9/master.m3u8?token={view}")
        master = m3u8.loads(wait_for_ended(master_url, variants=1))
        [media] = master.media
        assert (media.type, media.channels) == ("AUDIO", str(channels)), master.dumps()
        [variant] = master.playlists
        assert variant.stream_info.codecs.endswith(",mp4a.40.2"), variant.stream_info.codecs

        base = master_url.rsplit("/", 1)[0]
        video = m3u8.loads(fetch(f"{base}/source.m3u8?token={view}")[1])
        audio = m3u8.loads(fetch(f"{base}/audio.m3u8?token={view}")[1])
        assert len(video.segments) >= SEGMENTS and audio.is_endlist
        assert [s.duration for s in audio.segments] == [s.duration for s in video.segments]
        video_seconds = sum(s.duration for s in video.segments)

        streams = probe(master_url)["streams"]
        assert isinstance(streams, list)
        [aac] = [s for s in streams if s["codec_type"] == "audio"]
        assert (aac["codec_name"], int(aac["sample_rate"]), aac["channels"]) == ("aac", rate, channels), aac
        # The audio track covers the video's time: its own duration, and what ffmpeg decodes from it.
        audio_probe = probe(f"{base}/audio.m3u8?token={view}")
        audio_seconds = float(audio_probe["format"]["duration"])  # type: ignore[index]
        assert abs(audio_seconds - video_seconds) <= 0.5, (audio_seconds, video_seconds)
        decoded = subprocess.run(
            [*("ffmpeg", "-v", "error", "-i", f"{base}/audio.m3u8?token={view}", "-f", "s16le", "-")],
            capture_output=True,
            timeout=120,
        )
        assert decoded.returncode == 0 and decoded.stderr.strip() == b"", decoded.stderr
        pcm = decoded.stdout
        assert abs(len(pcm) / (2 * channels * rate) - video_seconds) <= 0.5, (len(pcm), video_seconds)
        middle = len(pcm) // 2 & ~1
        loudest = max(
            abs(int.from_bytes(pcm[i : i + 2], "little", signed=True))
            for i in range(middle, middle + 8000, 2)
        )
        assert loudest > 1000, loudest  # the served tone, not silence filling a hole
        # In sync: the tone starts with the video (both start at PLAY; placed by pts, not by arrival).
        # Measured 0.06-0.07 s of leading silence: the encoder's and FFmpeg's start-up, a frame or so.
        loud = (
            i
            for i in range(0, len(pcm) - 1, 2)
            if abs(int.from_bytes(pcm[i : i + 2], "little", signed=True)) > 1000
        )
        assert next(loud) / (2 * channels * rate) <= 0.5
        ended = events(cf, "publish_ended")[0]
        assert ended["segments_dropped"] == 0 and ended.get("audio_late_dropped", 0) == 0, ended


# 20 ms A-law packets (a G.711 camera's usual ptime), so the served audio ends within 20 ms of the video.
ALAW_20MS = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.5 samplesperbuffer=160 ! audioconvert "
    "! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1"
)


def track_end(rendition: Path, segment: str) -> float:
    """Where the one track of a rendition's segment ends (its last sample's end), in seconds."""
    data = (rendition / "init.mp4").read_bytes() + (rendition / segment).read_bytes()
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams[0]
        assert stream.time_base is not None
        ends = [p.pts + (p.duration or 0) for p in container.demux(stream) if p.size and p.pts is not None]
        return float(max(ends) * stream.time_base)


def trailing_quiet_seconds(rendition: Path, segment: str) -> float:
    """How long the decoded audio of one segment is quiet (no sample over 1000 of 32768) at its end."""
    data = (rendition / "init.mp4").read_bytes() + (rendition / segment).read_bytes()
    with av.open(io.BytesIO(data), "r") as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    loud = np.flatnonzero(np.abs(pcm) > 1000 / 32768)
    assert loud.size, "the last segment holds no tone at all"
    return float((pcm.size - 1 - loud[-1]) / rate)


@pytest.mark.parametrize("end", ["source_gone", "service_stopped"])
def test_transcoded_audio_tail_is_flushed_into_the_last_segment(end: str, tmp_path: Path) -> None:
    """G.711 is encoded to AAC while pulled: when the source ends, the AAC encoder still holds up to two
    frames (256 ms at 8 kHz). They must reach the last segment, whose audio then ends with its video."""
    port = free_port()
    extra = ["--ladder", "source", "--segment-duration", "1", "--pull", f"cam9=rtsp://127.0.0.1:{port}/test"]
    with rtsp_server(tmp_path, port, ALAW_20MS) as server, camflow_run(tmp_path, extra) as cf:
        segments = cf.data_dir / "store" / "streams" / "cam9"
        wait_until("3 segments", lambda: len(list(segments.glob(f"*/audio/{SEGMENT}"))) >= 3, 60)
        if end == "source_gone":
            stop_process(server)
            wait_until("publish_ended", lambda: events(cf, "publish_ended"), 30)
            playlist = segments / "audio.m3u8"
            wait_until("the ended playlist", lambda: b"#EXT-X-ENDLIST" in playlist.read_bytes(), 30)
        else:
            assert stop_process(cf.proc) == 0, cf.log[-3000:]
        [ended] = events(cf, "publish_ended")
        assert str(ended["reason"]).startswith(
            "server stopping" if end == "service_stopped" else "source failed"
        )
    [audio] = segments.glob("*/audio")
    last = sorted(audio.glob(SEGMENT))[-1].name
    assert last == f"{ended['last_seq']:08d}.m4s", (last, ended)  # the flushed partial segment
    # A segment's audio ends up to a frame before its video (each AAC frame goes to the segment its
    # end falls in). Without the encoder's tail it ended 0.16-0.25 s (1-2 frames) short, measured.
    short = track_end(audio.parent / "source", last) - track_end(audio, last)
    assert 0 <= short < AAC_FRAME / 8000, short
    assert trailing_quiet_seconds(audio, last) < 0.1  # the tail is the tone, not silence filling a hole
