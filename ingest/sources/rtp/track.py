"""One video track's RTP to access units: parsed, put back in order over UDP, depacketized, handed to
the media path (``ingest.media.publisher.Publisher.push_video``).

Over UDP a small jitter buffer (``ingest.sources.rtp.jitter``) puts packets back in order first; over
TCP, which cannot reorder, the connection reads each packet's fixed header once and the fields go
straight to the depacketizer's ``push_fields`` (no ``RtpPacket`` built on the per-packet path).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.errors import ParseError
from ingest.media.publisher import PublishStats
from ingest.media.units import AccessUnit
from ingest.sources.rtp.base import VideoDepacketizer
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import RtpPacket


class RtpVideoTrack:
    """The video track of an RTP session: packets in, ``AccessUnit``s to ``sink``; what arrived is
    counted in ``stats`` (the media path's, for the health feed)."""

    def __init__(
        self,
        depacketizer: VideoDepacketizer,
        sink: Callable[[AccessUnit], None],
        stats: PublishStats,
        *,
        jitter: JitterBuffer | None = None,
    ) -> None:
        self.depacketizer = depacketizer
        self.jitter = jitter  # UDP only: TCP cannot reorder
        self._sink = sink
        self._stats = stats
        # The per-packet path over TCP skips building an RtpPacket.
        self._push_fields = depacketizer.push_fields if jitter is None else None

    def on_rtp(self, data: bytes) -> None:
        """One RTP packet of the video track (sync: called from the connection's read loop)."""
        self._stats.rtp_packets += 1
        self._stats.rtp_bytes += len(data)
        try:
            packet = RtpPacket.parse(data)
        except ParseError:
            self._stats.rtp_invalid += 1
            return
        if self.jitter is None:
            self._depacketize(packet)
            return
        for ordered in self.jitter.push(packet, time.monotonic()):
            self._depacketize(ordered)

    def on_rtp_header(
        self, second: int, sequence_number: int, timestamp: int, ssrc: int, payload: bytes, size: int
    ) -> None:
        """``on_rtp`` for a packet whose fixed header (V=2, no CSRC, extension or padding) the caller read:
        ``second`` is its second byte (marker, payload type), ``size`` the whole packet's length."""
        stats = self._stats
        stats.rtp_packets += 1
        stats.rtp_bytes += size
        push = self._push_fields
        if push is None:
            packet = RtpPacket(second & 0x7F, sequence_number, timestamp, ssrc, payload, second > 0x7F)
            if self.jitter is None:
                self._depacketize(packet)
            else:
                for ordered in self.jitter.push(packet, time.monotonic()):
                    self._depacketize(ordered)
            return
        sink = self._sink
        for unit in push(sequence_number, timestamp, second > 0x7F, payload):
            sink(unit)

    def _depacketize(self, packet: RtpPacket) -> None:
        sink = self._sink
        for unit in self.depacketizer.push(packet):
            sink(unit)

    def flush(self) -> None:
        """End of the session: what the jitter buffer and the depacketizer still hold, to the sink."""
        if self.jitter is not None:
            for packet in self.jitter.flush():
                self._depacketize(packet)
        for unit in self.depacketizer.flush():
            self._sink(unit)
