"""A pulled source's PyAV packets to the units a ``Publisher`` takes: H.264 access units on the 90 kHz
timeline (``UnitAssembler``) and AAC-LC access units (``AudioAssembler``).

Audio that is already AAC (RFC 3640 ``mpeg4-generic`` or ``MP4A-LATM`` on the wire: FFmpeg's RTSP
demuxer hands out raw access units and the AudioSpecificConfig as extradata) is copied as is; any
other audio PyAV decodes (G.711 µ-law / A-law, ...) is decoded and encoded to AAC-LC with
``ingest.audio.AacEncoder``, as a pushing camera's G.711 is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import av.audio.stream

from ingest.audio import AAC_FRAME, AacEncoder, AudioConfig, AudioCounters, AudioUnit
from ingest.errors import ParseError
from ingest.h264 import NAL_IDR, NAL_PPS, NAL_SPS, is_vcl, split_annexb
from ingest.rtp.base import AccessUnit
from ingest.segmenter import TIMESCALE

ENCODED_RATES = (8000, 16000, 32000, 44100, 48000)  # decoded audio at another rate is resampled to 48 kHz
MAX_ENCODED_CHANNELS = 2


@dataclass
class PullCounters:
    """What a pulled source's video corrected (the Publisher's ``corrections``)."""

    params_inserted: int = 0  # IDRs given the SPS/PPS of the extradata they did not carry
    pts_missing: int = 0  # packets without a timestamp, placed one frame after the previous


def parameter_sets(extradata: bytes | None) -> tuple[list[bytes], int]:
    """SPS/PPS NAL units and the NAL length size (0 = Annex B) from H.264 extradata (Annex B or avcC)."""
    if not extradata:
        return [], 0
    if extradata[0] != 1:  # Annex B, as FFmpeg's RTSP demuxer makes it from sprop-parameter-sets
        return [n for n in split_annexb(extradata) if n[0] & 0x1F in (NAL_SPS, NAL_PPS)], 0
    if len(extradata) < 7:
        return [], 4
    length_size = (extradata[4] & 0x03) + 1
    nalus: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count (5 bits), then PPS count
        if pos >= len(extradata):
            break
        count = extradata[pos] & count_mask
        pos += 1
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            nalus.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return [n for n in nalus if n], length_size


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
    """PyAV packets of one H.264 stream to access units on the 90 kHz timeline."""

    def __init__(self, extradata: bytes | None, time_base: Any) -> None:
        params, self.length_size = parameter_sets(extradata)
        self._sps = next((n for n in params if n[0] & 0x1F == NAL_SPS), None)
        self._pps = next((n for n in params if n[0] & 0x1F == NAL_PPS), None)
        self._num = int(time_base.numerator) * TIMESCALE if time_base else 1
        self._den = int(time_base.denominator) if time_base else 1
        self._held: list[bytes] = []  # parameter sets or SEI that came in a packet of their own
        self._last_pts: int | None = None
        self.counters = PullCounters()

    def push(self, data: bytes, pts: int | None, dts: int | None) -> AccessUnit | None:
        if data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01":
            nalus = split_annexb(data)
        else:
            nalus = split_length_prefixed(data, self.length_size or 4)
        nalus = self._held + nalus
        types = [n[0] & 0x1F for n in nalus]
        if not any(is_vcl(t) for t in types):
            self._held = nalus[-16:]
            return None
        self._held = []
        for nal, kind in zip(nalus, types, strict=True):
            if kind == NAL_SPS:
                self._sps = nal
            elif kind == NAL_PPS:
                self._pps = nal
        is_idr = NAL_IDR in types
        if is_idr and (NAL_SPS not in types or NAL_PPS not in types):
            missing = [n for n, k in ((self._sps, NAL_SPS), (self._pps, NAL_PPS)) if n and k not in types]
            if missing:
                self.counters.params_inserted += 1
                at = next(i for i, t in enumerate(types) if is_vcl(t))
                nalus = nalus[:at] + missing + nalus[at:]
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
