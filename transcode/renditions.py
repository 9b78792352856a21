"""Raw segment → CMAF renditions and a thumbnail. CPU-bound: runs in a worker process, never
on the event loop.

Per segment: demux once; the ``source`` rung is a stream copy when the camera's codec is
browser-playable H.264 (no decode at all, except the first picture for the thumbnail).
Otherwise the segment is decoded once, each decoded frame is scaled once per encoded rung
(each rung from the next larger one, ``ScalerCascade``) and the rungs are encoded side by side
(one thread per rung fed through a queue; libx264 threads inside each, or one when ``threads=1``).
An H.265 camera gets an H.264 ``source`` encode at its own resolution, which browsers play,
and keeps its original as ``source-hevc``.

Rungs at or above the source height are skipped when the ladder has a ``source`` rung
(the source already is that picture), rungs above it otherwise; if that leaves nothing,
the lowest rung is encoded at the source height.

Audio (AAC in the raw segment's second track) is never re-encoded: it is copied into one
audio-only rendition, ``audio`` (CMAF, ``mp4a.40.2``), beside video renditions that stay
video only, as HLS wants for an ``EXT-X-MEDIA`` audio group.

Raw segments are fMP4, except VP8 from WHIP (FFmpeg's MP4 muxer has no VP8): NUT, VP8 in 90 kHz
and AAC in its sample rate, timestamps on the epoch timeline as in the fMP4's ``tfdt``; IVF
(VP8 only) from earlier versions still reads.
"""

from __future__ import annotations

import dataclasses
import io
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error

from camflow.mp4 import MOVFLAGS
from transcode.encoder import RenditionMedia, RungEncoder, ScalerCascade, codecs_of, jpeg, place, scaled_size
from transcode.errors import BadSegment
from transcode.ladder import HEVC_SOURCE_NAME, SOURCE_NAME, Rung

IVF_MAGIC = b"DKIF"
NUT_MAGIC = b"nut/multimedia container\0"
VP8_CODECS = "vp08.00.10.08"
BROWSER_H264_PROFILES = ("avc1.42", "avc1.4d", "avc1.64")  # baseline, main, high
BROWSER_PIX_FMTS = ("yuv420p", "yuvj420p")
AUDIO_NAME = "audio"
# Demuxer options for a small self-contained fMP4 (a raw part): the sample entries say all a copy
# needs, so no packets are read ahead to probe the streams (4 ms per open instead of 20 at 720p).
QUICK_OPEN = {"probesize": "32", "analyzeduration": "0"}
AAC_CODECS = "mp4a.40.2"


@dataclass(frozen=True)
class TranscodedSegment:
    renditions: tuple[RenditionMedia, ...]
    thumbnail: bytes  # JPEG of the segment's first picture


@dataclass(frozen=True)
class Plan:
    copies: tuple[str, ...]  # rendition names that are a stream copy of the source
    encodes: tuple[tuple[str, Rung, int], ...]  # (name, rung, height)


def browser_playable(codecs: str, pix_fmt: str | None) -> bool:
    return codecs.startswith(BROWSER_H264_PROFILES) and (pix_fmt or "") in BROWSER_PIX_FMTS


def plan_ladder(ladder: tuple[Rung, ...], codecs: str, pix_fmt: str | None, src_h: int) -> Plan:
    """Which renditions a source of ``codecs`` and height ``src_h`` becomes."""
    copies: list[str] = []
    encodes: list[tuple[str, Rung, int]] = []
    has_source = any(r.is_source for r in ladder)
    for rung in ladder:
        if rung.is_source:
            if browser_playable(codecs, pix_fmt):
                copies.append(SOURCE_NAME)
            else:
                encodes.append((SOURCE_NAME, rung, src_h))
                if codecs.startswith(("hvc1", "hev1")):
                    copies.append(HEVC_SOURCE_NAME)
        elif rung.height is not None and (rung.height < src_h or (rung.height == src_h and not has_source)):
            encodes.append((rung.name, rung, rung.height))
    if not copies and not encodes:
        lowest = min(ladder, key=lambda r: r.height or 0)
        encodes.append((lowest.name, lowest, src_h - src_h % 2))
    return Plan(tuple(copies), tuple(encodes))


