"""The load generator's recording (clip → RTP → file → RTP), its SDP, and its target check."""

from __future__ import annotations

from pathlib import Path

import pytest

from camflow.errors import ConfigError
from ingest.loadgen import Recording, check_target, record_clip, sdp_for
from ingest.sources.rtp.h264 import H264Depacketizer
from ingest.sources.rtp.packet import RtpPacket
from ingest.sources.rtsp.sdp import SessionDescription
from tests.process import make_clip


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    clip = make_clip(tmp_path_factory.mktemp("lg") / "clip.mp4", 2, size="320x240", gop=30)
    return record_clip(clip)


def test_recording_depacketizes_back_to_every_frame(recording: Recording) -> None:
    assert len(recording.frames) == 60 and recording.duration == 2 * 90_000
    sends = [f.send for f in recording.frames]
    assert sends == sorted(sends) and sends[1] - sends[0] == 3000  # paced in decode order
    depacketizer = H264Depacketizer()
    units = []
    for frame in recording.frames:
        for data in frame.packets:
            units += depacketizer.push(RtpPacket.parse(data))
    units += depacketizer.flush()
    assert len(units) == 60 and sum(u.is_idr for u in units) == 2
    assert depacketizer.counters.packets_lost == depacketizer.counters.packets_invalid == 0
    assert min(u.pts for u in units) == 90_000


def test_recording_file_round_trip(recording: Recording, tmp_path: Path) -> None:
    path = tmp_path / "rec.rtp"
    recording.save(path)
    loaded = Recording.load(path)
    assert loaded == recording


def test_bad_recording_file(tmp_path: Path) -> None:
    path = tmp_path / "rec.rtp"
    path.write_bytes(b"\x00\x00\x00\x00\x05\x00abc")
    with pytest.raises(ConfigError, match=r"truncated|bad packet"):
        Recording.load(path)
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match="no packets"):
        Recording.load(path)


def test_sdp_parses_with_ingest_parser(recording: Recording) -> None:
    sdp = SessionDescription.parse(sdp_for(recording, "127.0.0.1"))
    (media,) = sdp.media
    assert media.control == "streamid=0"
    assert "sprop-parameter-sets" in media.fmtp


def test_target_must_be_loopback() -> None:
    assert check_target("rtsp://127.0.0.1:8554", False).host == "127.0.0.1"
    assert check_target("rtsp://localhost:8554", False).effective_port == 8554
    with pytest.raises(ConfigError, match="not loopback"):
        check_target("rtsp://10.1.2.3:8554", False)
    assert check_target("rtsp://10.1.2.3:8554", True).host == "10.1.2.3"
    with pytest.raises(ConfigError, match="--url"):
        check_target("http://127.0.0.1/", False)
