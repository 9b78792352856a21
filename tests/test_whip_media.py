"""WHIP media helpers: VP8 frames (and the session's AAC) to NUT raw segments that FFmpeg reads back
with exact timestamps and the transcoder turns into H.264 + an ``audio`` rendition on the segment's
timeline; H.264 frames to access units, Opus to AAC, the port range and announced IP flags."""

from __future__ import annotations

import dataclasses
import io
from fractions import Fraction

import av
import numpy as np
import pytest

from camflow.errors import ConfigError
from camflow.mp4 import base_media_decode_times
from ingest.codecs.aac import AacEncoder
from ingest.codecs.vp8 import ivf, vp8_size
from ingest.errors import ParseError
from ingest.media.mux import Vp8Muxer
from ingest.media.segmenter import TIMESCALE, AudioSample, CutSegment, Segmenter
from ingest.sources.whip.audio import OPUS_RATE, OpusToAac
from ingest.sources.whip.ice import check_announce_ip, parse_webrtc_ports
from ingest.sources.whip.media import h264_unit, vp8_unit
from transcode.ladder import parse_ladder
from transcode.renditions import AUDIO_NAME, transcode_segment


def encoded(codec: str, frames: int, size: tuple[int, int] = (320, 240), gop: int = 15) -> list[bytes]:
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height = size
    enc.pix_fmt, enc.time_base = "yuv420p", Fraction(1, 30)
    enc.options = {
        "g": str(gop),
        **({"deadline": "realtime"} if codec == "libvpx" else {"bf": "0", "sc_threshold": "0"}),
    }
    out: list[bytes] = []
    rng = np.random.default_rng(7)
    for i in range(frames):
        pixels = np.full((size[1], size[0], 3), (i * 5) % 256, dtype=np.uint8)
        pixels[:, (i * 7) % size[0]] = rng.integers(0, 255, 3, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    return out + [bytes(p) for p in enc.encode(None)]


def vp8_segments(frames: list[bytes], first_pts: int) -> list[CutSegment]:
    segmenter = Segmenter(target=1.0)
    segments = []
    for i, data in enumerate(frames):
        segments += segmenter.push(vp8_unit(data, first_pts + i * 3000))
    return segments + segmenter.flush()


def with_audio(segment: CutSegment, units: list[AudioSample]) -> CutSegment:
    """The AAC units in [start, start + duration) of ``segment``, as the publisher's audio path gives them."""
    lo, hi = (t * OPUS_RATE // TIMESCALE for t in (segment.start, segment.start + segment.duration))
    return dataclasses.replace(segment, audio=tuple(u for u in units if lo <= u.time < hi))


def test_vp8_segments_with_aac_are_nut_that_transcode_on_the_segment_timeline() -> None:
    frames = encoded("libvpx", 45)
    assert vp8_size(frames[0]) == (320, 240)
    segments = vp8_segments(frames, 900_001_234)
    assert [len(s.samples) for s in segments] == [30, 15]  # cut at the key frame after 1 s
    encoder = AacEncoder(OPUS_RATE, 2)
    tone = (np.sin(np.arange(OPUS_RATE * 2) / 10) * 8000).astype("<i2")
    start = segments[0].start * OPUS_RATE // TIMESCALE + 7  # off the 1 ms grid: kept sample-exact
    units = encoder.encode_pcm(np.repeat(tone, 2).tobytes(), start, sample_rate=OPUS_RATE, channels=2)
    samples = [AudioSample(u.pts, u.data, u.duration) for u in units + encoder.flush()]
    muxer = Vp8Muxer()
    muxer.audio = encoder.config
    ladder = parse_ladder("source")
    for segment in (with_audio(s, samples) for s in segments):
        assert len(segment.audio) > 20
        data = muxer.mux(segment)
        assert muxer.params is not None and muxer.params.codecs.startswith("vp08")
        with av.open(io.BytesIO(data), "r", format="nut") as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "vp8" and video.time_base == Fraction(1, TIMESCALE)
            assert audio.codec_context.name == "aac" and audio.time_base == Fraction(1, OPUS_RATE)
            packets = [p for p in container.demux() if p.size]
            assert [p.pts for p in packets if p.stream is video] == [s.pts for s in segment.samples]
            assert [p.pts for p in packets if p.stream is audio] == [a.time for a in segment.audio]
        end = segment.start + segment.duration
        out = {r.name: r for r in transcode_segment(data, ladder, end).renditions}
        assert sorted(out) == [AUDIO_NAME, "source"] and out["source"].codecs.startswith("avc1.4d")
        assert base_media_decode_times(out["source"].media)[0] == segment.start
        sound = out[AUDIO_NAME]
        assert (sound.codecs, sound.sample_rate, sound.channels) == ("mp4a.40.2", OPUS_RATE, 2)
        assert base_media_decode_times(sound.media) == [segment.audio[0].time]  # sample-exact
        with av.open(io.BytesIO(sound.init + sound.media), "r", format="mp4") as played:
            copied = [p for p in played.demux(audio=0) if p.size]
            assert [p.pts for p in copied] == [a.time for a in segment.audio]
    muxer.close()


def test_vp8_ivf_segments_of_earlier_versions_still_transcode() -> None:
    frames = encoded("libvpx", 15)
    segment = vp8_segments(frames, 1234)[0]
    data = ivf(320, 240, [(s.pts, s.nalus[0]) for s in segment.samples])
    out = transcode_segment(data, parse_ladder("source"), segment.start + segment.duration).renditions
    assert [r.name for r in out] == ["source"]  # IVF holds no audio
    assert base_media_decode_times(out[0].media) == [segment.start]


def test_vp8_inter_frame_and_garbage() -> None:
    frames = encoded("libvpx", 3)
    assert vp8_unit(frames[0], 0).is_idr and not vp8_unit(frames[1], 3000).is_idr
    with pytest.raises(ParseError):
        vp8_unit(b"\x00", 0)
    with pytest.raises(ParseError):
        vp8_size(frames[1])


def test_h264_frames_become_access_units() -> None:
    frames = encoded("libx264", 20, gop=10)  # Annex B, as aiortc depayloads it
    units = [h264_unit(f, i * 3000) for i, f in enumerate(frames)]
    assert [u.is_idr for u in units].count(True) == 2 and units[0].is_idr
    assert {n[0] & 0x1F for n in units[0].nalus} >= {5, 7, 8}


def test_opus_becomes_aac() -> None:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = OPUS_RATE, "stereo", "s16"
    enc.time_base = Fraction(1, OPUS_RATE)
    opus: list[tuple[bytes, int]] = []
    for i in range(50):  # 1 s of 20 ms frames
        tone = (np.sin(np.arange(960) / 10) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = OPUS_RATE, i * 960
        opus += [(bytes(p), int(p.pts or 0)) for p in enc.encode(frame)]
    path = OpusToAac()
    units = [u for data, pts in opus for u in path.push(data, pts)] + path.flush()
    assert path.encoder.config.codecs == "mp4a.40.2" and path.counters.opus_undecodable == 0
    assert 40 <= len(units) <= 50  # 1024-sample AAC frames for ~1 s of 48 kHz


def test_flags() -> None:
    assert parse_webrtc_ports("40000-40999") == (40000, 40999)
    assert parse_webrtc_ports("any") is None
    for bad in ("40000", "9-10", "50000-40000", "1-70000", "a-b"):
        with pytest.raises(ConfigError, match="--webrtc-ports"):
            parse_webrtc_ports(bad)
    assert check_announce_ip("203.0.113.9") == "203.0.113.9" and check_announce_ip(None) is None
    with pytest.raises(ConfigError, match="--webrtc-announce-ip"):
        check_announce_ip("example.com")
