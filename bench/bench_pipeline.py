"""What one camera costs the distributed pipeline, per camera-second: the figures capacity planning
multiplies (``bench/capacity.py``, DESIGN.md).

``python -m bench pipeline [-- --seconds 30 --profiles 1080p4m,720p1m]``

For each camera profile (a 30 fps clip with a 2 s GOP and AAC audio, x264 at the profile's
bitrate), camflow runs as four services on Kafka + MinIO (the shared ones named by
CAMFLOW_TEST_KAFKA / CAMFLOW_TEST_S3, else its own, started and stopped by the bench), with the
default ladder (source copy + the rungs below the source) and LL-HLS on; ffmpeg pushes the clip
over RTSP in real time. Measured over the push:

- CPU seconds per camera-second of each service (its process tree, /proc);
- store calls per camera-second by kind (put, get, list, delete...) and service, from each
  service's own ``/metrics`` (``camflow_store_operation_seconds_count``);
- bus messages and bytes per camera-second by topic: messages from ``/metrics``
  (``camflow_bus_publish_seconds_count``), bytes by reading the run's topics back from Kafka;
- bytes stored per camera-second (the run's objects listed in MinIO at the end): the recording,
  and apart the LL-HLS parts (they live about a minute: the store holds them, not the recording);
- what one Kafka partition takes of this camera's segments through camflow's own publish path
  (``KafkaBus``, acks=all) on this machine's broker: MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer
from minio import Minio

from bench import cache_dir, print_table
from bench.bench_edge import cpu_seconds, process_tree
from bench.results import record
from camflow.bus.kafka import KafkaBus
from camflow.events import TOPIC_RAW
from tests.chaos.deployment import Deployment
from tests.latency_targets import kafka_minio

LADDER = "source,720p:2500k,360p:800k"  # the default ladder (transcode.ladder.DEFAULT_LADDER)
PART = re.compile(r"/\d{8}\.\d{3}\.m4s$")
PROFILES = {"1080p4m": ("1920x1080", "4M"), "720p1m": ("1280x720", "1M")}
METRIC = re.compile(
    r'^(camflow_store_operation_seconds_count|camflow_bus_publish_seconds_count)\{(\w+)="([^"]+)"\} (\S+)$'
)


def camera_clip(size: str, bitrate: str, seconds: int) -> Path:
    """A 30 fps camera-like clip (2 s GOP, no B-frames as most cameras, AAC mono), cached."""
    path = cache_dir() / f"pipeline-{size}-{bitrate}-{seconds}s.mp4"
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "60", "-keyint_min", "60",
             "-sc_threshold", "0", "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ac", "1", str(path)],
            check=True, timeout=600,
        )  # fmt: skip
    return path


def scrape(port: int) -> Counter[tuple[str, str]]:
    """(metric, label) -> count from a service's /metrics."""
    found: Counter[tuple[str, str]] = Counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if m := METRIC.match(line):
                found[(m.group(1).split("_")[1], m.group(3))] += int(float(m.group(4)))
    return found


