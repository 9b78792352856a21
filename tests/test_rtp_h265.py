from __future__ import annotations

import base64
import contextlib
import io
import subprocess
from collections.abc import Sequence
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs.h264 import join_annexb, split_annexb
from ingest.codecs.h265 import NAL_PPS, NAL_SPS, NAL_VPS, PARAMETER_SETS, is_irap, nal_type
from ingest.errors import ParseError
from ingest.media.units import AccessUnit
from ingest.sources.rtp.base import Depacketizer
from ingest.sources.rtp.h264 import H264Depacketizer
from ingest.sources.rtp.h265 import H265Depacketizer, H265Packetizer, parse_sprop_parameter_sets
from ingest.sources.rtp.packet import RtpPacket
from ingest.sources.rtsp.sdp import SessionDescription
from ingest.sources.rtsp.session import Track
from ingest.sources.rtsp.tracks import depacketizer_for
from tests.vectors.pcap import udp_payloads

FUZZ = settings(database=None, max_examples=300, deadline=None)
CAMERA = Path(__file__).parent / "vectors" / "h265_rtp_camera"


def nal(kind: int, body: bytes = b"\xaf\x01") -> bytes:
    return bytes([kind << 1, 0x01]) + body


VPS, SPS, PPS = nal(32, b"\x0c\x01"), nal(33, b"\x01\x01"), nal(34, b"\xc1\x72")
AUD, SEI = nal(35, b"\x50"), nal(39, b"\x05\x1a")
IDR = nal(19, b"\xaf\x08\x40")  # IDR_W_RADL
CRA, BLA = nal(21, b"\xaf\x09"), nal(16, b"\xaf\x0a")
TRAIL_R, TRAIL_N = nal(1, b"\xd0\x01"), nal(0, b"\xd0\x02")
FMTP = {f"sprop-{n}": base64.b64encode(v).decode() for n, v in (("vps", VPS), ("sps", SPS), ("pps", PPS))}


def rtp(payload: bytes, seq: int, ts: int = 3000, marker: bool = False) -> RtpPacket:
    return RtpPacket(104, seq & 0xFFFF, ts, 0x1234, payload, marker)


def ap(*nalus: bytes) -> bytes:
    return bytes([48 << 1, 0x01]) + b"".join(len(n).to_bytes(2, "big") + n for n in nalus)


def fu(whole: bytes, start: bool, end: bool, part: bytes | None = None) -> bytes:
    header = (0x80 if start else 0) | (0x40 if end else 0) | nal_type(whole)
    return bytes([(whole[0] & 0x81) | 49 << 1, whole[1], header]) + (whole[2:] if part is None else part)


def run(d: H265Depacketizer, packets: Sequence[RtpPacket]) -> list[AccessUnit]:
    return [u for p in packets for u in d.push(p)] + d.flush()


def test_is_a_depacketizer() -> None:
    depacketizer: Depacketizer = H265Depacketizer()
    assert depacketizer.clock_rate == 90_000


# Raw RTP payload tables, named after what taught them.
def test_single_nal_unit_packets() -> None:
    d = H265Depacketizer()
    packets = [rtp(VPS, 1), rtp(SPS, 2), rtp(PPS, 3), rtp(IDR, 4, marker=True), rtp(TRAIL_R, 5, 6000, True)]
    assert run(d, packets) == [
        AccessUnit(3000, (VPS, SPS, PPS, IDR), True),
        AccessUnit(6000, (TRAIL_R,), False),
    ]
    assert d.counters.params_inserted == 0


def test_aggregation_packet_with_parameter_sets_and_sei() -> None:
    d = H265Depacketizer()
    assert run(d, [rtp(ap(VPS, SPS, PPS, SEI), 1), rtp(IDR, 2, marker=True)]) == [
        AccessUnit(3000, (VPS, SPS, PPS, SEI, IDR), True)
    ]


