"""The ``camflow`` command line's arguments: one group of flags per service, and their types."""

from __future__ import annotations

import argparse
import math
import os

from camflow.cli.argtypes import at_least_one
from camflow.cli.argtypes import count0 as _count0
from camflow.cli.argtypes import positive as _positive
from camflow.cli.argtypes import size as _size
from camflow.cli.backend_args import add_backends as _add_backends
from camflow.cli.backend_args import add_region
from camflow.cli.backend_args import data_dir as _data_dir
from camflow.cli.limit_args import add_limits
from camflow.cli.signing import add_jwt_flags, add_keys_parser
from camflow.cli.sites import add_regions
from camflow.cli.tool_args import add_clip, add_dead, add_device, add_tail
from camflow.errors import ConfigError
from camflow.keys import check_stream_name
from camflow.log import AUTO, LOG_FORMATS
from camflow.tokens import Action

DEFAULT_TOKEN_TTL = 24 * 3600.0
SEGMENT_SECONDS = 2.0  # --segment-duration (and what `camflow package` assumes of its ingest)
PART_SECONDS = 0.2  # --part-duration: low-latency HLS parts (PART-TARGET)
RTSP_PORT = 8554
RTSPS_PORT = 8322
HTTP_PORT = 8080
PULL_ENV = "CAMFLOW_PULL"  # pull sources as NAME=URL words: passwords stay off the command line
SPOOL_MAX_BYTES = "2G"  # --spool-max-bytes


DESCRIPTION = "camflow: IoT video ingest and streaming, from cameras to HLS viewers."


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


def _port_or_off(text: str) -> int | None:
    """A TCP port (0: any free one), or ``off``."""
    if text.strip().lower() == "off":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number (0-65535) or off")
    return int(text)


_whole_seconds = at_least_one("seconds")


def _add_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rtsp-port",
        type=_port_or_off,
        default=str(RTSP_PORT),
        metavar="PORT|off",
        help=f"RTSP listen port; off: none, e.g. RTSPS only (default {RTSP_PORT})",
    )
    p.add_argument(
        "--rtsps-port",
        type=_port_or_off,
        default=str(RTSPS_PORT),
        metavar="PORT|off",
        help=f"RTSPS (RTSP over TLS, RTP interleaved inside it) listen port, on when --tls-cert is given; "
        f"off: no RTSPS listener (default {RTSPS_PORT})",
    )
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
        default=SEGMENT_SECONDS,
        help="target segment duration in seconds; segments cut at the first IDR after it (default 2)",
    )
    p.add_argument(
        "--part-duration",
        type=part_duration,
        default=PART_SECONDS,
        metavar="SECONDS",
        help="low-latency HLS: target duration of the parts cut inside each segment, 0.1 to 1.0 "
        f"(default {PART_SECONDS})",
    )
    p.add_argument(
        "--no-low-latency",
        action="store_true",
        help="no low-latency HLS: ingest cuts no parts (segments only, as before); on `run`, every "
        "service runs without it",
    )
    p.add_argument(
        "--spool-dir",
        metavar="PATH",
        default=None,
        help="where cut segments (and stream states, health samples) wait on disk until the bus takes "
        "them; every ingest process on it adopts the spool an ended one left (default DATA_DIR/spool)",
    )
    p.add_argument(
        "--spool-max-bytes",
        type=_size,
        default=SPOOL_MAX_BYTES,
        metavar="SIZE",
        help="bound of the spool, e.g. 2G, 500M; when full, the oldest waiting segment is dropped "
        f"(counted, logged, alerted) (default {SPOOL_MAX_BYTES})",
    )
    p.add_argument(
        "--pull",
        action="append",
        metavar="NAME=URL",
        help="pull an RTSP source into stream NAME, e.g. cam7=rtsp://10.0.0.7/stream1 (repeatable); a URL "
        f"with a password belongs in env {PULL_ENV} (same NAME=URL words) or --sources, not here: "
        "`ps` shows command lines",
    )
    p.add_argument(
        "--sources",
        metavar="FILE",
        help='TOML file of pull sources: cam7 = "rtsp://..." or a [cam7] table with url, transport '
        "(the place for camera passwords)",
    )
    p.add_argument(
        "--pull-ca",
        metavar="FILE",
        default=os.environ.get("CAMFLOW_PULL_CA") or None,
        help="PEM CA certificates that rtsps:// pull sources may also be signed by (a camera's own CA), "
        "beside the system's (env CAMFLOW_PULL_CA)",
    )
    p.add_argument(
        "--pull-tls-insecure",
        action="store_true",
        help="pull rtsps:// sources without checking their certificate (self-signed cameras; logged as a "
        "warning): encrypted, but open to a man in the middle",
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
        help="seconds without video before a WHIP or WHEP session ends; 1.5x that to connect (default 10)",
    )
    p.add_argument(
        "--webrtc-max-viewers",
        type=at_least_one("viewer"),
        default=200,
        metavar="N",
        help="WHEP (WebRTC playback) sessions of one stream at most; more are refused with 503 (default 200)",
    )
    p.add_argument(
        "--whep-public-url",
        metavar="URL",
        help="where viewers reach this process's WHEP, e.g. https://ingest-3.example.com:8443 (announced "
        "in its health samples: edges redirect WHEP viewers of its streams there; default "
        "http(s)://HOST:HTTP_PORT, the machine's name for a wildcard --host)",
    )
    p.add_argument(
        "--webrtc-max-client-sessions",
        type=at_least_one("session"),
        default=20,
        metavar="N",
        help="WHEP sessions from one client address at most; more are refused with 429 (default 20; raise it "
        "for viewers behind one NAT or proxy address)",
    )


