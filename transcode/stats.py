"""What a transcode worker counts and measures (its commits: ``camflow.bus.CommitTracker``)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

LATENCY_SAMPLES = 512


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class TranscodeStats:
    """Counters since start, and recent per-segment figures.

    ``transcode_seconds``: raw event consumed → renditions written and ready published.
    ``lag_seconds``: how far behind live the segment being started is (now - the end of
    the segment on the camera's wall clock); it grows when the workers fall behind.
    """

    segments: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    decode_errors: int = 0
    commit_errors: int = 0
    pool_restarts: int = 0
    publish_retries: int = 0  # ready events the bus refused, published again (camflow.bus.retry)
    poll_errors: int = 0  # polls of the raw topic that failed (the bus away), repeated after a pause
    media_seconds: float = 0.0
    lag_seconds: float = 0.0
    max_lag_seconds: float = 0.0
    in_flight: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def observe_lag(self, lag: float) -> None:
        self.lag_seconds = lag
        self.max_lag_seconds = max(self.max_lag_seconds, lag)

    def snapshot(self) -> dict[str, Any]:
        """The figures the health feed reports (JSON-ready)."""
        recent = list(self.latencies)
        return {
            "segments": self.segments,
            "failed_attempts": self.failed_attempts,
            "dead_lettered": self.dead_lettered,
            "decode_errors": self.decode_errors,
            "commit_errors": self.commit_errors,
            "pool_restarts": self.pool_restarts,
            "publish_retries": self.publish_retries,
            "poll_errors": self.poll_errors,
            "media_seconds": round(self.media_seconds, 3),
            "in_flight": self.in_flight,
            "lag_seconds": round(self.lag_seconds, 3),
            "max_lag_seconds": round(self.max_lag_seconds, 3),
            "transcode_p50_seconds": round(percentile(recent, 50), 3),
            "transcode_p95_seconds": round(percentile(recent, 95), 3),
        }
