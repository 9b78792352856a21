from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs.h264 import NAL_IDR, NAL_PPS, NAL_SPS, is_vcl, nal_type, split_annexb
from ingest.errors import ParseError
from ingest.media.units import AccessUnit
from ingest.sources.rtp.base import Depacketizer, TimestampUnwrapper
from ingest.sources.rtp.h264 import H264Depacketizer, H264Packetizer, parse_sprop_parameter_sets
from ingest.sources.rtp.packet import RtpPacket
from tests.vectors.rtsp_publish import FFMPEG_5_1_SPROP

FUZZ = settings(database=None, max_examples=300, deadline=None)

SPS = bytes.fromhex("6764001facd9")
PPS = bytes.fromhex("68ebe3cb")
SEI = bytes.fromhex("0605ff")
AUD = bytes.fromhex("09f0")
IDR = bytes.fromhex("6588840021")  # first_mb_in_slice = 0
IDR2 = bytes.fromhex("6500aa")  # a second slice of the same picture
P1 = bytes.fromhex("419a0011")
P2 = bytes.fromhex("41e0a0")
SPROP = ",".join(base64.b64encode(n).decode() for n in (SPS, PPS))


def rtp(payload: bytes, seq: int, ts: int = 3000, marker: bool = False) -> RtpPacket:
    return RtpPacket(96, seq & 0xFFFF, ts, 0x1234, payload, marker)


def stap_a(*nalus: bytes) -> bytes:
    return b"\x18" + b"".join(len(n).to_bytes(2, "big") + n for n in nalus)


def fu_a(nal: bytes, start: bool, end: bool, part: bytes | None = None) -> bytes:
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)
    return bytes([(nal[0] & 0xE0) | 28, header]) + (nal[1:] if part is None else part)


def run(depacketizer: H264Depacketizer, packets: Sequence[RtpPacket], flush: bool = True) -> list[AccessUnit]:
    units = [unit for packet in packets for unit in depacketizer.push(packet)]
    return units + depacketizer.flush() if flush else units


def test_is_a_depacketizer() -> None:
    depacketizer: Depacketizer = H264Depacketizer()
    assert depacketizer.clock_rate == 90000


# Raw RTP payload tables, named after what taught them.
def test_single_nal_units_with_marker() -> None:
    d = H264Depacketizer()
    assert d.push(rtp(SPS, 1)) == []
    assert d.push(rtp(PPS, 2)) == []
    units = d.push(rtp(IDR, 3, marker=True))
    assert units == [AccessUnit(3000, (SPS, PPS, IDR), True)]
    assert d.push(rtp(P1, 4, ts=6000, marker=True)) == [AccessUnit(6000, (P1,), False)]
    assert d.flush() == []
    assert d.counters.params_inserted == 0


def test_stap_a_with_parameter_sets_and_idr() -> None:
    d = H264Depacketizer()
    assert d.push(rtp(stap_a(SPS, PPS, IDR), 1, marker=True)) == [AccessUnit(3000, (SPS, PPS, IDR), True)]


def test_fu_a_three_fragments() -> None:
    nal = bytes([0x65]) + bytes(range(1, 31))
    packets = [
        rtp(fu_a(nal, True, False, nal[1:11]), 10),
        rtp(fu_a(nal, False, False, nal[11:21]), 11),
        rtp(fu_a(nal, False, True, nal[21:]), 12, marker=True),
    ]
    assert run(H264Depacketizer(), packets) == [AccessUnit(3000, (nal,), True)]


def test_fu_a_start_and_end_bits_both_set_costar() -> None:
    # CostarHD cameras send a small NAL as a single FU-A with both the start and end bit set.
    d = H264Depacketizer()
    assert run(d, [rtp(fu_a(P1, True, True), 1, marker=True)]) == [AccessUnit(3000, (P1,), False)]
    assert d.counters.fu_dropped == 0


def test_fu_a_lost_middle_fragment_drops_that_nal_only() -> None:
    nal = bytes([0x41]) + bytes(range(1, 31))
    d = H264Depacketizer()
    packets = [
        rtp(P1, 1),
        rtp(fu_a(nal, True, False, nal[1:11]), 2),
        # seq 3 (the middle fragment) is lost
        rtp(fu_a(nal, False, False, nal[21:25]), 4),
        rtp(fu_a(nal, False, True, nal[25:]), 5, marker=True),
    ]
    assert run(d, packets) == [AccessUnit(3000, (P1,), False, damaged=True)]  # nal_ref_idc 2: a reference
    assert d.counters.fu_dropped == 1
    assert d.counters.packets_lost == 1


