"""``camflow``'s entry point: dispatches the subcommands.

The arguments are in ``camflow.cli.args``; the services of ``run``, ``ingest``, ``transcode``,
``package`` and ``edge`` start in ``camflow.cli.serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from camflow.cli.args import build_parser
from camflow.cli.serve import make_signer, serve
from camflow.errors import ConfigError
from camflow.keys import check_stream_name
from camflow.log import AUTO, configure_logging
from camflow.tokens import Action, TokenSigner, load_keys

__all__ = ["build_parser", "main"]


def _loadgen(args: argparse.Namespace) -> int:
    from ingest.loadgen import LoadPlan, Recording, check_target, record_clip, report, run_load

    target = check_target(args.url, args.allow_remote)
    recording = record_clip(Path(args.clip)) if args.clip else Recording.load(Path(args.rtp))
    if args.save_rtp:
        recording.save(Path(args.save_rtp))
    token = None
    if args.token_secret_from:
        signer = TokenSigner(load_keys(Path(args.token_secret_from)))
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
    # Logs go to stderr from the start: the commands that print results (token, keys, tail --json,
    # dead, device list --json) keep stdout for them.
    try:
        configure_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", AUTO))
        if args.command == "token":
            if args.ttl is None and args.action != Action.PUBLISH.value:
                raise ConfigError("--ttl never: only publish tokens (camera credentials) may never expire")
            if (args.action == Action.ADMIN.value) != (args.stream == "*"):
                raise ConfigError(f"stream {args.stream!r}: admin tokens take '*', others a stream name")
            signer = make_signer(args)
            print(signer.issue(args.stream, Action(args.action), args.ttl))
            return 0
        if args.command == "keys":
            from camflow.cli.signing import keys_command

            return keys_command(args)
        if args.command == "tail":
            from camflow.cli.tail import tail_command

            return tail_command(args)
        if args.command == "dead":
            from camflow.cli.dead import dead_command

            return dead_command(args)
        if args.command == "device":
            from camflow.cli.devices import device_command

            return device_command(args)
        if args.command == "clip":
            from camflow.cli.clip import clip_command

            return asyncio.run(clip_command(args))
        if args.command == "regions":
            from camflow.cli.sites import regions_command

            return regions_command(args)
        if args.command == "loadgen":
            return _loadgen(args)
        if args.command == "edge":
            _use_uvloop()
        return asyncio.run(serve(args, ROLES[args.command]))
    except ConfigError as exc:
        print(f"camflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
