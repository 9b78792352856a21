"""Prometheus metrics of every service, defined in one place, and the HTTP endpoints that serve them.

Two kinds of metric:

- instrumented where they happen, at most once per segment, request or store call
  (``BUS_PUBLISH_SECONDS``, ``STORE_SECONDS``, ``TRANSCODE_SECONDS``...);
- read at scrape time from plain counters a service keeps anyway (``CALLBACK_METRICS``): a
  hot path (one RTP packet) only increments an int, and a *source* registered with
  ``add_source`` turns those ints into samples when Prometheus asks.

``MetricsServer`` is the small HTTP listener of every service's ``--metrics-port`` (on loopback unless
``--metrics-host`` says otherwise): ``/metrics``, ``/healthz`` (liveness: the event loop answers) and
``/readyz`` (readiness, from a ``Readiness``). The edge also serves ``/healthz`` and ``/readyz`` on its
public port, and ``/metrics`` there only to an operator token (``edge.api``): the figures name
every stream.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from camflow.errors import NotFound
from camflow.log import get_logger
from camflow.store.base import StoreWrapper

log = get_logger("metrics")
T = TypeVar("T")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRANSCODE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

# --- instrumented where it happens ------------------------------------------------------------

BUS_PUBLISH_SECONDS = Histogram(
    "camflow_bus_publish_seconds",
    "Time from a bus publish call to its acknowledgement (Kafka: acks=all; LocalBus: enqueued)",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
BUS_PUBLISH_ERRORS = Counter("camflow_bus_publish_errors", "Bus publishes that raised", ["topic"])
CONSUMER_LAG = Gauge(
    "camflow_consumer_lag_messages",
    "Messages behind the end of the partitions assigned to this consumer (LocalBus: queue depth)",
    ["group"],
)
STORE_SECONDS = Histogram(
    "camflow_store_operation_seconds", "Store call latency", ["op"], buckets=LATENCY_BUCKETS
)
STORE_ERRORS = Counter("camflow_store_errors", "Store calls that failed (NotFound is not a failure)", ["op"])
TRANSCODE_SECONDS = Histogram(
    "camflow_transcode_seconds",
    "Seconds to produce one rung of one segment (a stream copy observes its remux time)",
    ["rung"],
    buckets=TRANSCODE_BUCKETS,
)
TRANSCODE_SEGMENT_SECONDS = Histogram(
    "camflow_transcode_segment_seconds",
    "Raw segment consumed to every rendition written and its ready event published",
    buckets=TRANSCODE_BUCKETS,
)
DEAD_LETTERS = Counter(
    "camflow_dead_letters",
    "Messages a consumer group could not use, published to the dead-letter topic before their offset "
    "was committed, by the topic they came from and reason (version, malformed, rejected, transcode-failed)",
    ["topic", "reason"],
)
EVENTS_SKIPPED = Counter(
    "camflow_events_skipped",
    "Undecodable messages a reader outside any consumer group (health feed, tail) skipped, by topic and "
    "reason (version, malformed)",
    ["topic", "reason"],
)
HEALTH_SAMPLES = Counter("camflow_health_samples", "Health samples published on camflow.health", ["service"])
CONNECTIONS_REFUSED = Counter(
    "camflow_connections_refused",
    "Connections a listener (edge, whip, rtsp) refused or closed to protect itself, by reason "
    "(head_timeout, body_timeout, idle_timeout, send_timeout, head_too_large, per_client_cap, "
    "handshake_timeout)",
    ["listener", "reason"],
)
TLS_RELOADS = Counter(
    "camflow_tls_reloads",
    "Reloads of the TLS certificate and key (files changed, SIGHUP), by result (ok, failed: the old "
    "certificate kept serving)",
    ["result"],
)
TLS_HANDSHAKE_FAILURES = Counter(
    "camflow_tls_handshake_failures",
    "TLS handshakes a client failed (plain HTTP or RTSP on a TLS port, no common protocol version or "
    "cipher, a client that rejected the certificate), by OpenSSL's reason",
    ["reason"],
)
TLS_CERTIFICATE_EXPIRY = Gauge(
    "camflow_tls_certificate_expiry_timestamp_seconds",
    "notAfter of the TLS certificate this process serves (HTTPS, RTSPS), UNIX seconds",
)

# --- read at scrape time from a service's own counters -----------------------------------------


@dataclass(frozen=True)
class CallbackMetric:
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()


CALLBACK_METRICS: dict[str, CallbackMetric] = {
    "camflow_ingest_sessions": CallbackMetric("gauge", "Active publish sessions", ("protocol",)),
    "camflow_ingest_connections": CallbackMetric("gauge", "Open RTSP TCP connections"),
    "camflow_ingest_packets": CallbackMetric("counter", "RTP packets received (video)", ("protocol",)),
    "camflow_ingest_bytes": CallbackMetric("counter", "RTP bytes received (video)", ("protocol",)),
    "camflow_ingest_frames": CallbackMetric("counter", "Access units depacketized", ("protocol",)),
    "camflow_ingest_depacketizer_errors": CallbackMetric(
        "counter", "Bad, lost or late RTP input, by kind", ("kind",)
    ),
    "camflow_ingest_timestamp_corrections": CallbackMetric(
        "counter", "Camera timestamps corrected, by kind", ("kind",)
    ),
    "camflow_ingest_media_corrections": CallbackMetric(
        "counter",
        "Media fixed or dropped on the way in (parameter sets inserted, audio gaps filled, ...), by kind",
        ("kind",),
    ),
    "camflow_ingest_segments": CallbackMetric("counter", "Raw segments, by result", ("result",)),
    "camflow_ingest_pull_attempts": CallbackMetric(
        "counter", "Connections tried to a pulled source (--pull)", ("stream",)
    ),
    "camflow_ingest_pull_failures": CallbackMetric(
        "counter", "Connections to a pulled source that failed or ended", ("stream",)
    ),
    "camflow_ingest_pull_connected": CallbackMetric(
        "gauge", "1 while a pulled source delivers media, 0 while it connects or waits to retry", ("stream",)
    ),
    "camflow_stream_state": CallbackMetric(
        "gauge", "1 for the stream's current publish state, 0 for the others", ("stream", "state")
    ),
    "camflow_ingest_segment_age_seconds": CallbackMetric(
        "gauge", "Seconds since the stream's newest segment was cut", ("stream",)
    ),
    "camflow_ingest_spool_bytes": CallbackMetric("gauge", "Bytes in ingest's spool, waiting for the bus"),
    "camflow_ingest_spool_max_bytes": CallbackMetric("gauge", "The spool's bound (--spool-max-bytes)"),
    "camflow_ingest_spool_records": CallbackMetric(
        "gauge", "Messages in ingest's spool (segments, states, health samples) waiting for the bus"
    ),
    "camflow_ingest_spool_oldest_seconds": CallbackMetric(
        "gauge",
        "Age of the oldest message waiting in ingest's spool (0 when empty): how far the bus is behind",
    ),
    "camflow_ingest_spool_delivered": CallbackMetric(
        "counter", "Messages the spool delivered (acknowledged by the bus)"
    ),
    "camflow_ingest_spool_publish_failures": CallbackMetric(
        "counter", "Publishes from the spool that failed and will be retried"
    ),
    "camflow_ingest_spool_quarantined": CallbackMetric(
        "counter", "Spool files that did not check (torn, damaged) and were moved to quarantine/"
    ),
    "camflow_ingest_spool_dropped": CallbackMetric(
        "counter", "Segments dropped because the spool was full (oldest first), by stream", ("stream",)
    ),
    "camflow_transcode_segments": CallbackMetric("counter", "Transcoded segments, by result", ("result",)),
    "camflow_transcode_in_flight": CallbackMetric("gauge", "Segments being transcoded now"),
    "camflow_transcode_parts": CallbackMetric(
        "counter", "Low-latency parts the part worker took, by result (ok, duplicate, bad)", ("result",)
    ),
    "camflow_transcode_part_rungs_skipped": CallbackMetric(
        "counter", "Encoded rung parts not made: the rung waits for the stream's next independent part"
    ),
    "camflow_transcode_lag_seconds": CallbackMetric(
        "gauge", "How far behind live the newest started segment was"
    ),
    "camflow_packager_playlist_age_seconds": CallbackMetric(
        "gauge", "Seconds since the stream's live playlists were last written", ("stream",)
    ),
    "camflow_packager_live_edge_age_seconds": CallbackMetric(
        "gauge", "Now minus the wall-clock end of the newest segment in the live playlist", ("stream",)
    ),
    "camflow_packager_segments": CallbackMetric("counter", "Segments appended to live playlists"),
    "camflow_packager_parts": CallbackMetric(
        "counter", "Low-latency parts listed in live playlists, dropped (never listed), deleted", ("result",)
    ),
    "camflow_retention_segments": CallbackMetric(
        "counter", "Recorded segments retention deleted (deleted) past the retention", ("result",)
    ),
    "camflow_retention_kept_segments": CallbackMetric(
        "gauge",
        "Segments past the retention kept at the last sweeps: named by a playlist, or locked by an event",
        ("reason",),
    ),
    "camflow_region_replication_lag_seconds": CallbackMetric(
        "gauge",
        "How long the peer region's newest heartbeat took to reach this region's store replica",
        ("peer",),
    ),
    "camflow_region_heartbeat_age_seconds": CallbackMetric(
        "gauge",
        "Age of the peer region's newest heartbeat in this region's replica (its writes older than "
        "this have replicated here)",
        ("peer",),
    ),
    "camflow_region_claims": CallbackMetric("counter", "Stream directory entries this packager wrote"),
    "camflow_region_foreign_flushes": CallbackMetric(
        "counter", "Packager flushes whose playlists were left to the owner region of their stream"
    ),
    "camflow_store_up": CallbackMetric(
        "gauge", "0 while the store is unavailable to the service's calls (an outage), else 1", ("service",)
    ),
    "camflow_store_outage_seconds": CallbackMetric(
        "gauge", "How long the current store outage has lasted (0 while the store answers)", ("service",)
    ),
    "camflow_store_outages": CallbackMetric("counter", "Store outages the service rode out", ("service",)),
    "camflow_store_retries": CallbackMetric(
        "counter", "Store calls repeated because the store was unavailable", ("service", "op")
    ),
    "camflow_edge_viewers": CallbackMetric(
        "gauge", "Distinct view tokens that fetched a playlist in the last 30 s", ("stream",)
    ),
    "camflow_edge_cache_bytes": CallbackMetric("gauge", "Bytes in the edge's in-memory cache"),
    "camflow_edge_requests": CallbackMetric(
        "counter", "HTTP requests the edge answered, by status and cache result", ("status", "cache")
    ),
    "camflow_edge_low_latency": CallbackMetric(
        "counter",
        "Low-latency HLS at the edge: playlist events read, wake-ups, blocked reloads, holds, store reads",
        ("what",),
    ),
}

# (metric name, label values in CALLBACK_METRICS order, value)
Sample = tuple[str, tuple[str, ...], float]
Source = Callable[[], Iterable[Sample]]


class _Sources(Collector):
    """Every registered source's samples, summed per metric and label set, at scrape time."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def describe(self) -> Iterable[Metric]:
        return []  # samples vary with the sources: no up-front description

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, dict[tuple[str, ...], float]] = {}
        for source in list(self.sources):
            try:
                for name, labels, value in source():
                    per = totals.setdefault(name, {})
                    per[labels] = per.get(labels, 0.0) + value
            except Exception as exc:  # a broken source must not break the scrape
                log.warning("metrics_source_failed", source=repr(source), error=repr(exc))
        for name, spec in CALLBACK_METRICS.items():
            values = totals.get(name)
            if values is None:
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if spec.kind == "counter":
                family = CounterMetricFamily(name, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            for labels, value in sorted(values.items()):
                family.add_metric(list(labels), value)
            yield family


_SOURCES = _Sources()
REGISTRY.register(_SOURCES)


def add_source(source: Source) -> None:
    """Scrapes read ``source()`` from now on (until ``remove_source``)."""
    _SOURCES.sources.append(source)


def remove_source(source: Source) -> None:
    if source in _SOURCES.sources:
        _SOURCES.sources.remove(source)


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric of this process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def instance_name() -> str:
    """``host/pid``: which process a health sample or log line came from."""
    return f"{socket.gethostname()}/{os.getpid()}"


# --- store latency -------------------------------------------------------------------------------


class MeteredStore(StoreWrapper):
    """A Store that times every call (``camflow_store_operation_seconds``) and counts failures."""

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await call()
        except NotFound:
            raise
        except BaseException:
            STORE_ERRORS.labels(op).inc()
            raise
        finally:
            STORE_SECONDS.labels(op).observe(time.perf_counter() - started)


# --- liveness, readiness and the listener ----------------------------------------------------------


@dataclass
class Readiness:
    """Named checks that must all pass for ``/readyz``; ``draining`` (set on SIGTERM) fails it at once."""

    checks: dict[str, Callable[[], bool | str]] = field(default_factory=dict)
    draining: bool = False

    def add(self, name: str, check: Callable[[], bool | str]) -> None:
        """``check()``: True (ready) or False ("not yet"), or a reason why not ("" when ready)."""
        self.checks[name] = check

    def reasons(self) -> list[str]:
        """Why the service is not ready (empty when it is)."""
        out = ["draining: shutting down"] if self.draining else []
        for name, check in self.checks.items():
            try:
                ok = check()
            except Exception as exc:
                out.append(f"{name}: {exc!r}")
                continue
            if isinstance(ok, str):
                if ok:
                    out.append(f"{name}: {ok}")
            elif not ok:
                out.append(f"{name}: not yet")
        if not self.checks and not self.draining:
            out.append("starting: no service registered yet")
        return out


def metrics_response() -> web.Response:
    body, content_type = render()
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def healthz_response(**extra: Any) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid(), **extra})


