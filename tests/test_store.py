from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from camflow.errors import ConfigError, NotFound
from camflow.store import FileStore, Store
from camflow.store.base import Browsable, UnsafeKey
from camflow.store.s3 import S3Location, S3Store
from tests import services

KEY = "streams/cam-1/20261121T101500123Z/360p/00000001.m4s"
UNSAFE = ["", "..", "../outside", "streams/../../outside", "/etc/passwd", "streams//a", "streams/./a", "a b"]


def s3_endpoint() -> str:
    """scheme://host:port of the test S3, without its bucket."""
    parts = urlsplit(services.require("s3"))
    return f"{parts.scheme}://{parts.netloc}"


def empty_bucket(store: S3Store) -> None:
    client, bucket = store._client, store.location.bucket
    for obj in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, obj.object_name)
    client.remove_bucket(bucket)


@contextlib.asynccontextmanager
async def s3_store(prefix: str = "") -> AsyncIterator[S3Store]:
    """A started S3Store on a bucket of its own, emptied and removed afterwards."""
    url = f"{s3_endpoint()}/camflow-t-{uuid.uuid4().hex[:20]}" + (f"/{prefix}" if prefix else "")
    store = S3Store(S3Location.parse(url))
    try:
        await store.start()
        yield store
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(empty_bucket, store)
        await store.close()


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "file":
        file_store = FileStore(tmp_path / "store")
        await file_store.start()
        yield file_store
        await file_store.close()
    else:
        async with s3_store() as s3:
            yield s3


async def test_put_get_head_delete(store: Store) -> None:
    data = bytes(range(256)) * 1000
    await store.put(KEY, data, "video/iso.segment")
    assert await store.get(KEY) == data
    info = await store.head(KEY)
    assert info is not None
    assert (info.key, info.size) == (KEY, len(data))
    assert info.etag and info.last_modified > 0
    await store.delete(KEY)
    assert await store.head(KEY) is None
    with pytest.raises(NotFound, match="no object at key"):
        await store.get(KEY)


async def test_missing_objects(store: Store) -> None:
    with pytest.raises(NotFound, match="streams/none"):
        await store.get("streams/none")
    assert await store.head("streams/none") is None
    assert await store.list("streams/") == []
    await store.delete("streams/none")  # not an error


async def test_empty_object(store: Store) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    info = await store.head("empty")
    assert info is not None and info.size == 0


async def test_list_prefix_is_sorted_and_exact(store: Store) -> None:
    keys = ["streams/b/x.m3u8", "streams/a/2.m4s", "streams/a/1.m4s", "streams/ab/1.m4s", "other/a/1.m4s"]
    await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
    assert await store.list("streams/a/") == ["streams/a/1.m4s", "streams/a/2.m4s"]
    assert await store.list("streams/a") == ["streams/a/1.m4s", "streams/a/2.m4s", "streams/ab/1.m4s"]
    assert await store.list("streams/") == sorted(k for k in keys if k.startswith("streams/"))
    assert await store.list("") == sorted(keys)
    assert await store.list("nothing/") == []


async def test_children_name_the_folders_one_level_down(store: Store) -> None:
    keys = ["streams/b/x.m3u8", "streams/a/e1/1.m4s", "streams/ab/1.m4s", "streams/top.json", "other/c/1"]
    await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
    assert isinstance(store, Browsable)
    assert await store.children("streams/") == ["a", "ab", "b"]
    assert await store.children("streams/a/") == ["e1"]
    assert await store.children("nothing/") == []


async def test_overwrite_replaces_the_whole_object(store: Store) -> None:
    await store.put(KEY, b"a" * 100_000)
    await store.put(KEY, b"b" * 10)
    assert await store.get(KEY) == b"b" * 10
    assert await store.list("streams/") == [KEY]


async def test_concurrent_overwrites_never_show_a_mix(store: Store) -> None:
    versions = [bytes([i]) * 200_000 for i in range(8)]
    await store.put(KEY, versions[0])
    reads: list[bytes] = []

    async def reader() -> None:
        for _ in range(20):
            reads.append(await store.get(KEY))

    await asyncio.gather(reader(), *(store.put(KEY, v) for v in versions[1:]))
    assert all(r in versions for r in reads)
    assert await store.get(KEY) in versions


async def test_file_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.start()
    await asyncio.gather(*(store.put(KEY, bytes([i]) * 50_000) for i in range(10)))
    files = [Path(d, f).relative_to(tmp_path).as_posix() for d, _, fs in os.walk(tmp_path) for f in fs]
    assert files == [KEY]


