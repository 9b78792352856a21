"""``python -m tests.fuzz``: run fuzz targets, each in its own process, and print one table.

Each target runs under atheris (``tests.fuzz.worker``) for ``--runs`` inputs (``FUZZ_RUNS``,
100000), at most ``--max-time`` seconds (``FUZZ_MAX_TIME``, 600); ``--jobs`` (``FUZZ_JOBS``, 2) run at
once. A finding (an exception the target does not allow, a hang, running out of memory) leaves its
input in ``CORPUS/TARGET/crash-*`` (or ``timeout-*``, ``oom-*``) and the log beside it. Exit status 1
when any target had a finding or ran fewer inputs than asked.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
_DONE = re.compile(r"^Done (\d+) runs in", re.M)
_PROGRESS = re.compile(r"^#(\d+)\s", re.M)


@dataclass(frozen=True)
class Result:
    target: str
    runs: int
    seconds: float
    findings: list[Path]
    returncode: int
    log: Path

    def ok(self, wanted: int) -> bool:
        return not self.findings and self.returncode == 0 and self.runs >= wanted


def worker_name(name: str) -> str:
    """``MODULE:NAME``: the worker imports (and instruments) only the module of the target."""
    from tests.fuzz.targets import TARGETS

    return f"{TARGETS[name].run.__module__}:{name}"


def run_target(
    name: str,
    corpus: Path,
    runs: int,
    max_time: int,
    *,
    seed: int | None = None,
    timeout: int = 20,
    extra: tuple[str, ...] = (),
) -> Result:
    """``name`` under the worker for ``runs`` inputs (or ``max_time`` s); its inputs, time and findings."""
    where = corpus / name
    where.mkdir(parents=True, exist_ok=True)
    before = {p for p in where.iterdir() if p.name.startswith(ARTIFACTS)}
    log = where / "log"
    flags = [
        f"-runs={runs}",
        f"-max_total_time={max_time}",
        f"-timeout={timeout}",
        f"-artifact_prefix={where}/",
        "-print_final_stats=1",
    ]
    if seed is not None:
        flags.append(f"-seed={seed}")
    flags.extend(extra)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz.worker", worker_name(name), str(where / "corpus"), *flags],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=max_time + 300,
            check=False,
        )
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    done = _DONE.search(text)
    progress = _PROGRESS.findall(text)
    count = int(done[1]) if done else int(progress[-1]) if progress else 0
    findings = sorted(p for p in where.iterdir() if p.name.startswith(ARTIFACTS) and p not in before)
    return Result(name, count, seconds, findings, proc.returncode, log)


def _verdict(r: Result, wanted: int) -> str:
    if r.findings:
        return ", ".join(p.name for p in r.findings)
    if r.returncode:
        return f"none, but the worker exited with {r.returncode}"
    if r.runs < wanted:
        return f"none, but stopped at {r.runs} of {wanted} inputs (--max-time)"
    return "none"


def main(argv: list[str] | None = None) -> int:
    from tests.fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"default: all ({', '.join(TARGETS)})")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", "100000")))
    parser.add_argument("--max-time", type=int, default=int(os.environ.get("FUZZ_MAX_TIME", "600")))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", "2")))
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("FUZZ_CORPUS", ROOT / ".run/fuzz"))
    )
    parser.add_argument("--seed", type=int, default=None, help="libFuzzer's random seed (default: new)")
    parser.add_argument("--list", action="store_true", help="name and describe every target, then exit")
    args = parser.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            allowed = ", ".join(e.__name__ for e in t.allowed) or "nothing"
            print(f"{t.name:16} may raise {allowed}: {t.doc}")
        return 0
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}: expected some of {', '.join(TARGETS)}")
    print(
        f"fuzzing {len(names)} targets, {args.runs} inputs each, {args.jobs} at a time (corpus {args.corpus})"
    )
    print(f"{'target':16} {'inputs':>9} {'seconds':>8} {'inputs/s':>9}  findings")
    started = time.monotonic()
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(run_target, n, args.corpus, args.runs, args.max_time, seed=args.seed) for n in names
        ]
        for future in futures:
            r = future.result()
            results.append(r)
            verdict = _verdict(r, args.runs)
            rate = r.runs / r.seconds if r.seconds else 0.0
            print(f"{r.target:16} {r.runs:>9} {r.seconds:>8.1f} {rate:>9.0f}  {verdict}", flush=True)
    failed = [r for r in results if not r.ok(args.runs)]
    total = sum(r.runs for r in results)
    elapsed = time.monotonic() - started
    print(f"{total} inputs in {elapsed:.0f} s; {len(failed)} of {len(results)} targets failed")
    for r in failed:
        print(f"  {r.target}: log {r.log}")
        for p in r.findings:
            print(f"    reproduce: .venv/bin/python -m tests.fuzz.worker {worker_name(r.target)} {p}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
