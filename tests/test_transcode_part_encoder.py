"""The part encoder's per-stream state machine (``transcode.part_encoder.StreamParts``) on raw parts
cut from ffmpeg-made H.264 + AAC: every low-latency rendition of every part, init sections equal to
the segment workers', rung parts that decode and keep the source's timing, and what is skipped,
repeated or refused when parts come out of order, twice, broken or from a new owner."""

from __future__ import annotations

import dataclasses
import io
from fractions import Fraction
from pathlib import Path

import av
import pytest

from camflow.events import RawPart
from camflow.mp4 import base_media_decode_times, composition_offsets
from tests.part_clips import ClipSegment, cut, make_clip
from transcode.encoder import nominal_rate
from transcode.errors import BadSegment
from transcode.ladder import parse_ladder
from transcode.part_encoder import PartMedia, StreamParts
from transcode.renditions import transcode_segment

LADDER = parse_ladder("source,90p:100k")


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[ClipSegment]:
    return cut(make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 6, "320x180"))


@pytest.fixture(scope="module")
def bframe_segments(tmp_path_factory: pytest.TempPathFactory) -> list[ClipSegment]:
    return cut(make_clip(tmp_path_factory.mktemp("clipb") / "clip.mp4", 4, "320x180", bframes=2))


def parts_of(segments: list[ClipSegment]) -> list[RawPart]:
    return [p for seg in segments for p in seg.raw_parts("cam1", "avc1.64000d")]


def names(media: PartMedia) -> list[str]:
    return [m.name for m in media.renditions]


def samples(init: bytes, media: list[bytes]) -> list[tuple[int, int, bool]]:
    """(pts, duration, key) of every video packet of init + media, in the stream's 90 kHz."""
    with av.open(io.BytesIO(init + b"".join(media)), "r", format="mp4") as container:
        stream = container.streams.video[0]
        scale = (stream.time_base or Fraction(1, 90_000)) * 90_000
        out = [
            (round((p.pts or 0) * scale), round((p.duration or 0) * scale), p.is_keyframe)
            for p in container.demux(stream)
            if p.pts is not None
        ]
    return out