async def test_file_store_list_hides_temp_files_and_unwritten_paths(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.start()
    await store.put("streams/a/1.m4s", b"1")
    (tmp_path / "streams/a/.tmp-abc.2.m4s").write_bytes(b"half")
    assert await store.list("streams/") == ["streams/a/1.m4s"]
    assert await store.head("streams/a") is None  # a directory is not an object
    with pytest.raises(NotFound):
        await store.get("streams/a")


Op = Callable[[Store, str], Awaitable[Any]]
OPS: dict[str, Op] = {
    "put": lambda s, k: s.put(k, b"x"),
    "get": lambda s, k: s.get(k),
    "head": lambda s, k: s.head(k),
    "delete": lambda s, k: s.delete(k),
}


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
@pytest.mark.parametrize("key", UNSAFE)
async def test_unsafe_keys_refused_before_any_io(tmp_path: Path, op: Op, key: str) -> None:
    root = tmp_path / "never-created"
    with pytest.raises(UnsafeKey, match="is not a relative path"):
        await op(FileStore(root), key)
    assert not root.exists() and sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prefix", ["../", "/etc/", "a/../../", "a//b/"])
async def test_unsafe_list_prefix_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(UnsafeKey):
        await FileStore(tmp_path).list(prefix)


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
async def test_s3_unsafe_keys_refused_before_any_io(op: Op) -> None:
    # An endpoint where nothing listens: any request would fail with a connection error instead.
    location = S3Location.parse("http://127.0.0.1:9/never")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "x")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "y")
        store = S3Store(location)
    try:
        for key in UNSAFE:
            with pytest.raises(UnsafeKey):
                await op(store, key)
        with pytest.raises(UnsafeKey):
            await store.list("../")
    finally:
        await store.close()


async def test_s3_prefix_isolates_keys() -> None:
    async with s3_store(prefix="tenant-a/deep") as a:
        b = S3Store(S3Location.parse(f"{s3_endpoint()}/{a.location.bucket}/tenant-b"))
        whole = S3Store(S3Location.parse(f"{s3_endpoint()}/{a.location.bucket}"))
        try:
            await a.put(KEY, b"from a")
            await b.put(KEY, b"from b")
            assert await a.get(KEY) == b"from a"
            assert await b.get(KEY) == b"from b"
            assert await a.list("") == [KEY] == await b.list("streams/")
            assert await whole.list("") == [f"tenant-a/deep/{KEY}", f"tenant-b/{KEY}"]
            info = await a.head(KEY)
            assert info is not None and info.key == KEY
            await a.delete(KEY)
            assert await a.head(KEY) is None and await b.get(KEY) == b"from b"
        finally:
            await b.close()
            await whole.close()


async def test_s3_start_is_idempotent() -> None:
    async with s3_store() as store:
        await store.start()
        await store.put("a", b"1")
        assert await store.list("") == ["a"]


def test_s3_store_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        S3Store(S3Location.parse("http://127.0.0.1:9/b"))


LOCATIONS = {
    "bucket only": ("http://minio:9000/media", S3Location("minio:9000", False, "media", "")),
    "https with prefix": (
        "https://s3.example.com/media/a/b/",
        S3Location("s3.example.com", True, "media", "a/b"),
    ),
    "extra slashes": ("http://h:1//media//p//", S3Location("h:1", False, "media", "p")),
}


@pytest.mark.parametrize(("url", "expected"), LOCATIONS.values(), ids=LOCATIONS.keys())
def test_s3_location_parse(url: str, expected: S3Location) -> None:
    assert S3Location.parse(url) == expected


BAD_LOCATIONS = {
    "no bucket": ("http://minio:9000", "names no bucket"),
    "slash only": ("http://minio:9000/", "names no bucket"),
    "ftp": ("ftp://minio/media", "is not of the form"),
    "no scheme": ("minio:9000/media", "is not of the form"),
    "no host": ("http:///media", "is not of the form"),
    "empty": ("", "is not of the form"),
}


@pytest.mark.parametrize(("url", "message"), BAD_LOCATIONS.values(), ids=BAD_LOCATIONS.keys())
def test_s3_location_parse_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        S3Location.parse(url)


async def test_s3_recording_media_carry_the_expire_tag_and_can_be_locked() -> None:
    """What the lifecycle backstop may expire is tagged as written; retention's lock takes it out."""
    async with s3_store("tenant") as s3:
        index = "streams/cam-1/recordings/20261121T101000Z/20261121T101500123Z.json"
        for key in (KEY, index):
            await s3.put(key, b"x")
        tags = await asyncio.to_thread(s3._client.get_object_tags, s3.location.bucket, f"tenant/{KEY}")
        assert tags == {"camflow-retention": "expire"}
        assert not await asyncio.to_thread(
            s3._client.get_object_tags, s3.location.bucket, f"tenant/{index}"
        )  # the index, events and playlists are retention's alone
        assert await s3.set_locked([KEY, "streams/cam-1/20261121T101500123Z/360p/gone.m4s"], True) == 1
        assert await asyncio.to_thread(s3.locked, KEY)
        assert await s3.set_locked([KEY], False) == 1 and not await asyncio.to_thread(s3.locked, KEY)
        await s3.set_expiration("streams/", 3)
        rules = (await asyncio.to_thread(s3._client.get_bucket_lifecycle, s3.location.bucket)).rules
        [rule] = [r for r in rules if r.rule_filter.and_operator is not None]
        assert rule.rule_filter.and_operator.prefix == "tenant/streams/"
        assert rule.rule_filter.and_operator.tags == {"camflow-retention": "expire"}
        await asyncio.to_thread(s3._client.delete_bucket_lifecycle, s3.location.bucket)
