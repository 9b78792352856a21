"""What an RTSP connection needs of the server that accepted it (``ConnectionHost``, which
``ingest.sources.rtsp.server.RtspServer`` is), so that the connection does not import the server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from camflow.limits import Refusal
from ingest.media.publisher import Publisher
from ingest.sources.rtsp.session import Authorizer
from ingest.sources.rtsp.udp import UdpPortPool, UdpStats

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass
class ServerStats:
    connections: int = 0
    tls_connections: int = 0  # of ``connections``: RTSPS (their handshake done)
    connections_refused: int = 0
    connections_evicted: int = 0
    handshake_timeouts: int = 0
    bad_requests: int = 0
    unauthorized: int = 0
    sessions_timed_out: int = 0
    publishers_replaced: int = 0


class StreamOwner(Protocol):
    """The connection publishing a stream, as the registry sees it: it can be told to end."""

    def abort(self, reason: str) -> None: ...


class ConnectionHost(Protocol):
    """The server's side of a connection: settings, counters, UDP ports and the publisher registry."""

    authorize: Authorizer
    challenges: Callable[[], tuple[str, ...]]
    host: str
    session_timeout: int
    handshake_timeout: float
    request_timeout: float | None  # s a request begun after the handshake may take to arrive
    udp_pool: UdpPortPool | None
    udp_stats: UdpStats
    stats: ServerStats

    async def begin_publisher(
        self,
        owner: StreamOwner,
        stream: str,
        *,
        codec: str,
        counters: Sequence[DataclassInstance],
        secure: bool = False,
    ) -> Publisher:
        """A started publisher of ``stream`` (replacing, and aborting the owner of, a live one);
        ``secure``: published over RTSPS."""
        ...

    async def end_publisher(self, publisher: Publisher, reason: str) -> None: ...

    def refused(self, reason: Refusal, client: str) -> None:
        """Count (and log, once per client per interval) a connection closed for ``reason``."""
        ...
