"""G.711 over RTP (PCMU/PCMA): decoding checked against FFmpeg's decoder on packets captured from an ffmpeg
push (tests/vectors/audio_rtp), the AAC it becomes decoded by FFmpeg, static and dynamic payload types,
loss, and fuzzing."""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import subprocess

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs.aac import AudioUnit
from ingest.codecs.g711 import PCMA, PCMU, decode, encode
from ingest.errors import ParseError
from ingest.sources.rtp.audio import audio_depacketizer_for
from ingest.sources.rtp.g711 import G711Depacketizer, G711ToAac
from ingest.sources.rtp.packet import RtpPacket
from ingest.sources.rtsp.sdp import SessionDescription
from ingest.sources.rtsp.session import Track
from tests.vectors.audio_rtp import media, packets

FUZZ = settings(database=None, max_examples=300, deadline=None)
LAWS = {"pcmu": PCMU, "pcma": PCMA}
FFMPEG_FORMAT = {PCMU: "mulaw", PCMA: "alaw"}


def aac_pcm(units: list[AudioUnit], rate: int, channels: int) -> np.ndarray:
    """The units decoded by FFmpeg's AAC decoder, as float samples of the first channel."""
    gen = G711ToAac(PCMU, rate, channels).config  # the same configuration the units were made with
    adts = b"".join(gen.adts_header(len(u.data)) + u.data for u in units)
    out = []
    with av.open(io.BytesIO(adts), "r", format="aac") as container:
        for frame in container.decode(audio=0):
            out.append(frame.to_ndarray()[0])
    return np.concatenate(out)


@pytest.mark.parametrize("name", ["pcmu", "pcma"])
def test_decoding_equals_ffmpegs(name: str) -> None:
    law = LAWS[name]
    payload = b"".join(p.payload for p in packets(name))
    ffmpeg = subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-f", FFMPEG_FORMAT[law], "-ar", "8000", "-ac", "1", "-i", "-"),
            "-f",
            "s16le",
            "-",
        ],
        input=payload,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert decode(law, payload) == ffmpeg.stdout


@pytest.mark.parametrize("name", ["pcmu", "pcma"])
def test_capture_becomes_aac_that_plays_the_tone(name: str) -> None:
    m = media(name)
    assert m.rtpmap is None and m.payload_type == (0 if name == "pcmu" else 8)  # static type, no rtpmap
    track = Track(0, m, "trackID=0")
    assert track.audio_format == (LAWS[name], 8000, 1)
    depacketizer = audio_depacketizer_for(*track.audio_format, m.fmtp)
    assert isinstance(depacketizer, G711ToAac)
    captured = packets(name)
    units = [u for p in captured for u in depacketizer.push(p)] + depacketizer.flush()
    assert depacketizer.config.codecs == "mp4a.40.2" and depacketizer.config.sample_rate == 8000
    first = captured[0].timestamp
    assert units[0].pts == first - 1024  # the encoder's priming frame, then every 1024 samples
    assert all(b.pts - a.pts == 1024 for a, b in itertools.pairwise(units))
    pcm = aac_pcm(units, 8000, 1)
    assert len(pcm) == 1024 * len(units) and len(pcm) >= 3 * 8000
    tone = pcm[4096 : 4096 + 8000]
    spectrum = np.abs(np.fft.rfft(tone))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # 1 s of samples: bin = Hz
    assert math.sqrt(float(np.mean(tone**2))) > 0.05  # ffmpeg's sine: amplitude 1/8, RMS 0.088


def test_dynamic_payload_type_and_rate() -> None:
    sdp = SessionDescription.parse(
        b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 PCMA/16000/2\r\n"
    )
    track = Track(0, sdp.media[0], "trackID=0")
    assert track.audio_format == ("PCMA", 16000, 2)
    depacketizer = audio_depacketizer_for("PCMA", 16000, 2, {})
    assert (depacketizer.config.sample_rate, depacketizer.config.channels) == (16000, 2)
    pcm = (np.sin(np.arange(3200) / 10) * 8000).astype("<i2").repeat(2).tobytes()  # 0.2 s, 2 channels
    payload = encode(PCMA, pcm)
    units = depacketizer.push(RtpPacket(97, 1, 0, 1, payload)) + depacketizer.flush()
    assert len(units) >= 3200 // 1024


