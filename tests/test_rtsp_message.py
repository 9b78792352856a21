from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ParseError
from ingest.sources.rtsp.message import (
    InterleavedFrame,
    MessageReader,
    Request,
    Response,
    ResponseReader,
)
from tests.vectors.rtsp_publish import (
    FFMPEG_5_1_ANNOUNCE,
    FFMPEG_5_1_REQUESTS,
    FFMPEG_5_1_SDP,
    GSTREAMER_1_22_ANNOUNCE,
    GSTREAMER_1_22_REQUESTS,
    GSTREAMER_1_22_SDP,
)

ALL_REQUESTS = FFMPEG_5_1_REQUESTS + GSTREAMER_1_22_REQUESTS
FUZZ = settings(database=None, max_examples=300)


def read_all(reader: MessageReader, data: bytes) -> list[Request | InterleavedFrame]:
    reader.feed(data)
    return list(reader)


@pytest.mark.parametrize("data", ALL_REQUESTS)
def test_request_round_trip(data: bytes) -> None:
    request = Request.parse(data)
    assert bytes(request) == data


def test_ffmpeg_announce_fields() -> None:
    request = Request.parse(FFMPEG_5_1_ANNOUNCE)
    assert request.method == "ANNOUNCE"
    assert request.uri == "rtsp://127.0.0.1:8554/cam1"
    assert request.version == "RTSP/1.0"
    assert request.header("content-type") == "application/sdp"
    assert request.header("CSEQ") == "2"
    assert request.cseq == "2"
    assert request.header("Session") is None
    assert request.body == FFMPEG_5_1_SDP


def test_gstreamer_announce_fields() -> None:
    request = Request.parse(GSTREAMER_1_22_ANNOUNCE)
    assert request.header("Date") == "Sat, 21 Nov 2026 10:01:36 GMT"
    assert request.header("user-agent") == "GStreamer/1.22.0"
    assert request.body == GSTREAMER_1_22_SDP


@pytest.mark.parametrize("requests", [FFMPEG_5_1_REQUESTS, GSTREAMER_1_22_REQUESTS])
def test_reader_whole_session_in_one_read(requests: tuple[bytes, ...]) -> None:
    items = read_all(MessageReader(), b"".join(requests))
    assert items == [Request.parse(r) for r in requests]


@pytest.mark.parametrize("requests", [FFMPEG_5_1_REQUESTS, GSTREAMER_1_22_REQUESTS])
def test_reader_byte_by_byte(requests: tuple[bytes, ...]) -> None:
    reader = MessageReader()
    items: list[Request | InterleavedFrame] = []
    for byte in b"".join(requests):
        reader.feed(bytes([byte]))
        items.extend(reader)
    assert items == [Request.parse(r) for r in requests]
    assert reader.next_item() is None
    assert reader.buffered == 0


def test_reader_interleaved_frames_between_requests() -> None:
    rtp = InterleavedFrame(0, b"\x80\x60" + bytes(693))
    rtcp = InterleavedFrame(1, bytes(range(28)))
    record, teardown = FFMPEG_5_1_REQUESTS[3], FFMPEG_5_1_REQUESTS[4]
    stream = record + bytes(rtp) + bytes(rtcp) + bytes(rtp) + teardown
    expected = [Request.parse(record), rtp, rtcp, rtp, Request.parse(teardown)]
    assert read_all(MessageReader(), stream) == expected
    for split in (1, 2, 3, 4, 5, 700, len(record) + 2, len(stream) - 3):
        reader = MessageReader()
        items = read_all(reader, stream[:split]) + read_all(reader, stream[split:])
        assert items == expected, split


def test_reader_next_item_returns_none_until_body_complete() -> None:
    reader = MessageReader()
    reader.feed(FFMPEG_5_1_ANNOUNCE[:-10])
    assert reader.next_item() is None
    assert reader.next_item() is None
    reader.feed(FFMPEG_5_1_ANNOUNCE[-10:])
    item = reader.next_item()
    assert isinstance(item, Request)
    assert item.body == FFMPEG_5_1_SDP


def test_reader_skips_blank_lines_and_accepts_bare_lf() -> None:
    reader = MessageReader()
    reader.feed(b"\r\n\r\nOPTIONS * RTSP/1.0\nCSeq: 7\n\n")
    item = reader.next_item()
    assert isinstance(item, Request)
    assert (item.method, item.uri, item.cseq) == ("OPTIONS", "*", "7")


