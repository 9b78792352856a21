"""Ingest's health for pulled sources that have no session: connecting, then offline with the
error and the next attempt (the password never shown), and their Prometheus figures."""

from __future__ import annotations

import asyncio

from camflow.bus import LocalBus
from camflow.events import StreamStateKind
from ingest.health import IngestHealth
from ingest.pull import PullClient, PullSource


def test_a_pulled_source_without_a_session_reports_connecting_then_offline_with_its_error() -> None:
    now = [100.0]
    client = PullClient(LocalBus(), PullSource("cam8", "rtsp://cam:Secr3t-pw@10.9.9.9:554/live"))
    health = IngestHealth(LocalBus(), pull_clients=lambda: [client], clock=lambda: now[0])

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
