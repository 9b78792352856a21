"""SDP (RFC 4566), as much as ANNOUNCE needs: session and media attributes, rtpmap, fmtp and control."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingest.errors import ParseError

Attributes = tuple[tuple[str, str | None], ...]  # a=name:value, or a=name (flag) with value None
Fields = tuple[tuple[str, str], ...]  # every other type=value line, in order

_LINE = re.compile(r"([a-z])=(.*)")


def _attribute(attributes: Attributes, name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return "" if value is None else value
    return None


def parse_fmtp_params(text: str) -> dict[str, str]:
    """``a; b=c;d=e`` to a dict with lower-cased keys (ffmpeg writes a space after each ';')."""
    params: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip()
    return params


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding_name: str  # as written, e.g. "H264", "MPEG4-GENERIC"
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        """The value of ``a=rtpmap:``, e.g. ``96 H264/90000`` or ``97 opus/48000/2``."""
        pt, _, encoding = value.strip().partition(" ")
        name, *numbers = encoding.strip().split("/")
        if (
            not _is_payload_type(pt)
            or not name
            or len(numbers) not in (1, 2)
            or not all(n.isascii() and n.isdigit() for n in numbers)
            or int(numbers[0]) == 0
        ):
            raise ParseError(f"rtpmap {value[:80]!r}: expected '<pt> <encoding>/<clock rate>[/<channels>]'")
        return cls(int(pt), name, int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else None)


def _is_payload_type(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 3 and int(text) <= 127


@dataclass(frozen=True)
class MediaDescription:
    kind: str  # media type: "video", "audio", "application"...
    port: str  # as written, e.g. "0" or "5004/2"
    protocol: str  # e.g. "RTP/AVP"
    formats: tuple[str, ...]
    fields: Fields = ()
    attributes: Attributes = ()
    rtpmap: RtpMap | None = None  # of the first format
    fmtp: Mapping[str, str] = field(default_factory=dict, hash=False)  # of the first format

    @property
    def payload_type(self) -> int | None:
        """The first format as an RTP payload type; None for a non-RTP protocol."""
        first = self.formats[0]
        return int(first) if self.protocol.upper().startswith("RTP/") and _is_payload_type(first) else None

    @property
    def control(self) -> str | None:
        return self.attribute("control")

    def attribute(self, name: str) -> str | None:
        """The first ``a=name:value`` value ("" for a flag attribute), None when absent."""
        return _attribute(self.attributes, name)

    def lines(self) -> list[str]:
        head = f"m={self.kind} {self.port} {self.protocol} {' '.join(self.formats)}"
        return [head, *_field_lines(self.fields, self.attributes)]


@dataclass(frozen=True)
class SessionDescription:
    fields: Fields  # v=, o=, s=, c=, t=... in order
    attributes: Attributes = ()
    media: tuple[MediaDescription, ...] = ()

    def field(self, kind: str) -> str | None:
        for key, value in self.fields:
            if key == kind:
                return value
        return None

    @property
    def control(self) -> str | None:
        return _attribute(self.attributes, "control")

    def attribute(self, name: str) -> str | None:
        return _attribute(self.attributes, name)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        try:
            text = data.decode() if isinstance(data, bytes) else data
        except UnicodeDecodeError as exc:
            raise ParseError(f"SDP bytes {data[exc.start : exc.end]!r}: expected UTF-8") from None
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        lines = [line for line in lines if line.strip()]
        if not lines or lines[0].strip() != "v=0":
            raise ParseError(f"SDP starting with {lines[0][:40] if lines else ''!r}: expected 'v=0'")
        fields: list[tuple[str, str]] = []
        attributes: list[tuple[str, str | None]] = []
        media: list[MediaDescription] = []
        in_media = False
        m_line = ""
        m_fields: list[tuple[str, str]] = []
        m_attrs: list[tuple[str, str | None]] = []
        for line in lines:
            match = _LINE.fullmatch(line)
            if not match:
                raise ParseError(f"SDP line {line[:80]!r}: expected '<letter>=<value>'")
            kind, value = match.groups()
            if kind == "m":
                if in_media:
                    media.append(_media(m_line, m_fields, m_attrs))
                in_media, m_line, m_fields, m_attrs = True, value, [], []
            elif kind == "a":
                name, sep, attr = value.partition(":")
                (m_attrs if in_media else attributes).append((name, attr if sep else None))
            else:
                (m_fields if in_media else fields).append((kind, value))
        if in_media:
            media.append(_media(m_line, m_fields, m_attrs))
        for required in ("o", "s"):
            if not any(key == required for key, _ in fields):
                raise ParseError(f"SDP without an {required}= line: expected v=, o=, s= at session level")
        return cls(tuple(fields), tuple(attributes), tuple(media))

    def __bytes__(self) -> bytes:
        lines = _field_lines(self.fields, self.attributes)
        for media in self.media:
            lines.extend(media.lines())
        return "".join(line + "\r\n" for line in lines).encode()


def _field_lines(fields: Fields, attributes: Attributes) -> list[str]:
    lines = [f"{kind}={value}" for kind, value in fields]
    lines.extend(f"a={name}" if value is None else f"a={name}:{value}" for name, value in attributes)
    return lines


def _media(
    m_line: str, fields: list[tuple[str, str]], attributes: list[tuple[str, str | None]]
) -> MediaDescription:
    parts = m_line.split()
    if len(parts) < 4 or not re.fullmatch(r"\d+(/\d+)?", parts[1]):
        raise ParseError(f"SDP media line {m_line[:80]!r}: expected '<media> <port> <proto> <fmt> ...'")
    kind, port, protocol, *formats = parts
    is_rtp = protocol.upper().startswith("RTP/")
    if is_rtp and not all(_is_payload_type(f) for f in formats):
        raise ParseError(f"SDP media formats {formats!r}: expected RTP payload types 0..127")
    rtpmap = None
    fmtp: dict[str, str] = {}
    for name, value in attributes:
        if name == "rtpmap" and value is not None:
            parsed = RtpMap.parse(value)
            if is_rtp and parsed.payload_type == int(formats[0]) and rtpmap is None:
                rtpmap = parsed
        elif name == "fmtp" and value is not None:
            pt, _, params = value.strip().partition(" ")
            if not _is_payload_type(pt):
                raise ParseError(f"fmtp {value[:80]!r}: expected '<pt> <param>=<value>;...'")
            if is_rtp and int(pt) == int(formats[0]) and not fmtp:
                fmtp = parse_fmtp_params(params)
    return MediaDescription(
        kind, port, protocol, tuple(formats), tuple(fields), tuple(attributes), rtpmap, fmtp
    )
