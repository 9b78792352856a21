"""The ingest spool's records and its index: what waits for the bus, in which order, within what bound.

Everything ingest publishes (raw segments, stream states, health samples) is first written to an
on-disk spool (``ingest.media.spool_dir``) and delivered from there by ``SpooledBus``
(``ingest.media.spooled_bus``). This module holds no I/O:

- ``SpoolRecord``: one message as a spool file: ``b"CFSP" | u8 version | u32 header length |
  u32 CRC-32 of the header | u32 CRC-32 of the body | JSON header | body`` (the header names the
  body's length, so recovery reads headers only, and delivery checks the body it reads).
- ``SpoolIndex``: the records of the spool in memory (never their bodies), one FIFO *lane* per
  stream: a lane is delivered in order, one record at a time, so a stream's messages reach the bus
  in the order they were spooled (``live``, segments..., ``offline``). It keeps the spool within
  ``max_bytes``: only when a new record would not fit is the oldest waiting *segment* of any stream
  dropped (``dropped``, counted per stream); stream states are never dropped, and a health sample
  replaces the one of its stream still waiting (only the newest matters).
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import IngestError

MAGIC = b"CFSP"
VERSION = 1
_PREFIX = struct.Struct(">4sBIII")  # magic, version, header length, CRC-32 of header, of body
MAX_HEADER_BYTES = 64 * 1024


class SpoolCorrupt(IngestError):
    """A spool file that is torn or damaged: the message names the file's problem."""


class RecordKind(enum.Enum):
    SEGMENT = "segment"  # footage: dropped, oldest first, only when the spool is full
    EVENT = "event"  # a stream state: never dropped
    LATEST = "latest"  # a health sample: replaces the older one of its lane still waiting


class EntryState(enum.Enum):
    WRITING = "writing"  # being written to disk: counted in the bound, not deliverable yet
    WAITING = "waiting"  # on disk, waiting for its turn
    SENDING = "sending"  # being published
    GONE = "gone"  # delivered, dropped or replaced


