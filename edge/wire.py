"""The edge's listening socket: HTTP/1.1 connections that start on the fast path.

``EdgeHTTPProtocol`` reads requests off a connection and answers each one that
``FastPath.respond`` can answer with one write (keep-alive and pipelining included). At the first
request it cannot answer (or cannot parse) it hands the connection to the aiohttp application:
it creates aiohttp's own protocol for it, moves the transport over (behind a
``camflow.guard.GuardedProtocol``), and feeds it every byte not yet answered, starting with that
request. From then on aiohttp owns the connection, so errors, conditional and range requests, the
API, pages and Server-Sent Events behave exactly as they do without the fast path.

``EdgeSite`` is a ``camflow.guard.GuardedSite`` that listens with this protocol. Its ``ConnectionGuard``
(``camflow.guard``) applies the listener's ``ConnectionLimits`` to every connection, on the fast
path and after the hand-over: the per-client cap (a refused connection gets 503), the request head
deadline (408, counted from the head's first byte: trickled bytes do not extend it), the head size
(431), the body deadline, the idle keep-alive limit and the send timeout (a client that reads
nothing of a full send buffer is reset). When stopped, it closes the connections still open. With
an ``ssl_context`` it listens for HTTPS (the protocol sees the decrypted bytes; a handshake not
done within ``camflow.tls.HANDSHAKE_TIMEOUT`` closes the connection).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from aiohttp import web

from camflow.guard import ConnectionGuard, GuardedProtocol, GuardedSite, answer_and_linger
from camflow.limits import Phase, Refusal, RequestClock, refusal_response
from edge.cache import CachedObject
from edge.fastpath import FastPath

SMALL_BODY = 64 * 1024  # bodies up to this size are written in one piece with their head


class EdgeHTTPProtocol(asyncio.Protocol):
    def __init__(
        self, fast: FastPath, app_server: web.Server, open_: set[EdgeHTTPProtocol], guard: ConnectionGuard
    ) -> None:
        self._fast = fast
        self._app_server = app_server
        self._open = open_
        self._guard = guard
        self._max_head = guard.limits.max_head
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self._loading: asyncio.Task[CachedObject] | None = None
        self._loop = asyncio.get_running_loop()
        self._clock = RequestClock(guard.limits, self._loop.time())
        self._lingering = False  # a last answer was written: the rest of the input is discarded
        self._stalled_since = 0.0  # when the send buffer filled (pause_writing), while _paused
        self.host = ""  # the client's address
        self._admitted = False  # counted by the guard's per-client cap (until connection_lost)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host = self._guard.admit(transport)
        if host is None:
            return  # refused (503) and closed
        self.host, self._admitted = host, True
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._open.add(self)
        self._guard.watched.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        self._guard.watched.discard(self)
        if self._admitted:
            self._guard.release(self.host)
            self._admitted = False
        self._transport = None
        self._buffer.clear()
        if self._loading is not None:
            self._loading.cancel()  # only this wait: the load itself goes on for the others

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._lingering:
            return
        if not self._buffer:
            self._clock.head_began(self._loop.time())  # its deadline runs from its first byte
        self._buffer += data
        self._serve()

    def pause_writing(self) -> None:
        self._paused = True
        self._stalled_since = self._loop.time()
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and self._loading is None:
            self._transport.resume_reading()
            self._serve()

    def expired(self, now: float) -> Refusal | None:
        """The deadline this connection passed (``camflow.guard.Watched``); none while a response
        is still being written or an object loaded."""
        transport = self._transport
        if transport is None:
            return None
        if self._paused:  # a client that reads nothing of a full send buffer
            stalled = now - self._stalled_since > self._guard.limits.send_timeout
            return Refusal.SEND_TIMEOUT if stalled else None
        if self._loading is not None:
            return None
        if self._clock.phase is Phase.IDLE and transport.get_write_buffer_size():
            return None
        return self._clock.expired(now)

    def refuse(self, reason: Refusal) -> None:
        if reason is Refusal.HEAD_TIMEOUT:
            timeout = self._guard.limits.head_timeout
            detail = f"the request head was not complete within {timeout:g} s of its first byte"
            self._answer_and_close(refusal_response(408, "request_timeout", detail))
        elif reason is Refusal.SEND_TIMEOUT:
            if self._transport is not None:
                self._transport.abort()  # what is queued will never be read
        else:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _answer_and_close(self, response: bytes) -> None:
        """Write a refusal after every answer already written, and end the connection (what the
        client still sends is discarded: ``answer_and_linger``)."""
        transport = self._transport
        if transport is None or self._lingering:
            return
        self._buffer.clear()
        self._lingering = True
        self._guard.watched.discard(self)
        answer_and_linger(transport, response)

    def _serve(self, loaded: CachedObject | None = None) -> None:
        """Answer every complete request in the buffer, in order, until one needs the application."""
        buffer = self._buffer
        while not self._paused and self._loading is None and self._transport is not None and buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._max_head:
                    self._head_too_large()
                elif b"\n\n" in buffer:
                    self._hand_over()
                return
            if end + 4 > self._max_head:
                self._head_too_large()
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
            if buffer:
                self._clock.head_began(self._loop.time())  # the next (pipelined) request's
            else:
                self._clock.answered(self._loop.time())
            head, body, keep_alive = answer
            if len(body) <= SMALL_BODY:
                self._transport.write(head + body)
            else:
                self._transport.writelines((head, body))
            if not keep_alive:
                self._transport.close()
                return

    def _head_too_large(self) -> None:
        self._guard.watched.discard(self)
        self._guard.refused(Refusal.HEAD_TOO_LARGE, self.host)
        detail = f"the request head is over {self._max_head} bytes (--max-request-head)"
        self._answer_and_close(refusal_response(431, "head_too_large", detail))

    def _load(self, key: str) -> None:
        """Load ``key`` (the request stays in the buffer), then go on serving; stop reading meanwhile."""
        assert self._transport is not None
        self._clock.busy()
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
        transport, host, old = self._transport, self.host, self._clock
        assert transport is not None and self._admitted
        self._open.discard(self)
        self._guard.watched.discard(self)
        self._transport, self._admitted = None, False  # the guarded protocol releases the cap's count
        pending, self._buffer = bytes(self._buffer), bytearray()
        handler = self._app_server()
        clock = RequestClock(self._guard.limits, self._loop.time())
        guarded = GuardedProtocol(self._guard, inner=handler, host=host, clock=clock)
        transport.set_protocol(guarded)
        guarded.connection_made(transport)
        if self._paused:  # our responses still fill the socket: aiohttp must wait for them too
            guarded.pause_writing()
        transport.resume_reading()  # aiohttp reads for itself from now on
        if pending:
            guarded.data_received(pending)
            if clock.phase is Phase.HEAD and old.phase is Phase.HEAD:  # the head began before
                clock.since, clock.deadline = old.since, old.deadline


class EdgeSite(GuardedSite):
    """A ``GuardedSite`` whose connections start on the fast path (see the module docstring)."""

    def __init__(
        self,
        runner: web.AppRunner,
        fast: FastPath,
        host: str,
        port: int,
        *,
        reuse_port: bool,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, guard, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        self._fast = fast
        self._connections: set[EdgeHTTPProtocol] = set()

    @property
    def connections(self) -> int:
        """Connections on the fast path now (handed-over ones belong to aiohttp)."""
        return len(self._connections)

    def _protocol(self, app_server: web.Server) -> asyncio.Protocol:
        return EdgeHTTPProtocol(self._fast, app_server, self._connections, self._guard)

    async def stop(self) -> None:
        await super().stop()  # the guard's watch first, then the listening socket
        for conn in list(self._connections):
            conn.close()  # a response still being written is flushed first
