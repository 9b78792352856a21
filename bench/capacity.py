"""Capacity of a camera fleet, computed from camflow's own latest benchmark figures.

``python bench/capacity.py [--cameras 1000000] [--viewers 0.02] [--ll-share 0.5] [--retention-days 30]``

Every per-camera figure comes from ``bench/results.json`` (``bench.results``; ``make bench`` writes
it): what one camera costs the distributed pipeline per camera-second (``bench_pipeline``: CPU of
each service, bus messages and bytes by topic, store calls, bytes stored, what one Kafka partition
takes) and what the edge serves per CPU-second (``bench_edge``). This module only multiplies; its
assumptions are its arguments, printed with the table. DESIGN.md quotes its output.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/capacity.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import figure, load

PROFILES = {"720p1m": "720p camera, 1 Mb/s", "1080p4m": "1080p camera, 4 Mb/s"}
DAY = 86_400
BEGIN, END = "<!-- capacity:begin (python bench/capacity.py --write DESIGN.md) -->", "<!-- capacity:end -->"
MEDIA_TOPICS = ("camflow_segments_raw", "camflow_parts_raw")


@dataclass(frozen=True)
class Fleet:
    cameras: int = 1_000_000
    viewers: float = 0.02  # concurrent viewers per camera, fleet average (2 %: 20,000 viewers per million)
    viewers_per_watched: float = 1.25  # viewers of a stream that is watched at all
    ll_share: float = 0.5  # viewers on LL-HLS (the rest: plain HLS)
    part_seconds: float = 0.2
    segment_seconds: float = 2.0
    pops: int = 20  # CDN points of presence that each ask the origin once per object
    retention_days: float = 30.0
    cell_cameras: int = 20_000  # cameras per cell (one Kafka cluster, one set of services)


def rows(doc: dict[str, Any], fleet: Fleet, profile: str) -> list[tuple[str, float, str, str]]:
    """(quantity, value, unit, the figures it comes from) for a fleet of ``profile`` cameras."""

    def f(name: str) -> float:
        return figure(doc, "pipeline", f"{profile}_{name}")

    figures = doc["benches"]["pipeline"]["figures"]
    n = fleet.cameras
    head, tail = f"{profile}_bus_", "_bytes"
    topics = sorted({k[len(head) : -len(tail)] for k in figures if k.startswith(head) and k.endswith(tail)})
    bus_bytes = sum(f(f"bus_{t}_bytes") for t in topics)
    bus_messages = sum(f(f"bus_{t}_messages") for t in topics)
    media_bytes_in = sum(f(f"bus_{t}_bytes") for t in topics if t in MEDIA_TOPICS)
    ops = {k[len(profile) + 7 :]: v for k, v in figures.items() if k.startswith(f"{profile}_store_")}

    def op(*names: str) -> float:  # the totals (store_put), not per service (store_transcode_put)
        return n * sum(ops.get(name, 0.0) for name in names)

    watched = n * fleet.viewers / fleet.viewers_per_watched
    per_viewer = fleet.ll_share * 2 / fleet.part_seconds + (1 - fleet.ll_share) * 2 / fleet.segment_seconds
    origin_requests = min(watched * fleet.pops, n * fleet.viewers) * per_viewer
    # Half of a viewer's requests are playlists, half media (a part or a segment each); a media
    # request costs the edge the bench's segment cost scaled by its bytes (moving bytes dominates).
    camera_bits = f("camera_mbps") * 1e6
    media_bytes = camera_bits / 8 / (per_viewer / 2)
    playlist_cpu = figure(doc, "edge", "playlist_cpu_us") / 1e6
    segment_cpu = figure(doc, "edge", "segment_cpu_us") / 1e6
    media_cpu = segment_cpu * media_bytes / figure(doc, "edge", "segment_bytes")
    recording = f("stored_recording_bytes") * n * DAY
    return [
        ("ingest bandwidth", n * camera_bits / 1e9, "Gb/s", "camera_mbps"),
        ("ingest cores", n * f("cpu_ingest"), "cores", "cpu_ingest"),
        ("transcode cores (default ladder)", n * f("cpu_transcode"), "cores", "cpu_transcode"),
        ("packager cores", n * f("cpu_package"), "cores", "cpu_package"),
        ("Kafka in (all topics)", n * bus_bytes * 8 / 1e9, "Gb/s", "bus_*_bytes"),
        ("Kafka messages", n * bus_messages, "msg/s", "bus_*_messages"),
        (
            "Kafka partitions of the media topics, by throughput",
            math.ceil(n * media_bytes_in / 1e6 / f("kafka_partition_mb_s")),
            "partitions",
            "bus_camflow_segments_raw_bytes, bus_camflow_parts_raw_bytes, kafka_partition_mb_s",
        ),
        ("cells", math.ceil(n / fleet.cell_cameras), f"of {fleet.cell_cameras} cameras", "--cell-cameras"),
        ("Kafka in per cell", fleet.cell_cameras * bus_bytes * 8 / 1e6, "Mb/s", "bus_*_bytes"),
        ("recording stored per day", recording / 1e12, "TB/day", "stored_recording_bytes"),
        (
            f"recording stored, {fleet.retention_days:g} days retention",
            recording * fleet.retention_days / 1e15,
            "PB",
            "stored_recording_bytes",
        ),
        ("store writes (PUT)", op("put"), "req/s", "store_put"),
        ("store reads (GET, HEAD)", op("get", "head"), "req/s", "store_get, store_head"),
        ("store LIST", op("list", "children"), "req/s", "store_list, store_children"),
        # Steady state: every object transcode creates is deleted once (a part about 30 s after it
        # leaves the live playlist, a recording's objects at the retention); the packager's PUTs
        # rewrite playlists in place. A short run sees few deletes, so they come from the creates.
        ("store DELETE, steady state", op("transcode_put"), "req/s", "store_transcode_put"),
        ("viewers", n * fleet.viewers, "viewers", "--viewers"),
        ("CDN egress", n * fleet.viewers * camera_bits / 1e9, "Gb/s", "camera_mbps (the source rendition)"),
        ("viewer requests at the CDN", n * fleet.viewers * per_viewer, "req/s", "--ll-share, --part-seconds"),
        ("origin (edge) requests", origin_requests, "req/s", "--pops, --viewers-per-watched"),
        ("edge cores", origin_requests / 2 * (playlist_cpu + media_cpu), "cores", "edge *_cpu_us"),
    ]


def table(doc: dict[str, Any], fleet: Fleet) -> str:
    """The markdown table of every profile side by side, and where its figures come from."""
    measured = doc["benches"].get("pipeline", {}).get("figures", {})
    by_profile = {p: rows(doc, fleet, p) for p in PROFILES if f"{p}_camera_mbps" in measured}
    if not by_profile:
        raise KeyError("no camera profile in the pipeline figures: run `make bench BENCH=pipeline`")
    first = next(iter(by_profile.values()))
    lines = [
        "| quantity | " + " | ".join(PROFILES[p] for p in by_profile) + " | unit | from |",
        "| --- | " + " | ".join("---" for _ in by_profile) + " | --- | --- |",
    ]
    for i, (name, _, unit, source) in enumerate(first):
        values = " | ".join(_fmt(r[i][1]) for r in by_profile.values())
        lines.append(f"| {name} | {values} | {unit} | {source} |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def measured_on(doc: dict[str, Any]) -> str:
    runs = doc["benches"]
    return "; ".join(
        f"{name}: {runs[name]['measured']} at {runs[name].get('commit') or '?'}, "
        f"{runs[name]['cores']} cores, load {runs[name]['load']}"
        for name in ("pipeline", "edge")
        if name in runs
    )


def main(argv: list[str] | None = None) -> int:
    defaults = Fleet()
    parser = argparse.ArgumentParser(prog="python bench/capacity.py", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None, help="default: bench/results.json")
    parser.add_argument("--write", type=Path, default=None, help="also put the table into this page")
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    fleet = Fleet(**{k: getattr(args, k) for k in vars(defaults)})
    doc = load(args.results)
    conditions = f"fleet: {fleet}\nfigures: {measured_on(doc)}"
    rendered = table(doc, fleet)
    print(f"{conditions}\n\n{rendered}")
    if args.write:
        write_into(args.write, f"```text\n{conditions}\n```\n\n{rendered}")
    return 0


def write_into(path: Path, text: str) -> None:
    """Replace what stands between the capacity markers of ``path`` (DESIGN.md) with ``text``."""
    head, begun, rest = path.read_text().partition(BEGIN)
    _, ended, tail = rest.partition(END)
    if not (begun and ended):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to write the table into")
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