def test_fragmentation_unit_three_fragments() -> None:
    whole = nal(19, bytes(range(40)))
    packets = [
        rtp(fu(whole, True, False, whole[2:12]), 10),
        rtp(fu(whole, False, False, whole[12:30]), 11),
        rtp(fu(whole, False, True, whole[30:]), 12, marker=True),
    ]
    assert run(H265Depacketizer(), packets) == [AccessUnit(3000, (whole,), True)]


def test_fu_with_start_and_end_bit_both_set() -> None:
    d = H265Depacketizer()
    assert run(d, [rtp(fu(TRAIL_R, True, True), 1, marker=True)]) == [AccessUnit(3000, (TRAIL_R,), False)]
    assert d.counters.fu_dropped == 0


def test_lost_fragment_of_a_reference_picture_marks_it_damaged() -> None:
    whole = nal(1, bytes(range(40)))
    d = H265Depacketizer()
    packets = [
        rtp(SEI, 1),
        rtp(fu(whole, True, False, whole[2:12]), 2),
        # seq 3 lost
        rtp(fu(whole, False, True, whole[30:]), 4, marker=True),
        rtp(TRAIL_R, 5, ts=6000, marker=True),
    ]
    # No slice of the picture at 3000 is left: its SEI waits, and the next picture inherits the damage.
    assert run(d, packets) == [AccessUnit(6000, (SEI, TRAIL_R), False, damaged=True)]
    assert (d.counters.fu_dropped, d.counters.packets_lost) == (1, 1)
    d2 = H265Depacketizer()
    packets[0] = rtp(TRAIL_R, 1)
    units = run(d2, packets)
    assert [(u.pts, u.damaged) for u in units] == [(3000, True), (6000, False)]
    assert d2.counters.units_damaged == 1


def test_lost_fragment_of_a_non_reference_picture_is_not_damage() -> None:
    whole = nal(0, bytes(range(40)))  # TRAIL_N: nothing refers to it
    d = H265Depacketizer()
    packets = [
        rtp(TRAIL_N, 1),
        rtp(fu(whole, True, False, whole[2:12]), 2),
        rtp(fu(whole, False, True, whole[30:]), 4, marker=True),
    ]
    assert run(d, packets) == [AccessUnit(3000, (TRAIL_N,), False, damaged=False)]
    assert d.counters.units_damaged == 0


def test_loss_across_a_unit_boundary_marks_the_next_unit() -> None:
    # The lost packet may have been a whole picture: the unit after the hole is suspect.
    d = H265Depacketizer()
    packets = [rtp(TRAIL_N, 1, 3000, True), rtp(TRAIL_N, 3, 6000, True), rtp(TRAIL_N, 4, 9000, True)]
    assert [u.damaged for u in run(d, packets)] == [False, True, False]


def test_paci_packets_are_dropped_and_counted() -> None:
    d = H265Depacketizer()
    paci = bytes([50 << 1, 0x01, 0x26, 0x00]) + IDR
    assert run(d, [rtp(paci, 1), rtp(TRAIL_R, 2, marker=True)]) == [AccessUnit(3000, (TRAIL_R,), False)]
    assert d.counters.paci_dropped == 1 and d.counters.packets_invalid == 0


def test_donl_fields_when_sdp_announces_max_don_diff() -> None:
    d = H265Depacketizer({"sprop-max-don-diff": "2"})
    aggregated = bytes([48 << 1, 1]) + b"\x00\x07" + len(SPS).to_bytes(2, "big") + SPS
    aggregated += b"\x01" + len(PPS).to_bytes(2, "big") + PPS  # DOND
    whole = nal(19, bytes(range(20)))
    fragments = [
        bytes([49 << 1, 1, 0x80 | 19]) + b"\x00\x09" + whole[2:10],  # DONL in the first fragment only
        bytes([49 << 1, 1, 0x40 | 19]) + whole[10:],
    ]
    packets = [rtp(aggregated, 1), rtp(fragments[0], 2), rtp(fragments[1], 3, marker=True)]
    assert run(d, packets) == [AccessUnit(3000, (SPS, PPS, whole), True)]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x02",  # shorter than the NAL header
        b"\x82\x01\xaa",  # forbidden_zero_bit
        bytes([51 << 1, 1, 0]),  # unspecified 51..63
        bytes([63 << 1, 1, 0]),
        bytes([48 << 1, 1]) + b"\x00\x09\x02\x01",  # AP truncated
        bytes([48 << 1, 1]) + b"\x00\x00",  # AP with a zero-size NAL
        bytes([48 << 1, 1]) + b"\x00\x01\x02",  # AP with a NAL shorter than its header
        bytes([48 << 1, 1]),  # AP with nothing in it
        bytes([49 << 1, 1]),  # FU without its FU header
        bytes([49 << 1, 1, 0xC0 | 49, 0]),  # FU of an FU
    ],
)
def test_invalid_payloads_are_counted(payload: bytes) -> None:
    d = H265Depacketizer()
    assert run(d, [rtp(payload, 1, marker=True)]) == []
    assert d.counters.packets_invalid == 1


