"""A small bounded reorder buffer for RTP over UDP. Sans-IO: packets and the time in, packets out.

UDP may reorder and duplicate packets; the depacketizers need them in sequence order. The
buffer holds packets that arrive ahead of a hole for at most ``window_packets`` packets or
``window_seconds`` (whichever comes first), then gives up on the hole (the depacketizer sees
the gap and counts the loss). A packet behind what was already released is late: dropped and
counted. A jump of the sequence number far outside the window, or a window's worth of "late"
packets in a row (a camera that restarted its counter) restarts the buffer instead of being
taken as thousands of lost or late packets.

Over TCP (interleaved) packets cannot reorder: no buffer is needed there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.sources.rtp.packet import RtpPacket

DEFAULT_WINDOW_PACKETS = 64
DEFAULT_WINDOW_SECONDS = 0.2
RESYNC_DISTANCE = 3000  # sequence numbers ahead or behind that mean a restart


def _distance(seq: int, ref: int) -> int:
    """Signed 16-bit distance from ``ref`` to ``seq``."""
    d = (seq - ref) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


@dataclass
class JitterCounters:
    reordered: int = 0  # packets that arrived after a later one and were put back in order
    late_dropped: int = 0  # packets behind what was already released
    duplicates: int = 0  # a sequence number already buffered
    holes_skipped: int = 0  # sequence numbers given up on when the window ran out
    resyncs: int = 0  # sequence number jumps far outside the window


class JitterBuffer:
    def __init__(
        self, window_packets: int = DEFAULT_WINDOW_PACKETS, window_seconds: float = DEFAULT_WINDOW_SECONDS
    ) -> None:
        if window_packets < 1 or window_seconds <= 0:
            raise ValueError(f"window {window_packets} packets / {window_seconds} s: expected >= 1 and > 0")
        self.window_packets = window_packets
        self.window_seconds = window_seconds
        self.counters = JitterCounters()
        self._next: int | None = None  # the sequence number to release next
        self._highest: int | None = None
        self._held: dict[int, tuple[RtpPacket, float]] = {}
        self._behind = 0  # late packets in a row

    def __len__(self) -> int:
        return len(self._held)

    def push(self, packet: RtpPacket, now: float) -> list[RtpPacket]:
        """Add one packet received at ``now`` (monotonic seconds); returns the packets now in order."""
        seq = packet.sequence_number
        if seq == self._next and not self._held:  # the next one with nothing held, as nearly always
            self._next = (seq + 1) & 0xFFFF
            self._highest = seq
            self._behind = 0
            return [packet]
        if self._next is None or self._highest is None:
            self._next = self._highest = seq
        ahead = _distance(seq, self._next)
        if ahead < 0:
            self._behind += 1
            if self._behind < self.window_packets and -ahead < RESYNC_DISTANCE:
                self.counters.late_dropped += 1
                return []
            ahead = RESYNC_DISTANCE  # a long run of "late" packets: the camera restarted its counter
        out: list[RtpPacket] = []
        if ahead >= RESYNC_DISTANCE:
            self.counters.resyncs += 1
            out = self.flush()
            self._next = self._highest = seq
        self._behind = 0
        if seq in self._held:
            self.counters.duplicates += 1
            return out
        if _distance(seq, self._highest) < 0:
            self.counters.reordered += 1
        else:
            self._highest = seq
        self._held[seq] = (packet, now)
        out.extend(self._release(now))
        return out

    def poll(self, now: float) -> list[RtpPacket]:
        """Packets whose hole has waited out the window by ``now`` (for a caller with a timer)."""
        return self._release(now)

    def flush(self) -> list[RtpPacket]:
        """Everything held, in sequence order, giving up on every hole."""
        out: list[RtpPacket] = []
        while self._held:
            self._skip_to_lowest()
            out.extend(self._in_order())
        return out

    def _release(self, now: float) -> list[RtpPacket]:
        out = self._in_order()
        while self._held and (
            len(self._held) >= self.window_packets
            or now - min(at for _, at in self._held.values()) >= self.window_seconds
        ):
            self._skip_to_lowest()
            out.extend(self._in_order())
        return out

    def _in_order(self) -> list[RtpPacket]:
        out = []
        assert self._next is not None or not self._held
        while self._next is not None and self._next in self._held:
            out.append(self._held.pop(self._next)[0])
            self._next = (self._next + 1) & 0xFFFF
        return out

    def _skip_to_lowest(self) -> None:
        assert self._next is not None
        ref = self._next
        lowest = min(self._held, key=lambda s: _distance(s, ref))
        self.counters.holes_skipped += _distance(lowest, ref)
        self._next = lowest
