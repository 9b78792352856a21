"""End to end: 30 s of live push into `camflow run` with a camera reconnect in the middle, then
a VOD request spanning both epochs, read by ffprobe.

The recording routes are served by an edge built in this test (``edge.app.build_app`` plus
``edge.vod.add_recording_routes``) over the same store, so the test does not depend on how
the edge process composes its routes.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import m3u8
import pytest
from aiohttp.test_utils import TestServer

from camflow.hls.dates import format_date_time as format_time
from camflow.hls.dates import parse_date_time as parse_time
from camflow.hls.rules import check_media
from camflow.recordings import IndexChunk, covered
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner, load_keys
from edge.app import build_app
from edge.vod import add_recording_routes
from tests import defaults
from tests.process import camflow_run, ffmpeg_push, make_clip

pytestmark = pytest.mark.integration
STREAM = "cam1"
FPS = 30


@pytest.fixture(scope="module")
def clip15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip15.mp4", 15)


async def chunks(store: FileStore) -> list[IndexChunk]:
    keys = await store.list(f"streams/{STREAM}/recordings/")
    return [IndexChunk.parse(await store.get(k)) for k in keys]


async def wait_for_epochs(
    store: FileStore, count: int, segments: int, timeout: float = 90.0
) -> list[IndexChunk]:
    deadline = time.monotonic() + timeout
    found: list[IndexChunk] = []
    while time.monotonic() < deadline:
        found = await chunks(store)
        epochs = {c.epoch for c in found}
        if len(epochs) >= count and sum(len(c.segments) for c in found) >= segments:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"index never had {count} epochs / {segments} segments: {found}")


@pytest.fixture
async def vod_edge(tmp_path: Path) -> AsyncIterator[tuple[str, FileStore, TokenSigner]]:
    store = FileStore(tmp_path / "data" / "store")
    await store.start()
    signer = TokenSigner(load_keys(tmp_path / "data"))
    app = build_app(store, signer, **defaults.edge_app())
    add_recording_routes(app, store)
    server: TestServer = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", store, signer
    await server.close()


async def ffprobe_json(url: str, *entries: str) -> dict[str, object]:
    """ffprobe as a child process, awaited: the edge it reads from runs on this event loop."""
    proc = await asyncio.create_subprocess_exec(
        *["ffprobe", "-v", "error", "-count_packets", "-show_entries", ":".join(entries), "-of", "json", url],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def test_vod_across_a_reconnect_plays_in_ffprobe(
    clip15: Path, tmp_path: Path, vod_edge: tuple[str, FileStore, TokenSigner]
) -> None:
    base, store, signer = vod_edge
    with camflow_run(tmp_path, ["--offline-grace", "30"]) as cf:
        publish = cf.token("publish", STREAM)
        for _ in range(2):  # the camera reconnects: the second push is a new epoch
            pushed = ffmpeg_push(clip15, cf.rtsp_url(STREAM, publish))
            assert pushed.returncode == 0, pushed.stderr
        found = await wait_for_epochs(store, 2, segments=14)
        view = signer.issue(STREAM, Action.VIEW, 600)
        # The live playlist went on across the reconnect (the grace kept it open): one discontinuity.
        with urllib.request.urlopen(
            cf.http_url(f"/live/{STREAM}/source.m3u8?token={view}"), timeout=10
        ) as resp:
            live = resp.read().decode()
        assert check_media(live) == []
        assert "#EXT-X-ENDLIST" not in live and live.count("#EXT-X-DISCONTINUITY\n") == 1

    ranges = covered(found)
    assert len({r.epoch for r in ranges}) == 2, ranges
    first, last = ranges[0], ranges[-1]
    start, end = first.start + 3.0, last.end - 3.0  # inside the first epoch .. inside the second
    recorded = sum(max(0.0, min(r.end, end) - max(r.start, start)) for r in ranges)
    q = f"start={format_time(start)}&end={format_time(end)}&token={view}"

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/vod/{STREAM}.m3u8?{q}") as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
        async with http.get(f"{base}/api/streams/{STREAM}/recordings?token={view}") as resp:
            listed = (await resp.json())["ranges"]
    assert check_media(text) == []
    parsed = m3u8.loads(text)
    assert parsed.playlist_type == "vod" and parsed.is_endlist
    assert sum(s.discontinuity for s in parsed.segments) == 1
    assert [parse_time(r["start"]) for r in listed] == pytest.approx([r.start for r in ranges], abs=0.001)

    probe = await ffprobe_json(
        f"{base}/vod/{STREAM}/master.m3u8?{q}", "stream=codec_name,width,nb_read_packets", "format=duration"
    )
    streams = probe["streams"]
    assert isinstance(streams, list) and streams, probe
    fmt = probe["format"]
    assert isinstance(fmt, dict)
    segment = max(s.duration for s in parsed.segments)
    # Within one segment of the range (the part of it that was recorded: the reconnect
    # itself is a second or two with no camera).
    assert abs(float(fmt["duration"]) - recorded) <= segment, (fmt, recorded, start, end)
    top = max(streams, key=lambda s: int(s["width"]))
    assert top["codec_name"] == "h264"
    played = int(top["nb_read_packets"]) / FPS
    assert abs(played - recorded) <= segment, (played, recorded)
    assert end - start - recorded < 10.0  # the gap between the pushes is short
