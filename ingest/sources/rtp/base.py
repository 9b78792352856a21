"""The depacketizer protocol every RTP payload format implements, and the machinery the NAL-unit
formats (H.264, H.265) share: loss detection, access unit boundaries, fragment reassembly, size
bounds and parameter-set re-insertion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from ingest.codecs.nal import insert_parameter_sets
from ingest.media.units import VIDEO_CLOCK_RATE, AccessUnit
from ingest.sources.rtp.packet import RtpPacket, sequence_gap

MAX_NAL_SIZE = 4 * 1024 * 1024  # a fragmented NAL growing past this is dropped
MAX_AU_SIZE = 8 * 1024 * 1024  # an access unit growing past this (in bytes or NAL units) is dropped
MAX_AU_NALUS = 4096


UnitT = TypeVar("UnitT")
CountersT_co = TypeVar("CountersT_co", covariant=True)


class Depacketizer(Protocol[UnitT, CountersT_co]):
    """What every RTP payload format implements: packets of one track in, media units out.

    ``UnitT`` is the unit it returns (``AccessUnit`` for H.264 / H.265, ``ingest.codecs.aac.AudioUnit`` for
    AAC and G.711), ``CountersT_co`` the dataclass of what it corrected or dropped. Only the types are
    shared: each format keeps its own per-packet code (``NalDepacketizer.push_fields`` for video), so
    the protocol adds no call on the per-packet path.
    """

    @property
    def clock_rate(self) -> int: ...  # the RTP clock of the track

    @property
    def counters(self) -> CountersT_co: ...

    def push(self, packet: RtpPacket) -> list[UnitT]: ...  # [] = need more packets

    def flush(self) -> list[UnitT]: ...  # the pending unit(s) at end of stream, if complete enough


class VideoDepacketizer(Depacketizer[AccessUnit, "DepacketizerCounters"], Protocol):
    """A video payload format (H.264, H.265): ``push`` plus ``push_fields``, the per-packet path over
    TCP, which takes the header fields the connection already read instead of an ``RtpPacket``."""

    def push_fields(
        self, sequence_number: int, timestamp: int, marker: bool, payload: bytes
    ) -> list[AccessUnit]: ...


class TimestampUnwrapper:
    """32-bit RTP timestamps to a 64-bit timeline.

    The first timestamp is returned as is; each next one moves by the signed 32-bit difference from the
    previous one, so wrap-around continues upwards and the small backward steps of B-frames (RTP
    timestamps are presentation times) step back. A step back below the first timestamp of a stream that
    starts near 0 gives a negative value.
    """

    def __init__(self) -> None:
        self._last32: int | None = None
        self._last64 = 0

    def unwrap(self, timestamp: int) -> int:
        timestamp &= 0xFFFFFFFF
        if self._last32 is None:
            self._last64 = timestamp
        else:
            diff = (timestamp - self._last32) & 0xFFFFFFFF
            if diff >= 0x80000000:
                diff -= 0x100000000
            self._last64 += diff
        self._last32 = timestamp
        return self._last64


@dataclass
class DepacketizerCounters:
    """What a NAL-unit depacketizer corrected or dropped since it was created."""

    packets_lost: int = 0  # sequence number gaps, in packets
    packets_late: int = 0  # reordered or duplicated packets, dropped
    packets_invalid: int = 0  # empty, truncated aggregation packets, reserved or unsupported NAL types
    fu_dropped: int = 0  # NAL units lost because one of their fragments was missing
    oversize_dropped: int = 0  # NAL units or access units over the size bounds
    params_inserted: int = 0  # random access units given parameter sets they did not carry in-band
    units_damaged: int = 0  # access units marked damaged: packets of a reference picture were lost
    paci_dropped: int = 0  # H.265 PACI packets (type 50), not supported, dropped


class NalDepacketizer:
    """Shared core of the H.264 and H.265 depacketizers.

    An access unit ends at the marker bit or when the RTP timestamp changes. A sequence number gap
    marks the unit it falls in as damaged (when that unit is a reference picture) or, when it falls
    on a unit boundary (the lost packets may have held a whole picture), both neighbouring units.
    Subclasses parse the payload and call ``_add_nal`` / ``_fragment``; they name their NAL types
    through the ``_kind`` / ``_is_vcl`` / ``_is_random_access`` / ``_is_reference`` hooks.
    """

    clock_rate = VIDEO_CLOCK_RATE
    PARAMETER_SETS: tuple[int, ...] = ()  # NAL types of the parameter sets, in the order they precede a unit
    AUD: int = -1  # NAL type of the access unit delimiter

    def __init__(self, parameter_sets: dict[int, bytes] | None = None) -> None:
        self.counters = DepacketizerCounters()
        self._params: dict[int, bytes] = dict(parameter_sets or {})
        self._unwrapper = TimestampUnwrapper()
        self._last_seq: int | None = None
        self._timestamp: int | None = None  # RTP timestamp of the pending access unit
        self._nalus: list[bytes] = []
        self._size = 0
        self._fragment_parts: list[bytes] | None = None  # the pieces of a fragmented NAL, header first
        self._fragment_size = 0
        self._discarding_fragment = False
        self._lost_inside = False  # packets of the pending unit were lost
        self._lost_around = False  # packets lost at a boundary: the pending unit may be the one hit
        self._lost_next = False  # ... and so may the unit after it

    # -- hooks --------------------------------------------------------------------------------------

    def _kind(self, nal: bytes) -> int:
        raise NotImplementedError

    def _is_vcl(self, kind: int) -> bool:
        raise NotImplementedError

    def _is_random_access(self, kinds: list[int]) -> bool:
        raise NotImplementedError

    def _is_reference(self, nal: bytes, kind: int) -> bool:
        raise NotImplementedError

    def _depacketize(self, payload: bytes) -> None:
        raise NotImplementedError

    # -- packets in ---------------------------------------------------------------------------------

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        return self.push_fields(packet.sequence_number, packet.timestamp, packet.marker, packet.payload)

    def push_fields(
        self, sequence_number: int, timestamp: int, marker: bool, payload: bytes
    ) -> list[AccessUnit]:
        """``push`` from the header fields the caller already read (the per-packet path over TCP)."""
        out: list[AccessUnit] = []
        last = self._last_seq
        if last is not None and sequence_number != (last + 1) & 0xFFFF:  # in order: no call
            gap = sequence_gap(last, sequence_number)
            if gap < 0:
                self.counters.packets_late += 1
                return out
            self.counters.packets_lost += gap
            self._drop_fragment(lost=True)
            if timestamp == self._timestamp:
                self._lost_inside = True
            else:
                self._lost_around = self._lost_next = True
        self._last_seq = sequence_number

        if timestamp != self._timestamp:
            if self._timestamp is not None:
                self._drop_fragment()
                self._emit(out)
                if self._lost_next:
                    self._lost_around, self._lost_next = True, False
            self._timestamp = timestamp
        self._depacketize(payload)
        if marker:
            self._drop_fragment()
            self._emit(out)
        return out

    def flush(self) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        self._drop_fragment()
        self._emit(out)
        return out

    # -- for subclasses -----------------------------------------------------------------------------

    def _fragment(self, start: bool, end: bool, nal_header: bytes, data: bytes) -> None:
        """One fragment of a fragmented NAL unit: ``nal_header`` is the rebuilt header of the whole NAL
        (read only on the start fragment). The pieces are joined once, when the end fragment comes."""
        parts = self._fragment_parts
        if start:
            if parts is not None:
                self.counters.fu_dropped += 1
            self._discarding_fragment = False
            self._fragment_parts = parts = [nal_header]
            self._fragment_size = len(nal_header)
        elif parts is None:
            if not self._discarding_fragment:  # its start was lost: count the NAL once, skip the rest of it
                self.counters.fu_dropped += 1
                self._discarding_fragment = not end
            return
        parts.append(data)
        self._fragment_size += len(data)
        if self._fragment_size > MAX_NAL_SIZE:
            self.counters.oversize_dropped += 1
            self._fragment_parts = None
            self._discarding_fragment = not end
            return
        if end:  # start and end both set (seen on CostarHD cameras) is a complete NAL in one fragment
            self._fragment_parts = None
            self._add_nal(b"".join(parts))

    def _drop_fragment(self, *, lost: bool = False) -> None:
        """Drop an incomplete fragmented NAL; after a loss, its remaining fragments are skipped uncounted."""
        if self._fragment_parts is not None:
            self.counters.fu_dropped += 1
            self._fragment_parts = None
            self._discarding_fragment = lost
        elif not lost:
            self._discarding_fragment = False

    def _aggregated(
        self, payload: bytes, pos: int, min_size: int, skip_first: int = 0, skip_rest: int = 0
    ) -> None:
        """The NAL units of an aggregation packet (H.264 STAP-A, H.265 AP) from byte ``pos`` on:
        each a 16-bit size and the unit, after ``skip_first`` (the first) or ``skip_rest`` bytes
        (H.265's DONL / DOND). A unit under ``min_size`` bytes or past the end, or no unit at
        all, makes the packet invalid: none of it is added."""
        nalus = []
        skip = skip_first
        while pos < len(payload):
            pos += skip
            skip = skip_rest
            if pos + 2 > len(payload):
                self.counters.packets_invalid += 1
                return
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size < min_size or pos + size > len(payload):
                self.counters.packets_invalid += 1
                return
            nalus.append(payload[pos : pos + size])
            pos += size
        if not nalus:
            self.counters.packets_invalid += 1
        for nal in nalus:
            self._add_nal(nal)

    def _add_nal(self, nal: bytes) -> None:
        if type(nal) is not bytes:
            nal = bytes(nal)
        self._nalus.append(nal)
        self._size += len(nal)
        if self._size > MAX_AU_SIZE or len(self._nalus) > MAX_AU_NALUS:
            self.counters.oversize_dropped += 1
            self._nalus.clear()
            self._size = 0

    # -- access units out ---------------------------------------------------------------------------

    def _emit(self, out: list[AccessUnit]) -> None:
        nalus = self._nalus
        if not nalus:
            return
        kinds = [self._kind(nal) for nal in nalus]
        if not any(self._is_vcl(k) for k in kinds):
            return  # parameter sets or SEI sent apart (own timestamp or marker): keep them for the next unit
        self._nalus = []
        self._size = 0
        for nal, kind in zip(nalus, kinds, strict=True):
            if kind in self.PARAMETER_SETS:
                self._params[kind] = nal
        is_idr = self._is_random_access(kinds)
        reference = any(
            self._is_vcl(k) and self._is_reference(n, k) for n, k in zip(nalus, kinds, strict=True)
        )
        if is_idr and any(k not in kinds for k in self.PARAMETER_SETS):
            nalus = self._with_parameter_sets(nalus, kinds)
        damaged = self._lost_around or (self._lost_inside and reference)
        self._lost_inside = self._lost_around = False
        if damaged:
            self.counters.units_damaged += 1
        pts = self._unwrapper.unwrap(self._timestamp if self._timestamp is not None else 0)
        out.append(AccessUnit(pts=pts, nalus=tuple(nalus), is_idr=is_idr, damaged=damaged))

    def _with_parameter_sets(self, nalus: list[bytes], kinds: list[int]) -> list[bytes]:
        filled = insert_parameter_sets(nalus, kinds, self._params, self.PARAMETER_SETS, self.AUD)
        if filled is None:
            return nalus
        self.counters.params_inserted += 1
        return filled


def rtp_packets(
    payloads: list[bytes], *, payload_type: int, ssrc: int, first_sequence: int, timestamp: int
) -> list[RtpPacket]:
    """One access unit's payloads as consecutive RTP packets, the marker bit on the last."""
    last = len(payloads) - 1
    return [
        RtpPacket(
            payload_type=payload_type,
            sequence_number=(first_sequence + i) & 0xFFFF,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=payload,
            marker=i == last,
        )
        for i, payload in enumerate(payloads)
    ]


def fragments(prefix: bytes, nal_type: int, body: bytes, chunk: int) -> list[bytes]:
    """``body`` (a NAL unit less its header) as fragmentation-unit payloads of at most ``chunk``
    bytes each: ``prefix`` (H.264's FU indicator, H.265's payload header), then the FU header
    with S on the first, E on the last, and the NAL's own type."""
    out = []
    for pos in range(0, len(body), chunk):
        fu_header = nal_type | (0x80 if pos == 0 else 0) | (0x40 if pos + chunk >= len(body) else 0)
        out.append(prefix + bytes([fu_header]) + body[pos : pos + chunk])
    return out


class NalPacketizer:
    """Access units to RTP packets, numbered on from ``initial_sequence``, the marker on each unit's
    last; a codec's payload format says what goes in each packet (``_payloads``). Payloads are at
    most ``max_payload_size`` bytes, which must leave room for a fragment's headers and one byte."""

    FU_OVERHEAD = 2  # header bytes of a fragmentation unit (H.264: indicator and FU header)

    def __init__(
        self,
        *,
        payload_type: int = 96,
        ssrc: int = 0x43414D46,
        max_payload_size: int = 1400,
        initial_sequence: int = 0,
    ) -> None:
        if max_payload_size < self.FU_OVERHEAD + 1:
            raise ValueError(f"max_payload_size {max_payload_size}: expected at least {self.FU_OVERHEAD + 1}")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.max_payload_size = max_payload_size
        self._seq = initial_sequence & 0xFFFF

    def _payloads(self, nalus: tuple[bytes, ...]) -> list[bytes]:
        raise NotImplementedError

    def packetize(self, unit: AccessUnit) -> list[RtpPacket]:
        packets = rtp_packets(
            self._payloads(unit.nalus),
            payload_type=self.payload_type,
            ssrc=self.ssrc,
            first_sequence=self._seq,
            timestamp=unit.pts,
        )
        self._seq = (self._seq + len(packets)) & 0xFFFF
        return packets
