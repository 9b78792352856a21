"""``camflow``: the command line and the composition root.

This is the one module of ``camflow/`` that imports services, and only inside the
subcommand that starts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from camflow.bus import Bus, LocalBus
from camflow.errors import CamflowError, ConfigError
from camflow.keys import check_stream_name
from camflow.log import configure_logging, get_logger
from camflow.store import FileStore, Store
from camflow.tokens import Action, TokenSigner, load_secret

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

        return S3Store(S3Location.parse(args.s3))
    return FileStore(Path(args.data_dir) / "store")


def make_signer(args: argparse.Namespace) -> TokenSigner:
    data_dir = Path(args.data_dir) if getattr(args, "data_dir", None) else None
    return TokenSigner(load_secret(data_dir))


def display_host(host: str) -> str:
    return "127.0.0.1" if host in WILDCARD else host


# --- services ---------------------------------------------------------------------------


async def _serve(args: argparse.Namespace, roles: set[str]) -> None:
    """Start ``roles`` (ingest, transcode, package, edge) on one bus and store; run until a signal."""
    bus = (
        make_bus(args, required=args.command != "run") if roles & {"ingest", "transcode", "package"} else None
    )
    store = make_store(args) if roles & {"transcode", "package", "edge"} else None
    signer = make_signer(args) if roles & {"ingest", "edge"} else None
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
    try:
        if "transcode" in roles:
            from transcode.ladder import DEFAULT_LADDER, parse_ladder
            from transcode.service import TranscodeWorker

            assert store is not None and bus is not None
            ladder = parse_ladder(args.ladder) if args.ladder else DEFAULT_LADDER
            worker = TranscodeWorker(bus, store, ladder=ladder, processes=args.processes)
            tasks.append(asyncio.create_task(worker.run(workers_stop), name="transcode"))
            await _ready(worker.ready, tasks)
        if "package" in roles:
            from packager.service import Packager

            assert store is not None and bus is not None
            packager = Packager(bus, store, live_window=args.live_window)
            tasks.append(asyncio.create_task(packager.run(workers_stop), name="package"))
            await _ready(packager.ready, tasks)
        if "edge" in roles:
            from edge.service import EdgeServer

            assert store is not None and signer is not None
            edge = EdgeServer(store, signer, host=args.host, port=args.http_port)
            await edge.start()
            stoppers.append(edge.stop)
        if "ingest" in roles:
            from ingest.service import build_rtsp_server

            assert signer is not None and bus is not None
            rtsp = build_rtsp_server(
                bus, signer, host=args.host, port=args.rtsp_port, segment_target=args.segment_duration
            )
            await rtsp.start()
            stoppers.insert(0, rtsp.stop)  # ingest stops first: it flushes its segments downstream
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
        for stopper in stoppers:
            with contextlib.suppress(Exception):
                await stopper()
        if tasks:
            # Let the workers finish what ingest flushed, then stop them.
            await asyncio.sleep(args.drain_seconds if stop.is_set() else 0)
            workers_stop.set()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, done, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.error("service_failed", service=task.get_name(), error=repr(result))
        if store is not None:
            await store.close()
        if bus is not None:
            await bus.close()


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
        "--segment-duration",
        type=_positive,
        default=2.0,
        help="target segment duration in seconds; segments cut at the first IDR after it (default 2)",
    )


def _add_transcode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ladder", help="renditions, e.g. source,720p:2500k,360p:800k (default source,360p)")
    p.add_argument("--processes", type=int, default=None, help="transcode processes (default: one per core)")


def _add_package(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--live-window", type=_positive, default=60.0, help="seconds of media in live playlists (default 60)"
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument("--log-level", default=os.environ.get("CAMFLOW_LOG_LEVEL", "info"))
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=5.0,
        help="on shutdown, time given to finish segments in flight (default 5)",
    )


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
    run.add_argument(
        "--stream",
        default="cam1",
        type=check_stream_name,
        help="stream whose URLs are printed at start (default cam1)",
    )

    ingest = sub.add_parser("ingest", help="the RTSP ingest service alone")
    _add_common(ingest)
    _add_backends(ingest, store=False)
    _add_ingest(ingest)

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

    token = sub.add_parser("token", help="print a publish or view token for a stream")
    token.add_argument("action", choices=[a.value for a in Action])
    token.add_argument("stream", type=check_stream_name)
    token.add_argument("--ttl", type=_positive, default=DEFAULT_TOKEN_TTL, help="seconds (default 86400)")
    token.add_argument(
        "--data-dir",
        default=os.environ.get("CAMFLOW_DATA_DIR", "./data"),
        help="where the embedded default keeps its secret (ignored when CAMFLOW_SECRET is set)",
    )
    return parser


ROLES = {
    "run": {"ingest", "transcode", "package", "edge"},
    "ingest": {"ingest"},
    "transcode": {"transcode"},
    "package": {"package"},
    "edge": {"edge"},
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "token":
            signer = make_signer(args)
            print(signer.issue(args.stream, Action(args.action), args.ttl))
            return 0
        configure_logging(args.log_level)
        asyncio.run(_serve(args, ROLES[args.command]))
        return 0
    except ConfigError as exc:
        print(f"camflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
