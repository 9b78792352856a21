"""The limits of ``camflow.limits`` applied to a listener's real connections (asyncio).

- ``ConnectionGuard``: one per listener. It admits or refuses each new connection by its client
  address (``ClientCap``: a refused one gets a ``503`` and is closed), checks the deadline of every
  connection it watches once a second (``Watched``), and counts every refusal
  (``camflow_connections_refused{listener, reason}``) and logs it once per client address and
  reason per minute (``RefusalLog``).
- ``GuardedProtocol``: sits between a transport and the protocol that serves it (aiohttp's request
  handler): it follows the requests in the bytes with a ``RequestClock``, closes the connection
  when a deadline passes or a head is too large, resets it when its send buffer stays full for
  ``send_timeout`` (a client that does not read), and otherwise passes everything through.
- ``GuardedSite``: an aiohttp ``TCPSite`` whose every connection is guarded (WHIP on its own port,
  the edge without its fast path), HTTPS with a handshake deadline when given an ``ssl_context``.

aiohttp's own keep-alive timer (``keepalive_timeout`` = the idle limit, given to its ``AppRunner``)
also runs on the connections it serves: it closes one whose next request head is not complete
within the idle limit after the last response, which the bytes of a trickled head do not extend.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from aiohttp import web

from camflow.limits import ClientCap, ConnectionLimits, Refusal, RefusalLog, RequestClock, refusal_response
from camflow.log import get_logger
from camflow.metrics import CONNECTIONS_REFUSED
from camflow.tls import HANDSHAKE_TIMEOUT

log = get_logger("limits")
SWEEP_SECONDS = 1.0
RETRY_AFTER = 5  # seconds a client refused by the per-client cap is asked to wait
LINGER_SECONDS = (
    2.0  # after a last answer, seconds its connection is kept half-closed (see answer_and_linger)
)


def answer_and_linger(transport: asyncio.Transport, response: bytes) -> None:
    """Write a last ``response`` and end the connection so that the client gets to read it.

    Closing at once while the client is still sending (a trickled head) leaves unread input in the
    socket, and the kernel answers it with a reset that can destroy the response before the client
    reads it. So, where the transport can, this half-closes (the client sees the response, then the
    end) and closes ``LINGER_SECONDS`` later; the caller discards what arrives meanwhile. This is
    the lingering close of nginx and Apache. A TLS transport cannot half-close: it closes at once.
    """
    transport.write(response)
    if transport.can_write_eof():
        transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
    else:
        transport.close()


def peer_host(transport: asyncio.BaseTransport) -> str:
    """The client's address of a TCP transport ("" when it has none, e.g. a Unix socket)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class Watched(Protocol):
    """A connection whose deadlines a guard checks."""

    host: str

    def expired(self, now: float) -> Refusal | None: ...

    def refuse(self, reason: Refusal) -> None:
        """Close the connection for ``reason`` (answering first where it can)."""
        ...


class ConnectionGuard:
    def __init__(self, listener: str, limits: ConnectionLimits) -> None:
        self.listener = listener
        self.limits = limits
        self.cap = ClientCap(limits)
        self.watched: set[Watched] = set()
        self._log = RefusalLog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def admit(self, transport: asyncio.BaseTransport) -> str | None:
        """The client's address when the connection may stay (counted until ``release``), else None:
        the connection was answered ``503`` and closed."""
        host = peer_host(transport)
        if self.cap.admit(host):
            return host
        self.refused(Refusal.PER_CLIENT_CAP, host)
        detail = (
            f"{self.limits.per_client} connections are open from {host}: the limit per client address "
            "(--max-connections-per-client); retry later"
        )
        extra = (f"Retry-After: {RETRY_AFTER}",)
        cast(asyncio.Transport, transport).write(refusal_response(503, "too_many_connections", detail, extra))
        transport.close()
        return None

    def release(self, host: str) -> None:
        self.cap.release(host)

    def refused(self, reason: Refusal, host: str) -> None:
        """Count a refusal; log it unless this client's was logged less than a minute ago."""
        CONNECTIONS_REFUSED.labels(self.listener, reason.value).inc()
        loop = self._loop or asyncio.get_running_loop()
        count = self._log.note(host, reason.value, loop.time())
        if count is not None:
            log.warning(
                "connection_refused", listener=self.listener, client=host, reason=reason.value, refused=count
            )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = self._loop.create_task(self._sweep(), name=f"{self.listener}-deadlines")

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    def sweep(self, now: float) -> int:
        """Close every watched connection whose deadline passed; how many."""
        closed = 0
        for conn in [c for c in self.watched if c.expired(now) is not None]:
            reason = conn.expired(now)
            assert reason is not None
            self.watched.discard(conn)
            self.refused(reason, conn.host)
            conn.refuse(reason)
            closed += 1
        return closed

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self.sweep(loop.time())
            except Exception as exc:  # one bad connection must not stop the others' deadlines
                log.error("deadline_sweep_failed", listener=self.listener, error=repr(exc), exc_info=True)


