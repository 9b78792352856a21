"""Live latency in a browser, camflow against mediamtx's LL-HLS, in one run (issue 15).

``python -m bench latency [-- --seconds 60 --rung 360p --only embedded,rung,nginx,kafka,mediamtx]``

Every target gets the same camera, ffmpeg pushing RTSP (720p30 testsrc2, 2 s GOP, libx264
``-tune zerolatency``, AAC; tests/latency_probe.py), and the same viewer: headless Chromium with
camflow's player (hls.js, ``lowLatencyMode``), which joins after the stream has been live for a few
seconds, plays for a warm-up, then samples the wall clock minus the program date-time on screen every
250 ms for ``--seconds``. One target at a time, each on its own ports:

- mediamtx (../shared/peers/mediamtx, or $CAMFLOW_PEERS): its default LL-HLS (200 ms parts);
- camflow embedded (`camflow run --ladder source,RUNG`): the source rendition, the encoded rung
  (the page's ``?rendition=``), and the source through nginx (deploy/cdn/nginx.conf);
- camflow as four services on Kafka + MinIO: the shared ones named by CAMFLOW_TEST_KAFKA /
  CAMFLOW_TEST_S3 (as `make test` exports them), else a Kafka and a MinIO of the bench's own
  (scripts/kafka.sh, scripts/minio.sh on ports 39092 / 39000), stopped after.

Prints p50 / p95 per target, the ratio of each p50 to mediamtx's, stalls, whether the playlist was
LL-HLS, the issue's targets, and the load average before and after. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import print_table
from bench.results import record
from tests.latency_probe import TICK_S, WARMUP_S, Latency, measure, pushing
from tests.latency_targets import (
    PREROLL_S,
    camflow_playlist,
    camflow_publish,
    camflow_watch,
    cdn,
    embedded,
    kafka_minio,
    mediamtx,
    mediamtx_path,
    via,
    wait_playlist,
)

GROUPS = ("mediamtx", "embedded", "rung", "nginx", "kafka")
# Issue 15's targets for the p50 (mediamtx measured 0.67 s when the issue was written).
TARGETS = {"embedded source": 1.0, "kafka+minio source": 1.5, "nginx source": 1.5}
RUNG_TARGET = 2.5


def parse(rest: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench latency --")
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling per target (>= 60 for figures)")
    parser.add_argument("--rung", default="360p", help="the encoded rung beside source (a --ladder entry)")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated targets of {GROUPS} (default: all)"
    )
    opts = parser.parse_args(rest)
    opts.only = [g.strip() for g in opts.only.split(",") if g.strip()]
    unknown = [g for g in opts.only if g not in GROUPS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}: expected some of {GROUPS}")
    if opts.seconds < 5:
        parser.error(f"--seconds {opts.seconds:g} is too short: expected 5 or more (60 for figures)")
    return opts


def playlist_kind(url: str) -> str:
    """'LL' when the media playlist at ``url`` lists parts, else 'plain' ('?' when it cannot be read)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode(errors="replace")
    except OSError:
        return "?"
    if "#EXT-X-STREAM-INF" in text:  # a master (mediamtx's index.m3u8): its first variant
        first = next(line for line in text.splitlines() if line and not line.startswith("#"))
        return playlist_kind(urllib.parse.urljoin(url, first))
    return "LL" if "#EXT-X-PART-INF" in text else "plain"


