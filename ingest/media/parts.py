"""Where a segment's parts (low-latency HLS) are cut, and the parts themselves. Pure logic, no I/O.

The segmenter fixes each unit's decode time as soon as it can (``Segmenter`` explains when) and asks
here which runs of units, in decode order, are complete parts. A part is a run whose decode times span
at most the part target: it is cut when its next unit's frame would pass the target, so every part but
a segment's last lasts more than the target minus a frame (frame granularity). A part's samples are the
segment's samples (same decode times, durations from the next unit's decode time), so a segment's
parts in order hold exactly what the segment holds. Part 0 starts on the segment's IDR; any part whose
first unit is a key picture is independent.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.media.cuts import CutPart, Sample
from ingest.media.units import AccessUnit

MIN_PART_SECONDS = 0.1
MAX_PART_SECONDS = 1.0


def check_part_target(seconds: float) -> float:
    """``--part-duration``: seconds between 0.1 and 1.0; a ValueError names anything else."""
    if not MIN_PART_SECONDS <= seconds <= MAX_PART_SECONDS:
        raise ValueError(
            f"part duration {seconds} s: expected {MIN_PART_SECONDS} to {MAX_PART_SECONDS} seconds"
        )
    return seconds


def plan(bounds: Sequence[int], done: int, target: int, frame: int, *, final: bool) -> list[tuple[int, int]]:
    """The runs ``[first, end)`` of units to cut as parts, from unit ``done`` on.

    ``bounds[i]`` is the decode time of unit ``i``, known for the first ``len(bounds)`` units; when
    ``final`` (the segment was cut) its last entry is the segment's end, and what is left after the full
    parts is the segment's last part. ``frame``: the stream's frame duration, to tell whether the next
    unit would pass the target before it arrives.
    """
    out: list[tuple[int, int]] = []
    first, last = done, len(bounds) - 1
    while first < last:
        end = first + 1
        while end < last and bounds[end + 1] - bounds[first] <= target:
            end += 1
        full = end < last or bounds[end] - bounds[first] + frame > target
        if not (full or final):
            break
        out.append((first, end))
        first = end
    return out


def make_part(
    seq: int,
    index: int,
    start: int,
    duration: int,
    units: Sequence[tuple[int, AccessUnit]],
    bounds: Sequence[int],
    run: tuple[int, int],
    *,
    discontinuity: bool,
    lead: int,
    last: bool = False,
) -> CutPart:
    """Part ``index`` of segment ``seq``: units ``run`` with their decode times ``bounds``, as ``Sample``s
    built exactly as the segment builds its own; ``last``: the segment's final part."""
    first, end = run
    samples = tuple(
        Sample(t, bounds[i], bounds[i + 1] - bounds[i], unit.nalus, unit.is_idr, damaged=unit.damaged)
        for i, (t, unit) in enumerate(units[first:end], start=first)
    )
    return CutPart(
        seq=seq,
        part=index,
        start=start,
        duration=duration,
        samples=samples,
        independent=samples[0].is_idr,
        lead=lead,
        damaged=any(s.damaged for s in samples),
        discontinuity=discontinuity and index == 0,
        last=last,
    )
