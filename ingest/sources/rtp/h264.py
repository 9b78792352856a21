"""H.264 over RTP (RFC 6184, packetization-mode 0 and 1): depacketizer to access units and a packetizer."""

from __future__ import annotations

import base64

from ingest.codecs.h264 import NAL_AUD, NAL_FU_A, NAL_IDR, NAL_PPS, NAL_SPS, NAL_STAP_A, is_vcl
from ingest.errors import ParseError
from ingest.media.units import VIDEO_CLOCK_RATE, AccessUnit
from ingest.sources.rtp.base import (
    MAX_NAL_SIZE,
    DepacketizerCounters,
    NalDepacketizer,
    NalPacketizer,
    fragments,
)

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
            self._aggregated(payload, 1, 1)  # STAP-A: 16-bit sizes after the type byte
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


class H264Packetizer(NalPacketizer):
    """Access units to RTP packets: one packet per NAL, FU-A for NALs over ``max_payload_size``."""

    def _payloads(self, nalus: tuple[bytes, ...]) -> list[bytes]:
        payloads: list[bytes] = []
        chunk = self.max_payload_size - self.FU_OVERHEAD
        for nal in nalus:
            if len(nal) > self.max_payload_size:
                payloads.extend(fragments(bytes([(nal[0] & 0xE0) | NAL_FU_A]), nal[0] & 0x1F, nal[1:], chunk))
            elif nal:
                payloads.append(nal)
        return payloads
