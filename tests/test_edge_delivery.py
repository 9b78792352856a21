"""The edge over real HTTP: cache headers, conditional requests, gzip, token modes, API, SSE, pages."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from camflow.hls.lowlatency import delta
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.health import HealthFeed
from edge.policy import TokenCheck
from edge.state import EDGE
from edge.whep_redirect import whep_redirects
from tests import defaults
from tests.ll_playlists import EPOCH as LL_EPOCH
from tests.ll_playlists import ll_playlist
from tests.test_edge import EPOCH, INIT, MASTER, SEG1, SEG_PATH, RecordingStore, assert_cors

SECRET = b"edge-delivery-secret-0123456789"
Client = TestClient[web.Request, web.Application]


def pdt(t: float) -> str:
    ms = round(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def media(target: int, *, last_pdt: float, ended: bool = False, vod: bool = False) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:1"]
    if vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    lines += [f'#EXT-X-MAP:URI="{EPOCH}/source/init.mp4"']
    lines += [f"#EXT-X-PROGRAM-DATE-TIME:{pdt(last_pdt - target)}", f"#EXTINF:{target}.000,"]
    lines += [f"{EPOCH}/source/00000001.m4s"]
    lines += [
        f"#EXT-X-PROGRAM-DATE-TIME:{pdt(last_pdt)}",
        f"#EXTINF:{target}.000,",
        f"{EPOCH}/source/00000002.m4s",
    ]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@pytest.fixture
def view(signer: TokenSigner) -> str:
    return signer.issue("cam1", Action.VIEW, ttl=300)


@pytest.fixture
def admin(signer: TokenSigner) -> str:
    return signer.issue("*", Action.ADMIN, ttl=300)


@pytest.fixture
async def store(tmp_path: Path) -> RecordingStore:
    s = RecordingStore(tmp_path / "store")
    await s.start()
    now = time.time()
    await s.put("streams/cam1/master.m3u8", MASTER.encode())
    await s.put("streams/cam1/source.m3u8", media(6, last_pdt=now - 6).encode())
    await s.put(f"streams/cam1/{EPOCH}/source/init.mp4", INIT)
    await s.put(f"streams/cam1/{EPOCH}/source/00000001.m4s", SEG1)
    await s.put("streams/cam1/thumb.jpg", b"\xff\xd8\xff\xe0fake-jpeg")
    await s.put("streams/old/master.m3u8", MASTER.encode())
    await s.put("streams/old/source.m3u8", media(2, last_pdt=now - 600, ended=True).encode())
    await s.put("streams/vod/master.m3u8", MASTER.encode())
    await s.put("streams/vod/source.m3u8", media(4, last_pdt=now - 600, vod=True).encode())
    s.touched.clear()
    return s


async def make_client(store: FileStore, signer: TokenSigner, **options: object) -> Client:
    app = build_app(
        store, signer, **{**defaults.edge_app(health_interval=0.2, catalog_interval=0.2), **options}
    )  # type: ignore[arg-type]
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(store: RecordingStore, signer: TokenSigner) -> AsyncIterator[Client]:
    c = await make_client(store, signer)
    yield c
    await c.close()


async def test_live_playlist_max_age_is_half_the_target_and_vod_is_long(
    client: Client, signer: TokenSigner
) -> None:
    view = signer.issue("cam1", Action.VIEW, ttl=300)
    resp = await client.get("/live/cam1/source.m3u8", params={"token": view})
    assert resp.headers["Cache-Control"] == "public, max-age=3"  # target 6 s
    master = await client.get("/live/cam1/master.m3u8", params={"token": view})
    assert master.headers["Cache-Control"] == "public, max-age=1"
    vod = await client.get("/live/vod/source.m3u8", params={"token": signer.issue("vod", Action.VIEW, 300)})
    assert vod.headers["Cache-Control"] == "public, max-age=86400"


async def test_every_object_has_etag_and_last_modified_and_gives_304(client: Client, view: str) -> None:
    for path in ("/live/cam1/master.m3u8", "/live/cam1/source.m3u8", SEG_PATH):
        first = await client.get(path, params={"token": view})
        assert first.status == 200
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        by_etag = await client.get(path, params={"token": view}, headers={"If-None-Match": etag})
        assert by_etag.status == 304 and by_etag.headers["ETag"] == etag
        assert_cors(by_etag)
        by_date = await client.get(path, params={"token": view}, headers={"If-Modified-Since": modified})
        assert by_date.status == 304
        older = formatdate(time.time() - 3600, usegmt=True)
        changed = await client.get(path, params={"token": view}, headers={"If-Modified-Since": older})
        assert changed.status == 200
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
        both = await client.get(
            path, params={"token": view}, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}
        )
        assert both.status == 200


async def test_playlists_are_gzipped_when_asked(client: Client, view: str) -> None:
    plain = await client.get(
        "/live/cam1/source.m3u8", params={"token": view}, headers={"Accept-Encoding": "identity"}
    )
    assert "Content-Encoding" not in plain.headers
    text = await plain.text()
    resp = await client.get(
        "/live/cam1/source.m3u8",
        params={"token": view},
        headers={"Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert resp.headers["ETag"] != plain.headers["ETag"]
    assert gzip.decompress(await resp.read()).decode() == text
    seg = await client.get(SEG_PATH, params={"token": view}, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in seg.headers


async def test_ranges_on_cached_segments(client: Client, view: str) -> None:
    await client.get(SEG_PATH, params={"token": view})  # now cached
    part = await client.get(SEG_PATH, params={"token": view}, headers={"Range": "bytes=4-"})
    assert part.status == 206 and await part.read() == SEG1[4:]
    assert part.headers["Content-Range"] == f"bytes 4-{len(SEG1) - 1}/{len(SEG1)}"
    bad = await client.get(SEG_PATH, params={"token": view}, headers={"Range": f"bytes={len(SEG1)}-"})
    assert bad.status == 416


async def test_token_check_playlists_mode_serves_media_without_a_token(
    store: RecordingStore, signer: TokenSigner, view: str
) -> None:
    c = await make_client(store, signer, token_check=TokenCheck.PLAYLISTS)
    try:
        seg = await c.get(SEG_PATH)
        assert seg.status == 200 and await seg.read() == SEG1
        init = await c.get(f"/live/cam1/{EPOCH}/source/init.mp4", params={"token": "garbage"})
        assert init.status == 200
        assert (await c.get("/live/cam1/source.m3u8")).status == 401
        assert (await c.get("/live/cam1/source.m3u8", params={"token": "garbage"})).status == 403
        ok = await c.get("/live/cam1/source.m3u8", params={"token": view})
        assert f"00000001.m4s?token={view}" in await ok.text()
        assert (await c.get(f"/live/cam1/{EPOCH}/../x/init.mp4")).status == 400
    finally:
        await c.close()


async def test_admin_token_may_watch_any_stream_but_a_view_token_is_not_admin(
    client: Client, admin: str, view: str
) -> None:
    assert (await client.get("/live/old/master.m3u8", params={"token": admin})).status == 200
    resp = await client.get("/api/streams", params={"token": view})
    assert resp.status == 403
    assert (await client.get("/api/streams")).status == 401
    assert (await client.get("/", params={"token": view})).status == 403


async def wait_for_catalog(client: Client, count: int) -> None:
    for _ in range(100):
        if len(client.app[EDGE].catalog.names) >= count:  # type: ignore[index]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the catalog never listed the streams")


async def test_api_streams_derives_state_resolution_bitrate_age_and_viewers(
    client: Client, admin: str, view: str, signer: TokenSigner
) -> None:
    await wait_for_catalog(client, 3)
    # Viewers are counted by token: the second one expires 150 s before the first, never equal.
    await client.get("/live/cam1/master.m3u8", params={"token": view})
    await client.get("/live/cam1/master.m3u8", params={"token": signer.issue("cam1", Action.VIEW, ttl=150)})
    resp = await client.get("/api/streams", params={"token": admin})
    assert resp.status == 200
    streams = {s["stream"]: s for s in (await resp.json())["streams"]}
    assert set(streams) == {"cam1", "old", "vod"}
    cam1 = streams["cam1"]
    assert cam1["state"] == "live"
    assert cam1["resolution"] == "1280x720" and cam1["bitrate"] == 2500000
    assert cam1["renditions"] == ["source"] and cam1["target_duration"] == 6
    assert 0 <= cam1["last_segment_age"] < 5
    assert cam1["viewers"] == 2
    assert streams["old"]["state"] == "offline" and streams["vod"]["state"] == "offline"
    assert streams["old"]["last_segment_age"] > 500


async def test_health_is_server_sent_events(client: Client, view: str) -> None:
    samples = []
    async with client.get("/api/streams/cam1/health", params={"token": view}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        event = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "health":
                samples.append(json.loads(line[6:]))
                if len(samples) == 2:
                    break
    assert samples[0]["stream"] == "cam1" and samples[0]["state"] == "live"
    assert samples[1]["time"] > samples[0]["time"]
    assert (await client.get("/api/streams/cam1/health")).status == 401
    assert (await client.get("/api/streams/cam.1/health", params={"token": view})).status == 400


async def test_health_stream_ends_at_shutdown(store: RecordingStore, signer: TokenSigner, view: str) -> None:
    c = await make_client(store, signer)
    resp = await c.get("/api/streams/cam1/health", params={"token": view})
    assert resp.status == 200
    await resp.content.readline()
    started = time.monotonic()
    await asyncio.wait_for(c.close(), timeout=10)
    assert time.monotonic() - started < 4  # well within the 5 s shutdown timeout: the stream ended itself


async def test_watch_page_and_hlsjs_are_served(client: Client, view: str) -> None:
    page = await client.get("/watch/cam1", params={"token": view})
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    assert '<script src="/static/hls.min.js"></script>' in text and "/static/player.js" in text
    assert "http" not in text.replace("http-equiv", "")  # nothing from another origin
    hls = await client.get("/static/hls.min.js")
    assert hls.status == 200
    assert b"Hls" in await hls.read()
    player = await client.get("/static/player.js")
    assert player.status == 200 and b"EventSource" in await player.read()
    assert (await client.get("/watch/cam1")).status == 401
    assert (await client.get("/watch/cam2", params={"token": view})).status == 403
    assert (await client.get("/watch/c%2e%2e", params={"token": view})).status == 400
    pinned = await client.get("/watch/cam1", params={"token": view, "rendition": "360p"})
    assert pinned.status == 200 and "&quot;rendition&quot;: &quot;360p&quot;" in await pinned.text()
    bad = await client.get("/watch/cam1", params={"token": view, "rendition": "../x"})
    assert bad.status == 400 and "rendition '../x' is not valid" in await bad.text()


async def test_watch_page_has_the_timeline_and_its_controls(client: Client, view: str) -> None:
    text = await (await client.get("/watch/cam1", params={"token": view})).text()
    assert text.index("/static/player.js") < text.index('<script src="/static/timeline.js"></script>')
    assert "<div id=track class=track role=slider tabindex=0 " in text and 'aria-label="recordings: ' in text
    for control in (
        "id=play ",
        "id=live aria-pressed=true",
        "data-speed=0.5 ",
        "data-speed=8 ",
        "data-span=604800 ",
    ):
        assert control in text, control
    assert "&quot;clip_max&quot;: 21600" in text  # camflow.clip.MAX_SECONDS: the page refuses longer clips
    for script in ("timeline.js", "streams.js"):
        resp = await client.get(f"/static/{script}")
        assert resp.status == 200 and b'"use strict"' in await resp.read(), script


async def test_index_lists_live_streams_with_thumbnails_for_an_operator(client: Client, admin: str) -> None:
    await wait_for_catalog(client, 3)
    resp = await client.get("/", params={"token": admin})
    assert resp.status == 200
    text = await resp.text()
    assert f'href="/watch/cam1?token={admin}"' in text
    assert f'src="/thumb/cam1.jpg?token={admin}"' in text
    assert '<script src="/static/streams.js"></script>' in text  # reloads the thumbnails
    assert "/watch/old" not in text  # offline
    thumb = await client.get("/thumb/cam1.jpg", params={"token": admin})
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    assert (await thumb.read()).startswith(b"\xff\xd8")
    missing = await client.get("/thumb/old.jpg", params={"token": admin})
    assert missing.status == 404
    assert (await client.get("/")).status == 401


async def test_pages_take_a_bearer_token_and_never_write_it_into_the_page(
    client: Client, admin: str, view: str
) -> None:
    """``Authorization: Bearer`` passes the stream list and the player page as ``?token=`` does (it
    once failed with 500: the pages read ``?token=`` only); the page's links and player config carry
    no token then, since the client sends it again itself."""
    await wait_for_catalog(client, 3)
    resp = await client.get("/", headers={"Authorization": f"Bearer {admin}"})
    text = await resp.text()
    assert resp.status == 200 and 'href="/watch/cam1?token="' in text and admin not in text
    watch = await client.get("/watch/cam1", headers={"Authorization": f"Bearer {view}"})
    page = await watch.text()
    assert watch.status == 200 and "data-config" in page and view not in page


async def test_background_tasks_are_cancelled_at_shutdown(store: RecordingStore, signer: TokenSigner) -> None:
    c = await make_client(store, signer)
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert "edge-catalog" in names
    await c.close()
    assert "edge-catalog" not in {t.get_name() for t in asyncio.all_tasks()}


async def test_real_server_keeps_working_after_client_errors(client: Client, view: str) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/live/cam1/master.m3u8?token=x", "/api/streams", "/watch/cam1"):
            async with session.get(client.make_url(path)) as resp:
                assert resp.status in (401, 403)
    assert (await client.get("/live/cam1/master.m3u8", params={"token": view})).status == 200
    counters = client.app[EDGE].counters  # type: ignore[index]
    assert counters.token_refused >= 1 and counters.token_missing >= 2
    health = await (await client.get("/healthz")).json()
    assert health["refused"]["token_refused"] == counters.token_refused
    assert health["cache"]["objects"] >= 1 and health["cache"]["misses"] >= 1


async def test_ll_playlists_the_edge_cannot_read_or_cut_are_served_whole(
    store: RecordingStore, client: Client, signer: TokenSigner
) -> None:
    token = signer.issue("llcam", Action.VIEW, ttl=300)
    segment = f"{LL_EPOCH}/source/00000012.m4s"
    uncut = ll_playlist(30, 3, window=20).replace(f"#EXTINF:2.000,\n{segment}", segment)  # no EXTINF
    await store.put("streams/llcam/source.m3u8", uncut.encode())
    resp = await client.get("/live/llcam/source.m3u8", params={"token": token, "_HLS_skip": "YES"})
    assert resp.status == 200 and "EXT-X-SKIP" not in await resp.text()
    assert "EXT-X-SKIP" in delta(ll_playlist(30, 3, window=20), 12.0)  # (the whole one is cut)
    unreadable = ll_playlist(12, 3).replace("#EXT-X-TARGETDURATION:2", "#EXT-X-TARGETDURATION:x")
    await store.put("streams/llcam/audio.m3u8", unreadable.encode())
    started = time.monotonic()
    resp = await client.get("/live/llcam/audio.m3u8", params={"token": token, "_HLS_msn": "13"})
    body = await resp.text()  # at once, not held: the playlist is served as it is
    assert resp.status == 200 and "TARGETDURATION:x" in body and time.monotonic() - started < 1.0


async def test_the_player_tries_webrtc_by_default_only_where_whep_is_mounted(
    store: RecordingStore, signer: TokenSigner, client: Client, view: str
) -> None:
    def transport(text: str) -> str | None:
        match = re.search(r"&quot;transport&quot;: &quot;(\w+)&quot;", text)
        return match.group(1) if match else None

    async def page(c: Client, **params: str) -> str:
        resp = await c.get("/watch/cam1", params={"token": view, **params})
        assert resp.status == 200
        return await resp.text()

    assert transport(await page(client)) is None  # no WHEP here: HLS
    assert transport(await page(client, transport="webrtc")) == "webrtc"  # asked for
    app = build_app(store, signer, **defaults.edge_app())
    app.add_subapp("/whep", whep_redirects(HealthFeed(None, interval=1.0)))  # a distributed edge's
    whep: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await whep.start_server()
    try:
        assert transport(await page(whep)) == "webrtc"
        assert transport(await page(whep, transport="hls")) is None
        assert transport(await page(whep, rendition="360p")) is None  # a pinned rung: WHEP sends source
        # The redirect checks the view token as the edge's playlists do, before telling anything.
        assert (await whep.post("/whep/cam1", data="v=0", allow_redirects=False)).status == 401
        other = {"token": view}
        assert (await whep.post("/whep/cam2", params=other, data="v=0", allow_redirects=False)).status == 403
        refused = await whep.post("/whep/cam1", params=other, data="v=0", allow_redirects=False)
        assert refused.status == 404 and (await refused.json())["error"] == "stream_not_live"  # no node
    finally:
        await whep.close()
