"""Day summaries of the recording index: what one stream recorded on one UTC day. Pure code, no I/O.

Beside the index chunks (``camflow.recordings``), the packager keeps one small summary per
stream and UTC day (``camflow.keys.recording_day_key``)::

    streams/{stream}/recording-days/{YYYYMMDD}.json

It holds, for every chunk of that day (epoch, bucket), the chunk's covered spans (its
contiguous segments merged: start, end, segment count). A reader gets a day's coverage, and
the keys of the chunks a time range needs, from this one object, without listing or reading
the chunks. It is derived data: whoever writes or deletes a chunk (the packager as it appends,
retention as it trims) sets that chunk's entry afterwards (``DaySummary.set_chunk``), so an entry
is always a version of its chunk, and writing it again repairs one a crash left behind.

Versioned JSON (``"v": 1``), bucket in UNIX seconds, spans ``[start, end, segments]``::

    {"v": 1, "stream": "cam1", "day": "20261121",
     "chunks": {"20261121T101500123Z": {"1795256400": [[1795256400.123, 1795257000.1, 300]]}}}

Migration: an index written before summaries existed has chunks only. The packager backfills
every such day the first time it touches the stream, then writes the marker
``recording_days_marker_key`` (``{"v": 1}``); until the marker is there readers read the chunks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from camflow.keys import is_epoch, is_stream_name, recording_day_key, recording_days_prefix
from camflow.recordings import (
    BUCKET_SECONDS,
    CONTIGUOUS_SLACK,
    CoveredRange,
    IndexChunk,
    RecordingIndexError,
    covered,
    index_document,
)

DAY_VERSION = 1
DAY_SECONDS = 86400

Span = tuple[float, float, int]  # start, end (UNIX seconds), segments


def day_of(t: float) -> int:
    """The UTC day (UNIX seconds of its midnight) that a bucket or time falls in."""
    return int(t // DAY_SECONDS) * DAY_SECONDS


def format_day(day: int) -> str:
    return datetime.fromtimestamp(day, UTC).strftime("%Y%m%d")


def parse_day(text: str) -> int:
    try:
        return int(datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC).timestamp())
    except ValueError as exc:
        raise RecordingIndexError(f"day {text!r} is not YYYYMMDD") from exc


def days_between(start: float, end: float) -> range:
    """Every day whose chunks can hold a segment overlapping ``[start, end)`` (a segment is filed
    under the bucket it starts in, so the bucket before ``start``'s is included)."""
    return range(day_of(start - BUCKET_SECONDS), day_of(end) + 1, DAY_SECONDS)


def chunk_spans(chunk: IndexChunk) -> tuple[Span, ...]:
    """The chunk's covered spans, rounded as they are written (so a parsed summary compares equal)."""
    return tuple((round(r.start, 3), round(r.end, 3), r.segments) for r in covered([chunk]))


@dataclass
class DaySummary:
    """One stream's chunks of one UTC day, each as its covered spans."""

    stream: str
    day: int
    chunks: dict[tuple[str, int], tuple[Span, ...]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return recording_day_key(self.stream, format_day(self.day))

    def set_chunk(self, chunk: IndexChunk) -> bool:
        """Record the chunk as it now is (no segments: forget it); False when nothing changed."""
        if day_of(chunk.bucket) != self.day:
            raise ValueError(f"chunk of bucket {chunk.bucket} is not of day {format_day(self.day)}")
        spans = chunk_spans(chunk)
        ref = (chunk.epoch, chunk.bucket)
        if not spans:
            return self.chunks.pop(ref, None) is not None
        if self.chunks.get(ref) == spans:
            return False
        self.chunks[ref] = spans
        return True

    def refs(self, start: float, end: float) -> list[tuple[str, int]]:
        """``(epoch, bucket)`` of every chunk with a span overlapping ``[start, end)``."""
        return sorted(
            (ref for ref, spans in self.chunks.items() if any(s < end and e > start for s, e, _ in spans)),
            key=lambda r: (r[1], r[0]),
        )

    def render(self) -> bytes:
        by_epoch: dict[str, dict[str, list[list[float]]]] = {}
        for (epoch, bucket), spans in sorted(self.chunks.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            by_epoch.setdefault(epoch, {})[str(bucket)] = [[s, e, n] for s, e, n in spans]
        doc = {"v": DAY_VERSION, "stream": self.stream, "day": format_day(self.day), "chunks": by_epoch}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> DaySummary:
        doc = index_document(data, DAY_VERSION, "day summary")
        try:
            summary = cls(str(doc["stream"]), parse_day(str(doc["day"])))
            for epoch, buckets in dict(doc["chunks"]).items():
                for bucket, spans in dict(buckets).items():
                    summary.chunks[(str(epoch), int(bucket))] = tuple(
                        (float(s), float(e), int(n)) for s, e, n in spans
                    )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise RecordingIndexError(f"day summary has a bad field: {exc!r}") from exc
        problem = _check(summary)
        if problem:
            raise RecordingIndexError(f"day summary {summary.stream}/{format_day(summary.day)}: {problem}")
        return summary


def _check(summary: DaySummary) -> str | None:
    if not is_stream_name(summary.stream):
        return "stream name is malformed"
    for (epoch, bucket), spans in summary.chunks.items():
        if not is_epoch(epoch):
            return f"epoch {epoch!r} is malformed"
        if bucket % BUCKET_SECONDS or day_of(bucket) != summary.day:
            return f"bucket {bucket} is not a {BUCKET_SECONDS} s bucket of that day"
        for s, e, n in spans:
            if not (math.isfinite(s) and math.isfinite(e) and e > s and n > 0):
                return f"span {[s, e, n]} of {epoch}/{bucket} is not [start, end > start, segments > 0]"
    return None


def render_marker() -> bytes:
    """The marker object (``camflow.keys.recording_days_marker_key``): every day has its summary."""
    return json.dumps({"v": DAY_VERSION}, separators=(",", ":")).encode()


def parse_day_key(stream: str, key: str) -> int | None:
    """The day of a summary key of ``stream``; None for any other key (the marker included)."""
    prefix = recording_days_prefix(stream)
    if not key.startswith(prefix) or not key.endswith(".json"):
        return None
    try:
        return parse_day(key[len(prefix) : -len(".json")])
    except RecordingIndexError:
        return None


def merge_spans(spans: Iterable[tuple[str, Span]]) -> list[CoveredRange]:
    """``(epoch, span)`` pairs into covered ranges: spans of one epoch that touch (within
    ``CONTIGUOUS_SLACK``) merged, as ``camflow.recordings.covered`` merges segments; oldest first."""
    out: list[CoveredRange] = []
    current: dict[str, CoveredRange] = {}
    for epoch, (s, e, n) in sorted(spans, key=lambda p: (p[1][0], p[0])):
        last = current.get(epoch)
        if last is not None and s <= last.end + CONTIGUOUS_SLACK:
            current[epoch] = CoveredRange(epoch, last.start, max(last.end, e), last.segments + n)
            continue
        if last is not None:
            out.append(last)
        current[epoch] = CoveredRange(epoch, s, e, n)
    out.extend(current.values())
    return sorted(out, key=lambda r: (r.start, r.epoch))
