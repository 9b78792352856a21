"""The RTSP server: listener, connection limits, UDP ports, and the registry of live publishers.

Each accepted connection is an ``RtspConnection`` (``ingest/sources/rtsp/connection.py``). A sweeper task
ticks every connection about once a second (session, handshake and request deadlines, receiver
reports). With ``limits``, one client address may hold ``limits.per_client`` connections (more get
``503``), and a request (or interleaved frame) begun after the handshake must be whole within
``limits.head_timeout`` (``camflow.limits``); refusals are counted by reason and logged once per
client address per minute. At ``max_connections`` a new connection first evicts the oldest
connection that has not announced a stream (an idle or slow client cannot lock cameras out); when
every connection is a live session it is refused with ``503 Service Unavailable``. With a TLS
context, a second listener on ``tls_port`` takes RTSPS: the same connections inside TLS (handshake
within ``handshake_timeout``), RTP interleaved in the TLS connection; a SETUP for UDP there is
refused (461), as it would leave TLS. Both listeners share the limits (the per-client cap counts
both) and the publisher registry. A new publisher of a stream that is already live replaces the
old one (the camera reconnected before its old connection died), as mediamtx does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from camflow.bus import Bus
from camflow.limits import ClientCap, ConnectionLimits, Refusal, RefusalLog
from camflow.log import get_logger
from camflow.metrics import CONNECTIONS_REFUSED
from ingest.media.live import LiveFeeds
from ingest.media.publisher import Publisher
from ingest.sources.rtsp.auth import basic_only
from ingest.sources.rtsp.connection import READ_SIZE, RtspConnection
from ingest.sources.rtsp.host import ServerStats, StreamOwner
from ingest.sources.rtsp.message import Response
from ingest.sources.rtsp.session import Authorizer
from ingest.sources.rtsp.udp import UdpPortPool, UdpStats

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = get_logger("ingest.sources.rtsp")
SWEEP_SECONDS = 1.0


class RtspServer:
    def __init__(
        self,
        bus: Bus,
        authorize: Authorizer,
        *,
        host: str = "127.0.0.1",
        port: int | None,
        segment_target: float,
        session_timeout: int,
        handshake_timeout: float,
        max_connections: int,
        challenges: Callable[[], tuple[str, ...]] = basic_only,
        udp_ports: tuple[int, int] | None = None,
        tls_port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
        part_target: float | None = None,
        live: LiveFeeds | None = None,
    ) -> None:
        """``part_target``: seconds of the low-latency parts cut in each segment (None: none);
        ``live``: the live feeds every publisher's video also goes to (WHEP viewers).
        ``port`` (0: any), ``segment_target``, ``session_timeout``, ``handshake_timeout``,
        ``max_connections`` and ``limits`` have their defaults where the flags are defined (the CLI's
        args); ``limits=None``: no per-client cap and no request deadline. ``port`` None: no plain
        RTSP listener; ``tls_port`` (0: any) with ``tls_context``: RTSPS."""
        self.bus = bus
        self.authorize = authorize
        self.challenges = challenges
        self.host = host
        self.port = port
        self.segment_target = segment_target
        self.part_target = part_target
        self.live = live
        self.session_timeout = session_timeout
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.request_timeout = limits.head_timeout if limits is not None else None
        self._cap = ClientCap(limits) if limits is not None else None
        self._refusals = RefusalLog()
        self.udp_pool = UdpPortPool(host, udp_ports) if udp_ports is not None else None
        self.udp_stats = UdpStats()
        self.stats = ServerStats()
        self.publishers: dict[str, Publisher] = {}
        self.ended: deque[Publisher] = deque(maxlen=1024)  # for the health feed, which takes them
        self.secure_publishers: set[int] = set()  # id() of the live publishers that came over RTSPS
        self._owners: dict[str, StreamOwner] = {}
        self.tls_port = tls_port if tls_context is not None else None
        self.tls_context = tls_context
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._connections: dict[RtspConnection, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._refused_logged = 0

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> int:
        """Listen; the plain RTSP port (the RTSPS one when plain RTSP is off)."""
        if self.port is not None:
            self._server = await asyncio.start_server(self._client, self.host, self.port, limit=READ_SIZE)
            self.port = self._server.sockets[0].getsockname()[1]
        if self.tls_context is not None and self.tls_port is not None:
            self._tls_server = await asyncio.start_server(
                self._tls_client,
                self.host,
                self.tls_port,
                limit=READ_SIZE,
                ssl=self.tls_context,
                ssl_handshake_timeout=self.handshake_timeout,
            )
            self.tls_port = self._tls_server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep(), name="rtsp-sweeper")
        log.info(
            "rtsp_listening",
            host=self.host,
            port=self.port,
            rtsps_port=self.tls_port,
            udp_ports=str(self.udp_pool) if self.udp_pool else None,
            session_timeout=self.session_timeout,
            max_connections=self.max_connections,
        )
        return self.port if self.port is not None else self.tls_port or 0

    async def stop(self) -> None:
        """Stop taking connections, end every session (flushing its segments)."""
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        tasks = list(self._connections.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in (self._server, self._tls_server):
            if server is not None:
                await server.wait_closed()
        self._server = self._tls_server = None

    # --- connections --------------------------------------------------------------------------

    async def _tls_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.tls_connections += 1
        await self._client(reader, writer, secure=True)

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, secure: bool = False
    ) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self._cap is not None and not self._cap.admit(client):
            self.refused(Refusal.PER_CLIENT_CAP, client)
            cap = self._cap.limits.per_client
            body = f"{cap} connections are open from {client}: the limit per client address; retry later"
            await self._refuse(writer, body)
            return
        try:
            if len(self._connections) >= self.max_connections and not self._evict_idle():
                self._count_full()
                await self._refuse(
                    writer, f"server full: {self.max_connections} live RTSP sessions; retry later"
                )
                return
            task = asyncio.current_task()
            assert task is not None
            connection = RtspConnection(self, reader, writer, secure=secure)
            self._connections[connection] = task
            self.stats.connections += 1
            try:
                await connection.run()
            finally:
                self._connections.pop(connection, None)
        finally:
            if self._cap is not None:
                self._cap.release(client)

    def refused(self, reason: Refusal, client: str) -> None:
        """Count a connection refused or closed for ``reason``; log it once per client per minute."""
        CONNECTIONS_REFUSED.labels("rtsp", reason.value).inc()
        count = self._refusals.note(client, reason.value, asyncio.get_running_loop().time())
        if count is not None:
            log.warning(
                "connection_refused", listener="rtsp", client=client, reason=reason.value, refused=count
            )

    def _evict_idle(self) -> bool:
        """Abort the oldest connection that has not announced a stream; False if there is none."""
        idle = [c for c in self._connections if not c.announced and c.end_reason is None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened)
        self.stats.connections_evicted += 1
        oldest.abort(f"evicted: {self.max_connections} connections open and it announced nothing")
        self._connections.pop(oldest, None)
        return True

    def _count_full(self) -> None:
        self.stats.connections_refused += 1
        if self.stats.connections_refused >= 2 * self._refused_logged:  # 1, 2, 4, 8, ... not one per client
            self._refused_logged = self.stats.connections_refused
            log.warning(
                "rtsp_connection_refused",
                reason=f"{self.max_connections} live sessions (--rtsp-max-connections)",
                refused=self.stats.connections_refused,
            )

    async def _refuse(self, writer: asyncio.StreamWriter, detail: str) -> None:
        body = f"{detail}\r\n".encode()
        headers = (("Content-Type", "text/plain"), ("Content-Length", str(len(body))))
        writer.write(bytes(Response(503, "Service Unavailable", headers, body)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        reported = (0, 0)
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for connection in list(self._connections):
                try:
                    connection.tick(now)
                except Exception as exc:  # a bug in one connection must not stop the others' deadlines
                    log.error("rtsp_tick_failed", peer=connection.peer, error=repr(exc), exc_info=True)
                    connection.abort("internal error")
            closed = (self.stats.connections_evicted, self.stats.handshake_timeouts)
            if closed != reported:  # one line a second at most, however many idle clients there are
                log.warning(
                    "rtsp_idle_connections_closed",
                    evicted=closed[0] - reported[0],
                    handshake_timeouts=closed[1] - reported[1],
                    open=len(self._connections),
                )
                reported = closed

    def end_device_sessions(self, device: str, allowed: frozenset[str], reason: str) -> int:
        """Abort the sessions ``device`` authenticated of streams not in ``allowed`` (revoked: none)."""
        ended = 0
        for connection in list(self._connections):
            session = connection.session
            if session.device == device and session.stream not in allowed and connection.end_reason is None:
                log.warning(
                    "device_session_ended",
                    device=device,
                    stream_id=session.stream,
                    reason=reason,
                    peer=connection.peer,
                    protocol="rtsp",
                )
                connection.abort(f"device {device}: {reason}")
                ended += 1
        return ended

    # --- publishers -----------------------------------------------------------------------------

    async def begin_publisher(
        self,
        owner: StreamOwner,
        stream: str,
        *,
        codec: str,
        counters: Sequence[DataclassInstance],
        secure: bool = False,
    ) -> Publisher:
        old = self.publishers.get(stream)
        if old is not None:
            self.stats.publishers_replaced += 1
            previous = self._owners.get(stream)
            log.info("publisher_replaced", stream_id=stream, old_epoch=old.epoch)
            if previous is not None and previous is not owner:
                previous.abort("replaced by a new publisher of the stream")
        publisher = Publisher(
            self.bus,
            stream,
            codec=codec,
            segment_target=self.segment_target,
            counters=counters,
            part_target=self.part_target,
            live=self.live,
        )
        await publisher.start()
        self.publishers[stream] = publisher
        self._owners[stream] = owner
        if secure:
            self.secure_publishers.add(id(publisher))
        return publisher

    async def end_publisher(self, publisher: Publisher, reason: str) -> None:
        if self.publishers.get(publisher.stream) is publisher:
            del self.publishers[publisher.stream]
            self._owners.pop(publisher.stream, None)
        self.ended.append(publisher)
        self.secure_publishers.discard(id(publisher))
        await asyncio.shield(publisher.close(reason))
