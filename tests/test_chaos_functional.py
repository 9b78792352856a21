"""The chaos suite's trimmed set (issue 13), in `make test`: a Kafka outage, a MinIO outage and an
ingest SIGKILL during a real camera push (ffmpeg over RTSP), each judged as `make chaos` judges it
(tests/chaos): what the recording (the edge's VOD playlist over the push's time range) lacks of
what the camera sent, segments listed twice, services that did not drain on SIGTERM.

The faults stop and start Kafka and MinIO, so they are this module's own, started through
scripts/kafka.sh and scripts/minio.sh on ports of their own: below Linux's ephemeral range
(32768-60999), so no client's outgoing socket can hold a port while its server is away, and
clear of the test services (19092, 19000) and of `make chaos` (29092, 29000). A backend or
tool that is missing fails the module; nothing here is skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.chaos.__main__ import table
from tests.chaos.backends import Backends
from tests.chaos.scenarios import SCENARIOS, Scenario, kafka_stopped, run
from tests.process import make_clip

pytestmark = pytest.mark.integration

KAFKA_PORT, CONTROLLER_PORT, MINIO_PORT = 31092, 31093, 31000
# 60 s pushes as in `make chaos`, shorter outages (Kafka: 20 s, and ~20 s to stop and start it again;
# MinIO 20 s as there): the set runs in about 5 minutes.
PUSH, FAULT_AT = 60.0, 10.0
_BY_NAME = {s.name: s for s in SCENARIOS}
TRIMMED = (
    replace(_BY_NAME["kafka-stopped"], fault=kafka_stopped(20), push=PUSH, fault_at=FAULT_AT),
    replace(_BY_NAME["minio-stopped"], push=PUSH, fault_at=FAULT_AT),
    replace(_BY_NAME["ingest-sigkill"], push=PUSH, fault_at=FAULT_AT),
)


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    missing = [tool for tool in ("ffmpeg", "java", "curl") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the chaos tests need {', '.join(missing)} (`make install` installs them)")
    b = Backends(
        tmp_path_factory.mktemp("chaos-backends"),
        kafka_port=KAFKA_PORT,
        controller_port=CONTROLLER_PORT,
        minio_port=MINIO_PORT,
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("chaos-clip") / "clip.mp4", 30, size="640x360")


@pytest.mark.timeout(480)  # the push, the fault, and the recording settling (bounded in tests.chaos)
@pytest.mark.parametrize("scenario", TRIMMED, ids=[s.name for s in TRIMMED])
def test_a_fault_during_a_push_loses_nothing_beyond_what_it_may(
    scenario: Scenario, backends: Backends, clip: Path, tmp_path: Path
) -> None:
    result = run(scenario, backends, tmp_path, clip)
    assert result.pushed_s >= PUSH - 1, f"the camera sent {result.pushed_s:.1f} s of {PUSH:g}"
    assert result.passed, f"{scenario.what}:\n{table([result])}\n{result.report()}"
