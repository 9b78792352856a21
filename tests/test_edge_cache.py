"""edge.cache: LRU bounded in bytes, expiry, and request coalescing (unit and over real HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from camflow.errors import NotFound
from camflow.store import FileStore, ObjectInfo
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.cache import ObjectCache, content_etag
from edge.state import EDGE
from tests import defaults

EPOCH = "20261121T101500123Z"
SECRET = b"edge-cache-secret-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(FileStore):
    """A FileStore that counts reads per key and holds each read open until ``release`` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: dict[str, int] = {}
        self.release = asyncio.Event()
        self.release.set()

    async def get(self, key: str) -> bytes:
        self.reads[key] = self.reads.get(key, 0) + 1
        await self.release.wait()
        return await super().get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        self.reads[key] = self.reads.get(key, 0) + 1
        return await super().head(key)


def loader(data: dict[str, bytes], calls: list[str]):  # type: ignore[no-untyped-def]
    async def load(key: str) -> bytes:
        calls.append(key)
        await asyncio.sleep(0)
        if key not in data:
            raise NotFound(f"no object at key {key!r}")
        return data[key]

    return load


def forever(_: bytes) -> None:
    return None


async def test_lru_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    cache = ObjectCache(max_bytes=250)
    data = {k: k.encode() * 100 for k in ("a", "b", "c")}  # 100 bytes each
    calls: list[str] = []
    load = loader(data, calls)
    await cache.get("a", load, forever)
    await cache.get("b", load, forever)
    await cache.get("a", load, forever)  # a is now the most recent
    await cache.get("c", load, forever)  # 300 > 250: b goes
    assert cache.size_bytes == 200
    assert cache.peek("b") is None and cache.peek("a") is not None and cache.peek("c") is not None
    assert cache.stats.evictions == 1
    await cache.get("a", load, forever)
    assert calls == ["a", "b", "c"]


async def test_an_object_larger_than_the_cache_is_served_not_kept() -> None:
    cache = ObjectCache(max_bytes=10)
    calls: list[str] = []
    obj = await cache.get("big", loader({"big": b"x" * 11}, calls), forever)
    assert obj.data == b"x" * 11
    assert len(cache) == 0 and cache.size_bytes == 0
    assert cache.stats.uncacheable == 1


async def test_playlists_expire_and_keep_last_modified_when_unchanged() -> None:
    clock = Clock()
    cache = ObjectCache(max_bytes=1000, clock=clock)
    data = {"p": b"v1"}
    calls: list[str] = []
    first = await cache.get("p", loader(data, calls), lambda _: 0.5)
    clock.now += 0.4
    await cache.get("p", loader(data, calls), lambda _: 0.5)
    assert calls == ["p"]
    clock.now += 0.2
    again = await cache.get("p", loader(data, calls), lambda _: 0.5)
    assert calls == ["p", "p"]
    assert again.etag == first.etag and again.last_modified == first.last_modified
    data["p"] = b"v2"
    clock.now += 1
    changed = await cache.get("p", loader(data, calls), lambda _: 0.5)
    assert changed.etag == content_etag(b"v2") != first.etag


async def test_concurrent_misses_coalesce_into_one_load_and_errors_reach_everyone() -> None:
    cache = ObjectCache(max_bytes=1000)
    calls: list[str] = []
    load = loader({"k": b"data"}, calls)
    got = await asyncio.gather(*(cache.get("k", load, forever) for _ in range(100)))
    assert calls == ["k"] and all(g.data == b"data" for g in got)
    assert cache.stats.coalesced == 99
    results = await asyncio.gather(
        *(cache.get("nope", load, forever) for _ in range(50)), return_exceptions=True
    )
    assert calls == ["k", "nope"]
    assert all(isinstance(r, NotFound) for r in results)
    assert cache.peek("nope") is None


async def test_a_waiter_that_goes_away_does_not_cancel_the_load() -> None:
    cache = ObjectCache(max_bytes=1000)
    gate = asyncio.Event()
    calls: list[str] = []

    async def slow(key: str) -> bytes:
        calls.append(key)
        await gate.wait()
        return b"ok"

    first = asyncio.create_task(cache.get("k", slow, forever))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get("k", slow, forever))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second).data == b"ok"
    assert calls == ["k"]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_500_concurrent_cold_http_requests_cause_exactly_one_store_read(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "store")
    await store.start()
    key = f"streams/cam1/{EPOCH}/source/00000001.m4s"
    segment = bytes(range(256)) * 2000  # 512 000 bytes
    await store.put(key, segment)
    store.release.clear()  # hold the one read open until every request has arrived
    signer = TokenSigner(SECRET)
    token = signer.issue("cam1", Action.VIEW, ttl=300)
    app = build_app(store, signer, **defaults.edge_app())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        url = client.make_url(f"/live/cam1/{EPOCH}/source/00000001.m4s").with_query(token=token)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def fetch() -> tuple[int, bytes]:
                async with session.get(url) as resp:
                    return resp.status, await resp.read()

            tasks = [asyncio.create_task(fetch()) for _ in range(500)]
            cache = app[EDGE].cache
            for _ in range(500):  # bounded: wait until all 500 are waiting on the one load
                if cache.stats.misses + cache.stats.coalesced >= 500:
                    break
                await asyncio.sleep(0.02)
            store.release.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert all(status == 200 and body == segment for status, body in results)
    assert store.reads == {key: 1}
    assert cache.stats.misses == 1 and cache.stats.coalesced == 499
