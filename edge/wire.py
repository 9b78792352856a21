"""The edge's listening socket: HTTP/1.1 connections that start on the fast path.

``EdgeHTTPProtocol`` reads requests off a connection and answers each one that
``FastPath.respond`` can answer with one write (keep-alive and pipelining included). At the first
request it cannot answer (or cannot parse) it hands the connection to the aiohttp application:
it creates aiohttp's own protocol for it, moves the transport over, and feeds it every byte not
yet answered, starting with that request. From then on aiohttp owns the connection, so errors,
conditional and range requests, the API, pages and Server-Sent Events behave exactly as they do
without the fast path.

``EdgeSite`` is an aiohttp ``TCPSite`` that listens with this protocol; it closes connections
idle for ``KEEPALIVE_TIMEOUT`` (as aiohttp does) and, when stopped, the ones still open. With an
``ssl_context`` it listens for HTTPS (the protocol sees the decrypted bytes; a handshake not done
within ``camflow.tls.HANDSHAKE_TIMEOUT`` closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import cast

from aiohttp import web

from camflow.tls import HANDSHAKE_TIMEOUT
from edge.cache import CachedObject
from edge.fastpath import FastPath

MAX_HEAD = 8190  # a longer request head goes to aiohttp (its line/field limit), which judges it
KEEPALIVE_TIMEOUT = 75.0  # seconds, aiohttp's default
SWEEP_INTERVAL = 5.0
SMALL_BODY = 64 * 1024  # bodies up to this size are written in one piece with their head


class EdgeHTTPProtocol(asyncio.Protocol):
    def __init__(self, fast: FastPath, app_server: web.Server, open_: set[EdgeHTTPProtocol]) -> None:
        self._fast = fast
        self._app_server = app_server
        self._open = open_
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self._loading: asyncio.Task[CachedObject] | None = None
        self._loop = asyncio.get_running_loop()
        self.last_active = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        self._transport = None
        self._buffer.clear()
        if self._loading is not None:
            self._loading.cancel()  # only this wait: the load itself goes on for the others

    def data_received(self, data: bytes) -> None:
        self.last_active = self._loop.time()
        self._buffer += data
        self._serve()

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and self._loading is None:
            self._transport.resume_reading()
            self._serve()

    def idle(self, now: float) -> bool:
        transport = self._transport
        return (
            transport is not None
            and now - self.last_active > KEEPALIVE_TIMEOUT
            and transport.get_write_buffer_size() == 0
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _serve(self, loaded: CachedObject | None = None) -> None:
        """Answer every complete request in the buffer, in order, until one needs the application."""
        buffer = self._buffer
        while not self._paused and self._loading is None and self._transport is not None and buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD or b"\n\n" in buffer:
                    self._hand_over()
                return
            if end > MAX_HEAD:
                self._hand_over()
                return
            answer = self._fast.respond(bytes(buffer[:end]), loaded)
            loaded = None
            if answer is None:
                self._hand_over()
                return
            if isinstance(answer, str):
                self._load(answer)
                return
            del buffer[: end + 4]
            head, body, keep_alive = answer
            if len(body) <= SMALL_BODY:
                self._transport.write(head + body)
            else:
                self._transport.writelines((head, body))
            if not keep_alive:
                self._transport.close()
                return

    def _load(self, key: str) -> None:
        """Load ``key`` (the request stays in the buffer), then go on serving; stop reading meanwhile."""
        assert self._transport is not None
        self._transport.pause_reading()
        task = self._loop.create_task(self._fast.load(key), name=f"edge-fast-load:{key}")
        task.add_done_callback(self._loaded)
        self._loading = task

    def _loaded(self, task: asyncio.Task[CachedObject]) -> None:
        self._loading = None
        if task.cancelled() or self._transport is None:
            return
        if not self._paused:
            self._transport.resume_reading()
        if task.exception() is not None:
            self._hand_over()  # the application answers 404 / 502 (and logs and counts it)
        else:
            self._serve(task.result())

    def _hand_over(self) -> None:
        """Give the connection, and every byte not yet answered, to the aiohttp application."""
        transport = self._transport
        assert transport is not None
        self._open.discard(self)
        self._transport = None
        pending, self._buffer = bytes(self._buffer), bytearray()
        handler = self._app_server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused:  # our responses still fill the socket: aiohttp must wait for them too
            handler.pause_writing()
        transport.resume_reading()  # aiohttp reads for itself from now on
        if pending:
            handler.data_received(pending)


class EdgeSite(web.TCPSite):
    """A ``TCPSite`` whose connections start on the fast path (see the module docstring)."""

    def __init__(
        self,
        runner: web.AppRunner,
        fast: FastPath,
        host: str,
        port: int,
        *,
        reuse_port: bool,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port or None, ssl_context=ssl_context)
        self._fast = fast
        self._connections: set[EdgeHTTPProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def connections(self) -> int:
        """Connections on the fast path now (handed-over ones belong to aiohttp)."""
        return len(self._connections)

    async def start(self) -> None:
        self._runner._reg_site(self)
        app_server = self._runner.server
        assert app_server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: EdgeHTTPProtocol(self._fast, app_server, self._connections),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl_context is not None else None,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
        self._sweeper = asyncio.create_task(self._sweep(), name="edge-keepalive-sweep")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for conn in [c for c in self._connections if c.idle(now)]:
                conn.close()

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await super().stop()
        for conn in list(self._connections):
            conn.close()  # a response still being written is flushed first
