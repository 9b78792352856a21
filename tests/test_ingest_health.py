"""Ingest's health: pulled sources that have no session (connecting, then offline with the error
and the next attempt, the password never shown) and the session gauge, read at the scrape."""

from __future__ import annotations

import asyncio

from camflow.bus import LocalBus
from camflow.events import StreamStateKind
from ingest.health import IngestHealth
from ingest.media.mux import H264
from ingest.media.publisher import Publisher
from ingest.sources.pull.client import PullClient, PullSource
from tests import defaults


def test_a_pulled_source_without_a_session_reports_connecting_then_offline_with_its_error() -> None:
    now = [100.0]
    client = PullClient(LocalBus(), PullSource("cam8", "rtsp://cam:Secr3t-pw@10.9.9.9:554/live"), 2.0)
    health = IngestHealth(
        LocalBus(),
        pull_clients=lambda: [client],
        segment_target=defaults.SEGMENT_TARGET,
        clock=lambda: now[0],
    )

    client.stats.attempts = 1
    (first,) = asyncio.run(health.collect())
    assert (first.stream, first.service, first.state) == ("cam8", "ingest", StreamStateKind.CONNECTING)
    assert first.reason == "pulling rtsp://cam:***@10.9.9.9:554/live (attempt 1)"

    client.stats.failures, client.stats.attempts, client.stats.state = 3, 3, "offline"
    client.stats.last_error = "OSError: Connection refused"
    client.stats.retry_at = now[0] + 4.25
    (later,) = asyncio.run(health.collect())
    assert later.state is StreamStateKind.OFFLINE
    assert later.reason == (
        "pull failed 3 time(s), 0 connected: OSError: Connection refused (attempt 3, next in 4.2 s)"
    )
    client.stats.attempts, client.stats.retry_at = 4, None  # the next attempt is under way
    (trying,) = asyncio.run(health.collect())
    assert trying.state is StreamStateKind.OFFLINE and trying.reason.endswith("(attempt 4, trying now)")
    metrics = {(name, labels): value for name, labels, value in health.samples()}
    assert metrics[("camflow_ingest_pull_attempts", ("cam8",))] == 4
    assert metrics[("camflow_ingest_pull_failures", ("cam8",))] == 3
    assert metrics[("camflow_ingest_pull_connected", ("cam8",))] == 0


def test_the_session_gauge_is_what_runs_at_the_scrape_not_at_the_last_tick() -> None:
    publishers = [Publisher(LocalBus(), "wcam", codec=H264, segment_target=defaults.SEGMENT_TARGET)]
    health = IngestHealth(LocalBus(), whip=lambda: list(publishers), segment_target=defaults.SEGMENT_TARGET)

    def sessions() -> float:
        return sum(
            v
            for name, labels, v in health.samples()
            if (name, labels) == ("camflow_ingest_sessions", ("whip",))
        )

    assert sessions() == 1  # before any health tick saw it
    asyncio.run(health.collect())
    publishers.clear()  # the session ends between two ticks
    assert sessions() == 0
    frames = [v for name, labels, v in health.samples() if name == "camflow_ingest_frames"]
    assert frames == [0.0]  # its counters stay until the tick folds them
