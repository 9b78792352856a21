"""Two regions' backends for tests: each a Kafka and a MinIO of its own, the MinIOs linked by site
replication, all started and stopped through scripts/regions.sh (which acts on them by PID through
scripts/kafka.sh and scripts/minio.sh), in a run directory of the test's own.

    with regions_running(tmp_path) as regions:
        regions.a.kafka, regions.a.s3, regions.b.s3 ...
        regions.stop_minio("A"); ...; regions.start_minio("A")   # an outage: the data stays

The ports (``TEST_PORTS``) are below Linux's ephemeral range (32768-60999), so no client's outgoing
socket can hold one while its server is away, and clear of the shared test services (19092, 19000),
the chaos suite (29092.., 29000; 31092, 31000) and the other tests' own (39092, 39000, 30100..).
When the scripts fail the test fails if services are required (CAMFLOW_REQUIRE_SERVICES=1 or CI),
else it is skipped. This module holds no tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import services_required

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "regions.sh"
SCRIPT_TIMEOUT = 300.0
USER, PASSWORD = "camflow", "camflow-secret"
BUCKET = "camflow-regions"
NAMES = ("A", "B")


@dataclass(frozen=True)
class Ports:
    kafka: int
    controller: int
    minio: int


TEST_PORTS: Mapping[str, Ports] = {"A": Ports(32092, 32093, 32100), "B": Ports(32192, 32193, 32200)}


@dataclass(frozen=True)
class Region:
    """One region's backends: what a ``camflow run --region NAME`` of it is given."""

    name: str
    kafka: str  # bootstrap servers, for --kafka
    s3: str  # endpoint and bucket, for --s3
    minio_url: str  # the endpoint alone (a site of the replication)
    run_dir: Path  # its Kafka's and MinIO's files (logs, data, PIDs)


@dataclass(frozen=True)
class Regions:
    run_dir: Path
    env: dict[str, str]  # what scripts/regions.sh runs with: the ports and run directory
    a: Region
    b: Region

    @property
    def client_env(self) -> dict[str, str]:
        """What a camflow process (or S3Store) needs to reach either region's store."""
        return {"AWS_ACCESS_KEY_ID": USER, "AWS_SECRET_ACCESS_KEY": PASSWORD}

    def region(self, name: str) -> Region:
        return {"A": self.a, "B": self.b}[name]

    def script(self, *args: str) -> str:
        """scripts/regions.sh ARGS; its output (raises CalledProcessError with it on failure)."""
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done.stdout

    # One region's outage and return, by PID through the scripts; the data stays.
    def stop_kafka(self, name: str) -> None:
        self.script("stop-kafka", name)

    def start_kafka(self, name: str) -> None:
        self.script("start-kafka", name)

    def stop_minio(self, name: str) -> None:
        self.script("stop-minio", name)

    def start_minio(self, name: str) -> None:
        self.script("start-minio", name)


def regions_env(run_dir: Path, ports: Mapping[str, Ports]) -> dict[str, str]:
    env = {
        **os.environ,
        "CAMFLOW_RUN": str(run_dir),
        "CAMFLOW_PYTHON": sys.executable,
        "REGIONS_BUCKET": BUCKET,
        "MINIO_ROOT_USER": USER,
        "MINIO_ROOT_PASSWORD": PASSWORD,
    }
    for name, p in ports.items():
        env[f"REGION_{name}_KAFKA_PORT"] = str(p.kafka)
        env[f"REGION_{name}_KAFKA_CONTROLLER_PORT"] = str(p.controller)
        env[f"REGION_{name}_MINIO_PORT"] = str(p.minio)
    return env


@contextmanager
def regions_running(run_dir: Path, ports: Mapping[str, Ports] = TEST_PORTS) -> Iterator[Regions]:
    """Both regions' Kafka and MinIO, linked, for the ``with`` block; every one stopped after it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = regions_env(run_dir, ports)

    def region(name: str) -> Region:
        p = ports[name]
        url = f"http://127.0.0.1:{p.minio}"
        return Region(name, f"127.0.0.1:{p.kafka}", f"{url}/{BUCKET}", url, run_dir / "regions" / name)

    regions = Regions(run_dir, env, region("A"), region("B"))
    try:
        print(regions.script("start"), end="", flush=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        output = f"{getattr(exc, 'stdout', '') or ''}{getattr(exc, 'stderr', '') or ''}"[-3000:]
        (pytest.fail if services_required() else pytest.skip)(
            f"scripts/regions.sh start failed: {exc}\n{output}"
        )
    try:
        yield regions
    finally:
        regions.script("stop")
