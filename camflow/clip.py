"""Clip export: a time range of a stream's recording as one MP4, by stream copy (no re-encode).

``export_clip`` reads the recorded segments of the range (``camflow.recordings.EpochRun`` s, in
order) from the store a few at a time and hands each to a ``ClipMuxer``, which remuxes them with
PyAV (FFmpeg's mp4 muxer) into one fragmented MP4: the video rendition asked for and, where it was
recorded, the ``audio`` rendition, as two tracks. Bytes leave as each fragment is complete, so a
clip of hours never sits whole in memory or on disk. It starts at the keyframe at or before the
range's start: every segment starts at one.

The clip's timeline is the recording's, closed up: a segment that follows the previous one (same
epoch, next seq) keeps its timestamps; after a gap in the recording or a new epoch (a reconnect)
the next segment starts where the clip so far ends, audio and video shifted alike. An epoch whose
parameter sets differ from the ones in effect (a camera that came back at another resolution) gets
them in front of its first keyframe, so the decoder switches there. Audio that would overlap the
audio before it (a few ms at a join) is left out, counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from camflow.codecs import parameter_set_nal_units
from camflow.errors import MediaFormatError, NotFound
from camflow.keys import init_key, segment_key
from camflow.recordings import EpochRun, RecordedSegment
from camflow.store.base import Store

AUDIO = "audio"  # the recording's audio rendition (``transcode.renditions.AUDIO_NAME``)
MAX_SECONDS = 6 * 3600  # the longest clip an export makes (the edge and the CLI refuse longer)
PREFETCH = 4  # segments read ahead of the muxer
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"  # written front to back: streamable


@dataclass
class ClipStats:
    segments: int = 0
    media_seconds: float = 0.0  # of video in the clip
    bytes: int = 0
    audio_dropped: int = 0  # audio frames left out where they overlapped the audio before them
    missing: int = 0  # segments the index named that the store no longer had (retention)


@dataclass(frozen=True)
class ClipSegment:
    """One segment's bytes: video (init section + media segment), audio likewise or None;
    ``joined``: it follows the previous segment of the clip with no gap (same epoch, next seq);
    ``until``: seconds into the segment where the clip ends (None: the whole segment)."""

    video: bytes
    audio: bytes | None
    joined: bool
    until: float | None = None


class _Sink:
    """What the mp4 muxer writes, taken out by ``drain`` (write-only: the muxer never seeks back)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def _open(data: bytes) -> Any:
    try:
        return av.open(io.BytesIO(data), format="mp4")
    except av.FFmpegError as exc:
        raise MediaFormatError(f"a recorded segment is not a readable MP4: {exc}") from exc


@dataclass
class _Track:
    out: Any  # the output stream
    time_base: Fraction
    params: bytes = b""  # extradata whose parameter sets the decoder has now
    next_dts: int | None = None  # the end of what this track has so far, in its time base
    end: float = 0.0  # seconds: the latest presentation end


