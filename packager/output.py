"""What a ``StreamPackager`` hands out: playlists to write, recording index entries, counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from camflow.recordings import RecordedRendition, RecordedSegment


@dataclass
class PackagerStats:
    segments_appended: int = 0
    gaps: int = 0
    decode_errors: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    rejected: int = 0
    overlong: int = 0
    restored: int = 0
    rebalances: int = 0  # partition reassignments that made this process drop its streams
    commit_errors: int = 0  # offsets the group did not take (the partition moved on): redelivered


@dataclass(frozen=True)
class IndexAppend:
    """A segment for the recording index: written before the playlists that name it."""

    epoch: str
    segment: RecordedSegment
    renditions: tuple[RecordedRendition, ...]


@dataclass
class Output:
    index: list[IndexAppend] = field(default_factory=list)
    writes: list[tuple[str, str]] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
