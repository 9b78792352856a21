"""``rtsps://`` pull sources: the TLS connection made and verified by Python's ``ssl``, relayed to PyAV.

FFmpeg's RTSP client (PyAV's) opens its TLS connection with no options: it cannot be given a CA
and does not verify the server's certificate. So camflow makes the TLS connection itself
(``camflow.tls.client_context``: the system CA store, plus ``--pull-ca``; host name checked; or
nothing checked with ``--pull-tls-insecure``) and hands PyAV a plain ``rtsp://`` URL on a
loopback port that accepts one connection, the reader's, and relays its bytes through the TLS
connection. The RTSP dialogue and the RTP interleaved in it (TCP transport: UDP would leave TLS)
are PyAV's as for any source; a certificate that does not verify is an ordinary failed attempt
(``pull_failed`` with the reason, retried with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit, urlunsplit

from camflow.log import get_logger

RTSPS_DEFAULT_PORT = 322
READ_SIZE = 64 * 1024
log = get_logger("ingest.sources.pull.tls")


class TlsRelay:
    """One TLS connection to a source, relayed to the first client of a loopback listener."""

    def __init__(self, upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter], url: str) -> None:
        self._up_reader, self._up_writer = upstream
        self._url = url
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: asyncio.StreamWriter | None = None
        self.port = 0

    @classmethod
    async def open(cls, url: str, context: ssl.SSLContext, timeout: float) -> TlsRelay:
        """Connect to ``url``'s host with TLS (verified as ``context`` says) within ``timeout`` seconds;
        raises ``ssl.SSLError`` (e.g. ``SSLCertVerificationError``), ``OSError`` or ``TimeoutError``."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or RTSPS_DEFAULT_PORT
        upstream = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=host, ssl_handshake_timeout=timeout, limit=READ_SIZE
            ),
            timeout,
        )
        relay = cls(upstream, url)
        relay._server = await asyncio.start_server(relay._accept, "127.0.0.1", 0, limit=READ_SIZE)
        relay.port = relay._server.sockets[0].getsockname()[1]
        return relay

    @property
    def url(self) -> str:
        """The source's URL as PyAV opens it: ``rtsp://`` on the relay's loopback port, same user,
        password, path and query."""
        parts = urlsplit(self._url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(("rtsp", f"{userinfo}{at}127.0.0.1:{self.port}", parts.path, parts.query, ""))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None or self._tasks:  # one client only: the reader's
            writer.close()
            return
        self._server.close()  # nobody else connects to the camera through us
        self._client = writer
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(reader, self._up_writer), name="pull-tls-up"),
            loop.create_task(self._pump(self._up_reader, writer), name="pull-tls-down"),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self._close_all()

    def _close_all(self) -> None:
        self._up_writer.close()
        if self._client is not None:
            self._client.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._up_writer.close()
        if self._client is not None:
            self._client.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._up_writer.wait_closed()
