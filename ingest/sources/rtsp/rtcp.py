"""What a receiver tells a camera in RTCP: per-source reception statistics (RFC 3550 A.1, A.3, A.8).

Sans-IO: the socket side reports each RTP packet (its header bytes and arrival time) and each sender
report; ``report_block`` gives the loss, jitter and LSR/DLSR of a receiver report block.
"""

from __future__ import annotations

import struct

from ingest.sources.rtp.packet import ReceiverReport, ReportBlock, SenderReport, SourceDescription

MAX_DROPOUT = 3000  # a forward jump larger than this (in sequence numbers) restarts the count
MAX_MISORDER = 100  # a backward step up to this is a late packet, not a restart
REPORT_INTERVAL = 5.0  # seconds between receiver reports
_unpack_header = struct.Struct("!BBHII").unpack_from


class ReceptionStats:
    """Reception statistics of one RTP source (the track's current SSRC)."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.received = 0
        self.late = 0
        self.restarts = 0
        self.jitter = 0.0  # in RTP timestamp units
        self.sender_reports = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: int | None = None
        self._last_sr: tuple[int, float] | None = None  # (compact NTP of the last SR, its arrival time)

    def _restart(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self._base_seq = self._max_seq = seq
        self._cycles = 0
        self.received = self._expected_prior = self._received_prior = 0
        self._transit = None
        self.jitter = 0.0

    def on_rtp(self, data: bytes, arrival: float) -> None:
        """One RTP packet (only its 12-byte fixed header is read) that arrived at ``arrival`` seconds."""
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        _, _, seq, timestamp, ssrc = _unpack_header(data)
        self.on_header(seq, timestamp, ssrc, arrival)

    def on_header(self, seq: int, timestamp: int, ssrc: int, arrival: float) -> None:
        """``on_rtp`` from the header fields the caller already read (plain int arithmetic, per packet)."""
        if ssrc == self.ssrc and seq == (self._max_seq + 1) & 0xFFFF:  # the next one, as nearly always
            if seq == 0:
                self._cycles += 1 << 16
            self._max_seq = seq
        elif ssrc != self.ssrc:
            if self.ssrc is not None:
                self.restarts += 1
            self._restart(ssrc, seq)
        else:
            delta = (seq - self._max_seq) & 0xFFFF
            if 0 < delta < MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += 1 << 16
                self._max_seq = seq
            elif delta >= (1 << 16) - MAX_MISORDER:
                self.late += 1
            elif delta != 0:  # a jump: the camera restarted its sequence
                self.restarts += 1
                self._restart(ssrc, seq)
        self.received += 1
        transit = (int(arrival * self.clock_rate) - timestamp) & 0xFFFFFFFF
        last = self._transit
        self._transit = transit
        if last is not None and transit != last:  # the same transit (packets of one read) leaves d = 0
            d = (transit - last) & 0xFFFFFFFF
            if d >= 1 << 31:
                d = (1 << 32) - d
            self.jitter += (d - self.jitter) / 16
        elif last is not None:
            self.jitter -= self.jitter / 16

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        self.sender_reports += 1
        self._last_sr = (report.compact_ntp, arrival)

    @property
    def expected(self) -> int:
        return self._cycles + self._max_seq - self._base_seq + 1 if self.ssrc is not None else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative with duplicates), clamped to 24 bits signed."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def report_block(self, now: float) -> ReportBlock | None:
        """The block for a receiver report sent at ``now``; None before any packet."""
        if self.ssrc is None:
            return None
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lsr = dlsr = 0
        if self._last_sr is not None:
            lsr = self._last_sr[0]
            dlsr = min(0xFFFFFFFF, max(0, int((now - self._last_sr[1]) * 65536)))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.lost,
            highest_sequence=(self._cycles + self._max_seq) & 0xFFFFFFFF,
            jitter=min(0xFFFFFFFF, int(self.jitter)),
            last_sr=lsr,
            delay_since_last_sr=dlsr,
        )


def receiver_report(ssrc: int, cname: str, blocks: list[ReportBlock]) -> bytes:
    """A compound RTCP packet: RR (up to 31 blocks) then SDES with our CNAME."""
    return bytes(ReceiverReport(ssrc, tuple(blocks[:31]))) + bytes(SourceDescription(ssrc, cname))
