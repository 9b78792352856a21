"""AAC over RTP (RFC 3640 ``mpeg4-generic``, modes AAC-hbr and AAC-lbr): depacketizer and packetizer.

A packet holds an AU-headers section (its length in bits, then one header per access unit:
``sizelength`` bits of size, ``indexlength`` / ``indexdeltalength`` bits of index, and the optional
CTS/DTS deltas, RAP flag and stream state the fmtp announces), an optional auxiliary section, then
the access units back to back. Several AUs per packet follow each other by ``constantduration``
(1024 samples for AAC-LC) from the RTP timestamp; one AU larger than a packet is fragmented over
packets with the same timestamp, each carrying the whole AU's size, the last one with the marker bit.
"""

from __future__ import annotations

from collections.abc import Mapping

from ingest.codecs.aac import AAC_FRAME, SAMPLE_RATES, AudioConfig, AudioCounters, AudioUnit, BitReader
from ingest.errors import ParseError
from ingest.sources.rtp.base import TimestampUnwrapper
from ingest.sources.rtp.packet import RtpPacket, sequence_gap

MAX_AU_SIZE = 64 * 1024  # an access unit announced larger than this is dropped
MAX_AUS_PER_PACKET = 512
_FIELD_MAX = {
    "sizelength": 32,
    "indexlength": 32,
    "indexdeltalength": 32,
    "ctsdeltalength": 32,
    "dtsdeltalength": 32,
    "streamstateindication": 32,
    "auxiliarydatasizelength": 32,
}


def _int_param(fmtp: Mapping[str, str], name: str, default: int = 0) -> int:
    value = fmtp.get(name)
    if value is None or value == "":
        return default
    limit = _FIELD_MAX.get(name, 1 << 20)
    if not value.isascii() or not value.isdigit() or int(value) > limit:
        raise ParseError(f"mpeg4-generic fmtp {name}={value[:20]!r}: expected an integer 0..{limit}")
    return int(value)


