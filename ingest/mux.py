"""Remux of a cut segment into a self-contained fMP4 (init section + one or more fragments)
with PyAV, without decoding a single frame of the segment.

PyAV copies codec parameters only from a stream it demuxed, so each publish session
opens a template once: the raw H.264 demuxer reading the parameter sets and first IDR
(a few milliseconds, once per session or parameter-set change). Every segment is then a
plain remux of Annex B access units; the mp4 muxer writes avcC and length-prefixed NAL
units itself.

The muxer starts every file at zero; ``camflow.mp4.placed`` then sets ``tfdt`` to the
segment's first decode time, so the segments of one epoch line up end to end.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container

from camflow.mp4 import MOVFLAGS, placed
from ingest.h264 import NAL_IDR, NAL_PPS, NAL_SPS, join_annexb, nal_type
from ingest.segmenter import TIMESCALE, CutSegment


@dataclass(frozen=True)
class VideoParams:
    sps: bytes
    pps: bytes
    width: int
    height: int

    @property
    def codecs(self) -> str:
        """RFC 6381 codecs string, e.g. ``avc1.640028``: profile, constraint flags, level from the SPS."""
        return "avc1." + self.sps[1:4].hex()


class SegmentMuxer:
    """Turns cut segments of one publish session into fMP4 bytes."""

    def __init__(self) -> None:
        self._template: av.container.InputContainer | None = None
        self._params: VideoParams | None = None

    @property
    def params(self) -> VideoParams | None:
        return self._params

    def close(self) -> None:
        if self._template is not None:
            self._template.close()
            self._template = None

    def _ensure_template(self, segment: CutSegment) -> VideoParams:
        first = segment.samples[0]
        sps = next((n for n in first.nalus if nal_type(n) == NAL_SPS), None)
        pps = next((n for n in first.nalus if nal_type(n) == NAL_PPS), None)
        if sps is None or pps is None:
            raise ValueError(f"segment {segment.seq} starts without SPS/PPS before its IDR")
        if self._params is not None and self._params.sps == sps and self._params.pps == pps:
            return self._params
        self.close()
        head = [n for n in first.nalus if nal_type(n) in (NAL_SPS, NAL_PPS, NAL_IDR)]
        template = av.open(io.BytesIO(join_annexb(head)), "r", format="h264")
        ctx = template.streams.video[0].codec_context
        self._template = template
        self._params = VideoParams(sps=sps, pps=pps, width=ctx.width, height=ctx.height)
        return self._params

    def mux(self, segment: CutSegment) -> bytes:
        self._ensure_template(segment)
        assert self._template is not None
        buf = io.BytesIO()
        time_base = Fraction(1, TIMESCALE)
        with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as out:
            stream = out.add_stream_from_template(self._template.streams.video[0])
            stream.time_base = time_base
            for sample in segment.samples:
                packet = av.Packet(join_annexb(sample.nalus))
                packet.stream = stream
                packet.time_base = time_base
                packet.pts = sample.pts
                packet.dts = sample.dts
                packet.duration = sample.duration
                packet.is_keyframe = sample.is_idr
                out.mux(packet)
        init, media = placed(buf.getvalue(), segment.samples[0].dts)
        return init + media
