"""RTP over UDP (RFC 2326 12.39): server port pairs from a configured range, and one track's sockets.

Each UDP track gets its own pair: an even RTP port and the RTCP port above it. Datagrams from any
address other than the camera's (the RTSP connection's peer) are dropped and counted. The sockets
are read with ``loop.add_reader`` and drained a bounded number of datagrams per wake-up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ingest.errors import ParseError

DEFAULT_UDP_PORTS = (20000, 20999)
DATAGRAM_MAX = 65536
DRAIN_PER_WAKEUP = 64


def parse_port_range(text: str) -> tuple[int, int]:
    """``20000-20999`` to (first, last): at least one even/odd pair inside 1024..65535."""
    low, sep, high = text.strip().partition("-")
    try:
        first, last = int(low), int(high)
    except ValueError:
        first = last = -1
    if not sep or not 1024 <= first < last <= 65535 or first + (first % 2) + 1 > last:
        raise ParseError(
            f"UDP port range {text!r}: expected FIRST-LAST within 1024-65535 holding an even/odd pair"
        )
    return first, last


@dataclass
class UdpStats:
    rtp_datagrams: int = 0
    rtcp_datagrams: int = 0
    foreign_datagrams: int = 0  # from an address other than the camera's
    send_errors: int = 0


class UdpPortPool:
    """Binds RTP/RTCP socket pairs on ``host`` from ``ports``, rotating through the range."""

    def __init__(self, host: str, ports: tuple[int, int] = DEFAULT_UDP_PORTS) -> None:
        self.host = host
        self.first, self.last = ports
        start = self.first + self.first % 2
        self._pairs = list(range(start, self.last, 2))  # RTP ports whose RTP+1 is inside the range
        self._cursor = 0
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def _bind(self, port: int) -> socket.socket | None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def bind_pair(self) -> tuple[socket.socket, socket.socket] | None:
        """Two bound non-blocking sockets (RTP on an even port, RTCP on the next), or None if none free."""
        for _ in range(len(self._pairs)):
            port = self._pairs[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._pairs)
            rtp = self._bind(port)
            if rtp is None:
                continue
            rtcp = self._bind(port + 1)
            if rtcp is None:
                rtp.close()
                continue
            return rtp, rtcp
        return None


class UdpTrackLink:
    """One track's server port pair: RTP in, RTCP in, and RTCP (receiver reports) out to the camera."""

    def __init__(
        self,
        sockets: tuple[socket.socket, socket.socket],
        camera_host: str,
        client_ports: tuple[int, int],
        on_rtp: Callable[[bytes, float], None],
        on_rtcp: Callable[[bytes, float], None],
        stats: UdpStats,
    ) -> None:
        self.rtp_sock, self.rtcp_sock = sockets
        self.camera_host = camera_host
        self.client_ports = client_ports
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self.stats = stats
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def server_ports(self) -> tuple[int, int]:
        return int(self.rtp_sock.getsockname()[1]), int(self.rtcp_sock.getsockname()[1])

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.rtp_sock.fileno(), self._drain, self.rtp_sock, False)
        loop.add_reader(self.rtcp_sock.fileno(), self._drain, self.rtcp_sock, True)

    def _drain(self, sock: socket.socket, is_rtcp: bool) -> None:
        assert self._loop is not None
        arrival = self._loop.time()
        for _ in range(DRAIN_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable from an earlier send: nothing to read
                self.stats.send_errors += 1
                return
            if addr[0] != self.camera_host:
                self.stats.foreign_datagrams += 1
                continue
            if is_rtcp:
                self.stats.rtcp_datagrams += 1
                self._on_rtcp(data, arrival)
            else:
                self.stats.rtp_datagrams += 1
                self._on_rtp(data, arrival)

    def send_rtcp(self, data: bytes) -> None:
        """To the camera's RTCP port; a full buffer or an unreachable port is counted, never raised."""
        try:
            self.rtcp_sock.sendto(data, (self.camera_host, self.client_ports[1]))
        except OSError:
            self.stats.send_errors += 1

    def close(self) -> None:
        for sock in (self.rtp_sock, self.rtcp_sock):
            if self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
