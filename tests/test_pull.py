"""Pull-source configuration, backoff, and PyAV packets (AVCC from MP4, Annex B from raw H.264, AAC and
A-law audio) to units."""

from __future__ import annotations

import itertools
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from camflow.errors import ConfigError
from ingest.audio import AudioConfig, AudioUnit
from ingest.errors import ParseError
from ingest.h264 import NAL_IDR, NAL_PPS, NAL_SPS
from ingest.pull import (
    Backoff,
    PullSource,
    UnitAssembler,
    check_unique,
    load_sources,
    parameter_sets,
    parse_pull,
)
from ingest.pull_media import AudioAssembler
from ingest.rtp.base import AccessUnit
from tests.process import make_clip


def test_parse_pull() -> None:
    assert parse_pull("cam7=rtsp://10.0.0.7:554/s1?x=1") == PullSource("cam7", "rtsp://10.0.0.7:554/s1?x=1")
    for bad in ("cam7", "=rtsp://h/p", "cam7=http://h/p", "bad name=rtsp://h/p"):
        with pytest.raises(ConfigError):
            parse_pull(bad)


def test_load_sources(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text('cam1 = "rtsp://h/1"\n[cam2]\nurl = "rtsp://h/2"\ntransport = "UDP"\n')
    assert load_sources(path) == [PullSource("cam1", "rtsp://h/1"), PullSource("cam2", "rtsp://h/2", "udp")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cam1 = [", "expected TOML"),
        ("cam1 = 3", "expected a URL string"),
        ('[cam1]\nurl = "rtsp://h/1"\ntransport = "sctp"', "expected tcp or udp"),
        ('[cam1]\nurl = "rtsp://h/1"\nuser = "x"', "unknown keys"),
    ],
)
def test_bad_sources_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_sources(path)


def test_missing_sources_file_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sources file"):
        load_sources(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="pulled once"):
        check_unique([PullSource("a", "rtsp://h/1"), PullSource("a", "rtsp://h/2")])


def test_backoff_doubles_capped_and_jittered() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    for failures, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)):
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered: many sources do not retry in lockstep


def units_of(path: Path, fmt: str | None = None) -> list[AccessUnit]:
    with av.open(str(path), format=fmt) as container:
        stream = container.streams.video[0]
        assembler = UnitAssembler(stream.codec_context.extradata, stream.time_base or Fraction(1, 90000))
        units = []
        for packet in container.demux(stream):
            if packet.size:
                unit = assembler.push(bytes(packet), packet.pts, packet.dts)
                if unit is not None:
                    units.append(unit)
        return units


def test_avcc_and_annexb_packets_give_the_same_units(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 3, size="320x240", gop=30)
    raw = tmp_path / "clip.h264"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            str(raw),
        ],
        check=True,
        timeout=60,
    )
    with av.open(str(clip)) as container:
        extradata = container.streams.video[0].codec_context.extradata
    assert extradata and extradata[0] == 1  # avcC: the MP4 demuxer gives length-prefixed NAL units
    params, length_size = parameter_sets(extradata)
    assert length_size == 4 and [p[0] & 0x1F for p in params] == [NAL_SPS, NAL_PPS]

    from_mp4 = units_of(clip)
    from_raw = units_of(raw, "h264")
    assert len(from_mp4) == len(from_raw) == 90
    assert sum(u.is_idr for u in from_mp4) == 3
    for a, b in zip(from_mp4, from_raw, strict=True):
        assert a.is_idr == b.is_idr
        vcl = [n for n in a.nalus if 1 <= n[0] & 0x1F <= 5]
        assert vcl == [n for n in b.nalus if 1 <= n[0] & 0x1F <= 5]
        if a.is_idr:  # the MP4 carries SPS/PPS only in avcC: they are re-inserted before the IDR
            types = [n[0] & 0x1F for n in a.nalus]
            assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)
    # B-frames: presentation times are on the 90 kHz timeline, in decode order (not sorted).
    pts = [u.pts for u in from_mp4]
    assert sorted(pts) != pts and sorted(pts)[1] - sorted(pts)[0] == 3000


def test_missing_timestamps_are_counted_and_filled() -> None:
    assembler = UnitAssembler(None, Fraction(1, 90000))
    sps, pps, idr = b"\x67\x42\x00\x1e", b"\x68\xce", b"\x65\x88"
    first = assembler.push(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps, None, None)
    assert first is None  # parameter sets alone are held for the next unit
    unit = assembler.push(b"\x00\x00\x00\x01" + idr, None, None)
    assert unit == AccessUnit(pts=0, nalus=(sps, pps, idr), is_idr=True)
    second = assembler.push(b"\x00\x00\x00\x01\x41\x9a", None, None)
    assert second is not None and second.pts == 3000 and assembler.counters.pts_missing == 2


def audio_units_of(path: Path) -> tuple[AudioAssembler, list[AudioUnit]]:
    with av.open(str(path)) as container:
        assembler = AudioAssembler(container.streams.audio[0])
        units = [u for p in container.demux(container.streams.audio[0]) if p.size for u in assembler.push(p)]
        return assembler, units + assembler.flush()


def tone(path: Path, codec: list[str], rate: int, channels: int) -> Path:
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}"),
            *("-t", "2", "-ac", str(channels), *codec, str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path


def test_pulled_aac_is_copied_with_its_config_and_sample_clock(tmp_path: Path) -> None:
    clip = tone(tmp_path / "aac.mp4", ["-c:a", "aac", "-ar", "44100"], 44100, 2)
    with av.open(str(clip)) as container:
        packets = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
    assembler, units = audio_units_of(clip)
    config = assembler.config  # FFmpeg's MP4 ASC adds an explicit "no SBR" extension after the 2 bytes
    assert (config.sample_rate, config.channels, config.asc[:2]) == (
        44100,
        2,
        AudioConfig.aac_lc(44100, 2).asc,
    )
    assert [u.data for u in units] == packets  # copied byte for byte
    steps = {b.pts - a.pts for a, b in itertools.pairwise(units)}
    assert steps == {1024} and all(u.duration == 1024 for u in units)


def test_pulled_alaw_is_encoded_to_aac_at_its_rate(tmp_path: Path) -> None:
    clip = tone(tmp_path / "alaw.wav", ["-c:a", "pcm_alaw", "-ar", "8000"], 8000, 1)
    assembler, units = audio_units_of(clip)
    assert assembler.codec == "pcm_alaw" and assembler.config == AudioConfig.aac_lc(8000, 1)
    seconds = sum(u.duration for u in units) / 8000
    assert 2.0 <= seconds <= 2.0 + 2 * 1024 / 8000  # the input, plus the encoder's priming and padding
    decoded = av.CodecContext.create("aac", "r")
    decoded.extradata = assembler.config.asc
    frames = [f for u in units[2:-2] for f in decoded.decode(av.Packet(u.data))]
    loudest = max(float(abs(f.to_ndarray()).max()) for f in frames)
    assert loudest > 0.05  # the tone (amplitude 1/8) came through


def test_pulled_audio_the_segments_cannot_carry_is_a_parse_error(tmp_path: Path) -> None:
    clip = tone(tmp_path / "raw.mp4", ["-c:a", "aac", "-ar", "44100"], 44100, 1)
    with av.open(str(clip)) as container:
        stream = container.streams.audio[0]
        stream.codec_context.extradata = None
        with pytest.raises(ParseError, match="AudioSpecificConfig"):
            AudioAssembler(stream)