def test_fu_a_lost_start_fragment() -> None:
    nal = bytes([0x41]) + bytes(range(1, 31))
    d = H264Depacketizer()
    packets = [
        rtp(P1, 1),
        rtp(fu_a(nal, False, False, nal[11:21]), 3),
        rtp(fu_a(nal, False, True, nal[21:]), 4, marker=True),
        rtp(P2, 5, ts=6000, marker=True),
    ]
    assert run(d, packets) == [AccessUnit(3000, (P1,), False, damaged=True), AccessUnit(6000, (P2,), False)]
    assert d.counters.fu_dropped == 1
    assert d.counters.packets_lost == 1


def test_fu_a_missing_end_before_timestamp_change() -> None:
    nal = bytes([0x41]) + bytes(range(1, 31))
    d = H264Depacketizer()
    packets = [rtp(P1, 1), rtp(fu_a(nal, True, False, nal[1:11]), 2), rtp(P2, 3, ts=6000)]
    assert run(d, packets) == [AccessUnit(3000, (P1,), False), AccessUnit(6000, (P2,), False)]
    assert d.counters.fu_dropped == 1
    assert d.counters.packets_lost == 0


def test_new_fu_a_start_while_fragment_pending() -> None:
    nal = bytes([0x41]) + bytes(range(1, 31))
    d = H264Depacketizer()
    packets = [rtp(fu_a(nal, True, False, nal[1:5]), 1), rtp(fu_a(nal, True, True), 2, marker=True)]
    assert run(d, packets) == [AccessUnit(3000, (nal,), False)]
    assert d.counters.fu_dropped == 1


def test_boundary_on_timestamp_change_without_marker() -> None:
    # Some cameras never set the marker bit: the next timestamp closes the unit.
    d = H264Depacketizer()
    assert d.push(rtp(IDR, 1, ts=100)) == []
    assert d.push(rtp(IDR2, 2, ts=100)) == []
    assert d.push(rtp(P1, 3, ts=3100)) == [AccessUnit(100, (IDR, IDR2), True)]
    assert d.flush() == [AccessUnit(3100, (P1,), False)]
    assert d.flush() == []


def test_sprop_parameter_sets_inserted_before_idr() -> None:
    d = H264Depacketizer(SPROP)
    packets = [rtp(IDR, 1, marker=True), rtp(P1, 2, ts=6000, marker=True), rtp(IDR, 3, ts=9000, marker=True)]
    assert run(d, packets) == [
        AccessUnit(3000, (SPS, PPS, IDR), True),
        AccessUnit(6000, (P1,), False),
        AccessUnit(9000, (SPS, PPS, IDR), True),
    ]
    assert d.counters.params_inserted == 2


def test_parameter_sets_go_after_access_unit_delimiter() -> None:
    d = H264Depacketizer(SPROP)
    assert run(d, [rtp(stap_a(AUD, SEI, IDR), 1, marker=True)]) == [
        AccessUnit(3000, (AUD, SPS, PPS, SEI, IDR), True)
    ]


def test_only_missing_pps_inserted_after_in_band_sps() -> None:
    new_sps = SPS + b"\x01"
    d = H264Depacketizer(SPROP)
    assert run(d, [rtp(stap_a(new_sps, SEI, IDR), 1, marker=True)]) == [
        AccessUnit(3000, (new_sps, PPS, SEI, IDR), True)
    ]


def test_latest_in_band_parameter_sets_win() -> None:
    new_sps, new_pps = SPS + b"\x02", PPS + b"\x02"
    d = H264Depacketizer(SPROP)
    packets = [
        rtp(stap_a(new_sps, new_pps, IDR), 1, marker=True),
        rtp(IDR, 2, ts=6000, marker=True),
    ]
    units = run(d, packets)
    assert units[1] == AccessUnit(6000, (new_sps, new_pps, IDR), True)
    assert (d.sps, d.pps) == (new_sps, new_pps)
    assert d.counters.params_inserted == 1


def test_no_parameter_sets_known_leaves_idr_alone() -> None:
    d = H264Depacketizer()
    assert run(d, [rtp(IDR, 1, marker=True)]) == [AccessUnit(3000, (IDR,), True)]
    assert d.counters.params_inserted == 0


