"""The codec-neutral media unit and the depacketizer protocol every RTP payload format implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ingest.rtp.packet import RtpPacket


@dataclass(frozen=True)
class AccessUnit:
    pts: int  # presentation time in the payload's clock (90 kHz for video), unwrapped to 64 bits
    nalus: tuple[bytes, ...]  # NAL units without start codes, in decode order
    is_idr: bool  # contains an IDR slice (H.264 type 5)


class Depacketizer(Protocol):
    clock_rate: int

    def push(self, packet: RtpPacket) -> list[AccessUnit]: ...  # [] = need more packets

    def flush(self) -> list[AccessUnit]: ...  # the pending unit at end of stream, if complete enough


class TimestampUnwrapper:
    """32-bit RTP timestamps to a 64-bit timeline.

    The first timestamp is returned as is; each next one moves by the signed 32-bit difference from the
    previous one, so wrap-around continues upwards and the small backward steps of B-frames (RTP
    timestamps are presentation times) step back. A step back below the first timestamp of a stream that
    starts near 0 gives a negative value.
    """

    def __init__(self) -> None:
        self._last32: int | None = None
        self._last64 = 0

    def unwrap(self, timestamp: int) -> int:
        timestamp &= 0xFFFFFFFF
        if self._last32 is None:
            self._last64 = timestamp
        else:
            diff = (timestamp - self._last32) & 0xFFFFFFFF
            if diff >= 0x80000000:
                diff -= 0x100000000
            self._last64 += diff
        self._last32 = timestamp
        return self._last64
