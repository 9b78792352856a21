"""`python -m tests.chaos [--scenarios a,b] [--work DIR]`: every scenario (or those named) on real
Kafka and MinIO started here through scripts/kafka.sh and scripts/minio.sh (their own ports and run
directory; 3 brokers / 4 drives only for the scenarios that need them), then one table and a JSON
report. Exits 1 when a scenario lost or repeated a segment beyond what it is allowed."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from itertools import groupby
from pathlib import Path

from tests.process import make_clip

from .backends import Backends
from .scenarios import SCENARIOS, Result, Scenario, run


def table(results: list[Result]) -> str:
    head = ("scenario", "pushed", "recorded", "lost", "repeated", "recovery s", "camera sessions")
    rows: list[tuple[str, ...]] = [head]
    for r in results:
        recovery = "-" if r.recovery is None else f"{r.recovery:.1f}"
        counts = (r.pushed_segments, r.recorded_segments, r.lost_segments, r.repeated)
        rows.append((r.scenario, *map(str, counts), recovery, str(r.sessions)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(segments of 2 s; recorded = the VOD playlist over the push's time range)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    names = [s.name for s in SCENARIOS]
    p.add_argument("--scenarios", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    p.add_argument("--push", type=float, default=None, help="override every scenario's push seconds")
    p.add_argument("--work", type=Path, default=None, help="keep logs here (default: a temporary directory)")
    p.add_argument("--report", type=Path, default=Path("build/chaos/report.json"))
    args = p.parse_args(argv)
    chosen = [s for s in SCENARIOS if s.name in set(args.scenarios.split(","))]
    unknown = set(args.scenarios.split(",")) - set(names)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.push is not None:
        chosen = [replace(s, push=args.push) for s in chosen]
    work = args.work or Path(tempfile.mkdtemp(prefix="camflow-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "clip.mp4", 30, size="640x360")
    results: list[Result] = []

    def shape(s: Scenario) -> tuple[int, int]:
        return (s.brokers, s.drives)

    for (brokers, drives), group in groupby(sorted(chosen, key=shape), key=shape):
        backends = Backends(work / f"run-{brokers}b{drives}d", brokers=brokers, drives=drives)
        backends.start()
        try:
            for scenario in group:
                started = time.monotonic()
                print(f"chaos: {scenario.name}: {scenario.what} ...", flush=True)
                result = run(scenario, backends, work / scenario.name, clip)
                results.append(result)
                print(f"chaos: {scenario.name}: {result} ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            backends.stop()
    results.sort(key=lambda r: names.index(r.scenario))
    print(table(results))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"chaos: report in {args.report}, logs in {work}")
    return 1 if any(r.lost_segments > 1 or r.repeated for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
