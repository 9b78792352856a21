"""The WHEP endpoint with real HTTP (aiohttp client and server) and a real WebRTC viewer (aiortc) on
127.0.0.1: a live feed of H.264 encoded here by libx264 (PyAV) plays in the viewer, decoded at its
size; every refusal is JSON with CORS; an answer without a candidate is refused, for WHIP too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from camflow.bus import LocalBus
from camflow.tokens import Action, TokenSigner
from ingest.codecs import h264
from ingest.media.live import LiveFeed, LiveFeeds
from ingest.media.live_audio import AacToOpus
from ingest.media.units import AccessUnit
from ingest.sources.whip.http import WhipService
from ingest.sources.whip.ice import IcePolicy, install
from ingest.sources.whip.session import SessionLimits
from ingest.sources.whip.whep import WhepLimits
from ingest.sources.whip.whep_http import PREFIX, WhepService
from tests import defaults
from tests.process import free_port
from tests.test_live_audio import aac_tone

POLICY = IcePolicy(("127.0.0.1",), (41100, 41199))
WIDTH, HEIGHT, FPS, GOP = 320, 240, 30, 60


def h264_units(count: int) -> list[AccessUnit]:
    """``count`` access units of a moving picture from libx264 (no B-frames, an IDR every GOP)."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = Fraction(1, FPS)
    codec.options = {"tune": "zerolatency", "bf": "0", "g": str(GOP), "keyint_min": str(GOP)}
    units = []
    for i in range(count + 10):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[:, (i * 4) % WIDTH] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for packet in codec.encode(frame):
            nalus = tuple(h264.split_annexb(bytes(packet)))
            is_idr = any(h264.nal_type(n) == h264.NAL_IDR for n in nalus if n)
            units.append(AccessUnit(len(units) * 90_000 // FPS, nalus, is_idr))
    return units[:count]


@dataclass
class Whep:
    url: str
    signer: TokenSigner
    service: WhepService
    feeds: LiveFeeds
    http: aiohttp.ClientSession

    def headers(self, stream: str) -> dict[str, str]:
        token = self.signer.issue(stream, Action.VIEW, 600)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}


@pytest.fixture
async def whep() -> AsyncIterator[Whep]:
    install(POLICY)
    signer = TokenSigner(b"k" * 32)
    feeds = LiveFeeds()
    service = WhepService(
        feeds, signer, policy=POLICY, limits=WhepLimits(connect_timeout=5, media_timeout=5), max_viewers=2
    )
    root = web.Application()
    root.add_subapp(PREFIX, service.app())
    runner = web.AppRunner(root)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        yield Whep(f"http://127.0.0.1:{port}{PREFIX}", signer, service, feeds, http)
    await service.stop()
    await runner.cleanup()


async def viewer_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def camera(feed: LiveFeed, generation: int, units: list[AccessUnit], start: int = 0) -> None:
    """Push ``units`` from ``start`` on at the frame rate, round and round."""
    i = start
    while True:
        feed.push(units[i % len(units)], generation)
        i += 1
        await asyncio.sleep(1 / FPS)


async def microphone(feed: LiveFeed, generation: int) -> None:
    """Push 20 ms Opus packets of a tone (the stream's AAC as viewers get it) at their rate."""
    encoder, units = aac_tone()
    opus = AacToOpus(encoder.config)
    packets = [p for unit in units for p in opus.push(unit)]
    i = 0
    while True:
        data, pts = packets[i % len(packets)]
        feed.push_opus(data, pts + (i // len(packets)) * len(packets) * 960, generation)
        i += 1
        await asyncio.sleep(0.02)


async def error_of(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    return str(body["error"])


async def test_an_aiortc_viewer_plays_the_live_h264_starting_on_the_cached_idr(whep: Whep) -> None:
    units = h264_units(GOP * 2)
    feed, generation = whep.feeds.publishing("cam", "h264")
    for unit in units[: GOP // 2]:  # half a GOP in: a viewer must not wait for the next IDR
        feed.push(unit, generation)
    assert feed.cached == GOP // 2
    pc, offer = await viewer_offer()
    decoded: list[av.VideoFrame] = []
    heard: list[av.AudioFrame] = []
    got, got_audio = asyncio.Event(), asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            frames, done = (heard, got_audio) if track.kind == "audio" else (decoded, got)
            while len(frames) < 45:
                frames.append(await track.recv())
            done.set()

        readers.append(asyncio.create_task(read()))

    pusher = asyncio.create_task(camera(feed, generation, units, GOP // 2))
    speaker = asyncio.create_task(microphone(feed, generation))
    try:
        async with whep.http.post(f"{whep.url}/cam", data=offer, headers=whep.headers("cam")) as r:
            assert r.status == 201, await r.text()
            answer, location = await r.text(), r.headers["Location"]
        assert location.startswith("/whep/cam/") and r.headers["ETag"].strip('"') == location.rsplit("/")[-1]
        assert "a=candidate:" in answer and "H264" in answer and "a=sendonly" in answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(got.wait(), 20)
        assert {(f.width, f.height) for f in decoded} == {(WIDTH, HEIGHT)}
        await asyncio.wait_for(got_audio.wait(), 20)  # the Opus, decoded by aiortc
        assert {f.sample_rate for f in heard} == {48_000} and "opus" in answer.lower()
        session = whep.service.sessions[location.rsplit("/")[-1]]
        assert session.viewer is not None and session.viewer.counters.dropped == 0  # started on the cache
        base = whep.url.removesuffix(PREFIX)
        async with whep.http.delete(base + location) as r:
            assert r.status == 200
        assert not whep.service.sessions and not feed.viewers
        async with whep.http.delete(base + location) as r:
            assert r.status == 404 and await error_of(r) == "not_found"
    finally:
        for task in (pusher, speaker, *readers):
            task.cancel()
        await pc.close()


async def test_options_is_a_cors_preflight(whep: Whep) -> None:
    async with whep.http.options(f"{whep.url}/cam", headers={"Origin": "http://example.test"}) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Accept-Post"] == "application/sdp"


async def test_the_view_token_may_come_as_a_query_parameter(whep: Whep) -> None:
    whep.feeds.publishing("cam", "h264")
    pc, offer = await viewer_offer()
    token = whep.signer.issue("cam", Action.VIEW, 600)
    try:
        headers = {"Content-Type": "application/sdp"}
        async with whep.http.post(f"{whep.url}/cam?token={token}", data=offer, headers=headers) as r:
            assert r.status == 201, await r.text()
    finally:
        await pc.close()


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("no token", 401, "unauthorized"),
        ("publish token", 401, "unauthorized"),
        ("other stream's token", 401, "unauthorized"),
        ("wrong media type", 415, "unsupported_media_type"),
        ("garbage sdp", 400, "bad_sdp"),
        ("not live", 404, "stream_not_live"),
        ("hevc stream", 409, "unsupported_codec"),
        ("bad stream name", 400, "bad_stream"),
        ("GET", 405, "method_not_allowed"),
    ],
)
async def test_refusals(whep: Whep, case: str, status: int, error: str) -> None:
    stream = "other" if case == "not live" else "cam"
    whep.feeds.publishing("cam", "hevc" if case == "hevc stream" else "h264")
    pc, offer = await viewer_offer()
    headers, body, method = whep.headers("cam"), offer, "POST"
    if case == "no token":
        del headers["Authorization"]
    elif case == "publish token":
        headers["Authorization"] = f"Bearer {whep.signer.issue('cam', Action.PUBLISH, 600)}"
    elif case == "other stream's token":
        headers = whep.headers("cam2")
    elif case == "wrong media type":
        headers["Content-Type"] = "application/json"
    elif case == "garbage sdp":
        body = "hello"
    elif case == "not live":
        headers = whep.headers("other")
    elif case == "bad stream name":
        stream = "no.dots"
    elif case == "GET":
        method = "GET"
    try:
        async with whep.http.request(method, f"{whep.url}/{stream}", data=body, headers=headers) as r:
            assert r.status == status, await r.text()
            assert await error_of(r) == error
            if status == 401:
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        await pc.close()
    assert not whep.service.sessions
    assert whep.service.refused[status] >= 1


async def test_viewer_and_client_limits_are_clear_errors(whep: Whep) -> None:
    feed, _ = whep.feeds.publishing("cam", "h264")
    pcs = []
    try:
        for expected in (201, 201, 503):  # max_viewers=2
            pc, offer = await viewer_offer()
            pcs.append(pc)
            async with whep.http.post(f"{whep.url}/cam", data=offer, headers=whep.headers("cam")) as r:
                assert r.status == expected, await r.text()
                if expected == 503:
                    assert await error_of(r) == "too_many_viewers" and r.headers["Retry-After"]
        whep.service.max_client_sessions = 2
        whep.feeds.publishing("cam2", "h264")
        pc, offer = await viewer_offer()
        pcs.append(pc)
        async with whep.http.post(f"{whep.url}/cam2", data=offer, headers=whep.headers("cam2")) as r:
            assert r.status == 429 and await error_of(r) == "too_many_client_sessions"
        whep.service.max_sessions = 2
        async with whep.http.post(f"{whep.url}/cam2", data=offer, headers=whep.headers("cam2")) as r:
            assert r.status == 503 and await error_of(r) == "too_many_sessions"
        assert len(feed.viewers) == 2
    finally:
        for pc in pcs:
            await pc.close()


@contextlib.contextmanager
def unreachable_policy() -> object:
    """ICE host candidates only on an address this machine does not have (TEST-NET-1): none is bound."""
    policy = IcePolicy(("192.0.2.1",))
    install(policy)
    try:
        yield policy
    finally:
        install(POLICY)


async def test_whep_refuses_an_offer_it_cannot_answer_with_a_candidate(whep: Whep) -> None:
    feed, _ = whep.feeds.publishing("cam", "h264")
    pc, offer = await viewer_offer()
    try:
        with unreachable_policy() as policy:
            whep.service.policy = policy  # type: ignore[assignment]
            async with whep.http.post(f"{whep.url}/cam", data=offer, headers=whep.headers("cam")) as r:
                assert r.status == 503, await r.text()
                assert await error_of(r) == "no_usable_candidate"
                assert "192.0.2.1" in (await r.json())["detail"]
        assert not whep.service.sessions and not feed.viewers
    finally:
        await pc.close()


async def test_whip_refuses_an_offer_it_cannot_answer_with_a_candidate() -> None:
    bus = LocalBus()
    await bus.start()
    signer = TokenSigner(b"k" * 32)
    limits = SessionLimits(segment_target=defaults.SEGMENT_TARGET, connect_timeout=2, media_timeout=2)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="sendonly")
    with unreachable_policy() as policy:
        service = WhipService(bus, signer, policy=policy, limits=limits)  # type: ignore[arg-type]
        root = web.Application()
        root.add_subapp("/whip", service.app())
        runner = web.AppRunner(root)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await pc.setLocalDescription(await pc.createOffer())
            headers = {
                "Authorization": f"Bearer {signer.issue('cam', Action.PUBLISH, 600)}",
                "Content-Type": "application/sdp",
            }
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/whip/cam"
                async with http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
                    assert r.status == 503, await r.text()
                    assert await error_of(r) == "no_usable_candidate"
            assert not service.sessions
        finally:
            await pc.close()
            await service.stop()
            await runner.cleanup()
            await bus.close()
