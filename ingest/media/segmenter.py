"""Segmenter: cuts a stream of access units into IDR-aligned segments. Pure logic, no I/O.

A segment starts on an IDR frame and ends before the first IDR that comes at least
``target`` after its start, so its duration is known exactly when it is cut.

Timeline: RTP timestamps are presentation times. The epoch's timeline starts at
``TIMELINE_ORIGIN`` (one second) rather than zero, so that decode times, which run
behind presentation times when a camera sends B-frames, never go negative.

Decode times are not on the wire. Within a closed GOP the decode time of the i-th unit
in decode order is the i-th smallest presentation time minus a constant reorder delay
``D`` (the smallest that keeps every decode time at or before its presentation time);
``D`` is kept per stream and only ever grows, so decode times stay continuous from one
segment to the next.

Camera clocks: a unit whose time jumps forward by more than ``MAX_FORWARD_JUMP`` or back by
more than B-frame reordering explains (``BACKWARD_TOLERANCE``, or twice ``D``) closes the
segment in hand. The timeline is then rebased so that the next IDR starts exactly where that
segment ended (units before it are dropped and counted: they cannot start a segment), and the
segment it starts carries ``discontinuity``. A segment holding a unit the depacketizer marked
``damaged`` (lost packets of a reference picture) is marked ``damaged`` too.

Parts (low-latency HLS, ``part_target``): each segment is also cut into parts as its units arrive
(``ingest.media.parts``; taken with ``take_parts``), whose decode times are fixed as soon as they
are final and then kept by the segment, so a segment's parts hold exactly its samples. The part cut
with its segment (the next segment's IDR came, or the session ended) is the segment's ``last``.

Audio does not cut: ``AudioTrack`` holds audio samples placed on the same timeline (in the audio's
own timescale, its sample rate) and hands each segment the samples whose time falls in
[segment start, next segment start), filling what is missing with silence so that the audio of
every segment covers it exactly. Parts (low-latency HLS) that could not wait for their audio take
what has arrived (``take(..., lost=)``, see ``ingest.media.audio_path``): the rest goes to the next
part, so a segment cut into parts holds its parts' audio, which may start or end up to a packet of
audio away from its span.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ingest.media import parts
from ingest.media.cuts import AudioSample as AudioSample
from ingest.media.cuts import CutPart as CutPart
from ingest.media.cuts import CutSegment as CutSegment
from ingest.media.cuts import Sample as Sample
from ingest.media.units import AccessUnit

TIMESCALE = 90_000
TIMELINE_ORIGIN = TIMESCALE  # 1 s
MAX_SEGMENT_SECONDS = 30.0  # a camera whose IDRs never come is cut anyway (the next unit is not an IDR)
MAX_FORWARD_JUMP = 10.0  # seconds: a bigger step forward between units is a new timeline
BACKWARD_TOLERANCE = 0.5  # seconds: a bigger step back than this (and than 2 D) is a new timeline


@dataclass
class SegmenterCounters:
    dropped_before_idr: int = 0
    reorder_delay_increases: int = 0
    forced_cuts: int = 0
    dts_nudged: int = 0
    timestamp_jumps_forward: int = 0
    timestamp_jumps_backward: int = 0
    dropped_after_jump: int = 0  # units between a timestamp jump and the next IDR
    segments_damaged: int = 0


@dataclass
class _Pending:
    start: int
    units: list[tuple[int, AccessUnit]] = field(default_factory=list)  # (timeline pts, unit)
    discontinuity: bool = False
    latest: int = 0  # the highest timeline pts in it
    dts: list[int] = field(default_factory=list)  # the decode times fixed so far, of its first units
    parted: int = 0  # units already cut into parts
    parts: int = 0  # parts cut
    part_start: int = 0  # where its next part starts (timeline ticks)
    reordered: bool = False  # a unit came with a pts below an earlier one's


class Segmenter:
    def __init__(
        self, *, target: float, timescale: int = TIMESCALE, part_target: float | None = None
    ) -> None:
        """``part_target``: cut parts of about that many seconds inside each segment (low-latency HLS,
        taken with ``take_parts``); None: segments only."""
        if target <= 0:
            raise ValueError(f"segment target duration {target} s, expected > 0")
        self.target_ticks = round(target * timescale)
        part = None if part_target is None else parts.check_part_target(part_target)
        self.part_ticks = None if part is None else round(part * timescale)
        self.max_ticks = round(MAX_SEGMENT_SECONDS * timescale)
        self.timescale = timescale
        self.counters = SegmenterCounters()
        self._base: int | None = None
        self._pending: _Pending | None = None
        self._seq = 0
        self._reorder_delay = 0
        self._last_dts: int | None = None
        self._frame_ticks = timescale // 30
        self._forward_jump = round(MAX_FORWARD_JUMP * timescale)
        self._backward_tolerance = round(BACKWARD_TOLERANCE * timescale)
        self._rebase_at: int | None = None  # after a jump: the timeline pts the next IDR is given
        self._parts: list[CutPart] = []

    @property
    def base(self) -> int | None:
        """The pts (camera clock) at TIMELINE_ORIGIN; None until the first IDR."""
        return self._base

    @property
    def next_seq(self) -> int:
        return self._seq

    def to_timeline(self, pts: int) -> int:
        assert self._base is not None
        return pts - self._base + TIMELINE_ORIGIN

    def take_parts(self) -> list[CutPart]:
        """The parts cut since the last call, in order (a segment's parts come before the segment)."""
        out, self._parts = self._parts, []
        return out

    def push(self, unit: AccessUnit) -> list[CutSegment]:
        """Add one unit (in decode order); returns the segment it completes, if any."""
        discontinuity = False
        if self._base is None:
            if not unit.is_idr:
                self.counters.dropped_before_idr += 1
                return []
            self._base = unit.pts
        elif self._rebase_at is not None:
            if not unit.is_idr:
                self.counters.dropped_after_jump += 1
                return []
            self._base = unit.pts + TIMELINE_ORIGIN - self._rebase_at
            self._rebase_at = None
            discontinuity = True
        t = self.to_timeline(unit.pts)
        out: list[CutSegment] = []
        pending = self._pending
        if pending is not None and self._jumped(t, pending.latest):
            end = pending.latest + self._frame_ticks
            out.append(self._cut(pending, end=end))
            self._pending = None
            self._rebase_at = end
            return out + self.push(unit)
        if pending is None:
            self._pending = _Pending(t, [(t, unit)], discontinuity=discontinuity, latest=t, part_start=t)
            return out
        elapsed = t - pending.start
        if unit.is_idr and elapsed >= self.target_ticks:
            out.append(self._cut(pending, end=t))
            self._pending = _Pending(t, [(t, unit)], latest=t, part_start=t)
        elif elapsed >= self.max_ticks:  # no IDR for too long: cut anyway, memory stays bounded
            self.counters.forced_cuts += 1
            out.append(self._cut(pending, end=t))
            self._pending = _Pending(t, [(t, unit)], latest=t, part_start=t)
        else:
            pending.units.append((t, unit))
            if self.part_ticks is not None:
                self._settle(pending, t, self.part_ticks)
            pending.reordered = pending.reordered or t < pending.latest
            pending.latest = max(pending.latest, t)
        return out

    def _settle(self, pending: _Pending, t: int, part_ticks: int) -> None:
        """Fix the decode times that the unit just added (presentation time ``t``) makes final, and cut
        the parts that became complete.

        A unit presented after every earlier one of the segment (an I or P picture ending a run of
        B-pictures) closes the run before it: the units after it are presented after all of those, so
        the smallest presentation times, hence the decode times, of the units before it are final.
        The unit's own decode time is final too once the stream has shown no reordering for a whole
        segment (no B-pictures: each unit's decode time is its presentation time, and a part ends as
        soon as the next unit arrives); with B-pictures a part waits for the next I or P picture.
        """
        if t <= pending.latest or (self._last_dts is None and t - pending.start < part_ticks):
            return  # the stream's first part: its reorder delay is learned over the whole part first
        count = len(pending.units) - 1
        if not pending.reordered and self._reorder_delay == 0 and self._seq > 0:
            count += 1
        self._freeze(pending, count)
        self._cut_parts(pending, pending.dts)

    def _cut_parts(self, pending: _Pending, bounds: list[int], end: int | None = None) -> None:
        """Cut the complete parts; ``end``: the segment was cut there, the rest is its last part."""
        assert self.part_ticks is not None
        runs = parts.plan(bounds, pending.parted, self.part_ticks, self._frame_ticks, final=end is not None)
        for first, stop in runs:
            span = bounds[stop] - bounds[first]
            last = end is not None and stop == len(pending.units)
            if end is not None and last:
                span = end - pending.part_start  # the last part ends where the segment does
            part = parts.make_part(
                self._seq,
                pending.parts,
                pending.part_start,
                max(span, 1),
                pending.units,
                bounds,
                (first, stop),
                discontinuity=pending.discontinuity,
                lead=pending.units[0][0] - bounds[0],
                last=last,
            )
            self._parts.append(part)
            pending.parted, pending.parts = stop, pending.parts + 1
            pending.part_start += part.duration

    def _freeze(self, pending: _Pending, count: int) -> None:
        """Fix the decode times of the first ``count`` units of ``pending`` (those fixed before stay).

        Within a closed GOP the decode time of the i-th unit in decode order is the i-th smallest
        presentation time minus the reorder delay (the smallest that keeps every decode time at or
        before its presentation time; it only grows); decode times strictly increase, also across
        segments (the delay may have grown).
        """
        have = len(pending.dts)
        if count <= have:
            return
        times = [t for t, _ in pending.units[:count]]
        ordered = sorted(times)
        delay = max(0, max(o - t for o, t in zip(ordered, times, strict=True)))
        if delay > self._reorder_delay:
            if self._seq > 0:
                self.counters.reorder_delay_increases += 1
            self._reorder_delay = delay
        prev = pending.dts[-1] if pending.dts else self._last_dts
        for i in range(have, count):
            dts = ordered[i] - self._reorder_delay
            if prev is not None and dts <= prev:
                dts = prev + 1
                self.counters.dts_nudged += 1
            pending.dts.append(dts)
            prev = dts

    def _jumped(self, t: int, latest: int) -> bool:
        if t - latest > self._forward_jump:
            self.counters.timestamp_jumps_forward += 1
            return True
        if latest - t > max(self._backward_tolerance, 2 * self._reorder_delay):
            self.counters.timestamp_jumps_backward += 1
            return True
        return False

    def flush(self) -> list[CutSegment]:
        """End of the publish session: the partial segment in hand, if it has any unit."""
        pending, self._pending = self._pending, None
        if pending is None or not pending.units:
            return []
        return [self._cut(pending, end=pending.latest + self._frame_ticks)]

    def _cut(self, pending: _Pending, end: int) -> CutSegment:
        self._freeze(pending, len(pending.units))
        dts = pending.dts
        bounds = [*dts, max(end - self._reorder_delay, dts[-1] + 1)]
        if self.part_ticks is not None:
            self._cut_parts(pending, bounds, end)
        samples = tuple(
            Sample(t, bounds[i], bounds[i + 1] - bounds[i], unit.nalus, unit.is_idr, damaged=unit.damaged)
            for i, (t, unit) in enumerate(pending.units)
        )
        if len(dts) > 1:
            ordered = sorted(t for t, _ in pending.units)
            spans = sorted(b - a for a, b in itertools.pairwise(ordered) if b > a)
            if spans:
                self._frame_ticks = spans[len(spans) // 2]
        self._last_dts = dts[-1]
        damaged = any(x.damaged for x in samples)
        if damaged:
            self.counters.segments_damaged += 1
        seg = CutSegment(
            seq=self._seq,
            start=pending.start,
            duration=end - pending.start,
            samples=samples,
            damaged=damaged,
            discontinuity=pending.discontinuity,
        )
        self._seq += 1
        return seg


def audio_ticks(video_ticks: int, sample_rate: int, timescale: int = TIMESCALE) -> int:
    """A time on the video timeline (``timescale`` ticks) in audio ticks (1/``sample_rate`` s)."""
    return video_ticks * sample_rate // timescale


@dataclass
class AudioTrackCounters:
    audio_units: int = 0
    audio_late_dropped: int = 0  # samples whose segment had already been cut
    audio_overflow_dropped: int = 0  # samples over the buffer bound (video stalled while audio flowed)
    audio_silence_inserted: int = 0  # silent units that filled a hole so audio covers each segment


class AudioTrack:
    """Audio samples waiting for the segment they fall in (bounded: ``max_seconds`` of audio).

    ``silence`` is one silent access unit of the track's configuration: holes of a frame or more (audio
    that starts after the video, lost packets, a camera that stops sending audio) are filled with it.
    """

    def __init__(
        self, sample_rate: int, silence: bytes, *, frame: int = 1024, max_seconds: float = 10.0
    ) -> None:
        self.sample_rate = sample_rate
        self.silence = silence
        self.frame = frame
        self.counters = AudioTrackCounters()
        self._max = max(1, round(max_seconds * sample_rate / frame))
        self._samples: list[AudioSample] = []
        self._taken_until: int | None = None  # audio ticks: everything before went into a segment
        self._out_end: int | None = None  # where the audio handed out so far ends
        self._origin: int | None = None  # audio ticks: where the first take started

    @property
    def started(self) -> bool:
        """Whether any audio (samples or silence) has been handed out."""
        return self._out_end is not None

    @property
    def reach(self) -> int | None:
        """Where the audio received so far ends (audio ticks), handed out or not; None before any."""
        return self.end if self._samples else self._out_end

    @property
    def end(self) -> int | None:
        """Where the audio received so far ends (audio ticks), None before the first sample."""
        return self._samples[-1].time + self._samples[-1].duration if self._samples else None

    def covers(self, video_end: int) -> bool:
        """Whether every sample that goes before ``video_end`` (video ticks) has arrived: the audio
        received ends where the next sample would go after it (a sample goes where its end falls)."""
        end = self.end
        return end is not None and end >= audio_ticks(video_end, self.sample_rate) - self.frame + 1

    def push(self, sample: AudioSample) -> None:
        self.counters.audio_units += 1
        last = self._samples[-1] if self._samples else None
        floor = max(self._taken_until or sample.time, last.time + 1 if last else sample.time)
        if sample.time < floor:
            self.counters.audio_late_dropped += 1
            return
        if len(self._samples) >= self._max:
            self._samples.pop(0)
            self.counters.audio_overflow_dropped += 1
        self._samples.append(sample)

    def take(
        self, video_start: int, video_end: int, *, continuous: bool = False, lost: int | None = None
    ) -> tuple[AudioSample, ...]:
        """The samples of the segment [video_start, video_end) (video ticks), holes filled with silence.

        ``continuous`` (parts, taken one after the other): the take starts where the previous one ended,
        and a hole is filled from where the previous take's audio ended, so that takes in a row hold what
        one take over their span would. ``lost`` (audio ticks; a part that could wait no longer for its
        audio): only the audio that has arrived is taken, up to where it ends; what has not arrived is
        left to the next take, except what should have come more than ``lost`` before the span's end,
        which is given up (silence)."""
        start = audio_ticks(video_start, self.sample_rate)
        # A sample goes to the segment its end falls in, so each segment's audio starts at or up to
        # a frame before its video: a player joining a live stream at a segment finds no hole there.
        lo, hi = start - self.frame + 1, audio_ticks(video_end, self.sample_rate) - self.frame + 1
        if self._origin is None:
            self._origin = start
        if self._taken_until is not None and (continuous or self._taken_until > lo):
            lo = self._taken_until
        if lost is not None:
            arrived = self.end if self._samples else lo
            assert arrived is not None
            hi = max(lo, min(hi, max(arrived, hi - lost)))
        self._taken_until = hi
        inside = [s for s in self._samples if lo <= s.time < hi]
        self._samples = [s for s in self._samples if s.time >= hi]
        out: list[AudioSample] = []
        at = self._out_end if continuous and self._out_end is not None else lo
        if self._out_end is None and inside and inside[0].time > self._origin:
            # Silence before the first sample, in whole frames ending on it: the audio covers the
            # video's start (a player seeks over a hole there) and keeps the camera's frame grid.
            count = -(-(inside[0].time - self._origin) // self.frame)
            out = [
                AudioSample(inside[0].time - i * self.frame, self.silence, self.frame)
                for i in range(count, 0, -1)
            ]
            self.counters.audio_silence_inserted += count
            at = inside[0].time
        for sample in [*inside, None]:
            until = hi if sample is None else sample.time
            while until - at >= self.frame:  # a hole of a frame or more
                out.append(AudioSample(at, self.silence, self.frame))
                self.counters.audio_silence_inserted += 1
                at += self.frame
            if sample is None:
                break
            out.append(sample)
            at = sample.time + sample.duration
        if out:
            self._out_end = out[-1].time + out[-1].duration
        return tuple(out)
