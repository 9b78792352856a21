from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    Sps,
    join_annexb,
    nal_type,
    remove_emulation_prevention,
    split_annexb,
)
from ingest.errors import ParseError
from tests.vectors.rtsp_publish import FFMPEG_5_1_SPROP, GSTREAMER_1_22_SPROP


def encode(path: Path, size: str, *extra: str, frames: int = 1) -> bytes:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=30",
            "-frames:v",
            str(frames),
            "-c:v",
            "libx264",
            *extra,
            "-f",
            "h264",
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


def ffprobe_size(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    stream = json.loads(out)["streams"][0]
    return int(stream["width"]), int(stream["height"])


def sprop_sps(sprop: str) -> bytes:
    return base64.b64decode(sprop.split(",")[0])


def test_ffmpeg_sprop_sps() -> None:
    sps = Sps.parse(sprop_sps(FFMPEG_5_1_SPROP))
    assert sps == Sps(profile_idc=100, constraint_flags=0, level_idc=40, width=1920, height=1080, fps=30.0)
    assert sps.codecs == "avc1.640028"  # matches the SDP's profile-level-id=640028


def test_gstreamer_sprop_sps() -> None:
    sps = Sps.parse(sprop_sps(GSTREAMER_1_22_SPROP))
    assert (sps.width, sps.height, sps.fps) == (320, 240, 30.0)
    assert sps.codecs == "avc1.640014"  # profile-level-id=640014


@pytest.mark.parametrize(
    ("size", "extra", "profile"),
    [
        ("640x360", (), 100),
        ("1280x720", (), 100),
        ("1920x1080", (), 100),  # 1088 coded rows, 8 cropped
        ("854x480", ("-profile:v", "baseline"), 66),  # 864 coded columns, 10 cropped
        ("320x240", ("-pix_fmt", "yuv444p"), 244),  # High 4:4:4 (GStreamer without caps filter)
        ("352x288", ("-pix_fmt", "yuv422p"), 122),  # High 4:2:2
        ("720x576", ("-x264-params", "interlaced=1"), 100),  # frame_mbs_only_flag = 0
        ("176x144", ("-x264-params", "cqm=jvt"), 100),  # scaling matrices in the SPS
        ("1918x1078", ("-pix_fmt", "yuv444p"), 244),  # odd crop in 4:4:4 (crop unit 1)
    ],
)
def test_sps_matches_ffprobe(tmp_path: Path, size: str, extra: tuple[str, ...], profile: int) -> None:
    path = tmp_path / "clip.h264"
    nalus = split_annexb(encode(path, size, *extra))
    (sps_nal,) = [n for n in nalus if nal_type(n) == NAL_SPS]
    sps = Sps.parse(sps_nal)
    assert (sps.width, sps.height) == ffprobe_size(path) == tuple(int(v) for v in size.split("x"))
    assert sps.profile_idc == profile
    assert sps.codecs == f"avc1.{sps_nal[1]:02x}{sps_nal[2]:02x}{sps_nal[3]:02x}"
    assert sps.fps == pytest.approx(30.0)


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> BitWriter:
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, header: int) -> bytes:
        bits = [*self.bits, 1]
        bits += [0] * (-len(bits) % 8)
        rbsp = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
        out = bytearray([header])
        zeros = 0
        for byte in rbsp:  # emulation prevention
            if zeros >= 2 and byte <= 3:
                out.append(3)
                zeros = 0
            out.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        return bytes(out)


def baseline_sps(poc_type: int, crop: tuple[int, int, int, int] | None) -> BitWriter:
    w = BitWriter().u(8, 66).u(8, 0xC0).u(8, 30).ue(0).ue(0).ue(poc_type)
    if poc_type == 0:
        w.ue(0)
    elif poc_type == 1:
        w.u(1, 0).se(-2).se(3).ue(2).se(1).se(-1)
    w.ue(1).u(1, 0).ue(10).ue(8).u(1, 1).u(1, 1)
    if crop is None:
        w.u(1, 0)
    else:
        w.u(1, 1)
        for value in crop:
            w.ue(value)
    return w


