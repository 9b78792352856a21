"""`python -m tests.chaos [--scenarios a,b] [--work DIR]`: every scenario (or those named) on real
Kafka and MinIO started here through scripts/kafka.sh and scripts/minio.sh (their own ports and run
directory; 3 brokers / 4 drives only for the scenarios that need them), then one table and a JSON
report. Exits 1 when a scenario lost more than it is allowed (ingest SIGKILL: the segment in hand;
every other: nothing), repeated a segment, or a service did not drain cleanly on SIGTERM."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path

from tests.process import make_clip

from .backends import ROOT, Backends
from .scenarios import SCENARIOS, SEGMENT, Result, Scenario, run

NOTE = (
    f"segments of {SEGMENT:g} s; recorded = the VOD playlist over the push's time range; media s = seconds"
    " pushed/recorded; recovery = from the fault's end (a signal: its sending) until the live playlist"
    " listed newer media"
)


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    """The table's header and one row a result."""
    head: tuple[str, ...] = ("scenario", "pushed", "recorded", "lost", "duplicated", "recovery s", "media s")
    out = [(*head, "sessions", "result")]
    for r in results:
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        lost = f"{r.lost} (<= {r.allowed_lost})" if r.allowed_lost else str(r.lost)
        media = f"{r.pushed_s:.1f}/{r.recorded_s:.1f}"
        verdict = "ok" if r.passed else "FAIL" + (f": {r.error.splitlines()[-1][:60]}" if r.error else "")
        if r.unclean_exits:
            verdict += f" exits {r.unclean_exits}"
        out.append((r.scenario, str(r.pushed), str(r.recorded), lost, str(r.duplicated), recovery, media,
                    str(r.sessions), verdict))  # fmt: skip
    return out


def table(results: list[Result]) -> str:
    """Aligned columns, for the terminal."""
    cells = rows(results)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({NOTE})"


def markdown(results: list[Result]) -> str:
    """The same table in Markdown, for docs/reliability.md."""
    cells = rows(results)
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + " --- |" * len(cells[0]))
    return "\n".join(lines) + "\n"


def failed(scenario: Scenario, error: str) -> Result:
    """The row of a scenario that could not run to its end: it fails, whatever camflow did."""
    return Result(scenario.name, 0.0, 0.0, 0, None, scenario.allowed_lost, 0, (), {}, error)


def run_group(
    backends: Backends, scenarios: list[Scenario], work: Path, clip: Path, *, ladder: str = "source"
) -> list[Result]:
    """``scenarios`` one after another on ``backends`` (started here, stopped here whatever happens;
    started again after a scenario that broke off, so the next one finds them whole)."""
    results: list[Result] = []
    backends.start()
    try:
        for scenario in scenarios:
            started = time.monotonic()
            print(f"chaos: {scenario.name}: {scenario.what}, {scenario.push:g} s push ...", flush=True)
            try:
                result = run(scenario, backends, work / scenario.name, clip, ladder=ladder)
            except Exception:
                result = failed(scenario, traceback.format_exc())
                print(result.error, file=sys.stderr, flush=True)
                backends.stop()
                backends.start()
            results.append(result)
            print(f"chaos: {scenario.name}: {'ok' if result.passed else 'FAIL'} {result.report()} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    finally:
        backends.stop()
    return results


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    names = [s.name for s in SCENARIOS]
    p.add_argument("--scenarios", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    p.add_argument("--push", type=float, default=None, help="override every scenario's push seconds")
    p.add_argument("--work", type=Path, default=None, help="keep logs here (default: a temporary directory)")
    p.add_argument("--report", type=Path, default=Path("build/chaos/report.json"))
    p.add_argument(
        "--ladder",
        default="source",
        help="the transcoder's --ladder (default source: stream copy; e.g. 360p,240p to encode rungs)",
    )
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(names)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in SCENARIOS if s.name in set(args.scenarios.split(","))]
    if args.push is not None:
        chosen = [replace(s, push=args.push) for s in chosen]
    work = args.work or Path(tempfile.mkdtemp(prefix="camflow-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "clip.mp4", 30, size="640x360")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {"started": started, "commit": commit(), "ladder": args.ladder}  # what runs
    results: list[Result] = []

    def shape(s: Scenario) -> tuple[int, int]:
        return (s.brokers, s.drives)

    for (brokers, drives), group in groupby(sorted(chosen, key=shape), key=shape):
        backends = Backends(work / f"run-{brokers}b{drives}d", brokers=brokers, drives=drives)
        results += run_group(backends, list(group), work, clip, ladder=args.ladder)
    results.sort(key=lambda r: names.index(r.scenario))
    print(table(results))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({**meta, "results": [r.report() for r in results]}, indent=2) + "\n")
    args.report.with_suffix(".md").write_text(markdown(results))
    print(f"chaos: report in {args.report} (and {args.report.with_suffix('.md').name}), logs in {work}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
