from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ParseError
from ingest.sources.rtsp.sdp import RtpMap, SessionDescription, parse_fmtp_params
from tests.vectors.rtsp_publish import (
    FFMPEG_5_1_SDP,
    FFMPEG_5_1_SPROP,
    GSTREAMER_1_22_SDP,
    GSTREAMER_1_22_SPROP,
)

FUZZ = settings(database=None, max_examples=300)


def test_ffmpeg_sdp() -> None:
    sdp = SessionDescription.parse(FFMPEG_5_1_SDP)
    assert sdp.field("s") == "No Name"
    assert sdp.field("c") == "IN IP4 127.0.0.1"
    assert sdp.attribute("tool") == "libavformat LIBAVFORMAT_VERSION"
    assert sdp.control is None
    (media,) = sdp.media
    assert media.kind == "video"
    assert media.protocol == "RTP/AVP"
    assert media.payload_type == 96
    assert media.rtpmap == RtpMap(96, "H264", 90000, None)
    assert media.fmtp == {
        "packetization-mode": "1",
        "sprop-parameter-sets": FFMPEG_5_1_SPROP,
        "profile-level-id": "640028",
    }
    assert media.control == "streamid=0"
    assert media.fields == (("b", "AS:5415"),)


def test_gstreamer_sdp() -> None:
    sdp = SessionDescription.parse(GSTREAMER_1_22_SDP)
    assert sdp.field("i") == "rtspclientsink"
    assert sdp.field("o") == "- 1254041372 1 IN IP4 127.0.0.1"
    (media,) = sdp.media
    assert media.payload_type == 96
    assert media.rtpmap is not None and media.rtpmap.encoding_name == "H264"
    assert media.rtpmap.clock_rate == 90000
    assert media.fmtp["sprop-parameter-sets"] == GSTREAMER_1_22_SPROP
    assert media.fmtp["profile-level-id"] == "640014"
    assert media.fmtp["level-asymmetry-allowed"] == "1"
    assert media.control == "stream=0"
    assert media.attribute("framerate") == "30"
    assert media.attribute("ts-refclk") == "local"
    assert media.attribute("ssrc") == "2741614968 cname:user3587011059@host-24fb3a9a"
    assert media.attribute("missing") is None
    assert media.fields == (("c", "IN IP4 0.0.0.0"), ("b", "AS:2097"))


@pytest.mark.parametrize("data", [FFMPEG_5_1_SDP, GSTREAMER_1_22_SDP])
def test_round_trip(data: bytes) -> None:
    assert bytes(SessionDescription.parse(data)) == data


def test_audio_video_and_flags() -> None:
    sdp = SessionDescription.parse(
        "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=cam\nt=0 0\na=control:*\na=recvonly\n"
        "m=video 0 RTP/AVP 96 97\na=rtpmap:97 H265/90000\na=rtpmap:96 H264/90000\n"
        "a=fmtp:97 x=1\na=fmtp:96 packetization-mode=1\na=control:trackID=1\n"
        "m=audio 0 RTP/AVP 0\na=control:trackID=2\n"
        "m=audio 0 RTP/AVP 97\na=rtpmap:97 MPEG4-GENERIC/48000/2\n"
        "a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;config=1190\n"
    )
    assert sdp.control == "*"
    assert sdp.attribute("recvonly") == ""
    video, pcmu, aac = sdp.media
    assert video.formats == ("96", "97")
    assert video.rtpmap == RtpMap(96, "H264", 90000)
    assert video.fmtp == {"packetization-mode": "1"}
    assert pcmu.payload_type == 0
    assert pcmu.rtpmap is None  # static payload type: no rtpmap needed
    assert pcmu.control == "trackID=2"
    assert aac.rtpmap == RtpMap(97, "MPEG4-GENERIC", 48000, 2)
    assert aac.fmtp["config"] == "1190"


def test_fmtp_params() -> None:
    assert parse_fmtp_params(" A=1 ;b = 2;; flag ; sprop=ab==,cd= ") == {
        "a": "1",
        "b": "2",
        "flag": "",
        "sprop": "ab==,cd=",
    }


def test_non_rtp_media() -> None:
    sdp = SessionDescription.parse("v=0\no=- 0 0 IN IP4 0\ns=-\nm=application 9 TCP/BFCP *\n")
    assert sdp.media[0].payload_type is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "v=0"),
        ("o=- 0 0 IN IP4 0\nv=0\ns=x\n", "v=0"),
        ("v=1\no=- 0 0 IN IP4 0\ns=x\n", "v=0"),
        ("v=0\ns=x\n", "o="),
        ("v=0\no=- 0 0 IN IP4 0\n", "s="),
        ("v=0\no=x\ns=x\nbad line\n", "SDP line"),
        ("v=0\no=x\ns=x\nA=b\n", "SDP line"),
        ("v=0\no=x\ns=x\nm=video 0 RTP/AVP\n", "media line"),
        ("v=0\no=x\ns=x\nm=video x RTP/AVP 96\n", "media line"),
        ("v=0\no=x\ns=x\nm=video 0 RTP/AVP 200\n", "payload types"),
        ("v=0\no=x\ns=x\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264\n", "rtpmap"),
        ("v=0\no=x\ns=x\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264/0\n", "rtpmap"),
        ("v=0\no=x\ns=x\nm=video 0 RTP/AVP 96\na=rtpmap:x H264/90000\n", "rtpmap"),
        ("v=0\no=x\ns=x\nm=video 0 RTP/AVP 96\na=fmtp:abc x=1\n", "fmtp"),
    ],
)
def test_rejects(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        SessionDescription.parse(text)


def test_rejects_non_utf8() -> None:
    with pytest.raises(ParseError, match="UTF-8"):
        SessionDescription.parse(b"v=0\r\ns=\xff\r\n")


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        SessionDescription.parse(data)


_LINES = [line + "\r\n" for line in (FFMPEG_5_1_SDP + GSTREAMER_1_22_SDP).decode().splitlines()]


@FUZZ
@given(
    st.lists(st.sampled_from(_LINES), max_size=20),
    st.lists(st.tuples(st.integers(0, 2000), st.text(max_size=5)), max_size=3),
)
def test_fuzz_line_soup(lines: list[str], edits: list[tuple[int, str]]) -> None:
    text = "v=0\r\n" + "".join(lines)
    for at, insert in edits:
        at %= len(text)
        text = text[:at] + insert + text[at:]
    try:
        sdp = SessionDescription.parse(text)
    except ParseError:
        return
    assert SessionDescription.parse(bytes(sdp)) == sdp
