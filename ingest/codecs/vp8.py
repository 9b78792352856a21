"""VP8 (RFC 6386) as far as ingest needs it: key frame size, the RFC 6381 codecs string, and IVF
(the container FFmpeg's ``ivf`` demuxer reads, used as the muxer's stream template)."""

from __future__ import annotations

import struct

from ingest.errors import ParseError

VP8 = "vp8"
VP8_CODECS = "vp08.00.10.08"  # RFC 6381 / VP codec ISO-BMFF binding: profile 0, level 1.0, 8 bits
IVF_TIMEBASE = 90_000  # the video clock (``ingest.media.units.VIDEO_CLOCK_RATE``)


def vp8_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height of a VP8 key frame (RFC 6386 9.1)."""
    if len(keyframe) < 10 or keyframe[3:6] != b"\x9d\x01\x2a":
        raise ParseError(f"VP8 key frame header {keyframe[:10].hex()!r}: expected the 9d 01 2a start code")
    width, height = struct.unpack("<HH", keyframe[6:10])
    return width & 0x3FFF, height & 0x3FFF


def ivf(width: int, height: int, frames: list[tuple[int, bytes]]) -> bytes:
    """VP8 ``(pts, frame)`` pairs as an IVF file (32-byte header, then size + 64-bit pts + frame), 90 kHz."""
    header = b"DKIF" + struct.pack(
        "<HH4sHHIIII", 0, 32, b"VP80", width, height, IVF_TIMEBASE, 1, len(frames), 0
    )
    return header + b"".join(struct.pack("<IQ", len(f), pts) + f for pts, f in frames)
