"""The recording index at scale: the recordings listing and a one-hour VOD playlist over 30 days of a camera.

``python -m bench recordings [-- --days 30 --repeats 20 --legacy-repeats 3 --no-s3 --no-peer --peer-days 0.4
--peer-repeats 3]``

1. 30 days of one camera (2 s segments, ~1.3 million, three renditions, a new epoch every
   7 days, one segment in 5000 missing) are synthesised straight into the index through the
   packager's index writer (``tests.recording_synth``: an hour of segments per append, so 4320
   chunks and the day summaries are written as the packager writes them), into a FileStore
   directory and into a MinIO bucket (``CAMFLOW_BENCH_S3``, default
   ``http://127.0.0.1:19000/camflow-bench-recordings``; everything written is deleted after).
2. The edge application (``edge.app.build_app``, a real TCP server) answers, ``--repeats``
   times each, over HTTP (aiohttp client): the whole listing, one day's listing, a one-hour VOD
   playlist (``/vod/{stream}.m3u8``) and a one-hour VOD master. Median and p95 wall time, and
   the store requests each query made (a counting store wrapper: the stream's index keys only).
3. The same queries on the same store with the day summaries hidden (the reader then reads the
   chunks, as before they existed): ``--legacy-repeats`` times, and the ratio before/after.
4. Peer (``../shared/peers/mediamtx``): its playback server's ``/list`` over a recording
   directory of ``--peer-days`` days of 2 s fMP4 segments it recorded itself (one real segment
   copied under each 2 s file name, ``bench.recordings_peer``), against camflow's listing of one
   day of its 30-day index. Its ``/list`` holds every file of the path open at once: past the
   process's open-file limit (``ulimit -n``, 20000 here, so 0.46 days of 2 s segments) it answers 500
   "too many open files", hence the default of 0.4 days.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import median, print_table
from bench.recordings_peer import compare_mediamtx
from bench.results import record
from camflow.errors import CamflowError
from camflow.hls.dates import format_date_time
from camflow.keys import recording_days_prefix, stream_prefix
from camflow.store import FileStore, Store
from camflow.store.base import ObjectInfo, StoreWrapper
from camflow.store.s3 import S3Location, S3Store
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from tests import defaults
from tests.recording_synth import START, synthesise

STREAM = "cam1"
SECRET = b"bench-recordings-secret-0123456789"
DEFAULT_S3 = "http://127.0.0.1:19000/camflow-bench-recordings"
INDEX_KEYS = (f"streams/{STREAM}/recordings/", f"streams/{STREAM}/recording-days/")


class CountingStore(StoreWrapper):
    """Counts the store calls on the stream's index (chunks and day summaries) by operation (the
    edge's catalog polls the store too: not counted);
    ``hide_summaries`` makes the day summaries invisible (the reader then reads the chunks)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.hide_summaries = False

    def _count(self, op: str, key: str) -> None:
        if key.startswith(INDEX_KEYS):
            self.calls[op] += 1

    async def list(self, prefix: str) -> list[str]:
        self._count("list", prefix)
        if self.hide_summaries and prefix == recording_days_prefix(STREAM):
            return []
        return await self.inner.list(prefix)

    async def get(self, key: str) -> bytes:
        self._count("get", key)
        return await self.inner.get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        self._count("head", key)
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._count("put", key)
        await self.inner.put(key, data, content_type)

    async def delete(self, key: str) -> None:
        self._count("delete", key)
        await self.inner.delete(key)

    def take(self) -> Counter[str]:
        calls, self.calls = self.calls, Counter()
        return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def iso(t: float) -> str:
    return format_date_time(t)


def queries(days: float) -> dict[str, str]:
    day = START - 0.25 + 10 * 86400 if days > 11 else START - 0.25
    hour = START + days * 86400 / 2 + 1234.5  # mid-recording, not on a bucket boundary
    span = f"start={iso(hour)}&end={iso(hour + 3600)}"
    return {
        f"listing {days:g} days": f"/api/streams/{STREAM}/recordings",
        "listing one day": f"/api/streams/{STREAM}/recordings?start={iso(day)}&end={iso(day + 86400)}",
        "VOD playlist 1 h": f"/vod/{STREAM}.m3u8?{span}",
        "VOD master 1 h": f"/vod/{STREAM}/master.m3u8?{span}",
    }


