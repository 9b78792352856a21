"""The edge's events API (``edge.events_api``) on a file store: who may post (admin, the stream's
publish token, a device's credential), the JSON errors, listing by range and type, delete."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from camflow.devices.model import Device
from camflow.devices.registry import DeviceRegistry
from camflow.hls.dates import format_date_time
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import EDGE, build_app
from edge.events_api import DEVICES
from tests import defaults

Client = TestClient[web.Request, web.Application]
SECRET = b"events-test-secret-0123456789abcdef"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@pytest.fixture
async def client(tmp_path: Path, signer: TokenSigner) -> AsyncIterator[tuple[Client, str]]:
    store = FileStore(tmp_path / "store")
    await store.start()
    app = build_app(store, signer, **defaults.edge_app())
    devices = DeviceRegistry()
    door, credential = Device.create("door", ("cam1",), time.time())
    devices.replace({"door": door})
    devices.loaded.set()  # as its follower does once the backend was read
    app[DEVICES] = devices
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c, credential


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_admin_publish_and_device_post_viewers_read_admins_delete(
    client: tuple[Client, str], signer: TokenSigner
) -> None:
    c, credential = client
    admin = signer.issue("*", Action.ADMIN, 300)
    publish = signer.issue("cam1", Action.PUBLISH, 300)
    view = signer.issue("cam1", Action.VIEW, 300)
    now = time.time()
    posted = []
    for token, body, by in (
        (admin, {"type": "bookmark", "label": "delivery", "lock": False}, "admin"),
        (publish, {"type": "motion", "time": format_date_time(now - 60)}, "publish"),
        (
            credential,
            {"type": "doorbell", "start": format_date_time(now - 30), "end": format_date_time(now)},
            "device:door",
        ),
    ):
        resp = await c.post(f"/api/streams/cam1/events?token={token}", json=body)
        assert resp.status == 201, await resp.text()
        event = await resp.json()
        assert event["by"] == by and event["type"] == body["type"]
        assert resp.headers["Location"] == f"/api/streams/cam1/events/{event['id']}"
        posted.append(event)

    resp = await c.get("/api/streams/cam1/events", headers=auth(view))
    listed = await resp.json()
    assert resp.status == 200 and [e["id"] for e in listed["events"]] == sorted(e["id"] for e in posted)
    resp = await c.get(f"/api/streams/cam1/events?type=motion&token={view}")
    assert [e["type"] for e in (await resp.json())["events"]] == ["motion"]
    start, end = format_date_time(now - 3600), format_date_time(now - 3000)
    resp = await c.get(f"/api/streams/cam1/events?start={start}&end={end}&token={view}")
    assert (await resp.json())["events"] == []

    one = posted[1]["id"]
    resp = await c.get(f"/api/streams/cam1/events/{one}?token={view}")
    assert resp.status == 200 and (await resp.json())["lock"] is True
    for token, status in ((view, 403), (publish, 403), (admin, 204), (admin, 404)):
        resp = await c.delete(f"/api/streams/cam1/events/{one}", headers=auth(token))
        assert resp.status == status, await resp.text()
    resp = await c.get(f"/api/streams/cam1/events/{one}?token={view}")
    assert resp.status == 404 and (await resp.json())["error"] == "no_event"


async def test_refusals_are_json_and_counted(client: tuple[Client, str], signer: TokenSigner) -> None:
    c, credential = client
    publish = signer.issue("cam1", Action.PUBLISH, 300)
    cases = [
        ("", {"type": "motion"}, 401, "token_missing"),
        (signer.issue("cam1", Action.VIEW, 300), {"type": "motion"}, 403, "token_scope"),
        (signer.issue("cam2", Action.PUBLISH, 300), {"type": "motion"}, 403, "token_scope"),
        (credential.replace("door", "gate"), {"type": "motion"}, 403, "token_invalid"),
        (publish, {"type": "motion", "when": "now"}, 400, "bad_event"),
        (publish, {"label": "no type"}, 400, "bad_event"),
        (publish, {"type": "motion", "label": "x" * 5000}, 413, "body_too_large"),
    ]
    for token, body, status, error in cases:
        resp = await c.post(f"/api/streams/cam1/events?token={token}", json=body)
        got = await resp.json()
        assert (resp.status, got["error"]) == (status, error), got
    resp = await c.post(f"/api/streams/cam1/events?token={publish}", data=b"{not json")
    assert (resp.status, (await resp.json())["error"]) == (400, "bad_event")
    resp = await c.post("/api/streams/cam1/events", headers=auth(credential), json={"type": "motion"})
    assert resp.status == 201  # the device's credential as a bearer token
    view = signer.issue("cam1", Action.VIEW, 300)
    resp = await c.get(
        f"/api/streams/cam1/events?start=2026-12-01T00:00:00Z&end=2026-11-01T00:00:00Z&token={view}"
    )
    assert (resp.status, (await resp.json())["error"]) == (400, "bad_range")
    resp = await c.get(
        f"/api/streams/cam1/events?start=2026-01-01T00:00:00Z&end=2026-12-01T00:00:00Z&token={view}"
    )
    assert resp.status == 400 and "over the limit" in (await resp.json())["detail"]
    resp = await c.get(f"/api/streams/cam1/events/..%2f..%2fsecret?token={view}")
    assert resp.status == 404
    counters = c.app[EDGE].counters
    assert counters.bad_query >= 6 and counters.token_refused >= 3 and counters.token_missing >= 1
