"""Fuzz targets of the edge: the HTTP fast path's request parser and what a request head decides
(``edge-fastpath``), and the connection that reads requests off the socket (``edge-wire``)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from camflow.guard import ConnectionGuard, GuardedProtocol
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.cache import CachedObject
from edge.fastpath import FastPath
from edge.policy import TokenCheck
from edge.state import EDGE
from edge.wire import EdgeHTTPProtocol
from tests import defaults
from tests.fuzz.harness import chunks, target

SECRET = b"fuzz-edge-secret-0123456789"
SIGNER = TokenSigner(SECRET)
VIEW = SIGNER.issue("cam1", Action.VIEW, ttl=None)
EPOCH = "20261121T101500123Z"
OBJECTS = {
    "streams/cam1/master.m3u8": (
        b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS="avc1.64001f"\nsource.m3u8\n'
    ),
    "streams/cam1/source.m3u8": (
        f'#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXT-X-MAP:URI="{EPOCH}/source/init.mp4"\n'
        f"#EXTINF:2.000,\n{EPOCH}/source/00000001.m4s\n"
    ).encode(),
    "streams/cam1/bad.m3u8": b"#EXTM3U\n\xff\xfe not UTF-8\n",
    f"streams/cam1/{EPOCH}/source/init.mp4": b"\x00\x00\x00\x18ftypiso6" + bytes(12),
    f"streams/cam1/{EPOCH}/source/00000001.m4s": b"\x00\x00\x00\x10styp" + b"1" * 100,
}
_fast: FastPath | None = None
_loop: asyncio.AbstractEventLoop | None = None
_loaded: dict[str, CachedObject] = {}


async def _build(root: Path) -> FastPath:
    store = FileStore(root)
    await store.start()
    for key, data in OBJECTS.items():
        await store.put(key, data)
    app = build_app(store, SIGNER, **defaults.edge_app(token_check=TokenCheck.ALL))
    state = app[EDGE]
    for key in OBJECTS:
        _loaded[key] = await state.fetch(key)
    return FastPath(state)


def _setup() -> None:
    """The edge application on a FileStore holding ``OBJECTS``, and its loop (kept for ``edge-wire``)."""
    global _fast, _loop
    root = Path(tempfile.mkdtemp(prefix="camflow-fuzz-edge-"))
    _loop = asyncio.new_event_loop()
    _fast = _loop.run_until_complete(_build(root))


def _head(target: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    return "\r\n".join([f"{method} {target} {version}", "Host: edge", *headers]).encode()


def _seeds() -> list[bytes]:
    t = f"?token={VIEW}"
    return [
        _head(f"/live/cam1/master.m3u8{t}", "Accept-Encoding: gzip, deflate"),
        _head(f"/live/cam1/source.m3u8{t}", "Connection: close", "User-Agent: hls.js"),
        _head(f"/live/cam1/{EPOCH}/source/00000001.m4s{t}", method="HEAD"),
        _head(f"/live/cam1/{EPOCH}/source/init.mp4{t}&x=1", "Connection: keep-alive", version="HTTP/1.0"),
        _head(f"/live/cam1/bad.m3u8{t}", "Accept-Encoding: *;q=0"),
        _head(f"/live/cam1/source.m3u8{t}", "Range: bytes=0-10"),
    ]


WORDS = (
    b"GET ",
    b"HEAD ",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"\r\n",
    b"/live/cam1/",
    b"master.m3u8",
    b".m3u8",
    b"init.mp4",
    b"/00000001.m4s",
    EPOCH.encode(),
    b"?token=",
    f"token={VIEW}".encode(),
    b"Connection: ",
    b"Accept-Encoding: ",
    b"Range: ",
    b"If-None-Match: ",
    b"Content-Length: ",
    b"%2F",
)


@target("edge-fastpath", allowed=(), seeds=_seeds, setup=_setup, dictionary=WORDS)
def edge_fastpath(data: bytes) -> None:
    """A request head to ``FastPath.respond`` (head parser, query token, live path, token check, gzip,
    keep-alive), then again with the object loaded, as ``edge.wire`` does: it answers or returns None
    (the application answers) or a key to load; it never raises."""
    fast = _fast
    assert fast is not None, "setup() first"
    for _ in range(2):  # the second time from the remembered plan
        answer = fast.respond(data)
        if isinstance(answer, str) and answer in _loaded:
            fast.respond(data, _loaded[answer])


class _Transport:
    """What ``EdgeHTTPProtocol`` writes, and whether it closed the connection or handed it over."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.handed: _Application | GuardedProtocol | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed and self.handed is None, "a write after close or hand-over"
        self.written.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False  # a refusal closes at once here: the harness checks what was written

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_protocol(self, protocol: _Application | GuardedProtocol) -> None:
        self.handed = protocol


class _Application:
    """aiohttp's protocol after a hand-over: it gets the connection and every byte not yet answered."""

    def __init__(self) -> None:
        self.received = b""

    def connection_made(self, transport: _Transport) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.received += data


async def _connection(data: bytes) -> None:
    assert _fast is not None, "setup() first"
    transport = _Transport()
    guard = ConnectionGuard("edge", defaults.limits())  # the edge's limits, as `camflow edge` sets them
    protocol = EdgeHTTPProtocol(_fast, _Application, set(), guard)  # type: ignore[arg-type]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    sent = b""
    for piece in chunks(data):
        if transport.closed or transport.handed is not None:
            break
        protocol.data_received(piece)
        sent += piece
        loading = protocol._loading
        if loading is not None:  # a miss: the store read, then the protocol goes on
            await asyncio.wait([loading], timeout=10)
            await asyncio.sleep(0)
    for response in transport.written:
        assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:80]
    if transport.handed is not None:  # nothing lost: what the fast path did not answer goes to aiohttp
        handed = transport.handed  # behind the guard that keeps the application's deadlines
        app = handed._inner if isinstance(handed, GuardedProtocol) else handed
        assert isinstance(app, _Application), app
        assert sent.endswith(app.received), "bytes lost at the hand-over"
    protocol.connection_lost(None)


def _wire_seeds() -> list[bytes]:
    heads = _seeds()
    return [
        b"\x85" + heads[0] + b"\r\n\r\n" + heads[2] + b"\r\n\r\n" + heads[1] + b"\r\n\r\n",
        b"\x10" + b"\r\n\r\n".join(heads) + b"\r\n\r\n",
        b"\x85" + heads[3] + b"\r\n\r\n" + b"GET /api/streams HTTP/1.1\r\n\r\n",
    ]


@target("edge-wire", allowed=(), seeds=_wire_seeds, setup=_setup, dictionary=WORDS, max_len=8192)
def edge_wire(data: bytes) -> None:
    """A client connection's bytes, in pieces, through ``edge.wire.EdgeHTTPProtocol``: pipelined and
    partial requests, keep-alive and close, loads of objects not cached yet, and the hand-over to
    the application (which must get every byte the fast path did not answer). Nothing may raise; the
    fast path writes only whole 200 responses."""
    assert _loop is not None, "setup() first"
    _loop.run_until_complete(_connection(data))
