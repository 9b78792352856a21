"""The stream-health feed: samples on ``camflow.health``, who publishes them and who reads them.

- ``publish_state``: the rule that makes a publish session ``connecting``, ``live`` or
  ``stalled`` (``offline`` is the end of the session): no segment for twice the target
  duration is ``stalled``.
- ``HealthReporter``: a service's loop that publishes its samples every ``interval`` seconds,
  keyed by stream.
- ``HealthBoard``: the latest sample of every (stream, service, instance), merged into one
  picture per stream; the edge (``/api/health``) and ``camflow tail --table`` keep one.
- ``follow_health``: feed a board (or anything) from the bus, outside any consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from camflow.bus import Bus, Consumer, consumer_lag
from camflow.bus.dead import Skips
from camflow.bus.follow import follow_events
from camflow.events import TOPIC_HEALTH, HealthSample, StreamStateKind, encode
from camflow.log import get_logger
from camflow.metrics import CONSUMER_LAG, HEALTH_SAMPLES

STALL_TARGETS = 2.0  # no segment for this many target durations: stalled
FIRST_SEGMENT_TARGETS = 3.0  # a new session has this many target durations to cut its first segment
KEEP_OFFLINE = 600.0  # seconds a board remembers a stream after its last sample
VIEWERS_FRESH = 30.0  # seconds an edge instance's viewers count after its newest sample
WHEP_FRESH = 10.0  # seconds an ingest instance's WHEP counts after its newest live sample of a stream
log = get_logger("health")


async def report_lag(consumer: Consumer | None, group: str) -> int | None:
    """The consumer's lag in messages (None when unknown), also set on the group's lag gauge."""
    lag = None if consumer is None else await consumer_lag(consumer)
    if lag is not None:
        CONSUMER_LAG.labels(group).set(lag)
    return lag


def publish_state(
    since_segment: float | None, since_start: float, target: float
) -> tuple[StreamStateKind, str]:
    """The state of a publish session and why, from the seconds since its newest segment was cut
    (None: none yet) and since it started, for a segment target of ``target`` seconds."""
    if since_segment is None:
        if since_start > FIRST_SEGMENT_TARGETS * target:
            return StreamStateKind.STALLED, f"no segment in {since_start:.1f} s since the session started"
        return StreamStateKind.CONNECTING, "waiting for the first segment"
    if since_segment > STALL_TARGETS * target:
        return (
            StreamStateKind.STALLED,
            f"no segment for {since_segment:.1f} s (over {STALL_TARGETS:g} x the {target:g} s target)",
        )
    return StreamStateKind.LIVE, "segments arriving"


Collect = Callable[[], Awaitable[Iterable[HealthSample]]]


class HealthReporter:
    """Publish what ``collect`` returns on ``camflow.health`` every ``interval`` seconds."""

    def __init__(self, bus: Bus, service: str, collect: Collect, interval: float) -> None:
        self.bus = bus
        self.service = service
        self.collect = collect
        self.interval = interval
        self.published = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"health-{self.service}")

    async def stop(self) -> None:
        """Publish one last round (e.g. ``offline`` samples), then end the loop."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.tick(), self.interval)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception as exc:  # one bad round must not end the feed
                self.failures += 1
                if self.failures & (self.failures - 1) == 0:  # 1, 2, 4, 8, ... not one per round
                    log.warning(
                        "health_collect_failed", service=self.service, error=repr(exc), failures=self.failures
                    )

    async def tick(self) -> None:
        for sample in await self.collect():
            try:
                await self.bus.publish(TOPIC_HEALTH, sample.stream, encode(sample))
            except Exception as exc:
                self.failures += 1
                if self.failures & (self.failures - 1) == 0:
                    log.warning(
                        "health_publish_failed", service=self.service, error=repr(exc), failures=self.failures
                    )
                return
            self.published += 1
            HEALTH_SAMPLES.labels(self.service).inc()


