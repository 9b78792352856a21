"""The edge over HTTPS, in process: both listeners (fast path and the aiohttp application alone)
answer over TLS, and close a client that never finishes its TLS handshake at the deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

import camflow.guard
import camflow.tls
from camflow.store import FileStore
from camflow.tls import ServerTls, TlsFiles
from camflow.tokens import TokenSigner
from edge.service import EdgeServer
from tests import defaults
from tests.tls_certs import TestCa


@pytest.mark.parametrize("fast_path", [True, False])
async def test_https_edge_answers_and_drops_silent_clients(
    tmp_path: Path, fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(camflow.guard, "HANDSHAKE_TIMEOUT", 0.5)  # both sites, fast path or not
    ca = TestCa(tmp_path / "pki")
    issued = ca.issue()
    tls = ServerTls(TlsFiles(issued.cert, issued.key))
    store = FileStore(tmp_path / "store")
    await store.start()
    edge = EdgeServer(
        store, TokenSigner(b"s" * 32), port=0, tls_context=tls.context, **defaults.edge(fast_path=fast_path)
    )
    port = await edge.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=ca.client_context()) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the HTTPS port
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    await resp.read()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # closed at the handshake deadline
        writer.close()
    finally:
        await edge.stop()
        await store.close()
