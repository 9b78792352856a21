"""Benchmarks: ``python -m bench [NAME ...]`` runs every ``bench/bench_*.py`` module (or the named ones).

Each module has ``run(args: argparse.Namespace) -> None`` and prints a small table with
``print_table``; ``args.rest`` holds the arguments after ``--``, for the module to parse.
Benchmarks measure; they never assert (tests do not time things).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> None:
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if title:
        print(title)
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(flush=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def cache_dir() -> Path:
    """Where benchmarks keep generated media between runs (``CAMFLOW_CACHE``, default ~/.cache/camflow)."""
    root = Path(os.environ.get("CAMFLOW_CACHE", Path.home() / ".cache" / "camflow")) / "bench"
    root.mkdir(parents=True, exist_ok=True)
    return root