class AacDepacketizer:
    """RTP packets of one ``mpeg4-generic`` audio track to AAC access units (``AudioUnit``)."""

    def __init__(self, fmtp: Mapping[str, str], clock_rate: int | None = None) -> None:
        config = fmtp.get("config", "")
        try:
            asc = bytes.fromhex(config)
        except ValueError:
            raise ParseError(f"mpeg4-generic fmtp config={config[:40]!r}: expected hexadecimal") from None
        if not asc:
            raise ParseError("mpeg4-generic fmtp without config=: expected the AudioSpecificConfig in hex")
        self.config = AudioConfig.parse(asc)
        self.clock_rate = clock_rate or self.config.sample_rate
        mode = fmtp.get("mode", "").lower()
        default_size = 13 if mode == "aac-hbr" else 6 if mode == "aac-lbr" else 0
        self.size_length = _int_param(fmtp, "sizelength", default_size)
        self.index_length = _int_param(
            fmtp, "indexlength", 3 if default_size == 13 else 2 if default_size else 0
        )
        self.index_delta_length = _int_param(fmtp, "indexdeltalength", self.index_length)
        self.cts_delta_length = _int_param(fmtp, "ctsdeltalength")
        self.dts_delta_length = _int_param(fmtp, "dtsdeltalength")
        self.random_access = _int_param(fmtp, "randomaccessindication") > 0
        self.stream_state_length = _int_param(fmtp, "streamstateindication")
        self.aux_length = _int_param(fmtp, "auxiliarydatasizelength")
        self.constant_size = _int_param(fmtp, "constantsize")
        duration = _int_param(fmtp, "constantduration", AAC_FRAME)
        self.frame_ticks = duration * self.clock_rate // self.config.sample_rate or 1  # in RTP clock
        if self.size_length == 0 and self.constant_size == 0:
            raise ParseError("mpeg4-generic fmtp: expected sizelength (AAC-hbr: 13) or constantsize")
        self.counters = AudioCounters()
        self._unwrapper = TimestampUnwrapper()
        self._last_seq: int | None = None
        self._fragment: bytearray | None = None
        self._fragment_size = 0
        self._fragment_ts = 0
        self._discard_ts: int | None = None  # the timestamp of a fragmented AU broken by a loss

    @property
    def _has_headers(self) -> bool:
        return any(
            (
                self.size_length,
                self.index_length,
                self.index_delta_length,
                self.cts_delta_length,
                self.dts_delta_length,
                self.random_access,
                self.stream_state_length,
            )
        )

    def push(self, packet: RtpPacket) -> list[AudioUnit]:
        gap = sequence_gap(self._last_seq, packet.sequence_number)
        if gap:
            if gap < 0:
                self.counters.audio_packets_late += 1
                return []
            self.counters.audio_packets_lost += gap
            if self._fragment is not None:  # its other pieces are skipped, the AU counted once
                self._discard_ts = self._fragment_ts
            self._drop_fragment()
        self._last_seq = packet.sequence_number
        timestamp = self._unwrapper.unwrap(packet.timestamp)
        if self._discard_ts is not None:
            if timestamp == self._discard_ts:
                return []
            self._discard_ts = None
        try:
            sizes, indices, data = self._split(packet.payload)
        except ParseError:
            self.counters.audio_packets_invalid += 1
            self._drop_fragment()
            return []
        if len(sizes) == 1 and (self._fragment is not None or sizes[0] > len(data)):
            return self._continue_fragment(sizes[0], data, timestamp, packet.marker)
        self._drop_fragment()
        out: list[AudioUnit] = []
        pos = 0
        for size, index in zip(sizes, indices, strict=True):
            if pos + size > len(data):
                self.counters.audio_packets_invalid += 1
                break
            out.append(self._unit(timestamp + index * self.frame_ticks, data[pos : pos + size]))
            pos += size
        out.sort(key=lambda u: u.pts)  # interleaved AUs (index deltas > 0) come out in time order
        return out

    def flush(self) -> list[AudioUnit]:
        self._drop_fragment()
        return []

    def parse(self, payload: bytes) -> list[tuple[int, bytes]]:
        """(index, AU bytes) of one packet that holds whole AUs; ParseError otherwise."""
        sizes, indices, data = self._split(payload)
        out, pos = [], 0
        for size, index in zip(sizes, indices, strict=True):
            if pos + size > len(data):
                raise ParseError(f"AU of {size} bytes at {pos}: payload has {len(data)} bytes of AUs")
            out.append((index, data[pos : pos + size]))
            pos += size
        return out

    # --- internals -------------------------------------------------------------------------------

    def _unit(self, ticks: int, data: bytes) -> AudioUnit:
        rate = self.config.sample_rate
        pts = ticks if self.clock_rate == rate else ticks * rate // self.clock_rate
        return AudioUnit(pts, bytes(data), AAC_FRAME)

    def _split(self, payload: bytes) -> tuple[list[int], list[int], bytes]:
        """AU sizes, AU indices (cumulative) and the bytes after the headers and auxiliary section."""
        pos = 0
        sizes: list[int] = []
        indices: list[int] = []
        if self._has_headers:
            if len(payload) < 2:
                raise ParseError(f"mpeg4-generic payload of {len(payload)} bytes: expected AU-headers-length")
            bits_total = int.from_bytes(payload[:2], "big")
            header_bytes = (bits_total + 7) // 8
            if 2 + header_bytes > len(payload):
                raise ParseError(
                    f"AU-headers-length {bits_total} bits: payload has {len(payload) - 2} bytes after it"
                )
            bits = BitReader(payload[2 : 2 + header_bytes], "AU headers", bits_total)  # padding excluded
            index = 0
            while bits.pos < bits_total:
                if len(sizes) >= MAX_AUS_PER_PACKET:
                    raise ParseError(f"more than {MAX_AUS_PER_PACKET} AU headers in one packet")
                size = bits.read(self.size_length) if self.size_length else self.constant_size
                if sizes:
                    index += bits.read(self.index_delta_length) + 1
                else:
                    index = bits.read(self.index_length)
                for length in (self.cts_delta_length, self.dts_delta_length):
                    if length and bits.read(1):
                        bits.read(length)
                if self.random_access:
                    bits.read(1)
                if self.stream_state_length:
                    bits.read(self.stream_state_length)
                if size > MAX_AU_SIZE:
                    raise ParseError(f"AU-size {size}: expected at most {MAX_AU_SIZE}")
                sizes.append(size)
                indices.append(index)
            pos = 2 + header_bytes
        if self.aux_length:
            aux = BitReader(payload[pos : pos + 8], "auxiliary-data-size")
            aux_bits = aux.read(self.aux_length) + self.aux_length
            pos += (aux_bits + 7) // 8
            if pos > len(payload):
                raise ParseError(f"auxiliary section of {aux_bits} bits: past the end of the payload")
        data = payload[pos:]
        if not sizes:  # constant size, no headers: as many AUs as fit
            if not self.constant_size:
                raise ParseError("mpeg4-generic packet with an empty AU-headers section: expected AU headers")
            if not data or len(data) % self.constant_size:
                raise ParseError(f"{len(data)} bytes of AUs: expected a multiple of constantsize")
            count = len(data) // self.constant_size
            sizes, indices = [self.constant_size] * count, list(range(count))
        return sizes, indices, data

    def _continue_fragment(self, size: int, data: bytes, timestamp: int, marker: bool) -> list[AudioUnit]:
        if self._fragment is None:
            self._fragment, self._fragment_size, self._fragment_ts = bytearray(), size, timestamp
        elif size != self._fragment_size or timestamp != self._fragment_ts:
            self._drop_fragment()
            if size > len(data):
                return self._continue_fragment(size, data, timestamp, marker)
            return [self._unit(timestamp, data[:size])] if size == len(data) else []
        self._fragment += data
        if len(self._fragment) < self._fragment_size and not marker:
            return []
        whole, self._fragment = bytes(self._fragment), None
        if len(whole) != self._fragment_size:
            self.counters.audio_units_dropped += 1
            return []
        return [self._unit(self._fragment_ts, whole)]

    def _drop_fragment(self) -> None:
        if self._fragment is not None:
            self.counters.audio_units_dropped += 1
            self._fragment = None


