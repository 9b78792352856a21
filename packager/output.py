"""What a ``StreamPackager`` hands out: playlists to write, recording index entries, counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from camflow.events import PlaylistEnd
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
    parts_listed: int = 0  # low latency: parts put in a live playlist (per rendition)
    parents_early: int = 0  # segments listed from their parts, before their segment-ready
    parts_dropped: int = 0  # parts never listed (late, ahead of too much, their segment abandoned)
    parts_abandoned: int = 0  # segments whose parts broke a rule: listed from their segment-ready
    parts_ignored: int = 0  # part-ready events while low latency is off
    parts_deleted: int = 0  # part objects deleted once out of the live playlists
    publish_errors: int = 0  # playlists-changed events the bus did not take
    poll_errors: int = 0  # polls that failed (the bus away), repeated after a pause


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
    ends: tuple[PlaylistEnd, ...] | None = None  # low latency: where the live playlists end, when written
    unlisted: list[tuple[float, str]] = field(default_factory=list)  # (since, part key): out of the playlists