async def serve(store: Store) -> tuple[web.AppRunner, int]:
    """The edge application over ``store`` on a free port."""
    runner = web.AppRunner(build_app(store, TokenSigner(SECRET), **defaults.edge_app()), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def measure(
    inner: Store, days: float, repeats: int, legacy_repeats: int
) -> list[tuple[str, str, float, float, str, int, float]]:
    """(query, mode, median ms, p95 ms, requests per query, body bytes, median legacy/summaries).

    Two edges over the same store: one reads the day summaries, the other cannot see them (so its
    reader reads the chunks, as before they existed)."""
    stores = {"summaries": CountingStore(inner), "chunks (before)": CountingStore(inner)}
    stores["chunks (before)"].hide_summaries = True
    servers = {mode: await serve(store) for mode, store in stores.items()}
    token = TokenSigner(SECRET).issue(STREAM, Action.VIEW, 86_400)
    rows: list[tuple[str, str, float, float, str, int, float]] = []
    try:
        async with aiohttp.ClientSession() as http:

            async def once(mode: str, path: str) -> tuple[float, Counter[str], int]:
                port, store = servers[mode][1], stores[mode]
                url = f"http://127.0.0.1:{port}{path}{'&' if '?' in path else '?'}token={token}"
                store.take()
                began = time.perf_counter()
                async with http.get(url) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise CamflowError(f"{path}: {resp.status} {body[:200]!r}")
                return time.perf_counter() - began, store.take(), len(body)

            for name, path in queries(days).items():
                results: dict[str, list[float]] = {}
                for mode, n in (("summaries", repeats), ("chunks (before)", legacy_repeats)):
                    if n <= 0:
                        continue
                    await once(mode, path)  # warm up (connection, imports)
                    times, calls, size = [], Counter[str](), 0
                    for _ in range(n):
                        took, calls, size = await once(mode, path)
                        times.append(took * 1000)
                    results[mode] = times
                    per_query = " ".join(f"{op} {count}" for op, count in sorted(calls.items()))
                    ratio = median(times) / median(results["summaries"]) if mode != "summaries" else 1.0
                    rows.append((name, mode, median(times), p95(times), per_query, size, ratio))
    finally:
        for runner, _ in servers.values():
            await runner.cleanup()
    return rows


async def s3_store() -> S3Store | None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "camflow")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "camflow-secret")
    url = os.environ.get("CAMFLOW_BENCH_S3", DEFAULT_S3)
    store = S3Store(S3Location.parse(url))
    try:
        await asyncio.wait_for(store.start(), 10)
    except Exception as exc:
        print(f"MinIO at {url} not reachable ({exc!r}): S3 measured no further\n")
        return None
    return store


async def empty(store: Store) -> float:
    began = time.perf_counter()
    keys = await store.list(stream_prefix(STREAM))
    for i in range(0, len(keys), 64):
        await asyncio.gather(*(store.delete(k) for k in keys[i : i + 64]))
    return time.perf_counter() - began


async def bench_store(label: str, store: Store, args: argparse.Namespace) -> list[Any]:
    await empty(store)
    counting = CountingStore(store)
    made = await synthesise(counting, STREAM, args.days)
    writes = counting.take()
    print(
        f"{label}: synthesised {made.segments} segments ({len(made.epochs)} epochs) in {made.seconds:.1f} s, "
        f"store calls {dict(writes)}",
        flush=True,
    )
    rows = await measure(store, args.days, args.repeats, args.legacy_repeats)
    print_table(
        ["query", "index read", "median ms", "p95 ms", "store requests per query", "bytes", "x slower"],
        rows,
        title=f"{label}, {args.days:g} days, {args.repeats} queries each (load {os.getloadavg()[0]:.1f})",
    )
    return rows


def figures(label: str, rows: list[Any]) -> dict[str, float | int]:
    """The summaries' median and p95 per query, as ``{label}_{query}_ms`` / ``..._p95_ms``."""
    found: dict[str, float | int] = {}
    for name, mode, mid, high, *_ in rows:
        if mode == "summaries":
            slug = re.sub(r"[^a-z0-9]+", "_", f"{label} {name}".lower()).strip("_")
            found |= {f"{slug}_ms": mid, f"{slug}_p95_ms": high}
    return found


async def main(args: argparse.Namespace) -> None:
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-recordings-") as tmp:
        store = FileStore(Path(tmp))
        await store.start()
        rows = await bench_store("FileStore", store, args)
        measured = figures("filestore", rows)
        if not args.no_peer:
            day = next((r[2] for r in rows if r[0] == "listing one day" and r[1] == "summaries"), None)
            try:
                await compare_mediamtx(Path(tmp), args.peer_days, day, args.peer_repeats)
            except Exception as exc:  # the peer's failure is a finding, not the end of the run
                print(f"peer mediamtx failed: {exc}\n", flush=True)
    if not args.no_s3:
        s3 = await s3_store()
        if s3 is not None:
            try:
                measured |= figures("minio", await bench_store("MinIO (S3Store)", s3, args))
            finally:
                took = await empty(s3)
                print(f"MinIO: bench objects deleted in {took:.1f} s")
                await s3.close()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    record("recordings", {"days": args.days, **measured})


def run(args: argparse.Namespace) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench recordings")
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--legacy-repeats", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--peer-days", type=float, default=0.4)
    parser.add_argument("--peer-repeats", type=int, default=3)
    opts = parser.parse_args(args.rest)
    asyncio.run(main(opts))
