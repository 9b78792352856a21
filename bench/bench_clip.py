"""Clip export: how many seconds of recorded video the edge's ``/clip/{stream}.mp4`` exports per
wall second, downloaded by curl, against mediamtx's playback ``/get`` of the same span.

``python -m bench clip [-- --minutes 10 --repeats 3 --no-peer]``:

1. A 640x360 30 fps H.264 clip (1 Mb/s, 2 s GOP) with 48 kHz AAC, ``--minutes`` long (made once,
   cached under ``~/.cache/camflow/bench``), cut by FFmpeg's HLS muxer into 2 s fMP4 segments of
   its video and of its audio, written into a FileStore as one epoch's ``source`` and ``audio``
   renditions with their recording index (what the transcoder and packager leave);
2. the edge application over that store (a real TCP server) exports the whole span, curl
   downloads it ``--repeats`` times: median wall seconds, media seconds per wall second, MB/s;
3. the peer: mediamtx records 9 s of the same clip, one of its 2 s segments is copied under every
   file name of the span (``bench.recordings_peer``), and curl downloads mediamtx's ``/get`` of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench import cache_dir, median, print_table
from bench.bench_recordings import serve
from bench.recordings_peer import PEER, SEGMENT, START, copies, mediamtx, recorded_segment
from bench.results import record
from camflow.hls.dates import format_date_time
from camflow.keys import init_key, segment_key
from camflow.recordings import IndexChunk, RecordedRendition, RecordedSegment, bucket_of, chunk_key
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner

STREAM, EPOCH = "cam1", "20261101T000000000Z"
SECRET = b"bench-recordings-secret-0123456789"  # bench_recordings.serve's signing secret


def source_clip(minutes: float) -> Path:
    path = cache_dir() / f"clip-640x360-{minutes:g}min.mp4"
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(minutes * 60),
             "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1M", "-g", "60", "-keyint_min", "60",
             "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(path)],
            check=True, timeout=1800,
        )  # fmt: skip
    return path


def cut(clip: Path, folder: Path, track: str) -> tuple[bytes, list[bytes]]:
    folder.mkdir(parents=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(clip), "-map", f"0:{track}", "-c", "copy", "-f", "hls",
         "-hls_segment_type", "fmp4", "-hls_time", str(SEGMENT), "-hls_list_size", "0",
         "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", str(folder / "%05d.m4s"),
         str(folder / "index.m3u8")],
        check=True, timeout=600,
    )  # fmt: skip
    return (folder / "init.mp4").read_bytes(), [p.read_bytes() for p in sorted(folder.glob("*.m4s"))]


async def recording(clip: Path, work: Path) -> tuple[FileStore, float]:
    """The clip as one epoch of a camflow recording in a FileStore; its media seconds."""
    store = FileStore(work / "store")
    await store.start()
    video = cut(clip, work / "v", "v")
    audio = cut(clip, work / "a", "a")
    count = min(len(video[1]), len(audio[1]))
    renditions = [
        RecordedRendition("source", 640, 360, "avc1.42c01e", 1_100_000, 30.0),
        RecordedRendition("audio", 0, 0, "mp4a.40.2", 70_000),
    ]
    chunks: dict[int, IndexChunk] = {}
    for name, (init, media) in (("source", video), ("audio", audio)):
        await store.put(init_key(STREAM, EPOCH, name), init)
        for seq in range(count):
            await store.put(segment_key(STREAM, EPOCH, name, seq), media[seq])
    for seq in range(count):
        t = START + seq * SEGMENT
        chunk = chunks.setdefault(bucket_of(t), IndexChunk(STREAM, EPOCH, bucket_of(t)))
        chunk.add(RecordedSegment(seq, t, SEGMENT, ("source", "audio")), renditions)
    for chunk in chunks.values():
        await store.put(chunk_key(chunk), chunk.render(), "application/json")
    return store, count * SEGMENT


def curl(url: str) -> int:
    """The bytes of one download (curl, body to /dev/null)."""
    done = subprocess.run(
        ["curl", "-sS", "-o", os.devnull, "-w", "%{http_code} %{size_download}", url],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    code, size = [*done.stdout.split(), "", ""][:2]
    if done.returncode != 0 or code != "200":
        raise RuntimeError(f"{url}: {code} {done.stderr}")
    return int(size)


def timed(url: str, repeats: int) -> tuple[float, int]:
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        size = curl(url)
        runs.append(time.perf_counter() - began)
    return median(runs), size


def peer_segment(clip: Path, work: Path) -> bytes:
    """One complete 2 s segment mediamtx recorded of the first 9 s of ``clip``."""
    short = work / "nine.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(clip), "-t", "9", "-c", "copy", str(short)], check=True
    )
    return recorded_segment(short, work)


async def main(opts: argparse.Namespace) -> None:
    clip = await asyncio.to_thread(source_clip, opts.minutes)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="camflow-bench-clip-") as tmp:
        work = Path(tmp)
        store, media = await recording(clip, work)
        runner, port = await serve(store)
        try:
            view = TokenSigner(SECRET).issue(STREAM, Action.VIEW, 3600)
            span = f"start={format_date_time(START)}&end={format_date_time(START + media)}"
            url = f"http://127.0.0.1:{port}/clip/{STREAM}.mp4?{span}&token={view}"
            wall, size = await asyncio.to_thread(timed, url, opts.repeats)
            rates = [media / wall]
            rows.append(["camflow /clip", media, wall, media / wall, size / wall / 1e6])
        finally:
            await runner.cleanup()
        if not opts.no_peer and PEER.exists():
            segment = await asyncio.to_thread(peer_segment, clip, work)
            await asyncio.to_thread(copies, segment, work / "peer", int(media / SEGMENT))
            with mediamtx(work, work / "peer", record=False) as (_, playback):  # type: ignore[misc]
                query = f"path=cam1&start={format_date_time(START)}&duration={media:g}"
                wall, size = await asyncio.to_thread(
                    timed, f"http://127.0.0.1:{playback}/get?{query}", opts.repeats
                )
            rates.append(media / wall)
            rows.append(["mediamtx /get", media, wall, media / wall, size / wall / 1e6])
    if len(rates) == 2:
        rows.append(["camflow / mediamtx", "", "", f"{rates[0] / rates[1]:.3g}x", ""])
    print_table(
        ["export", "media s", "wall s (median)", "media s / wall s", "MB/s"],
        rows,
        title=f"clip export, curl, {opts.repeats} downloads each (load {os.getloadavg()[0]:.1f})",
    )
    measured = {"media_s_per_wall_s": rates[0]}
    if len(rates) == 2:
        measured["mediamtx_media_s_per_wall_s"] = rates[1]
    record("clip", measured)


def run(args: argparse.Namespace) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench clip")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true")
    opts = parser.parse_args(args.rest)
    asyncio.run(main(opts))
