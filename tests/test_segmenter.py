from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from ingest.media.segmenter import MAX_SEGMENT_SECONDS, TIMELINE_ORIGIN, TIMESCALE, CutSegment, Segmenter
from ingest.media.units import AccessUnit

FRAME = TIMESCALE // 30  # 3000 ticks at 30 fps
CAMERA_BASE = 3_735_928_559  # a camera's unwrapped RTP timestamp of its first frame


def unit(frame: int, idr: bool, base: int = CAMERA_BASE) -> AccessUnit:
    return AccessUnit(pts=base + frame * FRAME, nalus=(bytes([frame % 256]) * 4,), is_idr=idr)


def stream(frames: int, idr_every: int, first: int = 0) -> list[AccessUnit]:
    """Frames without B-frames (decode order == presentation order), an IDR every ``idr_every``."""
    return [unit(i, (i - first) % idr_every == 0 and i >= first) for i in range(frames)]


def b_frame_stream(gops: int, gop: int = 60) -> list[AccessUnit]:
    """Decode order I P B B P B B ...: per GOP, I=0 then P=n+3, B=n+1, B=n+2 (in frames)."""
    out: list[AccessUnit] = []
    for g in range(gops):
        base = g * gop
        order = [0]
        for n in range(0, gop - 3, 3):
            order += [n + 3, n + 1, n + 2]
        order += [f for f in range(gop) if f not in order]
        assert sorted(order) == list(range(gop))
        out += [unit(base + f, f == 0) for f in order]
    return out


def run(
    units: Iterable[AccessUnit], segmenter: Segmenter | None = None
) -> tuple[Segmenter, list[CutSegment]]:
    seg = segmenter or Segmenter(target=2.0)
    cut = [s for u in units for s in seg.push(u)]
    return seg, cut


def test_cuts_at_the_first_idr_after_the_target() -> None:
    seg, cut = run(stream(181, idr_every=60))  # IDR at 0, 60, 120, 180: every 2 s exactly
    assert [(s.seq, s.start, s.duration, len(s.samples)) for s in cut] == [
        (0, TIMELINE_ORIGIN, 2 * TIMESCALE, 60),
        (1, TIMELINE_ORIGIN + 2 * TIMESCALE, 2 * TIMESCALE, 60),
        (2, TIMELINE_ORIGIN + 4 * TIMESCALE, 2 * TIMESCALE, 60),
    ]
    for s in cut:
        assert s.samples[0].is_idr and not any(x.is_idr for x in s.samples[1:])
        assert sum(x.duration for x in s.samples) == s.duration
        assert [x.pts for x in s.samples] == [x.dts for x in s.samples]  # no B-frames: no reorder delay
    assert seg.next_seq == 3
    assert seg.counters.forced_cuts == seg.counters.dropped_before_idr == 0


def test_idr_before_the_target_does_not_cut() -> None:
    _, cut = run(stream(200, idr_every=45))  # IDR every 1.5 s: the one at 3 s is the first past 2 s
    assert [s.duration for s in cut] == [3 * TIMESCALE, 3 * TIMESCALE]
    assert [s.start for s in cut] == [TIMELINE_ORIGIN, TIMELINE_ORIGIN + 3 * TIMESCALE]


def test_gop_of_one_second_with_target_two_cuts_every_two_seconds() -> None:
    _, cut = run(stream(30 * 10 + 1, idr_every=30))
    assert [s.duration for s in cut] == [2 * TIMESCALE] * 5
    assert [sum(x.is_idr for x in s.samples) for s in cut] == [2] * 5  # the IDR at 1 s stays inside


def test_units_before_the_first_idr_are_dropped_and_counted() -> None:
    seg, cut = run(stream(17 + 121, idr_every=60, first=17))
    assert seg.counters.dropped_before_idr == 17
    assert cut[0].start == TIMELINE_ORIGIN  # the timeline starts at the first IDR, not the first unit
    assert cut[0].samples[0].nalus == unit(17, True).nalus
    assert [s.duration for s in cut] == [2 * TIMESCALE] * 2


