"""Two regions' object stores linked by MinIO site replication (scripts/regions.sh, tests/regions.py):
an object camflow's S3Store writes in either region appears in the other (active-active), within a
replication lag measured here; a region whose MinIO was away receives, once it is back, what the
other region wrote meanwhile (MinIO's resync).

"Appears" means a replica on the region's own drives: a MinIO of a replicated group answers a read
of an object it does not hold yet by fetching it from its peer (a proxied read), so each check
asks for the object's replication status there to be REPLICA, and reads its bytes back.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator

import pytest

from camflow.errors import StoreUnavailable
from camflow.store.replication import Site, Sites
from camflow.store.s3 import S3Location, S3Store
from tests.regions import BUCKET, Regions, regions_running

pytestmark = pytest.mark.integration
POLL_S = 0.01
BOUND_S = 10.0
OBJECTS = 10  # per direction, for the lag figures


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    with regions_running(tmp_path_factory.mktemp("regions")) as running:
        yield running


@pytest.fixture
def stores(regions: Regions, monkeypatch: pytest.MonkeyPatch) -> dict[str, S3Store]:
    for name, value in regions.client_env.items():
        monkeypatch.setenv(name, value)
    return {r.name: S3Store(S3Location.parse(r.s3)) for r in (regions.a, regions.b)}


@pytest.fixture
def sites(regions: Regions) -> Sites:
    return Sites([Site(r.name, r.minio_url) for r in (regions.a, regions.b)], regions.client_env)


def replicated_within(sites: Sites, region: str, key: str, bound: float = BOUND_S) -> float:
    """Seconds until ``key`` is a replica in ``region`` (polled every 10 ms); fails after ``bound``."""
    site = next(s for s in sites.sites if s.name == region)
    start = time.monotonic()
    while not sites.replica(site, BUCKET, key):
        if time.monotonic() - start > bound:
            pytest.fail(f"{key} not replicated to region {region} within {bound:g} s")
        time.sleep(POLL_S)
    return time.monotonic() - start


def ms(seconds: list[float]) -> str:
    return (
        f"p50 {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms "
        f"({len(seconds)} objects)"
    )


async def test_linked_regions_replicate_both_ways(stores: dict[str, S3Store], sites: Sites) -> None:
    # The bucket is in both: made once, on A, after the link (checked before S3Store.start would make it).
    assert all(sites.has_bucket(site, BUCKET) for site in sites.sites)
    for store in stores.values():
        await store.start()
    run = uuid.uuid4().hex[:8]
    lags: dict[str, list[float]] = {}
    for source, target in (("A", "B"), ("B", "A")):
        lags[source] = []
        for i in range(OBJECTS):
            key = f"streams/cam{source}/{run}/720p/{i:08d}.m4s"
            data = f"{source} {run} {i}".encode() * 1000
            await stores[source].put(key, data, "video/iso.segment")
            lags[source].append(replicated_within(sites, target, key))
            assert await stores[target].get(key) == data
        print(f"\nreplication lag {source} -> {target}: {ms(lags[source])}")
    # What each site says of it: both in the group, every replica received counted, no errors.
    for site in sites.sites:
        metrics = sites.status(site)["Metrics"]
        assert metrics["replicaCount"] >= OBJECTS, metrics
        assert metrics["errors"]["total"] == 0, metrics


async def test_region_back_from_an_outage_receives_what_it_missed(
    regions: Regions, stores: dict[str, S3Store], sites: Sites
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"streams/camB/{run}/720p/{i:08d}.m4s" for i in range(5)]
    regions.stop_minio("A")
    try:
        for i, key in enumerate(keys):  # B takes writes while A is away
            await stores["B"].put(key, f"written while A was away {i}".encode(), "video/iso.segment")
        with pytest.raises(StoreUnavailable):
            await stores["A"].head(keys[0])
    finally:
        started = time.monotonic()
        regions.start_minio("A")
    back = time.monotonic()
    print(f"\nregion A's MinIO back in {back - started:.2f} s")
    resync = []
    for key in keys:
        replicated_within(sites, "A", key)
        resync.append(time.monotonic() - back)
    print(f"resync to A, since it was back: {ms(resync)}")
    for i, key in enumerate(keys):
        assert await stores["A"].get(key) == f"written while A was away {i}".encode()
