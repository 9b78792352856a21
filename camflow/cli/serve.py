"""The composition root: the services of one process on one bus and store, until a signal.

With the rest of ``camflow.cli``, the only modules of ``camflow/`` that import services, and only
inside the functions that start them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camflow.bus import Bus, LocalBus
from camflow.cli.args import PULL_ENV
from camflow.cli.banner import WILDCARD, operator_view
from camflow.cli.settings import (
    connection_limits,
    edge_settings,
    packager_settings,
    part_target,
    rtsp_server_settings,
    spool_settings,
    transcoder_settings,
    whep_public_url,
)
from camflow.errors import CamflowError, ConfigError, StoreRetryStopped
from camflow.log import get_logger
from camflow.metrics import MeteredStore, Readiness
from camflow.store import FileStore, Store
from camflow.tokens import TokenSigner, load_keys

if TYPE_CHECKING:
    from camflow.cli.devices import DeviceFollower
    from camflow.tls import ServerTls
    from ingest.media.live import LiveFeeds
    from ingest.media.spooled_bus import SpooledBus
    from ingest.sources.pull.client import PullSource
    from ingest.sources.whip.http import WhipService
    from ingest.sources.whip.whep_http import WhepService

log = get_logger("cli")
SPOOL_DRAIN_SECONDS = 10.0  # on shutdown, how long ingest's spool gets to deliver what it holds


# --- backends --------------------------------------------------------------------------


def make_bus(args: argparse.Namespace, *, required: bool) -> Bus:
    if args.kafka:
        from camflow.bus.kafka import KafkaBus

        return KafkaBus(
            args.kafka,
            client_id=f"camflow-{args.command}",
            prefix=args.kafka_prefix,
            replication=args.kafka_replication,
        )
    if required:
        raise ConfigError(
            f"`camflow {args.command}` runs one service of a deployment: it needs --kafka HOST:PORT"
        )
    return LocalBus()


def make_store(args: argparse.Namespace) -> Store:
    if args.s3:
        from camflow.store.s3 import S3Location, S3Store

        return MeteredStore(S3Store(S3Location.parse(args.s3)))
    return MeteredStore(FileStore(Path(args.data_dir) / "store"))


def make_signer(args: argparse.Namespace) -> TokenSigner:
    data_dir = Path(args.data_dir) if getattr(args, "data_dir", None) else None
    return TokenSigner(load_keys(data_dir))


async def _store_started(store: Store, service: str, stop: asyncio.Event) -> bool:
    """Start the store client (S3: the bucket checked, made when missing), waiting out an outage
    as the services' calls do (``camflow.store.retry``): a service started while the store is down
    waits for it instead of exiting. False when ``stop`` came first."""
    from camflow.store.retry import RetryingStore, StoreOutage

    starting = RetryingStore(store, StoreOutage(service))
    starting.stop_when(stop)
    try:
        await starting.start()
    except StoreRetryStopped:
        return False
    return True


# --- services ---------------------------------------------------------------------------


async def serve(args: argparse.Namespace, roles: set[str]) -> int:
    """Start ``roles`` (ingest, transcode, package, edge) on one bus and store; run until a signal
    or until one of them crashes. The exit status: 0, or 1 when a service failed (its orchestrator
    restarts it then, like any crashed process)."""
    bus = (
        make_bus(args, required=args.command != "run")
        if roles & {"ingest", "transcode", "package"} or ("edge" in roles and args.kafka)  # edge: health feed
        else None
    )
    store = make_store(args) if roles & {"transcode", "package", "edge"} else None
    signer = make_signer(args) if roles & {"ingest", "edge"} else None
    pull_sources = _pull_sources(args) if "ingest" in roles else []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if store is not None and not await _store_started(store, args.command, stop):
        return 0  # stopped while the store was still down: nothing else was started

    devices: DeviceFollower | None = None
    if roles & {"ingest", "edge"}:  # read while the bus starts; ``ready`` below waits for it (bounded)
        from camflow.cli.devices import DeviceFollower, device_backend

        devices = DeviceFollower.begin(device_backend(args, store, bus))

    # Ingest publishes through its on-disk spool; `camflow ingest` (no other service on the bus)
    # lets the spool start the bus, so it takes cameras while the bus is down.
    spooled = _spooled_bus(args, bus, owns_bus=roles == {"ingest"}) if "ingest" in roles else None
    if bus is not None and (spooled is None or not spooled.owns_bus):
        await bus.start()
    if spooled is not None:
        await spooled.start()
    ingest_bus: Bus | None = spooled if spooled is not None else bus
    tasks: list[asyncio.Task[None]] = []
    stoppers: list[Callable[[], Awaitable[None]]] = []
    workers_stop = asyncio.Event()
    failed = False
    observed = _Observed(args, bus, ingest_bus)
    try:
        if devices is not None:
            stoppers.append(devices.stop)
            await devices.ready()
        live = _live_feeds() if "ingest" in roles else None
        whip = _whip_service(args, ingest_bus, signer, devices, live) if "ingest" in roles else None
        whep = _whep_service(args, whip, live, signer) if whip is not None else None
        tls = _server_tls(args) if roles & {"ingest", "edge"} else None  # after WHIP: cryptography
        tls_context = tls.context if tls is not None else None
        if tls is not None:
            await tls.start()
            stoppers.append(tls.stop)
        if "transcode" in roles:
            from transcode.service import TranscodeWorker

            assert store is not None and bus is not None
            worker = TranscodeWorker(bus, store, **transcoder_settings(args))
            tasks.append(asyncio.create_task(worker.run(workers_stop), name="transcode"))
            await _ready(worker.ready, tasks)
            observed.transcode(worker)
            if not getattr(args, "no_low_latency", False):  # LL-HLS: the ordered part worker beside it
                from camflow.metrics import add_source
                from transcode.parts import PartWorker

                parts = PartWorker(bus, store, ladder=worker.ladder)
                tasks.append(asyncio.create_task(parts.run(workers_stop), name="transcode-parts"))
                await _ready(parts.ready, tasks)
                observed.readiness.add("transcode parts", parts.ready.is_set)
                observed.sources.append(parts.samples)  # its counters on /metrics
                add_source(parts.samples)
        if "package" in roles:
            from packager.service import Packager

            assert store is not None and bus is not None
            packager = Packager(bus, store, **packager_settings(args))
            tasks.append(asyncio.create_task(packager.run(workers_stop), name="package"))
            await _ready(packager.ready, tasks)
            observed.package(packager)
        if "edge" in roles:
            from edge.service import EdgeServer, is_worker_process, spawn_workers, stop_workers, watch_parent

            assert store is not None and signer is not None
            workers = getattr(args, "workers", 1)  # only `camflow edge` has --workers
            options = {**edge_settings(args), "reuse_port": workers > 1}
            feed = observed.edge_feed()
            edge = EdgeServer(
                store,
                signer,
                host=args.host,
                port=args.http_port,
                health_feed=feed,
                tls_context=tls_context,
                playlists=bus,  # camflow.playlists wakes blocking reloads (every worker follows it)
                devices=devices.registry if devices else None,  # cameras post events with their credential
                **options,
            )
            if whip is not None:
                from ingest.sources.whip.http import PREFIX

                edge.mount(PREFIX, whip.app())  # WHIP on the edge's HTTP port
            if whep is not None:
                from ingest.sources.whip.whep_http import PREFIX as WHEP_PREFIX

                edge.mount(WHEP_PREFIX, whep.app())  # and WHEP (WebRTC playback) beside it
            elif feed is not None:  # no live media here: WHEP viewers go to the ingest node (307)
                from edge.whep_redirect import whep_redirects

                edge.mount("/whep", whep_redirects(feed))
            await edge.start()
            stoppers.append(edge.stop)
            # --metrics-port: the edge's /metrics (every worker's, merged); workers do not listen on it
            observed.metrics_render = (edge.metrics_response, edge.readyz_response)
            observed.metrics_listener = not is_worker_process()
            if workers > 1 and not is_worker_process():
                procs = spawn_workers(workers - 1)
                stoppers.append(lambda: asyncio.to_thread(stop_workers, procs))
            parent_watch = watch_parent(stop)  # a worker stops when its parent dies, even by SIGKILL
            if parent_watch is not None:
                stoppers.append(parent_watch.stop)
        if "ingest" in roles:
            from ingest.service import build_rtsp_server

            assert signer is not None and ingest_bus is not None
            rtsp = build_rtsp_server(
                ingest_bus,
                signer,
                host=args.host,
                port=args.rtsp_port,
                devices=devices.registry if devices else None,
                seen=devices.seen if devices else None,
                tls_port=args.rtsps_port,
                tls_context=tls_context,
                live=live,
                **rtsp_server_settings(args),
            )
            await rtsp.start()
            stoppers.insert(0, rtsp.stop)  # ingest stops first: it flushes its segments downstream
            if whip is not None:
                if "edge" not in roles:
                    from ingest.sources.whip.http import serve_whip

                    limits = connection_limits(args)
                    stoppers.insert(
                        0, await serve_whip(whip, args.host, args.http_port, limits, tls_context, whep)
                    )
                stoppers.insert(0, whip.stop)
                if whep is not None:
                    stoppers.insert(0, whep.stop)
            if pull_sources:
                from ingest.sources.pull.client import PullSources

                pulls = PullSources(
                    ingest_bus,
                    pull_sources,
                    segment_target=args.segment_duration,
                    part_target=part_target(args),
                    tls_context=_pull_tls(args, pull_sources),
                    live=live,
                )
                await pulls.start()
                stoppers.insert(0, pulls.stop)
            observed.ingest(rtsp, pulls if pull_sources else None, whip, spooled, whep is not None)
        await observed.start()
        if args.command == "run":
            assert signer is not None
            print(operator_view(args, signer), flush=True)
        else:
            print(f"camflow {args.command}: running", flush=True)
        crashed = asyncio.create_task(_first_crash(tasks))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([crashed, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        crashed.cancel()
    finally:
        observed.readiness.draining = True  # /readyz fails from the first moment of the shutdown
        for stopper in stoppers:
            with contextlib.suppress(Exception):
                await stopper()
        if spooled is not None:  # what ingest flushed (segments, offline states) reaches the bus
            await spooled.drain(SPOOL_DRAIN_SECONDS)
        if tasks:
            # Let the workers finish what ingest (in this process) flushed, then stop them. A worker
            # alone (`camflow transcode`, `package`) stops at once: it finishes the segment in hand,
            # publishes and commits it, and leaves the rest to the group.
            drain = args.drain_seconds if stop.is_set() and "ingest" in roles else 0
            await asyncio.sleep(drain)
            workers_stop.set()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, done, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.error("service_failed", service=task.get_name(), error=repr(result))
                    failed = True
        await observed.stop()  # after ingest: its last samples say offline
        if spooled is not None:  # what is still spooled stays on disk for the next start
            await spooled.drain(1.0)
            await spooled.close()
        if store is not None:
            await store.close()
        if bus is not None and (spooled is None or not spooled.owns_bus):
            await bus.close()
    return 1 if failed else 0


class _Observed:
    """Health samples, Prometheus sources and readiness of the services this process runs."""

    def __init__(self, args: argparse.Namespace, bus: Bus | None, ingest_bus: Bus | None) -> None:
        from camflow.health import HealthReporter

        self.args = args
        self.bus = bus
        self.ingest_bus = ingest_bus  # ingest's samples and states go through its spool
        self.readiness = Readiness()
        self.reporters: list[HealthReporter] = []
        self.sources: list[Any] = []
        self.server: Any = None
        self.metrics_render: Any = None  # (/metrics, /readyz) on --metrics-port; None: registry, readiness
        self.metrics_listener = True  # False in an edge worker: its parent listens on --metrics-port

    def _report(self, service: str, collect: Any, source: Any, bus: Bus | None = None) -> None:
        from camflow.health import HealthReporter
        from camflow.metrics import add_source

        add_source(source)
        self.sources.append(source)
        bus = bus or self.bus
        if bus is not None:
            self.reporters.append(HealthReporter(bus, service, collect, self.args.health_interval))

    def ingest(self, rtsp: Any, pulls: Any, whip: Any, spooled: SpooledBus | None, whep: bool) -> None:
        from camflow.metrics import add_source
        from ingest.health import IngestHealth

        assert self.ingest_bus is not None

        def whipped() -> list[Any]:
            return [s.publisher for s in whip.sessions.values() if s.publisher is not None] if whip else []

        target = self.args.segment_duration
        health = IngestHealth(
            self.ingest_bus,
            rtsp=rtsp,
            whip=whipped,
            pull_clients=lambda: list(pulls.clients) if pulls else [],
            spool_dropped=spooled.spool_dropped if spooled is not None else None,
            whep=whep_public_url(self.args) if whep else "",
            segment_target=target,
        )
        self._report("ingest", health.collect, health.samples, self.ingest_bus)
        if spooled is not None:
            add_source(spooled.samples)
            self.sources.append(spooled.samples)
        self.readiness.add("ingest", lambda: rtsp.open_connections >= 0 and not self.readiness.draining)

    def transcode(self, worker: Any) -> None:
        from transcode.health import TranscodeHealth

        health = TranscodeHealth(worker)
        self._report("transcode", health.collect, health.samples)
        self.readiness.add("transcode", worker.ready.is_set)
        self.readiness.add("transcode store", worker.store_outage.reason)

    def package(self, packager: Any) -> None:
        from packager.health import PackagerHealth

        health = PackagerHealth(packager)
        self._report("package", health.collect, health.samples)
        self.readiness.add("package", packager.ready.is_set)
        self.readiness.add("package store", packager.store_outage.reason)

    def edge_feed(self) -> Any:
        if self.bus is None:
            return None
        from edge.health import HealthFeed

        return HealthFeed(self.bus, interval=self.args.health_interval, readiness=self.readiness)

    async def start(self) -> None:
        for reporter in self.reporters:
            reporter.start()
        if self.args.metrics_port is not None and self.metrics_listener:
            from camflow.metrics import MetricsServer

            render, ready = self.metrics_render or (None, None)
            self.server = MetricsServer(
                self.readiness,
                host=self.args.metrics_host,
                port=self.args.metrics_port,
                render=render,
                ready=ready,
            )
            await self.server.start()

    async def stop(self) -> None:
        from camflow.metrics import remove_source

        for reporter in self.reporters:
            await reporter.stop()
        for source in self.sources:
            remove_source(source)
        if self.server is not None:
            await self.server.stop()


def _live_feeds() -> LiveFeeds:
    from ingest.media.live import LiveFeeds

    return LiveFeeds()


def _whip_service(
    args: argparse.Namespace,
    bus: Bus | None,
    signer: TokenSigner | None,
    devices: DeviceFollower | None,
    live: LiveFeeds | None,
) -> WhipService:
    """The WHIP endpoint of ingest; imported before any other service (it prepares aiortc's OpenSSL)."""
    import ingest.sources.whip  # noqa: F401  (first: it sets up OpenSSL before anything imports cryptography)
    from ingest.sources.whip.http import WhipService
    from ingest.sources.whip.ice import IcePolicy, check_announce_ip, install, parse_webrtc_ports
    from ingest.sources.whip.session import SessionLimits

    assert bus is not None and signer is not None
    addresses = () if args.host in WILDCARD else (args.host,)
    ports, announce_ip = parse_webrtc_ports(args.webrtc_ports), check_announce_ip(args.webrtc_announce_ip)
    policy = IcePolicy(addresses, ports, announce_ip)
    install(policy)
    limits = SessionLimits(
        segment_target=args.segment_duration,
        part_target=part_target(args),
        connect_timeout=1.5 * args.webrtc_timeout,
        media_timeout=args.webrtc_timeout,
    )
    return WhipService(
        bus,
        signer,
        policy=policy,
        limits=limits,
        devices=devices.registry if devices else None,
        seen=devices.seen if devices else None,
        connection_limits=connection_limits(args),
        live=live,
    )


def _whep_service(
    args: argparse.Namespace, whip: WhipService, live: LiveFeeds | None, signer: TokenSigner | None
) -> WhepService:
    """WebRTC playback of the streams of this ingest (their live feeds), with WHIP's ICE policy."""
    from ingest.sources.whip.whep import WhepLimits
    from ingest.sources.whip.whep_http import WhepService

    assert live is not None and signer is not None
    limits = WhepLimits(connect_timeout=1.5 * args.webrtc_timeout, media_timeout=args.webrtc_timeout)
    return WhepService(
        live,
        signer,
        policy=whip.policy,
        limits=limits,
        max_viewers=args.webrtc_max_viewers,
        max_client_sessions=args.webrtc_max_client_sessions,
        connection_limits=connection_limits(args),
    )


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    """``--tls-cert`` and ``--tls-key`` loaded (a ConfigError when unusable), None without them."""
    from camflow.tls import ServerTls, TlsFiles

    files = TlsFiles.from_flags(args.tls_cert, args.tls_key)
    return ServerTls(files) if files is not None else None


def _spooled_bus(args: argparse.Namespace, bus: Bus | None, *, owns_bus: bool) -> SpooledBus:
    from ingest.media.spooled_bus import SpooledBus

    assert bus is not None
    return SpooledBus(bus, owns_bus=owns_bus, **spool_settings(args))


def _pull_sources(args: argparse.Namespace) -> list[PullSource]:
    """``--pull``, ``CAMFLOW_PULL`` and ``--sources``, checked before anything starts (a bad one is a
    ConfigError). A password given with ``--pull`` is on the command line, which every user of the
    machine can read (``ps``): it works, with a warning naming the stream (never the password)."""
    from_env = os.environ.get(PULL_ENV, "").split()
    if not (args.pull or args.sources or from_env):
        return []
    from ingest.sources.pull.client import check_unique, load_sources, parse_pull

    sources = [parse_pull(text) for text in args.pull or []]
    for source in sources:
        if source.shown != source.url:
            log.warning(
                "pull_password_on_command_line",
                stream_id=source.name,
                url=source.shown,
                hint=f"passwords belong in {PULL_ENV} or a --sources file: ps shows command lines",
            )
    sources += [parse_pull(text) for text in from_env]
    if args.sources:
        sources += load_sources(Path(args.sources))
    check_unique(sources)
    return sources


def _pull_tls(args: argparse.Namespace, sources: list[PullSource]) -> ssl.SSLContext | None:
    """How ``rtsps://`` sources' certificates are checked: the system CA store plus ``--pull-ca``, or
    not at all with ``--pull-tls-insecure`` (a warning); None without rtsps:// sources."""
    secure = [s.name for s in sources if s.secure]
    if not secure:
        return None
    from camflow.tls import client_context

    if args.pull_tls_insecure:
        log.warning(
            "pull_tls_unverified",
            streams=secure,
            reason="--pull-tls-insecure: rtsps:// sources' certificates are not checked (encrypted, but "
            "open to a man in the middle)",
        )
    return client_context(Path(args.pull_ca) if args.pull_ca else None, insecure=args.pull_tls_insecure)


async def _ready(event: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    waiter = asyncio.create_task(event.wait())
    await asyncio.wait([waiter, tasks[-1]], return_when=asyncio.FIRST_COMPLETED)
    if not event.is_set():
        waiter.cancel()
        tasks[-1].result()  # raises the start-up error
        raise CamflowError(f"{tasks[-1].get_name()} stopped during start-up")


async def _first_crash(tasks: list[asyncio.Task[None]]) -> None:
    if not tasks:
        await asyncio.Event().wait()
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        exc = task.exception()
        if exc is not None:
            log.error("service_crashed", service=task.get_name(), error=repr(exc))
