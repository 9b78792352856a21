"""RTP audio to AAC units: the audio depacketizer protocol, the depacketizer of an announced format, and
``RtpAudioTrack`` (packets in, reordered over UDP, depacketized, ``AudioUnit``s to the media path)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from ingest.codecs.aac import AudioConfig, AudioCounters, AudioUnit
from ingest.errors import ParseError
from ingest.sources.rtp.aac import AacDepacketizer, LatmDepacketizer
from ingest.sources.rtp.base import Depacketizer
from ingest.sources.rtp.g711 import G711ToAac
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import RtpPacket


class AudioDepacketizer(Depacketizer[AudioUnit, AudioCounters], Protocol):
    """The one depacketizer protocol (``ingest.sources.rtp.base.Depacketizer``) with AAC units out, plus
    the configuration of the AAC track they make (known from the SDP, before any packet)."""

    @property
    def config(self) -> AudioConfig: ...


def audio_depacketizer_for(
    encoding: str, clock_rate: int, channels: int | None, fmtp: Mapping[str, str]
) -> AudioDepacketizer:
    """The depacketizer of an announced audio format: ``MPEG4-GENERIC`` or ``MP4A-LATM`` (AAC), ``PCMU``
    or ``PCMA`` (G.711).

    Raises ParseError for anything else or a bad ``fmtp``; the caller then ignores the track.
    """
    name = encoding.upper()
    if name == "MPEG4-GENERIC":
        return AacDepacketizer(fmtp, clock_rate)
    if name == "MP4A-LATM":
        return LatmDepacketizer(fmtp, clock_rate)
    if name in ("PCMU", "PCMA"):
        return G711ToAac(name, clock_rate, channels or 1)
    raise ParseError(f"audio encoding {encoding!r}: expected MPEG4-GENERIC, MP4A-LATM, PCMU or PCMA")


class RtpAudioTrack:
    """One audio track's RTP: parsed, put back in order over UDP (``jitter``), depacketized; each AAC unit
    goes to ``sink`` (the media path's ``push_audio``). ``flush`` at the end of the session hands over
    what the jitter buffer and the depacketizer still hold."""

    def __init__(
        self,
        depacketizer: AudioDepacketizer,
        sink: Callable[[AudioUnit], None],
        *,
        jitter: JitterBuffer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.depacketizer = depacketizer
        self.jitter = jitter
        self._sink = sink
        self._clock = clock
        self.packets = 0
        self.invalid = 0

    def on_rtp(self, data: bytes) -> None:
        self.packets += 1
        try:
            packet = RtpPacket.parse(data)
        except ParseError:
            self.invalid += 1
            return
        packets = [packet] if self.jitter is None else self.jitter.push(packet, self._clock())
        for ordered in packets:
            for unit in self.depacketizer.push(ordered):
                self._sink(unit)

    def flush(self) -> None:
        units: list[AudioUnit] = []
        if self.jitter is not None:
            for packet in self.jitter.flush():
                units += self.depacketizer.push(packet)
        units += self.depacketizer.flush()
        for unit in units:
            self._sink(unit)
