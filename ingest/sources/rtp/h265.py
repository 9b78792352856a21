"""H.265 over RTP (RFC 7798): depacketizer to access units and a packetizer.

Payloads: single NAL unit packets, aggregation packets (AP, type 48) and fragmentation
units (FU, type 49). PACI packets (type 50) are dropped and counted. DONL/DOND fields are
present only when the SDP announces ``sprop-max-don-diff`` > 0; they are then skipped and
NAL units are kept in transmission order (cameras do not interleave). VPS, SPS and PPS
from ``sprop-vps`` / ``sprop-sps`` / ``sprop-pps`` (or the latest seen in-band) are
re-inserted before every IRAP picture that lacks them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from ingest.codecs.h265 import (
    NAL_AP,
    NAL_AUD,
    NAL_FU,
    NAL_PACI,
    NAL_PPS,
    NAL_SPS,
    NAL_VPS,
    PARAMETER_SETS,
    is_irap,
    is_sub_layer_non_reference,
    is_vcl,
)
from ingest.errors import ParseError
from ingest.sources.rtp.base import NalDepacketizer, NalPacketizer, fragments

SPROP_KEYS = {"sprop-vps": NAL_VPS, "sprop-sps": NAL_SPS, "sprop-pps": NAL_PPS}


def parse_sprop_parameter_sets(fmtp: Mapping[str, str]) -> dict[int, bytes]:
    """``sprop-vps`` / ``sprop-sps`` / ``sprop-pps`` (base64 NAL units, comma separated) to {type: NAL}.

    The last NAL unit of the right type in each wins; one of another type is ignored.
    """
    out: dict[int, bytes] = {}
    for key, kind in SPROP_KEYS.items():
        for item in fmtp.get(key, "").split(","):
            item = item.strip()
            if not item:
                continue
            try:
                nal = base64.b64decode(item, validate=True)
            except ValueError as exc:  # binascii.Error, or a character outside ASCII
                raise ParseError(f"{key} item {item!r}: expected base64 ({exc})") from None
            if len(nal) >= 2 and (nal[0] >> 1) & 0x3F == kind:
                out[kind] = nal
    return out


def parse_max_don_diff(fmtp: Mapping[str, str]) -> int:
    value = fmtp.get("sprop-max-don-diff", "0").strip()
    if not (value.isascii() and value.isdigit()) or int(value) > 32767:  # '²'.isdigit(), int() refuses it
        raise ParseError(f"sprop-max-don-diff {value!r}: expected an integer 0..32767")
    return int(value)


class H265Depacketizer(NalDepacketizer):
    PARAMETER_SETS = PARAMETER_SETS
    AUD = NAL_AUD

    def __init__(self, fmtp: Mapping[str, str] | None = None) -> None:
        fmtp = fmtp or {}
        super().__init__(parse_sprop_parameter_sets(fmtp))
        self._donl = parse_max_don_diff(fmtp) > 0

    def parameter_set(self, kind: int) -> bytes | None:
        """The latest VPS (32), SPS (33) or PPS (34), in-band or from the SDP."""
        return self._params.get(kind)

    def _kind(self, nal: bytes) -> int:
        return (nal[0] >> 1) & 0x3F

    def _is_vcl(self, kind: int) -> bool:
        return is_vcl(kind)

    def _is_random_access(self, kinds: list[int]) -> bool:
        return any(is_irap(k) for k in kinds)

    def _is_reference(self, nal: bytes, kind: int) -> bool:
        return not is_sub_layer_non_reference(kind)

    def _depacketize(self, payload: bytes) -> None:
        if len(payload) < 2 or payload[0] & 0x80:  # shorter than the NAL header; forbidden_zero_bit set
            self.counters.packets_invalid += 1
            return
        kind = (payload[0] >> 1) & 0x3F
        if kind < NAL_AP:
            self._drop_fragment()
            self._add_nal(payload)
        elif kind == NAL_AP:
            self._drop_fragment()
            # AP: 16-bit sizes after the payload header, each unit after its DONL / DOND if used
            self._aggregated(payload, 2, 2, *((2, 1) if self._donl else (0, 0)))
        elif kind == NAL_FU:
            self._fu(payload)
        elif kind == NAL_PACI:
            self.counters.paci_dropped += 1
        else:  # 51..63: unspecified
            self.counters.packets_invalid += 1

    def _fu(self, payload: bytes) -> None:
        if len(payload) < 3:
            self.counters.packets_invalid += 1
            return
        fu_header = payload[2]
        start, end = bool(fu_header & 0x80), bool(fu_header & 0x40)
        kind = fu_header & 0x3F
        if kind >= NAL_AP:
            self.counters.packets_invalid += 1
            return
        data = payload[3:]
        if self._donl and start:
            data = data[2:]
        nal_header = bytes([(payload[0] & 0x81) | (kind << 1), payload[1]])
        self._fragment(start, end, nal_header, data)


class H265Packetizer(NalPacketizer):
    """Access units to RTP packets: small NALs aggregated (AP), NALs over ``max_payload_size`` as FUs."""

    FU_OVERHEAD = 3  # the two-byte payload header and the FU header

    def __init__(self, *, aggregate: bool = True, **packetizer: int) -> None:
        super().__init__(**packetizer)
        self.aggregate = aggregate

    def _payloads(self, nalus: tuple[bytes, ...]) -> list[bytes]:
        payloads: list[bytes] = []
        group: list[bytes] = []

        def close_group() -> None:
            if len(group) == 1:
                payloads.append(group[0])
            elif group:
                layer_tid = min(n[1] for n in group)  # RFC 7798 4.4.2: the lowest TID, F bit 0
                header = bytes([NAL_AP << 1 | (group[0][0] & 0x01), layer_tid])
                payloads.append(header + b"".join(len(n).to_bytes(2, "big") + n for n in group))
            group.clear()

        for nal in nalus:
            if len(nal) < 2:
                continue
            if len(nal) > self.max_payload_size:
                close_group()
                payloads.extend(self._fragments(nal))
                continue
            size = 2 + sum(2 + len(n) for n in group) + 2 + len(nal)
            if not self.aggregate or size > self.max_payload_size:
                close_group()
            group.append(nal)
        close_group()
        return payloads

    def _fragments(self, nal: bytes) -> list[bytes]:
        header = bytes([(nal[0] & 0x81) | NAL_FU << 1, nal[1]])
        return fragments(header, (nal[0] >> 1) & 0x3F, nal[2:], self.max_payload_size - self.FU_OVERHEAD)
