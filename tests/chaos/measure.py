"""What was recorded, read from the edge like a viewer would: the VOD playlist over the push's time
range (segments, their program date-times and durations), and the live playlist polled during the
run (when the live view came back after a fault)."""

from __future__ import annotations

import itertools
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import m3u8

from .deployment import Deployment

RENDITION = "source"
OVERLAP_TOLERANCE = 0.5  # seconds two entries may overlap before one counts as a repeat
CONFIRM = 5.0  # seconds a complete recording is given before it is read again


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Entry:
    uri: str
    start: float  # program date-time, epoch seconds
    duration: float


def entries(text: str) -> list[Entry]:
    out = []
    for seg in m3u8.loads(text).segments:
        if seg.gap_tag or seg.program_date_time is None:
            continue
        out.append(Entry(seg.uri.split("?")[0], seg.program_date_time.timestamp(), float(seg.duration)))
    return out


@dataclass(frozen=True)
class Recording:
    entries: tuple[Entry, ...]

    def _walk(self) -> tuple[list[Entry], list[Entry]]:
        """The entries in time order, split into the first listing of each stretch of media and the
        repeats: a segment already listed, or one starting inside the time an earlier one covers."""
        seen: set[str] = set()
        end = float("-inf")
        once: list[Entry] = []
        repeats: list[Entry] = []
        for e in sorted(self.entries, key=lambda e: e.start):
            (repeats if e.uri in seen or e.start < end - OVERLAP_TOLERANCE else once).append(e)
            seen.add(e.uri)
            end = max(end, e.start + e.duration)
        return once, repeats

    @property
    def seconds(self) -> float:
        """Media recorded, each stretch counted once (a repeat adds nothing)."""
        return sum(e.duration for e in self._walk()[0])

    @property
    def repeated(self) -> int:
        return len(self._walk()[1])

    def gaps(self, longer_than: float) -> tuple[tuple[str, float], ...]:
        """Holes in the timeline longer than ``longer_than`` seconds: (where, seconds). A reconnect
        leaves one too (the camera sent nothing meanwhile); ``lost`` is what tells loss."""
        once = self._walk()[0]
        return tuple(
            (iso(a.start + a.duration), round(b.start - a.start - a.duration, 3))
            for a, b in itertools.pairwise(once)
            if b.start - a.start - a.duration > longer_than
        )


def recording(dep: Deployment, start: float, end: float) -> Recording:
    text = fetch(dep.http(f"/vod/{dep.stream}/{RENDITION}.m3u8?start={iso(start)}&end={iso(end)}"))
    return Recording(tuple(entries(text)) if text else ())


def settled_recording(
    dep: Deployment, start: float, end: float, complete: float, quiet: float, limit: float
) -> Recording:
    """The recording once it holds ``complete`` seconds (read once more after ``CONFIRM`` seconds: a
    late repeat would show), or else once it has not changed for ``quiet`` seconds; bounded by
    ``limit``. A backlog (spooled segments, consumers rejoining their group after a broker came back,
    a transcoder catching up) lands after the push has ended."""
    deadline = time.monotonic() + limit
    last = recording(dep, start, end)
    still_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - still_since < quiet:
        if last.seconds >= complete:
            time.sleep(CONFIRM)
            return recording(dep, start, end)
        time.sleep(1.0)
        now = recording(dep, start, end)
        if now.entries != last.entries:
            last, still_since = now, time.monotonic()
    return last


@dataclass
class LiveWatch:
    """Polls the live playlist; ``back_at(t)`` is when it first listed a segment starting at or after t."""

    dep: Deployment
    seen: list[tuple[float, float]] = field(default_factory=list)  # (wall time seen, newest segment start)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def back_at(self, t: float) -> float | None:
        return next((seen for seen, newest in self.seen if newest >= t), None)

    def _run(self) -> None:
        url = self.dep.http(f"/live/{self.dep.stream}/{RENDITION}.m3u8")
        while not self._stop.wait(0.5):
            text = fetch(url)
            listed = entries(text) if text else []
            if listed:
                self.seen.append((time.time(), max(e.start for e in listed)))
