"""The transcoder on real H.264 and H.265 clips, checked with PyAV on its outputs: every
rendition of a segment starts with an IDR at the same presentation time and lasts as long."""

from __future__ import annotations

import io

import av
import pytest

from camflow.mp4 import iter_boxes, split_init
from tests.transcode_clips import RawClipSegment, cut, make_clip
from transcode.encoder import RenditionMedia
from transcode.ladder import SOURCE, Rung, parse_ladder
from transcode.renditions import TranscodedSegment, plan_ladder, transcode_segment

LADDER = parse_ladder("source,240p:400k,180p:200k:300k:baseline")
H264_IDR, H265_IDR = {5}, {19, 20}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[RawClipSegment]]:
    tmp = tmp_path_factory.mktemp("clips")
    return {
        codec: cut(make_clip(tmp / f"{codec}.mp4", 4, "640x360", codec)) for codec in ("libx264", "libx265")
    }


@pytest.fixture(scope="module")
def outputs(clips: dict[str, list[RawClipSegment]]) -> dict[str, list[TranscodedSegment]]:
    return {codec: [transcode_segment(s.data, LADDER, s.end) for s in segs] for codec, segs in clips.items()}


def nal_types(packet: bytes, hevc: bool) -> set[int]:
    """The NAL unit types of a length-prefixed (4-byte) sample."""
    types, pos = set(), 0
    while pos + 5 <= len(packet):
        size = int.from_bytes(packet[pos : pos + 4], "big")
        header = packet[pos + 4]
        types.add((header >> 1) & 0x3F if hevc else header & 0x1F)
        pos += 4 + size
    return types


