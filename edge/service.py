"""Run the edge application on a TCP socket: ``EdgeServer`` to own it, ``run_edge`` until told to stop."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from camflow.bus import Bus
from camflow.devices.registry import DeviceRegistry
from camflow.errors import ConfigError
from camflow.guard import ConnectionGuard, GuardedSite
from camflow.limits import ConnectionLimits
from camflow.log import get_logger
from camflow.regions import RegionConfig
from camflow.store import Store
from camflow.tokens import TokenSigner
from edge.api import readyz_response
from edge.app import EDGE, build_app
from edge.events_api import DEVICES
from edge.fastpath import FastPath
from edge.health import HEALTH_FEED, HealthFeed
from edge.idp import JwtSettings
from edge.lifeline import PARENT_ENV, ParentWatch, parent_gone, parent_pid_from_env
from edge.metrics import REQUESTS, WORKERS, WORKERS_DIR_ENV, edge_metrics_response
from edge.policy import TokenCheck
from edge.wire import EdgeSite


class EdgeServer:
    """The edge on ``host:port``; port 0 binds a free port, reported by ``start()`` and ``port``.

    Connections start on the fast path (``edge.wire``, ``edge.fastpath``): plain GETs of cached
    objects are answered without aiohttp's request machinery; ``fast_path=False`` serves every
    request through the aiohttp application (same answers, slower). With ``tls_context`` the port
    speaks HTTPS only (``camflow.tls``: handshakes within ``HANDSHAKE_TIMEOUT``). ``playlists``: the
    bus to follow ``camflow.playlists`` on (blocking playlist reload, ``edge.blocking``).
    """

    def __init__(
        self,
        store: Store,
        signer: TokenSigner,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        playlist_max_age: float | None,
        cache_bytes: int,
        token_check: TokenCheck,
        identity: JwtSettings | None,
        fast_path: bool,
        limits: ConnectionLimits,
        reuse_port: bool = False,
        shutdown_timeout: float = 5.0,
        health_feed: HealthFeed | None = None,
        tls_context: ssl.SSLContext | None = None,
        playlists: Bus | None = None,
        devices: DeviceRegistry | None = None,
        region: RegionConfig | None = None,
    ) -> None:
        self._tls_context = tls_context
        self._app = build_app(
            store,
            signer,
            playlist_max_age=playlist_max_age,
            cache_bytes=cache_bytes,
            token_check=token_check,
            identity=identity,
            playlists=playlists,
            region=region,
        )
        if devices is not None:
            self._app[DEVICES] = devices
        self._reuse_port = reuse_port
        self._limits = limits
        self._fast_path = FastPath(self._app[EDGE]) if fast_path else None
        self._app[EDGE].viewers.peers = WORKERS  # with --workers N: count every worker's viewers
        if health_feed is not None:
            health_feed.publish = not is_worker_process()  # one edge, one instance: the first process
            self._app[HEALTH_FEED] = health_feed
        if self._fast_path is not None:
            fast = self._fast_path
            REQUESTS.fast_paths.append(lambda: (fast.served, fast.loaded))
        self._host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._log = get_logger("edge")

    def mount(self, prefix: str, app: web.Application) -> None:
        """Serve ``app`` under ``prefix`` on the edge's port (another service's routes; before ``start``)."""
        self._app.add_subapp(prefix, app)

    async def metrics_response(self) -> web.Response:
        """``/metrics`` of this edge (with ``--workers N``: every worker's figures summed), for the
        ``--metrics-port`` listener."""
        return await edge_metrics_response(self._app[EDGE])

    async def readyz_response(self) -> web.Response:
        """``/readyz`` of this edge, for the ``--metrics-port`` listener."""
        return await readyz_response(self._app)

    @property
    def fast_path(self) -> FastPath | None:
        """The fast path (its ``served`` count), None with ``fast_path=False``."""
        return self._fast_path

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("edge server is not started; call start() first")
        return self._port

    async def start(self) -> int:
        """Bind and serve; return the bound port."""
        if self._runner is not None:
            raise RuntimeError("edge server is already started")
        runner = web.AppRunner(
            self._app,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout,
            keepalive_timeout=self._limits.idle_timeout,  # aiohttp's: from the last response to a whole head
        )
        await runner.setup()
        guard = ConnectionGuard("edge", self._limits)
        try:
            site: web.TCPSite
            if self._fast_path is not None:
                site = EdgeSite(
                    runner,
                    self._fast_path,
                    self._host,
                    self._requested_port,
                    reuse_port=self._reuse_port,
                    guard=guard,
                    ssl_context=self._tls_context,
                )
            else:
                site = GuardedSite(
                    runner,
                    guard,
                    self._host,
                    self._requested_port,
                    ssl_context=self._tls_context,
                    reuse_port=self._reuse_port,
                )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        WORKERS.viewers = self._app[EDGE].viewers  # what this process answers the other workers
        shared = os.environ.get(WORKERS_DIR_ENV)
        if shared and is_worker_process():
            WORKERS.share(Path(shared))  # /metrics of any worker sums every worker's figures
        self._log.info("edge_started", host=self._host, port=self._port, tls=self._tls_context is not None)
        return self._port

    async def stop(self) -> None:
        """Stop accepting, finish or cancel requests in flight, and run the app's cleanup."""
        runner, self._runner = self._runner, None
        orphaned = is_worker_process() and (parent_gone() or os.getppid() != parent_pid_from_env())
        await WORKERS.stop()
        if WORKERS.viewers is self._app[EDGE].viewers:
            WORKERS.viewers = None
        shared = os.environ.get(WORKERS_DIR_ENV)
        if orphaned and shared:  # the parent died (SIGKILL): nobody else removes the edge's folder
            shutil.rmtree(shared, ignore_errors=True)
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
    playlist_max_age: float | None,
    cache_bytes: int,
    token_check: TokenCheck,
    identity: JwtSettings | None,
    fast_path: bool,
    limits: ConnectionLimits,
    region: RegionConfig | None = None,
) -> None:
    """Serve the edge until ``stop`` is set (or this task is cancelled), then shut it down."""
    server = EdgeServer(
        store,
        signer,
        host=host,
        port=port,
        playlist_max_age=playlist_max_age,
        cache_bytes=cache_bytes,
        token_check=token_check,
        identity=identity,
        fast_path=fast_path,
        limits=limits,
        region=region,
    )
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


