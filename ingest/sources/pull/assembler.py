"""A pulled source's PyAV packets to the units a ``Publisher`` takes: H.264 or H.265 access units on the
90 kHz timeline (``UnitAssembler``, the codec's NAL grammar in a ``NalSyntax``) and AAC-LC access units
(``AudioAssembler``).

Audio that is already AAC (RFC 3640 ``mpeg4-generic`` or ``MP4A-LATM`` on the wire: FFmpeg's RTSP
demuxer hands out raw access units and the AudioSpecificConfig as extradata) is copied as is; any
other audio PyAV decodes (G.711 µ-law / A-law, ...) is decoded and encoded to AAC-LC with
``ingest.codecs.aac.AacEncoder``, as a pushing camera's G.711 is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import av.audio.stream

from camflow.codecs import avcc_nal_units, hvcc_nal_units
from ingest.codecs import h264, h265
from ingest.codecs.aac import AAC_FRAME, AacEncoder, AudioConfig, AudioCounters, AudioUnit
from ingest.codecs.h264 import split_annexb
from ingest.codecs.nal import insert_parameter_sets
from ingest.errors import ParseError
from ingest.media.segmenter import TIMESCALE
from ingest.media.units import AccessUnit

ENCODED_RATES = (8000, 16000, 32000, 44100, 48000)  # decoded audio at another rate is resampled to 48 kHz
MAX_ENCODED_CHANNELS = 2


@dataclass
class PullCounters:
    """What a pulled source's video corrected (the Publisher's ``corrections``)."""

    params_inserted: int = 0  # random access units given the extradata's parameter sets they lacked
    pts_missing: int = 0  # packets without a timestamp, placed one frame after the previous


@dataclass(frozen=True)
class NalSyntax:
    """What the assembler needs to know of one codec's NAL units (H.264 and H.265 differ only here)."""

    codec: str  # FFmpeg's name, also the Publisher's / SegmentMuxer's codec
    parameter_sets: tuple[int, ...]  # NAL types, in the order they precede a random access picture
    aud: int  # NAL type of the access unit delimiter
    kind: Callable[[bytes], int]  # NAL type of a (non-empty) NAL unit
    is_vcl: Callable[[int], bool]
    is_random_access: Callable[[int], bool]  # H.264 IDR, H.265 IRAP (BLA, IDR, CRA: 16..23)
    config_record: Callable[[bytes], tuple[list[bytes], int]]  # avcC / hvcC: NAL units, NAL length size


H264_SYNTAX = NalSyntax(
    codec="h264",
    parameter_sets=(h264.NAL_SPS, h264.NAL_PPS),
    aud=h264.NAL_AUD,
    kind=h264.nal_type,
    is_vcl=h264.is_vcl,
    is_random_access=lambda kind: kind == h264.NAL_IDR,
    config_record=avcc_nal_units,
)
HEVC_SYNTAX = NalSyntax(
    codec="hevc",
    parameter_sets=h265.PARAMETER_SETS,
    aud=h265.NAL_AUD,
    kind=lambda nal: (nal[0] >> 1) & 0x3F,  # h265.nal_type without its 2-byte check: any unit is typed
    is_vcl=h265.is_vcl,
    is_random_access=h265.is_irap,
    config_record=hvcc_nal_units,
)
SYNTAXES = {syntax.codec: syntax for syntax in (H264_SYNTAX, HEVC_SYNTAX)}


def parameter_sets(extradata: bytes | None, syntax: NalSyntax = H264_SYNTAX) -> tuple[list[bytes], int]:
    """The parameter sets and the NAL length size (0 = Annex B) of a video stream's extradata: Annex B
    (FFmpeg's RTSP demuxer makes it from ``sprop-parameter-sets`` / ``sprop-vps/sps/pps``) or an
    MP4-style avcC / hvcC record (which starts with configurationVersion 1)."""
    if not extradata:
        return [], 0
    if extradata[0] != 1:
        nalus, length_size = split_annexb(extradata), 0
    else:
        nalus, length_size = syntax.config_record(extradata)
    return [n for n in nalus if len(n) >= 2 and syntax.kind(n) in syntax.parameter_sets], length_size


def split_length_prefixed(data: bytes, length_size: int) -> list[bytes]:
    nalus = []
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            break
        nalus.append(data[pos : pos + size])
        pos += size
    return nalus


