"""UDP transport pieces: the port pool on real sockets, a track's link (camera address filter, RTCP out),
reception statistics (RFC 3550 A.1/A.3/A.8) and the receiver reports built from them, and the camera's
sender reports driving ``RawSegment.wall_clock``."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from camflow.bus import LocalBus
from camflow.events import TOPIC_RAW, RawSegment, decode
from ingest.errors import ParseError
from ingest.media.mux import H264
from ingest.media.publisher import Publisher
from ingest.sources.rtp.packet import (
    NTP_UNIX_OFFSET,
    RTCP_RR,
    RTCP_SDES,
    ReceiverReport,
    RtcpPacket,
    RtpPacket,
    SenderReport,
    SourceDescription,
)
from ingest.sources.rtsp.rtcp import ReceptionStats, receiver_report
from ingest.sources.rtsp.udp import UdpPortPool, UdpStats, UdpTrackLink, parse_port_range
from tests import defaults
from tests.test_mux_transcode import access_units, make_clip


def rtp(seq: int, timestamp: int = 0, ssrc: int = 0x1234) -> bytes:
    return bytes(RtpPacket(96, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, b"\x65payload"))


def free_udp_pair_range(size: int = 8) -> tuple[int, int]:
    """A range of ports nobody listens on right now (best effort: the kernel picks a free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1] & ~1
    return max(1024, base - size), max(1024, base - size) + size - 1


# --- port range and pool ------------------------------------------------------------------------


def test_parse_port_range() -> None:
    assert parse_port_range("20000-20999") == (20000, 20999)
    assert parse_port_range("20001-20003") == (20001, 20003)  # holds 20002-20003
    for bad in ("20000", "20001-20002", "1000-2000", "20000-70000", "b-a", "-5"):
        with pytest.raises(ParseError, match="UDP port range"):
            parse_port_range(bad)


def test_pool_binds_even_odd_pairs_and_skips_ports_in_use() -> None:
    first, last = free_udp_pair_range(8)
    first += first % 2
    pool = UdpPortPool("127.0.0.1", (first, last))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", first + 1))  # the first pair's RTCP port is taken
    pairs = []
    try:
        while (pair := pool.bind_pair()) is not None:
            pairs.append(pair)
            assert len(pairs) <= 4
        ports = [(a.getsockname()[1], b.getsockname()[1]) for a, b in pairs]
        assert ports == [(p, p + 1) for p in range(first + 2, last, 2)]
        assert all(p % 2 == 0 for p, _ in ports)
    finally:
        blocker.close()
        for a, b in pairs:
            a.close()
            b.close()
    again = pool.bind_pair()  # free again after close
    assert again is not None
    for sock in again:
        sock.close()


async def test_link_routes_the_cameras_datagrams_drops_others_and_sends_rtcp_back() -> None:
    loop = asyncio.get_running_loop()
    pool = UdpPortPool("127.0.0.1", (20000, 20999))
    sockets = pool.bind_pair()
    assert sockets is not None
    camera_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    camera_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    camera_rtp.bind(("127.0.0.1", 0))
    camera_rtcp.bind(("127.0.0.1", 0))
    camera_rtcp.settimeout(5)
    stranger.bind(("127.0.0.2", 0))
    got: list[tuple[str, bytes]] = []
    stats = UdpStats()
    link = UdpTrackLink(
        sockets,
        "127.0.0.1",
        (camera_rtp.getsockname()[1], camera_rtcp.getsockname()[1]),
        lambda data, _: got.append(("rtp", data)),
        lambda data, _: got.append(("rtcp", data)),
        stats,
    )
    link.start(loop)
    try:
        rtp_port, rtcp_port = link.server_ports
        stranger.sendto(rtp(1), ("127.0.0.1", rtp_port))
        for seq in range(3):
            camera_rtp.sendto(rtp(seq), ("127.0.0.1", rtp_port))
        camera_rtcp.sendto(b"\x80\xc8rtcp", ("127.0.0.1", rtcp_port))
        for _ in range(100):
            if len(got) == 4 and stats.foreign_datagrams == 1:
                break
            await asyncio.sleep(0.02)
        assert got == [("rtp", rtp(0)), ("rtp", rtp(1)), ("rtp", rtp(2)), ("rtcp", b"\x80\xc8rtcp")]
        assert (stats.rtp_datagrams, stats.rtcp_datagrams, stats.foreign_datagrams) == (3, 1, 1)
        link.send_rtcp(b"report")
        data, addr = await loop.run_in_executor(None, camera_rtcp.recvfrom, 2048)
        assert data == b"report" and addr == ("127.0.0.1", rtcp_port)
    finally:
        link.close()
        for s in (camera_rtp, camera_rtcp, stranger):
            s.close()


# --- reception statistics and receiver reports -------------------------------------------------------