def readyz_response(readiness: Readiness) -> web.Response:
    reasons = readiness.reasons()
    if reasons:
        return web.json_response({"status": "not_ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


Render = Callable[[], Awaitable[web.Response]]


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0: a free one).

    ``render`` answers ``/metrics`` (default: this process's registry; the edge with ``--workers``
    gives its merge of every worker's), ``ready`` answers ``/readyz`` (default: ``readiness``; the
    edge gives its own, which asks the store)."""

    def __init__(
        self,
        readiness: Readiness,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        render: Render | None = None,
        ready: Render | None = None,
    ) -> None:
        self.readiness = readiness
        self.host = host
        self.port = port
        self._render = render
        self._ready = ready
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()

        async def metrics(request: web.Request) -> web.Response:
            if self._render is not None:
                return await self._render()
            return metrics_response()

        async def healthz(request: web.Request) -> web.Response:
            return healthz_response()

        async def readyz(request: web.Request) -> web.Response:
            if self._ready is not None:
                return await self._ready()
            return readyz_response(self.readiness)

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app

    async def start(self) -> int:
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0, keepalive_timeout=75.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("metrics_listening", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def iter_counters(prefix: str, counters: dict[str, int]) -> Iterator[Sample]:
    """``(prefix, (kind,), value)`` for each named counter: a ``kind``-labelled family."""
    for kind, value in counters.items():
        yield prefix, (kind,), float(value)