class GuardedProtocol(asyncio.Protocol):
    """``inner`` (e.g. aiohttp's request handler) behind a ``RequestClock`` (see the module docstring).

    Either ``inner`` is given with the ``host`` a guard already admitted (a connection handed over
    by the edge's fast path), or ``make_inner`` makes it once the guard admits the connection.
    """

    def __init__(
        self,
        guard: ConnectionGuard,
        *,
        inner: asyncio.Protocol | None = None,
        make_inner: Callable[[], asyncio.Protocol] | None = None,
        host: str | None = None,
        clock: RequestClock | None = None,
    ) -> None:
        self._guard = guard
        self._inner = inner
        self._make_inner = make_inner
        self.host = host or ""
        self._admitted = host is not None
        self._loop = asyncio.get_running_loop()
        self._clock = clock or RequestClock(guard.limits, self._loop.time())
        self._transport: asyncio.Transport | None = None
        self._stalled_since: float | None = None  # the send buffer is full (pause_writing) since

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admitted:
            host = self._guard.admit(transport)
            if host is None:
                return
            self.host, self._admitted = host, True
        if self._inner is None:
            assert self._make_inner is not None
            self._inner = self._make_inner()
        self._transport = cast(asyncio.Transport, transport)
        self._guard.watched.add(self)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._inner is None:
            return
        if self._clock.feed(data, self._loop.time()) is Refusal.HEAD_TOO_LARGE:
            self._guard.watched.discard(self)
            self._guard.refused(Refusal.HEAD_TOO_LARGE, self.host)
            self.refuse(Refusal.HEAD_TOO_LARGE)
            return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._guard.watched.discard(self)
            self._guard.release(self.host)
            self._admitted = False
        self._transport = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._stalled_since = self._loop.time()
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._stalled_since = None
        if self._inner is not None:
            self._inner.resume_writing()

    def expired(self, now: float) -> Refusal | None:
        stalled = self._stalled_since
        if stalled is not None and now - stalled > self._guard.limits.send_timeout:
            return Refusal.SEND_TIMEOUT
        return self._clock.expired(now)

    def refuse(self, reason: Refusal) -> None:
        # The application may be writing (a pipelined response): no answer of ours, just the end;
        # a reset when bytes are still queued, so a client that does not read cannot hold it open.
        transport = self._transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()


class GuardedSite(web.TCPSite):
    """A ``TCPSite`` whose connections a ``ConnectionGuard`` admits and watches."""

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None)
        self._guard = guard

    def _protocol(self, app_server: web.Server) -> asyncio.Protocol:
        """One connection's protocol: the guard's, around aiohttp's (a subclass may serve its own)."""
        return GuardedProtocol(self._guard, make_inner=app_server)

    async def start(self) -> None:
        self._runner._reg_site(self)
        app_server = self._runner.server
        assert app_server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._protocol(app_server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl_context is not None else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
        self._guard.start()

    async def stop(self) -> None:
        await self._guard.stop()
        await super().stop()
