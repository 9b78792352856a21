"""edge.thumbs on a real aiohttp server over a FileStore that a real StreamPackager filled (tests.test_vod):
the thumbnail of a recorded moment is the picture of the segment playing then, or of the nearest one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from camflow.hls.dates import format_date_time
from camflow.keys import thumbnail_key
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.thumbs import MOMENT_REACH
from edge.vod import add_recording_routes
from tests import defaults
from tests.test_packager import EPOCH_A, EPOCH_B, STREAM, T0
from tests.test_vod import EPOCH_B_T0, SECRET, fill, view

Client = TestClient[web.Request, web.Application]


def jpeg(epoch: str, seq: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + f"{epoch}/{seq}".encode()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    store = FileStore(tmp_path)
    await store.start()
    await fill(store)  # epoch A: seqs 0-9 from T0, 2 s each, seq 4 not recorded; epoch B: 0-4 from T0 + 100
    for seq in (0, 1, 2, 3, 5, 6, 7, 8):  # seq 9 has no thumbnail
        await store.put(thumbnail_key(STREAM, EPOCH_A, seq), jpeg(EPOCH_A, seq), "image/jpeg")
    for seq in range(5):
        await store.put(thumbnail_key(STREAM, EPOCH_B, seq), jpeg(EPOCH_B, seq), "image/jpeg")
    app = build_app(store, TokenSigner(SECRET), **defaults.edge_app())
    add_recording_routes(app, store, max_range=3600.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def thumb_at(client: Client, at: float) -> tuple[int, bytes, Mapping[str, str]]:
    resp = await client.get(
        f"/api/streams/{STREAM}/thumb", params={"at": format_date_time(at), "token": view()}
    )
    return resp.status, await resp.read(), resp.headers


@pytest.mark.parametrize(
    ("at", "epoch", "seq"),
    [
        (T0, EPOCH_A, 0),  # a segment's first frame
        (T0 + 5.9, EPOCH_A, 2),  # inside seq 2 (T0 + 4 .. T0 + 6)
        (T0 - 3.0, EPOCH_A, 0),  # before the recording: the nearest segment
        (T0 + 8.5, EPOCH_A, 3),  # in the gap of seq 4 (T0 + 8 .. T0 + 10): seq 3 ends at T0 + 8
        (T0 + 9.6, EPOCH_A, 5),  # ... nearer to seq 5
        (EPOCH_B_T0 + 3.0, EPOCH_B, 1),  # the second epoch
        (T0 + 75.0, EPOCH_B, 0),  # between the epochs, within reach of B only
    ],
)
async def test_the_thumbnail_of_a_moment_is_the_segment_playing_then_or_the_nearest(
    client: Client, at: float, epoch: str, seq: int
) -> None:
    status, body, headers = await thumb_at(client, at)
    assert status == 200, body
    assert headers["Content-Type"] == "image/jpeg"
    assert body == jpeg(epoch, seq)
    assert "max-age" in headers["Cache-Control"] and headers["ETag"]
    start = (EPOCH_B_T0 if epoch == EPOCH_B else T0) + 2.0 * seq
    assert headers["Camflow-Time"] == format_date_time(start)


async def test_a_moment_far_from_any_recording_or_without_a_thumbnail_is_a_json_404(client: Client) -> None:
    status, body, _ = await thumb_at(client, T0 - MOMENT_REACH - 5.0)
    assert status == 404 and b'"not_recorded"' in body
    status, body, _ = await thumb_at(client, T0 + 18.5)  # seq 9: recorded, no thumbnail
    assert status == 404 and b'"not_found"' in body and b"segment 9" in body


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("", 400, "bad_time"),
        ("at=yesterday", 400, "bad_time"),
        ("at=2026-11-21T10:15:00", 400, "bad_time"),  # no zone
    ],
)
async def test_a_bad_moment_is_a_json_400(client: Client, query: str, status: int, error: str) -> None:
    resp = await client.get(f"/api/streams/{STREAM}/thumb?{query}&token={view()}")
    assert resp.status == status
    assert (await resp.json())["error"] == error


async def test_the_thumbnail_of_a_moment_needs_a_view_token(client: Client) -> None:
    at = format_date_time(T0)
    assert (await client.get(f"/api/streams/{STREAM}/thumb?at={at}")).status == 401
    other = TokenSigner(SECRET).issue("cam2", Action.VIEW, 60)
    assert (await client.get(f"/api/streams/{STREAM}/thumb?at={at}&token={other}")).status == 403
