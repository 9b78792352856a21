"""``camflow tail``: follow the stream-health feed, one line per sample, or as a live table.

Sources: Kafka (``camflow.health``, outside any consumer group, from ``--since`` seconds back)
or an edge's ``/api/health`` Server-Sent Events (``--edge URL --token T``, an operator token),
which is how the embedded ``camflow run`` is followed. Either way every sample goes into a
``HealthBoard``, so a filter on ``--state`` also keeps the transcoder's and packager's samples
of streams in that state, and ``--table`` shows the merged picture of every stream.

The formatting is plain functions of samples (``format_line``, ``render_table``), tested
without any source.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from camflow.errors import CamflowError, ConfigError, EventDecodeError
from camflow.events import HealthSample, StreamStateKind, health_sample_from_json
from camflow.health import HealthBoard, follow_health

RESET = "\x1b[0m"
COLORS = {
    StreamStateKind.LIVE.value: "\x1b[32m",  # green
    StreamStateKind.CONNECTING.value: "\x1b[36m",  # cyan
    StreamStateKind.STALLED.value: "\x1b[33m",  # yellow
    StreamStateKind.OFFLINE.value: "\x1b[31m",  # red
}
DIM = "\x1b[2m"
CLEAR = "\x1b[H\x1b[2J"
TABLE_SECONDS = 1.0
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)


class TailError(CamflowError):
    """The health feed could not be followed (unreachable edge, refused token)."""


@dataclass(frozen=True)
class TailFilter:
    streams: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()

    def keeps(self, sample: HealthSample, board: HealthBoard) -> bool:
        """Whether to print ``sample``: its stream is asked for, and its state (or, for services
        that do not know it, the stream's state on the board) is one asked for."""
        if self.streams and sample.stream not in self.streams:
            return False
        if not self.states:
            return True
        return state_of(sample, board) in self.states

    def keeps_row(self, row: dict[str, Any]) -> bool:
        if self.streams and row["stream"] not in self.streams:
            return False
        return not self.states or row.get("state") in self.states


def state_of(sample: HealthSample, board: HealthBoard) -> str | None:
    if sample.state is not None:
        return sample.state.value
    merged = board.merged(sample.stream)
    return None if merged is None else merged["state"]


def _rate(bits: float | None) -> str | None:
    if bits is None:
        return None
    if bits >= 1e6:
        return f"{bits / 1e6:.2f}Mb/s"
    return f"{bits / 1e3:.0f}kb/s"


def _secs(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def figures(sample: HealthSample) -> list[str]:
    """``name=value`` for every figure the sample has, in a fixed order."""
    parts = [
        ("bitrate", _rate(sample.bitrate)),
        ("fps", None if sample.fps is None else f"{sample.fps:g}"),
        ("gop", _secs(sample.gop_seconds)),
        ("segment_age", _secs(sample.segment_age)),
        ("lost", None if sample.packets_lost is None else str(sample.packets_lost)),
        ("ts_fixes", None if sample.timestamp_corrections is None else str(sample.timestamp_corrections)),
        ("transcode", _secs(sample.transcode_latency)),
        ("lag", None if sample.consumer_lag is None else str(sample.consumer_lag)),
        ("playlist_age", _secs(sample.playlist_age)),
        ("viewers", None if sample.viewers is None else str(sample.viewers)),
        ("fixed", _fixes(sample.corrections)),
        ("store_down", _secs(sample.store_outage) if sample.store_outage else None),
        ("region", sample.region or None),
        ("owner", sample.owner if sample.owner and sample.owner != sample.region else None),
        ("replication_lag", _secs(sample.replication_lag)),
    ]
    return [f"{name}={value}" for name, value in parts if value is not None]


def _fixes(corrections: dict[str, int] | None) -> str | None:
    """``kind:count,...``, most frequent first (None when there is nothing to show)."""
    if not corrections:
        return None
    ranked = sorted(corrections.items(), key=lambda kv: (-kv[1], kv[0]))
    return ",".join(f"{kind}:{count}" for kind, count in ranked)


def _fix_total(corrections: dict[str, int] | None) -> str:
    return "-" if corrections is None else str(sum(corrections.values()))


def format_line(sample: HealthSample, *, color: bool, state: str | None = None) -> str:
    """One human line: time, stream, service, state, figures, reason; colored by state if asked."""
    stamp = time.strftime("%H:%M:%S", time.localtime(sample.at))
    shown = sample.state.value if sample.state is not None else (state or "-")
    text = " ".join([stamp, f"{sample.stream:<16}", f"{sample.service:<9}", f"{shown:<10}", *figures(sample)])
    if sample.reason:
        text += f"  ({sample.reason})"
    if not color:
        return text
    start = COLORS.get(shown, DIM) if sample.state is not None else DIM
    return f"{start}{text}{RESET}"


def format_json(sample: HealthSample) -> str:
    return json.dumps(sample.to_json(), separators=(",", ":"), sort_keys=True)


TABLE_COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("STREAM", "<", lambda r: str(r["stream"])),
    ("STATE", "<", lambda r: r["state"] or "-"),
    ("BITRATE", ">", lambda r: _rate(r["bitrate"]) or "-"),
    ("FPS", ">", lambda r: "-" if r["fps"] is None else f"{r['fps']:g}"),
    ("GOP", ">", lambda r: _secs(r["gop_seconds"]) or "-"),
    ("SEG AGE", ">", lambda r: _secs(r["segment_age"]) or "-"),
    ("LOST", ">", lambda r: "-" if r["packets_lost"] is None else str(r["packets_lost"])),
    ("TS FIX", ">", lambda r: "-" if r["timestamp_corrections"] is None else str(r["timestamp_corrections"])),
    ("FIXES", ">", lambda r: _fix_total(r.get("corrections"))),
    ("TRANSCODE", ">", lambda r: _secs(r["transcode_latency"]) or "-"),
    ("LAG", ">", lambda r: "-" if r["consumer_lag"] is None else str(r["consumer_lag"])),
    ("PLAYLIST", ">", lambda r: _secs(r["playlist_age"]) or "-"),
    ("VIEWERS", ">", lambda r: "-" if r["viewers"] is None else str(r["viewers"])),
    ("REASON", "<", lambda r: str(r["reason"] or "")),
)


def render_table(
    rows: Sequence[dict[str, Any]], *, color: bool, width: int = 200, now: float | None = None
) -> str:
    """The whole screen of ``--table``: a header line, then one line per stream (cut at ``width``)."""
    cells = [[cell(row) for _, _, cell in TABLE_COLUMNS] for row in rows]
    sizes = [max([len(title)] + [len(c[i]) for c in cells]) for i, (title, _, _) in enumerate(TABLE_COLUMNS)]
    sizes[-1] = len(TABLE_COLUMNS[-1][0])  # the reason is last and not padded

    def line(values: Sequence[str]) -> str:
        out = []
        for (title, align, _), size, value in zip(TABLE_COLUMNS, sizes, values, strict=True):
            out.append(value if title == "REASON" else f"{value:{align}{size}}")
        return "  ".join(out)[:width]

    stamp = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
    lines = [f"camflow tail --table  {stamp}  {len(rows)} streams", line([t for t, _, _ in TABLE_COLUMNS])]
    for row, values in zip(rows, cells, strict=True):
        text = line(values)
        if color:
            text = f"{COLORS.get(row['state'] or '', DIM)}{text}{RESET}"
        lines.append(text)
    return "\n".join(lines) + "\n"


# --- sources ---------------------------------------------------------------------------------------


async def kafka_samples(
    bootstrap: str, prefix: str, since: float, stop: asyncio.Event
) -> AsyncGenerator[HealthSample, None]:
    from camflow.bus.kafka import KafkaBus

    bus = KafkaBus(bootstrap, client_id="camflow-tail", prefix=prefix)
    queue: asyncio.Queue[HealthSample] = asyncio.Queue(maxsize=4096)

    def put(sample: HealthSample) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(sample)

    follower = asyncio.create_task(follow_health(bus, put, stop, since=since))
    try:
        while not stop.is_set():
            if follower.done():
                follower.result()  # raises what stopped it
                return
            with contextlib.suppress(TimeoutError):
                yield await asyncio.wait_for(queue.get(), 0.5)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await follower


def parse_sse(buffer: str) -> tuple[list[tuple[str, str]], str]:
    """Complete ``(event, data)`` pairs in ``buffer`` and what is left of it (an incomplete event)."""
    events = []
    while "\n\n" in buffer:
        block, buffer = buffer.split("\n\n", 1)
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, "\n".join(data)))
    return events, buffer


