"""H.264 over RTP (RFC 6184, packetization-mode 0 and 1): depacketizer to access units and a packetizer."""

from __future__ import annotations

import base64

from ingest.errors import ParseError
from ingest.h264 import NAL_AUD, NAL_FU_A, NAL_IDR, NAL_PPS, NAL_SPS, NAL_STAP_A, is_vcl
from ingest.rtp.base import (
    MAX_NAL_SIZE,
    VIDEO_CLOCK_RATE,
    AccessUnit,
    DepacketizerCounters,
    NalDepacketizer,
    rtp_packets,
)
from ingest.rtp.packet import RtpPacket

H264_CLOCK_RATE = VIDEO_CLOCK_RATE
H264Counters = DepacketizerCounters  # the counters every NAL-unit depacketizer keeps


def parse_sprop_parameter_sets(value: str) -> tuple[bytes | None, bytes | None]:
    """``sprop-parameter-sets`` (base64 NAL units, comma separated) to (SPS, PPS); the last of each wins."""
    sps = pps = None
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nal = base64.b64decode(item, validate=True)
        except ValueError as exc:  # binascii.Error, or a character outside ASCII
            raise ParseError(f"sprop-parameter-sets item {item!r}: expected base64 ({exc})") from None
        if not nal:
            continue
        if nal[0] & 0x1F == NAL_SPS:
            sps = nal
        elif nal[0] & 0x1F == NAL_PPS:
            pps = nal
    return sps, pps


class H264Depacketizer(NalDepacketizer):
    PARAMETER_SETS = (NAL_SPS, NAL_PPS)
    AUD = NAL_AUD

    def __init__(self, sprop_parameter_sets: str | None = None) -> None:
        params: dict[int, bytes] = {}
        if sprop_parameter_sets:
            sps, pps = parse_sprop_parameter_sets(sprop_parameter_sets)
            params = {k: v for k, v in ((NAL_SPS, sps), (NAL_PPS, pps)) if v is not None}
        super().__init__(params)

    @property
    def sps(self) -> bytes | None:
        """The latest SPS, in-band or from ``sprop-parameter-sets``."""
        return self._params.get(NAL_SPS)

    @property
    def pps(self) -> bytes | None:
        return self._params.get(NAL_PPS)

    def push_fields(
        self, sequence_number: int, timestamp: int, marker: bool, payload: bytes
    ) -> list[AccessUnit]:
        # Most packets of a 2 Mb/s stream are the middle fragments of a FU-A: the next sequence number,
        # the same timestamp, no marker, neither start nor end bit. They only add a piece.
        parts = self._fragment_parts
        if (
            parts is not None
            and not marker
            and timestamp == self._timestamp
            and len(payload) > 2
            and payload[0] & 0x1F == NAL_FU_A
            and not payload[1] & 0xC0
            and sequence_number == ((self._last_seq or 0) + 1) & 0xFFFF
            and self._fragment_size + len(payload) <= MAX_NAL_SIZE
        ):
            self._last_seq = sequence_number
            parts.append(payload[2:])
            self._fragment_size += len(payload) - 2
            return []
        return super().push_fields(sequence_number, timestamp, marker, payload)

    def _kind(self, nal: bytes) -> int:
        return nal[0] & 0x1F

    def _is_vcl(self, kind: int) -> bool:
        return is_vcl(kind)

    def _is_random_access(self, kinds: list[int]) -> bool:
        return NAL_IDR in kinds

    def _is_reference(self, nal: bytes, kind: int) -> bool:
        return bool(nal[0] & 0x60)  # nal_ref_idc

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
            if len(payload) < 2:
                self.counters.packets_invalid += 1
                return
            fu_header = payload[1]
            if fu_header & 0x80:  # the start fragment: rebuild the NAL header
                header = bytes(((payload[0] & 0xE0) | (fu_header & 0x1F),))
                self._fragment(True, bool(fu_header & 0x40), header, payload[2:])
            else:
                self._fragment(False, bool(fu_header & 0x40), b"", payload[2:])
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
        packets = rtp_packets(
            payloads,
            payload_type=self.payload_type,
            ssrc=self.ssrc,
            first_sequence=self._seq,
            timestamp=unit.pts,
        )
        self._seq = (self._seq + len(packets)) & 0xFFFF
        return packets
