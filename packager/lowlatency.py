"""One stream's low-latency parts: parts in, parts and early parent segments in its live playlists. No I/O.

``StreamParts`` sits beside ``packager.stream.StreamPackager`` (which owns the playlists and
feeds it ``PartReady`` events, segment appends and ends of epochs). Policy, per rendition:

- A segment's parts are listed while the live playlist ends with the segment before it (same
  epoch, seq - 1): the segment path (``SegmentReady``, with its reorder buffer, gaps, epochs)
  keeps the playlist in order, and parts only ever extend it at its end. Parts of a segment
  further ahead wait (bounded, ``PENDING_PARTS``) until the playlist gets there; parts of a
  segment already listed, or of one whose part 0 was missed, are dropped (``parts_dropped``).
- An epoch's first segment (seq 0) starts the epoch from its parts where the live playlist can
  take it (``_starts_epoch``): a new or empty playlist, an ended one (a new presentation,
  ``LivePlaylist.restart``), or one ending with the whole of an older epoch that ended
  (``offline``). ``StreamPackager`` writes a live playlist only once it has a complete segment.
- The preload hint names the next part of the segment in progress, or the next segment's part 0
  once the segment reaches its epoch's usual length (``_ends_now``).
- The segment in progress is complete when a part of a later segment arrives, or when the
  epoch ends (``offline`` with ``last_seq``). Its parent (EXTINF + URI, PDT from part 0's wall
  clock) is then appended to the live playlist only, before its ``SegmentReady``; that event
  later appends it to the DVR playlist and the recording index (``StreamPackager``), and
  finds the live playlist holding it already. A ``SegmentReady`` that comes first ends the
  segment in progress (its parts stay listed under it).
- A part that breaks the rules (longer than PART-TARGET, an index out of order, a segment that
  would round above the target duration) ends low latency for its segment: the segment's
  parts leave the playlist and the segment is listed from its ``SegmentReady``
  (``parts_abandoned``, logged once per segment).
- Parts of segments that start more than ``PARTS_KEPT_TARGETS`` target durations before the end
  of the playlist drop out. Every part key that leaves (or never entered) a playlist is handed
  out (``take_unlisted``) with the time it left, for the service to delete once no player can
  still be fetching it.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from camflow.events import PartReady, PlaylistEnd, RenditionRef
from camflow.hls.errors import PlaylistError
from camflow.hls.lowlatency import (
    PARTS_KEPT_TARGETS,
    LowLatency,
    NextSegment,
    Part,
    RenditionReport,
    can_skip_until,
)
from camflow.hls.media import MediaPlaylist
from camflow.hls.tags import format_duration
from camflow.keys import MAX_PARTS, is_rendition, is_safe_key, part_key, segment_key
from packager.epoch import segment_problem
from packager.output import PackagerStats
from packager.playlist import LivePlaylist, PlaylistEntry
from packager.restore import RenditionPlaylists

PENDING_PARTS = 64
USUAL_SEGMENTS = 3  # the last listed segments of an epoch whose length predicts where the next ends
_PART_URI_RE = re.compile(
    r"^(?P<epoch>[0-9]{8}T[0-9]{9}Z)/[a-z0-9_-]+/(?P<seq>[0-9]{8})\.[0-9]{3}\.m4s$"
)  # per rendition: parts waiting for the playlist to reach their segment


@dataclass
class InProgress:
    """The segment whose parts are listed after the playlist's last segment."""

    epoch: str
    seq: int
    map_uri: str
    wall_clock: float
    discontinuity: bool
    after: tuple[str, int] | None  # the live playlist's last segment when it started (None: empty)
    parts: list[Part] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)


@dataclass
class RenditionParts:
    listed: dict[tuple[str, int], tuple[Part, ...]] = field(default_factory=dict)  # of listed segments
    current: InProgress | None = None
    pending: deque[tuple[PartReady, RenditionRef]] = field(default_factory=deque)
    abandoned: tuple[str, int] | None = (
        None  # the segment whose parts are refused (its SegmentReady lists it)
    )
    early: set[tuple[str, int]] = field(default_factory=set)  # listed from parts, SegmentReady not in yet


