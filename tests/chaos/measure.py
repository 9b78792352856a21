"""What was recorded, read from the edge like a viewer would: the VOD playlist over the push's time
range (segments, their program date-times and durations), and the live playlist polled during the
run (when the live view came back after a fault)."""

from __future__ import annotations

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

    @property
    def seconds(self) -> float:
        return sum(e.duration for e in self.entries)

    @property
    def repeated(self) -> int:
        """Entries naming a segment already listed, or starting inside the time an earlier one covers."""
        seen: set[str] = set()
        end = float("-inf")
        count = 0
        for e in sorted(self.entries, key=lambda e: e.start):
            if e.uri in seen or e.start < end - OVERLAP_TOLERANCE:
                count += 1
            seen.add(e.uri)
            end = max(end, e.start + e.duration)
        return count


def recording(dep: Deployment, start: float, end: float) -> Recording:
    text = fetch(dep.http(f"/vod/{dep.stream}/{RENDITION}.m3u8?start={iso(start)}&end={iso(end)}"))
    return Recording(tuple(entries(text)) if text else ())


def settled_recording(dep: Deployment, start: float, end: float, quiet: float, limit: float) -> Recording:
    """The recording once it has stopped growing for ``quiet`` seconds (bounded by ``limit``): a backlog
    (spooled segments, a transcoder catching up) lands after the push has ended."""
    deadline = time.monotonic() + limit
    last = recording(dep, start, end)
    still_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - still_since < quiet:
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