def test_late_and_duplicate_packets_dropped() -> None:
    d = H265Depacketizer()
    packets = [rtp(TRAIL_R, 10), rtp(TRAIL_R, 10), rtp(TRAIL_R, 9), rtp(TRAIL_N, 11, marker=True)]
    assert run(d, packets) == [AccessUnit(3000, (TRAIL_R, TRAIL_N), False)]
    assert d.counters.packets_late == 2


# Parameter sets only in the SDP (seen on Hikvision and Dahua firmware).
@pytest.mark.parametrize("irap", [IDR, CRA, BLA, nal(20, b"\xaf\x01"), nal(23, b"\xaf\x01")])
def test_sprop_parameter_sets_inserted_before_every_irap(irap: bytes) -> None:
    d = H265Depacketizer(FMTP)
    packets = [rtp(irap, 1, 3000, True), rtp(TRAIL_R, 2, 6000, True), rtp(irap, 3, 9000, True)]
    assert run(d, packets) == [
        AccessUnit(3000, (VPS, SPS, PPS, irap), True),
        AccessUnit(6000, (TRAIL_R,), False),
        AccessUnit(9000, (VPS, SPS, PPS, irap), True),
    ]
    assert d.counters.params_inserted == 2


def test_inserted_parameter_sets_go_after_aud_and_keep_their_rank() -> None:
    d = H265Depacketizer(FMTP)
    new_sps = SPS + b"\x01"
    packets = [rtp(ap(AUD, SEI, IDR), 1, 3000, True), rtp(ap(new_sps, IDR), 2, 6000, True)]
    assert [u.nalus for u in run(d, packets)] == [(AUD, VPS, SPS, PPS, SEI, IDR), (VPS, new_sps, PPS, IDR)]
    assert d.parameter_set(NAL_SPS) == new_sps


def test_sprop_parsing() -> None:
    assert parse_sprop_parameter_sets(FMTP) == {NAL_VPS: VPS, NAL_SPS: SPS, NAL_PPS: PPS}
    both = {"sprop-sps": f"{base64.b64encode(SPS).decode()}, {base64.b64encode(SPS + b'x').decode()}"}
    assert parse_sprop_parameter_sets(both) == {NAL_SPS: SPS + b"x"}  # the last wins
    assert parse_sprop_parameter_sets({"sprop-vps": base64.b64encode(SPS).decode()}) == {}  # wrong type
    with pytest.raises(ParseError, match="sprop-pps item 'aGk!!': expected base64"):
        H265Depacketizer({"sprop-pps": "aGk!!"})
    with pytest.raises(ParseError, match="sprop-max-don-diff 'x'"):
        H265Depacketizer({"sprop-max-don-diff": "x"})


def test_packetizer_aggregates_and_fragments() -> None:
    p = H265Packetizer(max_payload_size=60, initial_sequence=65535)
    big = nal(19, bytes(150))
    packets = p.packetize(AccessUnit(0x1_0000_0007, (VPS, SPS, PPS, big, SEI), True))
    kinds = [(pk.payload[0] >> 1) & 0x3F for pk in packets]
    assert kinds == [48, 49, 49, 49, 39]
    assert [pk.sequence_number for pk in packets] == [65535, 0, 1, 2, 3]
    assert [pk.marker for pk in packets] == [False] * 4 + [True] and {pk.timestamp for pk in packets} == {7}
    assert all(len(pk.payload) <= 60 for pk in packets)
    assert run(H265Depacketizer(), packets) == [AccessUnit(7, (VPS, SPS, PPS, big, SEI), True)]


