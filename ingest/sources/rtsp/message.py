"""RTSP/1.0 messages (RFC 2326): requests, responses, interleaved binary frames, and incremental readers."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ingest.errors import ParseError

RTSP_VERSION = "RTSP/1.0"
MAX_HEADER_SIZE = 16 * 1024
MAX_BODY_SIZE = 64 * 1024

Headers = tuple[tuple[str, str], ...]

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"RTSP/\d\.\d")


def _lookup(headers: Headers, name: str) -> tuple[str, ...]:
    lower = name.lower()
    return tuple(value for key, value in headers if key.lower() == lower)


def _serialise(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body and not _lookup(headers, "Content-Length"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _content_length(headers: Headers, max_body_size: int) -> int:
    values = set(_lookup(headers, "Content-Length"))
    if not values:
        return 0
    if len(values) > 1:
        raise ParseError(f"Content-Length {sorted(values)}: expected a single value")
    (value,) = values
    if not value.isascii() or not value.isdigit():
        raise ParseError(f"Content-Length {value!r}: expected a non-negative decimal integer")
    length = int(value)
    if length > max_body_size:
        raise ParseError(f"Content-Length {length}: expected at most {max_body_size}")
    return length


def _parse_head(head: bytes) -> tuple[str, Headers]:
    """The start line and headers of a header section (without the blank line that ends it)."""
    try:
        text = head.decode()
    except UnicodeDecodeError as exc:
        raise ParseError(f"RTSP header bytes {head[exc.start : exc.end]!r}: expected UTF-8") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # obsolete line folding continues the previous value
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ParseError(f"RTSP header line {line[:80]!r}: expected 'Name: value'")
        headers.append((name, value.strip(" \t")))
    return lines[0], tuple(headers)


def _parse_request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or not _VERSION.fullmatch(parts[2]):
        raise ParseError(f"RTSP request line {line[:120]!r}: expected 'METHOD URI RTSP/1.0'")
    return parts[0], parts[1], parts[2]


def _parse_status_line(line: str) -> tuple[str, int, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not _VERSION.fullmatch(version) or len(code) != 3 or not code.isascii() or not code.isdigit():
        raise ParseError(f"RTSP status line {line[:120]!r}: expected 'RTSP/1.0 <3-digit code> <reason>'")
    return version, int(code), reason


def _parse_message(data: bytes) -> tuple[str, Headers, bytes]:
    """A complete message to (start line, headers, body); the body must match Content-Length exactly."""
    end, sep = _find_head_end(data, 0)
    if end < 0:
        raise ParseError(f"RTSP message {data[:40]!r}: expected a header section ending with an empty line")
    start, headers = _parse_head(data[:end])
    body = data[end + sep :]
    if len(body) != _content_length(headers, MAX_BODY_SIZE):
        raise ParseError(f"RTSP body of {len(body)} bytes: expected Content-Length bytes")
    return start, headers, body


def _find_head_end(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """Index and length of the first empty line (CRLF CRLF or LF LF) from ``start``; (-1, 0) if none."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf + 2):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)


class _HeaderLookup:
    headers: Headers

    def header(self, name: str) -> str | None:
        """The first value of a header, case-insensitively; None when absent."""
        values = _lookup(self.headers, name)
        return values[0] if values else None

    def header_values(self, name: str) -> tuple[str, ...]:
        return _lookup(self.headers, name)


@dataclass(frozen=True)
class Request(_HeaderLookup):
    method: str
    uri: str
    headers: Headers = ()
    body: bytes = b""
    version: str = RTSP_VERSION

    @property
    def cseq(self) -> str | None:
        return self.header("CSeq")

    @classmethod
    def parse(cls, data: bytes) -> Request:
        """Parse one complete request (header section and its whole body)."""
        start, headers, body = _parse_message(data)
        method, uri, version = _parse_request_line(start)
        return cls(method, uri, headers, body, version)

    def __bytes__(self) -> bytes:
        return _serialise(f"{self.method} {self.uri} {self.version}", self.headers, self.body)


@dataclass(frozen=True)
class Response(_HeaderLookup):
    status: int
    reason: str
    headers: Headers = ()
    body: bytes = b""
    version: str = RTSP_VERSION

    @classmethod
    def reply_to(cls, request: Request, status: int, headers: Headers = (), body: bytes = b"") -> Response:
        """A response to ``request`` that echoes its CSeq first; the reason phrase comes from the status."""
        cseq = request.header("CSeq")
        echoed: Headers = (("CSeq", cseq),) if cseq is not None else ()
        return cls(status, REASONS.get(status, "Unknown"), echoed + headers, body)

    @classmethod
    def parse(cls, data: bytes) -> Response:
        start, headers, body = _parse_message(data)
        version, status, reason = _parse_status_line(start)
        return cls(status, reason, headers, body, version)

    def __bytes__(self) -> bytes:
        return _serialise(f"{self.version} {self.status} {self.reason}", self.headers, self.body)


