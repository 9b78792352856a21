"""Ingest's spool alone: how many segments a second it makes durable and delivers.

``python -m bench.spool_write [--streams 50] [--segments 20] [--kb 250] [--dir PATH]``: ``--streams``
lanes each publish ``--segments`` segments of ``--kb`` kB through ``SpooledBus`` (file written,
fsync'ed, renamed, directory fsync'ed, as ``camflow ingest`` does) in front of an in-process bus,
and prints the records spooled and delivered per second. ``--dir`` should be on the disk the
spool will use (default: a temporary directory under the bench cache).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from pathlib import Path

from bench import cache_dir
from camflow.bus import LocalBus
from camflow.events import TOPIC_RAW
from ingest.media.spooled_bus import SpooledBus


async def run(root: Path, streams: int, segments: int, size: int) -> None:
    bus = LocalBus(queue_size=streams * segments + 1)
    await bus.subscribe([TOPIC_RAW], "bench")
    spooled = SpooledBus(bus, directory=root, max_bytes=2 * streams * segments * size + (1 << 20))
    await spooled.start()
    data = os.urandom(size)

    async def lane(stream: int) -> None:
        for seq in range(segments):
            await spooled.publish(TOPIC_RAW, f"s{stream}/e/{seq}", data)

    started = time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(streams)))
    spooling = time.perf_counter() - started
    await spooled.drain(300)
    total = time.perf_counter() - started
    await spooled.close()
    count = streams * segments
    print(
        f"{count} segments of {size // 1000} kB from {streams} streams: spooled {count / spooling:.0f}/s, "
        f"delivered {count / total:.0f}/s ({count * size / total / 1e6:.0f} MB/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spool_write", description=__doc__)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--kb", type=int, default=250, help="segment size, kB (250: 1 Mb/s, 2 s)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = args.dir or cache_dir() / "spool-bench"
    shutil.rmtree(root, ignore_errors=True)
    try:
        asyncio.run(run(root, args.streams, args.segments, args.kb * 1000))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
