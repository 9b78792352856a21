"""Raw segment → CMAF renditions. CPU-bound: runs in a worker process, never on the event loop.

The source rung is a stream copy (no re-encode). Encoded rungs decode the segment once,
scale once per rung and encode with libx264: a fresh encoder per segment, so every
rendition starts with an IDR at the segment's first presentation time, with the same
timestamps as the source (players switch rungs cleanly).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.container
import av.error

from camflow.errors import MediaFormatError
from camflow.mp4 import MOVFLAGS, placed
from transcode.errors import BadSegment
from transcode.ladder import Rung


@dataclass(frozen=True)
class RenditionMedia:
    name: str
    width: int
    height: int
    codecs: str
    init: bytes
    media: bytes


def _codecs_from_extradata(extradata: bytes | None) -> str:
    """RFC 6381 ``avc1.PPCCLL`` from avcC or Annex B extradata."""
    if not extradata:
        raise BadSegment("encoded stream has no extradata to read the SPS from")
    if extradata[0] == 1 and len(extradata) >= 4:  # avcC
        return "avc1." + extradata[1:4].hex()
    pos = extradata.find(b"\x00\x00\x01")
    while pos >= 0:
        nal = extradata[pos + 3 :]
        if nal and nal[0] & 0x1F == 7 and len(nal) >= 4:
            return "avc1." + nal[1:4].hex()
        pos = extradata.find(b"\x00\x00\x01", pos + 3)
    raise BadSegment("no SPS in the encoded stream's extradata")


def _write(packets: list[av.Packet[Any]], add_stream: Any) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as out:
        stream = add_stream(out)
        for packet in packets:
            packet.stream = stream
            out.mux(packet)
    return buf.getvalue()


def _placed(fragmented: bytes, first_dts: int | None) -> tuple[bytes, bytes]:
    try:
        return placed(fragmented, first_dts or 0)
    except MediaFormatError as exc:
        raise BadSegment(f"muxed rendition is not a fragmented MP4: {exc}") from exc


def _scaled_size(src_w: int, src_h: int, height: int) -> tuple[int, int]:
    width = round(src_w * height / src_h / 2) * 2
    return max(2, width), height


def transcode_segment(data: bytes, ladder: tuple[Rung, ...], end_pts: int) -> list[RenditionMedia]:
    """Every rung of ``ladder`` (rungs above the source height are skipped) for one raw segment.

    ``end_pts`` is the segment's end on the epoch timeline (start + duration), in the
    stream's time base: the duration of each rendition's last sample.
    """
    try:
        container = av.open(io.BytesIO(data), "r", format="mp4")
    except (av.error.FFmpegError, ValueError) as exc:
        raise BadSegment(f"raw segment is not a readable MP4: {exc}") from exc
    with container:
        if not container.streams.video:
            raise BadSegment("raw segment has no video stream")
        src = container.streams.video[0]
        if src.codec_context is None:  # e.g. a moov cut short: the stream's codec parameters did not parse
            raise BadSegment("raw segment's video stream has no codec parameters")
        src_w, src_h = src.codec_context.width, src.codec_context.height
        try:
            packets = [p for p in container.demux(src) if p.dts is not None]
        except av.error.FFmpegError as exc:
            raise BadSegment(f"raw segment does not demux: {exc}") from exc
        if not packets:
            raise BadSegment("raw segment has no video packets")
        out: list[RenditionMedia] = []
        encoded = [r for r in ladder if not r.is_source and r.height is not None and r.height <= src_h]
        for rung in ladder:
            if rung.is_source:
                whole = _write(packets, lambda o: o.add_stream_from_template(src))
                init, media = _placed(whole, packets[0].dts)
                extradata = src.codec_context.extradata
                out.append(
                    RenditionMedia(rung.name, src_w, src_h, _codecs_from_extradata(extradata), init, media)
                )
        if encoded:
            out.extend(_encode_rungs(packets, src, encoded, end_pts))
    order = {r.name: i for i, r in enumerate(ladder)}
    return sorted(out, key=lambda m: order[m.name])


def _encode_rungs(
    packets: list[av.Packet[Any]], src: Any, rungs: list[Rung], end_pts: int
) -> list[RenditionMedia]:
    time_base: Fraction = src.time_base
    decoder = av.CodecContext.create(src.codec_context.name, "r")
    decoder.extradata = src.codec_context.extradata
    decoder.thread_type = "AUTO"
    frames: list[av.VideoFrame] = []
    try:
        for packet in packets:
            frames.extend(decoder.decode(packet))
        frames.extend(decoder.decode(None))
    except av.error.FFmpegError as exc:
        raise BadSegment(f"raw segment does not decode: {exc}") from exc
    if not frames:
        raise BadSegment("raw segment decoded to no frames")
    rate = _frame_rate(frames, time_base)
    out: list[RenditionMedia] = []
    for rung in rungs:
        assert rung.height is not None
        width, height = _scaled_size(frames[0].width, frames[0].height, rung.height)
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as container:
            stream = container.add_stream("libx264", rate=rate)
            ctx = stream.codec_context
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
            ctx.time_base = time_base
            stream.time_base = time_base
            ctx.bit_rate = rung.bitrate
            ctx.gop_size = 10_000  # one IDR, at the start: every segment gets a fresh encoder
            ctx.thread_type = "AUTO"
            ctx.options = {
                "preset": rung.preset,
                "profile": rung.profile,
                "x264-params": f"scenecut=0:bframes=0:vbv-maxrate={rung.bitrate // 1000 * 3 // 2}"
                f":vbv-bufsize={rung.bitrate // 1000 * 2}",
            }
            encoded: list[av.Packet[Any]] = []
            for frame in frames:
                scaled = frame.reformat(width=width, height=height, format="yuv420p")
                scaled.pts, scaled.time_base = frame.pts, time_base
                encoded.extend(stream.encode(scaled))
            encoded.extend(stream.encode(None))
            # Exact durations, so the rendition ends where the segment ends.
            for i, packet in enumerate(encoded):
                nxt = encoded[i + 1].dts if i + 1 < len(encoded) else end_pts
                assert packet.dts is not None and nxt is not None
                packet.duration = max(1, nxt - packet.dts)
                container.mux(packet)
            codecs = _codecs_from_extradata(ctx.extradata)
        init, media = _placed(buf.getvalue(), encoded[0].dts)
        out.append(RenditionMedia(rung.name, width, height, codecs, init, media))
    return out


def _frame_rate(frames: list[av.VideoFrame], time_base: Fraction) -> Fraction:
    pts = sorted(f.pts for f in frames if f.pts is not None)
    if len(pts) < 2:
        return Fraction(30)
    span = (pts[-1] - pts[0]) * time_base
    return Fraction(round((len(pts) - 1) / span * 1000), 1000) if span > 0 else Fraction(30)