def test_stats_count_loss_over_sequence_wraparound() -> None:
    stats = ReceptionStats(90000)
    seqs = [65530, 65531, 65533, 65534, 65535, 0, 1, 4, 5]  # 65532, 2, 3 lost
    for i, seq in enumerate(seqs):
        stats.on_rtp(rtp(seq, 3000 * i), i / 30)
    block = stats.report_block(now=1.0)
    assert block is not None
    assert block.ssrc == 0x1234
    assert block.cumulative_lost == 3 and stats.expected == 12
    assert block.highest_sequence == 65536 + 5
    assert block.fraction_lost == (3 << 8) // 12
    for i, seq in enumerate(range(6, 16)):  # no loss in the next interval
        stats.on_rtp(rtp(seq, 3000 * (i + 9)), (i + 9) / 30)
    block = stats.report_block(now=2.0)
    assert block is not None and block.fraction_lost == 0 and block.cumulative_lost == 3


def test_stats_late_and_duplicate_packets_and_a_restart() -> None:
    stats = ReceptionStats(90000)
    for seq in (10, 11, 13, 12, 13):  # 12 late, 13 duplicated
        stats.on_rtp(rtp(seq), 0.0)
    assert stats.late == 1 and stats.lost == -1  # duplicates make it negative, as RFC 3550 says
    stats.on_rtp(rtp(40000), 0.0)  # a jump: the camera restarted
    assert stats.restarts == 1 and stats.expected == 1 and stats.received == 1
    stats.on_rtp(rtp(40001, ssrc=0x9999), 0.0)  # a new source
    assert stats.restarts == 2 and stats.ssrc == 0x9999


def test_jitter_is_zero_for_perfect_pacing_and_grows_with_arrival_noise() -> None:
    steady, noisy = ReceptionStats(90000), ReceptionStats(90000)
    for i in range(300):
        steady.on_rtp(rtp(i, 3000 * i), 100 + i / 30)
        noisy.on_rtp(rtp(i, 3000 * i), 100 + i / 30 + (0.01 if i % 2 else 0.0))
    assert steady.jitter < 1
    assert 800 < noisy.jitter < 900  # 10 ms alternating = 900 ticks per step; the estimate converges below it


def test_stats_over_rtp_timestamp_wraparound() -> None:
    stats = ReceptionStats(90000)
    for i in range(60):
        stats.on_rtp(rtp(i, 0xFFFFFFFF - 30000 + 3000 * i), i / 30)
    assert stats.jitter < 1


def test_receiver_report_is_a_parseable_compound_rr_with_cname_and_lsr() -> None:
    stats = ReceptionStats(90000)
    sr = SenderReport(
        0x1234,
        ntp_timestamp=(3_900_000_000 << 32) | (1 << 31),
        rtp_timestamp=0,
        packet_count=1,
        octet_count=1,
    )
    stats.on_rtp(rtp(1), 10.0)
    stats.on_sender_report(SenderReport.parse(bytes(sr)), 10.0)
    block = stats.report_block(now=10.5)
    assert block is not None
    data = receiver_report(0xABCD, "camflow@127.0.0.1", [block])
    rr_packet, sdes = RtcpPacket.parse_compound(data)
    assert (rr_packet.packet_type, sdes.packet_type) == (RTCP_RR, RTCP_SDES)
    parsed = ReceiverReport.parse(data)
    assert parsed.ssrc == 0xABCD and parsed.blocks == (block,)
    assert block.last_sr == ((3_900_000_000 & 0xFFFF) << 16) | 0x8000
    assert block.delay_since_last_sr == 32768  # 0.5 s in 1/65536 s
    assert bytes(SourceDescription(0xABCD, "camflow@127.0.0.1")) in data
    assert len(data) % 4 == 0
    assert ReceptionStats(90000).report_block(now=1.0) is None


# --- sender reports and the segments' wall clock -------------------------------------------------------


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list:  # type: ignore[type-arg]
    path: Path = tmp_path_factory.mktemp("sr") / "clip.mp4"
    make_clip(path)
    return access_units(path)


async def publish(units: list, sender_report: tuple[float, int] | None) -> list[RawSegment]:  # type: ignore[type-arg]
    bus = LocalBus()
    consumer = await bus.subscribe([TOPIC_RAW], "test")
    publisher = Publisher(bus, "cam1", codec=H264, segment_target=defaults.SEGMENT_TARGET)
    await publisher.start()
    if sender_report is not None:
        publisher.sender_report(*sender_report)
    for unit in units:
        publisher.push_video(unit)
    await publisher.close("test")
    segments = []
    while (message := await consumer.get(timeout=0.1)) is not None:
        event = decode(message.value)
        assert isinstance(event, RawSegment)
        segments.append(event)
    return segments


async def test_sender_report_puts_segments_on_the_cameras_clock(units: list) -> None:  # type: ignore[type-arg]
    first = units[0].pts
    camera_time = 1_000_000_000.0  # the camera's clock says 2001-09-09 for its first frame
    segments = await publish(units, (camera_time + 1.0, (first + 90000) & 0xFFFFFFFF))
    assert [s.seq for s in segments] == [0, 1, 2]
    assert [round(s.wall_clock - camera_time, 3) for s in segments] == [0.0, 2.0, 4.0]
    by_arrival = await publish(units, None)
    assert abs(by_arrival[0].wall_clock - __import__("time").time()) < 60


def test_sender_report_ntp_to_unix() -> None:
    sr = SenderReport(1, (NTP_UNIX_OFFSET + 1_700_000_000) << 32 | (1 << 30), 0, 0, 0)
    assert sr.unix_time == 1_700_000_000.25
