"""The edge, functional: a real aiohttp server on 127.0.0.1 over a FileStore seeded like the packager does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from camflow.errors import StoreUnavailable
from camflow.store import FileStore, ObjectInfo
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.service import EdgeServer, run_edge
from tests import defaults

EPOCH = "20261121T101500123Z"
SECRET = b"edge-test-secret-0123456789"
INIT = b"\x00\x00\x00\x18ftypiso6" + b"\x00" * 12
SEG1 = b"\x00\x00\x00\x10styp" + b"1" * 100
SEG2 = b"\x00\x00\x00\x10styp" + b"2" * 120
MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS="avc1.64001f"
source.m3u8
"""
MEDIA = f"""#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-MAP:URI="{EPOCH}/source/init.mp4"
#EXTINF:2.000,
{EPOCH}/source/00000001.m4s
#EXTINF:2.000,
{EPOCH}/source/00000002.m4s
"""
SEG_PATH = f"/live/cam1/{EPOCH}/source/00000001.m4s"
INIT_PATH = f"/live/cam1/{EPOCH}/source/init.mp4"

Client = TestClient[web.Request, web.Application]


class RecordingStore(FileStore):
    """A FileStore that remembers every key it was asked about."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.touched: list[str] = []

    async def get(self, key: str) -> bytes:
        self.touched.append(key)
        return await super().get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        self.touched.append(key)
        return await super().head(key)


class BrokenStore(FileStore):
    async def get(self, key: str) -> bytes:
        raise OSError("disk on fire")

    async def head(self, key: str) -> ObjectInfo | None:
        raise OSError("disk on fire")


@pytest.fixture
async def store(tmp_path: Path) -> RecordingStore:
    s = RecordingStore(tmp_path / "store")
    await s.start()
    await s.put("streams/cam1/master.m3u8", MASTER.encode())
    await s.put("streams/cam1/source.m3u8", MEDIA.encode())
    await s.put(f"streams/cam1/{EPOCH}/source/init.mp4", INIT)
    await s.put(f"streams/cam1/{EPOCH}/source/00000001.m4s", SEG1)
    await s.put(f"streams/cam1/{EPOCH}/source/00000002.m4s", SEG2)
    s.touched.clear()
    return s


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@pytest.fixture
def token(signer: TokenSigner) -> str:
    return signer.issue("cam1", Action.VIEW, ttl=300)


@pytest.fixture
async def client(store: RecordingStore, signer: TokenSigner) -> AsyncIterator[Client]:
    async with TestClient(
        TestServer(build_app(store, signer, **defaults.edge_app(playlist_max_age=2.0)), host="127.0.0.1")
    ) as c:
        yield c


async def raw_get(port: int, target: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """Send ``target`` byte for byte (clients normalise '..' away before it leaves them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def assert_cors(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Expose-Headers"] == "Content-Length, Content-Range, ETag"


async def assert_error(resp: aiohttp.ClientResponse, status: int, error: str) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    assert_cors(resp)
    body = await resp.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    assert "Traceback" not in body["detail"]
    return str(body["detail"])


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    assert_cors(resp)


async def test_master_playlist_carries_the_token_into_every_uri(client: Client, token: str) -> None:
    resp = await client.get("/live/cam1/master.m3u8", params={"token": token})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert resp.headers["Cache-Control"] == "public, max-age=2"
    assert_cors(resp)
    assert await resp.text() == MASTER.replace("source.m3u8", f"source.m3u8?token={token}")


async def test_media_playlist_carries_the_token_into_segments_and_map(client: Client, token: str) -> None:
    resp = await client.get("/live/cam1/source.m3u8", params={"token": token})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    text = await resp.text()
    assert f'#EXT-X-MAP:URI="{EPOCH}/source/init.mp4?token={token}"' in text
    assert f"{EPOCH}/source/00000001.m4s?token={token}\n" in text
    assert f"{EPOCH}/source/00000002.m4s?token={token}\n" in text


async def test_a_player_needs_only_the_master_url(client: Client, token: str) -> None:
    """Follow every URI from the master, resolved like a player does, and get every object."""
    master_url = client.make_url("/live/cam1/master.m3u8").with_query(token=token)
    master = await (await client.session.get(master_url)).text()
    media_url = master_url.join(URL(master.strip().splitlines()[-1]))
    resp = await client.session.get(media_url)
    assert resp.status == 200
    media = await resp.text()
    uris = [line.split('"')[1] for line in media.splitlines() if line.startswith("#EXT-X-MAP")]
    uris += [line for line in media.splitlines() if line and not line.startswith("#")]
    bodies = []
    for uri in uris:
        obj = await client.session.get(media_url.join(URL(uri)))
        assert obj.status == 200, await obj.text()
        bodies.append(await obj.read())
    assert bodies == [INIT, SEG1, SEG2]


async def test_segment_and_init_content_types_and_caching(client: Client, token: str) -> None:
    seg = await client.get(SEG_PATH, params={"token": token})
    assert seg.status == 200
    assert await seg.read() == SEG1
    assert seg.headers["Content-Type"] == "video/iso.segment"
    assert seg.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert seg.headers["ETag"].startswith('"') and seg.headers["ETag"].endswith('"')
    assert_cors(seg)
    init = await client.get(INIT_PATH, params={"token": token})
    assert init.status == 200
    assert await init.read() == INIT
    assert init.headers["Content-Type"] == "video/mp4"
    assert init.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_if_none_match_gives_304(client: Client, token: str) -> None:
    first = await client.get(SEG_PATH, params={"token": token})
    etag = first.headers["ETag"]
    again = await client.get(SEG_PATH, params={"token": token}, headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    assert_cors(again)
    weak = await client.get(SEG_PATH, params={"token": token}, headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status == 304
    other = await client.get(SEG_PATH, params={"token": token}, headers={"If-None-Match": '"other"'})
    assert other.status == 200


async def test_head_gives_headers_without_body(client: Client, token: str, store: RecordingStore) -> None:
    seg = await client.head(SEG_PATH, params={"token": token})
    assert seg.status == 200
    assert seg.headers["Content-Length"] == str(len(SEG1))
    assert seg.headers["Content-Type"] == "video/iso.segment"
    assert await seg.read() == b""
    assert store.touched == [f"streams/cam1/{EPOCH}/source/00000001.m4s"]  # head only, no get
    playlist = await client.head("/live/cam1/master.m3u8", params={"token": token})
    assert playlist.status == 200
    assert playlist.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert_cors(playlist)


async def test_range_request_gives_206(client: Client, token: str) -> None:
    resp = await client.get(SEG_PATH, params={"token": token}, headers={"Range": "bytes=0-7"})
    assert resp.status == 206
    assert await resp.read() == SEG1[:8]
    assert resp.headers["Content-Range"] == f"bytes 0-7/{len(SEG1)}"
    beyond = await client.get(SEG_PATH, params={"token": token}, headers={"Range": "bytes=9999-"})
    await assert_error(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["Content-Range"] == f"bytes */{len(SEG1)}"


async def test_options_preflight(client: Client) -> None:
    for path in ("/live/cam1/master.m3u8", "/live/cam1/source.m3u8", SEG_PATH, INIT_PATH):
        resp = await client.options(
            path, headers={"Origin": "https://player.example", "Access-Control-Request-Method": "GET"}
        )
        assert resp.status == 204
        assert_cors(resp)
        assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
        assert resp.headers["Access-Control-Allow-Headers"] == "Range, Authorization, Content-Type"
        assert int(resp.headers["Access-Control-Max-Age"]) > 0


async def test_missing_token_is_401(client: Client, store: RecordingStore) -> None:
    for path in ("/live/cam1/master.m3u8", SEG_PATH):
        detail = await assert_error(await client.get(path), 401, "token_missing")
        assert "cam1" in detail
    assert store.touched == []


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (lambda s: s.issue("cam1", Action.VIEW, ttl=10, now=time.time() - 100), "token_expired", "expired"),
        (lambda s: s.issue("cam2", Action.VIEW, ttl=300), "token_scope", "'cam2', not 'cam1'"),
        (lambda s: s.issue("cam1", Action.PUBLISH, ttl=300), "token_scope", "'publish', not 'view'"),
        (
            lambda s: TokenSigner(b"another-secret-0123456789").issue("cam1", Action.VIEW, 300),
            "token_invalid",
            "signature",
        ),
        (lambda s: "not-a-token", "token_invalid", "form"),
    ],
)
async def test_bad_tokens_are_403(
    client: Client, signer: TokenSigner, store: RecordingStore, make: Any, error: str, says: str
) -> None:
    for path in ("/live/cam1/master.m3u8", "/live/cam1/source.m3u8", SEG_PATH):
        detail = await assert_error(await client.get(path, params={"token": make(signer)}), 403, error)
        assert says in detail
    assert store.touched == []


@pytest.mark.parametrize(
    "target",
    [
        "/live/..%2F..%2Fetc/master.m3u8",
        "/live/cam1/../../x/init.mp4",
        "/live/cam.1/master.m3u8",
        "/live/%2e%2e/master.m3u8",
        "/live/%2E%2E/%2E%2E/etc/init.mp4",
        "/live/cam1/..%2f..%2fsecret.m3u8",
        f"/live/cam1/{EPOCH}/source/..%2F..%2F..%2Fsecret",
        f"/live/cam1/{EPOCH}/source/00000001.mp4",
        f"/live/cam1/{EPOCH}/source/1.m4s",
        f"/live/cam1/{EPOCH}/Source/init.mp4",
        "/live/cam1/2026/source/init.mp4",
        "/live/cam1//master.m3u8",
        "/live/cam%00/master.m3u8",
        "/live/cam1/master.m3u8/x",
    ],
)
async def test_bad_names_and_traversal_are_400_and_never_reach_the_store(
    client: Client, token: str, store: RecordingStore, target: str
) -> None:
    assert client.port is not None
    status, body = await raw_get(client.port, f"{target}?token={token}")
    assert status == 400, body
    assert body["error"] == "bad_path"
    assert body["detail"]
    assert store.touched == []


async def test_bad_path_via_client_has_cors_and_json(client: Client, token: str) -> None:
    detail = await assert_error(
        await client.get("/live/cam.1/master.m3u8", params={"token": token}), 400, "bad_path"
    )
    assert "'cam.1'" in detail


async def test_missing_objects_are_404(client: Client, signer: TokenSigner) -> None:
    token = signer.issue("cam1", Action.VIEW, ttl=300)
    missing = (
        f"/live/cam1/{EPOCH}/source/00000009.m4s",
        "/live/cam1/720p.m3u8",
        f"/live/cam1/{EPOCH}/720p/init.mp4",
    )
    for path in missing:
        await assert_error(await client.get(path, params={"token": token}), 404, "not_found")
    other = signer.issue("cam9", Action.VIEW, ttl=300)
    await assert_error(await client.get("/live/cam9/master.m3u8", params={"token": other}), 404, "not_found")


async def test_unknown_route_and_method_are_json(client: Client, token: str) -> None:
    await assert_error(await client.get("/nowhere"), 404, "not_found")
    resp = await client.post("/live/cam1/master.m3u8", params={"token": token})
    await assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


async def test_store_failure_is_502(tmp_path: Path, signer: TokenSigner, token: str) -> None:
    app = build_app(BrokenStore(tmp_path), signer, **defaults.edge_app())
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        for path in ("/live/cam1/master.m3u8", SEG_PATH):
            detail = await assert_error(await c.get(path, params={"token": token}), 502, "store_failed")
            assert "disk on fire" not in detail


class DownStore(FileStore):
    """A store in an outage: every read answers StoreUnavailable (what S3Store raises then)."""

    async def get(self, key: str) -> bytes:
        raise StoreUnavailable("store 127.0.0.1:9 unavailable: connection refused")

    async def list(self, prefix: str) -> list[str]:
        raise StoreUnavailable("store 127.0.0.1:9 unavailable: connection refused")


async def test_store_outage_is_503_with_retry_after(tmp_path: Path, signer: TokenSigner, token: str) -> None:
    app = build_app(DownStore(tmp_path), signer, **defaults.edge_app())
    vod = "/vod/cam1.m3u8?start=2026-01-01T00:00:00Z&end=2026-01-01T00:10:00Z"
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        for path in ("/live/cam1/master.m3u8", SEG_PATH, vod):
            resp = await c.get(URL(path, encoded=True).update_query(token=token))
            detail = await assert_error(resp, 503, "store_unavailable")
            assert "unavailable" in detail and "connection refused" not in detail
            assert resp.headers["Retry-After"] == "2"
            assert resp.headers["Cache-Control"] == "no-store"


async def test_playlist_max_age_is_whole_seconds_at_least_one(
    store: RecordingStore, signer: TokenSigner, token: str
) -> None:
    for max_age, expected in ((0.25, "1"), (3.7, "3")):
        async with TestClient(
            TestServer(build_app(store, signer, **defaults.edge_app(playlist_max_age=max_age)))
        ) as c:
            resp = await c.get("/live/cam1/source.m3u8", params={"token": token})
            assert resp.headers["Cache-Control"] == f"public, max-age={expected}"


async def test_edge_server_binds_port_zero_and_stops(
    store: RecordingStore, signer: TokenSigner, token: str
) -> None:
    server = EdgeServer(store, signer, host="127.0.0.1", port=0, **defaults.edge())
    port = await server.start()
    try:
        assert port > 0 and server.port == port
        url = f"http://127.0.0.1:{port}/live/cam1/master.m3u8?token={token}"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert "source.m3u8?token=" in await resp.text()
    finally:
        await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_run_edge_serves_until_stop_is_set(store: RecordingStore, signer: TokenSigner) -> None:
    probe = EdgeServer(store, signer, port=0, **defaults.edge())
    port = await probe.start()  # find a free port, then release it for run_edge
    await probe.stop()
    stop = asyncio.Event()
    task = asyncio.create_task(run_edge(store, signer, "127.0.0.1", port, stop, **defaults.edge()))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.02)
            else:
                pytest.fail("run_edge never started serving")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert task.done() and task.exception() is None