def transcode_segment(
    data: bytes, ladder: tuple[Rung, ...], end_pts: int, threads: int = 0
) -> TranscodedSegment:
    """Every rendition of one raw segment, in ladder order, and its thumbnail.

    ``end_pts`` is the segment's end on the epoch timeline (start + duration), in the
    stream's time base: where each rendition's last sample ends.
    """
    try:
        container = av.open(io.BytesIO(data), "r", format=raw_format(data))
    except (av.error.FFmpegError, ValueError) as exc:
        raise BadSegment(f"raw segment is not a readable {raw_format(data).upper()}: {exc}") from exc
    with container:
        src, ctx, packets = demux_video(container, "raw segment")
        codecs = VP8_CODECS if ctx.name == "vp8" else codecs_of(ctx.extradata)
        plan = plan_ladder(ladder, codecs, ctx.format.name if ctx.format else None, ctx.height)
        out: dict[str, RenditionMedia] = {}
        for name in plan.copies:
            out[name] = copy_rendition(name, packets, src, codecs)
        thumbnail = _encode_rungs(packets, src, plan.encodes, end_pts, threads, out)
    order = [name for name, *_ in plan.encodes] + list(plan.copies)
    ranked = {r.name: i for i, r in enumerate(ladder)} | {HEVC_SOURCE_NAME: len(ladder)}
    video = tuple(out[n] for n in sorted(order, key=lambda n: ranked[n]))
    audio = audio_rendition(data) if raw_format(data) != "ivf" else None
    return TranscodedSegment(video if audio is None else (*video, audio), thumbnail)


def demux_video(container: av.container.InputContainer, what: str) -> tuple[Any, Any, list[av.Packet[Any]]]:
    """The video stream of a raw segment or part (``what``), its codec context and its packets;
    ``BadSegment`` when it has none, no codec parameters (e.g. a moov cut short) or does not demux."""
    if not container.streams.video:
        raise BadSegment(f"{what} has no video stream")
    src = container.streams.video[0]
    ctx = src.codec_context
    if ctx is None or not ctx.width or not ctx.height:
        raise BadSegment(f"{what}'s video stream has no codec parameters")
    try:
        packets = [p for p in container.demux(src) if p.dts is not None]
    except av.error.FFmpegError as exc:
        raise BadSegment(f"{what} does not demux: {exc}") from exc
    if not packets:
        raise BadSegment(f"{what} has no video packets")
    return src, ctx, packets


def raw_format(data: bytes) -> str:
    """FFmpeg's demuxer for a raw segment: ``mp4``, ``nut`` (VP8 + AAC from WHIP) or ``ivf`` (VP8, older)."""
    if data.startswith(NUT_MAGIC):
        return "nut"
    return "ivf" if data[:4] == IVF_MAGIC else "mp4"


def audio_rendition(data: bytes, options: dict[str, str] | None = None) -> RenditionMedia | None:
    """The raw segment's AAC track as the ``audio`` rendition (a stream copy); None when it has none.
    ``options``: the demuxer's (``QUICK_OPEN`` for a raw part)."""
    started = time.perf_counter()
    try:
        with av.open(io.BytesIO(data), "r", format=raw_format(data), options=options) as container:
            if not container.streams.audio:
                return None
            src = container.streams.audio[0]
            ctx = src.codec_context
            if ctx is None or ctx.name != "aac":
                raise BadSegment(f"raw segment's audio is {ctx.name if ctx else None!r}: expected aac")
            packets = [p for p in container.demux(src) if p.dts is not None]
            if not packets:
                raise BadSegment("raw segment's audio track has no packets")
            init, media = place(_copy(packets, src, None), packets[0].dts)
            channels, rate = ctx.channels, ctx.sample_rate
    except av.error.FFmpegError as exc:
        raise BadSegment(f"raw segment's audio does not demux: {exc}") from exc
    seconds = time.perf_counter() - started
    return RenditionMedia(
        AUDIO_NAME, 0, 0, AAC_CODECS, init, media, 0.0, seconds, channels=channels, sample_rate=rate
    )


def warm(seconds: float) -> None:
    """Run in each pool process at start (importing this module loads PyAV and FFmpeg); the
    short sleep keeps one process from taking every warm-up call."""
    time.sleep(seconds)


def copy_rendition(
    name: str, packets: list[av.Packet[Any]], src: Any, codecs: str, rate: Fraction | None = None
) -> RenditionMedia:
    """Rendition ``name`` as a stream copy of ``packets`` of video stream ``src`` (a raw segment's or a
    raw part's: both write the same init section for the same source), placed at the first dts;
    ``rate`` the frame rate to report (default: measured from ``packets``)."""
    started = time.perf_counter()
    tag = "hvc1" if name == HEVC_SOURCE_NAME else None
    init, media = place(_copy(packets, src, tag), packets[0].dts)
    fps = float(rate if rate is not None else frame_rate(packets, src.time_base or Fraction(1, 90_000)))
    ctx = src.codec_context
    return RenditionMedia(
        name, ctx.width, ctx.height, codecs, init, media, fps, time.perf_counter() - started
    )


def _copy(packets: list[av.Packet[Any]], src: Any, tag: str | None) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as container:
        stream = container.add_stream_from_template(src)
        # The demuxer's bit rate is this file's (a part's, a segment's) and would go into the init
        # section's btrt/esds: none, so every segment and part of a rendition has the same init.
        stream.codec_context.bit_rate = 0
        if tag:
            stream.codec_tag = tag  # Apple's HLS wants hvc1 (parameter sets in the sample entry)
        for packet in packets:
            packet.stream = stream
            container.mux(packet)
    return buf.getvalue()


