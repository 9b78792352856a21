"""Events as a NEWER camflow release would write them, built by hand from today's classes.

A rolling deploy runs old readers beside new writers: these stand for the new writer. Each is
a subclass of today's event with a higher minor (an added field with a default, and one inside
each rendition) or a higher major, encoded by the same ``camflow.events.encode``. This module
holds no tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from camflow.events import RawSegment, RenditionRef, SegmentReady, StreamState


@dataclass(frozen=True)
class RawSegmentNextMinor(RawSegment):
    """raw-segment at the next minor: adds ``lens`` (which lens of a multi-sensor camera)."""

    MINOR: ClassVar[int] = RawSegment.MINOR + 1

    lens: str = "wide"


@dataclass(frozen=True)
class RenditionNextMinor(RenditionRef):
    hdr: bool = False


@dataclass(frozen=True)
class SegmentReadyNextMinor(SegmentReady):
    """segment-ready at the next minor: adds ``origin`` and, in every rendition, ``hdr``."""

    MINOR: ClassVar[int] = SegmentReady.MINOR + 1

    origin: str = "transcode"


@dataclass(frozen=True)
class StreamStateNextMinor(StreamState):
    MINOR: ClassVar[int] = StreamState.MINOR + 1

    site: str = ""


@dataclass(frozen=True)
class RawSegmentNextMajor(RawSegment):
    """raw-segment at the next major: what today's reader must refuse, not misread."""

    VERSION: ClassVar[int] = RawSegment.VERSION + 1
    MINOR: ClassVar[int] = 0

    lens: str = "wide"


def as_today(event: RawSegmentNextMinor) -> RawSegment:
    """What today's reader makes of a next-minor raw segment: the fields it knows."""
    known = {name: getattr(event, name) for name in (f.name for f in fields(RawSegment))}
    return RawSegment(**known)
