"""The chaos scenarios: one fault each, injected ``fault_at`` seconds into a push of ``push`` seconds,
and what a scenario run measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backends import Backends
from .camera import Camera
from .deployment import Deployment
from .measure import LiveWatch, settled_recording

SEGMENT = 2.0  # the clip's GOP and ingest's segment target: one segment per 2 s of media
Fault = Callable[[Deployment, Backends], None]


def outage(stop: Callable[[Backends], None], start: Callable[[Backends], None], seconds: float) -> Fault:
    def fault(dep: Deployment, b: Backends) -> None:
        stop(b)
        time.sleep(seconds)
        start(b)

    return fault


def sigkill(service: str) -> Fault:
    def fault(dep: Deployment, b: Backends) -> None:
        dep.kill(service)
        dep.start(service)

    return fault


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    fault: Fault
    push: float = 60.0
    fault_at: float = 15.0
    brokers: int = 1
    drives: int = 1


SCENARIOS = (
    Scenario("kafka-stopped", "every broker stopped 60 s (process gone)",
             outage(lambda b: b.kafka("stop"), lambda b: b.kafka("resume"), 60), push=90),
    Scenario("kafka-frozen", "every broker frozen 60 s (SIGSTOP: a hung broker)",
             outage(lambda b: b.kafka("freeze"), lambda b: b.kafka("thaw"), 60), push=90),
    Scenario("minio-stopped", "MinIO stopped 20 s",
             outage(lambda b: b.minio("stop"), lambda b: b.minio("resume"), 20)),
    Scenario("ingest-sigkill", "ingest SIGKILLed, started again; the camera reconnects", sigkill("ingest")),
    Scenario("transcode-sigkill", "transcoder SIGKILLed, started again", sigkill("transcode")),
    Scenario("packager-sigkill", "packager SIGKILLed, started again", sigkill("package")),
    Scenario("edge-sigkill", "edge SIGKILLed, started again", sigkill("edge")),
    Scenario("broker-down", "one of 3 brokers stopped 30 s",
             outage(lambda b: b.kafka("stop-node", "2"), lambda b: b.kafka("start-node", "2"), 30),
             brokers=3),
    Scenario("drive-gone", "one of 4 MinIO drives taken away 30 s, then an empty one in its place",
             outage(lambda b: b.minio("drive-off", "2"), lambda b: b.minio("drive-on", "2"), 30), drives=4),
)  # fmt: skip


@dataclass(frozen=True)
class Result:
    scenario: str
    pushed: float  # seconds of media the camera sent
    recorded: float  # seconds of media in the VOD playlist over the push's range
    repeated: int  # VOD entries repeating a segment or overlapping an earlier one
    recovery: float | None  # seconds from the fault's end until the live playlist showed newer media
    sessions: int  # camera sessions (1 + reconnects)
    exit_codes: dict[str, int]

    @property
    def pushed_segments(self) -> int:
        return round(self.pushed / SEGMENT)

    @property
    def recorded_segments(self) -> int:
        return round(self.recorded / SEGMENT)

    @property
    def lost_segments(self) -> int:
        return max(0, self.pushed_segments - self.recorded_segments)


def run(scenario: Scenario, backends: Backends, work: Path, clip: Path) -> Result:
    """One scenario on running ``backends``: its own Kafka prefix and S3 prefix, services started and
    stopped here (by PID), the camera pushing ``clip``."""
    work.mkdir(parents=True, exist_ok=True)
    dep = Deployment(backends, work)
    dep.start_all()
    camera = Camera(clip, dep.publish_url(), scenario.push, deadline_s=scenario.push * 2 + 60)
    watch = LiveWatch(dep)
    exit_codes: dict[str, int] = {}
    try:
        camera.start()
        watch.start()
        time.sleep(scenario.fault_at)
        scenario.fault(dep, backends)
        fault_end = time.time()
        camera.join()
        rec = settled_recording(dep, camera.first_start - 5, camera.last_end + 5, quiet=15, limit=240)
    finally:
        camera.stop()
        watch.stop()
        exit_codes = dep.stop_all()
    back = watch.back_at(fault_end)
    return Result(
        scenario.name, camera.sent, rec.seconds, rec.repeated,
        None if back is None else max(0.0, back - fault_end), len(camera.sessions), exit_codes,
    )  # fmt: skip
