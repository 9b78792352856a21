"""One stream's playlists: each rendition's live and DVR playlist, the master, what to write.

No I/O. ``StreamPackager`` (``packager.stream``) decides *which* segment comes next (epochs,
reorder buffer, gaps, end of stream); this module owns *how* it enters the playlists:

- ``append`` puts a segment in every rendition's playlists and hands it out for the recording
  index (``Output.index``, written by the service before the playlists). Appends are
  idempotent per rendition (``LivePlaylist.holds``): after a restart the renditions'
  playlists may differ by the one segment a crash interrupted, and the re-delivered event
  completes only the ones that lack it (``restore``).
- Renditions absent from a new epoch's first segment are ended and leave the master; a
  rendition missing from one segment of its epoch gets a gap entry (``append_gaps`` fills
  a skipped seq the same way). The first entry of a new epoch carries EXT-X-DISCONTINUITY.
- Target duration: fixed per playlist (``target_duration``). A segment too long for it is
  listed as EXT-X-GAP entries of at most the target each, counted in ``stats.overlong`` and
  logged with the fix; the recording keeps it (VOD playlists take the longest segment's
  duration as their target).
- The master names each rendition (a variant, or an audio rendition) with its peak and
  average bandwidth so far; ``end`` gives every playlist EXT-X-ENDLIST.
- Low latency (``part_target`` set): parts (``add_part``) extend the live playlists
  (``packager.lowlatency``); a segment they listed early goes to the DVR playlist only. The
  live and DVR playlists are therefore written apart (``_dirty``: both, ``_ll.changed``: the
  live one). A live playlist is written only once it holds a complete segment: players refuse a
  media playlist of parts only. A part's renditions may come in several part-readys (copies
  first, encoded rungs later): the master names each once its own parts made its playlist
  written (``_announce_parts``), so it never names a playlist not written yet.
"""

from __future__ import annotations

import math
from typing import Any

from camflow.events import PartReady, RenditionRef, SegmentReady
from camflow.hls.master import AudioRendition, Variant
from camflow.hls.media import MediaPlaylist
from camflow.hls.tags import AUDIO_GROUP
from camflow.keys import dvr_playlist_key, master_playlist_key, media_playlist_key, segment_key, stream_prefix
from camflow.recordings import RecordedRendition, RecordedSegment
from packager.epoch import Epoch
from packager.lowlatency import StreamParts
from packager.output import IndexAppend, Output, PackagerStats
from packager.playlist import LivePlaylist, MasterPlaylist, PlaylistEntry
from packager.restore import RenditionPlaylists, Resume, restore_playlists


class StreamPlaylists:
    """The live and DVR playlists of every rendition of one stream, its master, and what changed."""

    def __init__(
        self,
        stream: str,
        *,
        live_window: float,
        target_duration: int,
        dvr_window: float,
        part_target: float | None,
        stats: PackagerStats,
        log: Any,
    ) -> None:
        self.stream = stream
        self.stats = stats
        self._log = log
        self._window = live_window
        self._target = target_duration
        self._dvr_window = dvr_window
        self._prefix = stream_prefix(stream)
        self._renditions: dict[str, RenditionPlaylists] = {}
        self._master = MasterPlaylist()
        self._master_text: str | None = None
        self._dirty: set[str] = set()
        self._index: list[IndexAppend] = []
        self.ended = False  # every playlist carries EXT-X-ENDLIST
        self.now = 0.0  # of the event in hand, for the low-latency state
        self._ll: StreamParts | None = None
        self._part_audio: RenditionRef | None = None  # the audio of the latest part that had one
        if part_target is not None:
            self._ll = StreamParts(
                stream,
                self._renditions,
                part_target=part_target,
                target=target_duration,
                stats=stats,
                log=log,
                open_rendition=self._new_rendition,
            )

    @property
    def low_latency(self) -> bool:
        return self._ll is not None

    def add_part(self, ev: PartReady, now: float) -> None:
        """A checked part: into the live playlists (low latency on)."""
        assert self._ll is not None
        self._ll.on_part(ev, now)
        self._announce_parts(ev)

    def end_epoch(self, epoch: str, last_seq: int, now: float) -> None:
        """The epoch ends at ``last_seq``: its parts past it are dropped (low latency)."""
        if self._ll is not None:
            self._ll.end_epoch(epoch, last_seq, now)

    def restore(self, master: str, media: dict[str, str], dvr: dict[str, str]) -> Resume | None:
        """Take up the stored playlists (``packager.restore``); where the current epoch continues."""
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
            return None
        next_seq = resume.next_seq
        if self._ll is not None:
            for name, text in media.items():
                self._ll.restore(name, MediaPlaylist.parse(text))
            if self._dvr_window <= 0:  # segments listed from parts may wait for their segment-ready
                next_seq = min([next_seq, *self._ll.restored_early(resume.epoch)])
        self.ended = resume.ended
        self._master_text = master
        return Resume(resume.epoch, resume.renditions, next_seq, resume.ended)

    def take_output(self, now: float = 0.0) -> Output:
        out = Output(index=self._index)
        self._index = []
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

    def append(self, ep: Epoch, ev: SegmentReady) -> None:
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
        self.ended = False
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
        """Name in the master each rendition of ``ev`` that it lacks once its live playlist is written
        (a complete segment) and lists parts after it: a new stream's renditions, before their first
        segment-ready, each as its own parts complete its first segment (a part's renditions come in
        more than one event: the copies first, the encoded rungs later). Bandwidth: the part's; the
        segment-readys set the segments' figures."""
        assert self._ll is not None
        fresh = []
        for ref in ev.renditions:
            if ref.is_audio:
                self._part_audio = ref
            r = self._renditions.get(ref.name)
            written = r is not None and r.playlist.last is not None and not r.playlist.ended
            if written and not self._master.has(ref.name) and self._ll.in_progress(ref.name):
                fresh.append(ref)
        # audio first: a variant names the audio group only once the master has its rendition
        for ref in sorted(fresh, key=lambda ref: not ref.is_audio):
            audio = self._part_audio
            named = audio is not None and audio.name in self._master.audio
            self._announce(ref, audio if named else None, ref.bandwidth, ref.bandwidth)

    def _new_rendition(self) -> RenditionPlaylists:
        return RenditionPlaylists(
            LivePlaylist(self._window, self._target),
            LivePlaylist(self._dvr_window, self._target) if self._dvr_window > 0 else None,
        )

    def append_gaps(self, ep: Epoch, missing: range, following: SegmentReady) -> None:
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
            self._ll.after_append(name, entry.epoch, entry.seq, entry.gap, self.now)

    def end(self, epoch: str | None) -> None:
        if self.ended:
            return
        self.ended = True
        for name in self._master.names():
            r = self._renditions[name]
            r.playlist.end()
            if r.dvr is not None:
                r.dvr.end()
            self._dirty.add(name)
        self._log.info("stream ended", epoch=epoch)

    @staticmethod
    def _starts_epoch(playlist: LivePlaylist, epoch: str) -> bool:
        last = playlist.last
        return last is not None and (last.epoch != epoch or playlist.ended)
