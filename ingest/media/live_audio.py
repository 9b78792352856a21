"""A stream's AAC as Opus for its WebRTC viewers: decoded and encoded once per stream, whatever the
number of viewers (``ingest.media.publisher`` runs it only while the stream has viewers). No I/O.

AAC (from an RTSP or pulled camera's AAC, or the AAC its G.711 became) is decoded by FFmpeg's
``aac`` decoder, resampled to 48 kHz in 20 ms frames and encoded by ``libopus`` (``lowdelay``).
Opus from a WHIP publisher is never re-encoded: it goes to the viewers as it came.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from ingest.codecs.aac import AudioConfig, AudioUnit

OPUS_RATE = 48_000
OPUS_FRAME = 960  # samples of 20 ms
MAX_GAP_SECONDS = 0.5  # a bigger jump in the AAC's pts restarts the Opus timeline there


@dataclass
class OpusCounters:
    aac_units: int = 0
    aac_undecodable: int = 0
    opus_packets: int = 0


class AacToOpus:
    def __init__(self, config: AudioConfig, bitrate: int = 64_000) -> None:
        self.config = config
        self.counters = OpusCounters()
        layout = "mono" if config.channels == 1 else "stereo"
        decoder = av.CodecContext.create("aac", "r")
        assert isinstance(decoder, av.audio.codeccontext.AudioCodecContext)
        decoder.extradata = config.asc
        decoder.sample_rate = config.sample_rate
        decoder.layout = layout
        self._decoder = decoder
        encoder = av.CodecContext.create("libopus", "w")
        assert isinstance(encoder, av.audio.codeccontext.AudioCodecContext)
        encoder.sample_rate = OPUS_RATE
        encoder.layout = layout
        encoder.format = "s16"
        encoder.bit_rate = bitrate
        encoder.time_base = Fraction(1, OPUS_RATE)
        encoder.options = {"application": "lowdelay", "frame_duration": "20"}
        encoder.open()
        self._encoder = encoder
        self._resampler = av.AudioResampler(
            format="s16", layout=layout, rate=OPUS_RATE, frame_size=OPUS_FRAME
        )
        self._next: int | None = None  # the 48 kHz pts of the next resampled sample

    def push(self, unit: AudioUnit) -> list[tuple[bytes, int]]:
        """One AAC unit (``pts`` in the config's sample rate) → the Opus packets (bytes, 48 kHz pts) it
        completes."""
        self.counters.aac_units += 1
        pts = unit.pts * OPUS_RATE // self.config.sample_rate
        if self._next is None or abs(pts - self._next) > MAX_GAP_SECONDS * OPUS_RATE:
            self._next = pts
        packet = av.Packet(unit.data)
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError:
            self.counters.aac_undecodable += 1
            return []
        out: list[tuple[bytes, int]] = []
        for frame in frames:
            frame.pts = None  # the resampler counts samples itself
            for resampled in self._resampler.resample(frame):
                resampled.pts, resampled.time_base = self._next, Fraction(1, OPUS_RATE)
                self._next += resampled.samples
                for encoded in self._encoder.encode(resampled):
                    out.append((bytes(encoded), int(encoded.pts or 0)))
        self.counters.opus_packets += len(out)
        return out