# The captured camera stream (tests/vectors/h265_rtp_camera, MIT, see its LICENSE).
def camera_packets() -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in udp_payloads(CAMERA / "camera.pcap")]


def test_captured_camera_stream_depacketizes_to_the_expected_annex_b_byte_for_byte() -> None:
    packets = camera_packets()
    assert len(packets) == 407 and {p.payload_type for p in packets} == {104}
    d = H265Depacketizer()
    units = run(d, packets)
    assert b"".join(join_annexb(u.nalus) for u in units) == (CAMERA / "expected.h265").read_bytes()
    assert len(units) == 276 and units[0].is_idr
    assert d.counters == type(d.counters)()


def test_captured_camera_stream_decodes_to_276_frames() -> None:
    units = run(H265Depacketizer(), camera_packets())
    with av.open(io.BytesIO(b"".join(join_annexb(u.nalus) for u in units)), format="hevc") as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 276 and (frames[0].width, frames[0].height) == (640, 480)


def test_hikvision_style_parameter_sets_only_in_sdp_captured_stream() -> None:
    # The same capture with VPS/SPS/PPS cut out of its first aggregation packet, given in the SDP instead.
    packets = camera_packets()
    params = split_annexb((CAMERA / "expected.h265").read_bytes())[:3]
    assert [nal_type(n) for n in params] == list(PARAMETER_SETS)
    d = H265Depacketizer(
        {
            f"sprop-{k}": base64.b64encode(v).decode()
            for k, v in zip(("vps", "sps", "pps"), params, strict=True)
        }
    )
    rest = strip_parameter_sets(packets[0].payload)
    stripped = [RtpPacket(**{**packets[0].__dict__, "payload": rest}), *packets[1:]]
    units = run(d, stripped)
    assert b"".join(join_annexb(u.nalus) for u in units) == (CAMERA / "expected.h265").read_bytes()
    assert d.counters.params_inserted == 1


def strip_parameter_sets(payload: bytes) -> bytes:
    """An aggregation packet without its VPS/SPS/PPS (a single NAL packet when one unit is left)."""
    assert nal_type(payload) == 48
    kept, pos = [], 2
    while pos < len(payload):
        size = int.from_bytes(payload[pos : pos + 2], "big")
        unit = payload[pos + 2 : pos + 2 + size]
        pos += 2 + size
        if nal_type(unit) not in PARAMETER_SETS:
            kept.append(unit)
    return kept[0] if len(kept) == 1 else ap(*kept)


# Round trip of a libx265 clip.
@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, ...]]:
    path = tmp_path_factory.mktemp("clip") / "out.h265"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2"),
            *("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=25:log-level=error"),
            *("-f", "hevc", str(path)),
        ],
        check=True,
        timeout=120,
    )
    with av.open(str(path), format="hevc") as container:
        units = [tuple(split_annexb(bytes(p))) for p in container.demux(video=0) if p.size]
    assert len(units) == 50
    return units


@pytest.mark.parametrize(("mtu", "first_pts", "first_seq"), [(1400, 0, 0), (120, 0xFFFF_F000, 65530)])
def test_clip_round_trip(clip: list[tuple[bytes, ...]], mtu: int, first_pts: int, first_seq: int) -> None:
    units = [
        AccessUnit(first_pts + 3600 * i, nalus, any(is_irap(nal_type(n)) for n in nalus))
        for i, nalus in enumerate(clip)
    ]
    assert sum(u.is_idr for u in units) == 2
    packetizer = H265Packetizer(max_payload_size=mtu, initial_sequence=first_seq)
    wire = [RtpPacket.parse(bytes(pk)) for u in units for pk in packetizer.packetize(u)]
    assert {(p.payload[0] >> 1) & 0x3F for p in wire} >= {48, 49}
    d = H265Depacketizer()
    assert run(d, wire) == units
    assert d.counters == type(d.counters)()


