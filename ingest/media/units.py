"""The codec-neutral media units every source hands to the media path (``ingest.media.publisher``).

A source turns its protocol (RTP, a WebRTC receiver's frames, a pulled camera's packets) into these:
video ``AccessUnit``s on the 90 kHz video clock, and AAC ``ingest.codecs.aac.AudioUnit``s in their
sample clock. The media path knows nothing of where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass

VIDEO_CLOCK_RATE = 90_000  # every video source's clock: RTP video, WebRTC frames, pulled packets


@dataclass(frozen=True)
class AccessUnit:
    pts: int  # presentation time in the payload's clock (90 kHz for video), unwrapped to 64 bits
    nalus: tuple[bytes, ...]  # NAL units without start codes, in decode order (VP8: the frame)
    is_idr: bool  # a random access point: H.264 IDR (type 5), H.265 IRAP (types 16..23), VP8 key frame
    damaged: bool = False  # packets of this reference picture (or right before it) were lost