class AacPacketizer:
    """AAC access units to RTP packets (AAC-hbr: sizelength=13, indexlength=3, indexdeltalength=3).

    Whole AUs are aggregated into one packet up to ``max_payload_size``; an AU too big for one packet is
    fragmented. Used by the tests and usable by a load generator.
    """

    def __init__(
        self,
        *,
        payload_type: int = 97,
        ssrc: int = 0x41414343,
        max_payload_size: int = 1400,
        initial_sequence: int = 0,
    ) -> None:
        if max_payload_size < 8:
            raise ValueError(f"max_payload_size {max_payload_size}: expected at least 8")
        self.payload_type, self.ssrc, self.max_payload_size = payload_type, ssrc, max_payload_size
        self._seq = initial_sequence & 0xFFFF

    def _packet(self, payload: bytes, timestamp: int, marker: bool) -> RtpPacket:
        packet = RtpPacket(self.payload_type, self._seq, timestamp & 0xFFFFFFFF, self.ssrc, payload, marker)
        self._seq = (self._seq + 1) & 0xFFFF
        return packet

    def packetize(self, units: list[AudioUnit]) -> list[RtpPacket]:
        """Consecutive units (each 1024 samples after the previous) as few packets as fit."""
        packets: list[RtpPacket] = []
        group: list[AudioUnit] = []
        for unit in [*units, None]:
            size = (
                2 + 2 * (len(group) + 1) + sum(len(u.data) for u in group) + (len(unit.data) if unit else 0)
            )
            if group and (unit is None or size > self.max_payload_size):
                headers = b"".join((len(u.data) << 3).to_bytes(2, "big") for u in group)
                body = (16 * len(group)).to_bytes(2, "big") + headers + b"".join(u.data for u in group)
                packets.append(self._packet(body, group[0].pts, True))
                group = []
            if unit is None:
                break
            if 4 + len(unit.data) > self.max_payload_size:
                chunk = self.max_payload_size - 4
                header = (16).to_bytes(2, "big") + (len(unit.data) << 3).to_bytes(2, "big")
                for pos in range(0, len(unit.data), chunk):
                    last = pos + chunk >= len(unit.data)
                    packets.append(self._packet(header + unit.data[pos : pos + chunk], unit.pts, last))
            else:
                group.append(unit)
        return packets


