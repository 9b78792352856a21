"""The chaos scenarios: one fault each, injected ``fault_at`` seconds into a push of ``push`` seconds,
and what a scenario run measured."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .backends import Backends
from .camera import Camera
from .deployment import Deployment
from .measure import LiveWatch, settled_recording

SEGMENT = 2.0  # the clip's GOP and ingest's segment target: one segment per 2 s of media
# Seconds the recording may fall short of what ffmpeg reported sent before a segment counts as lost:
# ffmpeg's progress runs a frame or two ahead of the last frame that a closed session delivered.
SHORTFALL_TOLERANCE = 0.5
# A recording short of the push counts once it has not changed for this long (Kafka clients took up
# to ~55 s after a broker came back to move again: a spooled backlog may land that late) ...
SETTLE_QUIET = 60.0
SETTLE_LIMIT = 240.0  # ... or this long after the push ended (a backlog catching up)


@dataclass(frozen=True)
class Outage:
    """A backend away for ``seconds``, through its script: ``stop`` then, after it, ``back``."""

    what: str
    script: str  # "kafka" or "minio" (scripts/kafka.sh, scripts/minio.sh)
    stop: tuple[str, ...]
    back: tuple[str, ...]
    seconds: float

    def describe(self) -> str:
        return f"{self.what} for {self.seconds:g} s"

    def __call__(self, dep: Deployment, b: Backends) -> float:
        b.script(self.script, *self.stop)
        time.sleep(self.seconds)
        b.script(self.script, *self.back)
        return time.time()  # the outage ends once the backend is back


@dataclass(frozen=True)
class Signal:
    """A service sent ``sig`` by PID (SIGKILL: no shutdown; SIGTERM: it drains and exits), then
    started again, as a supervisor (systemd, the kubelet) would."""

    service: str
    sig: signal.Signals

    def describe(self) -> str:
        how = "killed (SIGKILL)" if self.sig == signal.SIGKILL else "stopped (SIGTERM: drain, exit)"
        return f"{self.service} {how}, started again"

    def __call__(self, dep: Deployment, b: Backends) -> float:
        sent = time.time()  # its restart is part of the recovery
        dep.send(self.service, self.sig)
        dep.start(self.service)
        return sent


Fault = Outage | Signal


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    push: float = 60.0
    fault_at: float = 15.0
    brokers: int = 1
    drives: int = 1
    allowed_lost: int = 0  # segments the scenario may lose (ingest SIGKILL: the one in hand)

    @property
    def what(self) -> str:
        return self.fault.describe()


def kafka_stopped(seconds: float) -> Outage:
    return Outage("every Kafka broker stopped (process gone)", "kafka", ("stop",), ("resume",), seconds)


def kafka_frozen(seconds: float) -> Outage:
    what = "every Kafka broker frozen (SIGSTOP: a hung broker)"
    return Outage(what, "kafka", ("freeze",), ("thaw",), seconds)


def minio_stopped(seconds: float) -> Outage:
    return Outage("MinIO stopped", "minio", ("stop",), ("resume",), seconds)


SCENARIOS = (
    # A stopped broker takes ~5 s to stop and ~15 s to start again: a longer push, so that the camera
    # goes on well past the outage (the frozen one ends at once, on SIGCONT).
    Scenario("kafka-stopped", kafka_stopped(60), push=120),
    Scenario("kafka-frozen", kafka_frozen(60), push=90),
    Scenario("minio-stopped", minio_stopped(20)),
    Scenario("ingest-sigkill", Signal("ingest", signal.SIGKILL), allowed_lost=1),
    Scenario("transcode-sigkill", Signal("transcode", signal.SIGKILL)),
    Scenario("packager-sigkill", Signal("package", signal.SIGKILL)),
    Scenario("edge-sigkill", Signal("edge", signal.SIGKILL)),
    Scenario("ingest-sigterm", Signal("ingest", signal.SIGTERM)),
    Scenario("transcode-sigterm", Signal("transcode", signal.SIGTERM)),
    Scenario("packager-sigterm", Signal("package", signal.SIGTERM)),
    Scenario("edge-sigterm", Signal("edge", signal.SIGTERM)),
    Scenario("broker-down", Outage("Kafka broker 2 of 3 stopped", "kafka", ("stop-node", "2"),
                                   ("start-node", "2"), 30), brokers=3),
    Scenario("drive-gone", Outage("MinIO drive 2 of 4 taken away (then an empty one in its place)", "minio",
                                  ("drive-off", "2"), ("drive-on", "2"), 30), drives=4),
)  # fmt: skip


@dataclass(frozen=True)
class Result:
    scenario: str
    pushed_s: float  # seconds of media the camera sent (ffmpeg's progress, summed over its sessions)
    recorded_s: float  # seconds of media in the VOD playlist over the push's range, each segment once
    duplicated: int  # VOD entries repeating a segment or overlapping an earlier one
    recovery_s: float | None  # from the fault's end until the live playlist listed newer media
    allowed_lost: int
    sessions: int  # camera sessions (1 + reconnects)
    gaps: tuple[tuple[str, float], ...]  # holes in the recording: (where, seconds), reconnects included
    exit_codes: dict[str, int]  # every service stop (SIGKILL: -9), "name#n" for the n-th start
    error: str = ""  # the scenario could not run to its end (the harness, not camflow, failed)

    @property
    def pushed(self) -> int:
        return round(self.pushed_s / SEGMENT)

    @property
    def recorded(self) -> int:
        return round(self.recorded_s / SEGMENT)

    @property
    def lost(self) -> int:
        """Segments' worth of media the camera sent that the recording lacks (a part counts whole)."""
        shortfall = self.pushed_s - self.recorded_s - SHORTFALL_TOLERANCE
        return math.ceil(shortfall / SEGMENT) if shortfall > 0 else 0

    @property
    def unclean_exits(self) -> dict[str, int]:
        """Services that exited non-zero on SIGTERM (a SIGKILL's -9 is the fault itself)."""
        return {k: c for k, c in self.exit_codes.items() if c not in (0, -signal.SIGKILL)}

    @property
    def passed(self) -> bool:
        clean = not self.error and not self.duplicated and not self.unclean_exits
        return clean and self.lost <= self.allowed_lost

    def report(self) -> dict[str, object]:
        """The JSON report's entry: the measurements and the counts derived from them."""
        derived = {"pushed": self.pushed, "recorded": self.recorded, "lost": self.lost, "passed": self.passed}
        return {**self.__dict__, **derived}


