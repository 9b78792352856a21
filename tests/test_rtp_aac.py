"""AAC over RTP: RFC 3640 ``mpeg4-generic`` and RFC 6416 ``MP4A-LATM`` depacketizers, against packets
captured from ffmpeg and GStreamer (tests/vectors/audio_rtp), tables of hand-made packets, and fuzzing."""

from __future__ import annotations

import contextlib
import io
import itertools

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs.aac import AudioConfig, AudioUnit
from ingest.errors import ParseError
from ingest.sources.rtp.aac import AacDepacketizer, AacPacketizer, LatmDepacketizer, parse_stream_mux_config
from ingest.sources.rtp.audio import audio_depacketizer_for
from ingest.sources.rtp.packet import RtpPacket
from tests.vectors.audio_rtp import adts_frames, media, packets

FUZZ = settings(database=None, max_examples=300, deadline=None)
HBR = {"mode": "AAC-hbr", "sizelength": "13", "indexlength": "3", "indexdeltalength": "3", "config": "1210"}


def rtp(payload: bytes, seq: int, ts: int = 1000, marker: bool = True) -> RtpPacket:
    return RtpPacket(97, seq & 0xFFFF, ts, 0x1234, payload, marker)


def hbr_payload(*aus: bytes, declared: list[int] | None = None) -> bytes:
    sizes = declared if declared is not None else [len(a) for a in aus]
    headers = b"".join((size << 3).to_bytes(2, "big") for size in sizes)
    return (16 * len(sizes)).to_bytes(2, "big") + headers + b"".join(aus)


def decode_all(config: AudioConfig, units: list[AudioUnit]) -> int:
    """Decode the units with FFmpeg's AAC decoder (as an ADTS stream); returns the samples decoded."""
    adts = b"".join(config.adts_header(len(u.data)) + u.data for u in units)
    samples = 0
    with av.open(io.BytesIO(adts), "r", format="aac") as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
    return samples


# --- captured vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["aac", "aac_fragmented"])
def test_ffmpeg_capture_gives_the_encoders_frames(name: str) -> None:
    m = media(name)
    assert m.rtpmap is not None
    depacketizer = audio_depacketizer_for(m.rtpmap.encoding_name, m.rtpmap.clock_rate, 2, m.fmtp)
    assert isinstance(depacketizer, AacDepacketizer)
    assert depacketizer.config == AudioConfig(44100, 2, bytes.fromhex("121056e500"))
    units = [u for p in packets(name) for u in depacketizer.push(p)]
    expected = adts_frames(name)
    # ffmpeg's RTP muxer never sends its last aggregated packet: at most 5 AUs short.
    assert [u.data for u in units] == expected[: len(units)] and len(units) >= len(expected) - 5
    assert [b.pts - a.pts for a, b in itertools.pairwise(units)] == [1024] * (len(units) - 1)
    assert vars(depacketizer.counters) == dict.fromkeys(vars(depacketizer.counters), 0)
    assert decode_all(depacketizer.config, units) == 1024 * len(units)


def test_ffmpeg_capture_has_several_aus_per_packet_and_fragments() -> None:
    many = AacDepacketizer(media("aac").fmtp)
    assert max(len(many.parse(p.payload)) for p in packets("aac")) >= 5
    fragmented = packets("aac_fragmented")
    assert sum(not p.marker for p in fragmented) > 20  # AUs spread over 2-3 packets


def test_gstreamer_latm_capture_gives_the_encoders_frames() -> None:
    m = media("latm")
    assert m.rtpmap is not None
    depacketizer = audio_depacketizer_for("MP4A-LATM", m.rtpmap.clock_rate, None, m.fmtp)
    assert isinstance(depacketizer, LatmDepacketizer)
    assert (depacketizer.config.sample_rate, depacketizer.config.channels) == (44100, 2)
    captured = packets("latm")
    assert sum(not p.marker for p in captured) > 5  # AudioMuxElements over several packets
    units = [u for p in captured for u in depacketizer.push(p)]
    assert [u.data for u in units] == adts_frames("latm")
    assert decode_all(depacketizer.config, units) == 1024 * len(units)


