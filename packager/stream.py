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
- The first entry of a new epoch in a playlist carries EXT-X-DISCONTINUITY, as does a
  segment flagged ``discontinuity`` (the camera's clock jumped). Renditions absent from a
  new epoch's first segment are ended and leave the master; a rendition missing from one
  segment of its epoch gets a gap entry.
- Target duration: fixed per playlist from configuration (``target_duration``). A segment
  too long for it (a camera GOP longer than the target) cannot be named in the live
  playlist without breaking RFC 8216 6.2.1; its time is filled with EXT-X-GAP entries of
  at most the target each (the timeline and PROGRAM-DATE-TIME stay right), it is counted
  in ``stats.overlong`` and logged with the fix. The recording keeps it: VOD playlists
  are written once and take the longest segment's duration as their target.
- Appends are idempotent per rendition (``LivePlaylist.holds``): after a restart the
  renditions' playlists may differ by the one segment a crash interrupted, and the
  re-delivered event completes only the ones that lack it (``restore``).
- Every appended segment is also handed out for the recording index (``Output.index``),
  which the service writes before the playlists.
- Low latency (``part_target`` set): parts (``on_part``) extend the live playlists at their end
  and list a segment there before its segment-ready (``packager.lowlatency``); the segment path
  then appends it to the DVR playlist and the index only. The live and DVR playlists are
  therefore written apart (``_dirty``: both, ``_ll.changed``: the live one). A live playlist (and a
  new stream's master) is written only once it holds a complete segment: players refuse a media
  playlist of parts only (hls.js ``levelEmptyError``, ffmpeg "Empty segment").
"""

from __future__ import annotations

import math
from typing import Any

from camflow.events import PartReady, RenditionRef, SegmentReady, StreamState, StreamStateKind
from camflow.hls.master import AudioRendition, Variant
from camflow.hls.media import MediaPlaylist
from camflow.hls.tags import AUDIO_GROUP
from camflow.keys import (
    dvr_playlist_key,
    is_epoch,
    master_playlist_key,
    media_playlist_key,
    segment_key,
    stream_prefix,
)
from camflow.log import get_logger
from camflow.recordings import RecordedRendition, RecordedSegment
from packager.epoch import Epoch, Waiting, segment_problem
from packager.lowlatency import StreamParts, part_problem
from packager.output import IndexAppend, Output, PackagerStats
from packager.playlist import DEFAULT_TARGET, LivePlaylist, MasterPlaylist, PlaylistEntry
from packager.restore import RenditionPlaylists, restore_playlists

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
        self._window = live_window
        self._gap_timeout = gap_timeout
        self._target = target_duration
        self._grace = offline_grace
        self._dvr_window = dvr_window
        self._ending_since: float | None = None
        self._index: list[IndexAppend] = []
        self._prefix = stream_prefix(stream)
        self._epochs: dict[str, Epoch] = {}
        self._current: Epoch | None = None
        self._floor: str | None = None  # newest retired epoch: anything at or before it is stale
        self._renditions: dict[str, RenditionPlaylists] = {}
        self._master = MasterPlaylist()
        self._master_text: str | None = None
        self._ended = False
        self._dirty: set[str] = set()
        self._done: list[int] = []
        self._log: Any = get_logger("packager", stream_id=stream)
        self._now = 0.0  # of the event in hand, for the low-latency state
        self._ll: StreamParts | None = None
        if part_target is not None:
            self._ll = StreamParts(
                stream,
                self._renditions,
                part_target=part_target,
                target=target_duration,
                stats=stats,
                log=self._log,
                open_rendition=self._new_rendition,
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
        if self._ll is None:
            self.stats.parts_ignored += 1
            return
        problem = part_problem(ev, self._prefix)
        if problem is None and self._stale(ev.epoch):
            problem = "epoch is older than the one being packaged"
        if problem is not None:
            self.stats.rejected += 1
            self._log.warning("part rejected", epoch=ev.epoch, seq=ev.seq, part=ev.part, reason=problem)
            return
        self._ll.on_part(ev, now)
        if not self._master.variants:  # a new stream's first parts: its master names the renditions now
            self._announce_parts(ev)

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
        if self._ll is not None:
            self._ll.end_epoch(ev.epoch, ep.last_seq, now)
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

    def take_output(self, now: float = 0.0) -> Output:
        out = Output(index=self._index, done=self._done)
        self._index, self._done = [], []
        live = set(self._dirty)
        if self._ll is not None and self._ll.changed:  # every LL playlist reports the others' ends
            live |= {n for n in (*self._ll.changed, *self._ll.parts) if n in self._renditions}
            self._ll.changed.clear()
        for name in sorted(live):
            r = self._renditions[name]
            ll = None
            if self._ll is not None:
                self._ll.prune(name, now)
                ll = self._ll.low_latency(name, self._master.names())
            if r.playlist.last is not None:  # players refuse one without a complete segment (docs)
                out.writes.append((media_playlist_key(self.stream, name), r.playlist.render(ll)))
            if r.dvr is not None and name in self._dirty:
                out.writes.append((dvr_playlist_key(self.stream, name), r.dvr.render()))
        self._dirty.clear()
        if self._ll is not None:
            out.unlisted = self._ll.take_unlisted()
            if live:
                out.ends = self._ll.ends(sorted(self._master.names()))
        if self._master.variants and any(r.playlist.last is not None for r in self._renditions.values()):
            text = self._master.render()
            if text != self._master_text:
                out.writes.append((master_playlist_key(self.stream), text))
                self._master_text = text
        return out

    def named(self) -> set[tuple[str, int]]:
        """``(epoch, seq)`` of every real segment a live or DVR playlist names now."""
        out: set[tuple[str, int]] = set()
        for r in self._renditions.values():
            for pl in (r.playlist, r.dvr):
                if pl is not None:
                    out.update((e.epoch, e.seq) for e in pl.entries if not e.gap)
        return out

    # -- restart -------------------------------------------------------------------------------

    def restore(self, master: str, media: dict[str, str], dvr: dict[str, str]) -> None:
        """Continue from the playlists this stream's previous owner wrote (before any event).

        ``media``/``dvr`` are the stored playlists of the renditions the master names
        (``packager.restore``); older epochs than the one resumed are stale.
        """
        resume = restore_playlists(
            master,
            media,
            dvr,
            self._renditions,
            self._master,
            window=self._window,
            dvr_window=self._dvr_window,
            target=self._target,
        )
        if resume is None:
            return
        next_seq = resume.next_seq
        if self._ll is not None:
            for name, text in media.items():
                self._ll.restore(name, MediaPlaylist.parse(text))
            if self._dvr_window <= 0:  # segments listed from parts may wait for their segment-ready
                next_seq = min([next_seq, *self._ll.restored_early(resume.epoch)])
        ep = self._current = self._epoch(resume.epoch)
        ep.renditions.extend(resume.renditions)
        ep.next_seq = next_seq
        ep.appended = 1
        self._ended = resume.ended
        if self._ended:
            ep.last_seq = ep.next_seq - 1
        self._master_text = master
        self.stats.restored += 1
        self._log.info("stream restored", epoch=resume.epoch, next_seq=ep.next_seq, ended=self._ended)

    # -- the reorder buffer --------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._now = now
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
                if newer:
                    self._done.extend(ep.offline_tokens)
                    ep.offline_tokens.clear()
                    self._ending_since = None
                    del self._epochs[ep.name]
                    self._floor = ep.name
                    self._current = None
                    continue
                if not self._ended:
                    if self._ending_since is None:
                        self._ending_since = now
                        self._log.info("epoch finished", epoch=ep.name, grace=self._grace)
                    if now - self._ending_since < self._grace:
                        return
                    self._end()
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

    def _append(self, ep: Epoch, ev: SegmentReady) -> None:
        names = [r.name for r in ev.renditions]
        if ep.appended == 0:
            ep.renditions = list(names)
            for name in [n for n in self._master.names() if n not in names]:
                self._renditions[name].playlist.end()
                if (dvr := self._renditions[name].dvr) is not None:
                    dvr.end()
                self._master.remove(name)
                self._dirty.add(name)
                self._log.info("rendition dropped", epoch=ev.epoch, rendition=name)
            self._log.info("epoch started", epoch=ev.epoch, first_seq=ev.seq, renditions=names)
        audio = next((ref for ref in ev.renditions if ref.is_audio), None)
        overlong = not LivePlaylist(1.0, self._target).fits(ev.duration_s)
        if overlong:
            self.stats.overlong += 1
            self._log.warning(
                "segment longer than the target duration",
                epoch=ev.epoch,
                seq=ev.seq,
                duration=round(ev.duration_s, 3),
                target_duration=self._target,
                fix="raise --target-duration or shorten the camera's keyframe interval",
            )
        for ref in ev.renditions:
            r = self._renditions.get(ref.name)
            if r is None:
                r = self._renditions[ref.name] = self._new_rendition()
            if ep.appended == 0 or not self._master.has(ref.name):
                r.peak, r.bits, r.seconds = 0, 0.0, 0.0
            if ref.name not in ep.renditions:
                ep.renditions.append(ref.name)
            r.map_uri = ref.init_key[len(self._prefix) :]
            to_live, to_dvr = self._lacks(r, ev.epoch, ev.seq)
            early = self._ll is not None and self._ll.listed_early(ref.name, ev.epoch, ev.seq)
            if not (to_live or to_dvr or early):
                continue  # re-delivered after a restart: this rendition has it already
            # parts may have listed it in the live playlist already: then it goes to the DVR one only
            into = r.playlist if to_live or r.dvr is None else r.dvr
            entry = PlaylistEntry(
                ev.epoch,
                ev.seq,
                ev.duration_s,
                ref.key[len(self._prefix) :],
                r.map_uri,
                ev.wall_clock,
                discontinuity=self._starts_epoch(into, ev.epoch) or ev.discontinuity,
            )
            if overlong:
                self._add_pieces(r, ref.name, entry, live=to_live, dvr=to_dvr)
            else:
                self._add(r, ref.name, entry, live=to_live, dvr=to_dvr)
            r.peak = max(r.peak, ref.bandwidth)
            r.bits += ref.bandwidth * ev.duration_s
            r.seconds += ev.duration_s
            self._announce(ref, audio, r.peak, min(r.peak, round(r.bits / r.seconds)))
        for name in ep.renditions:
            if name not in names:
                self._add_gap(name, ev.epoch, ev.seq, ev.duration_s, ev.wall_clock)
        self._index.append(
            IndexAppend(
                ev.epoch,
                RecordedSegment(ev.seq, ev.wall_clock, ev.duration_s, tuple(names)),
                tuple(
                    RecordedRendition(
                        ref.name, ref.width, ref.height, ref.codecs, ref.bandwidth, ref.frame_rate
                    )
                    for ref in ev.renditions
                ),
            )
        )
        ep.appended += 1
        ep.end_ticks, ep.timescale = ev.start + ev.duration, ev.timescale
        self._ended = False
        self.stats.segments_appended += 1
        self._log.debug("segment appended", epoch=ev.epoch, seq=ev.seq)

    def _announce(self, ref: RenditionRef, audio: RenditionRef | None, peak: int, average: int) -> None:
        """Name ``ref``'s rendition in the master (a variant, or an audio rendition)."""
        if ref.is_audio:
            self._master.set_audio(
                ref.name, AudioRendition(AUDIO_GROUP, ref.name, f"{ref.name}.m3u8", channels=ref.channels)
            )
            return
        # A variant plays with the audio group: its BANDWIDTH and CODECS count the audio too.
        extra = audio.bandwidth if audio is not None else 0
        self._master.set(
            ref.name,
            Variant(
                f"{ref.name}.m3u8",
                peak + extra,
                average + extra,
                ref.codecs if audio is None else f"{ref.codecs},{audio.codecs}",
                ref.width,
                ref.height,
                ref.frame_rate,
                AUDIO_GROUP if audio is not None else None,
            ),
        )

    def _announce_parts(self, ev: PartReady) -> None:
        """The master of a stream whose first segment is still in progress, from the renditions its parts
        listed (bandwidth: the part's; the first segment-ready sets the segments' figures)."""
        assert self._ll is not None
        listed = [ref for ref in ev.renditions if self._ll.in_progress(ref.name)]
        audio = next((ref for ref in listed if ref.is_audio), None)
        for ref in listed:
            self._announce(ref, audio, ref.bandwidth, ref.bandwidth)

    def _new_rendition(self) -> RenditionPlaylists:
        return RenditionPlaylists(
            LivePlaylist(self._window, self._target),
            LivePlaylist(self._dvr_window, self._target) if self._dvr_window > 0 else None,
        )

    def _append_gaps(self, ep: Epoch, missing: range, following: SegmentReady) -> None:
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
        live, dvr = self._lacks(r, epoch, seq)
        if not (live or dvr):
            return
        uri = segment_key(self.stream, epoch, name, seq)[len(self._prefix) :]
        entry = PlaylistEntry(
            epoch, seq, duration, uri, r.map_uri, pdt, self._starts_epoch(r.playlist, epoch), gap=True
        )
        if r.playlist.fits(duration):
            self._add(r, name, entry, live=live, dvr=dvr)
        else:
            self._add_pieces(r, name, entry, live=live, dvr=dvr)

    def _lacks(self, r: RenditionPlaylists, epoch: str, seq: int) -> tuple[bool, bool]:
        """Whether the live and the DVR playlist still lack segment ``seq`` of ``epoch``."""
        return not r.playlist.holds(epoch, seq), r.dvr is not None and not r.dvr.holds(epoch, seq)

    def _add_pieces(
        self, r: RenditionPlaylists, name: str, entry: PlaylistEntry, *, live: bool, dvr: bool
    ) -> None:
        """``entry``'s time as EXT-X-GAP entries of at most the target duration each."""
        count = math.ceil(entry.duration / r.playlist.target_duration)
        each = entry.duration / count
        start = entry.program_date_time
        for i in range(count):
            pdt = None if start is None else start + i * each
            piece = PlaylistEntry(
                entry.epoch,
                entry.seq,
                each,
                entry.uri,
                entry.map_uri,
                pdt,
                entry.discontinuity and i == 0,
                True,
            )
            self._add(r, name, piece, live=live, dvr=dvr)

    def _add(self, r: RenditionPlaylists, name: str, entry: PlaylistEntry, *, live: bool, dvr: bool) -> None:
        if live:
            r.playlist.append(entry)
        if dvr and r.dvr is not None:
            r.dvr.append(entry)
        self._dirty.add(name)
        if self._ll is not None:
            self._ll.after_append(name, entry.epoch, entry.seq, entry.gap, self._now)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for name in self._master.names():
            r = self._renditions[name]
            r.playlist.end()
            if r.dvr is not None:
                r.dvr.end()
            self._dirty.add(name)
        self._log.info("stream ended", epoch=self._current.name if self._current else None)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _starts_epoch(playlist: LivePlaylist, epoch: str) -> bool:
        last = playlist.last
        return last is not None and (last.epoch != epoch or playlist.ended)

    def _epoch(self, name: str) -> Epoch:
        ep = self._epochs.get(name)
        if ep is None:
            ep = self._epochs[name] = Epoch(name)
        return ep

    def _stale(self, epoch: str) -> bool:
        if self._floor is not None and epoch <= self._floor:
            return True
        return self._current is not None and epoch < self._current.name