def test_lost_packet_is_filled_with_silence() -> None:
    depacketizer = G711ToAac(PCMU)
    captured = packets("pcmu")
    lossy = captured[:10] + captured[11:]
    units = [u for p in lossy for u in depacketizer.push(p)] + depacketizer.flush()
    assert depacketizer.counters.audio_packets_lost == 1 and depacketizer.counters.audio_gaps_filled == 1
    assert all(b.pts - a.pts == 1024 for a, b in itertools.pairwise(units))
    assert units[-1].pts - units[0].pts >= captured[-1].timestamp - captured[0].timestamp - 1024


def test_timestamp_jump_restarts_the_timeline() -> None:
    depacketizer = G711ToAac(PCMU)
    silence = encode(PCMU, bytes(320))
    before = depacketizer.push(RtpPacket(0, 1, 0, 1, silence))
    after = [
        u for i in range(30) for u in depacketizer.push(RtpPacket(0, 2 + i, 80_000 + 160 * i, 1, silence))
    ]
    assert depacketizer.counters.audio_restarts == 1
    old = [u.pts for u in after if u.pts < 1024]  # the first timeline, flushed at the jump
    new = [u.pts for u in after if u.pts >= 80_000 - 1024]
    assert (
        before == [] and old == [-1024, 0] and new[0] == 80_000 - 1024 and len(old) + len(new) == len(after)
    )


@pytest.mark.parametrize("law", [PCMU, PCMA])
def test_every_code_round_trips(law: str) -> None:
    codes = bytes(range(256))
    back = encode(law, decode(law, codes))
    if law == PCMU:  # 0x7F and 0xFF are both zero (+0 and -0)
        assert all(a == b or {a, b} == {0x7F, 0xFF} for a, b in zip(codes, back, strict=True))
    else:
        assert back == codes


def test_bad_input() -> None:
    with pytest.raises(ParseError, match="expected PCMU or PCMA"):
        G711Depacketizer("G729")
    with pytest.raises(ParseError, match="3 channels"):
        G711ToAac(PCMU, 8000, 3)
    # make fuzz (rtp-g711): PCMU/6 in the SDP had the AAC encoder resample every sample to 2,667
    with pytest.raises(ParseError, match="clock rate 6 Hz"):
        audio_depacketizer_for("PCMU", 6, 1, {})
    with pytest.raises(ParseError, match="clock rate 96000 Hz"):
        G711ToAac(PCMA, 96000)
    with pytest.raises(ParseError, match="expected MPEG4-GENERIC"):
        audio_depacketizer_for("OPUS", 48000, 2, {})
    depacketizer = G711Depacketizer(PCMU, channels=2)
    assert depacketizer.push(RtpPacket(0, 1, 0, 1, b"")) == []
    assert depacketizer.push(RtpPacket(0, 2, 0, 1, b"\x01\x02\x03")) == []  # odd bytes for 2 channels
    assert depacketizer.push(RtpPacket(0, 1, 0, 1, b"\x01\x02")) == []  # behind: late
    assert (depacketizer.counters.audio_packets_invalid, depacketizer.counters.audio_packets_late) == (2, 1)


@FUZZ
@given(
    st.sampled_from([PCMU, PCMA]),
    st.lists(st.tuples(st.binary(max_size=400), st.integers(0, 3), st.integers(-4000, 40_000)), max_size=10),
)
def test_fuzz_g711(law: str, items: list[tuple[bytes, int, int]]) -> None:
    depacketizer = G711ToAac(law)
    seq, ts = 100, 5000
    for payload, skip, step in items:
        seq += 1 + skip
        ts += step
        with contextlib.suppress(ParseError):
            for unit in depacketizer.push(RtpPacket(8, seq & 0xFFFF, ts & 0xFFFFFFFF, 1, payload)):
                assert unit.data
    depacketizer.flush()
