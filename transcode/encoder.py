"""One encoded rung of one segment: encode its pictures with libx264, mux CMAF; and the scaler
cascade that makes every rung's picture from one decoded frame.

A fresh encoder per segment, so every rendition starts with an IDR at the segment's
first presentation time; no B-frames, so decode time equals presentation time and the
rendition's ``tfdt`` is the segment start; the last sample lasts until ``end_pts``, so
every rendition of a segment has the same duration as the source.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
from av.video.reformatter import VideoReformatter

from camflow.codecs import from_extradata
from camflow.errors import MediaFormatError
from camflow.events import RenditionRef
from camflow.mp4 import MOVFLAGS, placed
from transcode.errors import BadSegment
from transcode.ladder import Rung

THUMB_HEIGHT = 180


@dataclass(frozen=True)
class RenditionMedia:
    name: str
    width: int
    height: int
    codecs: str
    init: bytes
    media: bytes
    frame_rate: float = 0.0  # frames per second of the segment; 0 when unknown (audio)
    seconds: float = 0.0  # wall time spent producing it (scale + encode + mux, or the stream copy)
    channels: int = 0  # an audio rendition's channels (0: video)
    sample_rate: int = 0  # an audio rendition's sample rate (0: video)

    def ref(self, init_key: str, key: str, seconds: float) -> RenditionRef:
        """This rendition of ``seconds`` of media as an event names it, its bytes at ``key``."""
        return RenditionRef(
            name=self.name,
            width=self.width,
            height=self.height,
            bandwidth=max(1, int(len(self.media) * 8 / max(seconds, 1e-3))),
            codecs=self.codecs,
            init_key=init_key,
            key=key,
            size=len(self.media),
            frame_rate=self.frame_rate,
            kind="audio" if self.channels else "video",
            channels=self.channels,
            sample_rate=self.sample_rate,
        )


def codecs_of(extradata: bytes | None) -> str:
    try:
        return from_extradata(extradata or b"")
    except MediaFormatError as exc:
        raise BadSegment(f"cannot read the codec from the stream's parameter sets: {exc}") from exc


def place(fragmented: bytes, first_dts: int | None) -> tuple[bytes, bytes]:
    try:
        return placed(fragmented, first_dts or 0)
    except MediaFormatError as exc:
        raise BadSegment(f"muxed rendition is not a fragmented MP4: {exc}") from exc


def scaled_size(src_w: int, src_h: int, height: int) -> tuple[int, int]:
    width = round(src_w * height / src_h / 2) * 2
    return max(2, width), height


# Frame rates x264 is told (``nominal_rate``): the rate enters the SPS (the level, and the VUI timing
# of a constant-rate encode), so a rung's init section must not depend on one segment's measure.
NOMINAL_RATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 24, 25, 30, 48, 50, 60, 90, 120)


def nominal_rate(measured: Fraction | float) -> Fraction:
    """The standard frame rate nearest ``measured`` (by ratio): what every encoder of a stream's rung
    is told, whether it encodes a whole segment or a part, so they write the same SPS (29.97 and
    30.03 are both 30; the 1080p level boundary sits at exactly 30)."""
    value = float(measured) if measured and measured > 0 else 30.0
    return Fraction(min(NOMINAL_RATES, key=lambda r: abs(math.log(value / r))))


def open_rung_stream(
    container: Any,
    rung: Rung,
    size: tuple[int, int],
    time_base: Fraction,
    rate: Fraction,
    threads: int,
    *,
    low_delay: bool,
) -> Any:
    """A libx264 stream of ``container`` for ``rung``: the one home of the rung's encoder settings.

    The segment workers' encoders and the part workers' persistent ones (``low_delay``) differ only
    in what the SPS/PPS do not carry (lookahead, threads), so one init section serves both, as
    ``EXT-X-MAP`` wants. ``force-cfr``: x264 takes each frame's duration from ``rate``, not from the
    next frame's time, which would hold every picture back by one (a part would end a frame short);
    ``rate`` is a ``nominal_rate``. ``low_delay``: no lookahead and one thread, so each picture's
    packet comes out of ``encode`` at once.
    """
    width, height = size
    stream = container.add_stream("libx264", rate=rate)
    ctx = stream.codec_context
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = time_base
    stream.time_base = time_base
    bitrate, maxrate = rung.target_bitrate(height), rung.target_maxrate(height)
    ctx.bit_rate = bitrate
    ctx.gop_size = 10_000  # IDRs where asked: a segment's start (a fresh encoder, or a forced key picture)
    threads = 1 if low_delay else threads
    if threads:
        ctx.thread_count = threads
    ctx.thread_type = "AUTO"
    params = f"scenecut=0:bframes=0:force-cfr=1:vbv-maxrate={maxrate // 1000}:vbv-bufsize={maxrate // 500}"
    if low_delay:
        params += ":rc-lookahead=0:sync-lookahead=0"
    ctx.options = {"preset": rung.preset, "profile": rung.profile, "forced-idr": "1", "x264-params": params}
    return stream


class RungEncoder:
    """libx264 for one rung; ``threads`` 0 lets the codec choose (frame threads), 1 is single-threaded."""

    def __init__(
        self,
        name: str,
        rung: Rung,
        size: tuple[int, int],
        time_base: Fraction,
        rate: Fraction,
        threads: int,
    ) -> None:
        self.name = name
        self.width, self.height = size
        self.time_base = time_base
        self.rate = rate
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format="mp4", options={"movflags": MOVFLAGS})
        self._stream = open_rung_stream(
            self._out, rung, size, time_base, nominal_rate(rate), threads, low_delay=False
        )
        self._packets: list[av.Packet[Any]] = []
        self._seconds = 0.0

    def encode(self, picture: av.VideoFrame) -> None:
        """Encode one picture of this rung's size in yuv420p (``ScalerCascade`` makes them)."""
        started = time.perf_counter()
        self._packets.extend(self._stream.encode(picture))
        self._seconds += time.perf_counter() - started

    def finish(self, end_pts: int) -> RenditionMedia:
        started = time.perf_counter()
        try:
            self._packets.extend(self._stream.encode(None))
            packets = self._packets
            if not packets:
                raise BadSegment(f"rendition {self.name} encoded no frames")
            for i, packet in enumerate(packets):
                nxt = packets[i + 1].dts if i + 1 < len(packets) else end_pts
                assert packet.dts is not None and nxt is not None
                packet.duration = max(1, nxt - packet.dts)  # exact: ends where the segment ends
                self._out.mux(packet)
            codecs = codecs_of(self._stream.codec_context.extradata)
        finally:
            self._out.close()
        init, media = place(self._buf.getvalue(), packets[0].dts)
        seconds = self._seconds + time.perf_counter() - started
        rate = float(self.rate)
        return RenditionMedia(self.name, self.width, self.height, codecs, init, media, rate, seconds)

    def close(self) -> None:
        self._out.close()


