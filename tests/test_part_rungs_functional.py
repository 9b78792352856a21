"""A rung's parts against the rung's segment, from a real camera, and what the segment's last part costs.

- ffmpeg pushes H.264 over RTSP into the ingest service (embedded), with B-frames (libx264's default
  preset) and without (``-tune zerolatency``). Ingest flags each segment's final part ``last``. Its
  raw parts go through the part worker's encoder (``StreamParts``) and its raw segments through the
  segment workers' (``transcode_segment``): per segment, the encoded rung's parts in order hold the
  same pictures as the rung's segment, at the same times (pts, dts, durations). Without ``last``
  the B-frame camera's rung parts lost the pictures the decoder still held at each segment's end.
- ``test_last_part_latency`` times the part encoder per part at the camera's pace (720p30 with
  B-frames, a 360p rung) and prints the median for a segment's last part (which drains the decoder)
  and for the other parts, and for the last part without ``last`` (the tail dropped instead).
"""

from __future__ import annotations

import dataclasses
import io
import statistics
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from camflow.bus.local import LocalBus
from tests.part_clips import TIMESCALE, cut, make_clip
from tests.test_parts_functional import X264, ingest_session
from transcode.ladder import parse_ladder
from transcode.part_encoder import StreamParts
from transcode.renditions import transcode_segment

pytestmark = pytest.mark.integration
LADDER = parse_ladder("source,120p:150k")

Picture = tuple[int, int, int, bool]  # pts, dts, duration (90 kHz), key


def pictures(init: bytes, media: list[bytes]) -> list[Picture]:
    with av.open(io.BytesIO(init + b"".join(media)), "r", format="mp4") as container:
        stream = container.streams.video[0]
        scale = (stream.time_base or Fraction(1, TIMESCALE)) * TIMESCALE
        return [
            (
                round(p.pts * scale),
                round((p.dts or 0) * scale),
                round((p.duration or 0) * scale),
                p.is_keyframe,
            )
            for p in container.demux(stream)
            if p.pts is not None
        ]


@pytest.mark.parametrize("encoder", ["bframes", "zerolatency"])
async def test_a_rungs_parts_hold_its_segments_pictures(encoder: str) -> None:
    bus = LocalBus()
    await bus.start()
    try:
        received = await ingest_session(bus, X264[encoder], 0.2, bus)
    finally:
        await bus.close()
    parts = [p for p, _ in received.parts]
    state = StreamParts("llcam", LADDER)
    made = [(p, state.process(p)) for p in parts]
    segments = {s.seq: s for s in received.segments}
    assert len(segments) >= 3
    for seq, segment in segments.items():
        mine = [(p, m) for p, m in made if p.seq == seq]
        assert [p.last for p, _ in mine] == [False] * (len(mine) - 1) + [True], seq
        rung = [r for _, m in mine for r in m.renditions if r.name == "120p"]
        assert len(rung) == len(mine), seq  # every part got its rung
        whole = next(
            r
            for r in transcode_segment(segment.data, LADDER, segment.start + segment.duration, 1).renditions
            if r.name == "120p"
        )
        expected = pictures(whole.init, [whole.media])
        got = pictures(rung[0].init, [r.media for r in rung])
        assert len(got) == len(expected), (encoder, seq, len(got), len(expected))
        assert [g[:3] for g in got] == [e[:3] for e in expected], (encoder, seq)
        # both start on an IDR; the parts' rung has more: one where an independent part starts
        # inside the segment (the camera's 1 s GOP), which the segment workers' encoder does not force
        assert got[0][3] and expected[0][3] and rung[0].init == whole.init
    assert sum(m.tail_dropped for _, m in made) == 0
    print(f"\n{encoder}: {len(segments)} segments, {len(parts)} parts: the rung's parts = its segments")


def test_last_part_latency(tmp_path: Path) -> None:
    """The part encoder's time per part at the camera's pace: a segment's last part (it drains the
    decoder and encodes the pictures it held) against the others; beside it, in turn with each part,
    an encoder fed the same parts without ``last`` (before ``last``: the held pictures were dropped)."""
    segs = cut(make_clip(tmp_path / "clip720b.mp4", 30, "1280x720", bframes=3))
    ladder = parse_ladder("source,360p")
    flushed, dropped = StreamParts("cam1", ladder), StreamParts("cam1", ladder)
    figures: dict[str, list[float]] = {}
    made: dict[str, list[int]] = {}  # the rung's pictures per part
    warm = len(segs[0].parts)
    parts = [p for seg in segs for p in seg.raw_parts("cam1", "avc1.64001f")]
    for i, part in enumerate(parts):
        began = time.perf_counter()
        order = [(flushed, part, ""), (dropped, dataclasses.replace(part, last=False), " (no last)")]
        for state, raw, label in order if i % 2 else order[::-1]:
            started = time.perf_counter()
            media = state.process(raw)
            took = time.perf_counter() - started
            assert media.rungs_skipped == 0
            if i >= warm:
                kind = ("last" if part.last else "part 0" if part.part == 0 else "other") + label
                figures.setdefault(kind, []).append(took)
                rung = next(r for r in media.renditions if r.name == "360p")
                made.setdefault(kind, []).append(len(pictures(rung.init, [rung.media])))
        time.sleep(max(0.0, part.duration / TIMESCALE - (time.perf_counter() - began)))
    print(
        "\npart encoder per part, 720p30 with B-frames -> source copy + 360p: median s, parts, rung pictures"
    )
    for kind, seconds in sorted(figures.items()):
        median, count = statistics.median(seconds), len(seconds)
        print(f"  {kind:18s} {median:.4f} {count:4d} {statistics.mean(made[kind]):.1f}")
    source = sum(len(pictures(seg.data, [])) for seg in segs[1:])
    assert sum(sum(made[k]) for k in ("last", "part 0", "other")) == source  # every picture, flushed
    assert sum(sum(made[k + " (no last)"]) for k in ("last", "part 0", "other")) < source
    assert statistics.median(figures["last"]) < 1.0
