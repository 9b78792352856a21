"""The WHIP endpoint's HTTP resources, each answer checked with real HTTP requests (aiohttp client
against the aiohttp server), with aiortc making real SDP offers on 127.0.0.1.

The ICE-failure test lets an answered session's peer vanish: the session must end within its
connect timeout and put ``offline`` on the bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection
from structlog.testing import capture_logs

from camflow.bus import LocalBus
from camflow.events import TOPIC_STREAMS, StreamState, StreamStateKind, decode
from camflow.tokens import Action, TokenSigner
from ingest.sources.whip.http import PREFIX, WhipService
from ingest.sources.whip.ice import IcePolicy, announce, install
from ingest.sources.whip.session import SessionLimits
from tests import defaults
from tests.process import free_port

PORTS = (41000, 41099)
POLICY = IcePolicy(("127.0.0.1",), PORTS)


@dataclass
class Whip:
    url: str
    signer: TokenSigner
    service: WhipService
    bus: LocalBus
    http: aiohttp.ClientSession

    def token(self, stream: str, action: Action = Action.PUBLISH) -> str:
        return self.signer.issue(stream, action, 600)

    def auth(self, stream: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(stream)}", "Content-Type": "application/sdp"}


@pytest.fixture
async def whip() -> AsyncIterator[Whip]:
    install(POLICY)
    bus = LocalBus()
    await bus.start()
    signer = TokenSigner(b"k" * 32)
    service = WhipService(
        bus,
        signer,
        policy=POLICY,
        limits=SessionLimits(segment_target=defaults.SEGMENT_TARGET, connect_timeout=2, media_timeout=2),
    )
    root = web.Application()
    root.add_subapp(PREFIX, service.app())
    runner = web.AppRunner(root)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        yield Whip(f"http://127.0.0.1:{port}{PREFIX}", signer, service, bus, http)
    await service.stop()
    await runner.cleanup()
    await bus.close()


async def make_offer(*kinds: str) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def error_of(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    return str(body["error"])


async def test_post_answers_201_with_location_and_etag_then_delete_ends_it(whip: Whip) -> None:
    pc, offer = await make_offer("video", "audio")
    try:
        async with whip.http.post(f"{whip.url}/cam1", data=offer, headers=whip.auth("cam1")) as r:
            assert r.status == 201, await r.text()
            assert r.content_type == "application/sdp"
            answer = await r.text()
            location, etag = r.headers["Location"], r.headers["ETag"]
        assert answer.startswith("v=0") and "a=candidate:" in answer
        ports = [int(line.split()[5]) for line in answer.splitlines() if line.startswith("a=candidate:")]
        hosts = {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")}
        assert hosts == {"127.0.0.1"} and all(PORTS[0] <= p <= PORTS[1] for p in ports), answer
        assert location.startswith("/whip/cam1/") and etag.strip('"') == location.rsplit("/", 1)[1]
        assert "cam1" in whip.service.sessions
        base = whip.url.removesuffix(PREFIX)
        async with whip.http.patch(base + location, data="a=candidate:1", headers=whip.auth("cam1")) as r:
            assert r.status == 405 and "DELETE" in r.headers["Allow"]
            assert await error_of(r) == "method_not_allowed"
        async with whip.http.options(base + location) as r:
            assert r.status == 204 and "DELETE" in r.headers["Access-Control-Allow-Methods"]
        async with whip.http.delete(base + location) as r:
            assert r.status == 200
        assert "cam1" not in whip.service.sessions
        async with whip.http.delete(base + location) as r:
            assert r.status == 404 and await error_of(r) == "not_found"
    finally:
        await pc.close()


async def test_options_is_a_cors_preflight(whip: Whip) -> None:
    headers = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    async with whip.http.options(f"{whip.url}/cam1", headers=headers) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        assert r.headers["Accept-Post"] == "application/sdp"
        assert "Location" in r.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("no token", 401, "unauthorized"),
        ("not bearer", 401, "unauthorized"),
        ("bad token", 401, "unauthorized"),
        ("other stream's token", 401, "unauthorized"),
        ("view token", 401, "unauthorized"),
        ("wrong media type", 415, "unsupported_media_type"),
        ("empty body", 400, "bad_sdp"),
        ("garbage sdp", 400, "bad_sdp"),
        ("audio only", 400, "no_video"),
        ("bad stream name", 400, "bad_stream"),
        ("GET", 405, "method_not_allowed"),
    ],
)
async def test_refusals(whip: Whip, case: str, status: int, error: str) -> None:
    pc, offer = await make_offer("audio" if case == "audio only" else "video")
    stream, headers, body, method = "cam1", whip.auth("cam1"), offer, "POST"
    if case == "no token":
        del headers["Authorization"]
    elif case == "not bearer":
        headers["Authorization"] = f"Basic {whip.token('cam1')}"
    elif case == "bad token":
        headers["Authorization"] = "Bearer v1.bogus.bogus"
    elif case == "other stream's token":
        headers["Authorization"] = f"Bearer {whip.token('cam2')}"
    elif case == "view token":
        headers["Authorization"] = f"Bearer {whip.token('cam1', Action.VIEW)}"
    elif case == "wrong media type":
        headers["Content-Type"] = "application/json"
    elif case == "empty body":
        body = ""
    elif case == "garbage sdp":
        body = "v=0\r\nthis is not an SDP offer\r\n"
    elif case == "bad stream name":
        stream = "no.dots"
    elif case == "GET":
        method = "GET"
    try:
        with capture_logs() as logs:
            async with whip.http.request(method, f"{whip.url}/{stream}", data=body, headers=headers) as r:
                assert r.status == status, await r.text()
                assert await error_of(r) == error
                if status == 401:
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        await pc.close()
    assert not whip.service.sessions
    assert whip.service.refused.get(status, 0) >= 1
    reasons = [e["reason"] for e in logs if e["event"] == "publish_refused"]
    if case in ("bad token", "other stream's token", "view token"):  # why, for the operator (no token)
        assert len(reasons) == 1 and "token" in reasons[0], logs
        assert headers["Authorization"].split()[1] not in str(logs)
    else:
        assert not reasons, logs


async def test_second_publisher_replaces_the_first(whip: Whip) -> None:
    pcs = []
    locations = []
    try:
        for _ in range(2):
            pc, offer = await make_offer("video")
            pcs.append(pc)
            async with whip.http.post(f"{whip.url}/cam1", data=offer, headers=whip.auth("cam1")) as r:
                assert r.status == 201
                locations.append(r.headers["Location"])
        assert whip.service.sessions["cam1"].id == locations[1].rsplit("/", 1)[1]
        base = whip.url.removesuffix(PREFIX)
        async with whip.http.delete(base + locations[0]) as r:
            assert r.status == 404
    finally:
        for pc in pcs:
            await pc.close()


async def test_peer_that_never_connects_ends_the_session_and_the_stream_goes_offline(whip: Whip) -> None:
    follower = await whip.bus.follow([TOPIC_STREAMS])
    pc, offer = await make_offer("video")
    await pc.close()  # the peer is gone before ICE: nobody answers our connectivity checks
    started = time.monotonic()
    async with whip.http.post(f"{whip.url}/cam1", data=offer, headers=whip.auth("cam1")) as r:
        assert r.status == 201
    states: list[StreamState] = []
    deadline = started + 15
    while time.monotonic() < deadline and not any(s.state is StreamStateKind.OFFLINE for s in states):
        message = await follower.get(timeout=1.0)
        if message is not None:
            event = decode(message.value)
            assert isinstance(event, StreamState)
            states.append(event)
    assert [s.state for s in states] == [StreamStateKind.LIVE, StreamStateKind.OFFLINE], states
    assert states[1].reason in ("connect_timeout", "ice_failed")
    assert time.monotonic() - started < 10
    assert "cam1" not in whip.service.sessions
    await asyncio.sleep(0)


def test_announce_rewrites_host_candidates_only() -> None:
    sdp = "\r\n".join(
        [
            "c=IN IP4 10.0.0.5",
            "a=candidate:1 1 udp 2130706431 10.0.0.5 41000 typ host",
            "a=candidate:2 1 udp 1694498815 198.51.100.7 41000 typ srflx raddr 10.0.0.5 rport 41000",
        ]
    )
    out = announce(sdp, IcePolicy(announce_ip="203.0.113.9")).split("\r\n")
    assert out[0] == "c=IN IP4 203.0.113.9"
    assert out[1] == "a=candidate:1 1 udp 2130706431 203.0.113.9 41000 typ host"
    assert out[2].split()[4] == "198.51.100.7"