def _add_transcode(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ladder",
        help="renditions, e.g. source,720p:2500k,360p:800k:1200k:baseline (default source,720p,360p)",
    )
    p.add_argument(
        "--ladder-file", metavar="PATH", help="the ladder from a .toml or .yaml file (docs/transcoding.md)"
    )
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
    if (
        "--no-low-latency" not in p._option_string_actions
    ):  # `run`: one flag for every service, maybe ingest's
        p.add_argument(
            "--no-low-latency",
            action="store_true",
            help="no low-latency HLS: the part worker (raw parts -> parts of every rendition) does not run",
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


def part_duration(text: str) -> float:
    """``--part-duration``: seconds, 0.1 to 1.0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.1 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"part duration {text!r}: expected seconds from 0.1 to 1.0, e.g. 0.2"
        )
    return value


def _add_package_low_latency(p: argparse.ArgumentParser) -> None:
    """The packager's low-latency flags on `camflow package` (`run` gets them from the ingest's)."""
    p.add_argument(
        "--part-duration",
        type=part_duration,
        default=PART_SECONDS,
        help="PART-TARGET of low-latency playlists, seconds 0.1..1.0, as ingest cuts them "
        f"(default {PART_SECONDS})",
    )
    p.add_argument(
        "--no-low-latency",
        action="store_true",
        help="plain HLS playlists: part-ready events are ignored (default: low-latency HLS)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=os.environ.get("CAMFLOW_TLS_CERT") or None,
        help="PEM certificate chain (server certificate first): --http-port speaks HTTPS and RTSPS listens "
        "on --rtsps-port; reloaded when the file changes or on SIGHUP (env CAMFLOW_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key",
        metavar="FILE",
        default=os.environ.get("CAMFLOW_TLS_KEY") or None,
        help="PEM private key of --tls-cert, unencrypted (env CAMFLOW_TLS_KEY)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ["CAMFLOW_METRICS_PORT"]) if os.environ.get("CAMFLOW_METRICS_PORT") else None,
        help="serve /metrics, /healthz and /readyz on this port (default: off; run and edge also serve "
        "/healthz, /readyz on --http-port, and /metrics there to an operator token; env "
        "CAMFLOW_METRICS_PORT)",
    )
    p.add_argument(
        "--metrics-host",
        default=os.environ.get("CAMFLOW_METRICS_HOST", "127.0.0.1"),
        help="address of --metrics-port: the figures name every stream, so loopback unless Prometheus "
        "scrapes from elsewhere, e.g. 0.0.0.0 in a pod (default 127.0.0.1; env CAMFLOW_METRICS_HOST)",
    )
    p.add_argument(
        "--health-interval",
        type=_positive,
        default=2.0,
        help="seconds between the health samples this process publishes on camflow.health (default 2)",
    )
    p.add_argument("--log-level", default=os.environ.get("CAMFLOW_LOG_LEVEL", "info"))
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("CAMFLOW_LOG_FORMAT", AUTO),
        help="console (for people), json (one object per line), or auto: console when stderr is a "
        "terminal, else json (default auto; env CAMFLOW_LOG_FORMAT)",
    )
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
    add_jwt_flags(p)
    p.add_argument(
        "--no-fast-path",
        action="store_true",
        help="serve every edge request through the aiohttp application (for comparison; slower)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camflow", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="every service in one process tree (the embedded default)")
    _add_common(run)
    _add_backends(run)
    _add_ingest(run)
    _add_transcode(run)
    _add_package(run)
    add_region(run)
    add_limits(run)
    run.add_argument(
        "--http-port",
        type=int,
        default=HTTP_PORT,
        help=f"HTTP (edge) port, HTTPS with --tls-cert (default {HTTP_PORT})",
    )
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
    add_limits(ingest)
    ingest.add_argument(
        "--http-port",
        type=int,
        default=HTTP_PORT,
        help=f"HTTP port of /whip, HTTPS with --tls-cert (default {HTTP_PORT})",
    )

    transcode = sub.add_parser("transcode", help="a transcode worker alone")
    _add_common(transcode)
    _add_backends(transcode)
    _add_transcode(transcode)

    package = sub.add_parser("package", help="the packager alone")
    _add_common(package)
    _add_backends(package)
    _add_package(package)
    _add_package_low_latency(package)
    add_region(package)

    edge = sub.add_parser("edge", help="the HLS edge alone")
    _add_common(edge)
    _add_backends(edge)
    edge.add_argument(
        "--http-port",
        type=int,
        default=HTTP_PORT,
        help=f"HTTP port, HTTPS with --tls-cert (default {HTTP_PORT})",
    )
    _add_edge(edge)
    add_region(edge)
    add_limits(edge)
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
        "(needed for RTSP Digest; revoked by retiring its signing key)",
    )
    token.add_argument(
        "--data-dir",
        default=_data_dir(),
        help="where the embedded default keeps its signing keys (ignored when CAMFLOW_SECRET or "
        "CAMFLOW_SECRET_FILE is set); the current key signs",
    )
    add_keys_parser(sub, _data_dir())

    add_tail(sub)
    add_dead(sub)
    add_device(sub)
    add_clip(sub)
    add_regions(sub)
    load = sub.add_parser("loadgen", help="replay one H.264 RTP stream to N concurrent RTSP publish sessions")
    load.add_argument(
        "--url", default=f"rtsp://127.0.0.1:{RTSP_PORT}", help=f"ingest to load (default :{RTSP_PORT} here)"
    )
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
