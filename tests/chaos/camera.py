"""The camera: ffmpeg pushing a clip over RTSP/TCP in real time, reconnecting like a camera when its
session ends early, until it has sent the media it was asked to send (bounded in time)."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RECONNECT_DELAY = 1.0  # a camera retries about once a second


@dataclass
class Session:
    started: float  # wall clock (time.time())
    ended: float
    sent: float  # seconds of media ffmpeg wrote (its progress out_time)
    returncode: int
    error: str


@dataclass
class Camera:
    """Pushes ``clip`` (looped) to ``url`` until ``seconds`` of media are sent or ``deadline_s`` pass."""

    clip: Path
    url: str
    seconds: float
    deadline_s: float
    sessions: list[Session] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _proc: subprocess.Popen[str] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def sent(self) -> float:
        return sum(s.sent for s in self.sessions)

    @property
    def first_start(self) -> float:
        return self.sessions[0].started

    @property
    def last_end(self) -> float:
        return self.sessions[-1].ended

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(self.deadline_s + 30)

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        give_up = time.monotonic() + self.deadline_s
        while not self._stop.is_set() and self.seconds - self.sent > 0.5 and time.monotonic() < give_up:
            self.sessions.append(self._session(self.seconds - self.sent, give_up - time.monotonic()))
            if self.seconds - self.sent > 0.5:
                self._stop.wait(RECONNECT_DELAY)

    def _session(self, remaining: float, budget: float) -> Session:
        args = [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-re",
            "-stream_loop", "-1", "-i", str(self.clip), "-t", f"{remaining:.3f}",
            "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", self.url,
        ]  # fmt: skip
        started = time.time()
        sent = 0.0
        # The context closes the pipes and waits for ffmpeg, whatever happens.
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            self._proc = proc
            timer = threading.Timer(max(budget, 1.0), proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None and proc.stderr is not None
                for line in proc.stdout:
                    key, _, value = line.strip().partition("=")
                    if key == "out_time_us" and value.isdigit():
                        sent = int(value) / 1e6
                error = proc.stderr.read()[-500:]
            finally:
                timer.cancel()
                self._proc = None
        return Session(started, time.time(), min(sent, remaining), proc.returncode, error.strip())
