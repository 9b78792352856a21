"""The figures a benchmark measured, kept for ``bench/capacity.py`` and DESIGN.md.

Each benchmark's ``run`` ends with ``record(NAME, {...})``: its headline figures (plain numbers,
named with their unit) go to ``bench/results.json`` under the benchmark's name, with when, on how
many cores, under what load and at which commit they were measured. A run replaces that
benchmark's entry only, so the file holds the latest run of each. ``CAMFLOW_BENCH_RESULTS`` names
another file (a test, a trial run that must not move the committed figures).

The file is committed: the capacity table in DESIGN.md is computed from it (``python
bench/capacity.py``), and a change of the figures shows in review next to the code that moved them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")
VERSION = 1


def results_path() -> Path:
    return Path(os.environ.get("CAMFLOW_BENCH_RESULTS", RESULTS))


def load(path: Path | None = None) -> dict[str, Any]:
    """The recorded runs: {"v": 1, "benches": {name: {"figures": {...}, "measured": ISO, ...}}}."""
    path = path or results_path()
    if not path.exists():
        return {"v": VERSION, "benches": {}}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(doc.get("benches"), dict):
        raise ValueError(f"{path}: not a version {VERSION} results file")
    return doc


def figure(doc: dict[str, Any], bench: str, name: str) -> float:
    """One recorded figure; KeyError naming the benchmark to run when it is missing."""
    try:
        return float(doc["benches"][bench]["figures"][name])
    except KeyError:
        raise KeyError(f"no figure {name!r} of bench {bench!r}: run `make bench BENCH={bench}`") from None


def record(bench: str, figures: dict[str, float | int], path: Path | None = None) -> None:
    """Replace ``bench``'s entry with ``figures`` and the conditions they were measured in."""
    path = path or results_path()
    doc = load(path)
    doc["benches"][bench] = {
        "figures": {k: round(float(v), 6) for k, v in sorted(figures.items())},
        "measured": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),
        "commit": _commit(),
    }
    doc["benches"] = dict(sorted(doc["benches"].items()))
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as out:
        json.dump(doc, out, indent=1)
        out.write("\n")
    os.replace(out.name, path)
    print(f"recorded in {path}: {bench} {doc['benches'][bench]['figures']}", flush=True)


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
