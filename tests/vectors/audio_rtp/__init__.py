"""Readers of the captured audio RTP vectors (see README.md). This module holds no tests."""

from __future__ import annotations

import struct
from pathlib import Path

from ingest.sources.rtp.packet import RtpPacket
from ingest.sources.rtsp.sdp import MediaDescription, SessionDescription

HERE = Path(__file__).parent


def packets(name: str) -> list[RtpPacket]:
    """The RTP packets of ``NAME.rtp``, in capture order."""
    data = (HERE / f"{name}.rtp").read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">H", data, pos)
        out.append(RtpPacket.parse(data[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return out


def media(name: str) -> MediaDescription:
    """The one audio medium of ``NAME.sdp``."""
    return SessionDescription.parse((HERE / f"{name}.sdp").read_bytes()).media[0]


def adts_frames(name: str) -> list[bytes]:
    """The raw AAC frames (ADTS headers removed) of ``expected_NAME.adts``."""
    data = (HERE / f"expected_{name}.adts").read_bytes()
    out, pos = [], 0
    while pos + 7 <= len(data):
        size = (data[pos + 3] & 0x03) << 11 | data[pos + 4] << 3 | data[pos + 5] >> 5
        header = 7 if data[pos + 1] & 0x01 else 9  # protection_absent
        out.append(data[pos + header : pos + size])
        pos += size
    return out
