"""One stream's playlists: reorder buffer per epoch, skipped segments, epochs, end of stream.

No I/O: events go in with an opaque token, and ``take_output`` gives the playlists to
write (media playlists first, then the master) and the tokens whose effects they carry.

Policy, in the order a stream lives it:

- Epochs are appended one at a time in name order (epoch names sort by time). Within the
  current epoch, seq N is appended only once N-1 is; later seqs wait in a reorder buffer.
- A skipped segment becomes an EXT-X-GAP entry, not just a discontinuity: the playlist
  timeline (and PROGRAM-DATE-TIME) stays continuous and every rendition keeps one media
  sequence number per seq. Its duration is the hole in the epoch's tick timeline
  (``start`` of the waiting segment minus the end of the last appended one), shared
  evenly when several are missing. Segments missing at the *start* of an epoch (e.g. the
  packager started mid-stream) are skipped without gap entries: nothing before them
  gives a duration.
- The current epoch is blocked when its next seq is missing while a later seq of it, or
  any segment or ``offline`` of a newer epoch, waits. After ``gap_timeout`` seconds of
  that, the missing seqs are skipped (or, when only a newer epoch waits, the rest of the
  current epoch is given up) and counted in ``stats.gaps``.
- ``offline`` with ``last_seq`` ends the epoch once every seq up to it is appended or
  skipped; when no newer epoch waits, every playlist gets EXT-X-ENDLIST. An ``offline``
  without ``last_seq`` (a v1 event) takes the highest seq known at that moment.
- The first entry of a new epoch in a playlist carries EXT-X-DISCONTINUITY (reopening an
  ended playlist). Renditions absent from a new epoch's first segment are ended and leave
  the master; a rendition missing from one segment of its epoch gets a gap entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from camflow.events import SegmentReady, StreamState, StreamStateKind
from camflow.keys import (
    is_epoch,
    is_rendition,
    is_safe_key,
    master_playlist_key,
    media_playlist_key,
    segment_key,
    stream_prefix,
)
from camflow.log import get_logger
from packager.playlist import MasterPlaylist, MediaPlaylist, PlaylistEntry, Variant


@dataclass
class PackagerStats:
    segments_appended: int = 0
    gaps: int = 0
    decode_errors: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass
class Output:
    writes: list[tuple[str, str]] = field(default_factory=list)
    done: list[int] = field(default_factory=list)


@dataclass
class _Waiting:
    event: SegmentReady
    token: int


@dataclass
class _Epoch:
    name: str
    next_seq: int = 0
    pending: dict[int, _Waiting] = field(default_factory=dict)
    last_seq: int | None = None
    offline_tokens: list[int] = field(default_factory=list)
    appended: int = 0
    renditions: list[str] = field(default_factory=list)
    end_ticks: int | None = None
    timescale: int | None = None
    blocked_since: float | None = None

    def finished(self) -> bool:
        return self.last_seq is not None and self.next_seq > self.last_seq


@dataclass
class _Rendition:
    playlist: MediaPlaylist
    map_uri: str = ""
    peak: int = 0
    bits: float = 0.0
    seconds: float = 0.0


class StreamPackager:
    def __init__(self, stream: str, *, live_window: float, gap_timeout: float, stats: PackagerStats) -> None:
        self.stream = stream
        self.stats = stats
        self._window = live_window
        self._gap_timeout = gap_timeout
        self._prefix = stream_prefix(stream)
        self._epochs: dict[str, _Epoch] = {}
        self._current: _Epoch | None = None
        self._floor: str | None = None  # newest retired epoch: anything at or before it is stale
        self._renditions: dict[str, _Rendition] = {}
        self._master = MasterPlaylist()
        self._master_text: str | None = None
        self._ended = False
        self._dirty: set[str] = set()
        self._done: list[int] = []
        self._log: Any = get_logger("packager", stream_id=stream)

    # -- events in -----------------------------------------------------------------------------

    def on_segment(self, ev: SegmentReady, token: int, now: float) -> None:
        problem = self._invalid(ev)
        if problem is None and self._stale(ev.epoch):
            problem = "epoch is older than the one being packaged"
        if problem is not None:
            self.stats.rejected += 1
            self._log.warning("segment rejected", epoch=ev.epoch, seq=ev.seq, reason=problem)
            self._done.append(token)
            return
        ep = self._epoch(ev.epoch)
        if ev.seq < ep.next_seq or ev.seq in ep.pending:
            self.stats.duplicates += 1
            self._log.debug("segment duplicate", epoch=ev.epoch, seq=ev.seq)
            self._done.append(token)
            return
        if ep.last_seq is not None and ev.seq > ep.last_seq:
            self.stats.rejected += 1
            self._log.warning("segment after last_seq", epoch=ev.epoch, seq=ev.seq, last_seq=ep.last_seq)
            self._done.append(token)
            return
        if ev.seq > ep.next_seq:
            self.stats.out_of_order += 1
            self._log.debug("segment out of order", epoch=ev.epoch, seq=ev.seq, expected=ep.next_seq)
        ep.pending[ev.seq] = _Waiting(ev, token)
        self._advance(now)

    def on_state(self, ev: StreamState, token: int, now: float) -> None:
        if ev.state is not StreamStateKind.OFFLINE:
            self._log.debug("stream state", epoch=ev.epoch, state=ev.state.value)
            self._done.append(token)
            return
        if not is_epoch(ev.epoch) or self._stale(ev.epoch):
            self._log.info("offline ignored", epoch=ev.epoch, reason="stale or malformed epoch")
            self._done.append(token)
            return
        ep = self._epoch(ev.epoch)
        last = ev.last_seq
        if last is None:
            last = max([ep.next_seq - 1, *ep.pending])
        ep.last_seq = last if ep.last_seq is None else min(ep.last_seq, last)
        for seq in [s for s in ep.pending if s > ep.last_seq]:
            self.stats.rejected += 1
            self._done.append(ep.pending.pop(seq).token)
        ep.offline_tokens.append(token)
        self._log.info("stream offline", epoch=ev.epoch, last_seq=ep.last_seq, reason=ev.reason)
        self._advance(now)

    def deadline(self) -> float | None:
        """When ``tick`` next has something to do (a gap timeout), in the clock of ``now``."""
        ep = self._current
        if ep is None or ep.blocked_since is None:
            return None
        return ep.blocked_since + self._gap_timeout

    def tick(self, now: float) -> None:
        ep = self._current
        if ep is None or ep.blocked_since is None or now - ep.blocked_since < self._gap_timeout:
            return
        ep.blocked_since = None
        if ep.pending:
            lowest = min(ep.pending)
            missing = range(ep.next_seq, lowest)
            self.stats.gaps += len(missing)
            if ep.appended:
                self._append_gaps(ep, missing, ep.pending[lowest].event)
                self._log.warning("segments skipped", epoch=ep.name, first=missing[0], count=len(missing))
            else:
                self._log.warning("epoch joined late", epoch=ep.name, first_seq=lowest, skipped=len(missing))
            ep.next_seq = lowest
        else:
            lost = 0 if ep.last_seq is None else ep.last_seq - ep.next_seq + 1
            self.stats.gaps += lost
            ep.last_seq = ep.next_seq - 1
            self._log.warning("epoch abandoned", epoch=ep.name, last_seq=ep.last_seq, lost=lost)
        self._advance(now)

    def take_output(self) -> Output:
        out = Output(done=self._done)
        self._done = []
        for name in sorted(self._dirty):
            out.writes.append(
                (media_playlist_key(self.stream, name), self._renditions[name].playlist.render())
            )
        self._dirty.clear()
        if self._master.variants:
            text = self._master.render()
            if text != self._master_text:
                out.writes.append((master_playlist_key(self.stream), text))
                self._master_text = text
        return out

    # -- the reorder buffer --------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        while True:
            ep = self._current
            if ep is None:
                if not self._epochs:
                    return
                ep = self._current = self._epochs[min(self._epochs)]
            waiting = ep.pending.pop(ep.next_seq, None)
            if waiting is not None:
                self._append(ep, waiting.event)
                self._done.append(waiting.token)
                ep.next_seq += 1
                ep.blocked_since = None
                continue
            newer = any(name > ep.name for name in self._epochs)
            if ep.finished():
                self._done.extend(ep.offline_tokens)
                ep.offline_tokens.clear()
                if not newer:
                    self._end()
                    return
                del self._epochs[ep.name]
                self._floor = ep.name
                self._current = None
                continue
            if ep.pending or newer:
                if ep.blocked_since is None:
                    ep.blocked_since = now
            else:
                ep.blocked_since = None
            return

    def _append(self, ep: _Epoch, ev: SegmentReady) -> None:
        names = [r.name for r in ev.renditions]
        if ep.appended == 0:
            ep.renditions = list(names)
            for name in [n for n in self._master.variants if n not in names]:
                self._renditions[name].playlist.end()
                self._master.remove(name)
                self._dirty.add(name)
                self._log.info("rendition dropped", epoch=ev.epoch, rendition=name)
            self._log.info("epoch started", epoch=ev.epoch, first_seq=ev.seq, renditions=names)
        for ref in ev.renditions:
            r = self._renditions.get(ref.name)
            if r is None:
                r = self._renditions[ref.name] = _Rendition(MediaPlaylist(self._window))
            if ep.appended == 0 or ref.name not in self._master.variants:
                r.peak, r.bits, r.seconds = 0, 0.0, 0.0
            if ref.name not in ep.renditions:
                ep.renditions.append(ref.name)
            r.map_uri = ref.init_key[len(self._prefix) :]
            self._add(
                r,
                ref.name,
                PlaylistEntry(
                    ev.epoch,
                    ev.seq,
                    ev.duration_s,
                    ref.key[len(self._prefix) :],
                    r.map_uri,
                    ev.wall_clock,
                    discontinuity=self._starts_epoch(r, ev.epoch),
                ),
            )
            r.peak = max(r.peak, ref.bandwidth)
            r.bits += ref.bandwidth * ev.duration_s
            r.seconds += ev.duration_s
            average = min(r.peak, round(r.bits / r.seconds))
            self._master.set(
                ref.name, Variant(f"{ref.name}.m3u8", r.peak, average, ref.codecs, ref.width, ref.height)
            )
        for name in ep.renditions:
            if name not in names:
                self._add_gap(name, ev.epoch, ev.seq, ev.duration_s, ev.wall_clock)
        ep.appended += 1
        ep.end_ticks, ep.timescale = ev.start + ev.duration, ev.timescale
        self.stats.segments_appended += 1
        self._ended = False
        self._log.debug("segment appended", epoch=ev.epoch, seq=ev.seq)

    def _append_gaps(self, ep: _Epoch, missing: range, following: SegmentReady) -> None:
        span = following.duration_s * len(missing)
        if ep.end_ticks is not None and ep.timescale == following.timescale:
            hole = (following.start - ep.end_ticks) / following.timescale
            if hole > 0:
                span = hole
        each = span / len(missing)
        for i, seq in enumerate(missing):
            pdt = following.wall_clock - span + i * each
            for name in ep.renditions:
                self._add_gap(name, ep.name, seq, each, pdt)

    def _add_gap(self, name: str, epoch: str, seq: int, duration: float, pdt: float) -> None:
        r = self._renditions[name]
        uri = segment_key(self.stream, epoch, name, seq)[len(self._prefix) :]
        entry = PlaylistEntry(
            epoch, seq, duration, uri, r.map_uri, pdt, self._starts_epoch(r, epoch), gap=True
        )
        self._add(r, name, entry)

    def _add(self, r: _Rendition, name: str, entry: PlaylistEntry) -> None:
        r.playlist.append(entry)
        self._dirty.add(name)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for name in self._master.variants:
            self._renditions[name].playlist.end()
            self._dirty.add(name)
        self._log.info("stream ended", epoch=self._current.name if self._current else None)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _starts_epoch(r: _Rendition, epoch: str) -> bool:
        last = r.playlist.last
        return last is not None and (last.epoch != epoch or r.playlist.ended)

    def _epoch(self, name: str) -> _Epoch:
        ep = self._epochs.get(name)
        if ep is None:
            ep = self._epochs[name] = _Epoch(name)
        return ep

    def _stale(self, epoch: str) -> bool:
        if self._floor is not None and epoch <= self._floor:
            return True
        return self._current is not None and epoch < self._current.name

    def _invalid(self, ev: SegmentReady) -> str | None:
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
                if not key.startswith(self._prefix) or not is_safe_key(key):
                    return f"key {key!r} is not a safe key under {self._prefix!r}"
            if ref.bandwidth <= 0 or '"' in ref.codecs or ref.width <= 0 or ref.height <= 0:
                return f"rendition {ref.name} has bandwidth/size/codecs out of range"
        return None