def decoded(init: bytes, media: list[bytes]) -> int:
    with av.open(io.BytesIO(init + b"".join(media)), "r", format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


def test_every_part_gets_every_rendition_with_the_segment_workers_init(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    for seg in segments[:2]:
        whole = {
            m.name: m for m in transcode_segment(seg.data, LADDER, seg.start + seg.duration, 1).renditions
        }
        got = [state.process(p) for p in seg.raw_parts("cam1", "avc1.64000d")]
        for media in got:
            assert names(media) == ["source", "90p", "audio"] and media.rungs_skipped == 0
            for rendition in media.renditions:  # one EXT-X-MAP for the rendition's parts and segments
                assert rendition.init == whole[rendition.name].init, rendition.name
        for name in ("source", "90p"):
            parts = [next(m for m in media.renditions if m.name == name) for media in got]
            # The parts of a segment, in order, are the segment's pictures: same times, same durations.
            assert samples(parts[0].init, [p.media for p in parts]) == samples(
                whole[name].init, [whole[name].media]
            )
            assert decoded(parts[0].init, [p.media for p in parts]) == len(
                samples(whole[name].init, [whole[name].media])
            )
            starts = [base_media_decode_times(p.media)[0] for p in parts]
            assert starts == [p.start for p in seg.raw_parts("cam1", "x")]
        rung = [next(m for m in media.renditions if m.name == "90p") for media in got]
        keys = [k for _, _, k in samples(rung[0].init, [r.media for r in rung])]
        assert keys[0] and not any(keys[1:])  # the IDR where the segment starts, and only there
        audio = [next(m for m in media.renditions if m.name == "audio") for media in got]
        assert b"".join(a.media for a in audio) and audio[0].sample_rate == 48_000


def test_a_new_owner_starts_the_rungs_at_the_next_independent_part(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    first = state.process(parts[3])  # taken over mid-segment: no encoder state for this segment
    assert names(first) == ["source", "audio"] and first.rungs_skipped == 1
    for part in parts[4:10]:
        assert state.process(part).rungs_skipped == 1
    assert names(state.process(parts[10])) == ["source", "90p", "audio"]  # segment 1's part 0


def test_a_lost_part_stops_the_rungs_until_the_next_segment(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    for part in parts[:4]:
        assert state.process(part).rungs_skipped == 0
    assert state.process(parts[5]).rungs_skipped == 1  # part 4 never came: the rung cannot go on
    assert state.process(parts[6]).rungs_skipped == 1
    assert state.process(parts[10]).rungs_skipped == 0


def test_a_part_delivered_again_is_recognised(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    for part in parts[:3]:
        state.process(part)
    again = state.process(parts[1])
    assert again.duplicate and not again.renditions
    assert not state.process(parts[3]).duplicate


def test_a_new_epoch_starts_over(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    for part in parts[:12]:
        state.process(part)
    again = dataclasses.replace(parts[0], epoch="20261203T111500123Z")
    media = state.process(again)  # seq 0 of a new epoch is not a repeat of the old one's
    assert not media.duplicate and names(media) == ["source", "90p", "audio"]


def test_a_broken_part_is_refused_and_the_stream_goes_on(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    state.process(parts[0])
    broken = dataclasses.replace(parts[1], data=parts[1].data[:200] + bytes(len(parts[1].data) - 200))
    with pytest.raises(BadSegment, match="raw part"):
        state.process(broken)
    assert state.process(parts[2]).rungs_skipped == 1  # the encoders may hold half a part
    assert state.process(parts[10]).rungs_skipped == 0


def test_close_ends_the_encoders_and_the_next_segment_opens_them(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    state.process(parts[0])
    assert state.encoding
    state.close()
    assert not state.encoding
    assert state.process(parts[1]).rungs_skipped == 1
    assert state.process(parts[10]).rungs_skipped == 0 and state.encoding


def test_a_source_with_b_frames_keeps_its_times_in_every_rendition(
    bframe_segments: list[ClipSegment],
) -> None:
    state = StreamParts("cam1", LADDER)
    got = [state.process(p) for p in parts_of(bframe_segments)]
    seg = bframe_segments[1]
    whole = {m.name: m for m in transcode_segment(seg.data, LADDER, seg.end, 1).renditions}
    mine = got[len(bframe_segments[0].parts) : len(bframe_segments[0].parts) + len(seg.parts)]
    # The copy: each part's stored composition offsets are its segment's (not restarted from 0).
    source = [m for media in mine for m in media.renditions if m.name == "source"]
    assert composition_offsets(b"".join(s.media for s in source)) == composition_offsets(
        whole["source"].media
    )
    assert any(composition_offsets(source[1].media))
    # The rung, every segment: the segment's pictures at the segment's times, the ones the decoder
    # still held at the segment's end included (its last part drains the decoder).
    at = 0
    for seg in bframe_segments:
        # the segment ends a frame after its last picture is presented (the next IDR's time, as ingest
        # cuts it; the clip's ``end`` is the last decode time's)
        end = max(t for t, _, _ in samples(seg.data, [])) + 3000
        whole = {m.name: m for m in transcode_segment(seg.data, LADDER, end, 1).renditions}
        rung = [m for media in got[at : at + len(seg.parts)] for m in media.renditions if m.name == "90p"]
        at += len(seg.parts)
        segment = samples(whole["90p"].init, [whole["90p"].media])
        assert samples(rung[0].init, [r.media for r in rung]) == segment, seg.seq
        assert decoded(rung[0].init, [r.media for r in rung]) == len(segment), seg.seq
    assert sum(media.tail_dropped for media in got) == 0 and state.encoding


def test_without_last_a_b_frame_sources_segment_tail_is_dropped_and_counted(
    bframe_segments: list[ClipSegment],
) -> None:
    state = StreamParts("cam1", LADDER)
    raw = [p for s in bframe_segments for p in s.raw_parts("cam1", "avc1.64000d", last=False)]
    got = [state.process(p) for p in raw]
    seg = bframe_segments[1]
    whole = {m.name: m for m in transcode_segment(seg.data, LADDER, seg.end, 1).renditions}
    mine = got[len(bframe_segments[0].parts) : len(bframe_segments[0].parts) + len(seg.parts)]
    rung = [m for media in mine for m in media.renditions if m.name == "90p"]
    parts = samples(rung[0].init, [r.media for r in rung])
    segment = samples(whole["90p"].init, [whole["90p"].media])
    assert parts == segment[: len(parts)] and 0 < len(segment) - len(parts) <= 2
    assert sum(media.tail_dropped for media in got) == (len(segment) - len(parts)) * (
        len(bframe_segments) - 1
    )


def test_nominal_rates() -> None:
    assert nominal_rate(Fraction(2997, 100)) == nominal_rate(Fraction(3003, 100)) == 30
    assert nominal_rate(25.2) == 25 and nominal_rate(14.9) == 15 and nominal_rate(0) == 30


def test_an_h265_camera_gets_its_copy_and_an_encoded_h264_source(tmp_path: Path) -> None:
    segs = cut(make_clip(tmp_path / "hevc.mp4", 2, "320x180", codec="libx265"))
    state = StreamParts("cam1", parse_ladder("source"))
    whole = {
        m.name: m for m in transcode_segment(segs[0].data, parse_ladder("source"), segs[0].end, 1).renditions
    }
    got = [state.process(p) for p in segs[0].raw_parts("cam1", "hvc1")]
    assert all(names(media) == ["source", "source-hevc", "audio"] for media in got)
    for name in ("source", "source-hevc"):
        parts = [m for media in got for m in media.renditions if m.name == name]
        assert parts[0].init == whole[name].init
        assert decoded(parts[0].init, [p.media for p in parts]) == 60
    assert got[0].renditions[0].codecs.startswith("avc1.")


def test_a_discontinuity_restarts_the_encoders_at_its_segment(segments: list[ClipSegment]) -> None:
    state = StreamParts("cam1", LADDER)
    parts = parts_of(segments)
    for part in parts[:10]:
        state.process(part)
    jumped = [dataclasses.replace(p, discontinuity=True) for p in parts[10:20]]  # every part of it says so
    got = [state.process(p) for p in jumped]
    assert all(media.rungs_skipped == 0 and names(media) == ["source", "90p", "audio"] for media in got)
    rung = [m for media in got for m in media.renditions if m.name == "90p"]
    keys = [k for _, _, k in samples(rung[0].init, [r.media for r in rung])]
    assert keys[0] and not any(keys[1:])
