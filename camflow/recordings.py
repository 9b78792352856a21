"""The recording index: which segments of a stream exist, by wall-clock time. Pure code, no I/O.

The packager writes it as it appends segments (before the playlists that name them); the
edge reads it to answer time-range requests; retention deletes from it. It is the
contract between them, like the events on the bus.

Layout: one *chunk* object per stream, epoch and ten-minute bucket of wall-clock time
(``camflow.keys.recording_index_key``)::

    streams/{stream}/recordings/{bucket: YYYYMMDDTHHMMSSZ}/{epoch}.json

A segment belongs to the bucket its first frame falls in. Chunks are rewritten whole on
every append (at most ``BUCKET_SECONDS`` / segment duration entries, ~300 for 2 s
segments), so an S3 store needs no append. The index names no object keys: the segment
of rendition R is ``camflow.keys.segment_key(stream, epoch, R, seq)``, its init section
``init_key(stream, epoch, R)``.

Versioned JSON (``"v": 1``)::

    {"v": 1, "stream": "cam1", "epoch": "20261121T101500123Z", "bucket": 1795256400,
     "renditions": {"source": {"width": 1280, "height": 720, "codecs": "avc1.64001f",
                               "bandwidth": 2800000, "frame_rate": 30.0}},
     "segments": [{"seq": 0, "t": 1795256400.123, "d": 2.0, "r": ["source"]}]}

``bandwidth`` is the peak of the rendition over the chunk (bits/s). ``r`` lists the
renditions the segment has (a rendition missing from one segment is absent there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from camflow.errors import CamflowError
from camflow.hls.dates import format_date_time
from camflow.keys import is_epoch, is_rendition, is_stream_name, recording_index_key, recordings_prefix

INDEX_VERSION = 1
BUCKET_SECONDS = 600
CONTIGUOUS_SLACK = 1.0  # seconds between two segments still counted as one covered range


class RecordingIndexError(CamflowError):
    """An index chunk that is not one this code writes (bad JSON, version or field)."""


def index_document(data: bytes, version: int, what: str) -> dict[str, Any]:
    """The JSON object of an index document (``what``: "index chunk", "day summary") of ``version``;
    RecordingIndexError when it is not JSON, not an object, or of another version."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecordingIndexError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != version:
        found = doc.get("v") if isinstance(doc, dict) else None
        raise RecordingIndexError(f"{what} version {found!r} is not {version}")
    return doc