def run(scenario: Scenario, backends: Backends, work: Path, clip: Path, *, ladder: str = "source") -> Result:
    """One scenario on running ``backends``: its own Kafka prefix and S3 prefix, services started and
    stopped here (by PID), the camera pushing ``clip``, the transcoder making ``ladder``."""
    work.mkdir(parents=True, exist_ok=True)
    dep = Deployment(backends, work, ladder=ladder)
    camera = Camera(clip, dep.publish_url(), scenario.push, deadline_s=scenario.push * 2 + 60)
    watch = LiveWatch(dep)
    try:
        dep.start_all()
        camera.start()
        watch.start()
        time.sleep(scenario.fault_at)
        fault_end = scenario.fault(dep, backends)
        camera.join()
        complete = camera.sent - SHORTFALL_TOLERANCE
        rec = settled_recording(
            dep, camera.first_start - 5, camera.last_end + 5, complete, SETTLE_QUIET, SETTLE_LIMIT
        )
    finally:
        camera.stop()
        watch.stop()
        dep.stop_all()
    back = watch.back_at(fault_end)
    recovery = None if back is None else max(0.0, back - fault_end)
    return Result(
        scenario.name, camera.sent, rec.seconds, rec.repeated, recovery,
        scenario.allowed_lost, len(camera.sessions), rec.gaps(SEGMENT), dict(dep.exits),
    )  # fmt: skip
