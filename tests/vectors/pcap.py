"""A tiny reader of classic pcap files (libpcap format): the UDP payloads of Ethernet/IPv4 frames.

Enough for the captured RTP test vectors; no scapy. This module holds no tests.
"""

from __future__ import annotations

import struct
from pathlib import Path

_MAGIC_LE = 0xA1B2C3D4
_MAGIC_NS_LE = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17


def udp_payloads(path: Path) -> list[bytes]:
    """The UDP payloads of every Ethernet/IPv4/UDP frame, in capture order; other frames are skipped."""
    data = path.read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: {len(data)} bytes, expected a 24-byte pcap global header")
    (magic,) = struct.unpack_from("<I", data)
    if magic in (_MAGIC_LE, _MAGIC_NS_LE):
        order = "<"
    elif struct.unpack_from(">I", data)[0] in (_MAGIC_LE, _MAGIC_NS_LE):
        order = ">"
    else:
        raise ValueError(f"{path}: magic {data[:4].hex()}, expected a classic pcap file")
    (linktype,) = struct.unpack_from(order + "I", data, 20)
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    out = []
    pos = 24
    while pos + 16 <= len(data):
        _, _, captured, _ = struct.unpack_from(order + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + captured]
        pos += 16 + captured
        if len(frame) < 14 + 20 or struct.unpack_from("!H", frame, 12)[0] != ETHERTYPE_IPV4:
            continue
        ip = frame[14:]
        header_len = (ip[0] & 0x0F) * 4
        total_len = struct.unpack_from("!H", ip, 2)[0]
        if ip[9] != IPPROTO_UDP or len(ip) < header_len + 8:
            continue
        udp = ip[header_len:total_len]
        (udp_len,) = struct.unpack_from("!H", udp, 4)
        out.append(bytes(udp[8:udp_len]))
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes: expected whole packet records")
    return out
