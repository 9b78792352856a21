"""Encoded video from aiortc, before it decodes anything: frames → access units → the media path
(``ingest.media.publisher``).

aiortc's receiver reassembles each RTP frame in its jitter buffer (NACKs and PLIs on loss, RTX
unwrapped) and puts ``(codec, frame)`` on its decoder thread's queue. ``tap()`` swaps that queue for
``EncodedFrameTap``, which hands the encoded frame to us instead: H.264 (Annex B, as aiortc
depayloads it) is segmented as is, never decoded or re-encoded; VP8 frames go into NUT raw
segments with the session's AAC (``ingest.media.mux.Vp8Muxer``: FFmpeg's MP4 muxer has no VP8), which
the transcoder encodes to H.264.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.codecs import h264
from ingest.errors import ParseError
from ingest.media.units import AccessUnit

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