def part_problem(ev: PartReady, prefix: str) -> str | None:
    """Why ``ev`` cannot be listed (a reason for the log), or None when it can."""
    if not 0 <= ev.part < MAX_PARTS:
        return f"part index {ev.part} is not 0..{MAX_PARTS - 1}"
    for ref in ev.renditions:
        if not is_rendition(ref.name) or ref.key != part_key(ev.stream, ev.epoch, ref.name, ev.seq, ev.part):
            return f"rendition {ref.name!r} key {ref.key!r} is not this part's key"
        if not ref.init_key.startswith(prefix) or not is_safe_key(ref.init_key):
            return f"init key {ref.init_key!r} is not a safe key under {prefix!r}"
    return segment_problem(ev, prefix)


class StreamParts:
    """The low-latency state of one stream's renditions (see the module docstring)."""

    def __init__(
        self,
        stream: str,
        renditions: dict[str, RenditionPlaylists],
        *,
        part_target: float,
        target: int,
        stats: PackagerStats,
        log: Any,
        open_rendition: Callable[[], RenditionPlaylists],
    ) -> None:
        self.stream = stream
        self.part_target = part_target
        self._limit = float(format_duration(part_target))
        self._target = target
        self._playlists = renditions
        self._prefix = f"streams/{stream}/"
        self.parts: dict[str, RenditionParts] = {}
        self.changed: set[str] = set()  # renditions whose live playlist changed (parts or a parent)
        self._unlisted: list[tuple[float, str]] = []
        self._stats = stats
        self._log = log
        self._open = open_rendition  # a new rendition's playlists (its first segment comes as parts)
        self._last_seqs: dict[str, int] = {}  # epoch -> its last seq (``offline``)

    # -- events in -----------------------------------------------------------------------------

    def on_part(self, ev: PartReady, now: float) -> None:
        for ref in ev.renditions:
            rp = self.parts.get(ref.name)
            if rp is None:
                rp = self.parts[ref.name] = RenditionParts()
                self.changed.update(self._playlists)  # its rendition report appears in the others
            if rp.pending or not self._offer(ref.name, rp, ev, ref, now):
                rp.pending.append((ev, ref))
                while len(rp.pending) > PENDING_PARTS:
                    self._drop(ref.name, rp.pending.popleft()[1].key, now, "too many parts ahead")
            self._retry(ref.name, rp, now)

    def after_append(self, name: str, epoch: str, seq: int, gap: bool, now: float) -> None:
        """The segment path appended ``(epoch, seq)`` to ``name``'s live playlist (or found it there)."""
        rp = self.parts.get(name)
        if rp is None:
            return
        rp.early.discard((epoch, seq))
        cur = rp.current
        if cur is not None and (cur.epoch, cur.seq) == (epoch, seq) and not gap:
            rp.listed[(epoch, seq)] = tuple(cur.parts)  # SegmentReady before the next segment's parts
            rp.current = None
        elif cur is not None and (epoch, seq) >= (cur.epoch, cur.seq):
            self._abandon(name, rp, now, "the segment path listed it (or later ones) first")
        self._retry(name, rp, now)
        self.changed.add(name)

    def end_epoch(self, epoch: str, last_seq: int, now: float) -> None:
        """``offline``: the segment in progress is complete when it is one the epoch has."""
        self._last_seqs[epoch] = last_seq
        for old in sorted(self._last_seqs)[:-4]:
            del self._last_seqs[old]
        for name, rp in self.parts.items():
            cur = rp.current
            if cur is None or cur.epoch != epoch:
                continue
            if cur.seq <= last_seq:
                self._complete(name, rp, now)
            else:
                self._abandon(name, rp, now, "segment after the epoch's last_seq")

    def in_progress(self, name: str) -> bool:
        """Whether ``name``'s live playlist lists parts of a segment in progress."""
        rp = self.parts.get(name)
        return rp is not None and rp.current is not None and bool(rp.current.parts)

    def listed_early(self, name: str, epoch: str, seq: int) -> bool:
        rp = self.parts.get(name)
        return rp is not None and (epoch, seq) in rp.early

    # -- the rules ------------------------------------------------------------------------------

    def _retry(self, name: str, rp: RenditionParts, now: float) -> None:
        while rp.pending:
            ev, ref = rp.pending[0]
            if not self._offer(name, rp, ev, ref, now):
                return
            rp.pending.popleft()

    def _offer(self, name: str, rp: RenditionParts, ev: PartReady, ref: RenditionRef, now: float) -> bool:
        """Take the part (listed or dropped): True; False when it must wait for the playlist."""
        r = self._playlists.get(name)
        here = (ev.epoch, ev.seq)
        cur = rp.current
        if cur is not None and here > (cur.epoch, cur.seq):
            self._complete(name, rp, now)  # a later segment started: the one in progress is complete
        elif cur is not None and here == (cur.epoch, cur.seq):
            if ev.part < len(cur.parts):
                self._stats.duplicates += 1  # re-delivered: listed already
                return True
            return self._extend(name, rp, cur, ev, ref, now)
        if here == rp.abandoned:
            self._drop(name, ref.key, now, None)
            return True
        starts = self._starts_epoch(r, ev)
        if not starts:
            if r is None or r.playlist.last is None or r.playlist.ended:
                return False  # the segment path starts (or restarts) the playlist
            tail = r.playlist.last
            if here <= (tail.epoch, tail.seq):
                if not self._listed(rp, ev):
                    self._drop(name, ref.key, now, "part of a segment listed already")
                return True
            if (tail.epoch, tail.seq + 1) != here:
                return False  # a segment before it is not listed yet
        if ev.part != 0:
            self._drop(name, ref.key, now, "the segment's first parts were missed")
            return True
        if r is None:
            r = self._playlists[name] = self._open()
        elif r.playlist.ended:
            r.playlist.restart()  # a new presentation at the same URI, starting with these parts
        last = r.playlist.last
        rp.current = InProgress(
            ev.epoch,
            ev.seq,
            ref.init_key[len(self._prefix) :],
            ev.wall_clock,
            ev.discontinuity or r.playlist.fresh or (last is not None and last.epoch != ev.epoch),
            None if last is None else (last.epoch, last.seq),
        )
        return self._extend(name, rp, rp.current, ev, ref, now)

    def _starts_epoch(self, r: RenditionPlaylists | None, ev: PartReady) -> bool:
        """Whether ``ev`` (of an epoch's first segment, seq 0) may start that epoch in the live playlist
        before the segment path gets there: the playlist is new, empty or ended (a new presentation), or
        ends with the whole of an older epoch that ended (``offline``). Otherwise (an older epoch may
        still grow) its parts wait for the segment path to list the segments before."""
        if ev.seq != 0:
            return False
        if r is None or r.playlist.ended or r.playlist.last is None:
            return r is None or r.playlist.last is None or r.playlist.last.epoch < ev.epoch
        last = r.playlist.last
        return last.epoch < ev.epoch and self._last_seqs.get(last.epoch) == last.seq

    def _extend(
        self, name: str, rp: RenditionParts, cur: InProgress, ev: PartReady, ref: RenditionRef, now: float
    ) -> bool:
        duration = ev.duration_s
        if ev.part != len(cur.parts):
            why = f"part {ev.part} came after part {len(cur.parts) - 1}"
        elif float(format_duration(duration)) > self._limit or duration <= 0:
            why = f"part of {duration:.3f} s is not within PART-TARGET {self._limit:.3f} s"
        elif not LivePlaylist(1.0, self._target).fits(cur.duration + duration):
            why = f"segment would be longer than the target duration {self._target} s"
        else:
            cur.parts.append(Part(ref.key[len(self._prefix) :], duration, ev.independent))
            self._stats.parts_listed += 1
            self.changed.add(name)
            return True
        self._drop(name, ref.key, now, None)
        self._abandon(name, rp, now, why)
        return True

    def _complete(self, name: str, rp: RenditionParts, now: float) -> None:
        cur, r = rp.current, self._playlists[name]
        if cur is None or not cur.parts:
            rp.current = None
            return
        last = r.playlist.last
        if r.playlist.ended or (None if last is None else (last.epoch, last.seq)) != cur.after:
            self._abandon(name, rp, now, "the playlist no longer ends with the segment before it")
            return
        rp.current = None
        entry = PlaylistEntry(
            cur.epoch,
            cur.seq,
            cur.duration,
            segment_key(self.stream, cur.epoch, name, cur.seq)[len(self._prefix) :],
            cur.map_uri,
            cur.wall_clock,
            discontinuity=cur.discontinuity,
        )
        r.playlist.append(entry)
        rp.listed[(cur.epoch, cur.seq)] = tuple(cur.parts)
        rp.early.add((cur.epoch, cur.seq))
        self._stats.parents_early += 1
        self.changed.add(name)

    def _abandon(self, name: str, rp: RenditionParts, now: float, why: str) -> None:
        cur, rp.current = rp.current, None
        if cur is None:
            return
        rp.abandoned = (cur.epoch, cur.seq)
        self._stats.parts_abandoned += 1
        self._log.warning("low latency abandoned for a segment", rendition=name, seq=cur.seq, reason=why)
        for p in cur.parts:
            self._unlisted.append((now, self._prefix + p.uri))
        self.changed.add(name)

    def _drop(self, name: str, key: str, now: float, why: str | None) -> None:
        self._stats.parts_dropped += 1
        self._unlisted.append((now, key))
        if why is not None:
            self._log.debug("part dropped", rendition=name, key=key, reason=why)

    def _listed(self, rp: RenditionParts, ev: PartReady) -> bool:
        parts = rp.listed.get((ev.epoch, ev.seq), ())
        return ev.part < len(parts)

    # -- out ------------------------------------------------------------------------------------

    def take_unlisted(self) -> list[tuple[float, str]]:
        """Part keys that left (or never entered) a playlist, with when: the service deletes them."""
        out, self._unlisted = self._unlisted, []
        return out

    def prune(self, name: str, now: float) -> None:
        """Drop the parts of segments that start too far from the end (and of those gone from the window;
        all of them once the playlist ended)."""
        rp, r = self.parts.get(name), self._playlists.get(name)
        if rp is None or r is None:
            return
        keep: set[tuple[str, int]] = set()
        back = rp.current.duration if rp.current is not None else 0.0
        # An ended playlist has no live edge: its parts go (deleted after the linger, as any other).
        for e in () if r.playlist.ended else reversed(r.playlist.entries):
            back += e.duration
            if back > PARTS_KEPT_TARGETS * r.playlist.target_duration:
                break
            keep.add((e.epoch, e.seq))
        for key in [k for k in rp.listed if k not in keep]:
            self._unlisted.extend((now, self._prefix + p.uri) for p in rp.listed.pop(key))
        rp.early.intersection_update({(e.epoch, e.seq) for e in r.playlist.entries})

    def low_latency(self, name: str, others: list[str]) -> LowLatency | None:
        """The LL tags of ``name``'s live playlist, reporting ``others`` (the master's renditions);
        None for a rendition that never had a part."""
        rp, r = self.parts.get(name), self._playlists.get(name)
        if rp is None or r is None:
            return None
        pl = r.playlist
        first = pl.media_sequence
        parts = {
            first + i: rp.listed[(e.epoch, e.seq)]
            for i, e in enumerate(pl.entries)
            if (e.epoch, e.seq) in rp.listed
        }
        cur, hint, head = rp.current, None, None
        if cur is not None:
            parts[first + len(pl.entries)] = tuple(cur.parts)
            head = NextSegment(cur.map_uri, cur.wall_clock, cur.discontinuity)
            if self._ends_now(pl, cur) or len(cur.parts) >= MAX_PARTS:
                hint = part_key(self.stream, cur.epoch, name, cur.seq + 1, 0)
            else:
                hint = part_key(self.stream, cur.epoch, name, cur.seq, len(cur.parts))
        elif pl.last is not None:
            hint = part_key(self.stream, pl.last.epoch, name, pl.last.seq + 1, 0)
        reports = []
        for other in sorted(others):
            end = self.end(other)
            if other != name and end is not None:
                msn, part = end
                if part < 0:
                    last = self._playlists[other].playlist.last
                    listed = self.parts.get(other)
                    got = (
                        ()
                        if last is None or listed is None
                        else listed.listed.get((last.epoch, last.seq), ())
                    )
                    part = len(got) - 1
                reports.append(RenditionReport(f"{other}.m3u8", msn, part if part >= 0 else None))
        return LowLatency(
            part_target=self.part_target,
            can_skip_until=can_skip_until(pl.target_duration),
            parts=parts,
            next_segment=head,
            preload_hint=None if hint is None or pl.ended else hint[len(self._prefix) :],
            reports=tuple(reports),
        )

    def _ends_now(self, pl: LivePlaylist, cur: InProgress) -> bool:
        """Whether the segment in progress is predicted complete, so the next part is the next segment's
        part 0: when another part would take it past the target duration, or within half a part target
        of the usual length of the epoch's segments (the median of its last ``USUAL_SEGMENTS`` listed)."""
        if not cur.parts:
            return False
        if not pl.fits(cur.duration + self.part_target):
            return True
        usual = [e.duration for e in pl.entries[-USUAL_SEGMENTS:] if e.epoch == cur.epoch and not e.gap]
        return bool(usual) and cur.duration + self.part_target / 2 >= statistics.median(usual)

    def end(self, name: str) -> tuple[int, int] | None:
        """``(msn, part)`` where ``name``'s live playlist ends (``PlaylistEnd``); None when it is empty."""
        r = self._playlists.get(name)
        if r is None or r.playlist.last is None:
            return None  # not written: parts of a first segment in progress wait for it to complete
        last = r.playlist.media_sequence + len(r.playlist.entries) - 1
        rp = self.parts.get(name)
        if rp is not None and rp.current is not None and rp.current.parts:
            return last + 1, len(rp.current.parts) - 1
        return last, -1

    def ends(self, names: list[str]) -> tuple[PlaylistEnd, ...]:
        return tuple(PlaylistEnd(n, *end) for n in names if (end := self.end(n)) is not None)

    def restored_early(self, epoch: str) -> list[int]:
        """After ``restore`` without a DVR playlist: the seqs of ``epoch`` listed with parts, which may
        have been listed before their segment-ready (so the segment path takes them again)."""
        seqs: list[int] = []
        for rp in self.parts.values():
            rp.early.update(k for k in rp.listed if k[0] == epoch)
            seqs.extend(seq for e, seq in rp.listed if e == epoch)
        return seqs

    # -- restart --------------------------------------------------------------------------------

    def restore(self, name: str, parsed: MediaPlaylist) -> None:
        """The parts of ``name``'s stored live playlist (``parsed``, as ``restore`` read it)."""
        ll = parsed.low_latency
        r = self._playlists.get(name)
        if ll is None or r is None:
            return
        rp = self.parts[name] = RenditionParts()
        entries = r.playlist.entries
        first = r.playlist.media_sequence
        for msn, parts in ll.parts.items():
            i = msn - first
            if 0 <= i < len(entries):
                rp.listed[(entries[i].epoch, entries[i].seq)] = parts
            elif i == len(entries) and parts and ll.next_segment is not None:
                m = _PART_URI_RE.match(parts[0].uri)
                if m is None:
                    raise PlaylistError(
                        f"stored playlist names part {parts[0].uri!r}, expected "
                        "EPOCH/RENDITION/NNNNNNNN.NNN.m4s"
                    )
                epoch, seq = m["epoch"], int(m["seq"])
                head = ll.next_segment
                map_uri = head.map_uri or (entries[-1].map_uri if entries else "")
                wall_clock = head.program_date_time or 0.0
                after = (entries[-1].epoch, entries[-1].seq) if entries else None
                rp.current = InProgress(
                    epoch, seq, map_uri, wall_clock, head.discontinuity, after, list(parts)
                )
