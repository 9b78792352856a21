"""Audio downstream of ingest: segment-ready v4 (audio renditions), the packager's EXT-X-MEDIA master and
aligned audio playlist, restart, and the edge's VOD and DVR masters; outputs parsed with the ``m3u8``
package and checked by the project's RFC 8216 rules."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import m3u8
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from camflow.events import RenditionRef, SegmentReady, decode, encode
from camflow.hls.dates import format_date_time as format_time
from camflow.hls.master import AudioRendition, Variant, parse_master_audio, render_master
from camflow.hls.rules import check_master, check_media
from camflow.keys import init_key, master_playlist_key, media_playlist_key, segment_key
from camflow.recordings import IndexChunk, bucket_of, chunk_key
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.vod import add_recording_routes
from packager.stream import PackagerStats, StreamPackager
from tests import defaults
from tests.test_packager import EPOCH_A, EPOCH_B, STREAM, T0, offline, ready

SECRET = b"k" * 32
AUDIO_BW = 70_000


def audio_ref(epoch: str, seq: int) -> RenditionRef:
    return RenditionRef(
        name="audio",
        width=0,
        height=0,
        bandwidth=AUDIO_BW,
        codecs="mp4a.40.2",
        init_key=init_key(STREAM, epoch, "audio"),
        key=segment_key(STREAM, epoch, "audio", seq),
        size=500,
        kind="audio",
        channels=2,
        sample_rate=44100,
    )


def with_audio(ev: SegmentReady) -> SegmentReady:
    return replace(ev, renditions=(*ev.renditions, audio_ref(ev.epoch, ev.seq)))


def writes(sp: StreamPackager) -> dict[str, str]:
    return dict(sp.take_output().writes)


def packager() -> StreamPackager:
    return StreamPackager(STREAM, live_window=60.0, gap_timeout=0.0, stats=PackagerStats(), dvr_window=30.0)


# --- events --------------------------------------------------------------------------------------------


def test_segment_ready_v4_carries_audio_renditions() -> None:
    ev = with_audio(ready(EPOCH_A, 0))
    back = decode(encode(ev))
    assert back == ev and isinstance(back, SegmentReady)
    assert [r.is_audio for r in back.renditions] == [False, False, True]


def test_v3_readers_renditions_are_video() -> None:
    data = encode(with_audio(ready(EPOCH_A, 0)))
    (length,) = (int.from_bytes(data[4:8], "big"),)
    header = json.loads(data[8 : 8 + length])
    header["v"] = 3
    for r in header["renditions"]:  # what a v3 writer sent: no kind, channels or sample rate
        r.pop("kind"), r.pop("channels"), r.pop("sample_rate")
    blob = json.dumps(header).encode()
    old = decode(b"CFE1" + len(blob).to_bytes(4, "big") + blob)
    assert isinstance(old, SegmentReady) and not any(r.is_audio for r in old.renditions)
    header["v"], header["renditions"][0]["kind"] = 4, "subtitles"
    blob = json.dumps(header).encode()
    with pytest.raises(Exception, match="rendition kind 'subtitles'"):
        decode(b"CFE1" + len(blob).to_bytes(4, "big") + blob)


# --- master and media playlists -------------------------------------------------------------------------


def test_render_master_with_an_audio_group() -> None:
    text = render_master(
        [Variant("720p.m3u8", 2_900_000, 2_800_000, "avc1.64001f,mp4a.40.2", 1280, 720, 30.0, "aud")],
        [AudioRendition("aud", "audio", "audio.m3u8", channels=2)],
    )
    assert check_master(text) == []
    parsed = m3u8.loads(text)
    [media] = parsed.media
    assert (media.type, media.group_id, media.name, media.uri) == ("AUDIO", "aud", "audio", "audio.m3u8")
    assert (media.default, media.autoselect, media.channels) == ("YES", "YES", "2")
    assert parsed.playlists[0].stream_info.audio == "aud"
    assert parse_master_audio(text) == {"audio": AudioRendition("aud", "audio", "audio.m3u8", "", True, 2)}


def test_packager_writes_ext_x_media_and_an_aligned_audio_playlist() -> None:
    sp = packager()
    for n in range(3):
        sp.on_segment(with_audio(ready(EPOCH_A, n)), n, 0.0)
    out = writes(sp)
    master = out[master_playlist_key(STREAM)]
    assert check_master(master) == []
    parsed = m3u8.loads(master)
    [media] = parsed.media
    assert (media.type, media.group_id, media.uri, media.channels) == ("AUDIO", "aud", "audio.m3u8", "2")
    assert [p.uri for p in parsed.playlists] == ["720p.m3u8", "360p.m3u8"]  # audio is not a variant
    for p in parsed.playlists:
        assert p.stream_info.audio == "aud" and p.stream_info.codecs.endswith(",mp4a.40.2")
    assert parsed.playlists[0].stream_info.bandwidth == 2_800_000 + AUDIO_BW  # the audio counts too

    audio = out[media_playlist_key(STREAM, "audio")]
    video = out[media_playlist_key(STREAM, "720p")]
    assert check_media(audio) == []
    a, v = m3u8.loads(audio), m3u8.loads(video)
    assert a.media_sequence == v.media_sequence and a.discontinuity_sequence == v.discontinuity_sequence
    assert [s.uri for s in a.segments] == [f"{EPOCH_A}/audio/{n:08d}.m4s" for n in range(3)]
    assert [s.duration for s in a.segments] == [s.duration for s in v.segments]
    assert a.segments[0].init_section.uri == f"{EPOCH_A}/audio/init.mp4"


def test_audio_follows_epochs_gaps_and_the_end() -> None:
    sp = packager()
    token = itertools.count()
    for n in (0, 1, 3):  # seq 2 never comes: a gap in every rendition, audio too
        sp.on_segment(with_audio(ready(EPOCH_A, n)), next(token), 0.0)
    sp.tick(1.0)
    out = writes(sp)
    a = m3u8.loads(out[media_playlist_key(STREAM, "audio")])
    v = m3u8.loads(out[media_playlist_key(STREAM, "720p")])
    assert [s.uri for s in a.segments] == [s.uri.replace("/720p/", "/audio/") for s in v.segments]
    assert [s.gap_tag for s in a.segments] == [s.gap_tag for s in v.segments] == [None, None, True, None]
    sp.on_segment(with_audio(ready(EPOCH_B, 0)), next(token), 2.0)  # a new publish
    sp.on_state(offline(EPOCH_A, 3), next(token), 2.0)
    out = writes(sp)
    a = m3u8.loads(out[media_playlist_key(STREAM, "audio")])
    v = m3u8.loads(out[media_playlist_key(STREAM, "720p")])
    assert [(s.uri, s.discontinuity) for s in a.segments] == [
        (s.uri.replace("/720p/", "/audio/"), s.discontinuity) for s in v.segments
    ]
    assert (a.media_sequence, a.discontinuity_sequence) == (v.media_sequence, v.discontinuity_sequence)
    assert a.segments[-1].uri == f"{EPOCH_B}/audio/00000000.m4s"
    sp.on_state(offline(EPOCH_B, 0), next(token), 3.0)
    sp.tick(100.0)
    assert m3u8.loads(writes(sp)[media_playlist_key(STREAM, "audio")]).is_endlist


def test_an_epoch_without_audio_drops_the_group() -> None:
    sp = packager()
    sp.on_segment(with_audio(ready(EPOCH_A, 0)), 0, 0.0)
    writes(sp)
    sp.on_state(offline(EPOCH_A, 0), 1, 0.0)
    sp.on_segment(ready(EPOCH_B, 0), 2, 1.0)  # the camera came back without audio
    master = m3u8.loads(writes(sp)[master_playlist_key(STREAM)])
    assert master.media == [] and all(p.stream_info.audio is None for p in master.playlists)


def test_restart_restores_the_audio_playlist() -> None:
    first = packager()
    for n in range(3):
        first.on_segment(with_audio(ready(EPOCH_A, n)), n, 0.0)
    out = writes(first)
    media = {n: out[media_playlist_key(STREAM, n)] for n in ("720p", "360p", "audio")}
    dvr = {n: out[f"streams/{STREAM}/dvr/{n}.m3u8"] for n in ("720p", "360p", "audio")}
    second = packager()
    second.restore(out[master_playlist_key(STREAM)], media, dvr)
    second.on_segment(with_audio(ready(EPOCH_A, 2)), 0, 1.0)  # re-delivered: no duplicate
    second.on_segment(with_audio(ready(EPOCH_A, 3)), 1, 1.0)
    after = writes(second)
    a = m3u8.loads(after[media_playlist_key(STREAM, "audio")])
    assert [s.uri for s in a.segments] == [f"{EPOCH_A}/audio/{n:08d}.m4s" for n in range(4)]
    assert m3u8.loads(after[master_playlist_key(STREAM)]).media[0].uri == "audio.m3u8"


# --- the edge: VOD and DVR masters ---------------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    store = FileStore(tmp_path)
    await store.start()
    sp = packager()
    for n in range(5):
        sp.on_segment(with_audio(ready(EPOCH_A, n)), n, 0.0)
    out = sp.take_output()
    chunk = IndexChunk(STREAM, EPOCH_A, bucket_of(T0))
    for a in out.index:
        chunk.add(a.segment, a.renditions)
    await store.put(chunk_key(chunk), chunk.render())
    for key, text in out.writes:
        await store.put(key, text.encode())
    app = build_app(store, TokenSigner(SECRET), **defaults.edge_app())
    add_recording_routes(app, store, max_range=3600.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_vod_master_has_the_audio_group(client: TestClient[web.Request, web.Application]) -> None:
    token = TokenSigner(SECRET).issue(STREAM, Action.VIEW, 600)
    query = f"start={format_time(T0)}&end={format_time(T0 + 8)}&token={token}"
    resp = await client.get(f"/vod/{STREAM}/master.m3u8?{query}")
    text = await resp.text()
    assert resp.status == 200, text
    parsed = m3u8.loads(text)
    [media] = parsed.media
    assert media.type == "AUDIO" and media.uri.startswith("audio.m3u8?start=") and "token=" in media.uri
    assert [p.stream_info.resolution for p in parsed.playlists] == [(1280, 720), (640, 360)]
    assert all(p.stream_info.audio == "aud" and "mp4a.40.2" in p.stream_info.codecs for p in parsed.playlists)
    audio = await (await client.get(f"/vod/{STREAM}/{media.uri}")).text()
    assert check_media(audio) == [] and all("/audio/" in s.uri for s in m3u8.loads(audio).segments)
    best = await (await client.get(f"/vod/{STREAM}.m3u8?{query}")).text()
    assert all("/720p/" in s.uri for s in m3u8.loads(best).segments)  # the best video, never audio


async def test_dvr_master_sends_the_audio_to_its_dvr_playlist(
    client: TestClient[web.Request, web.Application],
) -> None:
    token = TokenSigner(SECRET).issue(STREAM, Action.VIEW, 600)
    text = await (await client.get(f"/live/{STREAM}/master.m3u8?dvr=8&token={token}")).text()
    [media] = m3u8.loads(text).media
    assert media.uri.startswith("audio.m3u8?dvr=8") and "token=" in media.uri
    resp = await client.get(f"/live/{STREAM}/{media.uri}")
    assert resp.status == 200 and check_media(await resp.text()) == []
