from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.sources.rtp.h264 import H264Depacketizer
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import RtpPacket

FUZZ = settings(database=None, max_examples=300, deadline=None)
P = bytes.fromhex("419a0011")  # an H.264 P slice


def rtp(seq: int, ts: int | None = None) -> RtpPacket:
    return RtpPacket(96, seq & 0xFFFF, 3000 * (seq if ts is None else ts) & 0xFFFFFFFF, 1, P, True)


def seqs(packets: list[RtpPacket]) -> list[int]:
    return [p.sequence_number for p in packets]


def feed(buffer: JitterBuffer, order: list[int], step: float = 0.001) -> list[int]:
    out: list[int] = []
    for i, seq in enumerate(order):
        out += seqs(buffer.push(rtp(seq), now=i * step))
    return out


def test_in_order_packets_pass_straight_through() -> None:
    b = JitterBuffer()
    for seq in range(100):
        assert seqs(b.push(rtp(seq), now=seq * 0.01)) == [seq]
    assert len(b) == 0 and b.counters.reordered == 0


def test_wifi_camera_swapped_packets_are_put_back_in_order() -> None:
    b = JitterBuffer()
    assert feed(b, [0, 1, 3, 2, 4, 6, 5, 7]) == list(range(8))
    assert b.counters.reordered == 2 and b.counters.holes_skipped == 0


def test_reordering_across_the_sequence_wrap() -> None:
    b = JitterBuffer()
    assert feed(b, [65533, 65534, 0, 65535, 1, 2]) == [65533, 65534, 65535, 0, 1, 2]
    assert b.counters.reordered == 1


def test_a_lost_packet_is_given_up_after_the_packet_window() -> None:
    b = JitterBuffer(window_packets=4, window_seconds=10)
    assert feed(b, [0, 2, 3, 4]) == [0]
    assert seqs(b.push(rtp(5), now=1.0)) == [2, 3, 4, 5]  # 4 held: the hole at 1 is skipped
    assert b.counters.holes_skipped == 1
    assert seqs(b.push(rtp(1), now=1.1)) == [] and b.counters.late_dropped == 1  # too late now


def test_a_lost_packet_is_given_up_after_200_ms() -> None:
    b = JitterBuffer()
    assert seqs(b.push(rtp(0), now=0.0)) == [0]
    assert seqs(b.push(rtp(2), now=0.05)) == []
    assert b.poll(now=0.2) == []
    assert seqs(b.poll(now=0.26)) == [2]
    assert seqs(b.push(rtp(3), now=0.27)) == [3]


def test_duplicates_are_dropped_and_counted() -> None:
    b = JitterBuffer()
    assert feed(b, [0, 2, 2, 1, 1]) == [0, 1, 2]
    assert (b.counters.duplicates, b.counters.late_dropped) == (1, 1)


def test_camera_restarting_its_sequence_numbers_resyncs() -> None:
    b = JitterBuffer()
    assert feed(b, [40000, 40001, 40003]) == [40000, 40001]
    assert seqs(b.push(rtp(12), now=1.0)) == [40003, 12]
    assert b.counters.resyncs == 1 and b.counters.holes_skipped == 1


def test_a_window_of_late_packets_in_a_row_resyncs() -> None:
    # A camera that restarted its counter a little behind where it was.
    b = JitterBuffer(window_packets=64)
    feed(b, [6000])
    behind = [5800 + i for i in range(70)]
    out = feed(b, behind)
    assert b.counters.late_dropped == 63 and b.counters.resyncs == 1
    assert out == behind[63:]
    assert seqs(b.push(rtp(1000), now=1.0)) == [1000] and b.counters.resyncs == 2  # far behind: at once


def test_flush_releases_everything_in_order() -> None:
    b = JitterBuffer()
    feed(b, [10, 14, 12, 13])
    assert seqs(b.flush()) == [12, 13, 14] and len(b) == 0


@pytest.mark.parametrize(("packets", "seconds"), [(0, 0.2), (64, 0.0)])
def test_window_must_be_positive(packets: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="expected >= 1 and > 0"):
        JitterBuffer(packets, seconds)


def test_udp_reordering_and_loss_into_the_depacketizer() -> None:
    # A camera on a busy network: every 10th packet swapped with the next, every 50th lost.
    order = []
    for seq in range(501):
        if seq % 50 == 49:
            continue
        order.append(seq)
    for i in range(1, len(order) - 1, 10):
        order[i], order[i + 1] = order[i + 1], order[i]
    b, d = JitterBuffer(), H264Depacketizer()
    units = []
    for i, seq in enumerate(order):
        for packet in b.push(rtp(seq), now=i * 0.033):
            units += d.push(packet)
    for packet in b.flush():
        units += d.push(packet)
    units += d.flush()
    assert [u.pts for u in units] == [3000 * s for s in range(501) if s % 50 != 49]
    assert d.counters.packets_lost == d.counters.units_damaged == 10 and d.counters.packets_late == 0
    swaps = len(range(1, len(order) - 1, 10))
    assert b.counters.reordered == swaps and b.counters.holes_skipped == 10


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.floats(0, 0.5)), max_size=200))
def test_fuzz_output_is_bounded_and_never_repeats(arrivals: list[tuple[int, float]]) -> None:
    b = JitterBuffer(window_packets=8)
    now, out = 0.0, []
    for seq, delay in arrivals:
        now += delay
        out += seqs(b.push(rtp(seq), now))
        assert len(b) < 8
    out += seqs(b.flush())
    assert len(out) <= len(arrivals)
