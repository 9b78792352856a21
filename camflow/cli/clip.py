"""``camflow clip STREAM --start --end [-o FILE]``: a recorded time range as one MP4, read straight
from the store (``--s3`` or ``--data-dir``) as the edge's ``/clip`` makes it (``camflow.clip``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from camflow.clip import MAX_SECONDS, best_video_rendition, export_clip, file_name
from camflow.errors import ConfigError
from camflow.hls.dates import format_date_time, parse_date_time
from camflow.keys import is_rendition
from camflow.recording_reader import RecordingReader


def _time(text: str, flag: str) -> float:
    try:
        return parse_date_time(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not ISO 8601 with a zone, e.g. 2026-12-03T14:02:00Z") from None


async def clip_command(args: argparse.Namespace) -> int:
    from camflow.cli.serve import make_store

    start, end = _time(args.start, "--start"), _time(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end {format_date_time(end)} is not after --start {format_date_time(start)}")
    if end - start > MAX_SECONDS:
        raise ConfigError(f"a clip of {end - start:.0f} s is over the export limit of {MAX_SECONDS} s")
    if args.rendition is not None and not is_rendition(args.rendition):
        raise ConfigError(f"--rendition {args.rendition!r} is not valid: expected a-z 0-9 _ -")
    store = make_store(args)
    await store.start()
    try:
        runs = await RecordingReader(store).runs(args.stream, start, end)
        rendition = args.rendition or best_video_rendition(runs)
        if rendition is None or not any(rendition in s.renditions for run in runs for s in run.segments):
            what = f"{rendition!r} rendition" if rendition else "recording"
            print(
                f"camflow: stream {args.stream!r} has no {what} between "
                f"{format_date_time(start)} and {format_date_time(end)}",
                file=sys.stderr,
            )
            return 1
        target = args.output or file_name(args.stream, start, end)
        out = sys.stdout.buffer if target == "-" else Path(target).open("wb")  # noqa: SIM115
        started = time.monotonic()
        try:

            async def write(data: bytes) -> None:
                out.write(data)

            stats = await export_clip(store, args.stream, runs, rendition, write, end)
        finally:
            if out is not sys.stdout.buffer:
                out.close()
        took = time.monotonic() - started
        print(
            f"camflow clip: {stats.media_seconds:.1f} s of {args.stream} ({rendition}), {stats.bytes} bytes "
            f"to {target}, {stats.segments} segments ({stats.missing} missing), in {took:.1f} s",
            file=sys.stderr,
        )
        return 0
    finally:
        await store.close()