def bucket_of(wall_clock: float) -> int:
    """The bucket (UNIX seconds, a multiple of BUCKET_SECONDS) a segment starting then belongs to."""
    return int(wall_clock // BUCKET_SECONDS) * BUCKET_SECONDS


def format_bucket(bucket: int) -> str:
    return datetime.fromtimestamp(bucket, UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_bucket(text: str) -> int:
    try:
        dt = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise RecordingIndexError(f"bucket {text!r} is not YYYYMMDDTHHMMSSZ") from exc
    return int(dt.timestamp())


@dataclass(frozen=True)
class RecordedRendition:
    name: str
    width: int
    height: int
    codecs: str
    bandwidth: int
    frame_rate: float = 0.0


@dataclass(frozen=True)
class RecordedSegment:
    seq: int
    wall_clock: float
    duration: float
    renditions: tuple[str, ...]

    @property
    def end(self) -> float:
        return self.wall_clock + self.duration


@dataclass
class IndexChunk:
    """One stream's segments of one epoch in one bucket; ``add`` is idempotent per seq."""

    stream: str
    epoch: str
    bucket: int
    renditions: dict[str, RecordedRendition] = field(default_factory=dict)
    segments: dict[int, RecordedSegment] = field(default_factory=dict)

    def add(self, segment: RecordedSegment, renditions: Iterable[RecordedRendition]) -> bool:
        """Record a segment; False when that seq was already recorded (nothing changed)."""
        if segment.seq in self.segments:
            return False
        self.segments[segment.seq] = segment
        for r in renditions:
            old = self.renditions.get(r.name)
            if old is None or r.bandwidth > old.bandwidth:
                self.renditions[r.name] = r
        return True

    def remove_before(self, cutoff: float, keep: set[int] | None = None) -> list[RecordedSegment]:
        """Drop segments that end at or before ``cutoff`` (except the seqs in ``keep``); return them."""
        gone = [s for s in self.segments.values() if s.end <= cutoff and not (keep and s.seq in keep)]
        for s in gone:
            del self.segments[s.seq]
        return sorted(gone, key=lambda s: s.seq)

    def render(self) -> bytes:
        doc = {
            "v": INDEX_VERSION,
            "stream": self.stream,
            "epoch": self.epoch,
            "bucket": self.bucket,
            "renditions": {
                r.name: {
                    "width": r.width,
                    "height": r.height,
                    "codecs": r.codecs,
                    "bandwidth": r.bandwidth,
                    "frame_rate": r.frame_rate,
                }
                for r in sorted(self.renditions.values(), key=lambda r: r.name)
            },
            "segments": [
                {
                    "seq": s.seq,
                    "t": round(s.wall_clock, 3),
                    "d": round(s.duration, 6),
                    "r": list(s.renditions),
                }
                for s in sorted(self.segments.values(), key=lambda s: s.seq)
            ],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> IndexChunk:
        doc = index_document(data, INDEX_VERSION, "index chunk")
        try:
            chunk = cls(str(doc["stream"]), str(doc["epoch"]), int(doc["bucket"]))
            for name, r in dict(doc["renditions"]).items():
                chunk.renditions[str(name)] = RecordedRendition(
                    str(name),
                    int(r["width"]),
                    int(r["height"]),
                    str(r["codecs"]),
                    int(r["bandwidth"]),
                    float(r.get("frame_rate", 0.0)),
                )
            for s in doc["segments"]:
                seg = RecordedSegment(
                    int(s["seq"]), float(s["t"]), float(s["d"]), tuple(str(n) for n in s["r"])
                )
                chunk.segments[seg.seq] = seg
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # int(1e999)
            raise RecordingIndexError(f"index chunk has a bad field: {exc!r}") from exc
        problem = _check(chunk)
        if problem:
            raise RecordingIndexError(f"index chunk {chunk.stream}/{chunk.epoch}: {problem}")
        return chunk


def _check(chunk: IndexChunk) -> str | None:
    if not is_stream_name(chunk.stream) or not is_epoch(chunk.epoch):
        return "stream or epoch name is malformed"
    if chunk.bucket % BUCKET_SECONDS:
        return f"bucket {chunk.bucket} is not a multiple of {BUCKET_SECONDS}"
    for r in chunk.renditions.values():
        if not is_rendition(r.name) or '"' in r.codecs or r.bandwidth <= 0:
            return f"rendition {r.name!r} is malformed"
    for s in chunk.segments.values():
        if s.seq < 0 or not (math.isfinite(s.wall_clock) and math.isfinite(s.duration) and s.duration > 0):
            return f"segment {s.seq} has a bad time or duration"
        if any(n not in chunk.renditions for n in s.renditions):
            return f"segment {s.seq} names an unknown rendition"
    return None


# --- reading: time ranges ---------------------------------------------------------------------


@dataclass(frozen=True)
class EpochRun:
    """The recorded segments of one epoch inside a time range, in seq order."""

    epoch: str
    renditions: dict[str, RecordedRendition]
    segments: tuple[RecordedSegment, ...]


def select(chunks: Iterable[IndexChunk], start: float, end: float) -> list[EpochRun]:
    """Segments overlapping ``[start, end)``, one run per epoch, oldest first."""
    by_epoch: dict[str, tuple[dict[str, RecordedRendition], dict[int, RecordedSegment]]] = {}
    for c in chunks:
        renditions, segments = by_epoch.setdefault(c.epoch, ({}, {}))
        for r in c.renditions.values():
            old = renditions.get(r.name)
            if old is None or r.bandwidth > old.bandwidth:
                renditions[r.name] = r
        for s in c.segments.values():
            if s.wall_clock < end and s.end > start:
                segments[s.seq] = s
    runs = [
        EpochRun(epoch, renditions, tuple(segments[n] for n in sorted(segments)))
        for epoch, (renditions, segments) in sorted(by_epoch.items())
        if segments
    ]
    return runs


def buckets_between(start: float, end: float) -> range:
    """Every bucket a segment overlapping ``[start, end)`` can be filed under.

    A segment filed in the bucket before ``start``'s may still reach into the range.
    """
    return range(bucket_of(start) - BUCKET_SECONDS, bucket_of(end) + 1, BUCKET_SECONDS)


@dataclass(frozen=True)
class CoveredRange:
    epoch: str
    start: float
    end: float
    segments: int

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "start": format_date_time(self.start),
            "end": format_date_time(self.end),
            "duration": round(self.end - self.start, 3),
            "segments": self.segments,
        }


def covered(chunks: Iterable[IndexChunk]) -> list[CoveredRange]:
    """Covered time ranges: contiguous segments of one epoch merged, oldest first."""
    return covered_runs(select(chunks, -math.inf, math.inf))


def covered_runs(runs: Iterable[EpochRun]) -> list[CoveredRange]:
    """The covered time ranges of runs (``select``'s): contiguous segments merged, oldest first."""
    out: list[CoveredRange] = []
    for run in runs:
        current: CoveredRange | None = None
        for s in run.segments:
            if current is not None and s.wall_clock <= current.end + CONTIGUOUS_SLACK:
                current = CoveredRange(
                    run.epoch, current.start, max(current.end, s.end), current.segments + 1
                )
                continue
            if current is not None:
                out.append(current)
            current = CoveredRange(run.epoch, s.wall_clock, s.end, 1)
        if current is not None:
            out.append(current)
    return sorted(out, key=lambda r: (r.start, r.epoch))


def chunk_key(chunk: IndexChunk) -> str:
    return recording_index_key(chunk.stream, format_bucket(chunk.bucket), chunk.epoch)


def parse_chunk_key(stream: str, key: str) -> tuple[int, str] | None:
    """``(bucket, epoch)`` of an index chunk key of ``stream``; None for any other key."""
    prefix = recordings_prefix(stream)
    if not key.startswith(prefix) or not key.endswith(".json"):
        return None
    parts = key[len(prefix) : -len(".json")].split("/")
    if len(parts) != 2 or not is_epoch(parts[1]):
        return None
    try:
        return parse_bucket(parts[0]), parts[1]
    except RecordingIndexError:
        return None
