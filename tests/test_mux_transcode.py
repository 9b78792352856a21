from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import av.bitstream
import pytest

from camflow.mp4 import base_media_decode_times, split_init
from ingest.codecs.h264 import NAL_IDR, nal_type, split_annexb
from ingest.media.mux import SegmentMuxer
from ingest.media.segmenter import TIMESCALE, CutSegment, Segmenter
from ingest.media.units import AccessUnit
from transcode.errors import BadSegment
from transcode.ladder import SOURCE, Rung
from transcode.renditions import RenditionMedia, transcode_segment

FRAME = TIMESCALE // 30
TOOL_TIMEOUT = 120
CAMERA_BASE = 1_234_567  # RTP timeline of the camera's first frame
LADDER = (SOURCE, Rung("180p", height=180, bitrate=300_000))


@dataclass(frozen=True)
class Raw:
    cut: CutSegment
    data: bytes


def make_clip(path: Path) -> None:
    """6 s of 640x360 at 30 fps, libx264 defaults (B-frames) with an IDR every 2 s."""
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "6"),
            *("-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "60", str(path)),
        ],
        check=True,
        timeout=TOOL_TIMEOUT,
    )


def access_units(path: Path) -> list[AccessUnit]:
    """The clip's frames as a depacketizer hands them over: Annex B NAL units, 90 kHz pts, decode order."""
    units: list[AccessUnit] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
        for packet in [*container.demux(stream), None]:
            for out in annexb.filter(packet):
                assert out.pts is not None and out.time_base is not None
                nalus = tuple(split_annexb(bytes(out)))
                pts = CAMERA_BASE + round(out.pts * out.time_base * TIMESCALE)
                units.append(AccessUnit(pts, nalus, any(nal_type(n) == NAL_IDR for n in nalus)))
    return units


PROBE_ARGS = (
    "ffprobe",
    "-v",
    "error",
    "-select_streams",
    "v:0",
    "-show_entries",
    "packet=pts,dts,flags",
    "-of",
    "json",
)


