"""A service started while the store is down waits for it (as ingest waits for the bus) instead of
exiting: `camflow transcode` and `camflow package` against a MinIO that is not running yet, on the
shared test Kafka; MinIO (scripts/minio.sh, a free port, the test's own run folder) is then started
and both services come up. A SIGTERM while the store is still down ends a waiting service at once,
with status 0."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests import services
from tests.chaos.backends import Backends
from tests.process import CAMFLOW, stop_process
from tests.test_store_outage_functional import free_port_pair

pytestmark = pytest.mark.integration


def _start(tmp: Path, label: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (tmp / f"{label}.out").open("wb") as out, (tmp / f"{label}.err").open("wb") as err:
        return subprocess.Popen([*CAMFLOW, *args], stdout=out, stderr=err, env=env)


def _until_logged(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path.name} within {timeout} s")


def test_services_started_while_the_store_is_down_wait_for_it(tmp_path: Path) -> None:
    kafka = services.require("kafka")
    minio = Backends(tmp_path / "run", minio_port=free_port_pair(), bucket="camflow-startup")
    env = {**os.environ, **minio.client_env, "CAMFLOW_SECRET": "s" * 64}
    common = ["--host", "127.0.0.1", "--kafka", kafka, "--kafka-prefix", f"st{uuid.uuid4().hex[:8]}."]
    common += ["--s3", minio.s3_url, "--data-dir", str(tmp_path / "d")]
    procs = {
        "transcode": _start(tmp_path, "transcode", ["transcode", *common, "--ladder", "source"], env),
        "package": _start(tmp_path, "package", ["package", *common], env),
        "quitter": _start(tmp_path, "quitter", ["package", *common], env),
    }
    try:
        for label in procs:  # each found the store down and waits, logging it
            _until_logged(tmp_path / f"{label}.err", "store_unavailable", 30)
        time.sleep(3.0)
        assert all(p.poll() is None for p in procs.values()), {k: p.returncode for k, p in procs.items()}
        started = time.monotonic()
        assert stop_process(procs.pop("quitter")) == 0  # a stop while the store is still down
        assert time.monotonic() - started < 5.0
        minio.minio("start")
        try:
            for label, proc in procs.items():
                _until_logged(tmp_path / f"{label}.out", ": running", 40)
                assert proc.poll() is None
                assert "store_available" in (tmp_path / f"{label}.err").read_text()
        finally:
            minio.minio("stop")
    finally:
        for proc in procs.values():
            stop_process(proc)