class HealthBoard:
    """The latest sample of every (stream, service, instance); ``merged(stream)`` combines them."""

    def __init__(
        self,
        *,
        keep: float = KEEP_OFFLINE,
        viewers_fresh: float = VIEWERS_FRESH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._samples: dict[str, dict[tuple[str, str], HealthSample]] = {}
        self._keep = keep
        self._viewers_fresh = viewers_fresh
        self._clock = clock

    def add(self, sample: HealthSample) -> None:
        per = self._samples.setdefault(sample.stream, {})
        key = (sample.service, sample.instance)
        old = per.get(key)
        if old is None or old.at <= sample.at:
            per[key] = sample

    def prune(self) -> None:
        horizon = self._clock() - self._keep
        for stream in list(self._samples):
            per = self._samples[stream]
            for key in [k for k, s in per.items() if s.at < horizon]:
                del per[key]
            if not per:
                del self._samples[stream]

    @property
    def streams(self) -> list[str]:
        return sorted(self._samples)

    def merged(self, stream: str) -> dict[str, Any] | None:
        """One JSON-ready picture of ``stream``: the publish state from the newest ingest sample that
        has one, every figure (and ``corrections``) from the newest sample that measures it, except
        ``viewers``: the sum over edge instances (``viewers``); None for an unknown stream."""
        per = self._samples.get(stream)
        if not per:
            return None
        newest_first = sorted(per.values(), key=lambda s: s.at, reverse=True)
        out: dict[str, Any] = {
            "stream": stream,
            "state": None,
            "reason": "",
            "epoch": "",
            "at": newest_first[0].at,
            "services": sorted({s.service for s in newest_first}),
        }
        for sample in newest_first:
            if sample.state is not None:
                out["state"], out["reason"], out["epoch"] = sample.state.value, sample.reason, sample.epoch
                break
        for name in HealthSample.FIGURES:
            out[name] = next((v for s in newest_first if (v := getattr(s, name)) is not None), None)
        out["corrections"] = next((s.corrections for s in newest_first if s.corrections is not None), None)
        out["viewers"] = self.viewers(newest_first)
        return out

    def viewers(self, samples: Iterable[HealthSample]) -> int | None:
        """Viewers of a stream on every edge: the newest figure of each instance (each edge, however
        many workers it runs, publishes one), summed over the instances whose sample is at most
        ``viewers_fresh`` seconds old (a stopped or killed edge's last figure stops counting);
        None when no sample measures viewers. A viewer whose requests reach two edges counts twice.
        """
        measured = [s for s in samples if s.viewers is not None]
        if not measured:
            return None
        horizon = self._clock() - min(self._keep, self._viewers_fresh)
        return sum(s.viewers for s in measured if s.viewers is not None and s.at >= horizon)

    def whep_url(self, stream: str, fresh: float = WHEP_FRESH) -> str | None:
        """The WHEP base URL of the ingest instance that holds ``stream``: the newest of the ingest
        samples that are ``live``, announce a URL and are at most ``fresh`` seconds old (a node that
        stopped publishing samples, or whose session ended, no longer counts); None when there is none."""
        horizon = self._clock() - fresh
        live = [
            s
            for s in self._samples.get(stream, {}).values()
            if s.service == "ingest" and s.whep and s.state is StreamStateKind.LIVE and s.at >= horizon
        ]
        return max(live, key=lambda s: s.at).whep if live else None

    def latest(self) -> list[HealthSample]:
        """The latest sample of every stream, service and instance, by stream then time."""
        return sorted(
            (s for per in self._samples.values() for s in per.values()), key=lambda s: (s.stream, s.at)
        )

    def table(self) -> list[dict[str, Any]]:
        return [m for stream in self.streams if (m := self.merged(stream)) is not None]


async def follow_health(
    bus: Bus, on_sample: Callable[[HealthSample], None], stop: asyncio.Event, *, since: float = 10.0
) -> None:
    """Call ``on_sample`` with every sample published on ``camflow.health`` (from ``since`` seconds
    back where the bus keeps them) until ``stop`` is set; undecodable messages are counted and skipped."""
    await follow_events(
        bus, [TOPIC_HEALTH], HealthSample, on_sample, stop, on_skip=Skips("health-feed").note, since=since
    )