def probe(path: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        [*PROBE_ARGS, str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
    )
    packets: list[dict[str, str]] = json.loads(out.stdout)["packets"]
    return packets


def packet_durations(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data), "r") as container:
        return [
            int(p.duration or 0) for p in container.demux(container.streams.video[0]) if p.dts is not None
        ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mux")


@pytest.fixture(scope="module")
def raw_segments(workdir: Path) -> list[Raw]:
    clip = workdir / "clip.mp4"
    make_clip(clip)
    segmenter = Segmenter(target=2.0)
    cuts = [s for u in access_units(clip) for s in segmenter.push(u)] + segmenter.flush()
    muxer = SegmentMuxer()
    try:
        return [Raw(cut, muxer.mux(cut)) for cut in cuts]
    finally:
        muxer.close()


@pytest.fixture(scope="module")
def renditions(raw_segments: list[Raw]) -> list[list[RenditionMedia]]:
    return [
        list(transcode_segment(r.data, LADDER, r.cut.start + r.cut.duration).renditions) for r in raw_segments
    ]


def test_clip_is_cut_into_three_two_second_segments(raw_segments: list[Raw]) -> None:
    assert [(r.cut.seq, r.cut.duration, len(r.cut.samples)) for r in raw_segments] == [
        (0, 2 * TIMESCALE, 60),
        (1, 2 * TIMESCALE, 60),
        (2, 2 * TIMESCALE, 60),
    ]
    assert any(s.pts != s.dts for s in raw_segments[0].cut.samples), "the clip should have B-frames"


def test_raw_segments_probe_and_start_on_a_keyframe(raw_segments: list[Raw], workdir: Path) -> None:
    for raw in raw_segments:
        path = workdir / f"raw-{raw.cut.seq}.mp4"
        path.write_bytes(raw.data)
        packets = probe(path)
        assert len(packets) == 60
        assert packets[0]["flags"].startswith("K")
        assert int(packets[0]["pts"]) == raw.cut.start
        assert int(packets[0]["dts"]) == raw.cut.samples[0].dts
        assert min(int(p["pts"]) for p in packets) == raw.cut.start


def test_raw_segments_open_in_pyav_on_the_segment_timeline(raw_segments: list[Raw]) -> None:
    for raw in raw_segments:
        with av.open(io.BytesIO(raw.data), "r") as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (640, 360)
            packets = [p for p in container.demux(stream) if p.dts is not None]
        assert packets[0].is_keyframe and packets[0].pts == raw.cut.start
        assert [p.dts for p in packets] == [s.dts for s in raw.cut.samples]
        assert base_media_decode_times(split_init(raw.data)[1]) == [raw.cut.samples[0].dts]
        assert sum(packet_durations(raw.data)) == raw.cut.duration


def test_muxer_reads_the_parameter_sets(raw_segments: list[Raw]) -> None:
    muxer = SegmentMuxer()
    try:
        muxer.mux(raw_segments[0].cut)
        params = muxer.params
        assert params is not None and (params.width, params.height) == (640, 360)
        assert params.codecs.startswith("avc1.64")  # High profile: libx264's default
    finally:
        muxer.close()


def test_muxer_refuses_a_segment_without_parameter_sets(raw_segments: list[Raw]) -> None:
    cut = raw_segments[0].cut
    no_sps = CutSegment(cut.seq, cut.start, cut.duration, cut.samples[1:])
    muxer = SegmentMuxer()
    with pytest.raises(ValueError, match="without SPS/PPS"):
        muxer.mux(no_sps)
    muxer.close()


def test_ladder_renditions(renditions: list[list[RenditionMedia]]) -> None:
    for source, low in renditions:
        assert (source.name, source.width, source.height) == ("source", 640, 360)
        assert source.codecs.startswith("avc1.64") and len(source.codecs) == len("avc1.64001e")
        assert (low.name, low.width, low.height) == ("180p", 320, 180) and low.codecs.startswith("avc1.")


def test_renditions_start_at_the_segment_start(
    raw_segments: list[Raw], renditions: list[list[RenditionMedia]], workdir: Path
) -> None:
    for raw, media in zip(raw_segments, renditions, strict=True):
        for rendition in media:
            path = workdir / f"{rendition.name}-{raw.cut.seq}.mp4"
            path.write_bytes(rendition.init + rendition.media)
            packets = probe(path)
            assert packets[0]["flags"].startswith("K"), rendition.name
            assert int(packets[0]["pts"]) == raw.cut.start, rendition.name
            assert min(int(p["pts"]) for p in packets) == raw.cut.start, rendition.name
            assert len(packets) == len(raw.cut.samples), rendition.name


def test_rendition_tfdt_lines_up_with_the_segment_timeline(
    raw_segments: list[Raw], renditions: list[list[RenditionMedia]]
) -> None:
    for raw, (source, low) in zip(raw_segments, renditions, strict=True):
        # The source copy keeps the raw decode times; the re-encode has no B-frames, so dts == pts.
        assert base_media_decode_times(source.media) == [raw.cut.samples[0].dts]
        assert base_media_decode_times(low.media) == [raw.cut.start]


def test_rendition_durations_match_the_segment(
    raw_segments: list[Raw], renditions: list[list[RenditionMedia]]
) -> None:
    for raw, media in zip(raw_segments, renditions, strict=True):
        for rendition in media:
            total = sum(packet_durations(rendition.init + rendition.media))
            assert abs(total - raw.cut.duration) <= FRAME, (rendition.name, total)


def test_rungs_above_the_source_height_are_skipped(raw_segments: list[Raw]) -> None:
    raw = raw_segments[0]
    ladder = (SOURCE, Rung("720p", height=720, bitrate=2_500_000), Rung("360p", height=360, bitrate=800_000))
    media = transcode_segment(raw.data, ladder, raw.cut.start + raw.cut.duration).renditions
    assert [m.name for m in media] == ["source"]  # 720p is above the source, 360p is the source


def test_lower_rung_is_scaled(raw_segments: list[Raw], workdir: Path) -> None:
    raw = raw_segments[1]
    (low,) = transcode_segment(
        raw.data, (Rung("180p", height=180, bitrate=200_000),), raw.cut.start + raw.cut.duration
    ).renditions
    assert (low.name, low.width, low.height) == ("180p", 320, 180)
    with av.open(io.BytesIO(low.init + low.media), "r") as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (320, 180)


CORRUPT = {
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x00\x00\x00\x18ftypisom" + b"\xde\xad\xbe\xef" * 500,
    "init section only": lambda data: split_init(data)[0],
    "moov cut short": lambda data: data[:400],
    "picture data zeroed": lambda data: data[:1500] + bytes(len(data) - 1500),
    "not MP4 at all": lambda data: b"hello world" * 100,
}


@pytest.mark.parametrize("corrupt", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_input_is_a_bad_segment(raw_segments: list[Raw], corrupt: object) -> None:
    raw = raw_segments[0]
    with pytest.raises(BadSegment):
        transcode_segment(corrupt(raw.data), LADDER, raw.cut.start + raw.cut.duration)  # type: ignore[operator]
