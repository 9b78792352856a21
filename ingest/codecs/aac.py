"""Audio for the segments: the codec-neutral audio unit, the AAC configuration, and ``AacEncoder``
(PCM or ``av.AudioFrame`` in, AAC-LC access units out).

Segments carry audio as AAC-LC only (``mp4a.40.2``, what every HLS player plays): AAC from a camera
(RFC 3640, ``ingest.sources.rtp.aac``) is copied as is; G.711 (``ingest.sources.rtp.g711``) and
WebRTC's Opus are decoded to PCM and encoded here with FFmpeg's native ``aac`` encoder through PyAV.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.audio
import numpy as np

from ingest.errors import ParseError

AAC_LC = 2  # MPEG-4 audio object type
AAC_FRAME = 1024  # samples per AAC-LC access unit
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
MAX_FILL_SECONDS = 1.0  # an input gap up to this long is filled with silence; a longer one restarts
DEFAULT_BITRATES = {1: 64_000, 2: 128_000}
# FFmpeg's "fast" coefficient search: a third of the default "twoloop"'s CPU at the same bitrate
# (8 kHz mono at 32 kb/s: 1.5 vs 3.2 ms per second of audio), which matters per camera on ingest.
ENCODER_CODER = "fast"


class BitReader:
    """MSB-first bit reader over bytes; reading past ``limit`` bits is a ParseError naming ``what``."""

    def __init__(self, data: bytes, what: str, limit: int | None = None) -> None:
        self.value = int.from_bytes(data, "big")
        self.size = len(data) * 8
        self.limit = self.size if limit is None else min(limit, self.size)
        self.pos = 0
        self.what = what

    def read(self, n: int) -> int:
        if self.pos + n > self.limit:
            raise ParseError(f"{self.what}: needs {self.pos + n} bits, has {self.limit}")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)


@dataclass(frozen=True)
class AudioConfig:
    """An AAC stream's parameters and its MPEG-4 AudioSpecificConfig (the ``esds`` content)."""

    sample_rate: int  # Hz, also the timescale of the audio track
    channels: int
    asc: bytes
    object_type: int = AAC_LC

    @property
    def codecs(self) -> str:
        """RFC 6381 codecs string, e.g. ``mp4a.40.2``."""
        return f"mp4a.40.{self.object_type}"

    @property
    def frequency_index(self) -> int:
        return SAMPLE_RATES.index(self.sample_rate) if self.sample_rate in SAMPLE_RATES else 15

    @classmethod
    def aac_lc(cls, sample_rate: int, channels: int) -> AudioConfig:
        """The two-byte AudioSpecificConfig of AAC-LC at a standard rate."""
        if sample_rate not in SAMPLE_RATES:
            raise ParseError(f"AAC sample rate {sample_rate}: expected one of {SAMPLE_RATES}")
        if not 1 <= channels <= 7:
            raise ParseError(f"AAC channel count {channels}: expected 1..7")
        value = AAC_LC << 11 | SAMPLE_RATES.index(sample_rate) << 7 | channels << 3
        return cls(sample_rate, channels, value.to_bytes(2, "big"))

    @classmethod
    def parse(cls, asc: bytes) -> AudioConfig:
        """An AudioSpecificConfig (ISO 14496-3 1.6.2.1); only AAC-LC can go into the segments."""
        bits = BitReader(asc, f"AudioSpecificConfig {asc.hex()!r}")
        object_type = bits.read(5)
        if object_type == 31:
            object_type = 32 + bits.read(6)
        index = bits.read(4)
        rate = bits.read(24) if index == 15 else SAMPLE_RATES[index] if index < len(SAMPLE_RATES) else 0
        channels = bits.read(4)
        if object_type != AAC_LC:
            raise ParseError(
                f"AudioSpecificConfig {asc.hex()!r}: object type {object_type}, expected 2 (AAC-LC)"
            )
        if rate not in SAMPLE_RATES:
            raise ParseError(
                f"AudioSpecificConfig {asc.hex()!r}: sampling frequency index {index}, expected 0..12"
            )
        if not 1 <= channels <= 7:
            raise ParseError(
                f"AudioSpecificConfig {asc.hex()!r}: channel configuration {channels}, expected 1..7"
            )
        return cls(rate, channels, bytes(asc))

    def adts_header(self, payload_size: int) -> bytes:
        """The 7-byte ADTS header of one access unit (for PyAV's ``aac`` demuxer, used as a template)."""
        length = payload_size + 7
        if length >= 1 << 13:
            raise ParseError(f"AAC access unit of {payload_size} bytes: expected under 8185 for ADTS")
        value = (
            0xFFF << 44
            | 1 << 40  # MPEG-4, layer 0, protection absent
            | (self.object_type - 1) << 38
            | self.frequency_index << 34
            | self.channels << 30
            | length << 13
            | 0x7FF << 2
        )
        return value.to_bytes(7, "big")