def test_lost_fragment_drops_that_au_only() -> None:
    depacketizer = AacDepacketizer(media("aac_fragmented").fmtp)
    captured = packets("aac_fragmented")
    first_fragment_end = next(i for i, p in enumerate(captured) if p.marker)
    lossy = [p for i, p in enumerate(captured) if i != first_fragment_end - 1]  # the AU's middle/first piece
    units = [u for p in lossy for u in depacketizer.push(p)]
    expected = adts_frames("aac_fragmented")
    assert [u.data for u in units] == expected[1 : len(units) + 1]
    assert depacketizer.counters.audio_packets_lost == 1 and depacketizer.counters.audio_units_dropped == 1


# --- hand-made packets -----------------------------------------------------------------------------


def test_several_aus_follow_each_other_by_1024() -> None:
    depacketizer = AacDepacketizer(HBR)
    units = depacketizer.push(rtp(hbr_payload(b"\x01" * 10, b"\x02" * 20, b"\x03" * 5), 1, ts=5000))
    assert [(u.pts, u.data) for u in units] == [
        (5000, b"\x01" * 10),
        (6024, b"\x02" * 20),
        (7048, b"\x03" * 5),
    ]


def test_fragmented_au_is_rebuilt() -> None:
    depacketizer = AacDepacketizer(HBR)
    au = bytes(range(250))
    assert depacketizer.push(rtp(hbr_payload(au[:100], declared=[250]), 1, marker=False)) == []
    assert depacketizer.push(rtp(hbr_payload(au[100:200], declared=[250]), 2, marker=False)) == []
    [unit] = depacketizer.push(rtp(hbr_payload(au[200:], declared=[250]), 3))
    assert unit.data == au and unit.pts == 1000


def test_packetizer_round_trip_with_aggregation_and_fragments() -> None:
    units = [AudioUnit(10_000 + 1024 * i, bytes([i]) * size) for i, size in enumerate([50, 60, 900, 40, 30])]
    packets_ = AacPacketizer(max_payload_size=400).packetize(units)
    assert len(packets_) > 3
    depacketizer = AacDepacketizer(HBR)
    assert [u for p in packets_ for u in depacketizer.push(p)] == units


def test_rtp_clock_other_than_the_sample_rate() -> None:
    depacketizer = AacDepacketizer(HBR | {"config": "1190"}, clock_rate=90_000)  # 48 kHz audio, 90 kHz RTP
    units = depacketizer.push(rtp(hbr_payload(b"a", b"b"), 1, ts=90_000))
    assert [u.pts for u in units] == [48_000, 48_000 + 1024]


def test_interleaved_index_deltas_order_by_time() -> None:
    depacketizer = AacDepacketizer(HBR)
    # index 1 first, then delta 0 (index 2)... AU-Index=1 then AU-Index-delta=0 -> indices 1, 2
    headers = (len(b"x") << 3 | 1).to_bytes(2, "big") + (len(b"y") << 3).to_bytes(2, "big")
    units = depacketizer.push(rtp((32).to_bytes(2, "big") + headers + b"xy", 1, ts=0))
    assert [(u.pts, u.data) for u in units] == [(1024, b"x"), (2048, b"y")]


BAD_FMTP = {
    "no config": ({"mode": "AAC-hbr", "sizelength": "13"}, "without config"),
    "config not hex": (HBR | {"config": "zz"}, "expected hexadecimal"),
    "HE-AAC object type": (HBR | {"config": "2b10"}, "object type 5"),
    "sizelength not a number": (HBR | {"sizelength": "x"}, "sizelength='x'"),
    "sizelength too large": (HBR | {"sizelength": "99"}, "expected an integer 0..32"),
    "no sizes": ({"config": "1210"}, "expected sizelength"),
}


@pytest.mark.parametrize(("fmtp", "message"), BAD_FMTP.values(), ids=BAD_FMTP.keys())
def test_bad_fmtp_is_a_parse_error(fmtp: dict[str, str], message: str) -> None:
    with pytest.raises(ParseError, match=message):
        AacDepacketizer(fmtp)