@dataclass(frozen=True)
class RecordHeader:
    lane: str
    topic: str
    key: str
    kind: RecordKind
    created: float  # UNIX time the record was spooled
    body_len: int
    headers: Mapping[str, bytes] = field(default_factory=dict)

    def blob(self) -> bytes:
        """The JSON header as written."""
        return json.dumps(
            {
                "lane": self.lane,
                "topic": self.topic,
                "key": self.key,
                "kind": self.kind.value,
                "created": self.created,
                "body_len": self.body_len,
                "headers": {k: v.hex() for k, v in self.headers.items()},
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()


@dataclass(frozen=True)
class SpoolRecord:
    header: RecordHeader
    body: bytes

    @classmethod
    def make(
        cls,
        lane: str,
        topic: str,
        key: str,
        body: bytes,
        *,
        kind: RecordKind,
        created: float,
        headers: Mapping[str, bytes] | None = None,
    ) -> SpoolRecord:
        return cls(RecordHeader(lane, topic, key, kind, created, len(body), dict(headers or {})), body)

    def size(self) -> int:
        """Bytes of the encoded record, known without encoding it (no CRC computed)."""
        return _PREFIX.size + len(self.header.blob()) + len(self.body)

    def encode(self) -> bytes:
        """The record as written: CRC-32s of header and body computed here (a writer thread's work,
        not the event loop's: zlib releases the GIL on large buffers)."""
        blob = self.header.blob()
        prefix = _PREFIX.pack(MAGIC, VERSION, len(blob), zlib.crc32(blob), zlib.crc32(self.body))
        return prefix + blob + self.body

    @staticmethod
    def prefix_size() -> int:
        return _PREFIX.size

    @staticmethod
    def header_length(prefix: bytes) -> int:
        """The JSON header's length from the fixed prefix (``prefix_size()`` bytes)."""
        if len(prefix) < _PREFIX.size:
            raise SpoolCorrupt(f"{len(prefix)} bytes: shorter than the {_PREFIX.size}-byte record prefix")
        magic, version, length, _, _ = _PREFIX.unpack_from(prefix)
        if magic != MAGIC or version != VERSION:
            raise SpoolCorrupt(f"starts {magic!r} v{version}: expected {MAGIC!r} v{VERSION}")
        if length > MAX_HEADER_BYTES:
            raise SpoolCorrupt(f"header of {length} bytes: expected at most {MAX_HEADER_BYTES}")
        return int(length)

    @classmethod
    def parse_header(cls, data: bytes) -> RecordHeader:
        """The header of a record from its first bytes (at least prefix and header); SpoolCorrupt if torn."""
        length = cls.header_length(data)
        _, _, _, crc, _ = _PREFIX.unpack_from(data)
        blob = data[_PREFIX.size : _PREFIX.size + length]
        if len(blob) != length or zlib.crc32(blob) != crc:
            raise SpoolCorrupt(f"header of {len(blob)} of {length} bytes does not match its CRC")
        try:
            h: Any = json.loads(blob)
            return RecordHeader(
                lane=str(h["lane"]),
                topic=str(h["topic"]),
                key=str(h["key"]),
                kind=RecordKind(h["kind"]),
                created=float(h["created"]),
                body_len=int(h["body_len"]),
                headers={str(k): bytes.fromhex(v) for k, v in h.get("headers", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SpoolCorrupt(f"header has a bad field: {exc!r}") from None

    @classmethod
    def decode(cls, data: bytes) -> SpoolRecord:
        """A whole record; SpoolCorrupt when the header or the body does not check."""
        header = cls.parse_header(data)
        _, _, _, _, body_crc = _PREFIX.unpack_from(data)
        body = data[_PREFIX.size + cls.header_length(data) :]
        if len(body) != header.body_len or zlib.crc32(body) != body_crc:
            raise SpoolCorrupt(f"body of {len(body)} of {header.body_len} bytes does not match its CRC")
        return cls(header, body)


@dataclass(eq=False)
class Entry:
    """One record of the index: where it is (``home``, ``name``) and what it is, never its body."""

    order: int
    header: RecordHeader
    size: int  # bytes on disk
    home: str  # the spool directory that holds it
    name: str  # its file name there
    state: EntryState = EntryState.WRITING

    @property
    def lane(self) -> str:
        return self.header.lane


@dataclass(frozen=True)
class Admission:
    """What ``SpoolIndex.admit`` decided: the entry to write (None: the new segment itself is
    dropped), and the waiting entries it removed (``dropped`` segments, ``replaced`` samples)."""

    entry: Entry | None
    dropped: list[Entry]
    replaced: list[Entry]


class SpoolIndex:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"spool bound {max_bytes} bytes: expected at least 1")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped: dict[str, int] = {}  # lane -> segments dropped because the spool was full
        self._order = 0
        self._lanes: dict[str, deque[Entry]] = {}
        self._segments: deque[Entry] = deque()  # every segment still held, oldest first

    def __len__(self) -> int:
        return sum(1 for lane in self._lanes.values() for e in lane if e.state is not EntryState.GONE)

    def entries(self) -> Iterator[Entry]:
        for lane in self._lanes.values():
            yield from (e for e in lane if e.state is not EntryState.GONE)

    def oldest(self) -> float | None:
        """When the oldest record still held was spooled (UNIX time), None when empty."""
        return min((e.header.created for e in self.entries()), default=None)

    def admit(self, header: RecordHeader, size: int, home: str, name_of: Callable[[int], str]) -> Admission:
        """Make room for a record of ``size`` bytes and add it (``WRITING``) at the end of its lane.
        ``name_of(order)`` names its file. When it does not fit even after dropping every waiting
        segment, a new segment is dropped itself; an event or a sample is taken over the bound."""
        replaced = []
        if header.kind is RecordKind.LATEST:
            for old in self._lanes.get(header.lane, ()):
                if (
                    old.state is EntryState.WAITING
                    and old.header.kind is RecordKind.LATEST
                    and old.header.topic == header.topic
                ):
                    self._remove(old)
                    replaced.append(old)
        dropped = []
        while self.bytes + size > self.max_bytes:
            victim = self._oldest_waiting_segment()
            if victim is None:
                break
            self._drop(victim)
            dropped.append(victim)
        if self.bytes + size > self.max_bytes and header.kind is RecordKind.SEGMENT:
            self.dropped[header.lane] = self.dropped.get(header.lane, 0) + 1
            return Admission(None, dropped, replaced)
        self._order += 1
        entry = Entry(self._order, header, size, home, name_of(self._order))
        self._hold(entry)
        return Admission(entry, dropped, replaced)

    def recovered(self, header: RecordHeader, size: int, home: str, name: str) -> Entry:
        """A record found on disk (a spool left behind), held at the end of its lane, waiting. It
        is taken whatever the bound: the next ``admit`` drops from the oldest segments if need be."""
        self._order += 1
        entry = Entry(self._order, header, size, home, name, EntryState.WAITING)
        self._hold(entry)
        return entry

    def _hold(self, entry: Entry) -> None:
        self._lanes.setdefault(entry.lane, deque()).append(entry)
        self.bytes += entry.size
        if entry.header.kind is RecordKind.SEGMENT:
            self._segments.append(entry)

    def stored(self, entry: Entry) -> None:
        """``entry`` is on disk: it waits for its turn."""
        if entry.state is EntryState.WRITING:
            entry.state = EntryState.WAITING

    def forget(self, entry: Entry) -> None:
        """``entry`` could not be written (or is unreadable): it is no longer held."""
        self._remove(entry)

    def next(self, lane: str) -> Entry | None:
        """The entry whose turn it is in ``lane`` when it can be sent now (on disk, not being sent)."""
        queue = self._lanes.get(lane)
        while queue and queue[0].state is EntryState.GONE:
            queue.popleft()
        if not queue:
            self._lanes.pop(lane, None)
            return None
        return queue[0] if queue[0].state is EntryState.WAITING else None

    def sending(self, entry: Entry) -> None:
        entry.state = EntryState.SENDING

    def unsent(self, entry: Entry) -> None:
        """The publish of ``entry`` failed: it waits again, first in its lane."""
        if entry.state is EntryState.SENDING:
            entry.state = EntryState.WAITING

    def delivered(self, entry: Entry) -> None:
        self._remove(entry)

    def lanes(self) -> list[str]:
        return list(self._lanes)

    def _oldest_waiting_segment(self) -> Entry | None:
        while self._segments and self._segments[0].state is EntryState.GONE:
            self._segments.popleft()
        return next((e for e in self._segments if e.state is EntryState.WAITING), None)

    def _drop(self, entry: Entry) -> None:
        self._remove(entry)
        self.dropped[entry.lane] = self.dropped.get(entry.lane, 0) + 1

    def _remove(self, entry: Entry) -> None:
        if entry.state is not EntryState.GONE:
            entry.state = EntryState.GONE
            self.bytes -= entry.size
