"""``camflow.clip``: the MP4 a clip export writes, from fMP4 segments FFmpeg's HLS muxer cut (a
video rendition and an audio one, like the transcoder's), read back with PyAV."""

from __future__ import annotations

import asyncio
import io
import itertools
import subprocess
from pathlib import Path

import av
import pytest

from camflow.clip import AUDIO, ClipMuxer, ClipSegment, export_clip, planned
from camflow.codecs import parameter_set_nal_units
from camflow.keys import init_key, segment_key
from camflow.recordings import EpochRun, RecordedRendition, RecordedSegment
from camflow.store import FileStore
from tests.part_clips import make_clip

SEGMENT = 2.0


def cut(clip: Path, folder: Path, track: str) -> tuple[bytes, list[bytes]]:
    """init section and 2 s media segments of one track (``v`` or ``a``) of ``clip``."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-i", str(clip), "-map", f"0:{track}", "-c", "copy"),
            *("-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", str(SEGMENT)),
            *("-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", str(folder / "%03d.m4s")),
            str(folder / "index.m3u8"),
        ],
        check=True,
        timeout=120,
    )
    return (folder / "init.mp4").read_bytes(), [p.read_bytes() for p in sorted(folder.glob("*.m4s"))]


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, list[bytes]]]:
    folder = tmp_path_factory.mktemp("clip")
    wide = make_clip(folder / "wide.mp4", 6, "320x180", bframes=2)
    small = make_clip(folder / "small.mp4", 4, "160x90")
    return {
        "wide": cut(wide, folder / "wide-v", "v"),
        "wide-audio": cut(wide, folder / "wide-a", "a"),
        "small": cut(small, folder / "small-v", "v"),
    }


def packets(data: bytes) -> dict[str, list[tuple[float, float]]]:
    """(dts, pts) in seconds of each packet of the MP4, by stream type."""
    out: dict[str, list[tuple[float, float]]] = {"video": [], "audio": []}
    with av.open(io.BytesIO(data)) as container:
        for p in container.demux():
            if p.dts is not None and p.time_base is not None:
                out[p.stream.type].append((float(p.dts * p.time_base), float(p.pts * p.time_base)))
    return out


def mux(first: tuple[bytes, bytes | None], segments: list[ClipSegment]) -> tuple[bytes, ClipMuxer]:
    muxer = ClipMuxer(*first)
    out = [muxer.drain()]
    for segment in segments:
        muxer.add(segment)
        out.append(muxer.drain())
    muxer.close()
    out.append(muxer.drain())
    return b"".join(out), muxer


def test_joined_segments_keep_their_times_and_a_gap_closes_up(
    tracks: dict[str, tuple[bytes, list[bytes]]],
) -> None:
    init, media = tracks["wide"]
    ainit, amedia = tracks["wide-audio"]
    seg = [ClipSegment(init + m, ainit + a, joined=True) for m, a in zip(media, amedia, strict=False)]
    # 0 and 1 in a row, then 2 missing (a gap): segment 2's successor closes up behind segment 1
    data, muxer = mux(
        (seg[0].video, seg[0].audio), [seg[0], seg[1], ClipSegment(seg[2].video, seg[2].audio, False)]
    )
    got = packets(data)
    video = [dts for dts, _ in got["video"]]
    assert all(b > a for a, b in itertools.pairwise(video))
    assert video[0] == pytest.approx(0.0, abs=0.07)  # the clip starts at zero, B-frame delay aside
    assert muxer.stats.segments == 3
    assert muxer.stats.media_seconds == pytest.approx(3 * SEGMENT, abs=0.05)
    audio = [dts for dts, _ in got["audio"]]
    assert all(b > a for a, b in itertools.pairwise(audio))
    assert audio[-1] == pytest.approx(3 * SEGMENT, abs=0.1)  # audio closed up with the video


def test_until_ends_the_clip_inside_a_segment(tracks: dict[str, tuple[bytes, list[bytes]]]) -> None:
    init, media = tracks["wide"]
    ainit, amedia = tracks["wide-audio"]
    data, _ = mux(
        (init + media[0], ainit + amedia[0]),
        [ClipSegment(init + media[0], ainit + amedia[0], True, until=1.0)],
    )
    got = packets(data)
    zero = min(pts for _, pts in got["video"])  # the muxer may start the clip at a B-frame delay
    shown = sorted(pts - zero for _, pts in got["video"])
    assert shown[-1] < 1.0 + 0.1  # a B-frame's reference may reach a picture past the end
    assert sum(pts < 1.0 for pts in shown) == 30  # every picture before the end, at 30 fps
    assert max(pts - zero for _, pts in got["audio"]) < 1.0


def test_a_new_epoch_at_another_resolution_gets_its_parameter_sets_in_front(
    tracks: dict[str, tuple[bytes, list[bytes]]],
) -> None:
    init, media = tracks["wide"]
    sinit, smedia = tracks["small"]
    data, _ = mux(
        (init + media[0], None),
        [ClipSegment(init + media[0], None, True), ClipSegment(sinit + smedia[0], None, False)],
    )
    sizes = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            sizes.append((frame.width, frame.height))
    assert sizes[0] == (320, 180) and sizes[-1] == (160, 90)
    assert len(sizes) == 120  # every picture of both segments decoded
    with av.open(io.BytesIO(sinit)) as template:
        params = parameter_set_nal_units(bytes(template.streams.video[0].codec_context.extradata))[0]
    assert params and params[0] in data  # the second epoch's SPS, in band


def test_planned_marks_what_follows_a_gap_or_a_new_epoch() -> None:
    def run(epoch: str, *seqs: int) -> EpochRun:
        return EpochRun(
            epoch, {}, tuple(RecordedSegment(s, 100.0 + 2 * s, 2.0, ("source", AUDIO)) for s in seqs)
        )

    plan = [(e, s.seq, joined) for e, s, joined in planned([run("a", 1, 2, 4), run("b", 0, 1)], "source")]
    assert plan == [("a", 1, False), ("a", 2, True), ("a", 4, False), ("b", 0, False), ("b", 1, True)]


def test_export_from_a_store_leaves_out_a_missing_segment(
    tmp_path: Path, tracks: dict[str, tuple[bytes, list[bytes]]]
) -> None:
    init, media = tracks["wide"]
    ainit, amedia = tracks["wide-audio"]

    async def scenario() -> tuple[bytes, int, int]:
        store = FileStore(tmp_path)
        await store.start()
        for name, head, body in (("source", init, media), (AUDIO, ainit, amedia)):
            await store.put(init_key("cam1", "e1", name), head)
            for seq, data in enumerate(body):
                if not (name == "source" and seq == 1):  # retention took segment 1's video
                    await store.put(segment_key("cam1", "e1", name, seq), data)
        rendition = RecordedRendition("source", 320, 180, "avc1.640014", 500_000)
        segments = tuple(
            RecordedSegment(seq, 1000.0 + SEGMENT * seq, SEGMENT, ("source", AUDIO)) for seq in range(3)
        )
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        stats = await export_clip(
            store, "cam1", [EpochRun("e1", {"source": rendition}, segments)], "source", write
        )
        return b"".join(written), stats.missing, stats.segments

    data, missing, segments = asyncio.run(scenario())
    assert (missing, segments) == (1, 2)
    got = packets(data)
    video = [dts for dts, _ in got["video"]]
    assert all(b > a for a, b in itertools.pairwise(video))
    assert video[-1] < 2 * SEGMENT  # segment 2 closed up behind segment 0
