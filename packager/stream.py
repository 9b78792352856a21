"""One stream's packaging: reorder buffer per epoch, skipped segments, epochs, end of stream.

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
  skipped. An ``offline`` without ``last_seq`` (a v1 event) takes the highest seq known
  at that moment.
- End of stream: a camera that reconnects (reboot, network blip) starts a new epoch. For
  ``offline_grace`` seconds after its epoch ended the playlists stay live (no ENDLIST):
  a new epoch arriving then just continues them with EXT-X-DISCONTINUITY, so viewers
  keep watching (hls.js keeps reloading an unchanged live playlist). After the grace
  every playlist gets EXT-X-ENDLIST. A client that saw ENDLIST stops reloading (RFC 8216
  6.3.4, hls.js), so an ended playlist is never reopened: a later epoch starts a new
  presentation at the same URI (``LivePlaylist.append``) with sequence numbers that
  continue past the old ones. The ``offline`` is committed only once this is decided.
- How a segment enters the playlists (renditions, the master, target duration, recording
  index, low-latency parts and which playlists to write) is ``packager.renditions``.
"""

from __future__ import annotations

from typing import Any

from camflow.events import PartReady, SegmentReady, StreamState, StreamStateKind
from camflow.hls.tags import AUDIO_GROUP
from camflow.keys import is_epoch, stream_prefix
from camflow.log import get_logger
from packager.epoch import Epoch, Waiting, segment_problem
from packager.lowlatency import part_problem
from packager.output import IndexAppend, Output, PackagerStats
from packager.playlist import DEFAULT_TARGET
from packager.renditions import StreamPlaylists

__all__ = ["AUDIO_GROUP", "IndexAppend", "Output", "PackagerStats", "StreamPackager"]