@dataclass(frozen=True)
class AudioUnit:
    """One AAC access unit. ``pts`` is in the stream's sample clock (1/sample_rate s), 64-bit."""

    pts: int
    data: bytes = field(repr=False)
    duration: int = AAC_FRAME


@dataclass
class AudioCounters:
    """What an audio path corrected or dropped since it was created (names unique across the media path)."""

    audio_packets_lost: int = 0  # sequence number gaps
    audio_packets_late: int = 0  # reordered or duplicated packets, dropped
    audio_packets_invalid: int = 0  # packets that do not parse (bad AU headers, sizes past the end)
    audio_units_dropped: int = 0  # incomplete fragmented AUs, oversize AUs
    audio_gaps_filled: int = 0  # PCM gaps filled with silence before encoding
    audio_restarts: int = 0  # timestamp jumps that restarted the encoder's timeline


class AacEncoder:
    """PCM or ``av.AudioFrame`` in, AAC-LC access units out (FFmpeg's native ``aac`` encoder).

    Input of another sample format, layout or rate is resampled to ``sample_rate`` / ``channels``.
    Samples are collected into whole 1024-sample frames (one PyAV call per AAC frame, not per input
    packet: 50 G.711 packets a second are 8 encoder calls). Timing follows the input's ``pts``: a gap
    up to ``MAX_FILL_SECONDS`` is filled with silence, a larger one or a step back restarts the unit
    timeline at the new pts (counted in ``audio_restarts``). Output ``pts`` are in ``sample_rate``
    ticks; the encoder's priming shows as a first unit 1024 ticks early.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        bitrate: int | None = None,
        counters: AudioCounters | None = None,
    ) -> None:
        self.config = AudioConfig.aac_lc(sample_rate, channels)
        self.counters = counters if counters is not None else AudioCounters()
        self._layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"
        # At most 4 bits per sample: G.711's 8 kHz mono gets 32 kb/s (more only costs encoder time).
        default = min(DEFAULT_BITRATES.get(channels, 64_000 * channels), 4 * sample_rate * channels)
        self._bitrate = bitrate or default
        self._codec: av.audio.codeccontext.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._pending = np.zeros((channels, 0), dtype=np.float32)  # samples short of a whole frame
        self._next: int | None = None  # the output-rate pts the next input sample should have
        self._fed = 0  # samples fed to the current codec, its own timeline starts at 0
        self._origin = 0  # output-rate pts of the current codec's sample 0

    def _open(self, origin: int) -> None:
        codec = av.CodecContext.create("aac", "w")
        assert isinstance(codec, av.audio.codeccontext.AudioCodecContext)
        codec.sample_rate = self.config.sample_rate
        codec.layout = self._layout
        codec.format = "fltp"
        codec.bit_rate = self._bitrate
        codec.time_base = Fraction(1, self.config.sample_rate)
        codec.options = {"aac_coder": ENCODER_CODER}
        codec.open()
        self._codec = codec
        self._origin, self._fed, self._next = origin, 0, origin

    def encode_pcm(self, pcm: bytes, pts: int, *, sample_rate: int, channels: int) -> list[AudioUnit]:
        """Signed 16-bit little-endian interleaved PCM; ``pts`` in 1/``sample_rate`` s."""
        if len(pcm) % (2 * channels):
            raise ParseError(f"PCM block of {len(pcm)} bytes: expected a multiple of {2 * channels}")
        if sample_rate != self.config.sample_rate or channels != self.config.channels:
            frame = av.AudioFrame.from_ndarray(
                np.frombuffer(pcm, dtype="<i2").reshape(1, -1),
                format="s16",
                layout="mono" if channels == 1 else "stereo",
            )
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, Fraction(1, sample_rate)
            return self.encode(frame)
        out = self._align(pts)
        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).T.astype(np.float32) / 32768.0
        return out + self._push(samples)

    def encode(self, frame: av.AudioFrame) -> list[AudioUnit]:
        rate = self.config.sample_rate
        pts: int | None = None
        if frame.pts is not None and frame.time_base is not None:
            pts = round(frame.pts * frame.time_base * rate)
        out = self._align(pts)
        same = frame.format.name == "fltp" and frame.sample_rate == rate and frame.layout.name == self._layout
        if same:
            return out + self._push(frame.to_ndarray().astype(np.float32, copy=False))
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=rate)
        frame.pts = None  # the resampler counts samples itself
        for resampled in self._resampler.resample(frame):
            out += self._push(resampled.to_ndarray())
        return out

    def _align(self, pts: int | None) -> list[AudioUnit]:
        """Before input at ``pts``: open the encoder, restart it after a jump, or fill a small gap."""
        out: list[AudioUnit] = []
        if self._codec is None or (pts is not None and self._next is not None and not self._fits(pts)):
            if self._codec is not None:
                out += self.flush()
                self.counters.audio_restarts += 1
            self._open(pts if pts is not None else (self._next or 0))
        assert self._next is not None
        if pts is not None and pts > self._next:  # a small gap: silence keeps the timeline continuous
            self.counters.audio_gaps_filled += 1
            out += self._push(np.zeros((self.config.channels, pts - self._next), dtype=np.float32))
        return out

    def _fits(self, pts: int) -> bool:
        assert self._next is not None
        gap = pts - self._next
        return -self.config.sample_rate // 50 <= gap <= MAX_FILL_SECONDS * self.config.sample_rate

    def _push(self, samples: np.ndarray) -> list[AudioUnit]:
        """Planar float samples in; every whole frame they complete goes to the encoder."""
        pending = np.concatenate((self._pending, samples), axis=1) if self._pending.size else samples
        self._next = self._origin + self._fed + pending.shape[1]
        out: list[AudioUnit] = []
        whole = pending.shape[1] - pending.shape[1] % AAC_FRAME
        for at in range(0, whole, AAC_FRAME):
            out += self._encode(np.ascontiguousarray(pending[:, at : at + AAC_FRAME]))
        self._pending = pending[:, whole:]
        return out

    def _encode(self, samples: np.ndarray | None) -> list[AudioUnit]:
        assert self._codec is not None
        frame = None
        if samples is not None:
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=self._layout)
            frame.sample_rate = self.config.sample_rate
            frame.pts, frame.time_base = self._fed, Fraction(1, self.config.sample_rate)
            self._fed += samples.shape[1]
        return [
            AudioUnit(self._origin + int(p.pts or 0), bytes(p), int(p.duration or AAC_FRAME))
            for p in self._codec.encode(frame)
        ]

    def flush(self) -> list[AudioUnit]:
        """The units still inside the encoder (its last, partial frame padded with silence)."""
        if self._codec is None:
            return []
        out: list[AudioUnit] = []
        if self._pending.shape[1]:
            out += self._encode(np.ascontiguousarray(self._pending))
            self._pending = self._pending[:, :0]
        out += self._encode(None)
        self._codec = None
        self._resampler = None
        return out


@functools.cache
def silent_unit(sample_rate: int, channels: int) -> bytes:
    """One AAC-LC access unit of silence at this rate and channel count (fills holes in the audio)."""
    encoder = AacEncoder(sample_rate, channels)
    units = encoder.encode_pcm(
        bytes(2 * channels * 4 * AAC_FRAME), 0, sample_rate=sample_rate, channels=channels
    )
    units += encoder.flush()
    return units[2].data  # past the encoder's priming