def test_clip_with_loss_never_raises(clip: list[tuple[bytes, ...]]) -> None:
    packetizer = H265Packetizer(max_payload_size=200)
    packets = [
        pk for i, nalus in enumerate(clip) for pk in packetizer.packetize(AccessUnit(3600 * i, nalus, False))
    ]
    d = H265Depacketizer()
    units = run(d, [pk for i, pk in enumerate(packets) if i % 13 != 4])
    assert 0 < len(units) <= len(clip)
    assert d.counters.packets_lost == len([i for i in range(len(packets)) if i % 13 == 4])
    assert d.counters.units_damaged > 0


# Fuzzing: arbitrary payloads never raise; every unit holds whole NAL units.
@FUZZ
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.binary(max_size=40),
                st.binary(max_size=40).map(lambda b: bytes([48 << 1, 1]) + b),
                st.binary(max_size=40).map(lambda b: bytes([49 << 1, 1]) + b),
                st.binary(max_size=40).map(lambda b: bytes([50 << 1, 1]) + b),
            ),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.booleans(),
        ),
        max_size=30,
    ),
    st.sampled_from([{}, FMTP, {"sprop-max-don-diff": "3"}]),
)
def test_fuzz_push_never_raises(packets: list[tuple[bytes, int, int, bool]], fmtp: dict[str, str]) -> None:
    d = H265Depacketizer(fmtp)
    for payload, seq, ts, marker in packets:
        for unit in d.push(RtpPacket(96, seq, ts, 1, payload, marker)):
            assert unit.nalus and all(len(n) >= 2 for n in unit.nalus)
    d.flush()


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=20), st.integers(0, 0xFFFF))
def test_fuzz_push_sequential(payloads: list[bytes], first_seq: int) -> None:
    d = H265Depacketizer(FMTP)
    for i, payload in enumerate(payloads):
        d.push(RtpPacket(96, (first_seq + i) & 0xFFFF, 1000 * (i // 3), 1, payload, i % 3 == 2))
    d.flush()


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["sprop-vps", "sprop-sps", "sprop-pps", "sprop-max-don-diff"]), st.text())
)
def test_fuzz_fmtp_only_parse_error(fmtp: dict[str, str]) -> None:
    with contextlib.suppress(ParseError):
        H265Depacketizer(fmtp)


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "-1", "32768", ""])
def test_a_max_don_diff_that_is_not_ascii_digits_is_a_parse_error(value: str) -> None:
    """'²' and '٣' are str.isdigit() yet int() refuses one and reads the other (found by Hypothesis)."""
    with pytest.raises(ParseError, match="sprop-max-don-diff"):
        H265Depacketizer({"sprop-max-don-diff": value})


# The SDP chooses the depacketizer (ingest/sources/rtsp/server.py).
def announced(sdp_media: str) -> Track:
    sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n" + sdp_media
    return Track(0, SessionDescription.parse(sdp).media[0], "trackID=0")


def test_sdp_encoding_name_chooses_the_depacketizer() -> None:
    vps, sps, pps = (base64.b64encode(n).decode() for n in (VPS, SPS, PPS))
    track = announced(
        "m=video 0 RTP/AVP 104\r\na=rtpmap:104 H265/90000\r\n"
        f"a=fmtp:104 sprop-vps={vps}; sprop-sps={sps}; sprop-pps={pps}\r\n"
    )
    d = depacketizer_for(track)
    assert isinstance(d, H265Depacketizer) and d.parameter_set(NAL_VPS) == VPS
    assert isinstance(
        depacketizer_for(announced("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")), H264Depacketizer
    )


def test_malformed_sdp_parameter_sets_are_ignored_not_fatal() -> None:
    track = announced("m=video 0 RTP/AVP 104\r\na=rtpmap:104 h265/90000\r\na=fmtp:104 sprop-sps=@@@\r\n")
    d = depacketizer_for(track)
    assert isinstance(d, H265Depacketizer) and d.parameter_set(NAL_SPS) is None