class UnitAssembler:
    """PyAV packets of one H.264 or H.265 stream (``syntax``) to access units on the 90 kHz timeline.

    Packets are Annex B or length-prefixed; parameter sets or SEI in a packet of their own wait for
    the next picture. A random access picture without the parameter sets of the extradata (or the
    latest seen in-band) gets them inserted, counted in ``params_inserted``.
    """

    def __init__(self, extradata: bytes | None, time_base: Any, syntax: NalSyntax = H264_SYNTAX) -> None:
        self.syntax = syntax
        params, self.length_size = parameter_sets(extradata, syntax)
        self._params = {syntax.kind(n): n for n in reversed(params)}  # the first of each type wins
        self._num = int(time_base.numerator) * TIMESCALE if time_base else 1
        self._den = int(time_base.denominator) if time_base else 1
        self._held: list[bytes] = []  # parameter sets or SEI that came in a packet of their own
        self._last_pts: int | None = None
        self.counters = PullCounters()

    def _split(self, data: bytes) -> list[bytes]:
        """A packet's NAL units. With an avcC / hvcC record the packets are length-prefixed: a length of
        256..511 starts with 00 00 01 too, so that is Annex B only when the lengths do not add up."""
        if self.length_size:
            nalus = split_length_prefixed(data, self.length_size)
            if sum(len(n) for n in nalus) + self.length_size * len(nalus) == len(data):
                return nalus
        if data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01":
            return split_annexb(data)
        return split_length_prefixed(data, self.length_size or 4)

    def push(self, data: bytes, pts: int | None, dts: int | None) -> AccessUnit | None:
        syntax = self.syntax
        nalus = self._held + self._split(data)
        kinds = [syntax.kind(n) for n in nalus]
        if not any(syntax.is_vcl(k) for k in kinds):
            self._held = nalus[-16:]
            return None
        self._held = []
        for nal, kind in zip(nalus, kinds, strict=True):
            if kind in syntax.parameter_sets:
                self._params[kind] = nal
        is_idr = any(syntax.is_random_access(k) for k in kinds)
        if is_idr and any(k not in kinds for k in syntax.parameter_sets):
            filled = insert_parameter_sets(nalus, kinds, self._params, syntax.parameter_sets, syntax.aud)
            if filled is not None:
                self.counters.params_inserted += 1
                nalus = filled
        stamp = pts if pts is not None else dts
        if stamp is None:
            self.counters.pts_missing += 1
            ticks = 0 if self._last_pts is None else self._last_pts + TIMESCALE // 30
        else:
            ticks = stamp * self._num // self._den
        self._last_pts = ticks
        return AccessUnit(pts=ticks, nalus=tuple(nalus), is_idr=is_idr)


class AudioAssembler:
    """PyAV packets of a pulled source's audio stream to AAC-LC units, pts in ``config.sample_rate`` ticks.

    Raises ParseError when the stream is AAC with a configuration the segments cannot carry (not
    AAC-LC, no AudioSpecificConfig) or audio PyAV cannot decode; the caller then pulls video only.
    """

    def __init__(self, stream: av.audio.stream.AudioStream) -> None:
        context = stream.codec_context
        self.codec = context.name
        self.counters = AudioCounters()
        self._time_base = stream.time_base
        self._encoder: AacEncoder | None = None
        if self.codec == "aac":
            self.config = AudioConfig.parse(bytes(context.extradata or b""))
        else:
            if context.codec.type != "audio" or not context.sample_rate:
                raise ParseError(f"audio codec {self.codec!r}: expected AAC or audio PyAV decodes (G.711)")
            rate = context.sample_rate if context.sample_rate in ENCODED_RATES else 48000
            channels = min(max(context.channels, 1), MAX_ENCODED_CHANNELS)
            self._encoder = AacEncoder(rate, channels, counters=self.counters)
            self.config = self._encoder.config
        self.last_pts: int | None = None  # of the latest unit out

    def push(self, packet: av.Packet[Any]) -> list[AudioUnit]:
        if self._encoder is not None:
            out: list[AudioUnit] = []
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.counters.audio_packets_invalid += 1
                return out
            for frame in frames:
                assert isinstance(frame, av.AudioFrame)
                out += self._encoder.encode(frame)
        elif packet.pts is None or self._time_base is None:
            self.counters.audio_packets_invalid += 1
            return []
        else:
            base = self._time_base
            pts = packet.pts * base.numerator * self.config.sample_rate // base.denominator
            out = [AudioUnit(int(pts), bytes(packet), AAC_FRAME)]
        if out:
            self.last_pts = out[-1].pts
        return out

    def flush(self) -> list[AudioUnit]:
        return self._encoder.flush() if self._encoder is not None else []
