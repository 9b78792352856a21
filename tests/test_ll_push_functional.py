"""LL-HLS playlists of `camflow run` under a real camera: ffmpeg pushes libx264 (``-tune zerolatency``,
2 s GOP) and AAC over RTSP; an aiohttp client follows ``source``, a ``180p`` rung and ``audio`` with
blocking reloads (as an LL player does: ``_HLS_msn``/``_HLS_part`` of the part after the last one
listed) for 20 s.

Every playlist must pass ``camflow.hls.rules.check_low_latency`` (and parse with ``m3u8``); every part
and segment a playlist names must be fetchable (200) within the edge's hold; each preload hint is
requested as a player does and compared with the part that actually came next (the share of right
hints, at segment boundaries too, is printed and bounded); the part after a segment's last (what a hint
within the segment would name) must be answered 404 promptly; the first playlist lists the first
segment's parts.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
import m3u8
import pytest

from camflow.hls.lowlatency import playlist_end
from camflow.hls.media import MediaPlaylist
from camflow.hls.rules import check_low_latency
from tests.process import Camflow, camflow_run

pytestmark = pytest.mark.integration
STREAM = "llpush"
RATE = 25
FOLLOW_SECONDS = 20.0
PUSH_SECONDS = 34
RENDITIONS = ("source", "180p", "audio")


def camera(url: str) -> subprocess.Popen[bytes]:
    """A camera: live 320x240 H.264 at 25 fps, 2 s GOP, no B-frames, and AAC."""
    return subprocess.Popen(
        [
            *(
                "ffmpeg",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size=320x240:rate={RATE}",
            ),
            *("-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", str(PUSH_SECONDS), "-c:v", "libx264", "-tune", "zerolatency", "-preset", "veryfast"),
            *("-g", str(2 * RATE), "-keyint_min", str(2 * RATE), "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "1"),
            *("-f", "rtsp", "-rtsp_transport", "tcp", url),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Camflow]:
    with camflow_run(tmp_path_factory.mktemp("llpush"), ["--ladder", "source,180p:200k"]) as run:
        yield run


def _path(uri: str) -> str:
    return urlsplit(uri).path


def ordered_parts(pl: MediaPlaylist) -> list[str]:
    ll = pl.low_latency
    assert ll is not None
    return [_path(p.uri) for msn in sorted(ll.parts) for p in ll.parts[msn]]


@dataclass
class Followed:
    playlists: list[str] = field(default_factory=list)
    reload_statuses: list[int] = field(default_factory=list)
    fetches: dict[str, tuple[int, float]] = field(default_factory=dict)  # named uri -> (status, seconds)
    hints: list[tuple[str, str]] = field(default_factory=list)  # (hint, the part that came next)
    hint_answers: dict[str, tuple[int, float]] = field(default_factory=dict)
    probes: dict[str, tuple[int, float]] = field(default_factory=dict)  # last part -> the part after it
    first_seen: float = 0.0  # seconds from the push to the first playlist
    first_parts: int = -1  # parts listed of the stream's first segment in the first playlist


async def _get(
    session: aiohttp.ClientSession, url: str, into: dict[str, tuple[int, float]], key: str
) -> None:
    t0 = time.monotonic()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
            await resp.read()
            into[key] = (resp.status, time.monotonic() - t0)
    except (aiohttp.ClientError, TimeoutError) as exc:
        into[key] = (-1, time.monotonic() - t0)
        print("fetch failed", key, repr(exc))


async def follow(cf: Camflow, started: float, rendition: str) -> Followed:
    token = cf.token("view", STREAM)
    url = cf.http_url(f"/live/{STREAM}/{rendition}.m3u8")
    out = Followed()
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as session:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # plain reloads until the playlist is a low-latency one
            async with session.get(url, params={"token": token}) as resp:
                if resp.status == 200:
                    text = await resp.text()
                    if "#EXT-X-PART-INF" in text:
                        break
            await asyncio.sleep(0.05)
        assert "#EXT-X-PART-INF" in text, f"no LL playlist within 60 s:\n{cf.log[-2000:]}"
        out.first_seen = time.monotonic() - started
        first = MediaPlaylist.parse(text)
        if first.media_sequence == 0 and first.low_latency is not None:
            out.first_parts = len(first.low_latency.parts.get(0, ()))
        end_at = time.monotonic() + FOLLOW_SECONDS
        waiting: dict[str, str] = {}  # a hint -> the last part listed with it
        while time.monotonic() < end_at:
            out.playlists.append(text)
            pl = MediaPlaylist.parse(text)
            assert pl.low_latency is not None
            now = ordered_parts(pl)
            for hint, last in list(waiting.items()):  # every hint published, against the part that came next
                if last in now and now.index(last) + 1 < len(now):
                    out.hints.append((hint, now[now.index(last) + 1]))
                    del waiting[hint]
            if pl.low_latency.preload_hint is not None and now:
                waiting.setdefault(_path(pl.low_latency.preload_hint), now[-1])
            named = [p.uri for ps in pl.low_latency.parts.values() for p in ps] + [s.uri for s in pl.segments]
            for uri in named:
                if _path(uri) not in out.fetches and _path(uri) not in out.hint_answers:
                    out.fetches[_path(uri)] = (0, 0.0)
                    tasks.append(
                        asyncio.create_task(_get(session, urljoin(url, uri), out.fetches, _path(uri)))
                    )
            hint = pl.low_latency.preload_hint
            if hint is not None and _path(hint) not in out.hint_answers:
                out.hint_answers[_path(hint)] = (0, 0.0)
                tasks.append(
                    asyncio.create_task(_get(session, urljoin(url, hint), out.hint_answers, _path(hint)))
                )
            if hint is not None and _path(hint).endswith(".000.m4s") and now and now[-1] not in out.probes:
                # the part a hint within the segment would have named: the edge must 404 it promptly
                head, index = now[-1].rsplit(".", 2)[0], int(now[-1].rsplit(".", 2)[1])
                out.probes[now[-1]] = (0, 0.0)
                probe = urljoin(url, f"{head}.{index + 1:03d}.m4s?token={token}")
                tasks.append(asyncio.create_task(_get(session, probe, out.probes, now[-1])))
            end = playlist_end(text)
            assert end is not None
            msn, part = (end.msn + 1, 0) if end.part < 0 else (end.msn, end.part + 1)
            query = {"token": token, "_HLS_msn": str(msn), "_HLS_part": str(part)}
            async with session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=20)) as resp:
                out.reload_statuses.append(resp.status)
                if resp.status != 200:
                    print("blocking reload", msn, part, resp.status, await resp.text())
                    await asyncio.sleep(0.2)
                    continue
                text = await resp.text()
        await asyncio.gather(*tasks)
    return out


async def follow_both(cf: Camflow, started: float) -> list[Followed]:
    return list(await asyncio.gather(*(follow(cf, started, r) for r in RENDITIONS)))


def test_a_pushed_stream_gets_valid_ll_playlists_and_every_named_object(cf: Camflow) -> None:
    started = time.monotonic()
    cam = camera(cf.rtsp_url(STREAM, cf.token("publish", STREAM)))
    try:
        both = asyncio.run(follow_both(cf, started))
    finally:
        cam.terminate()
        try:
            cam.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cam.kill()
            cam.wait()
    for rendition, followed in zip(RENDITIONS, both, strict=True):
        print(f"\n{rendition}:", end="")
        check(followed)


def check(followed: Followed) -> None:
    playlists = followed.playlists
    bad = [(i, v) for i, t in enumerate(playlists) for v in check_low_latency(t)]
    for text in playlists:
        m3u8.loads(text)  # the m3u8 library reads each
    right = sum(1 for hint, came in followed.hints if hint == came)
    boundary = [(h, c) for h, c in followed.hints if c.endswith(".000.m4s") or h.endswith(".000.m4s")]
    right_boundary = sum(1 for h, c in boundary if h == c)
    hint_404 = [(u, s, round(t, 3)) for u, s in followed.hint_answers.items() for s, t in [s] if s != 200]
    print(
        f"\n{len(playlists)} playlists in {FOLLOW_SECONDS:g} s, first after {followed.first_seen:.2f} s"
        f" (parts of the first segment listed: {followed.first_parts});"
        f" hints right {right}/{len(followed.hints)}, at segment boundaries {right_boundary}/{len(boundary)};"
        f" hint requests not 200: {hint_404}"
    )
    fetched = list(followed.fetches.values())
    print(
        f"named objects fetched: {len(fetched)}, slowest {max(t for _, t in fetched):.3f} s;"
        f" reload statuses {sorted(set(followed.reload_statuses))}"
    )
    assert len(playlists) >= FOLLOW_SECONDS / 0.4, "fewer blocking reloads than one per two parts"
    assert followed.first_parts >= 5  # low latency from the stream's first segment on
    assert not bad, bad[:10]
    assert all(s == 200 for s in followed.reload_statuses), followed.reload_statuses
    missing = {u: st for u, st in followed.fetches.items() if st[0] != 200}
    assert not missing, missing
    assert len(followed.hints) >= 20
    assert right / len(followed.hints) >= 0.9
    assert boundary and right_boundary / len(boundary) >= 0.75
    assert all(t < 0.5 for s, t in followed.hint_answers.values() if s == 404), hint_404
    probes = sorted(followed.probes.values())
    print(f"parts after a segment's last, asked for: {[(s, round(t, 3)) for s, t in probes]}")
    assert len(probes) >= 5 and all(s == 404 and t < 0.6 for s, t in probes), probes
