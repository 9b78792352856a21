"""Regions without the backends: the directory and heartbeat documents, the ownership rule, two
packagers of two regions over one store (a replica that replicates at once), the edge's redirect.
The two-region deployment on real Kafka and MinIO is tests/test_regions_functional.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from camflow.bus import LocalBus
from camflow.cli.tail import figures
from camflow.errors import NotFound
from camflow.events import TOPIC_READY, TOPIC_STREAMS, SegmentReady, StreamState, StreamStateKind, encode
from camflow.keys import (
    directory_key,
    heartbeat_key,
    master_playlist_key,
    media_playlist_key,
    recording_index_key,
)
from camflow.recordings import bucket_of, format_bucket
from camflow.regions import (
    GONE_SECONDS,
    SETTLE_SECONDS,
    DirectoryEntry,
    Heartbeat,
    Peer,
    RegionConfig,
    RegionError,
    RegionWatch,
    owns,
)
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from packager.health import PackagerHealth
from packager.service import Packager
from tests import defaults
from tests.test_packager import EPOCH_A, EPOCH_B, STREAM, T0, ready

A = RegionConfig("a", "http://edge-a.example:8080")
B = RegionConfig("b", "http://edge-b.example:8080")


def entry(region: str, epoch: str, live: bool = True) -> DirectoryEntry:
    return DirectoryEntry(STREAM, region, epoch, live, f"http://edge-{region}.example:8080", T0)


def test_documents_round_trip() -> None:
    e = entry("a", EPOCH_A)
    assert DirectoryEntry.parse(e.render()) == e
    beat = Heartbeat("b", "http://edge-b.example", T0 + 0.25)
    assert Heartbeat.parse(beat.render()) == beat


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1, "stream": "cam1", "region": "a", "epoch": "bad", "live": true, "edge": "", "at": "x"}',
        b'{"v": 1, "stream": "cam1", "region": "a b", "epoch": "20261121T101500000Z", "live": true,'
        b' "edge": "", "at": "2026-11-21T10:15:00.000Z"}',
        b'{"v": 1, "stream": "cam1", "region": "a", "epoch": "20261121T101500000Z", "live": "yes",'
        b' "edge": "", "at": "2026-11-21T10:15:00.000Z"}',
        b"\xff\xfe",
    ],
)
def test_bad_directory_entries_are_refused(data: bytes) -> None:
    with pytest.raises(RegionError):
        DirectoryEntry.parse(data)


def test_the_newest_epoch_owns_the_stream() -> None:
    assert owns("a", EPOCH_A, None)
    assert owns("a", EPOCH_A, entry("a", EPOCH_B))  # its own entry, whatever the epoch
    assert not owns("a", EPOCH_A, entry("b", EPOCH_B))  # b took over with a newer session
    assert owns("a", EPOCH_B, entry("b", EPOCH_A))  # the camera came back to a
    assert owns("a", EPOCH_A, entry("b", EPOCH_A)) and not owns("b", EPOCH_A, entry("a", EPOCH_A))


class Region:
    def __init__(self, config: RegionConfig, store: FileStore) -> None:
        self.bus = LocalBus()
        self.packager = Packager(
            self.bus,
            store,
            **defaults.packager(gap_timeout=10.0, offline_grace=0.0, dvr_window=0.0, region=config),
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.packager.run(self.stop))
        await asyncio.wait_for(self.packager.ready.wait(), 2)

    async def settled(self) -> None:
        assert self.packager.regions is not None
        for _ in range(100):  # bounded: 5 s
            if self.packager.regions.settled():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the region never settled")

    async def lag_known(self, peer: str) -> None:
        assert self.packager.regions is not None
        for _ in range(100):  # bounded: 5 s
            seen = self.packager.regions.peers.get(peer)
            if seen is not None and seen.lag is not None:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no replication lag of region {peer} was ever measured")

    async def send(self, *events: SegmentReady | StreamState) -> None:
        for ev in events:
            topic = TOPIC_READY if isinstance(ev, SegmentReady) else TOPIC_STREAMS
            await self.bus.publish(topic, ev.stream, encode(ev))
        for _ in range(50):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    s = FileStore(tmp_path / "store")
    await s.start()
    yield s
    await s.close()


async def text(store: FileStore, key: str) -> str | None:
    try:
        return (await store.get(key)).decode()
    except NotFound:
        return None


async def test_a_region_coming_back_leaves_the_stream_to_the_new_owner(store: FileStore) -> None:
    a, b = Region(A, store), Region(B, store)
    await a.start()
    await b.start()
    try:
        await a.settled()
        await b.settled()
        await a.send(ready(EPOCH_A, 0), ready(EPOCH_A, 1))
        claimed = DirectoryEntry.parse(await store.get(directory_key(STREAM)))
        assert (claimed.region, claimed.epoch, claimed.live, claimed.edge) == ("a", EPOCH_A, True, A.edge_url)
        assert f"{EPOCH_A}/720p/00000001.m4s" in (await text(store, media_playlist_key(STREAM, "720p")) or "")
        # Region a is gone; the camera reconnects to b: a new epoch there, b owns the stream, and its
        # playlist goes on from what a wrote (restored from the replica), across a discontinuity.
        await b.send(ready(EPOCH_B, 0))
        assert DirectoryEntry.parse(await store.get(directory_key(STREAM))).region == "b"
        after_b = await text(store, media_playlist_key(STREAM, "720p"))
        assert (
            after_b
            and f"{EPOCH_A}/720p/00000001.m4s" in after_b
            and f"{EPOCH_B}/720p/00000000.m4s" in after_b
        )
        assert "#EXT-X-DISCONTINUITY" in after_b
        master = await text(store, master_playlist_key(STREAM))
        # a comes back with the rest of its old session: its epoch's own objects only.
        a.packager.ownership.forget()
        await a.send(
            ready(EPOCH_A, 2), StreamState(STREAM, EPOCH_A, StreamStateKind.OFFLINE, "gone", T0 + 9, 2)
        )
        assert await text(store, media_playlist_key(STREAM, "720p")) == after_b
        assert await text(store, master_playlist_key(STREAM)) == master
        assert DirectoryEntry.parse(await store.get(directory_key(STREAM))).region == "b"
        assert a.packager.ownership.foreign_flushes >= 2 and a.packager.ownership.owner(STREAM) == "b"
        chunk = recording_index_key(STREAM, format_bucket(bucket_of(T0 + 4.0)), EPOCH_A)
        assert '"seq":2' in (await text(store, chunk) or "").replace(" ", "")
        # b goes on as the owner.
        await b.send(ready(EPOCH_B, 1))
        assert f"{EPOCH_B}/720p/00000001.m4s" in (await text(store, media_playlist_key(STREAM, "720p")) or "")
        # The health feed (camflow tail) says where each region stands; b's lag needs two of a's
        # heartbeats (0.5 s apart) seen, which a loaded machine may not have reached yet.
        await b.lag_known("a")
        (from_a,) = [s for s in await PackagerHealth(a.packager).collect() if s.stream == STREAM]
        (from_b,) = [s for s in await PackagerHealth(b.packager).collect() if s.stream == STREAM]
        assert (from_a.region, from_a.owner, from_b.region, from_b.owner) == ("a", "b", "b", "b")
        assert from_b.replication_lag is not None and from_b.replication_lag < 2.0
        assert {"region=a", "owner=b"} <= set(figures(from_a)) and "owner=b" not in figures(from_b)
    finally:
        await a.close()
        await b.close()


async def started(watch: RegionWatch) -> RegionWatch:
    """``watch`` as a packager starts it: its first beat and look (every peer's heartbeat read),
    then stopped."""
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    for _ in range(100):  # bounded: 5 s (a loaded machine may take a while over the first look)
        await asyncio.sleep(0.05)
        if watch.peers and all(p.written_at is not None for p in watch.peers.values()):
            break
    stop.set()
    await task
    return watch


async def test_heartbeats_give_each_region_its_peers_lag(store: FileStore) -> None:
    now = [T0]
    a = RegionWatch(store, A, clock=lambda: now[0])
    b = RegionWatch(store, B, clock=lambda: now[0])
    await b.beat()
    await a.beat()
    await b.look()  # the first heartbeat seen may be from long ago: no lag from it
    assert b.peers["a"].lag is None and b.peers["a"].edge == A.edge_url
    assert not b.settled()  # a's heartbeat may be an old one: the replica may be behind
    now[0] += 1.0
    await a.beat()
    now[0] += 0.25  # the replica had it 0.25 s after it was written
    await b.look()
    assert b.peers["a"].lag == pytest.approx(0.25) and b.worst_lag() == pytest.approx(0.25)
    assert not b.settled()
    now[0] += SETTLE_SECONDS  # replication from a flows, and a's claims were rewritten since
    assert b.settled()
    # A region coming back (its own heartbeat here is old) waits for its peers' newer writes.
    back = await started(RegionWatch(store, A, clock=lambda: now[0]))
    assert back.peers["b"].written_at is not None and not back.settled()
    restarted = await started(RegionWatch(store, A, clock=lambda: now[0]))  # its heartbeat is fresh now
    assert not restarted.settled()  # ... but b's is old: b may be away, or this replica behind
    await b.beat()
    fresh = await started(RegionWatch(store, A, clock=lambda: now[0]))
    assert fresh.settled()  # both fresh: a restart trusts its replica at once
    lone = RegionWatch(store, RegionConfig("c", "http://edge-c.example"), clock=lambda: now[0])
    lone.peers["gone"] = Peer("gone")
    await lone.look()  # lists a and b too: neither advances
    assert not lone.settled()
    now[0] += GONE_SECONDS
    assert lone.settled()  # peers that never advanced in a minute are gone
    assert b.peers["a"].age(now[0]) == pytest.approx(0.25 + SETTLE_SECONDS + GONE_SECONDS)
    assert "b" not in a.peers and not await store.list(heartbeat_key("c"))


async def test_the_edge_redirects_live_playlists_of_a_stream_live_elsewhere(store: FileStore) -> None:
    signer = TokenSigner(b"a-test-secret-of-32-bytes-or-more!")
    token = signer.issue(STREAM, Action.VIEW, ttl=600)
    app = build_app(store, signer, **defaults.edge_app(region=B))
    watch_a = RegionWatch(store, A)
    async with TestClient(TestServer(app)) as client:
        master = f"/live/{STREAM}/master.m3u8?token={token}"
        resp = await client.get(master, allow_redirects=False)
        assert resp.status == 404  # not live anywhere: served here (and not found)
        where = f"/api/streams/{STREAM}/region?token={token}"
        resp = await client.get(where)
        assert resp.status == 404 and (await resp.json())["error"] == "not_in_directory"
        await watch_a.claim(STREAM, EPOCH_A, live=True)
        await watch_a.beat()
        await asyncio.sleep(2.1)  # the edge's cached answer expires
        resp = await client.get(master, allow_redirects=False)
        assert resp.status == 307, await resp.text()
        assert resp.headers["Location"] == A.edge_url + master
        assert resp.headers["Cache-Control"] == "no-store"
        answer = await (await client.get(where)).json()
        assert {k: answer[k] for k in ("region", "epoch", "live", "edge", "served_here")} == {
            "region": "a",
            "epoch": EPOCH_A,
            "live": True,
            "edge": A.edge_url,
            "served_here": False,
        }
        assert 0 <= answer["heartbeat_age"] < 10
        assert (await client.get(f"/api/streams/{STREAM}/region")).status == 401
        no_token = await client.get(f"/live/{STREAM}/master.m3u8", allow_redirects=False)
        assert no_token.status == 401  # no token, no knowing where streams are live
        await watch_a.claim(STREAM, EPOCH_A, live=False)  # it ended: recordings and the rest are here
        await asyncio.sleep(2.1)
        resp = await client.get(master, allow_redirects=False)
        assert resp.status == 404
        assert (await (await client.get(where)).json())["served_here"] is True
    async with TestClient(TestServer(build_app(store, signer, **defaults.edge_app()))) as one_region:
        resp = await one_region.get(f"/api/streams/{STREAM}/region?token={token}")
        assert resp.status == 404 and (await resp.json())["error"] == "no_regions"
