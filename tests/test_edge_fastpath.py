"""The edge's fast path answers exactly like the aiohttp application, and hands over what it cannot answer.

One app, two listening sockets: ``EdgeSite`` (fast path first) and a plain aiohttp ``TCPSite``,
sharing one cache, so every answer can be compared byte for byte (all headers but ``Date``).
Requests go over raw sockets, so pipelining, keep-alive and partial requests are exercised as
sent; curl checks the same over a reused connection.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from camflow import guard as guard_module
from camflow.guard import ConnectionGuard
from camflow.signing import LEGACY_KID, KeySet, KeysFile, read_file, write_file
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.fastpath import KEYS_CHECK, FastPath
from edge.policy import TokenCheck
from edge.state import EDGE
from edge.wire import EdgeSite
from tests import defaults
from tests.test_edge import EPOCH, INIT, INIT_PATH, MASTER, MEDIA, SEG1, SEG_PATH

SECRET = b"edge-fastpath-secret-0123456789"
BIG = bytes(range(256)) * 1000  # 256 KB: written as head + body, not one piece


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def comparable(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k != "date"}


@dataclass
class Edge:
    fast_port: int
    app_port: int
    fast: FastPath
    app: web.Application
    signer: TokenSigner
    view: str


async def read_reply(reader: asyncio.StreamReader, head_only: bool = False) -> Reply:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"repeated header {name}"
            headers[name.lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    body = b"" if head_only or status == 304 else await asyncio.wait_for(reader.readexactly(size), 10)
    return Reply(status, headers, body)


async def exchange(port: int, request: bytes, replies: int = 1, head_only: bool = False) -> list[Reply]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return [await read_reply(reader, head_only) for _ in range(replies)]
    finally:
        writer.close()
        await writer.wait_closed()


def req(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def start(
    tmp_path: Path, token_check: TokenCheck = TokenCheck.ALL, idle_timeout: float = 30.0
) -> tuple[Edge, web.AppRunner]:
    store = FileStore(tmp_path / "store")
    await store.start()
    await store.put("streams/cam1/master.m3u8", MASTER.encode())
    await store.put(
        "streams/cam1/source.m3u8", MEDIA.replace("TARGETDURATION:2", "TARGETDURATION:60").encode()
    )
    await store.put(f"streams/cam1/{EPOCH}/source/init.mp4", INIT)
    await store.put(f"streams/cam1/{EPOCH}/source/00000001.m4s", SEG1)
    await store.put(f"streams/cam1/{EPOCH}/source/00000002.m4s", BIG)
    signer = TokenSigner(SECRET)
    app = build_app(store, signer, **defaults.edge_app(token_check=token_check))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    fast = FastPath(app[EDGE])
    guard = ConnectionGuard("edge", defaults.limits(idle_timeout=idle_timeout))
    fast_site = EdgeSite(runner, fast, "127.0.0.1", 0, reuse_port=False, guard=guard)
    app_site = web.TCPSite(runner, "127.0.0.1", 0)
    await fast_site.start()
    await app_site.start()
    edge = Edge(fast_site.port, app_site.port, fast, app, signer, signer.issue("cam1", Action.VIEW, ttl=300))
    return edge, runner


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    e, runner = await start(tmp_path)
    yield e
    await runner.cleanup()


async def test_fast_answers_equal_the_applications(edge: Edge) -> None:
    t = edge.view
    seg2 = f"/live/cam1/{EPOCH}/source/00000002.m4s"
    cases = [
        req(f"{SEG_PATH}?token={t}"),
        req(f"{seg2}?token={t}"),
        req(f"{INIT_PATH}?token={t}"),
        req(f"/live/cam1/master.m3u8?token={t}"),
        req(f"/live/cam1/source.m3u8?token={t}"),
        req(f"/live/cam1/source.m3u8?token={t}", "Accept-Encoding: gzip, deflate"),
        req(f"/live/cam1/source.m3u8?x=1&token={t}", "Accept-Encoding: br;q=1, gzip;q=0"),
        req(f"/live/cam1/source.m3u8?token={t}", "Connection: close"),
        req(f"/live/cam1/source.m3u8?token={t}", "Connection: keep-alive", version="1.0"),
        req(f"/live/cam1/source.m3u8?token={t}", version="1.0"),
        req(f"{SEG_PATH}?token={t}", method="HEAD"),
        req(f"/live/cam1/master.m3u8?token={t}", "Origin: https://player.example", method="HEAD"),
    ]
    for request in cases:
        head_only = request.startswith(b"HEAD")
        await exchange(edge.app_port, request, head_only=head_only)  # loads the cache
        before = edge.fast.served
        (fast,) = await exchange(edge.fast_port, request, head_only=head_only)
        (slow,) = await exchange(edge.app_port, request, head_only=head_only)
        assert edge.fast.served == before + 1, request
        assert (fast.status, fast.comparable(), fast.body) == (slow.status, slow.comparable(), slow.body), (
            request
        )
        assert fast.status == 200 and "date" in fast.headers
    gz = await exchange(edge.fast_port, req(f"/live/cam1/source.m3u8?token={t}", "Accept-Encoding: gzip"))
    assert gz[0].headers["content-encoding"] == "gzip"
    assert f"00000001.m4s?token={t}" in gzip.decompress(gz[0].body).decode()


async def test_what_the_fast_path_cannot_answer_goes_to_the_application(edge: Edge) -> None:
    t = edge.view
    wrong = edge.signer.issue("cam2", Action.VIEW, ttl=300)
    await exchange(edge.app_port, req(f"{SEG_PATH}?token={t}"))
    (etagged,) = await exchange(edge.app_port, req(f"{SEG_PATH}?token={t}"))
    etag = etagged.headers["etag"]
    cases = {
        req(f"{SEG_PATH}?token={t}", f"If-None-Match: {etag}"): 304,
        req(f"{SEG_PATH}?token={t}", "Range: bytes=0-7"): 206,
        req(f"{SEG_PATH}?token={t}", "Range: bytes=9999-"): 416,
        req(SEG_PATH): 401,
        req(f"{SEG_PATH}?token={wrong}"): 403,
        req(f"{SEG_PATH}?token=garbage"): 403,
        req(f"{SEG_PATH}?token={t}".replace("00000001", "00000009")): 404,
        req(f"/live/cam1/..%2F..%2Fsecret/source/init.mp4?token={t}"): 400,
        req(f"/live/cam%31/source.m3u8?token={t}"): 400,  # the raw path is checked: no escapes
        req(f"{SEG_PATH}?token={t}", method="POST"): 405,
        req(f"/api/streams?token={t}"): 403,
        req("/healthz"): 200,
    }
    for request, status in cases.items():
        before = edge.fast.served
        (fast,) = await exchange(edge.fast_port, request)
        (slow,) = await exchange(edge.app_port, request)
        assert fast.status == status, (request, fast)
        assert edge.fast.served == before, request
        if request != req("/healthz"):  # its body has counters
            assert (fast.comparable(), fast.body) == (slow.comparable(), slow.body), request


async def test_pipelined_requests_keep_their_order_across_the_hand_over(edge: Edge) -> None:
    t = edge.view
    await exchange(edge.app_port, req(f"{SEG_PATH}?token={t}"))
    await exchange(edge.app_port, req(f"/live/cam1/source.m3u8?token={t}"))
    pipeline = (
        req(f"{SEG_PATH}?token={t}")
        + req(f"/live/cam1/source.m3u8?token={t}")
        + req(f"{SEG_PATH}?token={t}", "Range: bytes=2-5")  # the application takes over here
        + req(f"{SEG_PATH}?token={t}")
        + req("/healthz")
    )
    before = edge.fast.served
    replies = await exchange(edge.fast_port, pipeline, replies=5)
    assert [r.status for r in replies] == [200, 200, 206, 200, 200]
    assert replies[0].body == SEG1 and replies[2].body == SEG1[2:6] and replies[3].body == SEG1
    assert b"#EXTM3U" in replies[1].body and json.loads(replies[4].body)["status"] == "ok"
    assert edge.fast.served == before + 2


async def test_keep_alive_partial_requests_and_connection_close(edge: Edge) -> None:
    t = edge.view
    await exchange(edge.app_port, req(f"{SEG_PATH}?token={t}"))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.fast_port)
    try:
        request = req(f"{SEG_PATH}?token={t}")
        for _ in range(20):  # one connection, many requests
            writer.write(request)
            assert (await read_reply(reader)).body == SEG1
        for i in range(0, len(request), 7):  # a request arriving in pieces
            writer.write(request[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        assert (await read_reply(reader)).body == SEG1
        writer.write(req(f"{SEG_PATH}?token={t}", "Connection: close"))
        last = await read_reply(reader)
        assert last.headers["connection"] == "close" and last.body == SEG1
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the edge closed it
    finally:
        writer.close()
        await writer.wait_closed()
    (old,) = await exchange(edge.fast_port, req(f"{SEG_PATH}?token={t}", version="1.0"))
    assert old.status == 200 and old.headers.get("connection") in (None, "close")


async def test_oversized_and_odd_heads_get_the_applications_errors(edge: Edge) -> None:
    t = edge.view
    huge = req(f"{SEG_PATH}?token={t}", "X-Filler: " + "a" * 8200)
    (reply,) = await exchange(edge.fast_port, huge)
    assert reply.status == 431 and json.loads(reply.body)["error"] == "head_too_large"
    (folded,) = await exchange(edge.fast_port, req(f"{SEG_PATH}?token={t}", "X-A: 1", " continued"))
    assert folded.status == 400


async def test_an_expired_token_is_refused_after_it_was_served(edge: Edge) -> None:
    short = edge.signer.issue("cam1", Action.VIEW, ttl=1)
    request = req(f"{SEG_PATH}?token={short}")
    await exchange(edge.fast_port, request)
    before = edge.fast.served
    (ok,) = await exchange(edge.fast_port, request)
    assert ok.status == 200 and edge.fast.served == before + 1
    await asyncio.sleep(max(0.0, int(time.time()) + 2.05 - time.time()))  # token expiry is whole seconds
    (late,) = await exchange(edge.fast_port, request)
    assert late.status == 403 and json.loads(late.body)["error"] == "token_expired"


async def test_segments_without_token_in_playlists_mode(tmp_path: Path) -> None:
    edge, runner = await start(tmp_path, TokenCheck.PLAYLISTS)
    try:
        await exchange(edge.app_port, req(SEG_PATH))
        before = edge.fast.served
        (seg,) = await exchange(edge.fast_port, req(SEG_PATH))
        assert seg.status == 200 and seg.body == SEG1 and edge.fast.served == before + 1
        (playlist,) = await exchange(edge.fast_port, req("/live/cam1/source.m3u8"))
        assert playlist.status == 401
    finally:
        await runner.cleanup()


async def test_idle_connections_are_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "SWEEP_SECONDS", 0.1)
    edge, runner = await start(tmp_path, idle_timeout=0.5)
    try:
        t = edge.view
        await exchange(edge.app_port, req(f"{SEG_PATH}?token={t}"))
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.fast_port)
        try:
            writer.write(req(f"{SEG_PATH}?token={t}"))
            assert (await read_reply(reader)).status == 200
            began = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.4 < time.monotonic() - began < 3.0
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        await runner.cleanup()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_reuses_one_connection_on_the_fast_path(edge: Edge) -> None:
    t = edge.view
    urls = [f"http://127.0.0.1:{edge.fast_port}{SEG_PATH}?token={t}"] * 3
    urls += [f"http://127.0.0.1:{edge.fast_port}/live/cam1/source.m3u8?token={t}"] * 2
    fmt = "%{http_code} %{num_connects} %{size_download}\\n"
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-s",
        "--compressed",
        "-w",
        fmt,
        *[a for u in urls for a in ("-o", "/dev/null", u)],
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    rows = [line.split() for line in out.decode().splitlines()]
    assert [r[0] for r in rows] == ["200"] * 5
    assert sum(int(r[1]) for r in rows) == 1  # one TCP connection for all five
    assert all(int(r[2]) == len(SEG1) for r in rows[:3])
    assert edge.fast.loaded == 2 and edge.fast.served == 3  # the first of each loaded, then hits


async def test_cold_requests_on_the_fast_path_cause_one_store_read(tmp_path: Path) -> None:
    edge, runner = await start(tmp_path)
    reads: list[str] = []
    store = edge.app[EDGE].store
    real_get = store.get

    async def counting_get(key: str) -> bytes:
        reads.append(key)
        await asyncio.sleep(0.05)  # a slow store: every request arrives before the read ends
        return await real_get(key)

    store.get = counting_get  # type: ignore[method-assign]
    try:
        seg2 = f"/live/cam1/{EPOCH}/source/00000002.m4s?token={edge.view}"
        replies = await asyncio.gather(*(exchange(edge.fast_port, req(seg2)) for _ in range(100)))
        assert all(r.status == 200 and r.body == BIG for (r,) in replies)
        assert reads == [f"streams/cam1/{EPOCH}/source/00000002.m4s"]
        assert edge.fast.served + edge.fast.loaded == 100 and edge.fast.loaded >= 1
        missing = f"/live/cam1/{EPOCH}/source/00000009.m4s?token={edge.view}"
        (gone,) = await exchange(edge.fast_port, req(missing))
        assert gone.status == 404 and json.loads(gone.body)["error"] == "not_found"
    finally:
        await runner.cleanup()


async def test_a_remembered_plan_is_dropped_when_its_key_is_retired(edge: Edge, tmp_path: Path) -> None:
    keys_path = tmp_path / "keys"
    write_file(keys_path, KeySet.single(SECRET).added("k2", current=True))
    auth = edge.app[EDGE].auth
    auth.signer = TokenSigner(KeysFile(keys_path, interval=0.0))
    request = req(f"/live/cam1/source.m3u8?token={edge.view}")  # a v1 token of the legacy key
    for _ in range(2):
        (reply,) = await exchange(edge.fast_port, request)
        assert reply.status == 200
    served = edge.fast.served
    (reply,) = await exchange(edge.fast_port, request)
    assert reply.status == 200 and edge.fast.served == served + 1  # answered from the plan
    write_file(keys_path, read_file(keys_path).without(LEGACY_KID))
    await asyncio.sleep(KEYS_CHECK)  # the fast path looks at the keys at most every KEYS_CHECK s
    (reply,) = await exchange(edge.fast_port, request)
    assert reply.status == 403 and json.loads(reply.body)["error"] == "token_key_retired"
    assert edge.fast.served == served + 1
    new = auth.signer.issue("cam1", Action.VIEW, ttl=60)
    (reply,) = await exchange(edge.fast_port, req(f"/live/cam1/source.m3u8?token={new}"))
    assert reply.status == 200 and f"token={new}" in reply.body.decode()


async def test_a_bearer_token_is_taken_and_not_written_into_uris(edge: Edge) -> None:
    bearer = req("/live/cam1/source.m3u8", f"Authorization: Bearer {edge.view}")
    (app,) = await exchange(edge.app_port, bearer)
    served = edge.fast.served
    (fast,) = await exchange(edge.fast_port, bearer)
    assert edge.fast.served == served + 1 and fast.body == app.body and fast.comparable() == app.comparable()
    query = req(f"/live/cam1/source.m3u8?token={edge.view}", f"Authorization: Bearer {edge.view}")
    (carried,) = await exchange(edge.fast_port, query)
    assert carried.body.count(b"token=") > 0 and carried.headers["etag"] != fast.headers["etag"]
    for port in (edge.fast_port, edge.app_port):
        (reply,) = await exchange(port, bearer)
        assert reply.status == 200 and b"token=" not in reply.body and b".m4s" in reply.body
        (reply,) = await exchange(port, req("/live/cam1/source.m3u8", "Authorization: Bearer v2.x.y.z"))
        assert reply.status == 403
        (reply,) = await exchange(port, req("/live/cam1/source.m3u8", "Authorization: Basic abc"))
        assert reply.status == 401