def inspect(media: RenditionMedia) -> tuple[int, int, int, bool, set[int], tuple[int, int]]:
    """(first pts, total duration, packets, first frame is a key frame, first NAL type, size) by PyAV."""
    with av.open(io.BytesIO(media.init + media.media), "r") as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.dts is not None]
        hevc = stream.codec_context.name == "hevc"
        first = packets[0]
        assert first.pts is not None and first.is_keyframe
        nal = nal_types(bytes(first), hevc)
        frame = next(iter(stream.codec_context.decode(first)), None) or stream.codec_context.decode(None)[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        return first.pts, sum(int(p.duration or 0) for p in packets), len(packets), frame.key_frame, nal, size


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_every_rendition_starts_with_an_idr_at_the_same_time_and_lasts_as_long(
    codec: str, clips: dict[str, list[RawClipSegment]], outputs: dict[str, list[TranscodedSegment]]
) -> None:
    for raw, out in zip(clips[codec], outputs[codec], strict=True):
        seen = {}
        for media in out.renditions:
            pts, duration, count, key, nal, size = inspect(media)
            hevc = media.codecs.startswith("hvc1")
            assert nal & (H265_IDR if hevc else H264_IDR), (media.name, nal)
            assert key, media.name
            assert size == (media.width, media.height)
            seen[media.name] = (pts, duration, count)
        assert set(seen.values()) == {(raw.start, raw.duration, 60)}, seen


def test_h264_source_is_copied_and_rungs_scaled(outputs: dict[str, list[TranscodedSegment]]) -> None:
    for out in outputs["libx264"]:
        got = [(m.name, m.width, m.height, m.codecs[:7]) for m in out.renditions]
        assert got == [
            ("source", 640, 360, "avc1.64"),
            ("240p", 426, 240, "avc1.4d"),
            ("180p", 320, 180, "avc1.42"),
        ]


def test_h265_source_gets_an_h264_ladder_and_keeps_its_original(
    outputs: dict[str, list[TranscodedSegment]], clips: dict[str, list[RawClipSegment]]
) -> None:
    for raw, out in zip(clips["libx265"], outputs["libx265"], strict=True):
        names = [(m.name, m.width, m.height) for m in out.renditions]
        assert names == [
            ("source", 640, 360),
            ("240p", 426, 240),
            ("180p", 320, 180),
            ("source-hevc", 640, 360),
        ]
        h264 = [m for m in out.renditions if m.name != "source-hevc"]
        assert all(m.codecs.startswith("avc1.") for m in h264)
        hevc = out.renditions[-1]
        assert hevc.codecs.startswith("hvc1.1.6.L")  # Main profile, from the hvcC
        assert b"hvc1" in hevc.init and b"hev1" not in hevc.init  # the sample entry Apple's HLS needs
        assert _fragments(hevc.media) == _fragments(_media_of(raw.data))  # the original samples, untouched


def _fragments(media: bytes) -> bytes:
    """The moof and mdat boxes (not the trailing mfra, whose offsets count the init section before it)."""
    return b"".join(media[o : o + n] for kind, o, n in iter_boxes(media) if kind in (b"moof", b"mdat"))


def _media_of(data: bytes) -> bytes:
    return split_init(data)[1]


def test_thumbnail_is_a_jpeg_of_the_first_picture(outputs: dict[str, list[TranscodedSegment]]) -> None:
    for out in outputs["libx264"] + outputs["libx265"]:
        assert out.thumbnail[:3] == b"\xff\xd8\xff"
        with av.open(io.BytesIO(out.thumbnail), "r") as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (320, 180)


def test_copy_only_ladder_still_makes_a_thumbnail(clips: dict[str, list[RawClipSegment]]) -> None:
    raw = clips["libx264"][0]
    out = transcode_segment(raw.data, (SOURCE,), raw.end)
    assert [m.name for m in out.renditions] == ["source"]
    assert out.thumbnail[:3] == b"\xff\xd8\xff"


def test_single_threaded_encode_gives_the_same_timeline(clips: dict[str, list[RawClipSegment]]) -> None:
    raw = clips["libx264"][1]
    out = transcode_segment(raw.data, LADDER, raw.end, 1)
    assert {inspect(m)[:3] for m in out.renditions} == {(raw.start, raw.duration, 60)}


PLANS = {
    "browser H.264: copy, lower rungs": (
        "avc1.640028",
        "yuv420p",
        720,
        "source,720p,360p",
        ["source"],
        ["360p"],
    ),
    "without source a rung at the source height is encoded": (
        "avc1.640028",
        "yuv420p",
        720,
        "720p,360p",
        [],
        ["720p", "360p"],
    ),
    "rungs above the source are skipped": (
        "avc1.4d401f",
        "yuv420p",
        480,
        "source,1080p,720p,360p",
        ["source"],
        ["360p"],
    ),
    "High 10 is re-encoded": ("avc1.6e0028", "yuv420p10le", 720, "source,360p", [], ["source", "360p"]),
    "4:2:2 is re-encoded": ("avc1.640028", "yuv422p", 720, "source", [], ["source"]),
    "H.265: H.264 source plus the original": (
        "hvc1.1.6.L93.B0",
        "yuv420p",
        720,
        "source,360p",
        ["source-hevc"],
        ["source", "360p"],
    ),
    "nothing fits: the lowest rung at the source height": (
        "avc1.640028",
        "yuv420p",
        240,
        "720p,480p",
        [],
        ["480p"],
    ),
}


@pytest.mark.parametrize(
    ("codecs", "pix", "height", "ladder", "copies", "encodes"), PLANS.values(), ids=PLANS.keys()
)
def test_plan(codecs: str, pix: str, height: int, ladder: str, copies: list[str], encodes: list[str]) -> None:
    plan = plan_ladder(parse_ladder(ladder), codecs, pix, height)
    assert list(plan.copies) == copies
    assert [name for name, _, _ in plan.encodes] == encodes
    assert all(h <= height for _, _, h in plan.encodes)


def test_nothing_fits_encodes_at_the_source_height() -> None:
    plan = plan_ladder((Rung("720p", height=720),), "avc1.640028", "yuv420p", 241)
    assert [(n, h) for n, _, h in plan.encodes] == [("720p", 240)]