def topic_bytes(bootstrap: str, prefix: str) -> dict[str, tuple[int, int]]:
    """topic (without the run's prefix) -> (messages, key + value bytes), read back from Kafka."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, consumer_timeout_ms=5000, auto_offset_reset="earliest"
    )
    try:
        topics = sorted(t for t in consumer.topics() if t.startswith(prefix))
        consumer.subscribe(topics)
        found: dict[str, tuple[int, int]] = {}
        for message in consumer:
            n, size = found.get(message.topic[len(prefix) :], (0, 0))
            found[message.topic[len(prefix) :]] = (
                n + 1,
                size + len(message.key or b"") + len(message.value or b""),
            )
        return found
    finally:
        consumer.close()


def stored_bytes(d: Deployment) -> dict[str, tuple[int, int]]:
    """ "parts" (LL-HLS parts: deleted a little after they leave the live playlist) and "recording"
    (everything else: segments, init sections, thumbnails, index, playlists) -> (objects, bytes)."""
    b = d.backends
    client = Minio(f"127.0.0.1:{b.minio_port}", access_key=b.user, secret_key=b.password, secure=False)
    found = {"parts": (0, 0), "recording": (0, 0)}
    for o in client.list_objects(b.bucket, prefix=f"{d.run_id}/", recursive=True):
        kind = "parts" if PART.search(str(o.object_name)) else "recording"
        n, size = found[kind]
        found[kind] = (n + 1, size + (o.size or 0))
    return found


async def partition_rate(bootstrap: str, size: int, count: int = 120, in_flight: int = 8) -> float:
    """MB/s camflow's own publish path (KafkaBus, acks=all, idempotent) gets into ONE partition of
    camflow.segments.raw: ``count`` messages of ``size`` bytes under one key, ``in_flight`` at a time."""
    bus = KafkaBus(bootstrap, prefix=f"p{uuid.uuid4().hex[:10]}.")
    await bus.start()
    try:
        payload, gate = os.urandom(size), asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate:
                await bus.publish(TOPIC_RAW, "bench", payload)

        await bus.publish(TOPIC_RAW, "bench", payload)  # metadata, connection
        began = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 300)
        return count * size / (time.monotonic() - began) / 1e6
    finally:
        await bus.close()


def one_profile(name: str, seconds: int, work: Path) -> dict[str, float]:
    size, bitrate = PROFILES[name]
    clip = camera_clip(size, bitrate, seconds)
    with kafka_minio(work / name, ladder=LADDER, start_own=True, metrics=True) as d:
        tree = {s: process_tree(p.pid) for s, p in d.procs.items()}
        cpu0 = {s: cpu_seconds(pids) for s, pids in tree.items()}
        before = {s: scrape(port) for s, port in d.metrics_ports.items()}
        began = time.monotonic()
        subprocess.run(
            ["ffmpeg", "-v", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "rtsp",
             "-rtsp_transport", "tcp", d.publish_url()],
            check=True, timeout=seconds + 60,
        )  # fmt: skip
        time.sleep(6)  # the last segment through transcode and packager
        took = time.monotonic() - began
        tree = {s: process_tree(p.pid) for s, p in d.procs.items()}
        cpu = {s: cpu_seconds(pids) - cpu0[s] for s, pids in tree.items()}
        after = {s: scrape(port) - before[s] for s, port in d.metrics_ports.items()}
        topics = topic_bytes(d.backends.bootstrap, f"c{d.run_id}.")
        stored = stored_bytes(d)
        rate = asyncio.run(partition_rate(d.backends.bootstrap, os.path.getsize(clip) // (seconds // 2)))
    figures: dict[str, float] = {"media_s": float(seconds), "wall_s": took}
    figures["camera_mbps"] = os.path.getsize(clip) * 8 / seconds / 1e6
    for service, used in cpu.items():
        figures[f"cpu_{service}"] = used / seconds
    calls: Counter[str] = Counter()
    for service, counts in after.items():
        for (kind, label), n in counts.items():
            if kind == "store":
                figures[f"store_{service}_{label}"] = n / seconds
                calls[label] += n
    for op, n in calls.items():
        figures[f"store_{op}"] = n / seconds
    for topic, (n, size) in topics.items():
        slug = re.sub(r"[^a-z0-9]+", "_", topic)
        figures[f"bus_{slug}_messages"] = n / seconds
        figures[f"bus_{slug}_bytes"] = size / seconds
    for kind, (n, size) in stored.items():
        figures[f"stored_{kind}_objects"] = n / seconds
        figures[f"stored_{kind}_bytes"] = size / seconds
    figures["kafka_partition_mb_s"] = rate  # one partition, segments of this camera's size
    return figures


def run(args: argparse.Namespace) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    opts = parser.parse_args(args.rest)
    names = opts.profiles.split(",")
    if not 10 <= opts.seconds <= 300 or any(n not in PROFILES for n in names):
        raise SystemExit(f"--seconds 10..300, --profiles from {sorted(PROFILES)}")
    measured: dict[str, float | int] = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for name in names:
            figures = one_profile(name, opts.seconds, Path(tmp))
            print_table(["per camera-second", name], sorted(figures.items()), title=f"camera {name}")
            measured |= {f"{name}_{k}": v for k, v in figures.items()}
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after, {os.cpu_count()} cores")
    record("pipeline", measured)