class ScalerCascade:
    """Every rung's picture from one decoded frame, each scaled once, from the smallest picture
    already made that is at least its size: 1080p → 720p → 360p rather than 1080p → 360p twice
    over. Halving a 720p picture costs a third of scaling the 1080p one (measured: 1.8 s instead
    of 2.3 s of CPU for the 720p + 360p pictures of 20 s of 1080p30). A rung at the frame's own
    size in yuv420p gets the decoded frame itself.
    """

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes
        self._order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1])
        self._scalers = [VideoReformatter() for _ in sizes]  # one each: a scaler keeps its context
        self.seconds = [0.0] * len(sizes)  # time spent making each rung's pictures

    def pictures(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        """One picture per size, in the order of ``sizes``, with the frame's pts and time base."""
        out: list[av.VideoFrame | None] = [None] * len(self.sizes)
        made: list[av.VideoFrame] = []
        for i in self._order:
            width, height = self.sizes[i]
            if (frame.width, frame.height) == (width, height) and frame.format.name == "yuv420p":
                out[i] = frame
                made.append(frame)
                continue
            started = time.perf_counter()
            fits = [m for m in made if m.width >= width and m.height >= height]
            source = min(fits, key=lambda m: m.width * m.height) if fits else frame
            picture = self._scalers[i].reformat(source, width=width, height=height, format="yuv420p")
            picture.pts, picture.time_base = frame.pts, frame.time_base
            self.seconds[i] += time.perf_counter() - started
            out[i] = picture
            made.append(picture)
        return [p for p in out if p is not None]


def jpeg(frame: av.VideoFrame, height: int = THUMB_HEIGHT) -> bytes:
    """A JPEG of ``frame`` scaled to ``height`` (never above the frame's own)."""
    width, height = scaled_size(frame.width, frame.height, min(height, frame.height - frame.height % 2))
    ctx: Any = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    small.pts = 0
    try:
        packets = [*ctx.encode(small), *ctx.encode(None)]
    except av.error.FFmpegError as exc:
        raise BadSegment(f"thumbnail does not encode: {exc}") from exc
    if not packets:
        raise BadSegment("thumbnail encoder gave no picture")
    return bytes(packets[0])
