"""RTP packets (RFC 3550 section 5) and the few RTCP packets ingest needs (sender and receiver reports)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.errors import ParseError

RTP_VERSION = 2
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
SDES_CNAME = 1
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01

_RTP_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBHI")
_SR_INFO = struct.Struct("!QIII")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_unpack_header = _RTP_HEADER.unpack_from
_new = object.__new__


def sequence_gap(last: int | None, sequence_number: int) -> int:
    """RTP packets missing between the previous packet's 16-bit sequence number ``last`` and this one:
    0 when this one follows it (or is the first, ``last`` None), -1 when it is late (reordered or
    duplicated: a step back of up to half the sequence space)."""
    if last is None:
        return 0
    gap = (sequence_number - last - 1) & 0xFFFF
    return -1 if gap >= 0x8000 else gap


@dataclass(frozen=True)
class RtpExtension:
    """A header extension: 16-bit profile-defined value and its data (a multiple of 4 bytes)."""

    profile: int
    data: bytes


@dataclass
class RtpPacket:
    """One RTP packet. Treat it as immutable; it is not frozen only so that ``parse``, on the per-packet
    path, can fill it in without the cost of a frozen dataclass's ``__init__`` (about 5x)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0  # number of padding bytes, including the final count byte; 0 = no padding

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type}: expected 0..127")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError(f"sequence number {self.sequence_number}: expected 0..65535")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"timestamp {self.timestamp} / ssrc {self.ssrc}: expected 32-bit unsigned")
        if len(self.csrc) > 15:
            raise ValueError(f"{len(self.csrc)} CSRCs: expected at most 15")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding {self.padding}: expected 0..255")
        if self.extension is not None and len(self.extension.data) % 4:
            raise ValueError(f"extension of {len(self.extension.data)} bytes: expected a multiple of 4")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        if len(data) < _RTP_HEADER.size:
            raise ParseError(f"RTP packet of {len(data)} bytes: expected at least 12")
        first, second, seq, timestamp, ssrc = _unpack_header(data)
        if first == 0x80:  # version 2 and nothing but the fixed header: what nearly every camera sends
            return cls._fast(second, seq, timestamp, ssrc, bytes(data[12:]))
        if first >> 6 != RTP_VERSION:
            raise ParseError(f"RTP version {first >> 6}: expected 2")
        pos = _RTP_HEADER.size
        csrc_count = first & 0x0F
        if len(data) < pos + 4 * csrc_count:
            raise ParseError(f"RTP packet of {len(data)} bytes: too short for {csrc_count} CSRCs")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, pos)
        pos += 4 * csrc_count
        extension = None
        if first & 0x10:
            if len(data) < pos + 4:
                raise ParseError(f"RTP packet of {len(data)} bytes: too short for its header extension")
            profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if len(data) < end:
                raise ParseError(f"RTP header extension of {words} words: packet has {len(data)} bytes")
            extension = RtpExtension(profile, bytes(data[pos + 4 : end]))
            pos = end
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or padding > end - pos:
                raise ParseError(f"RTP padding count {padding}: expected 1..{end - pos}")
            end -= padding
        packet = cls._fast(second, seq, timestamp, ssrc, bytes(data[pos:end]))
        packet.csrc = tuple(csrc)
        packet.extension = extension
        packet.padding = padding
        return packet

    @classmethod
    def _fast(cls, second: int, seq: int, timestamp: int, ssrc: int, payload: bytes) -> RtpPacket:
        """A packet from header fields already in range (they came out of 16/32-bit fields)."""
        packet: RtpPacket = _new(cls)
        packet.payload_type = second & 0x7F
        packet.sequence_number = seq
        packet.timestamp = timestamp
        packet.ssrc = ssrc
        packet.payload = payload
        packet.marker = second > 0x7F
        packet.csrc = ()
        packet.extension = None
        packet.padding = 0
        return packet

    def __bytes__(self) -> bytes:
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [_RTP_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        parts.extend(struct.pack("!I", c) for c in self.csrc)
        if self.extension is not None:
            ext = self.extension
            parts.append(struct.pack("!HH", ext.profile, len(ext.data) // 4) + ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


@dataclass(frozen=True)
class RtcpPacket:
    """One packet of a compound RTCP packet: type, count field, sender SSRC and the rest of its body."""

    packet_type: int
    count: int
    ssrc: int
    body: bytes  # after the SSRC, padding removed

    @classmethod
    def parse_compound(cls, data: bytes) -> list[RtcpPacket]:
        packets = []
        pos = 0
        while pos < len(data):
            if len(data) - pos < _RTCP_HEADER.size:
                raise ParseError(f"RTCP packet of {len(data) - pos} bytes: expected at least 8")
            first, packet_type, words, ssrc = _RTCP_HEADER.unpack_from(data, pos)
            if first >> 6 != RTP_VERSION:
                raise ParseError(f"RTCP version {first >> 6}: expected 2")
            end = pos + 4 * (words + 1)
            if end > len(data):
                raise ParseError(f"RTCP length {words} words: only {len(data) - pos} bytes remain")
            body_end = end
            if first & 0x20:
                pad = data[end - 1]
                if pad == 0 or pad > end - pos - _RTCP_HEADER.size:
                    raise ParseError(f"RTCP padding count {pad}: does not fit its packet")
                body_end -= pad
            packets.append(
                cls(packet_type, first & 0x1F, ssrc, bytes(data[pos + _RTCP_HEADER.size : body_end]))
            )
            pos = end
        return packets


@dataclass(frozen=True)
class SenderReport:
    """The sender info of an RTCP SR: maps an RTP timestamp to wall-clock (NTP) time."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP fixed point: seconds since 1900 << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int

    @property
    def ntp_seconds(self) -> float:
        return self.ntp_timestamp / (1 << 32)

    @property
    def unix_time(self) -> float:
        """The NTP timestamp as UNIX seconds (NTP era 0, i.e. until 2036)."""
        return self.ntp_seconds - NTP_UNIX_OFFSET

    @property
    def compact_ntp(self) -> int:
        """The middle 32 bits of the NTP timestamp: what a receiver report echoes as LSR."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF

    @classmethod
    def parse(cls, data: bytes) -> SenderReport:
        """The first SR of a compound RTCP packet (report blocks are ignored)."""
        for packet in RtcpPacket.parse_compound(data):
            if packet.packet_type == RTCP_SR:
                if len(packet.body) < _SR_INFO.size:
                    raise ParseError(f"RTCP SR body of {len(packet.body)} bytes: expected at least 20")
                ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(packet.body)
                return cls(packet.ssrc, ntp, rtp_ts, packets, octets)
        raise ParseError(f"RTCP packet {bytes(data[:8]).hex()!r}: expected a sender report (type 200)")

    def __bytes__(self) -> bytes:
        info = _SR_INFO.pack(self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count)
        return _RTCP_HEADER.pack(0x80, RTCP_SR, 6, self.ssrc) + info


@dataclass(frozen=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 8-bit fixed point
    cumulative_lost: int  # 24-bit signed
    highest_sequence: int  # extended highest sequence number received
    jitter: int
    last_sr: int  # middle 32 bits of the last SR's NTP timestamp
    delay_since_last_sr: int  # in 1/65536 s

    def __bytes__(self) -> bytes:
        lost = (self.cumulative_lost & 0xFFFFFF).to_bytes(3, "big")
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int
    blocks: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        if len(self.blocks) > 31:
            raise ValueError(f"{len(self.blocks)} report blocks: expected at most 31")
        header = _RTCP_HEADER.pack(0x80 | len(self.blocks), RTCP_RR, 1 + 6 * len(self.blocks), self.ssrc)
        return header + b"".join(bytes(block) for block in self.blocks)

    @classmethod
    def parse(cls, data: bytes) -> ReceiverReport:
        for packet in RtcpPacket.parse_compound(data):
            if packet.packet_type == RTCP_RR:
                if len(packet.body) < _REPORT_BLOCK.size * packet.count:
                    raise ParseError(f"RTCP RR with {packet.count} blocks: body has {len(packet.body)} bytes")
                blocks = []
                for i in range(packet.count):
                    ssrc, frac, lost, high, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
                        packet.body, i * _REPORT_BLOCK.size
                    )
                    cumulative = int.from_bytes(lost, "big", signed=True)
                    blocks.append(ReportBlock(ssrc, frac, cumulative, high, jitter, lsr, dlsr))
                return cls(packet.ssrc, tuple(blocks))
        raise ParseError(f"RTCP packet {bytes(data[:8]).hex()!r}: expected a receiver report (type 201)")


@dataclass(frozen=True)
class SourceDescription:
    """An RTCP SDES packet with one chunk carrying a CNAME (RFC 3550 6.5), as every compound packet needs."""

    ssrc: int
    cname: str

    def __bytes__(self) -> bytes:
        text = self.cname.encode()
        if len(text) > 255:
            raise ValueError(f"CNAME of {len(text)} bytes: expected at most 255")
        chunk = struct.pack("!IBB", self.ssrc, SDES_CNAME, len(text)) + text
        chunk += bytes(4 - len(chunk) % 4)  # the item list ends with a null octet, padded to 32 bits
        return struct.pack("!BBH", 0x81, RTCP_SDES, len(chunk) // 4) + chunk
