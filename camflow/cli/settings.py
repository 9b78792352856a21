"""What each service's constructor gets from the command line: flags in, keyword arguments out.

The services' constructors take these as required keywords (no defaults of their own), so a
setting's default is written once, in ``camflow.cli.args``. Tests that build a service directly
take the same defaults from a parsed command line (``tests/defaults.py``).
"""

from __future__ import annotations

import argparse
import math
import socket
from pathlib import Path
from typing import Any

from camflow.cli.args import PART_SECONDS, SEGMENT_SECONDS
from camflow.errors import ConfigError
from camflow.limits import ConnectionLimits
from camflow.regions import RegionConfig


def transcoder_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``TranscodeWorker``'s keywords: the ladder (``--ladder`` or ``--ladder-file``), processes,
    threads and attempts."""
    from transcode.ladder import DEFAULT_LADDER, load_ladder_file, parse_ladder

    if args.ladder and args.ladder_file:
        raise ConfigError("--ladder and --ladder-file name the same thing: give one of them")
    ladder = DEFAULT_LADDER
    if args.ladder_file:
        ladder = load_ladder_file(Path(args.ladder_file))
    elif args.ladder:
        ladder = parse_ladder(args.ladder)
    return {
        "ladder": ladder,
        "processes": args.processes,
        "threads": args.threads,
        "max_attempts": args.attempts,
    }


def packager_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``Packager``'s keywords. The target duration, unless given, is twice the segment duration
    rounded up (``camflow package``, which cuts no segments, assumes the default one). Low latency:
    PART-TARGET is ``--part-duration`` (ingest's flag on ``run``), None with ``--no-low-latency``."""
    segment = getattr(args, "segment_duration", SEGMENT_SECONDS)
    low_latency = not getattr(args, "no_low_latency", False)
    return {
        "live_window": args.live_window,
        "target_duration": args.target_duration or math.ceil(2 * segment),
        "offline_grace": args.offline_grace,
        "dvr_window": args.dvr_window,
        "retain": args.retain,
        "retain_streams": dict(args.retain_stream or []),
        "retention_interval": args.retention_interval,
        "part_target": getattr(args, "part_duration", PART_SECONDS) if low_latency else None,
        "region": region_config(args),
    }


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    """What a client of the HTTP and RTSP listeners may not exceed (``_add_limits`` of the args)."""
    return ConnectionLimits(
        head_timeout=args.request_head_timeout,
        body_timeout=args.request_body_timeout,
        body_min_rate=float(args.request_body_min_rate),
        idle_timeout=args.idle_timeout,
        max_head=args.max_request_head,
        per_client=args.max_connections_per_client,
        send_timeout=args.send_timeout,
        exempt=tuple(args.client_cap_exempt),
    )


def rtsp_server_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``ingest.service.build_rtsp_server``'s keywords, all but the bus, the signer, host and port:
    segments, session and handshake deadlines, the connection caps, UDP ports, auth schemes and the
    request deadline."""
    from ingest.service import parse_rtsp_flags

    udp_ports, auth_schemes = parse_rtsp_flags(args.rtsp_udp_ports, args.rtsp_auth)
    return {
        "segment_target": args.segment_duration,
        "part_target": part_target(args),
        "session_timeout": args.rtsp_session_timeout,
        "handshake_timeout": args.rtsp_handshake_timeout,
        "max_connections": args.rtsp_max_connections,
        "udp_ports": udp_ports,
        "auth_schemes": auth_schemes,
        "limits": connection_limits(args),
    }


def part_target(args: argparse.Namespace) -> float | None:
    """Seconds of the low-latency parts ingest cuts (``--part-duration``); None with ``--no-low-latency``."""
    return None if args.no_low_latency else float(args.part_duration)


def spool_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``ingest.media.spooled_bus.SpooledBus``'s keywords: the spool's directory (``--spool-dir``,
    else ``spool`` under ``--data-dir``) and its bound."""
    directory = Path(args.spool_dir) if args.spool_dir else Path(args.data_dir) / "spool"
    return {"directory": directory, "max_bytes": args.spool_max_bytes}


def edge_app_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``edge.app.build_app``'s keywords: the cache, playlists' max-age, the token check and the
    identity provider of JWT view tokens."""
    from camflow.cli.signing import identity_settings
    from edge.policy import TokenCheck

    return {
        "cache_bytes": int(args.cache_mb * 1024 * 1024),
        "playlist_max_age": args.playlist_max_age,
        "token_check": TokenCheck(args.token_check),
        "identity": identity_settings(args),
        "region": region_config(args),
    }


def edge_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``EdgeServer``'s keywords: the application's, whether the fast path serves, and the limits."""
    return {**edge_app_settings(args), "fast_path": not args.no_fast_path, "limits": connection_limits(args)}


WILDCARDS = ("", "0.0.0.0", "::")


def public_url(args: argparse.Namespace) -> str:
    """This process's HTTP base URL as viewers reach it: the scheme (https with ``--tls-cert``),
    ``--host`` (the machine's name for a wildcard) and ``--http-port``."""
    host = str(getattr(args, "host", "") or "")
    if host in WILDCARDS:
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if getattr(args, "tls_cert", None) else "http"
    return f"{scheme}://{host}:{args.http_port}"


def whep_public_url(args: argparse.Namespace) -> str:
    """The base URL viewers reach this process's WHEP at (no trailing slash): ``--whep-public-url``,
    else ``public_url``."""
    given = getattr(args, "whep_public_url", None)
    return str(given).rstrip("/") if given else public_url(args)


def region_config(args: argparse.Namespace) -> RegionConfig | None:
    """``--region`` and the base URL of its edge (``--region-edge-url``, else ``public_url``), or None."""
    name = getattr(args, "region", None)
    if not name:
        return None
    url = getattr(args, "region_edge_url", None)
    if not url:
        if getattr(args, "http_port", None) is None:
            raise ConfigError("--region needs --region-edge-url here: the URL of the region's edge")
        url = public_url(args)
    return RegionConfig(name, str(url).rstrip("/"))
