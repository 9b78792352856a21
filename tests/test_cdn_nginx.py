"""deploy/cdn/nginx.conf in front of a real edge: 200 concurrent viewers, about one edge request per object;
20 viewers of a future low-latency part (and of the blocking reload naming it), one edge request each.

Debian's nginx runs with ``-p`` a temp prefix and ``-c`` the repo's config rendered on free
127.0.0.1 ports, ``daemon off``, stopped by PID. A writer task makes a live stream (1 s
segments, a sliding playlist) in a FileStore; each viewer fetches the master, the media
playlist and every segment it has not seen, for a few rounds.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from camflow.bus import LocalBus
from camflow.events import TOPIC_PLAYLISTS, PlaylistEnd, PlaylistsChanged, encode
from camflow.hls.lowlatency import playlist_end
from camflow.keys import part_key
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.policy import TokenCheck
from tests import defaults
from tests.ll_playlists import EPOCH as LL_EPOCH
from tests.ll_playlists import ll_playlist, part_uri
from tests.process import free_port, stop_process

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "deploy" / "cdn" / "nginx.conf"
EPOCH = "20261121T101500123Z"
SECRET = b"cdn-test-secret-0123456789"
VIEWERS = 200
ROUNDS = 3
SEGMENT = bytes(range(256)) * 80  # 20 KiB
MASTER = (
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=700000,CODECS="avc1.64001f",RESOLUTION=640x360\n'
    "source.m3u8\n"
)


def render_conf(edge_port: int, cdn_port: int, token_check: TokenCheck) -> str:
    text = CONF.read_text()
    for old, new in (
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{edge_port};"),
        ("listen 127.0.0.1:8081 reuseport;", f"listen 127.0.0.1:{cdn_port} reuseport;"),
        ("set $camflow_token_check all;", f"set $camflow_token_check {token_check.value};"),
        ("worker_processes auto;", "worker_processes 2;\ndaemon off;"),
        ("user www-data;", "user root;" if _is_root() else ""),
    ):
        assert old in text, f"{old!r} is no longer in {CONF}"
        text = text.replace(old, new)
    return text


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


@contextmanager
def nginx(prefix: Path, conf: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is not installed: run `make install` (scripts/install-system.sh)")
    (prefix / "temp").mkdir(parents=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    log = (prefix / "stderr.log").open("wb")
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([exe, "-p", str(prefix), "-c", str(conf_path), "-e", "stderr"], stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {proc.returncode}: {(prefix / 'stderr.log').read_text()}"
                )
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen within 15 s") from None
                time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc, timeout=10)
        log.close()


def media_playlist(first: int, last: int, ended: bool = False) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    lines.append(f'#EXT-X-MAP:URI="{EPOCH}/source/init.mp4"')
    for seq in range(first, last + 1):
        lines += ["#EXTINF:1.000,", f"{EPOCH}/source/{seq:08d}.m4s"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


async def live_writer(store: FileStore, stop: asyncio.Event) -> None:
    """One new 1 s segment per second, a window of 4 (bounded: at most 30 segments)."""
    for seq in range(3, 31):
        await store.put(f"streams/cam1/{EPOCH}/source/{seq:08d}.m4s", SEGMENT + seq.to_bytes(4, "big"))
        await store.put("streams/cam1/source.m3u8", media_playlist(max(1, seq - 3), seq).encode())
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
            return
        except TimeoutError:
            pass


@asynccontextmanager
async def edge_with_counter(
    store: FileStore, signer: TokenSigner, token_check: TokenCheck, playlists: LocalBus | None = None
) -> AsyncIterator[tuple[int, Counter[str]]]:
    seen: Counter[str] = Counter()
    app = build_app(store, signer, **defaults.edge_app(token_check=token_check), playlists=playlists)

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        seen[request.path] += 1

    app.on_response_prepare.append(count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1]), seen
    finally:
        await runner.cleanup()


async def viewer(session: aiohttp.ClientSession, master_url: URL) -> int:
    """A player: master, media playlist, new segments (and the init section once), for ROUNDS rounds."""
    got: set[str] = set()
    fetched = 0
    async with session.get(master_url) as resp:
        assert resp.status == 200, await resp.text()
        master = await resp.text()
    media_url = master_url.join(URL(master.strip().splitlines()[-1]))
    for round_ in range(ROUNDS):
        async with session.get(media_url) as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
        uris = [line.split('"')[1] for line in text.splitlines() if line.startswith("#EXT-X-MAP")]
        uris += [line for line in text.splitlines() if line and not line.startswith("#")]
        for uri in uris:
            if uri in got:
                continue
            async with session.get(media_url.join(URL(uri))) as resp:
                assert resp.status == 200, (uri, await resp.text())
                await resp.read()
            got.add(uri)
            fetched += 1
        if round_ < ROUNDS - 1:
            await asyncio.sleep(1.0)
    return fetched


async def run_viewers(cdn_port: int, tokens: list[str]) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        urls = [URL(f"http://127.0.0.1:{cdn_port}/live/cam1/master.m3u8").with_query(token=t) for t in tokens]
        return await asyncio.wait_for(asyncio.gather(*(viewer(session, u) for u in urls)), timeout=90)


@pytest.mark.parametrize("token_check", [TokenCheck.ALL, TokenCheck.PLAYLISTS])
async def test_200_viewers_through_nginx_reach_the_edge_about_once_per_object(
    tmp_path: Path, token_check: TokenCheck
) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    await store.put("streams/cam1/master.m3u8", MASTER.encode())
    await store.put(f"streams/cam1/{EPOCH}/source/init.mp4", b"\x00\x00\x00\x18ftypiso6" + b"\x00" * 12)
    for seq in (1, 2):
        await store.put(f"streams/cam1/{EPOCH}/source/{seq:08d}.m4s", SEGMENT + seq.to_bytes(4, "big"))
    await store.put("streams/cam1/source.m3u8", media_playlist(1, 2).encode())
    signer = TokenSigner(SECRET)
    if token_check is TokenCheck.ALL:  # an alarm link: everyone opens the same URL
        shared = signer.issue("cam1", Action.VIEW, ttl=600)
        tokens = [shared] * VIEWERS
    else:  # every viewer has a token of their own
        tokens = [signer.issue("cam1", Action.VIEW, ttl=600 + i) for i in range(VIEWERS)]
    stop = asyncio.Event()
    async with edge_with_counter(store, signer, token_check) as (edge_port, seen):
        cdn_port = free_port()
        with nginx(tmp_path / "cdn", render_conf(edge_port, cdn_port, token_check), cdn_port):
            writer = asyncio.create_task(live_writer(store, stop))
            try:
                fetched = await run_viewers(cdn_port, tokens)
            finally:
                stop.set()
                await writer
    objects = {p: n for p, n in seen.items() if p.endswith((".m4s", ".mp4"))}
    playlists = {p: n for p, n in seen.items() if p.endswith(".m3u8")}
    served = sum(fetched) + VIEWERS * (1 + ROUNDS)
    print(f"\n{token_check.value}: viewers fetched {served} objects; edge saw {dict(seen)}")
    assert sum(fetched) >= VIEWERS * 3  # every viewer got the init section and segments
    # Every segment and init section reached the edge once (a retry after a lock timeout at most).
    assert objects and all(n <= 2 for n in objects.values()), objects
    assert sum(objects.values()) <= len(objects) + 2
    if token_check is TokenCheck.ALL:
        # One shared token: the master once (it lives 1 s: a couple of refreshes), the media
        # playlist about once per second of the test.
        assert playlists["/live/cam1/master.m3u8"] <= 5
        assert playlists["/live/cam1/source.m3u8"] <= 3 * (ROUNDS + 2)
        assert sum(seen.values()) < served / 20
    else:
        # Per-viewer tokens: playlists are per token (they carry it), so per viewer and round.
        assert playlists["/live/cam1/source.m3u8"] <= VIEWERS * ROUNDS


LL_VIEWERS = 20


async def curl_all(urls: list[str], out: Path) -> tuple[list[tuple[int, str, bytes]], list[float]]:
    """One curl process fetching ``urls`` in parallel: each answer's status, head and body; and when
    each was done (``time.monotonic()``: curl's start, taken as when it was launched, plus its total)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "curl",
        "-s",
        "--no-progress-meter",
        "-i",
        "--parallel",
        "--parallel-immediate",
        "-w",
        "%{time_total}\n",
    ]
    for i, url in enumerate(urls):
        args += ["-o", str(out / f"{i}.out"), url]
    launched = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    answers = []
    for i in range(len(urls)):
        head, _, body = (out / f"{i}.out").read_bytes().partition(b"\r\n\r\n")
        answers.append((int(head.split(b" ", 2)[1]), head.decode("latin-1"), body))
    return answers, [launched + float(t) for t in stdout.split()]


