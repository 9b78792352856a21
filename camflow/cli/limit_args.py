"""The flags of the listener limits (``camflow.limits``) of `camflow run`, `ingest` and `edge`:
what hostile clients cannot exceed on the HTTP (edge, WHIP) and RTSP listeners (docs/security.md)."""

from __future__ import annotations

import argparse

from camflow.cli.argtypes import count0, positive, size
from camflow.errors import ConfigError
from camflow.limits import Network, parse_networks

LOOPBACK = "127.0.0.0/8,::1"  # --client-cap-exempt


def _networks(text: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_limits(p: argparse.ArgumentParser) -> None:
    """What hostile clients cannot exceed on the HTTP (edge, WHIP) and RTSP listeners (docs/security.md)."""
    p.add_argument(
        "--max-connections-per-client",
        type=count0,
        default=64,
        metavar="N",
        help="open connections of one client address on each listener (HTTP, RTSP); more are refused "
        "(503); 0: no cap. A CDN or NAT gateway carries many clients on few addresses: exempt it "
        "with --client-cap-exempt (default 64)",
    )
    p.add_argument(
        "--client-cap-exempt",
        type=_networks,
        default=LOOPBACK,
        metavar="CIDR,...",
        help="client addresses or networks the per-client cap does not apply to, e.g. a CDN's, a load "
        f"balancer's, a camera site's NAT gateway; `none` for none (default {LOOPBACK}: a reverse "
        "proxy on this machine)",
    )
    p.add_argument(
        "--request-head-timeout",
        type=positive,
        default=10.0,
        metavar="SECONDS",
        help="a request head (HTTP; RTSP after its handshake: a whole request) must be complete this "
        "long after its first byte, however it trickles; else 408 and closed (default 10)",
    )
    p.add_argument(
        "--request-body-timeout",
        type=positive,
        default=10.0,
        metavar="SECONDS",
        help="an HTTP request body must arrive within this, plus its length at --request-body-min-rate "
        "(default 10)",
    )
    p.add_argument(
        "--request-body-min-rate",
        type=size,
        default="16K",
        metavar="BYTES",
        help="bytes per second an HTTP request body is allowed beyond --request-body-timeout (default 16K)",
    )
    p.add_argument(
        "--idle-timeout",
        type=positive,
        default=30.0,
        metavar="SECONDS",
        help="an HTTP keep-alive connection with no request for this long is closed (default 30)",
    )
    p.add_argument(
        "--send-timeout",
        type=positive,
        default=60.0,
        metavar="SECONDS",
        help="an HTTP response that cannot be sent because the client reads none of it (a full send "
        "buffer) for this long is abandoned and the connection reset (default 60)",
    )
    p.add_argument(
        "--max-request-head",
        type=size,
        default="8K",
        metavar="SIZE",
        help="bytes of an HTTP request head (request line and header fields); a longer one gets 431 "
        "(default 8K)",
    )
