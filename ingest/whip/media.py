"""Encoded video from aiortc, before it decodes anything: frames → access units → the RTSP path's
segmenter and publisher.

aiortc's receiver reassembles each RTP frame in its jitter buffer (NACKs and PLIs on loss, RTX
unwrapped) and puts ``(codec, frame)`` on its decoder thread's queue. ``tap()`` swaps that queue for
``EncodedFrameTap``, which hands the encoded frame to us instead: H.264 (Annex B, as aiortc
depayloads it) is segmented as is, never decoded or re-encoded; VP8 frames go into NUT raw
segments with the session's AAC (FFmpeg's MP4 muxer has no VP8), which the transcoder encodes to
H.264.
"""

from __future__ import annotations

import io
import queue
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.container

from ingest import h264
from ingest.errors import ParseError
from ingest.mux import H264, SegmentMuxer, VideoParams
from ingest.rtp.base import VIDEO_CLOCK_RATE, AccessUnit
from ingest.rtp.packet import RtpPacket
from ingest.segmenter import TIMESCALE, CutSegment

VP8 = "vp8"
VP8_CODECS = "vp08.00.10.08"  # RFC 6381 / VP codec ISO-BMFF binding: profile 0, level 1.0, 8 bits
IVF_TIMEBASE = VIDEO_CLOCK_RATE
_RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"

FrameSink = Callable[[str, bytes, int], None]  # (codec name "H264"/"VP8", frame bytes, 90 kHz timestamp)


class EncodedFrameTap(queue.Queue[Any]):
    """Stands in for an aiortc receiver's decoder queue: encoded frames go to ``sink``, not the decoder.

    ``put`` is called on the event loop (aiortc's RTP handler). ``None`` (the receiver stopping, or an
    RTCP BYE) still reaches the idle decoder thread so it ends, and calls ``on_end``.
    """

    def __init__(self, sink: FrameSink, on_end: Callable[[], None]) -> None:
        super().__init__()
        self._sink = sink
        self._on_end = on_end

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
            self._on_end()
            return
        codec, frame = item
        self._sink(str(codec.name).upper(), bytes(frame.data), int(frame.timestamp))


def tap(receiver: Any, sink: FrameSink, on_end: Callable[[], None]) -> None:
    """Route ``receiver``'s encoded frames to ``sink``; call before its media starts (before connect)."""
    if not hasattr(receiver, _RECEIVER_QUEUE):
        raise RuntimeError(
            "aiortc's RTCRtpReceiver has no decoder queue: this aiortc version is not supported"
        )
    setattr(receiver, _RECEIVER_QUEUE, EncodedFrameTap(sink, on_end))


def h264_unit(data: bytes, pts: int) -> AccessUnit:
    nalus = tuple(h264.split_annexb(data))
    return AccessUnit(pts, nalus, any(h264.nal_type(n) == h264.NAL_IDR for n in nalus if n))


def vp8_unit(data: bytes, pts: int) -> AccessUnit:
    if len(data) < 3:
        raise ParseError(f"VP8 frame of {len(data)} bytes: expected at least the 3-byte frame tag")
    return AccessUnit(pts, (data,), (data[0] & 1) == 0)  # frame tag bit 0: 0 = key frame (RFC 6386 9.1)


