"""The listener limits on real sockets, in process: the edge (fast path and connections handed to
aiohttp), WHIP on its own port and RTSP. Trickled heads and bodies are closed at their deadline,
not kept by their trickle; the per-client cap refuses the excess; refusals are counted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from camflow import guard as guard_module
from camflow.bus import LocalBus
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.service import EdgeServer
from ingest.service import build_rtsp_server
from ingest.sources.whip.http import WhipService, serve_whip
from ingest.sources.whip.session import SessionLimits
from tests import defaults
from tests.process import free_port
from tests.test_edge import EPOCH
from tests.vectors.rtsp_publish import FFMPEG_5_1_SDP

SECRET = b"guard-test-secret-0123456789abcdef"
LIMITS = defaults.limits(
    head_timeout=1.0,
    body_timeout=1.0,
    body_min_rate=1000.0,
    idle_timeout=2.0,
    send_timeout=1.0,
    per_client=3,
    exempt=(),
)
BIG_PATH = f"/live/cam1/{EPOCH}/source/00000001.m4s"
BIG = b"\x00\x00\x00\x10styp" + bytes(32 << 20)  # more than both ends' socket buffers hold


def refused(listener: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "camflow_connections_refused_total", {"listener": listener, "reason": reason}
    )
    return value or 0.0


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything until the server closes (a reset, when the trickle's bytes reach a closed socket: b"")."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float = 0.2) -> int:
    """Write ``data`` a byte at a time until the peer closes; how many bytes went."""
    sent = 0
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        pass
    return sent


@pytest.fixture(autouse=True)
def fast_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "SWEEP_SECONDS", 0.1)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    store = FileStore(tmp_path / "store")
    await store.start()
    await store.put("streams/cam1/master.m3u8", b"#EXTM3U\n")
    await store.put(f"streams/cam1/{EPOCH}/source/00000001.m4s", BIG)
    signer = TokenSigner(SECRET)
    server = EdgeServer(store, signer, **defaults.edge(limits=LIMITS))
    port = await server.start()
    yield port, signer.issue("cam1", Action.VIEW, 600)
    await server.stop()
    await store.close()


async def test_edge_a_trickled_head_gets_408_at_its_deadline(edge: tuple[int, str]) -> None:
    port, _ = edge
    before = refused("edge", "head_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    sender = asyncio.create_task(trickle(writer, b"GET /live/cam1/master.m3u8 HTTP/1.1\r\nHost: x" * 10))
    answer = await read_all(reader)
    took = time.monotonic() - began
    sender.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:80]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    assert 0.9 < took < 4.0, took  # 1 s, the 0.1 s sweep, a loaded machine
    assert refused("edge", "head_timeout") >= before + 1


async def test_edge_after_the_hand_over_a_trickled_head_and_body_are_closed(edge: tuple[int, str]) -> None:
    port, _ = edge
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the application answers: handed over
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(head.lower().partition(b"content-length:")[2].split(b"\r\n")[0])
    await reader.readexactly(length)
    before = refused("edge", "head_timeout")
    began = time.monotonic()
    sender = asyncio.create_task(trickle(writer, b"GET /healthz HTTP/1.1\r\nHost: x" * 10))
    assert await read_all(reader) == b""
    assert time.monotonic() - began < 4.0
    sender.cancel()
    writer.close()
    assert refused("edge", "head_timeout") >= before + 1
    # A body announced and trickled: closed at 1 s + 100 B / 1000 B/s, not when it ends.
    before = refused("edge", "body_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    began = time.monotonic()
    sender = asyncio.create_task(trickle(writer, b"x" * 100))
    await read_all(reader)
    assert time.monotonic() - began < 4.0
    sender.cancel()
    writer.close()
    assert refused("edge", "body_timeout") >= before + 1


async def test_edge_idle_keep_alive_and_oversized_heads(edge: tuple[int, str]) -> None:
    port, token = edge
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /live/cam1/master.m3u8?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    began = time.monotonic()
    await read_all(reader)  # the body, then the close at the idle limit
    assert 1.5 < time.monotonic() - began < 3.5
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nX-Filler: " + b"a" * 9000 + b"\r\n\r\n")
    assert (await read_all(reader)).startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_edge_a_client_that_reads_nothing_is_reset_at_the_send_timeout(edge: tuple[int, str]) -> None:
    port, token = edge
    before = refused("edge", "send_timeout")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {BIG_PATH}?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    deadline = time.monotonic() + 10
    while refused("edge", "send_timeout") == before:  # bounded: the 1 s stall, the sweep, slack
        assert time.monotonic() < deadline, "a client reading nothing kept its connection"
        await asyncio.sleep(0.1)
    got = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
            got += len(chunk)
    assert got < len(BIG)  # reset: the rest was never sent
    writer.close()


async def test_edge_per_client_cap_refuses_the_excess(edge: tuple[int, str]) -> None:
    port, token = edge
    before = refused("edge", "per_client_cap")
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"Retry-After: 5" in answer
    assert "--max-connections-per-client" in json.loads(answer.partition(b"\r\n\r\n")[2])["detail"]
    assert refused("edge", "per_client_cap") >= before + 1
    _, held_writer = held.pop()
    held_writer.close()
    await held_writer.wait_closed()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # a slot is free again
    writer.write(f"GET /live/cam1/master.m3u8?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    for _, w in held:
        w.close()


async def test_whip_on_its_own_port_is_guarded_and_bounds_the_offer() -> None:
    bus = LocalBus()
    await bus.start()
    signer = TokenSigner(SECRET)
    service = WhipService(
        bus,
        signer,
        limits=SessionLimits(segment_target=defaults.SEGMENT_TARGET, connect_timeout=2, media_timeout=2),
        connection_limits=dataclasses.replace(LIMITS, body_min_rate=65536.0),  # a whole offer: 2 s
    )
    port = free_port()
    stop = await serve_whip(service, "127.0.0.1", port, LIMITS)
    try:
        token = signer.issue("cam1", Action.PUBLISH, 600)
        before = refused("whip", "head_timeout")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sender = asyncio.create_task(trickle(writer, b"POST /whip/cam1 HTTP/1.1\r\nHost: x" * 10))
        assert await read_all(reader) == b""
        sender.cancel()
        writer.close()
        assert refused("whip", "head_timeout") >= before + 1
        # A chunked offer the listener cannot frame: the endpoint's own body deadline answers 408.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /whip/cam1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nv\r\n".encode()
        )
        began = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert 1.5 < time.monotonic() - began < 4.0
        writer.close()
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await read_all(reader)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        for _, w in held:
            w.close()
    finally:
        await service.stop()
        await stop()
        await bus.close()


def announce(port: int, token: str) -> bytes:
    return (
        f"ANNOUNCE rtsp://127.0.0.1:{port}/cam1?token={token} RTSP/1.0\r\nCSeq: 1\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(FFMPEG_5_1_SDP)}\r\n\r\n"
    ).encode() + FFMPEG_5_1_SDP


async def test_rtsp_per_client_cap_and_a_request_trickled_after_the_handshake() -> None:
    bus = LocalBus()
    await bus.start()
    signer = TokenSigner(SECRET)
    rtsp_limits = defaults.limits(head_timeout=1.0, per_client=2, exempt=())
    server = build_rtsp_server(
        bus, signer, host="127.0.0.1", port=0, **defaults.rtsp_server(udp_ports=None, limits=rtsp_limits)
    )
    port = await server.start()
    try:
        before = refused("rtsp", "per_client_cap")
        camera = await asyncio.open_connection("127.0.0.1", port)
        other = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await read_all(reader)
        assert answer.startswith(b"RTSP/1.0 503 ") and b"limit per client address" in answer
        assert refused("rtsp", "per_client_cap") >= before + 1
        writer.close()
        other[1].close()
        c_reader, c_writer = camera
        c_writer.write(announce(port, signer.issue("cam1", Action.PUBLISH, 600)))
        assert (await asyncio.wait_for(c_reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"RTSP/1.0 200")
        before = refused("rtsp", "head_timeout")
        began = time.monotonic()
        options = f"OPTIONS rtsp://127.0.0.1:{port}/cam1 RTSP/1.0\r\nCSeq: 2".encode() * 10
        sender = asyncio.create_task(trickle(c_writer, options))  # activity, never a whole request
        assert await read_all(c_reader) == b""
        sender.cancel()
        assert time.monotonic() - began < 4.5  # 1 s, seen by the once-a-second sweep
        assert refused("rtsp", "head_timeout") >= before + 1
        c_writer.close()
    finally:
        await server.stop()
        await bus.close()
