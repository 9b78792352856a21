"""Opus from a WHIP publisher → AAC for HLS: decoded (FFmpeg's opus decoder) and encoded with the
audio path's ``AacEncoder``, handed to the publisher as AAC access units. No I/O.

H.264 sessions carry it in their fMP4 raw segments, VP8 sessions in their NUT raw segments
(``ingest.sources.whip.media.Vp8Muxer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from ingest.codecs.aac import AacEncoder, AudioUnit

OPUS_RATE = 48_000  # RFC 7587: the RTP clock of Opus is always 48 kHz


@dataclass
class OpusCounters:
    opus_frames: int = 0
    opus_undecodable: int = 0


class OpusToAac:
    def __init__(self, channels: int = 2) -> None:
        decoder = av.CodecContext.create("opus", "r")
        assert isinstance(decoder, av.audio.codeccontext.AudioCodecContext)
        decoder.sample_rate = OPUS_RATE
        decoder.layout = "stereo" if channels == 2 else "mono"
        self._decoder = decoder
        self.encoder = AacEncoder(OPUS_RATE, channels)
        self.counters = OpusCounters()
        self._time_base = Fraction(1, OPUS_RATE)

    def push(self, data: bytes, timestamp: int) -> list[AudioUnit]:
        """One Opus frame at ``timestamp`` (48 kHz) → the AAC units it completes."""
        self.counters.opus_frames += 1
        packet = av.Packet(data)
        packet.pts = timestamp
        packet.time_base = self._time_base
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError:
            self.counters.opus_undecodable += 1
            return []
        units: list[AudioUnit] = []
        for frame in frames:
            frame.pts, frame.time_base = timestamp, self._time_base
            units += self.encoder.encode(frame)
            timestamp += frame.samples
        return units

    def flush(self) -> list[AudioUnit]:
        return self.encoder.flush()