def vp8_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height of a VP8 key frame (RFC 6386 9.1)."""
    if len(keyframe) < 10 or keyframe[3:6] != b"\x9d\x01\x2a":
        raise ParseError(f"VP8 key frame header {keyframe[:10].hex()!r}: expected the 9d 01 2a start code")
    width, height = struct.unpack("<HH", keyframe[6:10])
    return width & 0x3FFF, height & 0x3FFF


@dataclass(frozen=True)
class Vp8Params(VideoParams):
    @property
    def codecs(self) -> str:
        return VP8_CODECS


def ivf(width: int, height: int, frames: list[tuple[int, bytes]]) -> bytes:
    """VP8 ``(pts, frame)`` pairs as an IVF file (32-byte header, then size + 64-bit pts + frame), 90 kHz."""
    header = b"DKIF" + struct.pack(
        "<HH4sHHIIII", 0, 32, b"VP80", width, height, IVF_TIMEBASE, 1, len(frames), 0
    )
    return header + b"".join(struct.pack("<IQ", len(f), pts) + f for pts, f in frames)


class Vp8Muxer(SegmentMuxer):
    """VP8 cut segments, with their AAC track when the session has audio, as NUT files.

    Not MP4: FFmpeg's MP4 muxer has no VP8. Not Matroska: FFmpeg's writes a fixed 1 ms timestamp
    scale, which rounds 90 kHz video and 1024-sample AAC frames (21.33 ms at 48 kHz), so the audio
    rendition would lose its sample-exact timeline. NUT (FFmpeg's own container) keeps each stream's
    time base: video 90 kHz, audio its sample rate, timestamps on the epoch timeline exactly as the
    segmenter cut them, which is what the transcoder's ``tfdt`` and ``end_pts`` rely on. VP8 has no
    B-frames, so decode time = presentation time. The VP8 stream's template is an IVF of the first
    key frame, read by FFmpeg's ``ivf`` demuxer (once per session or picture size).
    """

    def __init__(self) -> None:
        super().__init__(H264)
        self.codec = VP8
        self._vp8: Vp8Params | None = None
        self._vp8_template: av.container.InputContainer | None = None

    @property
    def params(self) -> VideoParams | None:
        return self._vp8

    def close(self) -> None:
        super().close()
        if self._vp8_template is not None:
            self._vp8_template.close()
            self._vp8_template = None

    def _ensure_vp8_template(self, keyframe: bytes) -> av.container.InputContainer:
        width, height = vp8_size(keyframe)
        if self._vp8 is not None and self._vp8_template is not None:
            if (self._vp8.width, self._vp8.height) == (width, height):
                return self._vp8_template
            self._vp8_template.close()
        self._vp8_template = av.open(io.BytesIO(ivf(width, height, [(0, keyframe)])), "r", format="ivf")
        self._vp8 = Vp8Params(VP8, (), width, height)
        return self._vp8_template

    def mux(self, segment: CutSegment) -> bytes:
        template = self._ensure_vp8_template(segment.samples[0].nalus[0])
        buf = io.BytesIO()
        time_base = Fraction(1, TIMESCALE)
        with av.open(buf, "w", format="nut") as out:
            stream = out.add_stream_from_template(template.streams.video[0])
            stream.time_base = time_base
            packets = []
            for sample in segment.samples:
                packet = av.Packet(sample.nalus[0])
                packet.stream, packet.time_base = stream, time_base
                packet.pts = packet.dts = sample.pts
                packet.duration = sample.duration
                packet.is_keyframe = sample.is_idr
                packets.append(packet)
            for packet in packets + self._audio_packets(out, segment):
                out.mux(packet)
        return buf.getvalue()


@dataclass
class WhipCounters:
    """What the WHIP media path corrected; joins the publisher's correction counters (``media_corrected``,
    ``publish_ended``), like the RTSP depacketizers' counters."""

    frames_invalid: int = 0  # frames that did not parse (empty, a VP8 frame without a tag)
    keyframe_requests: int = 0  # PLIs sent because a segment needed an IDR
    packets_lost: int = 0  # from the receiver's RTCP statistics (cumulative)


@dataclass
class WhipStats:
    """What the session received (``whip_session_ended``)."""

    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    audio_frames: int = 0  # Opus frames received


class FrameUnits:
    """The publisher's ``Depacketizer``: here frames arrive whole from aiortc, so ``push`` is unused."""

    clock_rate = VIDEO_CLOCK_RATE

    def __init__(self) -> None:
        self.counters = WhipCounters()

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        return []

    def flush(self) -> list[AccessUnit]:
        return []
