"""The stream catalog learns stream names without listing every object under ``streams/``.

Against a FileStore and MinIO: the catalog asks the store for the folders under ``streams/``
(one delimited listing) and never lists every key; ``/api/streams`` stays right.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from camflow.store import FileStore, Store
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.cache import ObjectCache
from edge.catalog import StreamCatalog
from edge.delivery import object_fetcher
from edge.policy import PlaylistPolicy
from tests import defaults
from tests.test_edge import EPOCH, MASTER, MEDIA, SEG1
from tests.test_store import s3_store


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "file":
        file_store = FileStore(tmp_path / "store")
        await file_store.start()
        yield file_store
        await file_store.close()
    else:
        async with s3_store() as s3:
            yield s3


class Calls:
    """Every ``list``, ``children`` and ``head`` the store is asked for."""

    def __init__(self, store: Store) -> None:
        self.log: dict[str, list[str]] = {"list": [], "children": [], "head": []}
        for name, log in self.log.items():
            setattr(store, name, self._counted(getattr(store, name), log))

    @staticmethod
    def _counted(real: Callable[[str], Awaitable[Any]], log: list[str]) -> Callable[[str], Awaitable[Any]]:
        async def counted(arg: str) -> Any:
            log.append(arg)
            return await real(arg)

        return counted


async def seed(store: Store, stream: str, segments: int = 3) -> None:
    for seq in range(1, segments + 1):
        await store.put(f"streams/{stream}/{EPOCH}/source/{seq:08d}.m4s", SEG1)
    await store.put(f"streams/{stream}/source.m3u8", MEDIA.encode())
    await store.put(f"streams/{stream}/master.m3u8", MASTER.encode())


async def test_names_come_from_the_folders_without_listing_every_key(store: Store) -> None:
    await seed(store, "cam1")
    await seed(store, "cam2")
    await store.put(f"streams/early/{EPOCH}/source/00000001.m4s", SEG1)  # no master playlist yet
    calls = Calls(store)
    catalog = StreamCatalog(store, object_fetcher(ObjectCache(1 << 20), store, PlaylistPolicy()))

    assert await catalog.refresh() == ["cam1", "cam2", "early"]
    assert calls.log["children"] == ["streams/"]
    assert calls.log["list"] == [] and calls.log["head"] == []
    assert await catalog.summary("early") is None  # skipped by the stream list and the API
    assert (await catalog.summary("cam1")) is not None

    await seed(store, "cam3", segments=1)
    assert await catalog.refresh() == ["cam1", "cam2", "cam3", "early"]
    assert calls.log["children"] == ["streams/", "streams/"]
    assert calls.log["list"] == []


async def test_api_streams_follows_the_store(store: Store) -> None:
    signer = TokenSigner(b"edge-catalog-secret-0123456789")
    admin = signer.issue("*", Action.ADMIN, ttl=300)
    await seed(store, "cam1")
    calls = Calls(store)
    app = build_app(store, signer, **defaults.edge_app(catalog_interval=0.1))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:

        async def listed() -> list[str]:
            resp = await client.get("/api/streams", params={"token": admin})
            assert resp.status == 200
            return [s["stream"] for s in (await resp.json())["streams"]]

        async def wait_for(names: list[str]) -> None:
            for _ in range(100):
                if await listed() == names:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"/api/streams never became {names}: {await listed()}")

        await wait_for(["cam1"])
        await store.put(f"streams/cam2/{EPOCH}/source/00000001.m4s", SEG1)
        await asyncio.sleep(0.3)
        assert await listed() == ["cam1"]  # a folder without a master playlist is not a stream yet
        await store.put("streams/cam2/source.m3u8", MEDIA.encode())
        await store.put("streams/cam2/master.m3u8", MASTER.encode())
        await wait_for(["cam1", "cam2"])
    assert calls.log["list"] == []  # never a listing of every key
    assert calls.log["children"] and set(calls.log["children"]) == {"streams/"}