@pytest.mark.parametrize("poc_type", [0, 1, 2])
def test_hand_built_sps_without_vui(poc_type: int) -> None:
    nal = baseline_sps(poc_type, None).u(1, 0).nal(0x67)
    sps = Sps.parse(nal)
    assert (sps.profile_idc, sps.constraint_flags, sps.level_idc) == (66, 0xC0, 30)
    assert (sps.width, sps.height, sps.fps) == (176, 144, None)
    assert sps.codecs == "avc1.42c01e"


def test_hand_built_sps_with_crop_and_vui_timing() -> None:
    w = baseline_sps(2, (1, 2, 0, 3)).u(1, 1)  # crop 2*(1+2) columns, 2*3 rows; VUI present
    w.u(1, 1).u(8, 255).u(16, 4).u(16, 3)  # aspect_ratio_info: Extended_SAR 4:3
    w.u(1, 1).u(1, 0)  # overscan
    w.u(1, 1).u(3, 5).u(1, 0).u(1, 1).u(24, 0x010101)  # video signal type, colour description
    w.u(1, 1).ue(0).ue(0)  # chroma loc
    w.u(1, 1).u(32, 1001).u(32, 60000).u(1, 1)  # timing: 29.97 fps
    sps = Sps.parse(w.nal(0x67))
    assert (sps.width, sps.height) == (170, 138)
    assert sps.fps == pytest.approx(29.97, abs=0.001)


def test_hand_built_sps_rejects_crop_past_the_picture() -> None:
    with pytest.raises(ParseError, match="cropping"):
        Sps.parse(baseline_sps(0, (50, 50, 0, 0)).u(1, 0).nal(0x67))


@pytest.mark.parametrize(
    ("nal", "match"),
    [
        (b"", "SPS"),
        (bytes.fromhex("68ce3c80"), "SPS"),  # a PPS
        (bytes.fromhex("6764"), "truncated"),
        (bytes.fromhex("67640028") + bytes(8), "exp-Golomb"),
        (bytes.fromhex("6742c01e") + b"\xa0", "truncated"),
    ],
)
def test_sps_rejects(nal: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        Sps.parse(nal)


def test_emulation_prevention() -> None:
    assert (
        remove_emulation_prevention(b"\x00\x00\x03\x01\x00\x00\x03\x00\x03")
        == b"\x00\x00\x01\x00\x00\x00\x03"
    )
    assert remove_emulation_prevention(b"abc") == b"abc"


def test_annexb_split_join() -> None:
    data = b"\x00\x00\x00\x01\x67\x64\x00\x00\x01\x68\xee\x00\x00\x00\x00\x01\x65\x88\x00"
    assert split_annexb(data) == [b"\x67\x64", b"\x68\xee", b"\x65\x88"]
    assert join_annexb([b"\x67\x64", b"\x65"]) == b"\x00\x00\x00\x01\x67\x64\x00\x00\x00\x01\x65"
    assert split_annexb(join_annexb([b"\x67\x64", b"\x65"])) == [b"\x67\x64", b"\x65"]
    assert split_annexb(b"") == []
    with pytest.raises(ParseError, match="start code"):
        split_annexb(b"\x67\x64")
    with pytest.raises(ParseError, match="start code"):
        split_annexb(b"\x01\x00\x00\x01\x67")
    with pytest.raises(ParseError, match="empty NAL"):
        nal_type(b"")


def test_clip_nal_types(tmp_path: Path) -> None:
    nalus = split_annexb(encode(tmp_path / "c.h264", "640x360", "-g", "30", frames=31))
    types = [nal_type(n) for n in nalus]
    assert types.count(NAL_SPS) == types.count(NAL_PPS) == types.count(NAL_IDR) == 2
    assert split_annexb(join_annexb(nalus)) == nalus


@settings(database=None, max_examples=500)
@given(st.binary(max_size=64))
def test_fuzz_sps_and_annexb_only_raise_parse_error(data: bytes) -> None:
    for candidate in (data, b"\x67" + data, b"\x67\x64" + data, b"\x67\xf4" + data):
        try:
            sps = Sps.parse(candidate)
        except ParseError:
            continue
        assert sps.width > 0 and sps.height > 0
    with contextlib.suppress(ParseError):
        split_annexb(data)