@dataclass(frozen=True)
class InterleavedFrame:
    """A binary frame on the RTSP connection (RFC 2326 10.12): ``$``, channel, 16-bit length, payload."""

    channel: int
    payload: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.channel <= 255 or len(self.payload) > 0xFFFF:
            raise ValueError(
                f"channel {self.channel} / {len(self.payload)} bytes: expected 0..255 / <= 65535"
            )

    @classmethod
    def parse(cls, data: bytes) -> InterleavedFrame:
        if len(data) < 4 or data[0] != 0x24:
            raise ParseError(f"interleaved frame {data[:4]!r}: expected '$', channel, 16-bit length")
        _, channel, length = struct.unpack_from("!BBH", data)
        if len(data) != 4 + length:
            raise ParseError(f"interleaved frame of {len(data) - 4} payload bytes: header says {length}")
        return cls(channel, bytes(data[4:]))

    def __bytes__(self) -> bytes:
        return struct.pack("!BBH", 0x24, self.channel, len(self.payload)) + self.payload


M = TypeVar("M", Request, Response)


class _Reader(Generic[M]):
    """Incremental reader: ``feed`` bytes, then take items until ``next_item`` returns None (need more).

    After a ParseError the connection is out of sync: answer 400 and close it.
    """

    def __init__(self, *, max_header_size: int = MAX_HEADER_SIZE, max_body_size: int = MAX_BODY_SIZE) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self._buf = bytearray()
        self._pos = 0
        self._pending: tuple[str, Headers, int] | None = None  # parsed head waiting for its body

    def feed(self, data: bytes) -> None:
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as an item."""
        return len(self._buf) - self._pos

    def __iter__(self) -> Iterator[M | InterleavedFrame]:
        while (item := self.next_item()) is not None:
            yield item

    def next_item(self) -> M | InterleavedFrame | None:
        buf = self._buf
        if self._pending is None:
            while self._pos < len(buf) and buf[self._pos] in (0x0D, 0x0A):  # blank lines between messages
                self._pos += 1
            if self._pos >= len(buf):
                return None
            if buf[self._pos] == 0x24:
                return self._frame()
            end, sep = _find_head_end(buf, self._pos)
            if end < 0:
                if len(buf) - self._pos > self.max_header_size:
                    raise ParseError(f"RTSP header section over {self.max_header_size} bytes: expected less")
                return None
            if end - self._pos > self.max_header_size:
                size = end - self._pos
                raise ParseError(
                    f"RTSP header section of {size} bytes: expected at most {self.max_header_size}"
                )
            start, headers = _parse_head(bytes(buf[self._pos : end]))
            self._check_start_line(start)
            self._pending = (start, headers, _content_length(headers, self.max_body_size))
            self._pos = end + sep
        start, headers, length = self._pending
        if len(buf) - self._pos < length:
            return None
        body = bytes(buf[self._pos : self._pos + length])
        self._pos += length
        self._pending = None
        return self._build(start, headers, body)

    def _frame(self) -> InterleavedFrame | None:
        if len(self._buf) - self._pos < 4:
            return None
        _, channel, length = struct.unpack_from("!BBH", self._buf, self._pos)
        end = self._pos + 4 + length
        if len(self._buf) < end:
            return None
        frame = InterleavedFrame(channel, bytes(self._buf[self._pos + 4 : end]))
        self._pos = end
        return frame

    def _check_start_line(self, line: str) -> None:
        raise NotImplementedError

    def _build(self, start: str, headers: Headers, body: bytes) -> M:
        raise NotImplementedError


class MessageReader(_Reader[Request]):
    """Server side: requests and interleaved frames from a client connection."""

    def _check_start_line(self, line: str) -> None:
        _parse_request_line(line)

    def _build(self, start: str, headers: Headers, body: bytes) -> Request:
        method, uri, version = _parse_request_line(start)
        return Request(method, uri, headers, body, version)


class ResponseReader(_Reader[Response]):
    """Client side: responses and interleaved frames from a server connection."""

    def _check_start_line(self, line: str) -> None:
        _parse_status_line(line)

    def _build(self, start: str, headers: Headers, body: bytes) -> Response:
        version, status, reason = _parse_status_line(start)
        return Response(status, reason, headers, body, version)