BAD_LATM = {
    "cpresent=1": ({"cpresent": "1", "config": "40002420adca00"}, "cpresent=0"),
    "two programs": ({"cpresent": "0", "config": "4010"}, "several programs"),
    "audioMuxVersion 1": ({"cpresent": "0", "config": "c0"}, "audioMuxVersion 1"),
    "short": ({"cpresent": "0", "config": "40"}, "needs"),
}


@pytest.mark.parametrize(("fmtp", "message"), BAD_LATM.values(), ids=BAD_LATM.keys())
def test_bad_latm_config_is_a_parse_error(fmtp: dict[str, str], message: str) -> None:
    with pytest.raises(ParseError, match=message):
        LatmDepacketizer(fmtp)


def test_stream_mux_config_of_gstreamer() -> None:
    config, subframes = parse_stream_mux_config("40002420adca00")
    assert (config.sample_rate, config.channels, subframes) == (44100, 2, 1)
    assert parse_stream_mux_config("400024203fc0")[0].channels == 2  # no SBR signalling


def test_bad_packets_are_counted_not_raised() -> None:
    depacketizer = AacDepacketizer(HBR)
    for i, payload in enumerate([b"", b"\x00", b"\x00\x10\x00"]):
        assert depacketizer.push(rtp(payload, i)) == []
    [first] = depacketizer.push(rtp(hbr_payload(b"ab", declared=[2, 5]), 3))  # the second AU is cut short
    assert first.data == b"ab" and depacketizer.counters.audio_packets_invalid == 4
    # Found by the fuzzer: AU-headers-length 0 (no headers) once divided by a constant size of 0.
    assert depacketizer.push(rtp(b"\x00\x00\x00", 4)) == []
    assert depacketizer.counters.audio_packets_invalid == 5
    assert depacketizer.push(rtp(b"\x00\x10", 10)) == []  # no AU-headers-length bits: nothing


# --- fuzzing: the only failure allowed is our ParseError --------------------------------------------


@FUZZ
@given(
    st.lists(st.binary(max_size=64), max_size=12),
    st.sampled_from(
        [
            HBR,
            HBR
            | {
                "mode": "AAC-lbr",
                "sizelength": "6",
                "indexlength": "2",
                "indexdeltalength": "2",
                "ctsdeltalength": "3",
                "randomaccessindication": "1",
                "auxiliarydatasizelength": "4",
            },
            {"config": "1210", "constantsize": "4"},
        ]
    ),
)
def test_fuzz_mpeg4_generic(payloads: list[bytes], fmtp: dict[str, str]) -> None:
    depacketizer = AacDepacketizer(fmtp)
    for i, payload in enumerate(payloads):
        for unit in depacketizer.push(rtp(payload, i, marker=i % 3 == 0)):
            assert len(unit.data) <= len(payload)
        with contextlib.suppress(ParseError):
            depacketizer.parse(payload)
    depacketizer.flush()


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=80), st.booleans(), st.integers(0, 3)), max_size=12))
def test_fuzz_latm(items: list[tuple[bytes, bool, int]]) -> None:
    depacketizer = LatmDepacketizer({"cpresent": "0", "config": "40002420adca00"})
    seq = 0
    for payload, marker, skip in items:
        seq += 1 + (skip == 3)
        depacketizer.push(rtp(payload, seq, marker=marker))
        with contextlib.suppress(ParseError):
            depacketizer.parse(payload)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "mode",
                "config",
                "sizelength",
                "indexlength",
                "indexdeltalength",
                "constantsize",
                "constantduration",
                "cpresent",
            ]
        ),
        st.text(max_size=12),
        max_size=6,
    )
)
def test_fuzz_fmtp(fmtp: dict[str, str]) -> None:
    for encoding in ("MPEG4-GENERIC", "MP4A-LATM"):
        with contextlib.suppress(ParseError):
            audio_depacketizer_for(encoding, 44100, 2, fmtp)
