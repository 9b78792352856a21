"""ingest.codecs.aac (AAC configuration, encoder), ingest.media.audio_path (placement on the video
timeline), the segmenter's AudioTrack, and the raw segment's second (AAC) track, each track's tfdt in
its own timescale; checked with PyAV and ffprobe."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camflow.mp4 import base_media_decode_times, split_init
from ingest.codecs.aac import AacEncoder, AudioConfig, AudioUnit, silent_unit
from ingest.codecs.h264 import split_annexb
from ingest.errors import ParseError
from ingest.media.audio_path import AudioPath
from ingest.media.mux import SegmentMuxer
from ingest.media.segmenter import TIMELINE_ORIGIN, AudioSample, AudioTrack, Segmenter
from ingest.media.units import AccessUnit

RATE = 48_000
SILENCE = b"silence"


def opus_like_frames(seconds: float, start_pts: int = 0, gap_after: int | None = None) -> list[av.AudioFrame]:
    """What aiortc hands a WHIP session: s16 stereo 48 kHz frames of 20 ms, pts in 1/48000."""
    frames = []
    pts = start_pts
    for i in range(int(seconds * 50)):
        t = (np.arange(960) + pts) / RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, pts, Fraction(1, RATE)
        frames.append(frame)
        pts += 960 if i != gap_after else 960 + 4800  # 100 ms lost after frame ``gap_after``
    return frames


def decode(config: AudioConfig, units: list[AudioUnit]) -> np.ndarray:
    adts = b"".join(config.adts_header(len(u.data)) + u.data for u in units)
    with av.open(io.BytesIO(adts), "r", format="aac") as container:
        return np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])


def test_config_round_trip_and_adts() -> None:
    config = AudioConfig.aac_lc(44100, 2)
    assert config.asc == bytes.fromhex("1210") and config.codecs == "mp4a.40.2"
    assert AudioConfig.parse(bytes.fromhex("121056e500")) == AudioConfig(
        44100, 2, bytes.fromhex("121056e500")
    )
    assert config.adts_header(100)[:2] == b"\xff\xf1"
    for bad, message in [
        (b"", "needs 5 bits"),
        (bytes.fromhex("2b10"), "object type 5"),
        (b"\x16\x88", "index 13"),
    ]:
        with pytest.raises(ParseError, match=message):
            AudioConfig.parse(bad)
    with pytest.raises(ParseError, match="sample rate 12345"):
        AudioConfig.aac_lc(12345, 1)


def test_encoder_takes_webrtc_frames() -> None:
    encoder = AacEncoder(RATE, 2)
    units = [u for f in opus_like_frames(2.0, start_pts=960_000) for u in encoder.encode(f)] + encoder.flush()
    assert units[0].pts == 960_000 - 1024
    assert all(b.pts - a.pts == 1024 for a, b in itertools.pairwise(units))
    pcm = decode(encoder.config, units)
    spectrum = np.abs(np.fft.rfft(pcm[RATE // 4 : RATE // 4 + RATE]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2


def test_encoder_fills_small_gaps_and_restarts_on_big_ones() -> None:
    encoder = AacEncoder(RATE, 2)
    units = [u for f in opus_like_frames(1.0, gap_after=10) for u in encoder.encode(f)] + encoder.flush()
    assert encoder.counters.audio_gaps_filled == 1 and encoder.counters.audio_restarts == 0
    assert units[-1].pts - units[0].pts >= RATE + 4800 - 2048  # the 100 ms of silence are in
    frames = opus_like_frames(0.2) + opus_like_frames(0.2, start_pts=10 * RATE)
    jumped = [u for f in frames for u in encoder.encode(f)] + encoder.flush()
    assert encoder.counters.audio_restarts == 1
    assert any(u.pts >= 10 * RATE - 1024 for u in jumped)


def test_encoder_resamples_other_rates() -> None:
    encoder = AacEncoder(16_000, 1)
    units = [u for f in opus_like_frames(0.5) for u in encoder.encode(f)] + encoder.flush()
    assert len(decode(encoder.config, units)) >= 8000 - 1024


def test_silent_unit_decodes_to_silence() -> None:
    config = AudioConfig.aac_lc(44100, 2)
    pcm = decode(config, [AudioUnit(0, silent_unit(44100, 2))] * 3)
    assert float(np.max(np.abs(pcm))) == 0.0


# --- the segmenter's AudioTrack ------------------------------------------------------------------------


def test_audio_track_gives_each_segment_its_samples_and_fills_holes() -> None:
    track = AudioTrack(RATE, SILENCE)
    for i in range(100):
        if 40 <= i < 45:  # a hole of 5 frames
            continue
        track.push(AudioSample(RATE + 1024 * i, bytes([i]), 1024))
    first = track.take(TIMELINE_ORIGIN, TIMELINE_ORIGIN + 90_000)  # [1 s, 2 s): audio ticks [48000, 96000)
    # each sample goes where its end falls: the one ending after 2 s opens the next segment
    assert first[0].time == RATE and all(RATE < s.time + 1024 <= 2 * RATE for s in first)
    assert len(first) == 46 and track.covers(TIMELINE_ORIGIN + 90_000)
    filled = [s for s in first if s.data == SILENCE]
    assert [s.time for s in filled] == [RATE + 1024 * i for i in range(40, 45)]
    second = track.take(TIMELINE_ORIGIN + 90_000, TIMELINE_ORIGIN + 180_000)
    assert second[0].time == first[-1].time + 1024 and SILENCE not in [s.data for s in second]
    third = track.take(TIMELINE_ORIGIN + 180_000, TIMELINE_ORIGIN + 270_000)
    assert third[0].time == second[-1].time + 1024 and third[-1].data == SILENCE  # audio ended: padded
    assert third[-1].time + 1024 > 4 * RATE - 2 * 1024  # padded to within a frame of the end
    track.push(AudioSample(RATE + 1024 * 50, b"late", 1024))
    assert track.counters.audio_late_dropped == 1 and track.counters.audio_silence_inserted > 5


# --- placement on the video timeline --------------------------------------------------------------------


def idr(pts: int) -> AccessUnit:
    return AccessUnit(pts, (b"\x65\x88",), True)


def test_audio_is_placed_by_sender_reports() -> None:
    segmenter = Segmenter(target=1.0)
    segmenter.push(idr(1_000_000))  # video pts 1_000_000 is the timeline origin (1 s)
    clock = iter(np.arange(100, 200, 0.01)).__next__
    path = AudioPath(AudioConfig.aac_lc(RATE, 2), segmenter, clock=lambda: float(clock()))
    path.on_video_idr(1_000_000)
    path.on_video_sender_report(5000.0, 1_000_000)  # video RTP 1_000_000 at wall 5000 s
    path.on_sender_report(5000.5, 7_000)  # audio RTP 7_000 at wall 5000.5 s
    path.on_unit(AudioUnit(7_000 + 1024, b"x"))
    [sample] = path.track._samples
    # wall 5000.5 + 1024/48000 s is video pts 1_000_000 + 0.5 s + ...: timeline 1.5 s + 1024 ticks
    assert sample.time == round(1.5 * RATE) + 1024


def test_audio_is_placed_by_arrival_without_sender_reports() -> None:
    segmenter = Segmenter(target=1.0)
    segmenter.push(idr(123_456))
    now = [10.0]
    path = AudioPath(AudioConfig.aac_lc(RATE, 2), segmenter, clock=lambda: now[0])
    path.on_video_idr(123_456)
    now[0] = 10.25  # the first audio unit arrives 250 ms after the IDR
    path.on_unit(AudioUnit(999, b"a"))
    path.on_unit(AudioUnit(999 + 1024, b"b"))
    times = [s.time for s in path.track._samples]
    assert times == [RATE + RATE // 4, RATE + RATE // 4 + 1024]


def test_segments_wait_for_their_audio() -> None:
    segmenter = Segmenter(target=1.0)
    now = [0.0]
    path = AudioPath(AudioConfig.aac_lc(RATE, 1), segmenter, clock=lambda: now[0])
    cuts = []
    for i in range(60):
        unit = AccessUnit(90_000 + 3000 * i, (b"\x65\x88" if i % 30 == 0 else b"\x41\x9a",), i % 30 == 0)
        if i == 0:
            path.on_video_idr(unit.pts)
        cuts += segmenter.push(unit)
    [cut] = cuts
    assert path.segments(cut) == []  # no audio yet: held
    released = []
    for i in range(48):  # ~1.02 s of audio from the IDR
        released += path.on_unit(AudioUnit(1024 * i, b"x"))
    [segment] = released
    assert segment.audio and segment.audio[0].time == RATE and segment.audio[-1].time < 2 * RATE
    assert path.segments(segmenter.flush()[0]) == []  # the last one waits for its audio...
    now[0] = 1.5  # ... at most HOLD_SECONDS: the next audio unit releases it
    [late] = path.on_unit(AudioUnit(1024 * 48, b"y"))
    # the two units ending after 2 s, then the late one, then silence to the end
    assert [a.data for a in late.audio[:3]] == [b"x", b"x", b"y"]
    assert late.audio[-1].data == silent_unit(RATE, 1)


# --- the raw segment's AAC track --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h264_units(tmp_path_factory: pytest.TempPathFactory) -> list[AccessUnit]:
    path = tmp_path_factory.mktemp("clips") / "clip.h264"
    subprocess.run(
        [
            *(
                "ffmpeg",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "2",
            ),
            *(
                "-c:v",
                "libx264",
                "-g",
                "25",
                "-bf",
                "0",
                "-bsf:v",
                "h264_mp4toannexb",
                "-f",
                "h264",
                str(path),
            ),
        ],
        check=True,
        timeout=60,
    )
    units = []
    with av.open(str(path), "r", format="h264") as container:
        for i, packet in enumerate(container.demux(video=0)):
            if packet.size:
                units.append(AccessUnit(3600 * i, tuple(split_annexb(bytes(packet))), packet.is_keyframe))
    return units


def test_raw_segment_has_an_aac_track_with_its_own_tfdt(h264_units: list[AccessUnit], tmp_path: Path) -> None:
    segmenter = Segmenter(target=1.0)
    config = AudioConfig.aac_lc(44100, 2)
    path = AudioPath(config, segmenter, clock=lambda: 0.0)
    encoder = AacEncoder(44100, 2)
    pcm = (np.sin(np.arange(2 * 44100) / 7) * 8000).astype("<i2").repeat(2).tobytes()
    audio = encoder.encode_pcm(pcm, 0, sample_rate=44100, channels=2) + encoder.flush()
    segments = []
    for unit in h264_units:
        if unit.is_idr:
            path.on_video_idr(unit.pts)
        for cut in segmenter.push(unit):
            segments += path.segments(cut)
        if unit.pts == 0:
            for a in audio:
                segments += path.on_unit(AudioUnit(a.pts + 1024, a.data))
    segments += path.segments(segmenter.flush()[0]) + path.flush()
    assert [s.seq for s in segments] == [0, 1]
    muxer = SegmentMuxer()
    muxer.audio = config
    second = segments[1]
    data = muxer.mux(second)
    _, media = split_init(data)
    assert base_media_decode_times(media, track_id=1) == [second.samples[0].dts]
    assert base_media_decode_times(media, track_id=2) == [second.audio[0].time]
    # the segment starts at 2 s on the timeline; its audio at most a frame before (never after)
    assert 2 * 44100 - 1024 < second.audio[0].time <= 2 * 44100
    with av.open(io.BytesIO(data), "r", format="mp4") as container:  # browsers need the ASC in the esds
        assert container.streams.audio[0].codec_context.extradata == bytes.fromhex("1210")
    file = tmp_path / "seg.mp4"
    file.write_bytes(data)
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,start_time",
                "-of",
                "json",
                str(file),
            ],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    starts = {s["codec_name"]: float(s["start_time"]) for s in probe["streams"]}
    assert starts["h264"] == pytest.approx(2.0) and starts["aac"] == pytest.approx(2.0, abs=1024 / 44100)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(file), "-f", "null", "-"], capture_output=True
    )
    assert decoded.returncode == 0 and decoded.stderr == b""


def test_audio_covers_the_first_segments_start() -> None:
    """Audio that starts a little after the first IDR gets silence before it, on its own frame grid (a
    player would otherwise seek over a hole at the start: hls.js's bufferSeekOverHole in Chromium)."""
    track = AudioTrack(RATE, SILENCE)
    for i in range(50):
        track.push(AudioSample(RATE + 500 + 1024 * i, b"a", 1024))
    first = track.take(TIMELINE_ORIGIN, TIMELINE_ORIGIN + 90_000)
    assert (first[0].time, first[0].data) == (RATE + 500 - 1024, SILENCE)
    assert first[1].time == RATE + 500 and first[1].data == b"a"