WORKER_ENV = "CAMFLOW_EDGE_WORKER"  # set in the extra worker processes `camflow edge --workers N` starts


def is_worker_process() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def watch_parent(stop: asyncio.Event) -> ParentWatch | None:
    """In a worker process: set ``stop`` when the parent `camflow edge` dies (even by SIGKILL)."""
    parent = parent_pid_from_env()
    if not is_worker_process() or parent is None:
        return None
    watch = ParentWatch(parent, stop)
    watch.start()
    return watch


_SHARED_DIRS: list[str] = []  # metrics folders of the workers this process started


def spawn_workers(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` more copies of this `camflow edge` command, sharing its port with SO_REUSEPORT.

    Each worker is a whole edge with its own cache; the kernel spreads connections over them.
    Workers die with this process (``edge.lifeline``), even when it is killed with SIGKILL.
    They and this process share their metrics through a private folder (``edge.metrics.WorkerMetrics``),
    removed by ``stop_workers`` (or at exit).
    """
    try:
        shared = tempfile.mkdtemp(prefix="camflow-edge-metrics-")
    except OSError as exc:
        raise ConfigError(
            f"cannot create the edge workers' metrics folder in {tempfile.gettempdir()!r} ({exc}): "
            "expected a writable temporary folder (set TMPDIR)"
        ) from exc
    _SHARED_DIRS.append(shared)
    atexit.register(shutil.rmtree, shared, True)
    WORKERS.share(Path(shared))
    argv = [sys.executable, "-m", "camflow.cli", *sys.argv[1:]]
    env = {**os.environ, WORKER_ENV: "1", PARENT_ENV: str(os.getpid()), WORKERS_DIR_ENV: shared}
    return [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL) for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM each worker by PID, then SIGKILL what is left after ``timeout``."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in workers:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    while _SHARED_DIRS:
        shutil.rmtree(_SHARED_DIRS.pop(), ignore_errors=True)
