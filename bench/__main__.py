"""``python -m bench [NAME ...] [-- MODULE ARGS]``: run the benchmark modules (``make bench`` runs all)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path


def modules() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1 :]
    known = modules()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {[m[6:] for m in known]}")
    args = parser.parse_args(argv)
    args.rest = rest
    wanted = [f"bench_{n.removeprefix('bench_')}" for n in args.names] or known
    unknown = [w for w in wanted if w not in known]
    if unknown:
        parser.error(f"unknown benchmark {unknown}: expected one of {[m[6:] for m in known]}")
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        print(f"== {name[6:]} ==", flush=True)
        module.run(args)
        print(f"({name[6:]} took {time.monotonic() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