def test_header_folding_and_multiple_values() -> None:
    request = Request.parse(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-A: one\r\n  two\r\nx-a: three\r\n\r\n")
    assert request.header("X-A") == "one two"
    assert request.header_values("x-A") == ("one two", "three")


def test_interleaved_frame_round_trip() -> None:
    data = b"$\x01\x00\x03abc"
    frame = InterleavedFrame.parse(data)
    assert frame == InterleavedFrame(1, b"abc")
    assert bytes(frame) == data
    with pytest.raises(ParseError):
        InterleavedFrame.parse(b"$\x01\x00\x05abc")


def test_response_round_trip_and_reply_to() -> None:
    request = Request.parse(FFMPEG_5_1_REQUESTS[2])
    response = Response.reply_to(request, 200, (("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"),))
    data = bytes(response)
    assert data == (b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    assert Response.parse(data) == response
    bad = Response.reply_to(Request("OPTIONS", "*"), 400)
    assert bytes(bad) == b"RTSP/1.0 400 Bad Request\r\n\r\n"


def test_response_body_gets_content_length() -> None:
    response = Response(200, "OK", (("CSeq", "2"), ("Content-Type", "application/sdp")), b"v=0\r\n")
    data = bytes(response)
    assert b"Content-Length: 5\r\n\r\nv=0\r\n" in data
    parsed = Response.parse(data)
    assert parsed.body == b"v=0\r\n"
    assert parsed.header("content-length") == "5"


def test_response_reader() -> None:
    responses = [
        Response(200, "OK", (("CSeq", "1"), ("Public", "OPTIONS, ANNOUNCE"))),
        Response(461, "Unsupported Transport", (("CSeq", "3"),)),
        Response(200, "OK", (("CSeq", "4"), ("Content-Length", "3")), b"abc"),
    ]
    reader = ResponseReader()
    reader.feed(b"".join(bytes(r) for r in responses) + bytes(InterleavedFrame(1, b"rr")))
    assert list(reader) == [*responses, InterleavedFrame(1, b"rr")]
    with pytest.raises(ParseError, match="status line"):
        reader.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")
        reader.next_item()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"OPTIONS rtsp://h/ RTSP/1.0 extra\r\n\r\n", "request line"),
        (b"OPTIONS rtsp://h/\r\n\r\n", "request line"),
        (b"OPTIONS rtsp://h/ HTTP/1.1\r\n\r\n", "request line"),
        (b"OPT IONS  RTSP/1.0\r\n\r\n", "request line"),
        (b"OPTIONS * RTSP/1.0\r\nno colon here\r\n\r\n", "header line"),
        (b"OPTIONS * RTSP/1.0\r\nBad Name: x\r\n\r\n", "header line"),
        (b"ANNOUNCE * RTSP/1.0\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 0x10\r\n\r\n", "Content-Length"),
        (b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 65537\r\n\r\n", "65537"),
        (b"OPTIONS * RTSP/1.0\r\nX: \xff\xfe\r\n\r\n", "UTF-8"),
    ],
)
def test_reader_rejects(data: bytes, match: str) -> None:
    reader = MessageReader()
    reader.feed(data)
    with pytest.raises(ParseError, match=match):
        reader.next_item()


def test_reader_bounds_header_section() -> None:
    reader = MessageReader()
    reader.feed(b"OPTIONS * RTSP/1.0\r\n" + b"X-Pad: " + b"a" * 17000)
    with pytest.raises(ParseError, match="header section"):
        reader.next_item()
    reader = MessageReader()
    reader.feed(b"OPTIONS * RTSP/1.0\r\n" + b"X-Pad: " + b"a" * 17000 + b"\r\n\r\n")
    with pytest.raises(ParseError, match="header section"):
        reader.next_item()


def test_reader_accepts_body_at_limit() -> None:
    body = b"x" * 65536
    reader = MessageReader()
    reader.feed(bytes(Request("ANNOUNCE", "rtsp://h/a", (("CSeq", "2"),), body)))
    item = reader.next_item()
    assert isinstance(item, Request)
    assert item.body == body


def test_parse_rejects_body_length_mismatch() -> None:
    with pytest.raises(ParseError, match="Content-Length"):
        Request.parse(FFMPEG_5_1_ANNOUNCE[:-1])


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_reader_only_raises_parse_error(chunks: list[bytes]) -> None:
    reader = MessageReader()
    try:
        for chunk in chunks:
            reader.feed(chunk)
            for _ in reader:
                pass
    except ParseError:
        pass


@FUZZ
@given(st.sampled_from(ALL_REQUESTS), st.integers(0, 600), st.binary(min_size=1, max_size=4))
def test_fuzz_reader_mutated_vectors(data: bytes, at: int, garbage: bytes) -> None:
    at = min(at, len(data))
    reader = MessageReader()
    reader.feed(data[:at] + garbage + data[at:])
    try:
        items = list(reader)
    except ParseError:
        return
    assert all(isinstance(item, Request | InterleavedFrame) for item in items)


@FUZZ
@given(
    st.sampled_from(["OPTIONS", "ANNOUNCE", "SETUP", "GET_PARAMETER"]),
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z][A-Za-z0-9\-]{0,15}", fullmatch=True),
            st.from_regex(r"[ -~]{0,30}", fullmatch=True).map(str.strip),
        ),
        max_size=6,
    ),
    st.binary(max_size=100),
)
def test_fuzz_request_round_trip(method: str, headers: list[tuple[str, str]], body: bytes) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    request = Request(method, "rtsp://h/cam", tuple(headers), body)
    reader = MessageReader()
    reader.feed(bytes(request))
    item = reader.next_item()
    assert isinstance(item, Request)
    assert item.method == method and item.body == body
    assert item.headers[: len(headers)] == tuple(headers)
