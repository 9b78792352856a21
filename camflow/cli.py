"""``camflow``: the command line and the composition root.

This is the one module of ``camflow/`` that imports services, and only inside the
subcommand that starts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camflow.bus import Bus, LocalBus
from camflow.errors import CamflowError, ConfigError
from camflow.keys import check_stream_name
from camflow.log import configure_logging, get_logger
from camflow.metrics import MeteredStore, Readiness
from camflow.store import FileStore, Store
from camflow.tokens import Action, TokenSigner, load_secret

if TYPE_CHECKING:
    from ingest.pull import PullSource
    from ingest.whip.http import WhipService

log = get_logger("cli")
WILDCARD = ("0.0.0.0", "::", "")
DEFAULT_TOKEN_TTL = 24 * 3600.0


# --- backends --------------------------------------------------------------------------


def make_bus(args: argparse.Namespace, *, required: bool) -> Bus:
    if args.kafka:
        from camflow.bus.kafka import KafkaBus

        return KafkaBus(args.kafka, client_id=f"camflow-{args.command}", prefix=args.kafka_prefix)
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
    return TokenSigner(load_secret(data_dir))


def display_host(host: str) -> str:
    return "127.0.0.1" if host in WILDCARD else host


# --- services ---------------------------------------------------------------------------


async def _serve(args: argparse.Namespace, roles: set[str]) -> None:
    """Start ``roles`` (ingest, transcode, package, edge) on one bus and store; run until a signal."""
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

    if bus is not None:
        await bus.start()
    if store is not None:
        await store.start()
    tasks: list[asyncio.Task[None]] = []
    stoppers: list[Callable[[], Awaitable[None]]] = []
    workers_stop = asyncio.Event()
    observed = _Observed(args, bus)
    try:
        whip = _whip_service(args, bus, signer) if "ingest" in roles else None
        if "transcode" in roles:
            from transcode.ladder import DEFAULT_LADDER, load_ladder_file, parse_ladder
            from transcode.service import TranscodeWorker

            assert store is not None and bus is not None
            if args.ladder and args.ladder_file:
                raise ConfigError("--ladder and --ladder-file name the same thing: give one of them")
            ladder = DEFAULT_LADDER
            if args.ladder_file:
                ladder = load_ladder_file(Path(args.ladder_file))
            elif args.ladder:
                ladder = parse_ladder(args.ladder)
            worker = TranscodeWorker(
                bus,
                store,
                ladder=ladder,
                processes=args.processes,
                threads=args.threads,
                max_attempts=args.attempts,
            )
            tasks.append(asyncio.create_task(worker.run(workers_stop), name="transcode"))
            await _ready(worker.ready, tasks)
            observed.transcode(worker)
        if "package" in roles:
            from packager.service import Packager

            assert store is not None and bus is not None
            packager = Packager(
                bus,
                store,
                live_window=args.live_window,
                target_duration=args.target_duration or math.ceil(2 * getattr(args, "segment_duration", 2.0)),
                offline_grace=args.offline_grace,
                dvr_window=args.dvr_window,
                retain=args.retain,
                retain_streams=dict(args.retain_stream or []),
                retention_interval=args.retention_interval,
            )
            tasks.append(asyncio.create_task(packager.run(workers_stop), name="package"))
            await _ready(packager.ready, tasks)
            observed.package(packager)
        if "edge" in roles:
            from edge.service import EdgeServer, is_worker_process, spawn_workers, stop_workers, watch_parent

            assert store is not None and signer is not None
            workers = getattr(args, "workers", 1)
            options = {**_edge_options(args), "reuse_port": workers > 1}
            feed = observed.edge_feed()
            edge = EdgeServer(store, signer, host=args.host, port=args.http_port, health_feed=feed, **options)
            if whip is not None:
                from ingest.whip.http import PREFIX

                edge.mount(PREFIX, whip.app())  # WHIP on the edge's HTTP port
            await edge.start()
            stoppers.append(edge.stop)
            if workers > 1 and not is_worker_process():
                procs = spawn_workers(workers - 1)
                stoppers.append(lambda: asyncio.to_thread(stop_workers, procs))
            parent_watch = watch_parent(stop)  # a worker stops when its parent dies, even by SIGKILL
            if parent_watch is not None:
                stoppers.append(parent_watch.stop)
        if "ingest" in roles:
            from ingest.service import build_rtsp_server, parse_rtsp_flags

            assert signer is not None and bus is not None
            udp_ports, auth_schemes = parse_rtsp_flags(args.rtsp_udp_ports, args.rtsp_auth)
            rtsp = build_rtsp_server(
                bus,
                signer,
                host=args.host,
                port=args.rtsp_port,
                segment_target=args.segment_duration,
                session_timeout=args.rtsp_session_timeout,
                udp_ports=udp_ports,
                auth_schemes=auth_schemes,
                handshake_timeout=args.rtsp_handshake_timeout,
                max_connections=args.rtsp_max_connections,
            )
            await rtsp.start()
            stoppers.insert(0, rtsp.stop)  # ingest stops first: it flushes its segments downstream
            if whip is not None:
                if "edge" not in roles:
                    from ingest.whip.http import serve_whip

                    stoppers.insert(0, await serve_whip(whip, args.host, args.http_port))
                stoppers.insert(0, whip.stop)
            if pull_sources:
                from ingest.pull import PullSources

                pulls = PullSources(bus, pull_sources, segment_target=args.segment_duration)
                await pulls.start()
                stoppers.insert(0, pulls.stop)
            observed.ingest(rtsp, pulls if pull_sources else None, whip)
        await observed.start()
        if args.command == "run":
            _print_urls(args, signer)
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
        await observed.stop()  # after ingest: its last samples say offline
        if store is not None:
            await store.close()
        if bus is not None:
            await bus.close()


class _Observed:
    """Health samples, Prometheus sources and readiness of the services this process runs."""

    def __init__(self, args: argparse.Namespace, bus: Bus | None) -> None:
        from camflow.health import HealthReporter

        self.args = args
        self.bus = bus
        self.readiness = Readiness()
        self.reporters: list[HealthReporter] = []
        self.sources: list[Any] = []
        self.server: Any = None

    def _report(self, service: str, collect: Any, source: Any) -> None:
        from camflow.health import HealthReporter
        from camflow.metrics import add_source

        add_source(source)
        self.sources.append(source)
        if self.bus is not None:
            self.reporters.append(HealthReporter(self.bus, service, collect, self.args.health_interval))

    def ingest(self, rtsp: Any, pulls: Any, whip: Any) -> None:
        from ingest.health import IngestHealth

        assert self.bus is not None

        def pulled() -> list[Any]:
            return [c.publisher for c in pulls.clients if c.publisher is not None] if pulls else []

        def whipped() -> list[Any]:
            return [s.publisher for s in whip.sessions.values() if s.publisher is not None] if whip else []

        target = self.args.segment_duration
        health = IngestHealth(self.bus, rtsp=rtsp, pulled=pulled, whip=whipped, segment_target=target)
        self._report("ingest", health.collect, health.samples)
        self.readiness.add("ingest", lambda: rtsp.open_connections >= 0 and not self.readiness.draining)

    def transcode(self, worker: Any) -> None:
        from transcode.health import TranscodeHealth

        health = TranscodeHealth(worker)
        self._report("transcode", health.collect, health.samples)
        self.readiness.add("transcode", worker.ready.is_set)

    def package(self, packager: Any) -> None:
        from packager.health import PackagerHealth

        health = PackagerHealth(packager)
        self._report("package", health.collect, health.samples)
        self.readiness.add("package", packager.ready.is_set)

    def edge_feed(self) -> Any:
        if self.bus is None:
            return None
        from edge.health import HealthFeed

        return HealthFeed(self.bus, interval=self.args.health_interval, readiness=self.readiness)

    async def start(self) -> None:
        for reporter in self.reporters:
            reporter.start()
        if self.args.metrics_port is not None:
            from camflow.metrics import MetricsServer

            host = self.args.metrics_host or self.args.host
            self.server = MetricsServer(self.readiness, host=host, port=self.args.metrics_port)
            await self.server.start()

    async def stop(self) -> None:
        from camflow.metrics import remove_source

        for reporter in self.reporters:
            await reporter.stop()
        for source in self.sources:
            remove_source(source)
        if self.server is not None:
            await self.server.stop()


def _whip_service(args: argparse.Namespace, bus: Bus | None, signer: TokenSigner | None) -> WhipService:
    """The WHIP endpoint of ingest; imported before any other service (it prepares aiortc's OpenSSL)."""
    import ingest.whip  # noqa: F401  (first: it sets up OpenSSL before anything imports cryptography)
    from ingest.whip.http import WhipService
    from ingest.whip.ice import IcePolicy, check_announce_ip, install, parse_webrtc_ports
    from ingest.whip.session import SessionLimits

    assert bus is not None and signer is not None
    addresses = () if args.host in WILDCARD else (args.host,)
    ports, announce_ip = parse_webrtc_ports(args.webrtc_ports), check_announce_ip(args.webrtc_announce_ip)
    policy = IcePolicy(addresses, ports, announce_ip)
    install(policy)
    limits = SessionLimits(
        segment_target=args.segment_duration,
        connect_timeout=1.5 * args.webrtc_timeout,
        media_timeout=args.webrtc_timeout,
    )
    return WhipService(bus, signer, policy=policy, limits=limits)


def _pull_sources(args: argparse.Namespace) -> list[PullSource]:
    """``--pull`` and ``--sources``, checked before anything starts (a bad one is a ConfigError)."""
    if not (args.pull or args.sources):
        return []
    from ingest.pull import check_unique, load_sources, parse_pull

    sources = [parse_pull(text) for text in args.pull or []]
    if args.sources:
        sources += load_sources(Path(args.sources))
    check_unique(sources)
    return sources


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


def _print_urls(args: argparse.Namespace, signer: TokenSigner | None) -> None:
    assert signer is not None
    host = display_host(args.host)
    stream = args.stream
    publish = signer.issue(stream, Action.PUBLISH, DEFAULT_TOKEN_TTL)
    view = signer.issue(stream, Action.VIEW, DEFAULT_TOKEN_TTL)
    bus = f"Kafka {args.kafka}" if args.kafka else "in-process bus"
    store = f"S3 {args.s3}" if args.s3 else f"files under {Path(args.data_dir).resolve() / 'store'}"
    print(
        f"camflow is running ({bus}, {store}).\n"
        f"  push to:  rtsp://{host}:{args.rtsp_port}/{stream}?token={publish}\n"
        f"            e.g. ffmpeg -re -i clip.mp4 -c copy -f rtsp -rtsp_transport tcp "
        f'"rtsp://{host}:{args.rtsp_port}/{stream}?token={publish}"\n'
        f"  watch at: http://{host}:{args.http_port}/live/{stream}/master.m3u8?token={view}\n"
        f"            e.g. ffplay or VLC with that URL; tokens valid 24 h.\n"
        f"  player:   http://{host}:{args.http_port}/watch/{stream}?token={view}\n"
        f"  other streams: camflow token publish|view STREAM --data-dir {args.data_dir}\n"
        f"Ctrl-C stops it.",
        flush=True,
    )


# --- argument parsing ---------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def _token_scope(text: str) -> str:
    return text if text == "*" else check_stream_name(text)


def _ttl(text: str) -> float | None:
    if text.strip().lower() == "never":
        return None
    try:
        return _positive(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds or never") from None


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return int(text)


def _count0(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number (0 or more)")
    return int(text)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` or plain seconds, as seconds."""
    body = text.strip().lower()
    unit = _UNITS.get(body[-1:])
    try:
        value = float(body[:-1] if unit else body) * (unit or 1.0)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a positive age like 7d, 12h, 30m, 45s or seconds"
        )
    return value


def _stream_duration(text: str) -> tuple[str, float]:
    stream, sep, age = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STREAM=AGE, e.g. cam7=1d")
    try:
        return check_stream_name(stream), _duration(age)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of seconds >= 1")
    return value


def _add_backends(p: argparse.ArgumentParser, *, store: bool = True) -> None:
    p.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap server (default: in-process bus)")
    p.add_argument(
        "--kafka-prefix",
        default=os.environ.get("CAMFLOW_KAFKA_PREFIX", ""),
        help="prefix of every Kafka topic and consumer group, to share a cluster (default none)",
    )
    if store:
        p.add_argument(
            "--s3",
            metavar="URL",
            help="S3 store as http(s)://HOST:PORT/BUCKET[/PREFIX]; credentials from AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (default: files under --data-dir)",
        )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("CAMFLOW_DATA_DIR", "./data"),
        help="local store and token secret (default ./data)",
    )


def _add_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rtsp-port", type=int, default=8554, help="RTSP listen port (default 8554)")
    p.add_argument(
        "--rtsp-udp-ports",
        default="20000-20999",
        metavar="FIRST-LAST",
        help="UDP ports for RTP/RTCP of cameras that push over UDP, one even/odd pair per track; "
        "`off` allows TCP only (default 20000-20999)",
    )
    p.add_argument(
        "--rtsp-session-timeout",
        type=int,
        default=60,
        help="seconds without an RTSP request or RTP/RTCP packet after which a session ends (default 60)",
    )
    p.add_argument(
        "--rtsp-handshake-timeout",
        type=_positive,
        default=10.0,
        help="seconds a new connection has to announce a stream before it is closed (default 10)",
    )
    p.add_argument(
        "--rtsp-max-connections",
        type=int,
        default=1024,
        help="open RTSP connections; at the limit the oldest that announced nothing is closed, "
        "else new ones get 503 (default 1024)",
    )
    p.add_argument(
        "--rtsp-auth",
        default="digest,basic",
        help="schemes a 401 offers publishers: digest and/or basic (default digest,basic)",
    )
    p.add_argument(
        "--segment-duration",
        type=_positive,
        default=2.0,
        help="target segment duration in seconds; segments cut at the first IDR after it (default 2)",
    )
    p.add_argument(
        "--pull",
        action="append",
        metavar="NAME=URL",
        help="pull an RTSP source into stream NAME, e.g. cam7=rtsp://10.0.0.7/stream1 (repeatable)",
    )
    p.add_argument(
        "--sources",
        metavar="FILE",
        help='TOML file of pull sources: cam7 = "rtsp://..." or a [cam7] table with url, transport',
    )
    p.add_argument(
        "--webrtc-ports",
        default="any",
        metavar="FIRST-LAST",
        help="UDP ports of WHIP (WebRTC) media, e.g. 40000-40999 (default any: ephemeral)",
    )
    p.add_argument(
        "--webrtc-announce-ip",
        metavar="IP",
        help="address written into WHIP answers' host candidates (a 1:1 NAT or load balancer in front)",
    )
    p.add_argument(
        "--webrtc-timeout",
        type=float,
        default=10.0,
        help="seconds without video before a WHIP session ends; 1.5x that to connect (default 10)",
    )


def _add_transcode(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ladder",
        help="renditions, e.g. source,720p:2500k,360p:800k:1200k:baseline (default source,720p,360p)",
    )
    p.add_argument("--ladder-file", metavar="PATH", help="the ladder from a .toml or .yaml file (see README)")
    p.add_argument(
        "--processes", type=_count, default=None, help="transcode processes (default: one per core)"
    )
    p.add_argument(
        "--threads",
        type=_count0,
        default=1,
        help="encoder and decoder threads per rung (default 1: measured best per CPU-second; 0: codec's)",
    )
    p.add_argument(
        "--attempts",
        type=_count,
        default=3,
        help="tries per segment before it goes to the dead-letter topic camflow.segments.dead (default 3)",
    )


def _add_package(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--live-window", type=_positive, default=60.0, help="seconds of media in live playlists (default 60)"
    )
    p.add_argument(
        "--target-duration",
        type=_whole_seconds,
        default=None,
        help="EXT-X-TARGETDURATION of live playlists, fixed for their life; longer segments become "
        "EXT-X-GAP live (recordings keep them) (default ceil(2 x --segment-duration), 4 for `package`)",
    )
    p.add_argument(
        "--offline-grace",
        type=float,
        default=10.0,
        help="seconds a live playlist stays open after its camera left, so a reconnect continues it "
        "(default 10)",
    )
    p.add_argument(
        "--dvr-window",
        type=float,
        default=600.0,
        help="longest ?dvr=SECONDS a live playlist can reach back; 0 disables DVR (default 600)",
    )
    p.add_argument(
        "--retain",
        type=_duration,
        default=None,
        help="delete recorded segments older than this, e.g. 7d, 12h, 30m, 45s (default: keep forever)",
    )
    p.add_argument(
        "--retain-stream",
        type=_stream_duration,
        action="append",
        metavar="STREAM=AGE",
        help="retention of one stream, e.g. cam7=1d (repeatable; overrides --retain for it)",
    )
    p.add_argument(
        "--retention-interval",
        type=_positive,
        default=60.0,
        help="seconds between retention sweeps (default 60)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ["CAMFLOW_METRICS_PORT"]) if os.environ.get("CAMFLOW_METRICS_PORT") else None,
        help="serve /metrics, /healthz and /readyz on this port (default: off; run and edge also serve "
        "them on --http-port; env CAMFLOW_METRICS_PORT)",
    )
    p.add_argument("--metrics-host", default=None, help="address of --metrics-port (default: --host)")
    p.add_argument(
        "--health-interval",
        type=_positive,
        default=2.0,
        help="seconds between the health samples this process publishes on camflow.health (default 2)",
    )
    p.add_argument("--log-level", default=os.environ.get("CAMFLOW_LOG_LEVEL", "info"))
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=5.0,
        help="on shutdown, seconds this process's workers get to finish what ingest flushed (run; default 5)",
    )


def _add_edge(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-mb", type=_positive, default=256.0, help="edge in-memory object cache, MiB (default 256)"
    )
    p.add_argument(
        "--playlist-max-age",
        type=_positive,
        default=None,
        help="max-age of live playlists, seconds (default: half the playlist's target duration)",
    )
    p.add_argument(
        "--token-check",
        choices=["all", "playlists"],
        default="all",
        help="check view tokens on every request (all, default) or on playlists only, so a CDN can "
        "share segments across viewers (playlists)",
    )
    p.add_argument(
        "--no-fast-path",
        action="store_true",
        help="serve every edge request through the aiohttp application (for comparison; slower)",
    )


def _edge_options(args: argparse.Namespace) -> dict[str, Any]:
    from edge.policy import TokenCheck

    return {
        "cache_bytes": int(args.cache_mb * 1024 * 1024),
        "playlist_max_age": args.playlist_max_age,
        "token_check": TokenCheck(args.token_check),
        "fast_path": not args.no_fast_path,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camflow", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="every service in one process tree (the embedded default)")
    _add_common(run)
    _add_backends(run)
    _add_ingest(run)
    _add_transcode(run)
    _add_package(run)
    run.add_argument("--http-port", type=int, default=8080, help="HTTP (edge) port (default 8080)")
    _add_edge(run)
    run.add_argument(
        "--stream",
        default="cam1",
        type=check_stream_name,
        help="stream whose URLs are printed at start (default cam1)",
    )

    ingest = sub.add_parser("ingest", help="the RTSP and WHIP ingest service alone")
    _add_common(ingest)
    _add_backends(ingest, store=False)
    _add_ingest(ingest)
    ingest.add_argument("--http-port", type=int, default=8080, help="HTTP port of /whip (default 8080)")

    transcode = sub.add_parser("transcode", help="a transcode worker alone")
    _add_common(transcode)
    _add_backends(transcode)
    _add_transcode(transcode)

    package = sub.add_parser("package", help="the packager alone")
    _add_common(package)
    _add_backends(package)
    _add_package(package)

    edge = sub.add_parser("edge", help="the HLS edge alone")
    _add_common(edge)
    _add_backends(edge)
    edge.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    _add_edge(edge)
    edge.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="edge processes sharing --http-port with SO_REUSEPORT, each with its own cache (default 1)",
    )

    token = sub.add_parser("token", help="print a publish or view token for a stream")
    token.add_argument("action", choices=[a.value for a in Action])
    token.add_argument("stream", type=_token_scope, help="a stream name, or '*' for an admin token")
    token.add_argument(
        "--ttl",
        type=_ttl,
        default=DEFAULT_TOKEN_TTL,
        help="seconds (default 86400), or `never` for a publish token a camera keeps as its password "
        "(needed for RTSP Digest; revoked only by rotating CAMFLOW_SECRET)",
    )
    token.add_argument(
        "--data-dir",
        default=os.environ.get("CAMFLOW_DATA_DIR", "./data"),
        help="where the embedded default keeps its secret (ignored when CAMFLOW_SECRET is set)",
    )

    from camflow.tail import add_tail_parser

    add_tail_parser(sub, check_stream_name, _positive)
    load = sub.add_parser("loadgen", help="replay one H.264 RTP stream to N concurrent RTSP publish sessions")
    load.add_argument("--url", default="rtsp://127.0.0.1:8554", help="ingest to load (default :8554 here)")
    load.add_argument("--streams", type=int, default=10, help="concurrent sessions, 1..1000 (default 10)")
    load.add_argument("--duration", type=_positive, default=10.0, help="seconds of publishing (default 10)")
    media = load.add_mutually_exclusive_group(required=True)
    media.add_argument("--clip", metavar="FILE", help="H.264 clip to packetize (e.g. an MP4)")
    media.add_argument("--rtp", metavar="FILE", help="RTP recording made with --save-rtp")
    load.add_argument("--save-rtp", metavar="FILE", help="also save the clip's RTP recording to FILE")
    load.add_argument("--transport", choices=["tcp"], default="tcp", help="RTP over the RTSP connection")
    load.add_argument("--prefix", default="load", help="stream names PREFIX000, PREFIX001... (default load)")
    load.add_argument(
        "--token-secret-from",
        metavar="DATA_DIR",
        help="issue publish tokens with the secret of this data dir (or CAMFLOW_SECRET); default no token",
    )
    load.add_argument("--allow-remote", action="store_true", help="allow a target that is not loopback")
    return parser


def _loadgen(args: argparse.Namespace) -> int:
    from ingest.loadgen import LoadPlan, Recording, check_target, record_clip, report, run_load

    target = check_target(args.url, args.allow_remote)
    recording = record_clip(Path(args.clip)) if args.clip else Recording.load(Path(args.rtp))
    if args.save_rtp:
        recording.save(Path(args.save_rtp))
    token = None
    if args.token_secret_from:
        signer = TokenSigner(load_secret(Path(args.token_secret_from)))
        ttl = args.duration + 3600

        def token(stream: str) -> str:
            return signer.issue(stream, Action.PUBLISH, ttl)

    check_stream_name(f"{args.prefix}000")
    plan = LoadPlan(
        target.host, target.effective_port, recording, args.streams, args.duration, args.prefix, token
    )
    print(
        f"loadgen: {args.streams} sessions x {args.duration:g} s to {target.host}:{target.effective_port}, "
        f"{recording.bitrate / 1e6:.2f} Mb/s each ({len(recording.frames)} frames per loop)",
        flush=True,
    )
    results = asyncio.run(run_load(plan))
    print(report(results), flush=True)
    return 1 if any(r.error for r in results) else 0


ROLES = {
    "run": {"ingest", "transcode", "package", "edge"},
    "ingest": {"ingest"},
    "transcode": {"transcode"},
    "package": {"package"},
    "edge": {"edge"},
}


def _use_uvloop() -> None:
    """The edge serves many small responses: uvloop's event loop makes each one cheaper."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "token":
            if args.ttl is None and args.action != Action.PUBLISH.value:
                raise ConfigError("--ttl never: only publish tokens (camera credentials) may never expire")
            if (args.action == Action.ADMIN.value) != (args.stream == "*"):
                raise ConfigError(f"stream {args.stream!r}: admin tokens take '*', others a stream name")
            signer = make_signer(args)
            print(signer.issue(args.stream, Action(args.action), args.ttl))
            return 0
        if args.command == "tail":
            from camflow.tail import tail_command

            return tail_command(args)
        if args.command == "loadgen":
            return _loadgen(args)
        configure_logging(args.log_level)
        if args.command == "edge":
            _use_uvloop()
        asyncio.run(_serve(args, ROLES[args.command]))
        return 0
    except ConfigError as exc:
        print(f"camflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