def parse_stream_mux_config(config: str) -> tuple[AudioConfig, int]:
    """``config=`` of ``MP4A-LATM`` (a StreamMuxConfig in hex, ISO 14496-3 1.7.3) to the AAC configuration
    and the number of AUs (subframes) per AudioMuxElement. Only what cameras and GStreamer send: version 0,
    one program and layer, variable frame length."""
    try:
        data = bytes.fromhex(config)
    except ValueError:
        raise ParseError(f"MP4A-LATM fmtp config={config[:40]!r}: expected hexadecimal") from None
    bits = BitReader(data, f"StreamMuxConfig {config[:40]!r}")
    if bits.read(1):
        raise ParseError(f"StreamMuxConfig {config[:40]!r}: audioMuxVersion 1, expected 0")
    bits.read(1)  # allStreamsSameTimeFraming
    subframes = bits.read(6) + 1
    if bits.read(4) or bits.read(3):
        raise ParseError(f"StreamMuxConfig {config[:40]!r}: several programs or layers, expected one")
    object_type = bits.read(5)
    index = bits.read(4)
    rate = bits.read(24) if index == 15 else 0
    channels = bits.read(4)
    if object_type != 2:
        raise ParseError(
            f"StreamMuxConfig {config[:40]!r}: audio object type {object_type}, expected 2 (AAC-LC)"
        )
    if index != 15:
        rate = SAMPLE_RATES[index] if index < len(SAMPLE_RATES) else 0
    bits.read(3)  # GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag
    mark = bits.pos
    if bits.limit - mark >= 11 and bits.read(11) == 0x2B7:  # backward-compatible SBR signalling
        if bits.read(5) == 5 and bits.read(1) and bits.read(4) == 15:  # SBR present, explicit rate
            bits.read(24)
    else:
        bits.pos = mark
    if bits.read(3) != 0:
        raise ParseError(f"StreamMuxConfig {config[:40]!r}: a fixed frameLengthType, expected 0")
    return AudioConfig.aac_lc(rate, channels), subframes


class LatmDepacketizer:
    """RTP packets of one ``MP4A-LATM`` track (RFC 6416, ``cpresent=0``; GStreamer's default) to AAC AUs.

    An AudioMuxElement (possibly over several packets, the marker bit on its last) holds ``subframes`` AUs,
    each a PayloadLengthInfo (bytes of 255, then the rest) and the AU.
    """

    def __init__(self, fmtp: Mapping[str, str], clock_rate: int | None = None) -> None:
        if fmtp.get("cpresent", "1").strip() != "0":
            raise ParseError("MP4A-LATM fmtp without cpresent=0: in-band StreamMuxConfig is not supported")
        self.config, self.subframes = parse_stream_mux_config(fmtp.get("config", ""))
        self.clock_rate = clock_rate or self.config.sample_rate
        self.frame_ticks = AAC_FRAME * self.clock_rate // self.config.sample_rate or 1
        self.counters = AudioCounters()
        self._unwrapper = TimestampUnwrapper()
        self._last_seq: int | None = None
        self._element = bytearray()
        self._timestamp = 0

    def push(self, packet: RtpPacket) -> list[AudioUnit]:
        gap = sequence_gap(self._last_seq, packet.sequence_number)
        if gap:
            if gap < 0:
                self.counters.audio_packets_late += 1
                return []
            self.counters.audio_packets_lost += gap
            if self._element:
                self.counters.audio_units_dropped += 1
                self._element.clear()
        self._last_seq = packet.sequence_number
        timestamp = self._unwrapper.unwrap(packet.timestamp)
        if not self._element:
            self._timestamp = timestamp
        self._element += packet.payload
        if len(self._element) > MAX_AU_SIZE * self.subframes:
            self.counters.audio_units_dropped += 1
            self._element.clear()
            return []
        if not packet.marker:
            return []
        element, self._element = bytes(self._element), bytearray()
        try:
            aus = self.parse(element)
        except ParseError:
            self.counters.audio_packets_invalid += 1
            return []
        rate = self.config.sample_rate
        out = []
        for i, au in enumerate(aus):
            ticks = self._timestamp + i * self.frame_ticks
            out.append(AudioUnit(ticks if self.clock_rate == rate else ticks * rate // self.clock_rate, au))
        return out

    def flush(self) -> list[AudioUnit]:
        self._element.clear()
        return []

    def parse(self, element: bytes) -> list[bytes]:
        """The AUs of one AudioMuxElement; ParseError when it does not hold ``subframes`` whole AUs."""
        aus, pos = [], 0
        for _ in range(self.subframes):
            size = 0
            while True:
                if pos >= len(element):
                    raise ParseError(
                        f"AudioMuxElement of {len(element)} bytes ends inside a PayloadLengthInfo"
                    )
                byte = element[pos]
                pos += 1
                size += byte
                if byte != 255:
                    break
            if pos + size > len(element):
                raise ParseError(f"AU of {size} bytes at {pos}: AudioMuxElement has {len(element)} bytes")
            aus.append(element[pos : pos + size])
            pos += size
        return aus
