from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ParseError
from ingest.sources.rtp.packet import (
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtpExtension,
    RtpPacket,
    SenderReport,
)

FUZZ = settings(database=None, max_examples=500)

# The first bytes ffmpeg 5.1 sent on channel 0 after RECORD: V=2, PT 96, no marker (FU-A start follows).
SIMPLE = bytes.fromhex("80601234000003e8deadbeef") + b"\x7c\x85payload"


def test_parse_simple() -> None:
    packet = RtpPacket.parse(SIMPLE)
    assert packet == RtpPacket(96, 0x1234, 1000, 0xDEADBEEF, b"\x7c\x85payload")
    assert bytes(packet) == SIMPLE


def test_marker_csrc_extension_padding_round_trip() -> None:
    data = (
        bytes([0x80 | 0x20 | 0x10 | 2, 0x80 | 97])
        + struct.pack("!HII", 65535, 0xFFFFFFFF, 1)
        + struct.pack("!II", 11, 22)
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\xaa\x00\x00"
        + b"body"
        + b"\x00\x00\x03"
    )
    packet = RtpPacket.parse(data)
    assert packet.marker
    assert packet.payload_type == 97
    assert packet.sequence_number == 65535
    assert packet.timestamp == 0xFFFFFFFF
    assert packet.csrc == (11, 22)
    assert packet.extension == RtpExtension(0xBEDE, b"\x10\xaa\x00\x00")
    assert packet.padding == 3
    assert packet.payload == b"body"
    assert bytes(packet) == data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80\x60\x00", "at least 12"),
        (bytes.fromhex("40601234000003e8deadbeef"), "version 1"),
        (bytes.fromhex("00601234000003e8deadbeef"), "version 0"),
        (bytes.fromhex("83601234000003e8deadbeef") + bytes(8), "CSRC"),
        (bytes.fromhex("90601234000003e8deadbeef") + b"\xbe\xde", "extension"),
        (bytes.fromhex("90601234000003e8deadbeef") + b"\xbe\xde\x00\x02" + bytes(4), "extension"),
        (bytes.fromhex("a0601234000003e8deadbeef") + b"ab\x00", "padding count 0"),
        (bytes.fromhex("a0601234000003e8deadbeef") + b"ab\x04", "padding count 4"),
    ],
)
def test_parse_rejects(data: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        RtpPacket.parse(data)


def test_build_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="payload type"):
        RtpPacket(128, 0, 0, 0, b"")
    with pytest.raises(ValueError, match="sequence"):
        RtpPacket(96, 65536, 0, 0, b"")
    with pytest.raises(ValueError, match="multiple of 4"):
        RtpPacket(96, 0, 0, 0, b"", extension=RtpExtension(1, b"abc"))


# ffmpeg's first RTCP frame on channel 1 is a 28-byte sender report.
SR_28 = (
    bytes([0x80, 200])
    + struct.pack("!H", 6)
    + struct.pack("!I", 0x11223344)
    + struct.pack("!Q", (3_900_000_000 << 32) | (1 << 31))
    + struct.pack("!III", 90000, 10, 6950)
)


def test_sender_report() -> None:
    assert len(SR_28) == 28
    report = SenderReport.parse(SR_28)
    assert report.ssrc == 0x11223344
    assert report.ntp_seconds == 3_900_000_000.5
    assert report.rtp_timestamp == 90000
    assert (report.packet_count, report.octet_count) == (10, 6950)
    assert bytes(report) == SR_28


def test_sender_report_in_compound_with_sdes() -> None:
    sdes = bytes([0x81, 202]) + struct.pack("!H", 2) + struct.pack("!I", 0x11223344) + b"\x01\x00\x00\x00"
    packets = RtcpPacket.parse_compound(SR_28 + sdes)
    assert [p.packet_type for p in packets] == [200, 202]
    assert packets[1].count == 1
    assert SenderReport.parse(SR_28 + sdes).rtp_timestamp == 90000
    with pytest.raises(ParseError, match="sender report"):
        SenderReport.parse(sdes)


def test_receiver_report_round_trip() -> None:
    block = ReportBlock(0x11223344, 25, -3, 70000, 12, 0x12345678, 65536)
    report = ReceiverReport(0xCAFEF00D, (block,))
    data = bytes(report)
    assert len(data) == 32
    assert data[:4] == bytes([0x81, 201, 0, 7])
    assert ReceiverReport.parse(data) == report
    empty = ReceiverReport(1)
    assert bytes(empty) == bytes([0x80, 201, 0, 1, 0, 0, 0, 1])
    assert ReceiverReport.parse(bytes(empty)) == empty


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80\xc8\x00", "at least 8"),
        (b"\x40\xc8\x00\x01abcd", "version"),
        (b"\x80\xc8\x00\x06abcd", "length"),
        (b"\x80\xc8\x00\x01abcd", "at least 20"),
        (b"\xa0\xc8\x00\x01abc\x09", "padding"),
    ],
)
def test_rtcp_rejects(data: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        SenderReport.parse(data)


@FUZZ
@given(st.binary(max_size=100))
def test_fuzz_parse_only_raises_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except ParseError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet


@FUZZ
@given(st.binary(min_size=12, max_size=100))
def test_fuzz_version_2_bytes(data: bytes) -> None:
    data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]
    with contextlib.suppress(ParseError):
        RtpPacket.parse(data)


@FUZZ
@given(st.binary(max_size=100))
def test_fuzz_rtcp(data: bytes) -> None:
    for parse in (RtcpPacket.parse_compound, SenderReport.parse, ReceiverReport.parse):
        with contextlib.suppress(ParseError):
            parse(data)


@FUZZ
@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=64),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))),
    st.integers(0, 255),
)
def test_fuzz_round_trip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrc: list[int],
    ext: tuple[int, bytes] | None,
    padding: int,
) -> None:
    extension = RtpExtension(*ext) if ext is not None else None
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrc), extension, padding)
    assert RtpPacket.parse(bytes(packet)) == packet
