"""The transcode worker's health samples and metrics.

Every health interval: the group's consumer lag in messages (``camflow_consumer_lag_messages``,
Kafka: end offsets minus this member's positions; in-process: the queue depth) and, for every
stream it took a segment of lately, one ``HealthSample`` with the transcode latency of its newest
finished segment and the lag, so a worker that falls behind shows it in the stream's health
(from its first segment on, even before that one is done), and ``store_outage``: how long the
store has been unavailable to the worker (0 while it answers; the streams seen lately stay in the
feed while an outage lasts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from camflow.events import HealthSample
from camflow.health import report_lag
from camflow.metrics import Sample, instance_name
from transcode.service import GROUP, TranscodeWorker

RECENT_SECONDS = 30.0  # streams with a segment transcoded this recently get samples


class TranscodeHealth:
    def __init__(self, worker: TranscodeWorker) -> None:
        self.worker = worker
        self.instance = instance_name()
        self.lag: int | None = None

    async def collect(self) -> list[HealthSample]:
        self.lag = await report_lag(self.worker.consumer, GROUP)
        now = time.time()
        outage = self.worker.store_outage.seconds()
        return [
            HealthSample(
                stream=stream,
                service="transcode",
                instance=self.instance,
                at=now,
                transcode_latency=None if latency is None else round(latency, 3),
                consumer_lag=self.lag,
                store_outage=round(outage, 3),
            )
            for stream, (latency, at) in sorted(self.worker.recent.items())
            if now - at <= RECENT_SECONDS + outage
        ]

    def samples(self) -> Iterator[Sample]:
        """The worker's counters (a ``camflow.metrics`` source)."""
        stats = self.worker.stats
        yield "camflow_transcode_segments", ("ok",), float(stats.segments)
        yield "camflow_transcode_segments", ("failed_attempt",), float(stats.failed_attempts)
        yield "camflow_transcode_segments", ("dead_lettered",), float(stats.dead_lettered)
        yield "camflow_transcode_in_flight", (), float(stats.in_flight)
        yield "camflow_transcode_lag_seconds", (), float(stats.lag_seconds)
        yield from self.worker.store_outage.samples()
