"""One stream's low-latency parts in, every low-latency rendition's part out: the ordered, stateful
half of the part worker (``transcode.parts`` feeds it, one thread per stream).

Per raw part (``camflow.events.RawPart``: an init section and one fragment), in two calls from
the stream's thread, so the quick copies are announced while the rungs encode: ``begin`` gives the
copies and audio, ``finish`` the encoded rungs (``process``: both at once):

- the copies (``source`` of a browser-playable H.264 camera, ``source-hevc`` of an H.265 one) and
  ``audio`` are stream copies of the part's samples, through the segment workers' own functions
  (``transcode.renditions.copy_rendition``, ``audio_rendition``): the same init section, the
  samples' times and durations unchanged. They need no state: every part gets them.
- the encoded rungs (``transcode.ladder``; an H.265 camera's ``source`` too) come from ONE decoder
  and one persistent low-delay libx264 encoder per rung for the stream (``PartRung``): a part is a
  few pictures, far too short to start an encoder on. A segment's first part (``independent``)
  forces an IDR, so a rung's parts and its segments (encoded apart by the segment workers) start
  their independent pictures at the same times. A rung's part holds the packets its encoder gave
  while the part's pictures went in, each lasting as long as the source picture of the same time.

State is lost when the stream moves to another owner (a crash, a rebalance) or goes idle: encoding
starts again at the next independent part; the rungs of the parts before it are skipped (counted),
the copies still go out. A part that is not the one after the last (a part lost on the way) does
the same. A source with B-frames: the decoder holds back its reorder delay, so a rung's part ends
that many pictures early and the next part starts with them. A segment's ``last`` part (ingest
knows it: the next unit was the next segment's IDR) drains the decoder, so the rung's parts hold
every picture of the segment; the encoders need no flush (no lookahead, no B-frames: each picture's
packet comes out at once) and go on, the next segment's part 0 forcing an IDR. Without ``last``
(a part lost, or a producer that does not set it) the pictures still held when the next segment
starts are dropped (counted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
from av.video.frame import PictureType

from camflow.errors import MediaFormatError
from camflow.events import RawPart
from camflow.mp4 import MOVFLAGS, composition_offsets, shift_composition_offsets
from transcode.encoder import (
    RenditionMedia,
    ScalerCascade,
    codecs_of,
    nominal_rate,
    open_rung_stream,
    place,
    scaled_size,
)
from transcode.errors import BadSegment
from transcode.ladder import Rung
from transcode.renditions import (
    QUICK_OPEN,
    VP8_CODECS,
    Plan,
    audio_rendition,
    copy_rendition,
    demux_video,
    frame_rate,
    plan_ladder,
    raw_format,
)

Signature = tuple[str, int, int, bytes]  # codec, width, height, parameter sets: a change restarts the rungs


@dataclass(frozen=True)
class PartMedia:
    """What one raw part became: its renditions (copies, rungs, audio) and what it did not get."""

    renditions: tuple[RenditionMedia, ...]
    rungs_skipped: int = 0  # encoded rungs this part has no object of (waiting for an independent part)
    duplicate: bool = False  # already done (delivered again after a rebalance): nothing was made
    tail_dropped: int = 0  # pictures a B-frame source's decoder still held at the next segment (no ``last``)


class PartRung:
    """A persistent low-delay libx264 encoder of one rung of one stream, and each part's muxing."""

    def __init__(self, name: str, rung: Rung, size: tuple[int, int], time_base: Fraction, rate: Fraction):
        self.name = name
        self.width, self.height = size
        self.time_base = time_base
        self._out = av.open(io.BytesIO(), "w", format="mp4", options={"movflags": MOVFLAGS})
        self._stream: Any = open_rung_stream(self._out, rung, size, time_base, rate, 1, low_delay=True)
        # Opens the encoder and fills the stream's parameters, which each part's muxer copies: the
        # same init section as a segment worker's muxer of the same settings writes.
        self._out.start_encoding()
        self.codecs = codecs_of(self._stream.codec_context.extradata)
        self.seconds = 0.0

    def encode(self, picture: av.VideoFrame, key: bool) -> list[av.Packet[Any]]:
        started = time.perf_counter()
        picture.pict_type = PictureType.I if key else PictureType.NONE  # I: an IDR (forced-idr)
        packets: list[av.Packet[Any]] = self._stream.encode(picture)
        self.seconds += time.perf_counter() - started
        return packets

    def part(self, packets: list[av.Packet[Any]], durations: dict[int, int], rate: float) -> RenditionMedia:
        """The part's CMAF fragment of ``packets`` (each lasting as its source picture did)."""
        started = time.perf_counter()
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as out:
            stream = out.add_stream_from_template(self._stream)
            stream.time_base = self.time_base
            for packet in packets:
                assert packet.pts is not None
                packet.duration = durations.get(packet.pts) or _typical(durations)
                packet.stream = stream
                out.mux(packet)
        init, media = place(buf.getvalue(), packets[0].dts)
        self.seconds += time.perf_counter() - started
        seconds, self.seconds = self.seconds, 0.0
        return RenditionMedia(self.name, self.width, self.height, self.codecs, init, media, rate, seconds)

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):  # an encoder that never muxed: nothing to keep
            self._out.close()


