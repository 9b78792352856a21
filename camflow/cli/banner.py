"""What ``camflow run`` prints when it is up: where to push, where to watch, and the operator's view.

Every line is a command or URL that works when pasted: the stream list (``/api/streams``) and
``camflow tail`` carry an admin token (tail's in its environment, ``CAMFLOW_TOKEN``: a command
line is readable by every user of the machine), and the ``camflow`` of the printed commands is the one
that is running (``.venv/bin/camflow`` under ``make run`` when the venv is not on ``PATH``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from camflow.cli.args import DEFAULT_TOKEN_TTL
from camflow.tokens import Action, TokenSigner

WILDCARD = ("0.0.0.0", "::", "")


def display_host(host: str) -> str:
    """An address a client on this machine can reach for a listen address (a wildcard: loopback)."""
    return "127.0.0.1" if host in WILDCARD else host


def camflow_command(argv0: str | None = None) -> str:
    """How to run this same ``camflow`` from a shell: ``camflow`` when that is the one on ``PATH``,
    else the script's path, or ``python -m camflow.cli`` when started that way."""
    script = Path(argv0 if argv0 is not None else sys.argv[0])
    if script.name != "camflow":
        return f"{shlex.quote(sys.executable)} -m camflow.cli"
    found = shutil.which("camflow")
    if found is not None and script.exists() and os.path.samefile(found, script):
        return "camflow"
    return shlex.quote(str(script))


def operator_view(args: argparse.Namespace, signer: TokenSigner, camflow: str | None = None) -> str:
    """The lines ``camflow run`` prints: push and watch URLs of ``--stream``, the stream list and
    the health feed (admin token), and how to make tokens for other streams."""
    camflow = camflow or camflow_command()
    host = display_host(args.host)
    tls = bool(getattr(args, "tls_cert", None))
    edge = f"{'https' if tls else 'http'}://{host}:{args.http_port}"
    stream = args.stream
    publish = signer.issue(stream, Action.PUBLISH, DEFAULT_TOKEN_TTL)
    view = signer.issue(stream, Action.VIEW, DEFAULT_TOKEN_TTL)
    admin = signer.issue("*", Action.ADMIN, DEFAULT_TOKEN_TTL)
    bus = f"Kafka {args.kafka}" if args.kafka else "in-process bus"
    store = f"S3 {args.s3}" if args.s3 else f"files under {Path(args.data_dir).resolve() / 'store'}"
    urls = []
    if args.rtsp_port is not None:
        urls.append(f"rtsp://{host}:{args.rtsp_port}/{stream}?token={publish}")
    if tls and getattr(args, "rtsps_port", None) is not None:
        urls.append(f"rtsps://{host}:{args.rtsps_port}/{stream}?token={publish}")
    if urls:
        push = "".join(f"            {url}\n" for url in urls).lstrip()
        push += f'            e.g. ffmpeg -re -i clip.mp4 -c copy -f rtsp -rtsp_transport tcp "{urls[0]}"\n'
    else:  # no RTSP listener: WHIP
        push = f"{edge}/whip/{stream} (WHIP, Authorization: Bearer {publish})\n"
    return (
        f"camflow is running ({bus}, {store}{', TLS' if tls else ''}).\n"
        f"  push to:  {push}"
        f"  watch at: {edge}/live/{stream}/master.m3u8?token={view}\n"
        f"            e.g. ffplay or VLC with that URL; tokens valid 24 h.\n"
        f"  player:   {edge}/watch/{stream}?token={view}\n"
        f"  WebRTC:   {edge}/watch/{stream}?token={view}&transport=webrtc (WHEP: POST {edge}/whep/{stream})\n"
        f"  streams:  curl -s '{edge}/api/streams?token={admin}'\n"
        f"  health:   CAMFLOW_TOKEN={admin} {camflow} tail --edge {edge}\n"
        f"  other streams: {camflow} token publish|view STREAM --data-dir {shlex.quote(args.data_dir)}\n"
        f"Ctrl-C stops it."
    )