def test_parameter_sets_sent_apart_join_the_next_unit() -> None:
    # SPS and PPS with their own timestamp and marker bit, then the IDR.
    d = H264Depacketizer()
    packets = [
        rtp(SPS, 1, ts=0, marker=True),
        rtp(PPS, 2, ts=0, marker=True),
        rtp(IDR, 3, ts=3000, marker=True),
    ]
    assert run(d, packets) == [AccessUnit(3000, (SPS, PPS, IDR), True)]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x01",  # NAL type 0
        b"\x1e\x01",  # 30
        b"\x1f\x01",  # 31
        b"\x19\x00\x01\x00\x02\x41\x01",  # STAP-B
        b"\x1d\x85\x01",  # FU-B
        b"\x18\x00\x05\x41",  # STAP-A truncated
        b"\x18\x00\x00",  # STAP-A with a zero-size NAL
        b"\x18",  # STAP-A with no NAL at all
        b"\x1c",  # FU-A without its header
    ],
)
def test_invalid_payloads_are_counted(payload: bytes) -> None:
    d = H264Depacketizer()
    assert run(d, [rtp(payload, 1, marker=True)]) == []
    assert d.counters.packets_invalid == 1


def test_late_and_duplicate_packets_dropped() -> None:
    d = H264Depacketizer()
    assert d.push(rtp(P1, 10)) == []
    assert d.push(rtp(P2, 10)) == []
    assert d.push(rtp(P2, 9)) == []
    assert d.push(rtp(P2, 11, marker=True)) == [AccessUnit(3000, (P1, P2), False)]
    assert d.counters.packets_late == 2


def test_sequence_and_timestamp_wrap() -> None:
    d = H264Depacketizer()
    packets = [rtp(P1, 65535, ts=0xFFFFF000, marker=True), rtp(P2, 0, ts=0x00000BB8, marker=True)]
    assert [u.pts for u in run(d, packets)] == [0xFFFFF000, 0x1_0000_0BB8]
    assert d.counters.packets_lost == 0


def test_sprop_parsing() -> None:
    sps, pps = parse_sprop_parameter_sets(FFMPEG_5_1_SPROP)
    assert sps is not None and nal_type(sps) == NAL_SPS
    assert pps is not None and nal_type(pps) == NAL_PPS
    assert parse_sprop_parameter_sets(" , ") == (None, None)
    with pytest.raises(ParseError, match="base64"):
        H264Depacketizer("Z2QAKKzZ!!,aO+Pyw==")


def test_timestamp_unwrapper() -> None:
    u = TimestampUnwrapper()
    assert u.unwrap(0xFFFF_FF00) == 0xFFFF_FF00  # the first unit may start anywhere
    assert u.unwrap(0x0000_0100) == 0x1_0000_0100  # wrap-around
    assert u.unwrap(0xFFFF_FF80) == 0xFFFF_FF80  # B-frame: a small step back across the wrap
    assert u.unwrap(0x0000_0200) == 0x1_0000_0200
    ts = 0x0000_0200
    for _ in range(6):  # steps just under 2^31 keep counting up across several wraps
        ts = (ts + 0x7FFF_0000) & 0xFFFF_FFFF
        u.unwrap(ts)
    assert u.unwrap(ts) == 0x1_0000_0200 + 6 * 0x7FFF_0000
    assert u.unwrap(ts - 3003) == 0x1_0000_0200 + 6 * 0x7FFF_0000 - 3003


def test_packetizer_fu_a_sizes_and_marker() -> None:
    p = H264Packetizer(max_payload_size=100, initial_sequence=65534)
    small, exact, big = b"\x41" + bytes(50), b"\x41" + bytes(99), b"\x65" + bytes(250)
    packets = p.packetize(AccessUnit(0x1_0000_0005, (small, exact, big), True))
    assert [len(pk.payload) for pk in packets] == [51, 100, 100, 100, 56]  # 250-byte body: 98 + 98 + 54
    assert [pk.sequence_number for pk in packets] == [65534, 65535, 0, 1, 2]
    assert [pk.marker for pk in packets] == [False, False, False, False, True]
    assert {pk.timestamp for pk in packets} == {5}
    assert [pk.payload[:2].hex() for pk in packets[2:]] == ["7c85", "7c05", "7c45"]
    with pytest.raises(ValueError, match="max_payload_size"):
        H264Packetizer(max_payload_size=2)