async def edge_samples(
    url: str, token: str, stream: str | None, stop: asyncio.Event
) -> AsyncGenerator[HealthSample, None]:
    """Samples from an edge's ``/api/health``; reconnects (with a pause) when the edge goes away."""
    import aiohttp

    params = {"token": token, **({"stream": stream} if stream else {})}
    failures = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=30)) as session:
        while not stop.is_set():
            try:
                async with session.get(url.rstrip("/") + "/api/health", params=params) as resp:
                    if resp.status in (401, 403, 400):
                        detail = (await resp.text())[:300]
                        raise TailError(f"{url}/api/health answered {resp.status}: {detail}")
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    failures = 0
                    buffer = ""
                    async for chunk in resp.content.iter_any():
                        buffer += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
                        events, buffer = parse_sse(buffer)
                        for name, data in events:
                            if name == "health":
                                try:
                                    yield health_sample_from_json(json.loads(data))
                                except (ValueError, KeyError, TypeError, EventDecodeError):
                                    continue
                        if stop.is_set():
                            return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                pause = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                print(
                    f"camflow tail: {url}: {exc!r}; reconnecting in {pause:g} s", file=sys.stderr, flush=True
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)


# --- the command ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TailOptions:
    kafka: str | None
    kafka_prefix: str
    edge: str | None
    token: str
    filter: TailFilter
    json: bool
    table: bool
    color: bool
    since: float
    duration: float | None


