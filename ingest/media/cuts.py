"""What the segmenter cuts: samples on the epoch timeline, segments, and the parts inside a segment.

Plain data, no logic: ``ingest.media.segmenter`` makes them, ``ingest.media.mux`` turns them into
fMP4, ``ingest.media.publisher`` into events.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One access unit placed on the epoch timeline (all times in TIMESCALE ticks)."""

    pts: int
    dts: int
    duration: int
    nalus: tuple[bytes, ...]
    is_idr: bool
    damaged: bool = False


@dataclass(frozen=True)
class AudioSample:
    """One AAC access unit on the epoch timeline, in the audio track's timescale (its sample rate)."""

    time: int
    data: bytes = field(repr=False)
    duration: int


@dataclass(frozen=True)
class CutSegment:
    seq: int
    start: int  # pts of the first IDR
    duration: int
    samples: tuple[Sample, ...]
    damaged: bool = False  # a sample lost packets of a reference picture
    discontinuity: bool = False  # first segment after the camera's clock jumped (a rebased timeline)
    audio: tuple[AudioSample, ...] = ()  # the audio in [start, start + duration), when the stream has audio


@dataclass(frozen=True)
class CutPart:
    """Part ``part`` of segment ``seq`` (low-latency HLS): a run of the segment's samples in decode order,
    exactly as the segment will hold them. ``start``/``duration``: its span on the epoch timeline (the
    parts of a segment tile it)."""

    seq: int
    part: int
    start: int
    duration: int
    samples: tuple[Sample, ...]
    independent: bool  # its first sample is a key picture (part 0 always: the segment's IDR)
    lead: int = 0  # the composition offset (pts - dts) of its segment's first sample
    damaged: bool = False
    discontinuity: bool = False  # part 0 of a segment that carries discontinuity
    audio: tuple[AudioSample, ...] = ()  # the audio of its span, when the stream has audio
    last: bool = False  # the segment's final part (cut with the segment, or at the session's end)
