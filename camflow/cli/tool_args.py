"""The operator tools' flags: ``camflow tail``, ``camflow dead`` and ``camflow device``."""

from __future__ import annotations

import argparse
import os

from camflow.bus.dead import DeadReason
from camflow.cli.argtypes import positive
from camflow.cli.backend_args import add_backends, kafka_prefix
from camflow.keys import check_stream_name


def add_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser("tail", help="follow the stream-health feed (Kafka or an edge's /api/health)")
    tail.add_argument("--kafka", metavar="HOST:PORT", help="follow camflow.health on this Kafka")
    tail.add_argument(
        "--kafka-prefix",
        default=kafka_prefix(),
        help="topic prefix (default none)",
    )
    tail.add_argument(
        "--edge", metavar="URL", help="follow an edge's /api/health, e.g. http://127.0.0.1:8080"
    )
    tail.add_argument(
        "--token",
        default=os.environ.get("CAMFLOW_TOKEN", ""),
        help="operator token for --edge (env CAMFLOW_TOKEN)",
    )
    tail.add_argument("--stream", action="append", type=check_stream_name, help="only this stream")
    tail.add_argument(
        "--state",
        action="append",
        choices=["connecting", "live", "stalled", "offline"],
        help="only streams in this state (repeatable)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per sample and line")
    tail.add_argument(
        "--table", action="store_true", help="a live table of every stream, redrawn each second"
    )
    tail.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="color by state (auto: on a TTY)"
    )
    tail.add_argument(
        "--since", type=float, default=10.0, help="with --kafka: start this many seconds back (default 10)"
    )
    tail.add_argument("--duration", type=positive, default=None, help="stop after this many seconds")


def add_dead(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dead = sub.add_parser(
        "dead", help="list the dead-letter topic (what consumers could not use), and replay it"
    )
    dead.add_argument("--kafka", metavar="HOST:PORT", required=True, help="Kafka bootstrap server")
    dead.add_argument("--kafka-prefix", default=kafka_prefix(), help="topic prefix (default none)")
    dead.add_argument(
        "--since",
        type=positive,
        default=7 * 24 * 3600.0,
        help="start this many seconds back (default 604800: the topic's retention)",
    )
    dead.add_argument("--stream", action="append", type=check_stream_name, help="only this stream")
    dead.add_argument(
        "--reason",
        action="append",
        choices=[r.value for r in DeadReason],
        help="only this reason (repeatable)",
    )
    dead.add_argument("--json", action="store_true", help="one JSON object per dead letter and line")
    dead.add_argument(
        "--replay",
        action="store_true",
        help="publish each listed letter again to the topic it was consumed from "
        "(a dead segment: its raw event)",
    )


def add_device(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    device = sub.add_parser(
        "device", help="cameras' own credentials: add, list, revoke (docs/security.md#devices)"
    )
    commands = device.add_subparsers(dest="device_command", required=True)
    add = commands.add_parser("add", help="a new device; prints its credential once, as the last line")
    add.add_argument("name", type=check_stream_name, help="device name (same rules as a stream name)")
    add.add_argument(
        "--stream",
        action="append",
        type=check_stream_name,
        help="a stream it may publish (repeatable; default: the stream named like the device)",
    )
    listing = commands.add_parser(
        "list", help="every device: streams, created, last seen and address, revoked"
    )
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    revoke = commands.add_parser("revoke", help="refuse it on every ingest node within 5 s, end its sessions")
    revoke.add_argument("name", type=check_stream_name)
    remove = commands.add_parser(
        "remove", help="forget a device (revoked or not): it is refused from then on"
    )
    remove.add_argument("name", type=check_stream_name)
    streams = commands.add_parser("streams", help="set the streams a device may publish (ends lost ones)")
    streams.add_argument("name", type=check_stream_name)
    streams.add_argument("streams", nargs="+", type=check_stream_name, metavar="STREAM")
    for parser in (add, listing, revoke, remove, streams):
        add_backends(parser)


def add_clip(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clip = sub.add_parser(
        "clip", help="export a recorded time range as one MP4 (stream copy), like the edge's /clip"
    )
    clip.add_argument("stream", type=check_stream_name)
    clip.add_argument("--start", required=True, metavar="ISO8601", help="e.g. 2026-12-03T14:02:00Z")
    clip.add_argument("--end", required=True, metavar="ISO8601", help="e.g. 2026-12-03T14:10:00Z")
    clip.add_argument("--rendition", help="the video rendition (default: the range's best)")
    clip.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the MP4, - for stdout (default STREAM_START-END.mp4 here)",
    )
    add_backends(clip)
