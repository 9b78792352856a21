"""The edge's side of the health feed, in process: /api/health (SSE), /metrics, /readyz.

With a bus, a sample published on ``camflow.health`` reaches an ``/api/health`` client as one
``event: health`` (the edge follows the topic outside any consumer group) and lays its state
over ``/api/streams/{stream}/health``; without a bus, /api/health sends what the playlists say.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from camflow.bus import LocalBus
from camflow.events import TOPIC_HEALTH, HealthSample, StreamStateKind, encode
from camflow.health import follow_health
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.auth import ViewerCounter
from edge.health import HEALTH_FEED, HealthFeed
from tests import defaults

SECRET = b"k" * 32


async def read_event(resp: object, timeout: float = 10.0) -> dict[str, object]:
    content = resp.content  # type: ignore[attr-defined]
    loop_deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < loop_deadline:
        line = await asyncio.wait_for(content.readline(), timeout)
        if line.startswith(b"data:"):
            return dict(json.loads(line[5:]))
    raise AssertionError("no event")


async def test_api_health_streams_bus_samples_and_refuses_non_operators(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    signer = TokenSigner(SECRET)
    bus = LocalBus()
    app = build_app(store, signer, **defaults.edge_app())
    app[HEALTH_FEED] = HealthFeed(bus, interval=0.2)
    admin = signer.issue("*", Action.ADMIN, 600)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/api/health")).status == 401
        view = signer.issue("cam1", Action.VIEW, 600)
        assert (await client.get("/api/health", params={"token": view})).status == 403
        assert (await client.get("/api/health", params={"token": admin, "stream": "../x"})).status == 400
        resp = await client.get("/api/health", params={"token": admin, "stream": "cam1"})
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        stalled = HealthSample("cam1", "ingest", "h/1", 5.0, StreamStateKind.STALLED, "no segment for 9 s")
        for _ in range(50):  # until the follower is there (it starts with the app)
            await bus.publish(TOPIC_HEALTH, "cam2", encode(HealthSample("cam2", "edge", "h/2", 1.0)))
            await bus.publish(TOPIC_HEALTH, "cam1", encode(stalled))
            try:
                event = await read_event(resp, timeout=0.2)
                break
            except TimeoutError:
                continue
        assert (
            event["stream"] == "cam1"
            and event["state"] == "stalled"
            and event["reason"] == "no segment for 9 s"
        )
        resp.close()
        per_stream = await client.get("/api/streams/cam1/health", params={"token": view})
        overlay = await read_event(per_stream)
        per_stream.close()
        assert overlay["state"] == "stalled" and overlay["source"] == "feed"
        assert (await client.get("/metrics")).status == 401  # the figures name every stream
        assert (await client.get("/metrics", params={"token": view})).status == 403
        bearer = {"Authorization": f"Bearer {admin}"}
        metrics = await (await client.get("/metrics", headers=bearer)).text()
        assert 'camflow_edge_requests_total{cache="none",status="401"}' in metrics
        assert 'camflow_edge_requests_total{cache="none",status="403"}' in metrics
        assert (await client.get("/readyz")).status == 200
    await store.close()


async def test_api_health_without_a_bus_says_what_the_playlists_say(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    signer = TokenSigner(SECRET)
    master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nsource.m3u8\n"
    await store.put("streams/cam1/master.m3u8", master.encode())
    app = build_app(store, signer, **defaults.edge_app(health_interval=0.2, catalog_interval=0.1))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await asyncio.sleep(0.3)  # the catalog lists the store
        resp = await client.get("/api/health", params={"token": signer.issue("*", Action.ADMIN, 600)})
        event = await read_event(resp)
        resp.close()
        assert event["stream"] == "cam1" and event["service"] == "edge" and event["state"] == "offline"
        assert event["bitrate"] == 800000.0
    await store.close()


async def test_edge_publishes_viewers_once_per_edge_and_says_when_they_leave() -> None:
    """The edge's samples: one instance, a 0 when a stream's viewers leave (then silence), a 0 for
    every watched stream when the edge stops; a worker of `camflow edge --workers N` publishes none."""
    bus = LocalBus()
    seen: list[HealthSample] = []
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_health(bus, seen.append, stop))
    await asyncio.sleep(0.05)
    now = [0.0]
    viewers = ViewerCounter(clock=lambda: now[0])
    viewers.saw("cam1", "token-a")
    viewers.saw("cam1", "token-b")
    worker = HealthFeed(bus, interval=0.05)
    worker.publish = False
    worker.instance = "edge-host/worker"  # were it to publish, its samples would show
    await worker.start(viewers, lambda: ["cam1", "cam2"])
    feed = HealthFeed(bus, interval=0.05)
    await feed.start(viewers, lambda: ["cam1", "cam2"])

    async def until(check: Callable[[], bool]) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"never happened; samples: {seen}")

    def edge() -> list[HealthSample]:
        return [s for s in seen if s.service == "edge"]

    await until(lambda: any(s.viewers == 2 for s in edge()))
    now[0] += 31  # both viewers' 30 s window ends
    await until(lambda: edge()[-1].viewers == 0)
    zeros = len(edge())
    await asyncio.sleep(0.3)  # several rounds: nothing more to say about cam1
    assert len(edge()) == zeros
    viewers.saw("cam1", "token-c")
    await until(lambda: edge()[-1].viewers == 1)
    await feed.stop()
    assert edge()[-1].viewers == 0  # the stopping edge's last word
    await worker.stop()
    await asyncio.sleep(0.1)
    stop.set()
    await follower
    assert {s.instance for s in edge()} == {feed.instance} and {s.stream for s in edge()} == {"cam1"}
