"""Events that lock footage, as retention sees them (``camflow.stream_events`` holds the contract).

Before each sweep of a stream, ``EventLocks.scan`` lists the stream's events (their keys name their
footage, so only events whose footage has passed the retention cutoff are read, each once per
process: an event never changes) and answers which footage is locked:

- a segment overlapping a locked event's footage is kept however old (``keeps``); the sweep counts
  it in ``RetentionStats.kept_locked`` and logs, when it changes, how many segments each stream
  keeps and for which events (``retention_kept_locked``);
- an unlocked event (a bookmark) whose footage is past the cutoff goes with its footage;
- on an S3 store, the kept segments, their thumbnails and their epochs' init sections are tagged
  ``locked`` so the bucket's lifecycle backstop leaves them (``camflow.store.s3``); a sweep tags
  what it keeps a day before the backstop would act (it keeps them from the cutoff on).

Deleting an event (the API) releases its lock: the next sweep deletes its footage when it is
past the retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from camflow.errors import NotFound
from camflow.keys import init_key, segment_key, thumbnail_key
from camflow.recordings import RecordedSegment
from camflow.store import Store
from camflow.stream_events import EventError, StreamEvent, event_key, events_prefix, ids_touching

KNOWN_EVENTS = 100_000  # parsed events remembered per process (they never change)


@runtime_checkable
class LockingStore(Protocol):
    """A store whose lifecycle backstop an object can be taken out of (S3 tags)."""

    async def set_locked(self, keys: list[str], locked: bool) -> int: ...


@dataclass
class StreamLocks:
    """One stream's locked footage as of a sweep: (start, end, event id) spans."""

    stream: str
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # event id -> segments it kept this sweep
    segments: int = 0  # segments kept this sweep (one an event overlaps, counted once)

    def keeps(self, segment: RecordedSegment) -> bool:
        hit = False
        for start, end, event_id in self.spans:
            if segment.wall_clock < end and segment.end > start:
                self.kept[event_id] = self.kept.get(event_id, 0) + 1
                hit = True
        self.segments += hit
        return hit


class EventLocks:
    def __init__(self, store: Store, log: Any) -> None:
        self._store = store
        self._log = log
        self._events: dict[str, StreamEvent] = {}
        self._tagged: set[str] = set()  # keys tagged locked by this process
        self._reported: dict[str, dict[str, int]] = {}

    async def scan(self, stream: str, cutoff: float) -> tuple[StreamLocks, int]:
        """The locks on ``stream``'s footage before ``cutoff``, and how many expired bookmarks
        (unlocked events whose footage is past it) were deleted."""
        keys = await self._store.list(events_prefix(stream))
        locks = StreamLocks(stream)
        expired = 0
        for event_id in ids_touching(keys, 0.0, cutoff):
            event = await self._event(stream, event_id)
            if event is None:
                continue
            if event.lock:
                locks.spans.append((event.start, event.end, event.id))
            elif event.end < cutoff:
                await self._store.delete(event.key)
                self._events.pop(event.id, None)
                expired += 1
        return locks, expired

    async def _event(self, stream: str, event_id: str) -> StreamEvent | None:
        if (known := self._events.get(event_id)) is not None:
            return known
        try:
            event = StreamEvent.parse(await self._store.get(event_key(stream, event_id)))
        except NotFound:
            return None
        except EventError as exc:
            self._log.warning("event_unreadable", stream_id=stream, event_id=event_id, error=str(exc))
            return None
        if len(self._events) >= KNOWN_EVENTS:
            self._events.clear()
        self._events[event_id] = event
        return event

    async def tag(self, stream: str, epoch: str, kept: list[RecordedSegment]) -> int:
        """Take the kept segments of ``epoch`` (every rendition, thumbnails, init sections) out of
        the lifecycle backstop; returns how many objects were tagged now."""
        if not kept or not isinstance(self._store, LockingStore):
            return 0
        renditions = sorted({r for s in kept for r in s.renditions})
        keys = [init_key(stream, epoch, r) for r in renditions]  # every sweep: a live epoch rewrites them
        for s in kept:
            keys += [segment_key(stream, epoch, r, s.seq) for r in s.renditions]
            keys.append(thumbnail_key(stream, epoch, s.seq))
        fresh = [k for k in keys if k not in self._tagged or k.endswith("/init.mp4")]
        if not fresh:
            return 0
        done = await self._store.set_locked(fresh, True)
        self._tagged.update(fresh)
        return done

    def report(self, locks: StreamLocks) -> None:
        """Log what the stream's locks kept, when it changed since the last sweep."""
        if self._reported.get(locks.stream, {}) == locks.kept:
            return  # unchanged (and nothing is said of a stream no event ever kept footage of)
        self._reported[locks.stream] = dict(locks.kept)
        self._log.info(
            "retention_kept_locked",
            stream_id=locks.stream,
            segments=locks.segments,
            events=dict(sorted(locks.kept.items())[:20]),
        )
