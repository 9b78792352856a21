"""One fuzz target under atheris (libFuzzer), in its own process: libFuzzer ends the process when done.

``python -m tests.fuzz.worker TARGET CORPUS_DIR [libFuzzer flags...]``: the target's seeds are written
to ``CORPUS_DIR/seeds`` (and its dictionary beside them), new inputs that reach new code go to
``CORPUS_DIR/found``. ``python -m tests.fuzz.worker TARGET FILE...`` runs the target on those files
once each (reproducing a finding: libFuzzer prints the exception and its traceback).

``TARGET`` is a name (every target module is imported) or ``MODULE:NAME`` (only that module is, which
saves about a second of start-up: each import is instrumented for coverage).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import atheris

from tests.fuzz.harness import TARGETS, Target


def _dictionary_line(word: bytes) -> str:
    """One libFuzzer dictionary entry: the word in quotes, every byte as a \\xNN escape."""
    escaped = "".join(f"\\x{b:02x}" for b in word)
    return f'"{escaped}"\n'


def _prepare(target: Target, corpus: Path) -> list[str]:
    seeds, found = corpus / "seeds", corpus / "found"
    seeds.mkdir(parents=True, exist_ok=True)
    found.mkdir(parents=True, exist_ok=True)
    for old in seeds.iterdir():
        old.unlink()
    for i, seed in enumerate(target.seeds()):
        (seeds / f"seed-{i:03d}").write_bytes(seed)
    flags = [f"-max_len={target.max_len}"]
    if target.dictionary:
        (corpus / "dictionary").write_text("".join(_dictionary_line(w) for w in target.dictionary))
        flags.append(f"-dict={corpus / 'dictionary'}")
    return [*flags, str(found), str(seeds)]


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        raise SystemExit(f"usage: {argv[0]} TARGET (CORPUS_DIR [libFuzzer flags...] | FILE...)")
    module, _, name = argv[1].rpartition(":")
    where, flags = Path(argv[2]), argv[3:]
    with atheris.instrument_imports(include=["camflow", "ingest", "edge", "m3u8"]):
        importlib.import_module(module or "tests.fuzz.targets")
    if name not in TARGETS:
        raise SystemExit(f"fuzz target {name!r}: expected one of {', '.join(sorted(TARGETS))}")
    target = TARGETS[name]
    if target.setup is not None:
        target.setup()
    if where.is_dir() or not where.exists():
        args = [argv[0], *flags, *_prepare(target, where)]
    else:
        args = [argv[0], *flags, *argv[2:]]  # reproduce: files to run once each
    atheris.Setup(args, target.one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