def _decode(
    packets: list[av.Packet[Any]], src: Any, first_only: bool, threads: int = 0
) -> Iterator[av.VideoFrame]:
    decoder: Any = av.CodecContext.create(src.codec_context.name, "r")
    decoder.extradata = src.codec_context.extradata
    if threads:
        decoder.thread_count = threads
    decoder.thread_type = "AUTO"
    try:
        for packet in packets[:1] if first_only else packets:
            yield from decoder.decode(packet)
        yield from decoder.decode(None)
    except av.error.FFmpegError as exc:
        raise BadSegment(f"raw segment does not decode: {exc}") from exc


def _encode_rungs(
    packets: list[av.Packet[Any]],
    src: Any,
    encodes: tuple[tuple[str, Rung, int], ...],
    end_pts: int,
    threads: int,
    out: dict[str, RenditionMedia],
) -> bytes:
    """Decode once, scale once per rung (``ScalerCascade``), encode every rung in its own thread;
    return the first picture as a JPEG.

    This thread decodes and scales; each rung's encoder takes its pictures from a short queue,
    so no rung waits for another (a per-frame barrier would hold the 360p encoder to the 1080p
    one's pace), and flushes in its own thread at the end. PyAV releases the GIL while FFmpeg
    decodes, scales and encodes.
    """
    time_base: Fraction = src.time_base
    src_w, src_h = src.codec_context.width, src.codec_context.height
    rate = frame_rate(packets, time_base)
    sizes = [scaled_size(src_w, src_h, height) for _, _, height in encodes]
    rungs = [
        _RungThread(RungEncoder(name, rung, size, time_base, rate, threads), end_pts)
        for (name, rung, _), size in zip(encodes, sizes, strict=True)
    ]
    cascade = ScalerCascade(sizes)
    thumbnail: bytes | None = None
    finished = False
    try:
        for frame in _decode(packets, src, first_only=not rungs, threads=threads):
            if thumbnail is None:
                thumbnail = jpeg(frame)
            if frame.pts is None or not rungs:
                continue
            frame.time_base = time_base
            for rung, picture in zip(rungs, cascade.pictures(frame), strict=True):
                rung.put(picture)
        finished = True
    except av.error.FFmpegError as exc:
        raise BadSegment(f"raw segment does not transcode: {exc}") from exc
    finally:
        for rung in rungs:
            rung.stop(finish=finished)
        for rung in rungs:
            rung.encoder.close()
    for rung, scaling in zip(rungs, cascade.seconds, strict=True):  # its pictures' scaling counts too
        media = rung.result()
        out[media.name] = dataclasses.replace(media, seconds=media.seconds + scaling)
    if thumbnail is None:
        raise BadSegment("raw segment decoded to no picture")
    return thumbnail


_FINISH = object()  # queued after the last picture: flush the encoder and mux the rendition
_ABORT = object()  # queued when the segment failed: stop without flushing


class _RungThread:
    """One rung's encoder in its own thread, fed pictures through a bounded queue."""

    DEPTH = 8  # pictures queued per rung: bounds memory (8 x 3 MB at 1080p) and lets rungs drift apart

    def __init__(self, encoder: RungEncoder, end_pts: int) -> None:
        self.encoder = encoder
        self._end_pts = end_pts
        self._queue: queue.Queue[object] = queue.Queue(self.DEPTH)
        self._media: RenditionMedia | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"rung-{encoder.name}", daemon=True)
        self._thread.start()

    def put(self, picture: av.VideoFrame) -> None:
        self._queue.put(picture)

    def stop(self, finish: bool) -> None:
        """Queue the end and wait for the thread (it keeps draining the queue after an error)."""
        self._queue.put(_FINISH if finish else _ABORT)
        self._thread.join()

    def result(self) -> RenditionMedia:
        if self._error is not None:
            if isinstance(self._error, av.error.FFmpegError):
                raise BadSegment(f"raw segment does not transcode: {self._error}") from self._error
            raise self._error
        if self._media is None:
            raise BadSegment(f"rendition {self.encoder.name} was not finished")
        return self._media

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _ABORT:
                return
            if self._error is not None:
                if item is _FINISH:
                    return
                continue  # drain: the decoding thread must never block on a dead rung
            try:
                if item is _FINISH:
                    self._media = self.encoder.finish(self._end_pts)
                    return
                assert isinstance(item, av.VideoFrame)
                self.encoder.encode(item)
            except BaseException as exc:  # reported by result(), in the calling thread
                self._error = exc
                if item is _FINISH:
                    return


def frame_rate(packets: list[av.Packet[Any]], time_base: Fraction) -> Fraction:
    pts = sorted(p.pts for p in packets if p.pts is not None)
    if len(pts) < 2:
        return Fraction(30)
    span = (pts[-1] - pts[0]) * time_base
    return Fraction(round((len(pts) - 1) / span * 1000), 1000) if span > 0 else Fraction(30)
