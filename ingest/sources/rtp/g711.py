"""G.711 over RTP (RFC 3551: PCMU µ-law, static payload type 0; PCMA A-law, type 8; or dynamic):
depacketizer to PCM, and ``G711ToAac``, which encodes that PCM to AAC-LC for the segments (HLS players
cannot play G.711).

Every payload byte is one sample (interleaved when there are several channels); the RTP timestamp is the
first sample's index at the clock rate (8 kHz for the static types). Decoding is in ``ingest.codecs.g711``.
"""

from __future__ import annotations

from ingest.codecs.aac import AacEncoder, AudioConfig, AudioCounters, AudioUnit
from ingest.codecs.g711 import PCMA, PCMU, decode
from ingest.errors import ParseError
from ingest.sources.rtp.base import TimestampUnwrapper
from ingest.sources.rtp.packet import RtpPacket, sequence_gap

STATIC_PAYLOAD_TYPES = {0: PCMU, 8: PCMA}  # RFC 3551 table 4: 8000 Hz, 1 channel
G711_CLOCK_RATE = 8000
MAX_CHANNELS = 2
CLOCK_RATES = (8000, 48000)  # G.711 is 8 kHz; wideband variants announce up to 48 kHz


class G711Depacketizer:
    """RTP packets of one PCMU/PCMA track to (first sample's 64-bit timestamp, PCM s16le) blocks."""

    def __init__(self, law: str, clock_rate: int = G711_CLOCK_RATE, channels: int = 1) -> None:
        if law not in (PCMU, PCMA):
            raise ParseError(f"G.711 encoding {law!r}: expected PCMU or PCMA")
        if not 1 <= channels <= MAX_CHANNELS:
            raise ParseError(f"G.711 with {channels} channels: expected 1 or {MAX_CHANNELS}")
        if not CLOCK_RATES[0] <= clock_rate <= CLOCK_RATES[1]:
            # the encoder resamples to its rate: PCMU/6 made every received sample 2,667 to encode
            low, high = CLOCK_RATES
            raise ParseError(f"G.711 clock rate {clock_rate} Hz: expected {low}..{high}")
        self.law = law
        self.clock_rate = clock_rate
        self.channels = channels
        self.counters = AudioCounters()
        self._unwrapper = TimestampUnwrapper()
        self._last_seq: int | None = None

    def push(self, packet: RtpPacket) -> list[tuple[int, bytes]]:
        gap = sequence_gap(self._last_seq, packet.sequence_number)
        if gap < 0:
            self.counters.audio_packets_late += 1
            return []
        self.counters.audio_packets_lost += gap
        self._last_seq = packet.sequence_number
        payload = packet.payload
        if not payload or len(payload) % self.channels:
            self.counters.audio_packets_invalid += 1
            return []
        return [(self._unwrapper.unwrap(packet.timestamp), decode(self.law, payload))]


class G711ToAac:
    """The audio depacketizer of a G.711 track: RTP in, AAC-LC access units out, at the same rate.

    A lost packet leaves a gap in the timestamps; the encoder fills it with silence (up to 1 s), so
    the audio track stays continuous. A rate AAC has no table entry for is resampled to 16 kHz.
    """

    def __init__(self, law: str, clock_rate: int = G711_CLOCK_RATE, channels: int = 1) -> None:
        self.depacketizer = G711Depacketizer(law, clock_rate, channels)
        self.counters = self.depacketizer.counters
        self.clock_rate = clock_rate
        rate = clock_rate if clock_rate in (8000, 16000, 32000, 48000) else 16000
        self.encoder = AacEncoder(rate, channels, counters=self.counters)
        self.config: AudioConfig = self.encoder.config

    def push(self, packet: RtpPacket) -> list[AudioUnit]:
        out: list[AudioUnit] = []
        for timestamp, pcm in self.depacketizer.push(packet):
            out += self.encoder.encode_pcm(
                pcm, timestamp, sample_rate=self.clock_rate, channels=self.depacketizer.channels
            )
        return out

    def flush(self) -> list[AudioUnit]:
        return self.encoder.flush()