@dataclass
class ClipMuxer:
    """Synchronous (PyAV): ``add`` each segment in order, then ``close``; ``drain`` after each call
    gives the bytes written since."""

    first_video: bytes  # the first segment's video (init + media): the output track's template
    first_audio: bytes | None
    stats: ClipStats = field(default_factory=ClipStats)

    def __post_init__(self) -> None:
        self._sink = _Sink()
        self._out = av.open(self._sink, "w", format="mp4", options={"movflags": MOVFLAGS})
        template = _open(self.first_video)
        vstream = template.streams.video[0]
        self._video = _Track(
            self._out.add_stream_from_template(vstream),
            Fraction(vstream.time_base),
            bytes(vstream.codec_context.extradata or b""),
        )
        self._audio: _Track | None = None
        if self.first_audio is not None:
            astream = _open(self.first_audio).streams.audio[0]
            self._audio = _Track(self._out.add_stream_from_template(astream), Fraction(astream.time_base))
        self._shift = 0.0  # seconds subtracted from the recording's timestamps

    def drain(self) -> bytes:
        out = self._sink.drain()
        self.stats.bytes += len(out)
        return out

    def add(self, segment: ClipSegment) -> None:
        video = _open(segment.video)
        vstream = video.streams.video[0]
        packets = [p for p in video.demux(vstream) if p.dts is not None and p.pts is not None]
        if not packets:
            return
        tb = Fraction(vstream.time_base)
        first = float(min(p.pts for p in packets) * tb)
        if not segment.joined or self.stats.segments == 0:
            self._shift = first - self._video.end
        limit = math.inf if segment.until is None else first + segment.until
        if limit < math.inf:  # up to the last picture before the end, with what it is decoded after
            shown = [i for i, p in enumerate(packets) if float(p.pts * tb) < limit]
            packets = packets[: shown[-1] + 1] if shown else packets[:1]
        params = bytes(vstream.codec_context.extradata or b"")
        insert = params if params != self._video.params else b""
        timed = [(float(p.dts * tb) - self._shift, p, self._video) for p in packets]
        if insert:
            self._video.params = params
        if segment.audio is not None and self._audio is not None:
            audio = _open(segment.audio)
            astream = audio.streams.audio[0]
            atb = Fraction(astream.time_base)
            for p in audio.demux(astream):
                if p.dts is not None and p.pts is not None and float(p.pts * atb) < limit:
                    timed.append((float(p.dts * atb) - self._shift, p, self._audio))
        timed.sort(key=lambda item: item[0])
        start = self._video.end
        for _, packet, track in timed:
            self._mux(packet, track, insert if track is self._video and packet.is_keyframe else b"")
            if track is self._video:
                insert = b""
        self.stats.segments += 1
        self.stats.media_seconds += self._video.end - start

    def _mux(self, packet: Any, track: _Track, params: bytes) -> None:
        shift = round(self._shift / track.time_base)
        packet.dts -= shift
        packet.pts -= shift
        if track.next_dts is not None and packet.dts < track.next_dts:
            if track is self._audio:
                self.stats.audio_dropped += 1
                return
            raise MediaFormatError(f"video decode times go back at a join ({packet.dts} < {track.next_dts})")
        if params:
            packet = _with_parameter_sets(packet, params)
        duration = packet.duration or 0
        track.next_dts = packet.dts + max(duration, 1)
        track.end = max(track.end, float((packet.pts + duration) * track.time_base))
        packet.stream = track.out
        self._out.mux(packet)

    def close(self) -> None:
        self._out.close()


def _with_parameter_sets(packet: Any, extradata: bytes) -> Any:
    """The keyframe ``packet`` (length-prefixed NAL units) with the parameter sets of ``extradata``
    (an avcC / hvcC record) in front, so the decoder takes them there."""
    nalus, length_size = parameter_set_nal_units(extradata)
    if not nalus:
        return packet
    prefix = b"".join(len(n).to_bytes(length_size, "big") + n for n in nalus)
    out = av.Packet(prefix + bytes(packet))
    out.dts, out.pts, out.duration, out.time_base = packet.dts, packet.pts, packet.duration, packet.time_base
    out.is_keyframe = True
    return out


# --- from the store ----------------------------------------------------------------------------


def file_name(stream: str, start: float, end: float) -> str:
    """``cam1_20261203T140200Z-20261203T141000Z.mp4``: the stream and the range asked for, in UTC."""
    stamp = "%Y%m%dT%H%M%SZ"
    return f"{stream}_{time.strftime(stamp, time.gmtime(start))}-{time.strftime(stamp, time.gmtime(end))}.mp4"


def best_video_rendition(runs: list[EpochRun]) -> str | None:
    """The video rendition of the highest peak bandwidth over the runs (what a clip or a VOD
    playlist without ``rendition=`` takes); None when only audio was recorded."""
    peaks: dict[str, int] = {}
    for run in runs:
        for r in run.renditions.values():
            if not r.codecs.startswith("mp4a."):
                peaks[r.name] = max(peaks.get(r.name, 0), r.bandwidth)
    return max(peaks, key=lambda name: (peaks[name], name)) if peaks else None