def _typical(durations: dict[int, int]) -> int:
    return max(1, sorted(durations.values())[len(durations) // 2]) if durations else 3000


class StreamParts:
    """The ordered part state of one stream: call ``process`` with its parts in order, from one thread."""

    def __init__(self, stream: str, ladder: tuple[Rung, ...]) -> None:
        self.stream = stream
        self.ladder = ladder
        self.epoch = ""
        self.last: tuple[int, int] | None = None  # (seq, part) of the last part processed
        self.synced = False  # the decoder and encoders hold this segment's pictures so far
        self._signature: Signature | None = None
        self._decoder: Any = None
        self._rungs: list[PartRung] = []
        self._cascade: ScalerCascade | None = None
        self._shift = 0  # added to each picture's stored composition offset (see ``_process``)
        self._durations: dict[int, int] = {}  # pts -> duration of the pictures the decoder may still hold
        self._pending: tuple[list[av.Packet[Any]], float, bool, bool] | None = None  # ``finish``'s part

    @property
    def encoding(self) -> bool:
        """Whether encoders are open (an idle stream's are closed: ``close``)."""
        return bool(self._rungs)

    def process(self, part: RawPart) -> PartMedia:
        """All of ``part``'s renditions at once (``begin``, then ``finish``)."""
        first = self.begin(part)
        rungs = self.finish()
        return dataclasses.replace(first, renditions=self._ranked((*first.renditions, *rungs)))

    def begin(self, part: RawPart) -> PartMedia:
        """``part``'s copies and audio (quick: no encoding), ready to announce; the encoded rungs
        follow from ``finish``, which must be called next, before the next part's ``begin``."""
        if self._pending is not None:  # the last part's rungs were never encoded: start again
            self._pending, self.synced = None, False
        if part.epoch != self.epoch:
            self.reset()
            self.epoch = part.epoch
        elif part.discontinuity and part.part == 0:  # the camera's clock jumped: fresh encoders
            self.close()
        position = (part.seq, part.part)
        if self.last is not None and position <= self.last:
            return PartMedia((), duplicate=True)
        follows = self.last is not None and position in (
            (self.last[0], self.last[1] + 1),
            (self.last[0] + 1, 0),
        )
        self.last = position
        try:
            return self._begin(part, follows)
        except BadSegment:
            self.synced = False  # the encoders may be mid-part: start again at an independent part
            raise

    def finish(self) -> tuple[RenditionMedia, ...]:
        """The encoded rungs of the part ``begin`` took (none when it skipped them), in ladder order."""
        pending, self._pending = self._pending, None
        if pending is None:
            return ()
        try:
            return self._ranked(tuple(self._encode(*pending)))
        except BadSegment:
            self.synced = False
            raise

    def _begin(self, part: RawPart, follows: bool) -> PartMedia:
        data = part.data
        try:
            container = av.open(io.BytesIO(data), "r", format=raw_format(data), options=QUICK_OPEN)
        except (av.error.FFmpegError, ValueError) as exc:
            raise BadSegment(f"raw part is not a readable fMP4: {exc}") from exc
        with container:
            src, ctx, packets = demux_video(container, "raw part")
            codecs = VP8_CODECS if ctx.name == "vp8" else codecs_of(ctx.extradata)
            plan = plan_ladder(self.ladder, codecs, ctx.format.name if ctx.format else None, ctx.height)
            rate = frame_rate(packets, src.time_base or Fraction(1, 90_000))
            offsets = _offsets(data, src.id, len(packets))
            copies = [_copy(name, packets, src, codecs, rate, offsets) for name in plan.copies]
            skipped, dropped = 0, 0
            if plan.encodes:
                signature = (ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b""))
                going = self.synced and follows and signature == self._signature
                if part.independent and not (going and part.part > 0):
                    dropped = self._restart(src, plan, signature, packets)
                    # FFmpeg's shift of this part's composition offsets: every later part's
                    # pictures get the same, so the stream's times run on across parts
                    self._shift = (packets[0].pts or 0) - (packets[0].dts or 0) - (offsets or [0])[0]
                elif not going:
                    self.synced = False
                if offsets is not None:
                    for packet, offset in zip(packets, offsets, strict=True):
                        packet.pts = (packet.dts or 0) + offset + self._shift
                if self.synced:  # the packets outlive their container: ``finish`` decodes them
                    self._pending = (packets, float(rate), part.independent, part.last)
                else:
                    skipped = len(plan.encodes)
        audio = audio_rendition(data, QUICK_OPEN) if raw_format(data) != "ivf" else None
        video = self._ranked(tuple(copies))
        return PartMedia(video if audio is None else (*video, audio), skipped, tail_dropped=dropped)

    def _ranked(self, renditions: tuple[RenditionMedia, ...]) -> tuple[RenditionMedia, ...]:
        """Video renditions in ladder order (``source`` where the ladder has it), audio last."""
        ranked = {r.name: i for i, r in enumerate(self.ladder)}
        return tuple(sorted(renditions, key=lambda m: (m.channels > 0, ranked.get(m.name, len(self.ladder)))))

    def _restart(self, src: Any, plan: Plan, signature: Signature, packets: list[av.Packet[Any]]) -> int:
        """A segment starts (or the rungs start again): a new decoder (the old one's held pictures are
        dropped and counted); the rungs' encoders are kept unless the source changed, and force an
        IDR on the first picture. A key picture inside a segment needs none of this: the decoder
        goes on and the first picture out of it in that part is encoded as an IDR."""
        dropped = 0
        if self._decoder is not None:
            with contextlib.suppress(av.error.FFmpegError):
                dropped = sum(1 for _ in self._decoder.decode(None))
        if signature != self._signature or not self._rungs:
            self._close_rungs()
            time_base: Fraction = src.time_base or Fraction(1, 90_000)
            rate = nominal_rate(_rate_of(packets, time_base))
            src_w, src_h = src.codec_context.width, src.codec_context.height
            sizes = [scaled_size(src_w, src_h, height) for _, _, height in plan.encodes]
            self._rungs = [
                PartRung(name, rung, size, time_base, rate)
                for (name, rung, _), size in zip(plan.encodes, sizes, strict=True)
            ]
            self._cascade = ScalerCascade(sizes)
            self._signature = signature
        decoder: Any = av.CodecContext.create(src.codec_context.name, "r")
        decoder.extradata = src.codec_context.extradata
        decoder.thread_count = 1  # frame threads would hold pictures back
        self._decoder = decoder
        self._durations = {}
        self.synced = True
        return dropped

    def _encode(
        self, packets: list[av.Packet[Any]], rate: float, independent: bool, last: bool
    ) -> Iterator[RenditionMedia]:
        assert self._cascade is not None
        durations = self._durations
        durations.update((p.pts, p.duration or 0) for p in packets if p.pts is not None)
        out: list[list[av.Packet[Any]]] = [[] for _ in self._rungs]
        key = independent
        try:
            for frame in self._decoded(packets, last):
                if frame.pts is None:
                    continue
                for rung, picture, got in zip(self._rungs, self._cascade.pictures(frame), out, strict=True):
                    got.extend(rung.encode(picture, key))
                key = False
        except av.error.FFmpegError as exc:
            raise BadSegment(f"raw part does not transcode: {exc}") from exc
        for rung, got in zip(self._rungs, out, strict=True):
            if got:  # a B-frame source's first part may give no picture yet
                yield rung.part(got, durations, rate)
        if last:  # drained: the next segment's part 0 opens a decoder (``_restart``)
            self._decoder, self.synced, self._durations = None, False, {}
            return
        done = max((p.pts for got in out for p in got if p.pts is not None), default=None)
        if done is not None:  # pictures come out in presentation order: those still held come after
            self._durations = {t: d for t, d in durations.items() if t > done}

    def _decoded(self, packets: list[av.Packet[Any]], last: bool) -> Iterator[av.VideoFrame]:
        for packet in packets:
            yield from self._decoder.decode(packet)
        if last:  # the segment's end: the pictures the decoder holds back for reordering
            for frame in self._decoder.decode(None):
                frame.time_base = frame.time_base or packets[-1].time_base  # no packet gave it one
                yield frame

    def reset(self) -> None:
        """Forget the stream's position and close its encoders (a new epoch)."""
        self.close()
        self.last = None

    def close(self) -> None:
        """Close the decoder and the encoders (idle, stopped, moved away); the next independent part
        opens them again."""
        self._close_rungs()
        self._decoder = None
        self._signature = None
        self.synced = False

    def _close_rungs(self) -> None:
        for rung in self._rungs:
            rung.close()
        self._rungs = []
        self._cascade = None


def _offsets(data: bytes, track_id: int, count: int) -> list[int] | None:
    """The raw part's stored composition offsets of its video samples, None when unreadable.

    A raw part's offsets are its segment's (relative to the segment's first sample), so a part
    inside a segment of a B-frame source may start with a non-zero one; FFmpeg, demuxing the part
    alone, shifts them to its own first sample, and its muxer writes a copy's from 0 again.
    """
    try:
        offsets = composition_offsets(data, track_id)
    except MediaFormatError:
        return None
    return offsets if len(offsets) == count else None


def _copy(
    name: str, packets: list[av.Packet[Any]], src: Any, codecs: str, rate: Fraction, offsets: list[int] | None
) -> RenditionMedia:
    """``copy_rendition``, with the raw part's composition offsets kept (see ``_offsets``)."""
    media = copy_rendition(name, packets, src, codecs, rate)
    if offsets is None or not offsets[0]:
        return media
    try:  # the copy's offsets start from 0: move them back by the part's first one
        return dataclasses.replace(media, media=shift_composition_offsets(media.media, 1, offsets[0]))
    except MediaFormatError as exc:
        raise BadSegment(f"raw part's {name} copy cannot keep its composition offsets: {exc}") from exc


def _rate_of(packets: list[av.Packet[Any]], time_base: Fraction) -> Fraction:
    """Frames per second of a part from its samples' durations (a part may hold a single picture)."""
    total = sum(p.duration or 0 for p in packets)
    return Fraction(len(packets)) / (total * time_base) if total > 0 else Fraction(30)