class Run:
    def __init__(self, opts: argparse.Namespace, work: Path) -> None:
        self.opts, self.work = opts, work
        self.results: list[tuple[Latency, str]] = []
        self.failed: dict[str, str] = {}

    async def one(self, name: str, url: str, playlist_url: str, playlist: bool = False) -> None:
        kind = playlist_kind(playlist_url)
        print(f"  {name}: measuring {self.opts.seconds:g} s ({kind} playlist)", flush=True)
        try:
            result = await measure(
                url, self.opts.seconds, self.work / name.replace(" ", "-"), target=name, playlist=playlist
            )
        except Exception as exc:
            self.failed[name] = str(exc)[:300]
            print(f"  {name}: FAILED {exc}", flush=True)
            return
        print(f"  {result.summary()}", flush=True)
        self.results.append((result, kind))

    async def group(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        if name not in self.opts.only:
            return
        started = time.monotonic()
        try:
            await body()
        except Exception as exc:  # a target that cannot start: said, and the others still run
            self.failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"  {name}: FAILED to start: {exc}\n{traceback.format_exc(limit=3)}", flush=True)
        print(f"  ({name}: {time.monotonic() - started:.0f} s)", flush=True)

    async def peer(self) -> None:
        exe = mediamtx_path()
        if exe is None:
            self.failed["mediamtx"] = "not found in ../shared/peers (or $CAMFLOW_PEERS): camflow alone"
            print(f"  mediamtx: {self.failed['mediamtx']}", flush=True)
            return
        with (
            mediamtx(self.work / "mediamtx", exe) as (publish, play),
            pushing(publish, self.work / "push-mtx.log"),
        ):
            wait_playlist(play)
            await self.one("mediamtx", play, play, playlist=True)

    async def camflow_embedded(self) -> None:
        wanted = [g for g in ("embedded", "rung", "nginx") if g in self.opts.only]
        ladder = f"source,{self.opts.rung}" if "rung" in wanted else "source"
        with (
            embedded(self.work / "embedded", ladder) as cf,
            pushing(camflow_publish(cf), self.work / "push-emb.log"),
        ):
            wait_playlist(camflow_playlist(cf))
            if "embedded" in wanted:
                await self.one("embedded source", camflow_watch(cf), camflow_playlist(cf))
            if "rung" in wanted:
                r = self.opts.rung
                await self.one(f"embedded {r}", camflow_watch(cf, r), camflow_playlist(cf, r))
            if "nginx" in wanted:
                with cdn(self.work, cf.http_port) as port:
                    page, media = via(camflow_watch(cf), port), via(camflow_playlist(cf), port)
                    await self.one("nginx source", page, media)

    async def camflow_services(self) -> None:
        with (
            kafka_minio(self.work / "services", start_own=True) as d,
            pushing(d.publish_url(), self.work / "push-kafka.log"),
        ):
            b = d.backends
            print(f"  kafka+minio: Kafka {b.bootstrap}, MinIO {b.s3_url}", flush=True)
            media = d.http(f"/live/{d.stream}/source.m3u8")
            wait_playlist(media)
            page = d.http(f"/watch/{d.stream}?rendition=source&transport=hls")
            await self.one("kafka+minio source", page, media)


async def _main(opts: argparse.Namespace, work: Path) -> None:
    run = Run(opts, work)
    before = os.getloadavg()
    print(
        f"each target: join {PREROLL_S:g} s after its playlist appears, {WARMUP_S:g} s warm-up, then "
        f"{opts.seconds:g} s sampled every {TICK_S * 1000:.0f} ms; load average before {_load(before)} "
        f"({os.cpu_count()} cores)",
        flush=True,
    )
    await run.group("mediamtx", run.peer)
    await run.group("embedded", run.camflow_embedded)  # also the rung and nginx
    if "embedded" not in opts.only and {"rung", "nginx"} & set(opts.only):
        await run.group(next(g for g in ("rung", "nginx") if g in opts.only), run.camflow_embedded)
    await run.group("kafka", run.camflow_services)
    after = os.getloadavg()
    peer = next((r.p50 for r, _ in run.results if r.target == "mediamtx"), None)
    rows = []
    for r, kind in run.results:
        goal = TARGETS.get(r.target, RUNG_TARGET if r.target.startswith("embedded ") else None)
        rows.append(
            [
                r.target,
                kind,
                round(r.p50, 2),
                round(r.p95, 2),
                len(r.samples),
                r.stalls,
                r.seeks,
                f"{r.p50 / peer:.2f}x" if peer else "-",
                f"<= {goal:g}" if goal else "-",
                ("yes" if r.p50 <= goal else "NO") if goal else "-",
            ]
        )
    rows += [
        [name, "-", "-", "-", 0, "-", "-", "-", "-", f"failed: {why[:60]}"]
        for name, why in run.failed.items()
    ]
    print_table(
        [
            "target",
            "playlist",
            "p50 s",
            "p95 s",
            "samples",
            "stalls",
            "seeks",
            "p50/mediamtx",
            "issue p50",
            "met",
        ],
        rows,
        title=f"latency behind the camera clock, {opts.seconds:g} s per target",
    )
    print(f"load average before {_load(before)}, after {_load(after)}")
    figures: dict[str, float | int] = {}
    for r, _kind in run.results:
        slug = re.sub(r"[^a-z0-9]+", "_", r.target.lower()).strip("_")
        figures |= {f"{slug}_p50_s": r.p50, f"{slug}_p95_s": r.p95, f"{slug}_stalls": r.stalls}
    if figures:
        record("latency", figures)


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in avg)


def run(args: argparse.Namespace) -> None:
    opts = parse(list(args.rest))
    with tempfile.TemporaryDirectory(prefix="camflow-bench-latency-") as tmp:
        asyncio.run(_main(opts, Path(tmp)))