def planned(runs: list[EpochRun], rendition: str) -> Iterator[tuple[str, RecordedSegment, bool]]:
    """(epoch, segment, joined) of each segment of ``rendition`` in the runs, in order (the runs
    name the segments that overlap the range: the first starts at or before its start)."""
    previous: tuple[str, int] | None = None
    for run in runs:
        for s in run.segments:
            if rendition in s.renditions:
                yield run.epoch, s, previous == (run.epoch, s.seq - 1)
                previous = (run.epoch, s.seq)


async def export_clip(
    store: Store,
    stream: str,
    runs: list[EpochRun],
    rendition: str,
    write: Callable[[bytes], Awaitable[None]],
    end: float | None = None,
) -> ClipStats:
    """Write the MP4 of ``runs``' segments of ``rendition`` (and their audio) through ``write`` as it
    is made, up to the wall-clock time ``end`` (None: the last segment's end). A segment the store
    no longer has is left out (a gap), counted in ``missing``."""
    inits: dict[tuple[str, str], bytes | None] = {}

    async def init(epoch: str, name: str) -> bytes | None:
        if (epoch, name) not in inits:
            try:
                inits[(epoch, name)] = await store.get(init_key(stream, epoch, name))
            except NotFound:
                inits[(epoch, name)] = None
        return inits[(epoch, name)]

    async def fetch(epoch: str, s: RecordedSegment, joined: bool) -> ClipSegment | None:
        async def one(name: str) -> bytes | None:
            head = await init(epoch, name)
            if head is None:
                return None
            try:
                return head + await store.get(segment_key(stream, epoch, name, s.seq))
            except NotFound:
                return None

        video, audio = await asyncio.gather(
            one(rendition), one(AUDIO) if AUDIO in s.renditions else asyncio.sleep(0, None)
        )
        until = end - s.wall_clock if end is not None and s.end > end else None
        return None if video is None else ClipSegment(video, audio, joined, until)

    plan = list(planned(runs, rendition))
    ahead: asyncio.Queue[asyncio.Task[ClipSegment | None] | None] = asyncio.Queue(PREFETCH)
    stats = ClipStats()

    async def reader() -> None:
        for epoch, s, joined in plan:
            await ahead.put(asyncio.create_task(fetch(epoch, s, joined)))
        await ahead.put(None)

    feeding = asyncio.create_task(reader())
    muxer: ClipMuxer | None = None
    joined_next = True
    try:
        while (task := await ahead.get()) is not None:
            segment = await task
            if segment is None:
                stats.missing += 1
                joined_next = False  # what follows a missing segment follows a gap
                continue
            if not joined_next:
                segment = dataclasses.replace(segment, joined=False)
            joined_next = True
            if muxer is None:
                audio = await _first_audio(plan, init) if segment.audio is None else segment.audio
                muxer = await asyncio.to_thread(ClipMuxer, segment.video, audio, stats)
            await asyncio.to_thread(muxer.add, segment)
            if data := muxer.drain():
                await write(data)
        if muxer is not None:
            await asyncio.to_thread(muxer.close)
            if data := muxer.drain():
                await write(data)
    finally:
        feeding.cancel()
        while not ahead.empty():
            if (pending := ahead.get_nowait()) is not None:
                pending.cancel()
    return stats


async def _first_audio(
    plan: list[tuple[str, RecordedSegment, bool]],
    init: Callable[[str, str], Awaitable[bytes | None]],
) -> bytes | None:
    """The audio track's template when the clip's first segment has no audio but a later one does."""
    for epoch, s, _ in plan:
        if AUDIO in s.renditions and (head := await init(epoch, AUDIO)) is not None:
            return head
    return None
