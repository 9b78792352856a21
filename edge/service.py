"""Run the edge application on a TCP socket: ``EdgeServer`` to own it, ``run_edge`` until told to stop."""

from __future__ import annotations

import asyncio

from aiohttp import web

from camflow.log import get_logger
from camflow.store import Store
from camflow.tokens import TokenSigner
from edge.app import build_app


class EdgeServer:
    """The edge on ``host:port``; port 0 binds a free port, reported by ``start()`` and ``port``."""

    def __init__(
        self,
        store: Store,
        signer: TokenSigner,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        playlist_max_age: float = 1.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._app = build_app(store, signer, playlist_max_age=playlist_max_age)
        self._host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._log = get_logger("edge")

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("edge server is not started; call start() first")
        return self._port

    async def start(self) -> int:
        """Bind and serve; return the bound port."""
        if self._runner is not None:
            raise RuntimeError("edge server is already started")
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._log.info("edge_started", host=self._host, port=self._port)
        return self._port

    async def stop(self) -> None:
        """Stop accepting, finish or cancel requests in flight, and run the app's cleanup."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        self._log.info("edge_stopped", host=self._host, port=self._port)
        self._port = None


async def run_edge(
    store: Store,
    signer: TokenSigner,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    playlist_max_age: float = 1.0,
) -> None:
    """Serve the edge until ``stop`` is set (or this task is cancelled), then shut it down."""
    server = EdgeServer(store, signer, host=host, port=port, playlist_max_age=playlist_max_age)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