def use_color(choice: str, out: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return bool(getattr(out, "isatty", lambda: False)())


async def run_tail(options: TailOptions, out: TextIO = sys.stdout) -> int:
    if bool(options.kafka) == bool(options.edge):
        raise ConfigError("camflow tail follows one feed: give --kafka HOST:PORT or --edge URL")
    if options.edge and not options.token:
        raise ConfigError(
            "--edge needs an operator token: --token T (camflow token admin '*') or CAMFLOW_TOKEN"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if options.duration is not None:
        loop.call_later(options.duration, stop.set)
    with contextlib.suppress(NotImplementedError):
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    board = HealthBoard()
    only = next(iter(options.filter.streams)) if len(options.filter.streams) == 1 else None
    if options.kafka:
        source = kafka_samples(options.kafka, options.kafka_prefix, options.since, stop)
    else:
        assert options.edge is not None
        source = edge_samples(options.edge, options.token, only, stop)
    redraw = asyncio.create_task(_redraw(board, options, out, stop)) if options.table else None

    async def follow() -> None:
        async for sample in source:
            board.add(sample)
            if options.table or not options.filter.keeps(sample, board):
                continue
            line = (
                format_json(sample)
                if options.json
                else format_line(sample, color=options.color, state=state_of(sample, board))
            )
            out.write(line + "\n")
            out.flush()
            if stop.is_set():
                break

    # The feed may say nothing for a long while (an idle edge sends no event for 30 s): --duration
    # and Ctrl-C end the wait for the next sample, not only what comes after it.
    following = asyncio.create_task(follow())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([following, stopped], return_when=asyncio.FIRST_COMPLETED)
        if following.done():
            following.result()  # raises what ended the feed (TailError)
    finally:
        stop.set()
        stopped.cancel()
        if not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        await source.aclose()
        if redraw is not None:
            await redraw
    return 0


async def _redraw(board: HealthBoard, options: TailOptions, out: TextIO, stop: asyncio.Event) -> None:
    while not stop.is_set():
        board.prune()
        rows = [r for r in board.table() if options.filter.keeps_row(r)]
        out.write(CLEAR + render_table(rows, color=options.color))
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TABLE_SECONDS)


# --- the subcommand ---------------------------------------------------------------------------------


def tail_command(args: argparse.Namespace) -> int:
    options = TailOptions(
        kafka=args.kafka,
        kafka_prefix=args.kafka_prefix,
        edge=args.edge,
        token=args.token,
        filter=TailFilter(frozenset(args.stream or ()), frozenset(args.state or ())),
        json=args.json,
        table=args.table,
        color=use_color(args.color, sys.stdout),
        since=args.since,
        duration=args.duration,
    )
    try:
        return asyncio.run(run_tail(options))
    except TailError as exc:
        print(f"camflow tail: {exc}", file=sys.stderr)
        return 1
