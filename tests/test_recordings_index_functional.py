"""The recording index at scale, trimmed (``bench/bench_recordings.py`` runs it at 30 days): two days
of a 2 s camera synthesised through the packager's index writer into a FileStore, then curl asks the
edge (``edge.app.build_app`` on a real port) for the listing, one day's listing and one hour of VOD,
across an epoch change and missing segments. The answers equal what every chunk says; with the day
summaries gone (an index from before them) the answers are the same."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import m3u8
import pytest
from aiohttp.test_utils import TestServer

from camflow.hls.dates import format_date_time as iso
from camflow.hls.dates import parse_date_time
from camflow.hls.rules import check_media
from camflow.keys import recording_days_prefix
from camflow.recordings import IndexChunk, covered, select
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from tests import defaults
from tests.recording_synth import START, every_chunk, synthesise

STREAM = "cam1"
SECRET = b"r" * 32
EPOCH_CHANGE = START + 30 * 3600.0  # synthesised with a new epoch after 30 h


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[FileStore, str]]:
    store = FileStore(tmp_path)
    await store.start()
    made = await synthesise(store, STREAM, 2.0, epoch_seconds=30 * 3600.0, missing_every=700)
    assert len(made.epochs) == 2 and made.segments > 86_000
    server = TestServer(build_app(store, TokenSigner(SECRET), **defaults.edge_app()), host="127.0.0.1")
    await server.start_server()
    try:
        yield store, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def curl(url: str) -> tuple[int, bytes]:
    token = TokenSigner(SECRET).issue(STREAM, Action.VIEW, 3600)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-w", "\n%{http_code}", f"{url}{'&' if '?' in url else '?'}token={token}",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    body, _, status = out.rpartition(b"\n")
    return int(status), body


async def truth(store: FileStore, start: float = -math.inf, end: float = math.inf) -> list[dict[str, Any]]:
    runs = select(await every_chunk(store, STREAM), start, end)
    chunks = [IndexChunk(STREAM, r.epoch, 0, r.renditions, {s.seq: s for s in r.segments}) for r in runs]
    return [r.to_json() for r in covered(chunks)]


async def test_listing_day_and_hour_over_two_days(edge: tuple[FileStore, str]) -> None:
    store, base = edge
    status, body = await curl(f"{base}/api/streams/{STREAM}/recordings")
    assert status == 200, body
    listing = json.loads(body)
    want = await truth(store)
    assert listing["ranges"] == want and len(want) > 100  # a missing segment every 700, an epoch change
    assert {r["epoch"] for r in want} == {r["epoch"] for r in listing["ranges"]} and len(want) > 1
    assert listing["start"] == want[0]["start"] and listing["end"] == want[-1]["end"]
    assert listing["recorded"] == pytest.approx(sum(r["duration"] for r in want), abs=0.01)

    day = START - 0.25 + 86400
    status, body = await curl(
        f"{base}/api/streams/{STREAM}/recordings?start={iso(day)}&end={iso(day + 86400)}"
    )
    assert status == 200, body
    assert json.loads(body)["ranges"] == await truth(store, day, day + 86400)

    start = EPOCH_CHANGE - 1800.0 + 0.7  # an hour across the epoch change, not on a segment boundary
    status, body = await curl(f"{base}/vod/{STREAM}.m3u8?start={iso(start)}&end={iso(start + 3600)}")
    assert status == 200, body
    playlist = m3u8.loads(body.decode())
    assert check_media(body.decode()) == []
    runs = select(await every_chunk(store, STREAM), start, start + 3600)
    assert len(runs) == 2
    assert len(playlist.segments) == sum(len(r.segments) for r in runs)
    first = parse_date_time(playlist.segments[0].program_date_time.isoformat())
    assert first <= start < first + 2.0
    assert all("token=" in s.uri for s in playlist.segments)
    assert sum(1 for s in playlist.segments if s.discontinuity) >= 2  # the epoch change, a missing segment

    # the same answers from an index with no day summaries (as written before them)
    for key in await store.list(recording_days_prefix(STREAM)):
        await store.delete(key)
    status, body = await curl(f"{base}/api/streams/{STREAM}/recordings")
    assert json.loads(body)["ranges"] == want


async def test_windows_without_recordings_and_too_long(edge: tuple[FileStore, str]) -> None:
    _, base = edge
    status, body = await curl(f"{base}/vod/{STREAM}.m3u8?start={iso(START - 7200)}&end={iso(START - 3600)}")
    assert status == 404 and json.loads(body)["error"] == "not_recorded"
    status, body = await curl(f"{base}/vod/{STREAM}.m3u8?start={iso(START)}&end={iso(START + 2 * 86400)}")
    assert status == 400 and json.loads(body)["error"] == "range_too_long"
    status, body = await curl(
        f"{base}/api/streams/{STREAM}/recordings?start={iso(START - 9000)}&end={iso(START)}"
    )
    assert status == 200 and json.loads(body) == {"stream": STREAM, "ranges": []}
