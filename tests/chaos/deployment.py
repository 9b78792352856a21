"""camflow as a deployment: `camflow ingest`, `transcode`, `package` and `edge`, each its own process,
sharing one Kafka prefix, one S3 prefix and one token secret; any of them can be SIGKILLed and
started again by PID."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from camflow.tokens import Action, TokenSigner
from tests.process import CAMFLOW, free_port, stop_process

from .backends import Backends

SERVICES = ("transcode", "package", "edge", "ingest")  # start order: the consumers before the camera's door
READY = ": running"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0  # a draining service exits within this, or it is SIGKILLed


@dataclass
class Deployment:
    backends: Backends
    work: Path
    stream: str = "chaos"
    ladder: str = "source"  # --ladder of the transcoder: stream copy unless a scenario run asks for rungs
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    rtsp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)  # "name#n" (its n-th start): its exit code
    metrics: bool = False  # each service serves /metrics on a port of its own (metrics_ports)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.secret.encode())

    def args(self, name: str) -> list[str]:
        b = self.backends
        common = ["--host", "127.0.0.1", "--kafka", b.bootstrap, "--kafka-prefix", f"c{self.run_id}."]
        common += ["--kafka-replication", str(b.brokers), "--data-dir", str(self.work / "data")]
        store = ["--s3", f"{b.s3_url}/{self.run_id}"]
        if self.metrics:
            common += ["--metrics-port", str(self.metrics_ports.setdefault(name, free_port()))]
        return {
            "ingest": [*common, "--rtsp-port", str(self.rtsp_port), "--http-port", str(free_port())],
            "transcode": [*common, *store, "--ladder", self.ladder, "--processes", "1"],
            "package": [
                *common,
                *store,
                "--live-window",
                "600",
                "--offline-grace",
                "5",
                "--drain-seconds",
                "5",
            ],
            "edge": [*common, *store, "--http-port", str(self.http_port)],
        }[name]

    def start(self, name: str) -> None:
        n = self.starts[name] = self.starts.get(name, 0) + 1
        out, err = self.work / f"{name}-{n}.out", self.work / f"{name}-{n}.err"
        env = {**self.backends.env, **self.backends.client_env, "CAMFLOW_SECRET": self.secret}
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen([*CAMFLOW, name, *self.args(name)], stdout=fo, stderr=fe, env=env)
        self.procs[name] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while READY not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = err.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"camflow {name} did not start ({proc.returncode}):\n{log}")
            time.sleep(0.1)

    def start_all(self) -> None:
        for name in SERVICES:
            self.start(name)

    def send(self, name: str, sig: signal.Signals) -> None:
        """``sig`` by PID, then wait for the exit (SIGKILL: no shutdown, no flush, no commit;
        SIGTERM: the service drains, bounded by STOP_TIMEOUT, then SIGKILL)."""
        proc = self.procs.pop(name)
        if sig == signal.SIGTERM:
            code = stop_process(proc, STOP_TIMEOUT)
        else:
            proc.send_signal(sig)
            code = proc.wait(10)
        self.exits[f"{name}#{self.starts[name]}"] = code

    def stop_all(self) -> None:
        """SIGTERM each still running (ingest first, so the stream ends through the pipeline)."""
        for name in reversed(SERVICES):
            if name in self.procs:
                self.send(name, signal.SIGTERM)

    def publish_url(self) -> str:
        token = self.signer.issue(self.stream, Action.PUBLISH, 3600)
        return f"rtsp://127.0.0.1:{self.rtsp_port}/{self.stream}?token={token}"

    def http(self, path: str) -> str:
        token = self.signer.issue(self.stream, Action.VIEW, 3600)
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.http_port}{path}{sep}token={token}"