class StreamPackager:
    def __init__(
        self,
        stream: str,
        *,
        live_window: float,
        gap_timeout: float,
        stats: PackagerStats,
        target_duration: int = DEFAULT_TARGET,
        offline_grace: float = 0.0,
        dvr_window: float = 0.0,
        part_target: float | None = None,
    ) -> None:
        self.stream = stream
        self.stats = stats
        self._gap_timeout = gap_timeout
        self._grace = offline_grace
        self._ending_since: float | None = None
        self._prefix = stream_prefix(stream)
        self._epochs: dict[str, Epoch] = {}
        self._current: Epoch | None = None
        self._floor: str | None = None  # newest retired epoch: anything at or before it is stale
        self._log: Any = get_logger("packager", stream_id=stream)
        self._done: list[int] = []
        self._out = StreamPlaylists(
            stream,
            live_window=live_window,
            target_duration=target_duration,
            dvr_window=dvr_window,
            part_target=part_target,
            stats=stats,
            log=self._log,
        )

    # -- events in -----------------------------------------------------------------------------

    def on_segment(self, ev: SegmentReady, token: int, now: float) -> None:
        problem = segment_problem(ev, self._prefix)
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
        ep.pending[ev.seq] = Waiting(ev, token)
        self._advance(now)

    def on_part(self, ev: PartReady, token: int, now: float) -> None:
        self._done.append(token)
        if not self._out.low_latency:
            self.stats.parts_ignored += 1
            return
        problem = part_problem(ev, self._prefix)
        if problem is None and self._stale(ev.epoch):
            problem = "epoch is older than the one being packaged"
        if problem is not None:
            self.stats.rejected += 1
            self._log.warning("part rejected", epoch=ev.epoch, seq=ev.seq, part=ev.part, reason=problem)
            return
        self._out.add_part(ev, now)

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
        self._out.end_epoch(ev.epoch, ep.last_seq, now)
        self._advance(now)

    def deadline(self) -> float | None:
        """When ``tick`` next has something to do (a gap timeout, the end of the offline grace)."""
        times = []
        ep = self._current
        if ep is not None and ep.blocked_since is not None:
            times.append(ep.blocked_since + self._gap_timeout)
        if self._ending_since is not None:
            times.append(self._ending_since + self._grace)
        return min(times) if times else None

    def waiting_for_gap(self) -> bool:
        """Whether the current epoch waits for a missing segment (its gap timeout runs)."""
        ep = self._current
        return ep is not None and ep.blocked_since is not None

    def restart_gap_clock(self, at: float) -> None:
        """Give the missing segment a whole gap timeout from ``at`` (after a store outage: the
        transcoder that holds it could not write it before)."""
        ep = self._current
        if ep is not None and ep.blocked_since is not None and at > ep.blocked_since:
            ep.blocked_since = at

    def tick(self, now: float) -> None:
        ep = self._current
        if ep is not None and ep.blocked_since is not None and now - ep.blocked_since >= self._gap_timeout:
            self._skip(ep)
        self._advance(now)

    def _skip(self, ep: Epoch) -> None:
        ep.blocked_since = None
        if ep.pending:
            lowest = min(ep.pending)
            missing = range(ep.next_seq, lowest)
            self.stats.gaps += len(missing)
            if ep.appended:
                self._out.append_gaps(ep, missing, ep.pending[lowest].event)
                self._log.warning("segments skipped", epoch=ep.name, first=missing[0], count=len(missing))
            else:
                self._log.warning("epoch joined late", epoch=ep.name, first_seq=lowest, skipped=len(missing))
            ep.next_seq = lowest
        else:
            lost = 0 if ep.last_seq is None else ep.last_seq - ep.next_seq + 1
            self.stats.gaps += lost
            ep.last_seq = ep.next_seq - 1
            self._log.warning("epoch abandoned", epoch=ep.name, last_seq=ep.last_seq, lost=lost)

    def take_output(self, now: float = 0.0) -> Output:
        out = self._out.take_output(now)
        out.done, self._done = self._done, []
        return out

    def named(self) -> set[tuple[str, int]]:
        """``(epoch, seq)`` of every real segment a live or DVR playlist names now."""
        return self._out.named()

    # -- restart -------------------------------------------------------------------------------

    def restore(
        self, master: str, media: dict[str, str], dvr: dict[str, str], *, sealed: bool = False
    ) -> None:
        """Continue from the playlists this stream's previous owner wrote (before any event).

        ``media``/``dvr`` are the stored playlists of the renditions the master names
        (``packager.restore``); older epochs than the one resumed are stale. ``sealed``: the
        playlists are another region's (``packager.ownership``), so no more of the epoch resumed
        comes here: it is taken as finished, and a new epoch follows it at once.
        """
        resume = self._out.restore(master, media, dvr)
        if resume is None:
            return
        ep = self._current = self._epoch(resume.epoch)
        ep.renditions.extend(resume.renditions)
        ep.next_seq = resume.next_seq
        ep.appended = 1
        if resume.ended or sealed:
            ep.last_seq = ep.next_seq - 1
        self.stats.restored += 1
        self._log.info("stream restored", epoch=resume.epoch, next_seq=ep.next_seq, ended=resume.ended)

    # -- the reorder buffer --------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._out.now = now
        while True:
            ep = self._current
            if ep is None:
                if not self._epochs:
                    return
                ep = self._current = self._epochs[min(self._epochs)]
            waiting = ep.pending.pop(ep.next_seq, None)
            if waiting is not None:
                self._out.append(ep, waiting.event)
                self._done.append(waiting.token)
                ep.next_seq += 1
                ep.blocked_since = None
                continue
            newer = any(name > ep.name for name in self._epochs)
            if ep.finished():
                if newer:
                    self._done.extend(ep.offline_tokens)
                    ep.offline_tokens.clear()
                    self._ending_since = None
                    del self._epochs[ep.name]
                    self._floor = ep.name
                    self._current = None
                    continue
                if not self._out.ended:
                    if self._ending_since is None:
                        self._ending_since = now
                        self._log.info("epoch finished", epoch=ep.name, grace=self._grace)
                    if now - self._ending_since < self._grace:
                        return
                    self._out.end(ep.name)
                self._ending_since = None
                self._done.extend(ep.offline_tokens)
                ep.offline_tokens.clear()
                return
            if ep.pending or newer:
                if ep.blocked_since is None:
                    ep.blocked_since = now
            else:
                ep.blocked_since = None
            return

    # -- helpers -------------------------------------------------------------------------------

    def _epoch(self, name: str) -> Epoch:
        ep = self._epochs.get(name)
        if ep is None:
            ep = self._epochs[name] = Epoch(name)
        return ep

    def _stale(self, epoch: str) -> bool:
        if self._floor is not None and epoch <= self._floor:
            return True
        return self._current is not None and epoch < self._current.name
