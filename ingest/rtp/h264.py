"""H.264 over RTP (RFC 6184, packetization-mode 0 and 1): depacketizer to access units and a packetizer."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ingest.errors import ParseError
from ingest.h264 import NAL_AUD, NAL_FU_A, NAL_IDR, NAL_PPS, NAL_SPS, NAL_STAP_A, is_vcl
from ingest.rtp.base import AccessUnit, TimestampUnwrapper
from ingest.rtp.packet import RtpPacket

H264_CLOCK_RATE = 90_000
MAX_NAL_SIZE = 4 * 1024 * 1024  # a fragmented NAL growing past this is dropped
MAX_AU_SIZE = 8 * 1024 * 1024  # an access unit growing past this (in bytes or NAL units) is dropped
MAX_AU_NALUS = 4096


def parse_sprop_parameter_sets(value: str) -> tuple[bytes | None, bytes | None]:
    """``sprop-parameter-sets`` (base64 NAL units, comma separated) to (SPS, PPS); the last of each wins."""
    sps = pps = None
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nal = base64.b64decode(item, validate=True)
        except binascii.Error as exc:
            raise ParseError(f"sprop-parameter-sets item {item!r}: expected base64 ({exc})") from None
        if not nal:
            continue
        if nal[0] & 0x1F == NAL_SPS:
            sps = nal
        elif nal[0] & 0x1F == NAL_PPS:
            pps = nal
    return sps, pps


@dataclass
class H264Counters:
    """What the depacketizer corrected or dropped since it was created."""

    packets_lost: int = 0  # sequence number gaps, in packets
    packets_late: int = 0  # reordered or duplicated packets, dropped
    packets_invalid: int = 0  # empty, truncated STAP-A, reserved or unsupported NAL types
    fu_dropped: int = 0  # NAL units lost because one of their FU-A fragments was missing
    oversize_dropped: int = 0  # NAL units or access units over the size bounds
    params_inserted: int = 0  # IDR access units given SPS/PPS they did not carry in-band


class H264Depacketizer:
    clock_rate = H264_CLOCK_RATE

    def __init__(self, sprop_parameter_sets: str | None = None) -> None:
        self.counters = H264Counters()
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        if sprop_parameter_sets:
            self._sps, self._pps = parse_sprop_parameter_sets(sprop_parameter_sets)
        self._unwrapper = TimestampUnwrapper()
        self._last_seq: int | None = None
        self._timestamp: int | None = None  # RTP timestamp of the pending access unit
        self._nalus: list[bytes] = []
        self._size = 0
        self._fragment: bytearray | None = None
        self._discarding_fragment = False

    @property
    def sps(self) -> bytes | None:
        """The latest SPS, in-band or from ``sprop-parameter-sets``."""
        return self._sps

    @property
    def pps(self) -> bytes | None:
        return self._pps

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        if self._last_seq is not None:
            gap = (packet.sequence_number - self._last_seq - 1) & 0xFFFF
            if gap >= 0x8000:
                self.counters.packets_late += 1
                return out
            if gap:
                self.counters.packets_lost += gap
                self._drop_fragment(lost=True)
        self._last_seq = packet.sequence_number

        if self._timestamp is not None and packet.timestamp != self._timestamp:
            self._drop_fragment()
            self._emit(out)
        self._timestamp = packet.timestamp
        self._depacketize(packet.payload)
        if packet.marker:
            self._drop_fragment()
            self._emit(out)
        return out

    def flush(self) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        self._drop_fragment()
        self._emit(out)
        return out

    def _depacketize(self, payload: bytes) -> None:
        if not payload:
            self.counters.packets_invalid += 1
            return
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self._drop_fragment()
            self._add_nal(payload)
        elif kind == NAL_STAP_A:
            self._drop_fragment()
            self._stap_a(payload)
        elif kind == NAL_FU_A:
            self._fu_a(payload)
        else:  # 0, 30, 31 reserved; STAP-B, MTAP16/24 and FU-B are interleaved mode only
            self.counters.packets_invalid += 1

    def _stap_a(self, payload: bytes) -> None:
        nalus = []
        pos = 1
        while pos < len(payload):
            if pos + 2 > len(payload):
                self.counters.packets_invalid += 1
                return
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(payload):
                self.counters.packets_invalid += 1
                return
            nalus.append(payload[pos : pos + size])
            pos += size
        if not nalus:
            self.counters.packets_invalid += 1
        for nal in nalus:
            self._add_nal(nal)

    def _fu_a(self, payload: bytes) -> None:
        if len(payload) < 2:
            self.counters.packets_invalid += 1
            return
        fu_header = payload[1]
        start, end = bool(fu_header & 0x80), bool(fu_header & 0x40)
        if start:
            self._drop_fragment()
            self._discarding_fragment = False
            self._fragment = bytearray([(payload[0] & 0xE0) | (fu_header & 0x1F)])
        elif self._fragment is None:
            if not self._discarding_fragment:  # its start was lost: count the NAL once, skip the rest of it
                self.counters.fu_dropped += 1
                self._discarding_fragment = not end
            return
        self._fragment += payload[2:]
        if len(self._fragment) > MAX_NAL_SIZE:
            self.counters.oversize_dropped += 1
            self._fragment = None
            self._discarding_fragment = not end
            return
        if end:  # start and end both set (seen on CostarHD cameras) is a complete NAL in one fragment
            nal = bytes(self._fragment)
            self._fragment = None
            self._add_nal(nal)

    def _drop_fragment(self, *, lost: bool = False) -> None:
        """Drop an incomplete fragmented NAL; after a loss, its remaining fragments are skipped uncounted."""
        if self._fragment is not None:
            self.counters.fu_dropped += 1
            self._fragment = None
            self._discarding_fragment = lost
        elif not lost:
            self._discarding_fragment = False

    def _add_nal(self, nal: bytes) -> None:
        self._nalus.append(bytes(nal))
        self._size += len(nal)
        if self._size > MAX_AU_SIZE or len(self._nalus) > MAX_AU_NALUS:
            self.counters.oversize_dropped += 1
            self._nalus.clear()
            self._size = 0

    def _emit(self, out: list[AccessUnit]) -> None:
        nalus = self._nalus
        if not nalus:
            return
        types = [nal[0] & 0x1F for nal in nalus]
        if not any(is_vcl(t) for t in types):
            return  # parameter sets or SEI sent apart (own timestamp or marker): keep them for the next unit
        self._nalus = []
        self._size = 0
        for nal, kind in zip(nalus, types, strict=True):
            if kind == NAL_SPS:
                self._sps = nal
            elif kind == NAL_PPS:
                self._pps = nal
        is_idr = NAL_IDR in types
        if is_idr and (NAL_SPS not in types or NAL_PPS not in types):
            nalus = self._with_parameter_sets(nalus, types)
        pts = self._unwrapper.unwrap(self._timestamp if self._timestamp is not None else 0)
        out.append(AccessUnit(pts=pts, nalus=tuple(nalus), is_idr=is_idr))

    def _with_parameter_sets(self, nalus: list[bytes], types: list[int]) -> list[bytes]:
        missing = [
            nal
            for nal, kind in ((self._sps, NAL_SPS), (self._pps, NAL_PPS))
            if nal is not None and kind not in types
        ]
        if not missing:
            return nalus
        self.counters.params_inserted += 1
        # SPS and PPS go after a leading access unit delimiter; a missing PPS alone right after the SPS.
        at = 1 if types[0] == NAL_AUD else 0
        if NAL_SPS in types:
            at = len(types) - types[::-1].index(NAL_SPS)
        return nalus[:at] + missing + nalus[at:]


class H264Packetizer:
    """Access units to RTP packets: one packet per NAL, FU-A for NALs over ``max_payload_size``."""

    def __init__(
        self,
        *,
        payload_type: int = 96,
        ssrc: int = 0x43414D46,
        max_payload_size: int = 1400,
        initial_sequence: int = 0,
    ) -> None:
        if max_payload_size < 3:
            raise ValueError(f"max_payload_size {max_payload_size}: expected at least 3")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.max_payload_size = max_payload_size
        self._seq = initial_sequence & 0xFFFF

    def packetize(self, unit: AccessUnit) -> list[RtpPacket]:
        payloads: list[bytes] = []
        for nal in unit.nalus:
            if not nal:
                continue
            if len(nal) <= self.max_payload_size:
                payloads.append(nal)
                continue
            indicator = (nal[0] & 0xE0) | NAL_FU_A
            chunk = self.max_payload_size - 2
            body = nal[1:]
            for pos in range(0, len(body), chunk):
                fu_header = nal[0] & 0x1F
                if pos == 0:
                    fu_header |= 0x80
                if pos + chunk >= len(body):
                    fu_header |= 0x40
                payloads.append(bytes([indicator, fu_header]) + body[pos : pos + chunk])
        packets = []
        for i, payload in enumerate(payloads):
            packets.append(
                RtpPacket(
                    payload_type=self.payload_type,
                    sequence_number=self._seq,
                    timestamp=unit.pts & 0xFFFFFFFF,
                    ssrc=self.ssrc,
                    payload=payload,
                    marker=i == len(payloads) - 1,
                )
            )
            self._seq = (self._seq + 1) & 0xFFFF
        return packets