async def test_viewers_of_a_future_part_through_nginx_are_one_edge_request_that_waits_there(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "store")
    await store.start()
    await store.put("streams/cam1/source.m3u8", ll_playlist(12, 3).encode())
    bus = LocalBus()
    signer = TokenSigner(SECRET)
    token = signer.issue("cam1", Action.VIEW, ttl=600)  # an alarm link: everyone opens the same URL
    part = part_uri(12, 4)
    data = b"part 12.4 " * 500
    async with edge_with_counter(store, signer, TokenCheck.ALL, playlists=bus) as (edge_port, seen):
        cdn_port = free_port()
        with nginx(tmp_path / "cdn", render_conf(edge_port, cdn_port, TokenCheck.ALL), cdn_port):
            base = f"http://127.0.0.1:{cdn_port}/live/cam1"
            urls = [f"{base}/{part}?token={token}"] * LL_VIEWERS
            urls += [f"{base}/source.m3u8?token={token}&_HLS_msn=12&_HLS_part=4"] * LL_VIEWERS
            # the plain playlist, now cached by nginx: not what a blocking reload gets (query in the key)
            (plain,), _ = await curl_all([f"{base}/source.m3u8?token={token}"], tmp_path / "plain")
            assert plain[0] == 200 and playlist_end(plain[2].decode()) == (12, 3)
            viewers = asyncio.create_task(curl_all(urls, tmp_path / "viewers"))
            await asyncio.sleep(0.5)  # all asked; one of each is at the edge, held
            assert not viewers.done()
            await store.put(part_key("cam1", LL_EPOCH, "source", 12, 4), data)
            await store.put("streams/cam1/source.m3u8", ll_playlist(12, 4).encode())
            at = time.monotonic()
            event = PlaylistsChanged("cam1", (PlaylistEnd("source", 12, 4),), time.time())
            await bus.publish(TOPIC_PLAYLISTS, "cam1", encode(event))
            answers, done = await viewers
    parts, playlists = answers[:LL_VIEWERS], answers[LL_VIEWERS:]
    after = sorted(round((t - at) * 1000) for t in done)
    print(f"\nnginx, {2 * LL_VIEWERS} viewers waiting: answered after the event in ms: {after}")
    assert all(status == 200 and body == data and "immutable" in head for status, head, body in parts)
    assert all(
        status == 200 and playlist_end(body.decode()) == (12, 4) and "max-age=1" in head
        for status, head, body in playlists
    )
    # one edge request for the part, one for the blocking reload (and one for the plain playlist)
    assert seen[f"/live/cam1/{part}"] == 1 and seen["/live/cam1/source.m3u8"] == 2, dict(seen)
    # nginx's cache lock: the first answer within tens of ms; the viewers waiting on the lock find
    # the cached answer at its next check (nginx checks every 500 ms)
    assert after[0] < 200 and after[-1] < 1000
