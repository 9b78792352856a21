"""The packager's health samples and metrics: how old each stream's playlists and live edge are.

For every stream whose playlists this process wrote lately, one ``HealthSample`` per health
interval: ``playlist_age`` (seconds since its playlists were written) and ``segment_age``
(now minus the wall-clock end of its newest ready segment: the latency of the live edge),
with the group's consumer lag and ``store_outage`` (how long the store has been unavailable to
the packager, 0 while it answers; the streams stay in the feed while an outage lasts). The same
ages are Prometheus gauges, computed at scrape time.

With ``--region`` (``camflow.regions``): the samples name the region and the stream's owner (from
the directory, as last read) and the slowest peer region's ``replication_lag``; per peer,
``camflow_region_replication_lag_seconds`` (how long its newest heartbeat took to replicate here)
and ``camflow_region_heartbeat_age_seconds`` (how old the newest heartbeat here is: what would be
lost of that region's writes were it lost now), with the claims and the flushes left to an owner
elsewhere as counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from camflow.events import HealthSample
from camflow.health import report_lag
from camflow.metrics import Sample, instance_name
from packager.service import GROUP, Packager

RECENT_SECONDS = 60.0  # streams written this recently get samples and gauges


class PackagerHealth:
    def __init__(self, packager: Packager) -> None:
        self.packager = packager
        self.instance = instance_name()
        self.lag: int | None = None

    def _recent(self, now: float) -> Iterator[tuple[str, float, float | None]]:
        """(stream, playlist age, live edge age) of streams written in the last ``RECENT_SECONDS``."""
        written = self.packager.playlists_written
        recent = RECENT_SECONDS + self.packager.store_outage.seconds()
        for stream in sorted(written):
            at = written[stream]
            if now - at > recent:
                continue
            edge = self.packager.live_edge.get(stream)
            yield stream, now - at, None if edge is None else max(0.0, now - edge)

    async def collect(self) -> list[HealthSample]:
        self.lag = await report_lag(self.packager.consumer, GROUP)
        now = time.time()
        outage = round(self.packager.store_outage.seconds(), 3)
        regions = self.packager.regions
        region = "" if regions is None else regions.config.name
        lag = None if regions is None else regions.worst_lag()
        return [
            HealthSample(
                stream=stream,
                service="package",
                instance=self.instance,
                at=now,
                playlist_age=round(playlist_age, 3),
                segment_age=None if edge_age is None else round(edge_age, 3),
                consumer_lag=self.lag,
                store_outage=outage,
                region=region,
                owner=self.packager.ownership.owner(stream),
                replication_lag=None if lag is None else round(lag, 3),
            )
            for stream, playlist_age, edge_age in self._recent(now)
        ]

    def samples(self) -> Iterator[Sample]:
        """Ages and counters (a ``camflow.metrics`` source)."""
        yield "camflow_packager_segments", (), float(self.packager.stats.segments_appended)
        stats = self.packager.stats
        for result, count in (("listed", stats.parts_listed), ("dropped", stats.parts_dropped)):
            yield "camflow_packager_parts", (result,), float(count)
        yield "camflow_packager_parts", ("deleted",), float(stats.parts_deleted)
        kept = self.packager.retention.stats
        yield "camflow_retention_segments", ("deleted",), float(kept.segments_deleted)
        yield "camflow_retention_kept_segments", ("named",), float(kept.kept_named)
        yield "camflow_retention_kept_segments", ("locked",), float(kept.kept_locked)
        yield from self.packager.store_outage.samples()
        regions = self.packager.regions
        if regions is not None:
            now = time.time()
            for name, peer in sorted(regions.peers.items()):
                if peer.lag is not None:
                    yield "camflow_region_replication_lag_seconds", (name,), round(peer.lag, 3)
                if (age := peer.age(now)) is not None:
                    yield "camflow_region_heartbeat_age_seconds", (name,), round(age, 3)
            yield "camflow_region_claims", (), float(self.packager.ownership.claims)
            yield "camflow_region_foreign_flushes", (), float(self.packager.ownership.foreign_flushes)
        for stream, playlist_age, edge_age in self._recent(time.time()):
            yield "camflow_packager_playlist_age_seconds", (stream,), round(playlist_age, 3)
            if edge_age is not None:
                yield "camflow_packager_live_edge_age_seconds", (stream,), round(edge_age, 3)