def test_b_frames_decode_times() -> None:
    seg, cut = run(b_frame_stream(gops=4))
    cut += seg.flush()
    assert [s.seq for s in cut] == [0, 1, 2, 3]
    samples = [x for s in cut for x in s.samples]
    assert all(x.dts <= x.pts for x in samples)
    assert all(a.dts < b.dts for a, b in itertools.pairwise(samples))
    assert min(x.dts for x in samples) >= 0
    assert cut[0].samples[0].dts == cut[0].start - FRAME  # reorder delay: one frame
    assert samples[1].pts - samples[1].dts == 3 * FRAME  # the P frame (shown third) decodes second
    for a, b in itertools.pairwise(cut):
        assert a.samples[-1].dts + a.samples[-1].duration == b.samples[0].dts
        assert a.start + a.duration == b.start
    for s in cut:
        assert s.samples[0].is_idr and s.samples[0].pts == s.start == min(x.pts for x in s.samples)
        assert sum(x.duration for x in s.samples) == s.duration
        assert sorted(x.pts for x in s.samples) == [s.start + i * FRAME for i in range(60)]
    assert seg.counters.dts_nudged == seg.counters.reorder_delay_increases == 0


def test_reorder_delay_growing_mid_stream_keeps_decode_times_increasing() -> None:
    plain = stream(60, idr_every=60)
    with_b = [AccessUnit(u.pts + 60 * FRAME, u.nalus, u.is_idr) for u in b_frame_stream(gops=2)]
    seg, cut = run(plain + with_b)
    cut += seg.flush()
    samples = [x for s in cut for x in s.samples]
    assert seg.counters.reorder_delay_increases == 1
    assert all(a.dts < b.dts for a, b in itertools.pairwise(samples))
    assert all(x.dts <= x.pts for x in samples)


def test_flush_returns_the_partial_segment() -> None:
    seg, cut = run(stream(70, idr_every=60))
    assert len(cut) == 1
    rest = seg.flush()
    assert [(s.seq, s.start, s.duration, len(s.samples)) for s in rest] == [
        (1, TIMELINE_ORIGIN + 2 * TIMESCALE, 10 * FRAME, 10)
    ]
    assert sum(x.duration for x in rest[0].samples) == rest[0].duration
    assert seg.flush() == []


def test_flush_of_a_single_unit_and_of_nothing() -> None:
    seg, _ = run([unit(0, True)])
    assert [(s.duration, len(s.samples)) for s in seg.flush()] == [(FRAME, 1)]
    assert Segmenter(target=2.0).flush() == []
    only_p, _ = run(stream(5, idr_every=60, first=10))
    assert only_p.flush() == [] and only_p.counters.dropped_before_idr == 5


def test_other_target() -> None:
    _, cut = run(stream(301, idr_every=30), Segmenter(target=4.0))
    assert [s.duration for s in cut] == [4 * TIMESCALE] * 2


@pytest.mark.parametrize("target", [0, -1.0])
def test_target_must_be_positive(target: float) -> None:
    with pytest.raises(ValueError, match="expected > 0"):
        Segmenter(target=target)


def test_camera_without_idr_for_longer_than_max_segment_is_cut_anyway() -> None:
    max_frames = int(MAX_SEGMENT_SECONDS * 30)
    frames = 2 * max_frames + 60  # an IDR at 0, then 62 s of P frames, then an IDR
    units = [unit(i, i in (0, frames)) for i in range(frames + 1)]
    seg, cut = run(units)
    assert seg.counters.forced_cuts == 2
    assert [(s.start, s.duration, len(s.samples)) for s in cut] == [
        (TIMELINE_ORIGIN, max_frames * FRAME, max_frames),
        (TIMELINE_ORIGIN + max_frames * FRAME, max_frames * FRAME, max_frames),
        (TIMELINE_ORIGIN + 2 * max_frames * FRAME, 60 * FRAME, 60),
    ]
    # Only the first starts on an IDR; ingest's muxer refuses the others (no SPS/PPS) and counts them.
    assert [s.samples[0].is_idr for s in cut] == [True, False, False]
    samples = [x for s in cut for x in s.samples]
    assert all(a.dts < b.dts for a, b in itertools.pairwise(samples))
