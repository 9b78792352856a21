"""One epoch of a stream in the packager: what a segment must be to enter it, its reorder buffer."""

from __future__ import annotations

from dataclasses import dataclass, field

from camflow.events import PartReady, SegmentReady
from camflow.keys import is_epoch, is_rendition, is_safe_key


@dataclass
class Waiting:
    """A segment that arrived before the seq it follows."""

    event: SegmentReady
    token: int


@dataclass
class Epoch:
    """An epoch's reorder buffer: ``next_seq`` is appended next, later seqs wait in ``pending``."""

    name: str
    next_seq: int = 0
    pending: dict[int, Waiting] = field(default_factory=dict)
    last_seq: int | None = None
    offline_tokens: list[int] = field(default_factory=list)
    appended: int = 0
    renditions: list[str] = field(default_factory=list)
    end_ticks: int | None = None
    timescale: int | None = None
    blocked_since: float | None = None

    def finished(self) -> bool:
        return self.last_seq is not None and self.next_seq > self.last_seq


def segment_problem(ev: SegmentReady | PartReady, prefix: str) -> str | None:
    """Why ``ev`` (a segment, or a part) cannot be packaged (a reason for the log), or None when it can."""
    if not is_epoch(ev.epoch):
        return "epoch is not of the form YYYYMMDDTHHMMSSmmmZ"
    if ev.seq < 0 or ev.duration <= 0 or ev.timescale <= 0:
        return "seq is negative or duration/timescale not positive"
    if not ev.renditions:
        return "no renditions"
    names = [r.name for r in ev.renditions]
    if len(set(names)) != len(names) or not all(is_rendition(n) for n in names):
        return f"rendition names {names} are not unique names of a-z 0-9 _ -"
    for ref in ev.renditions:
        for key in (ref.key, ref.init_key):
            if not key.startswith(prefix) or not is_safe_key(key):
                return f"key {key!r} is not a safe key under {prefix!r}"
        sized = ref.channels > 0 if ref.is_audio else ref.width > 0 and ref.height > 0
        if ref.bandwidth <= 0 or '"' in ref.codecs or not sized:
            return f"rendition {ref.name} has bandwidth/size/codecs out of range"
    return None
