"""A short run of every fuzz target (``make fuzz`` runs each for 100,000 inputs): no finding.

Each target runs under atheris in its own process (``tests.fuzz.worker``), from its seeds, with a fixed
libFuzzer seed so a run is repeatable; a finding fails the test with the log's tail and the command
that reproduces it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import ParseError
from tests.fuzz.__main__ import run_target
from tests.fuzz.harness import Target, chunks, framed, records
from tests.fuzz.targets import TARGETS

SHORT_RUNS = 3000


@pytest.mark.parametrize("name", list(TARGETS))
def test_short_fuzz_run_has_no_finding(name: str, tmp_path: Path) -> None:
    result = run_target(name, tmp_path, SHORT_RUNS, max_time=120, seed=13)
    tail = "\n".join(result.log.read_text(errors="replace").splitlines()[-40:])
    assert not result.findings, f"fuzz target {name}: {[p.name for p in result.findings]}\n{tail}"
    assert result.ok(SHORT_RUNS), (
        f"fuzz target {name}: {result.runs} inputs, exit {result.returncode}\n{tail}"
    )


def test_a_target_lets_only_its_allowed_errors_pass() -> None:
    def parse(data: bytes) -> None:
        if data == b"bad":
            raise ParseError("bad")
        if data == b"bug":
            raise IndexError("bug")

    t = Target("t", parse, (ParseError,), list, "t")
    t.one(b"bad")
    with pytest.raises(IndexError):
        t.one(b"bug")


def test_a_failing_worker_is_a_failed_run(tmp_path: Path) -> None:
    result = run_target("sdp", tmp_path, 100_000, max_time=60, seed=13, extra=("-rss_limit_mb=1",))
    assert not result.ok(100_000)
    assert result.returncode != 0


def test_records_and_chunks_cover_their_input() -> None:
    parts = [b"config", b"", b"\x80\x60" * 10]
    assert list(records(framed(parts))) == parts
    assert list(records(framed(parts)[:-3])) == [*parts[:2], parts[2][:-3]]
    data = bytes(range(256)) * 20
    assert b"".join(chunks(data)) == data[1:]
    assert len(list(chunks(b"\x85" + bytes(64)))) > 1
