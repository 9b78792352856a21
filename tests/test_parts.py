"""Part cutting (low-latency HLS) in the segmenter: a segment's parts hold exactly its samples."""

from __future__ import annotations

import itertools

import pytest

from ingest.media.cuts import CutPart, CutSegment
from ingest.media.parts import check_part_target, plan
from ingest.media.segmenter import TIMESCALE, Segmenter
from ingest.media.units import AccessUnit
from tests.test_segmenter import FRAME, b_frame_stream, stream, unit

Cuts = tuple[list[CutSegment], dict[int, list[CutPart]], list[str]]


def cut(units: list[AccessUnit], part: float = 0.2) -> Cuts:
    """Segments, their parts, and the order things came out (``p<seq>.<part>`` / ``s<seq>``)."""
    seg = Segmenter(target=2.0, part_target=part)
    segments: list[CutSegment] = []
    parts: dict[int, list[CutPart]] = {}
    order: list[str] = []
    for u in units:
        done = seg.push(u)
        for p in seg.take_parts():
            parts.setdefault(p.seq, []).append(p)
            order.append(f"p{p.seq}.{p.part}")
        segments += done
        order += [f"s{s.seq}" for s in done]
    done = seg.flush()
    for p in seg.take_parts():
        parts.setdefault(p.seq, []).append(p)
        order.append(f"p{p.seq}.{p.part}")
    segments += done
    order += [f"s{s.seq}" for s in done]
    return segments, parts, order


def check(segments: list[CutSegment], parts: dict[int, list[CutPart]], target: int) -> None:
    for s in segments:
        ps = parts[s.seq]
        assert [p.part for p in ps] == list(range(len(ps)))
        assert [x for p in ps for x in p.samples] == list(s.samples)  # the key invariant
        assert ps[0].start == s.start and ps[0].independent
        for a, b in itertools.pairwise(ps):
            assert a.start + a.duration == b.start
        assert ps[-1].start + ps[-1].duration == s.start + s.duration
        assert [p.last for p in ps] == [False] * (len(ps) - 1) + [True]  # the part worker flushes there
        for p in ps:
            assert p.duration == sum(x.duration for x in p.samples) or p is ps[-1]
            assert p.independent == p.samples[0].is_idr
            assert p.duration <= target
            if p is not ps[-1] and not p.independent:
                assert p.duration > target - FRAME


def test_parts_without_b_frames_tile_each_segment_and_come_before_it() -> None:
    segments, parts, order = cut(stream(301, idr_every=60))
    check(segments, parts, round(0.2 * TIMESCALE))
    assert [p.duration for p in parts[1]] == [6 * FRAME] * 10  # 200 ms at 30 fps
    assert order.index("p0.9") < order.index("s0") < order.index("p1.0")
    assert all(not p.independent for ps in parts.values() for p in ps[1:])


def test_parts_with_b_frames_hold_the_segments_samples() -> None:
    segments, parts, _ = cut(b_frame_stream(5))
    assert any(x.pts != x.dts for x in segments[1].samples)
    check(segments, parts, round(0.2 * TIMESCALE))
    assert len(parts[1]) == 10


@pytest.mark.parametrize("target", [0.1, 0.25, 0.5, 1.0])
def test_part_targets(target: float) -> None:
    segments, parts, _ = cut(b_frame_stream(3), part=target)
    check(segments, parts, round(target * TIMESCALE))


def test_a_part_ends_when_the_next_unit_arrives_without_b_frames() -> None:
    seg = Segmenter(target=2.0, part_target=0.2)
    for i in range(61):
        seg.push(unit(i, i % 60 == 0))
    seg.take_parts()  # first segment: waits for a unit more
    for i in range(61, 66):
        seg.push(unit(i, False))
    assert seg.take_parts() == []
    seg.push(unit(66, False))  # 6 frames since the segment's IDR at 60: part 0 is complete
    (part,) = seg.take_parts()
    assert (part.seq, part.part, len(part.samples), part.duration) == (1, 0, 6, 6 * FRAME)


def test_the_last_part_leaves_with_its_segment_and_at_the_end_of_the_session() -> None:
    seg = Segmenter(target=2.0, part_target=0.2)
    for i in range(120):
        cut_segment = bool(seg.push(unit(i, i % 60 == 0)))
        assert [p.last for p in seg.take_parts() if p.last] == ([True] if cut_segment else [])
    assert seg.push(unit(120, True))  # the next segment's IDR: segment 1 and its last part
    *_, last = seg.take_parts()
    assert (last.seq, last.part, last.last) == (1, 9, True)
    for i in range(121, 130):
        seg.push(unit(i, False))
    assert not any(p.last for p in seg.take_parts())
    assert seg.flush()  # the session ends: the partial segment's final part is its last
    *_, last = seg.take_parts()
    assert (last.seq, last.last) == (2, True)


def test_a_key_picture_inside_a_segment_starts_an_independent_part() -> None:
    units = [unit(i, i in (0, 6, 60)) for i in range(121)]  # an IDR at frame 6 does not cut (< 2 s)
    _, parts, _ = cut(units)
    assert [p.independent for p in parts[0][:3]] == [True, True, False]


def test_check_part_target() -> None:
    assert check_part_target(0.2) == 0.2
    for bad in (0.05, 1.5, 0.0):
        with pytest.raises(ValueError, match=r"expected 0.1 to 1.0 seconds"):
            check_part_target(bad)


def test_plan_waits_for_the_next_frame_unless_final() -> None:
    assert plan([0, 10, 20], 0, 30, 10, final=False) == []
    assert plan([0, 10, 20, 30], 0, 30, 10, final=False) == [(0, 3)]
    assert plan([0, 10, 20], 0, 30, 10, final=True) == [(0, 2)]
    assert plan([0, 50, 60], 0, 30, 10, final=False) == [(0, 1)]  # one frame longer than the target


def test_part_flags() -> None:
    from camflow.cli.settings import part_target
    from tests.defaults import parsed

    assert part_target(parsed("ingest", "--kafka", "127.0.0.1:9")) == 0.2
    assert part_target(parsed("run", "--part-duration", "0.5")) == 0.5
    assert part_target(parsed("ingest", "--kafka", "127.0.0.1:9", "--no-low-latency")) is None
    for bad in ("1.5", "0.05", "fast"):
        with pytest.raises(SystemExit):
            parsed("run", "--part-duration", bad)
