"""transcode.memory: freed picture buffers stay in the process for the next segment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Allocate and touch twelve 3 MiB buffers (1080p pictures), free them all, 20 times over, as one
# segment's encoder after another does, and count the minor page faults it costs. By default
# glibc gives the freed top of its heap back to the kernel (the trim threshold follows the
# largest block freed: 6 MiB here), so every round faults all of it in again.
CHILD = """
import json, resource, sys
from transcode.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    bufs = [bytearray(3 << 20) for _ in range(12)]
    del bufs
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"kept": kept, "faults": after - before}))
"""


def faults(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return dict(json.loads(out.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default = faults("default")
    kept = faults("keep")
    assert kept["kept"] is True
    pages = 20 * 12 * (3 << 20) // 4096  # every page of every round
    assert int(str(default["faults"])) > pages // 2, default
    assert int(str(kept["faults"])) < pages // 10, (kept, default)


def test_the_transcode_pool_processes_keep_freed_memory() -> None:
    """Each pool process ran its initializer: freed memory kept, and the parent-death signal set."""
    from camflow.bus import LocalBus
    from camflow.store import FileStore
    from tests import defaults
    from transcode.pool import pool_setup
    from transcode.service import TranscodeWorker

    worker = TranscodeWorker(
        LocalBus(), FileStore(ROOT / "build" / "unused"), **defaults.transcoder(processes=1)
    )
    pool = worker._new_pool()
    try:
        assert pool.submit(pool_setup).result(timeout=60) == (True, True)
    finally:
        pool.shutdown()
