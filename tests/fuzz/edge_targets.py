"""Fuzz target of the edge: the HTTP fast path's request parser and everything a request head decides."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.cache import CachedObject
from edge.fastpath import FastPath
from edge.policy import TokenCheck
from edge.state import EDGE
from tests import defaults
from tests.fuzz.harness import target

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
    global _fast
    root = Path(tempfile.mkdtemp(prefix="camflow-fuzz-edge-"))
    _fast = asyncio.run(_build(root))


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


@target(
    "edge-fastpath",
    allowed=(),
    seeds=_seeds,
    setup=_setup,
    dictionary=(
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
    ),
)
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
