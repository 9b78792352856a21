"""RFC 6381 CODECS strings from parameter sets: captured SPS, real encoder extradata, bad input."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import av
import pytest

from camflow.codecs import avc1, from_extradata, hvc1, remove_emulation_prevention
from camflow.errors import MediaFormatError
from tests.vectors.rtsp_publish import FFMPEG_5_1_SPROP, GSTREAMER_1_22_SPROP

H265_VECTOR = Path("/work/shared/vectors/h265-rtp/expected.h265")
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "h265-rtp" / "expected.h265"


def sprop_sps(sprop: str) -> bytes:
    return base64.b64decode(sprop.split(",")[0])


@pytest.mark.parametrize(
    ("sprop", "expected"),
    [(FFMPEG_5_1_SPROP, "avc1.640028"), (GSTREAMER_1_22_SPROP, "avc1.640014")],
    ids=["ffmpeg-5.1-1080p", "gstreamer-1.22-320x240"],
)
def test_avc1_from_captured_sps(sprop: str, expected: str) -> None:
    assert avc1(sprop_sps(sprop)) == expected


def test_hvc1_from_captured_camera_sps() -> None:
    path = VECTORS if VECTORS.exists() else H265_VECTOR
    data = path.read_bytes()
    assert from_extradata(data[:4096]) == "hvc1.1.6.L123.B0"


def encoded_extradata(tmp_path: Path, codec: str, tag: str) -> tuple[bytes, str]:
    out = tmp_path / f"{codec}.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "0.2",
            "-c:v",
            codec,
            "-tag:v",
            tag,
            "-x265-params",
            "log-level=error",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        return bytes(stream.codec_context.extradata or b""), f"{stream.profile}"


def test_from_extradata_avcc_of_libx264(tmp_path: Path) -> None:
    extradata, profile = encoded_extradata(tmp_path, "libx264", "avc1")
    assert extradata[0] == 1  # avcC
    assert from_extradata(extradata) == "avc1." + extradata[1:4].hex()
    assert profile == "High" and from_extradata(extradata).startswith("avc1.64")


def test_from_extradata_hvcc_of_libx265(tmp_path: Path) -> None:
    extradata, profile = encoded_extradata(tmp_path, "libx265", "hvc1")
    assert profile == "Main"
    codecs = from_extradata(extradata)
    assert codecs.startswith("hvc1.1.6.L"), codecs  # Main profile, compatibility flags 1 and 2


def test_emulation_prevention_removed() -> None:
    assert remove_emulation_prevention(b"\x00\x00\x03\x01\x00\x00\x03\x00") == b"\x00\x00\x01\x00\x00\x00"
    assert remove_emulation_prevention(b"plain") == b"plain"


@pytest.mark.parametrize("bad", [b"", b"\x01", b"\x00\x00\x01\x41\x9a", b"garbage bytes here"])
def test_bad_extradata_is_a_media_format_error(bad: bytes) -> None:
    with pytest.raises(MediaFormatError):
        from_extradata(bad)


def test_wrong_nal_type_refused() -> None:
    with pytest.raises(MediaFormatError, match="NAL type 7"):
        avc1(b"\x68\x00\x00\x00")
    with pytest.raises(MediaFormatError, match="NAL type 33"):
        hvc1(b"\x40\x01\x0c")
