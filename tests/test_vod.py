"""edge.vod on a real aiohttp server (edge.app.build_app + add_recording_routes) over a FileStore
that a real StreamPackager filled: VOD and DVR playlists read back by the m3u8 package and our rules."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import m3u8
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from camflow.hls.dates import format_date_time as format_time
from camflow.hls.errors import PlaylistError
from camflow.hls.rules import check_master, check_media, check_update
from camflow.hls.scan import trim
from camflow.recordings import IndexChunk, bucket_of, chunk_key
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.vod import add_recording_routes
from packager.stream import PackagerStats, StreamPackager
from tests import defaults
from tests.test_packager import EPOCH_A, EPOCH_B, STREAM, T0, offline, ready

Client = TestClient[web.Request, web.Application]
SECRET = b"k" * 32
EPOCH_B_T0 = T0 + 100.0  # EPOCH_B's segments start here (ready() puts both at T0 otherwise)


async def fill(store: FileStore, *, dvr_window: float = 0.0) -> StreamPackager:
    """Epoch A seqs 0-9 (seq 4 missing from the recording), then epoch B seqs 0-4, 2 s each."""
    sp = StreamPackager(
        STREAM, live_window=6.0, gap_timeout=0.0, stats=PackagerStats(), dvr_window=dvr_window
    )
    token = itertools.count()
    for n in [*range(4), *range(5, 10)]:
        sp.on_segment(ready(EPOCH_A, n), next(token), 0.0)
    sp.tick(1.0)  # seq 4 is skipped
    sp.on_state(offline(EPOCH_A, 9), next(token), 1.0)
    for n in range(5):
        ev = ready(EPOCH_B, n)
        sp.on_segment(ev.__class__(**{**ev.__dict__, "wall_clock": EPOCH_B_T0 + 2.0 * n}), next(token), 2.0)
    out = sp.take_output()
    chunks: dict[str, IndexChunk] = {}
    for a in out.index:
        c = chunks.setdefault(f"{a.epoch}", IndexChunk(STREAM, a.epoch, bucket_of(a.segment.wall_clock)))
        c.add(a.segment, a.renditions)
    for c in chunks.values():
        await store.put(chunk_key(c), c.render())
    for key, text in out.writes:
        await store.put(key, text.encode())
    return sp


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    store = FileStore(tmp_path)
    await store.start()
    await fill(store, dvr_window=30.0)
    app = build_app(store, TokenSigner(SECRET), **defaults.edge_app())
    add_recording_routes(app, store, max_range=3600.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


ISSUED = time.time()  # one issue time: every view() is the same token, however long a test takes


def view() -> str:
    return TokenSigner(SECRET).issue(STREAM, Action.VIEW, 86_400, now=ISSUED)


def span(start: float, end: float) -> str:
    return f"start={format_time(start)}&end={format_time(end)}&token={view()}"


async def test_vod_playlist_spans_epochs(client: Client) -> None:
    resp = await client.get(f"/vod/{STREAM}.m3u8?{span(T0 + 1, EPOCH_B_T0 + 5)}")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/vnd.apple.mpegurl"
    text = await resp.text()
    assert check_media(text) == []
    parsed = m3u8.loads(text)
    assert parsed.playlist_type == "vod" and parsed.is_endlist
    names = [s.uri.split("?")[0] for s in parsed.segments]
    a = [f"/live/{STREAM}/{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1, 2, 3, 5, 6, 7, 8, 9)]
    b = [f"/live/{STREAM}/{EPOCH_B}/720p/{n:08d}.m4s" for n in (0, 1, 2)]
    assert names == a + b  # the highest-bandwidth rendition; seq 0 overlaps the start
    assert [s.discontinuity for s in parsed.segments] == [False] * 4 + [True] + [False] * 4 + [
        True,
        False,
        False,
    ]
    assert all(f"token={view()}" in s.uri for s in parsed.segments)
    assert parsed.segments[9].init_section.uri.startswith(f"/live/{STREAM}/{EPOCH_B}/720p/init.mp4?token=")
    assert parsed.segments[0].program_date_time.timestamp() == pytest.approx(T0)


async def test_vod_master_names_every_rendition(client: Client) -> None:
    resp = await client.get(f"/vod/{STREAM}/master.m3u8?{span(T0, T0 + 10)}")
    text = await resp.text()
    assert resp.status == 200, text
    parsed = m3u8.loads(text)
    assert [p.stream_info.resolution for p in parsed.playlists] == [(1280, 720), (640, 360)]
    assert [p.stream_info.codecs for p in parsed.playlists] == ["avc1.64001f", "avc1.42c01e"]
    low = parsed.playlists[1].uri
    assert low.startswith("360p.m3u8?start=") and "token=" in low
    resp = await client.get(f"/vod/{STREAM}/{low}")
    media = await resp.text()
    assert resp.status == 200 and check_media(media) == []
    assert all("/360p/" in s.uri for s in m3u8.loads(media).segments)


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("start=yesterday&end=2026-11-21T10:20:00Z", 400, "bad_time"),
        ("start=2026-11-21T10:15:00&end=2026-11-21T10:20:00Z", 400, "bad_time"),  # no zone
        ("end=2026-11-21T10:20:00Z", 400, "bad_time"),
        ("start=2026-11-21T10:20:00Z&end=2026-11-21T10:15:00Z", 400, "bad_range"),
        ("start=2026-11-21T08:00:00Z&end=2026-11-21T10:20:00Z", 400, "range_too_long"),
        ("start=2026-11-22T10:15:00Z&end=2026-11-22T10:20:00Z", 404, "not_recorded"),
    ],
)
async def test_vod_errors_are_json(client: Client, query: str, status: int, error: str) -> None:
    resp = await client.get(f"/vod/{STREAM}.m3u8?{query}&token={view()}")
    assert resp.status == status
    body = await resp.json()
    assert body["error"] == error and body["detail"]


async def test_vod_needs_a_view_token(client: Client) -> None:
    q = f"start={format_time(T0)}&end={format_time(T0 + 10)}"
    assert (await client.get(f"/vod/{STREAM}.m3u8?{q}")).status == 401
    other = TokenSigner(SECRET).issue("cam2", Action.VIEW, 600)
    assert (await client.get(f"/vod/{STREAM}.m3u8?{q}&token={other}")).status == 403
    assert (await client.get(f"/vod/{STREAM}/master.m3u8?{q}&token=garbage")).status == 403
    assert (await client.get(f"/api/streams/{STREAM}/recordings")).status == 401


async def test_an_operator_token_watches_recordings_and_dvr_like_live(client: Client) -> None:
    """An admin token may watch every stream on /live; VOD, DVR and the recordings list refused it."""
    admin = TokenSigner(SECRET).issue("*", Action.ADMIN, 600)
    q = f"start={format_time(T0)}&end={format_time(T0 + 10)}&token={admin}"
    assert (await client.get(f"/live/{STREAM}/720p.m3u8?token={admin}")).status == 200
    assert (await client.get(f"/vod/{STREAM}/master.m3u8?{q}")).status == 200
    assert (await client.get(f"/vod/{STREAM}.m3u8?{q}")).status == 200
    assert (await client.get(f"/live/{STREAM}/720p.m3u8?dvr=8&token={admin}")).status == 200
    assert (await client.get(f"/api/streams/{STREAM}/recordings?token={admin}")).status == 200
    publish = TokenSigner(SECRET).issue(STREAM, Action.PUBLISH, 600)
    refused = await client.get(f"/vod/{STREAM}.m3u8?{q.replace(admin, publish)}")
    assert refused.status == 403 and (await refused.json())["error"] == "token_scope"


async def test_recordings_list(client: Client) -> None:
    resp = await client.get(f"/api/streams/{STREAM}/recordings?token={view()}")
    assert resp.status == 200
    ranges = (await resp.json())["ranges"]
    assert [(r["epoch"], r["start"], r["end"], r["segments"]) for r in ranges] == [
        (EPOCH_A, format_time(T0), format_time(T0 + 8), 4),
        (EPOCH_A, format_time(T0 + 10), format_time(T0 + 20), 5),
        (EPOCH_B, format_time(EPOCH_B_T0), format_time(EPOCH_B_T0 + 10), 5),
    ]
    cam9 = TokenSigner(SECRET).issue("cam9", Action.VIEW, 600)
    empty = await client.get(f"/api/streams/cam9/recordings?token={cam9}")
    assert (empty.status, await empty.json()) == (200, {"stream": "cam9", "ranges": []})


async def test_dvr_window_reaches_back(client: Client) -> None:
    live = await (await client.get(f"/live/{STREAM}/720p.m3u8?token={view()}")).text()
    resp = await client.get(f"/live/{STREAM}/720p.m3u8?dvr=8&token={view()}")
    text = await resp.text()
    assert resp.status == 200, text
    assert check_media(text) == []
    parsed = m3u8.loads(text)
    assert not parsed.is_endlist
    assert sum(s.duration for s in parsed.segments) >= 8 > len(m3u8.loads(live).segments) * 2
    assert all(s.init_section is not None for s in parsed.segments)
    master = await (await client.get(f"/live/{STREAM}/master.m3u8?dvr=12&token={view()}")).text()
    assert check_master(master) == []
    assert all("dvr=12" in p.uri and "token=" in p.uri for p in m3u8.loads(master).playlists)
    bad = await client.get(f"/live/{STREAM}/720p.m3u8?dvr=-3&token={view()}")
    assert bad.status == 400 and (await bad.json())["error"] == "bad_dvr"


def test_trim_live_keeps_a_valid_sliding_window() -> None:
    sp = StreamPackager(STREAM, live_window=6.0, gap_timeout=0.0, stats=PackagerStats(), dvr_window=40.0)
    renders: list[str] = []
    for n in range(20):
        ev = ready(EPOCH_A if n < 8 else EPOCH_B, n if n < 8 else n - 8)
        sp.on_segment(ev, n, 0.0)
        if n == 7:
            sp.on_state(offline(EPOCH_A, 7), 100, 0.0)
        texts = dict(sp.take_output().writes)
        dvr = texts.get(f"streams/{STREAM}/dvr/720p.m3u8")
        if dvr is not None:
            renders.append(trim(dvr, 9.0))
    for before, after in itertools.pairwise(renders):
        assert check_media(after) == [] and check_update(before, after) == []
        assert 1 <= len(m3u8.loads(after).segments) <= 5
    assert m3u8.loads(renders[-1]).media_sequence == 15


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n3EXTINF:2.000,\na.m4s\n", "has no EXTINF"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:two,\na.m4s\n", "has no EXTINF"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x1\n#EXTINF:2.000,\na.m4s\n", "not a decimal integer"),
    ],
)
def test_trim_refuses_what_it_cannot_cut(text: str, match: str) -> None:
    """make fuzz (hls-media): an entry without EXTINF raised StopIteration out of the edge's DVR handler."""
    with pytest.raises(PlaylistError, match=match):
        trim(text, 6.0)


async def test_dvr_of_an_unreadable_stored_playlist_is_a_502(client: Client, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.put(f"streams/{STREAM}/dvr/720p.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.m4s\n")
    resp = await client.get(f"/live/{STREAM}/720p.m3u8?dvr=8&token={view()}")
    assert resp.status == 502 and (await resp.json())["error"] == "bad_playlist"
    await store.put(f"streams/{STREAM}/dvr/720p.m3u8", b"#EXTM3U\n\xff\n")
    resp = await client.get(f"/live/{STREAM}/720p.m3u8?dvr=8&token={view()}")
    assert resp.status == 502 and (await resp.json())["error"] == "bad_playlist"