# Round trip of a real clip.
def access_units(nalus: list[bytes]) -> list[list[bytes]]:
    """Group an Annex B clip's NALs into access units (H.264 7.4.1.2.3, enough for x264 output)."""
    units: list[list[bytes]] = []
    current: list[bytes] = []
    for nal in nalus:
        kind = nal_type(nal)
        seen_vcl = any(is_vcl(nal_type(n)) for n in current)
        new_picture = is_vcl(kind) and nal[1] & 0x80  # first_mb_in_slice == 0
        if current and seen_vcl and (kind in (6, 7, 8, 9) or new_picture):
            units.append(current)
            current = []
        current.append(nal)
    return [*units, current] if current else units


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> list[list[bytes]]:
    path = tmp_path_factory.mktemp("clip") / "out.h264"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-g",
            "30",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
            str(path),
        ],
        check=True,
    )
    units = access_units(split_annexb(path.read_bytes()))
    assert len(units) == 60
    return units


@pytest.mark.parametrize(("mtu", "first_pts", "first_seq"), [(1400, 0, 0), (200, 0xFFFF_0000, 65500)])
def test_clip_round_trip(clip: list[list[bytes]], mtu: int, first_pts: int, first_seq: int) -> None:
    units = [
        AccessUnit(first_pts + 3000 * i, tuple(nalus), any(nal_type(n) == NAL_IDR for n in nalus))
        for i, nalus in enumerate(clip)
    ]
    assert sum(u.is_idr for u in units) >= 2
    packetizer = H264Packetizer(max_payload_size=mtu, initial_sequence=first_seq)
    packets = [pk for u in units for pk in packetizer.packetize(u)]
    assert any(pk.payload[0] & 0x1F == 28 for pk in packets)
    assert all(len(pk.payload) <= mtu for pk in packets)
    wire = [RtpPacket.parse(bytes(pk)) for pk in packets]
    d = H264Depacketizer()
    assert run(d, wire) == units
    assert d.counters == type(d.counters)()


def test_clip_without_in_band_parameter_sets(clip: list[list[bytes]]) -> None:
    sps = next(n for u in clip for n in u if nal_type(n) == NAL_SPS)
    pps = next(n for u in clip for n in u if nal_type(n) == NAL_PPS)
    sprop = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
    stripped = [
        AccessUnit(
            3000 * i,
            tuple(n for n in u if nal_type(n) not in (NAL_SPS, NAL_PPS)),
            NAL_IDR in map(nal_type, u),
        )
        for i, u in enumerate(clip)
    ]
    packetizer = H264Packetizer()
    d = H264Depacketizer(sprop)
    units = run(d, [pk for u in stripped for pk in packetizer.packetize(u)])
    assert [u.nalus for u in units] == [tuple(u) for u in clip]
    assert d.counters.params_inserted == sum(u.is_idr for u in stripped)


def test_clip_with_loss_never_raises(clip: list[list[bytes]]) -> None:
    packetizer = H264Packetizer(max_payload_size=300)
    packets = [
        pk
        for i, nalus in enumerate(clip)
        for pk in packetizer.packetize(AccessUnit(3000 * i, tuple(nalus), False))
    ]
    d = H264Depacketizer()
    units = run(d, [pk for i, pk in enumerate(packets) if i % 17 != 5])
    assert 0 < len(units) <= len(clip)
    assert d.counters.fu_dropped > 0
    assert d.counters.packets_lost == len([i for i in range(len(packets)) if i % 17 == 5])


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.binary(max_size=40),
                st.binary(max_size=40).map(lambda b: b"\x7c" + b),
                st.binary(max_size=40).map(lambda b: b"\x18" + b),
            ),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.booleans(),
        ),
        max_size=30,
    ),
    st.sampled_from([None, SPROP]),
)
def test_fuzz_push_never_raises(packets: list[tuple[bytes, int, int, bool]], sprop: str | None) -> None:
    d = H264Depacketizer(sprop)
    for payload, seq, ts, marker in packets:
        for unit in d.push(RtpPacket(96, seq, ts, 1, payload, marker)):
            assert unit.nalus and all(unit.nalus)
    d.flush()


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=20), st.integers(0, 0xFFFF))
def test_fuzz_push_sequential(payloads: list[bytes], first_seq: int) -> None:
    d = H264Depacketizer(SPROP)
    for i, payload in enumerate(payloads):
        d.push(RtpPacket(96, (first_seq + i) & 0xFFFF, 3000 * (i // 3), 1, payload, i % 3 == 2))
    d.flush()


def test_access_unit_bounded_in_nal_count() -> None:
    d = H264Depacketizer()
    for seq in range(5000):
        assert d.push(rtp(SEI, seq)) == []
    assert d.counters.oversize_dropped == 1
    assert d.push(rtp(P1, 5000, marker=True)) == [AccessUnit(3000, (SEI,) * (5000 - 4097) + (P1,), False)]
