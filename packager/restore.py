"""A stream's playlists after a restart: what its previous owner wrote, parsed back.

No I/O: ``restore_playlists`` takes the stored master and media (and DVR) playlists and
fills in the renditions and the master of a ``StreamPackager`` that has seen no event yet;
its ``Resume`` says where the current epoch continues.
"""

from __future__ import annotations

from dataclasses import dataclass

from camflow.hls.master import AudioRendition, Variant, parse_master, parse_master_audio
from packager.playlist import LivePlaylist, MasterPlaylist


@dataclass
class RenditionPlaylists:
    """One rendition's live (and DVR) playlist, with the bandwidth it has carried so far."""

    playlist: LivePlaylist
    dvr: LivePlaylist | None = None
    map_uri: str = ""
    peak: int = 0
    bits: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class Resume:
    """Where the newest stored epoch continues: the seq after the last one every rendition has."""

    epoch: str
    renditions: list[str]  # the renditions whose playlists reached ``epoch``
    next_seq: int
    ended: bool  # every playlist carries EXT-X-ENDLIST


def restore_playlists(
    master_text: str,
    media: dict[str, str],
    dvr: dict[str, str],
    renditions: dict[str, RenditionPlaylists],
    master: MasterPlaylist,
    *,
    window: float,
    dvr_window: float,
    target: int,
) -> Resume | None:
    """Parse the stored playlists of the renditions ``master_text`` names into ``renditions``/``master``.

    ``media``/``dvr`` are the stored playlists of the renditions the master names. The
    current epoch resumes after the last seq *every* rendition has (the re-delivered event
    of a seq only some have completes the others); ``None`` when no playlist has an entry.
    """
    variants = parse_master(master_text)
    audio = parse_master_audio(master_text)
    newest: str | None = None
    named: list[tuple[str, Variant | AudioRendition]] = [*variants.items(), *audio.items()]
    for name, variant in named:
        if name not in media:
            continue
        r = renditions[name] = RenditionPlaylists(LivePlaylist.parse(media[name], window, target))
        if dvr_window > 0:
            r.dvr = (
                LivePlaylist.parse(dvr[name], dvr_window, target)
                if name in dvr
                else LivePlaylist(dvr_window, target)
            )
        last = r.playlist.last
        if last is None:
            continue
        r.map_uri = last.map_uri
        r.seconds = sum(e.duration for e in r.playlist.entries)
        if isinstance(variant, AudioRendition):
            master.set_audio(name, variant)
        else:
            r.peak, r.bits = variant.bandwidth, (variant.average_bandwidth or 0) * r.seconds
            master.set(name, variant)
        newest = last.epoch if newest is None else max(newest, last.epoch)
    if newest is None:
        return None
    reached: list[str] = []
    after: list[int] = []  # per rendition that has the epoch: the seq after its last
    firsts: list[int] = []
    lagging = False  # a rendition whose playlist has not reached this epoch at all
    for name, r in renditions.items():
        # The DVR playlist follows the segment path only (the live one may list segments from their
        # low-latency parts before their segment-ready): it says which segments were taken.
        done = r.dvr if r.dvr is not None and r.dvr.last is not None else r.playlist
        seqs = [e.seq for e in done.entries if e.epoch == newest]
        if seqs:
            reached.append(name)
            after.append(seqs[-1] + 1)
            firsts.append(seqs[0])
        elif master.has(name):
            lagging = True
    next_seq = min(firsts) if lagging else min(after)
    ended = all(r.playlist.ended for r in renditions.values())
    return Resume(newest, reached, next_seq, ended)
