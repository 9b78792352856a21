"""camflow.tls: loading, reloading (files changed, SIGHUP, broken files kept out), handshake deadline,
client contexts; against real TLS connections on 127.0.0.1 (Python's ssl as the client)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
from pathlib import Path

import pytest

from camflow.errors import ConfigError
from camflow.metrics import render
from camflow.tls import ServerTls, TlsFiles, client_context
from tests.tls_certs import Issued, TestCa


def metric(name: str, **labels: str) -> float:
    text = render()[0].decode()
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + wanted + " "):
            return float(line.split()[-1])
    return 0.0


def install(issued: Issued, files: TlsFiles) -> None:
    """Replace the served files as a renewal tool does: write beside, then rename over."""
    for src, dst in ((issued.cert, files.cert), (issued.key, files.key)):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


async def served(port: int, ca: TestCa) -> tuple[str, asyncio.StreamWriter]:
    import hashlib

    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ca.client_context(), server_hostname="127.0.0.1"
    )
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest(), writer


async def echo_server(tls: ServerTls) -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.context, ssl_handshake_timeout=1.0)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCa, TlsFiles, Issued]:
    ca = TestCa(tmp_path / "pki")
    first = ca.issue("first")
    files = TlsFiles(tmp_path / "tls.pem", tmp_path / "tls.key")
    install(first, files)
    return ca, files, first


def test_flags_both_or_neither(tmp_path: Path) -> None:
    assert TlsFiles.from_flags(None, None) is None
    assert TlsFiles.from_flags("a.pem", "a.key") == TlsFiles(Path("a.pem"), Path("a.key"))
    with pytest.raises(ConfigError, match="--tls-cert without --tls-key"):
        TlsFiles.from_flags("a.pem", None)
    with pytest.raises(ConfigError, match="--tls-key without --tls-cert"):
        TlsFiles.from_flags("", "a.key")


Pki = tuple[TestCa, TlsFiles, Issued]


def test_bad_files_are_config_errors_naming_them(tmp_path: Path, pki: Pki) -> None:
    ca, files, _ = pki
    other = ca.issue("other")
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        ServerTls(TlsFiles(tmp_path / "missing.pem", files.key))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        ServerTls(TlsFiles(tmp_path / "junk.pem", files.key))
    with pytest.raises(ConfigError, match="private key"):
        ServerTls(TlsFiles(files.cert, other.key))  # the key of another certificate


async def test_reload_new_connections_see_new_cert_old_ones_stay(pki: Pki) -> None:
    ca, files, first = pki
    tls = ServerTls(files, poll_interval=0.1)
    assert tls.context.minimum_version == tls.current.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert metric("camflow_tls_certificate_expiry_timestamp_seconds") == pytest.approx(
        tls.current.not_after.timestamp()
    )
    server = await echo_server(tls)
    port = server.sockets[0].getsockname()[1]
    await tls.start()
    try:
        seen, old = await served(port, ca)
        assert seen == first.sha256
        ok_before = metric("camflow_tls_reloads_total", result="ok")

        second = ca.issue("second", days=3)
        install(second, files)
        for _ in range(50):  # polled every 0.1 s here
            if tls.current.sha256 == second.sha256:
                break
            await asyncio.sleep(0.1)
        seen, new = await served(port, ca)
        assert seen == second.sha256
        assert metric("camflow_tls_reloads_total", result="ok") == ok_before + 1
        assert metric("camflow_tls_certificate_expiry_timestamp_seconds") == pytest.approx(
            tls.current.not_after.timestamp()
        )
        # The connection made before the renewal still works, with its certificate.
        reader = old.transport.get_protocol()._stream_reader  # type: ignore[attr-defined]
        old.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        for writer in (old, new):
            writer.close()
    finally:
        await tls.stop()
        server.close()
        await server.wait_closed()


async def test_broken_files_keep_the_old_certificate(pki: tuple[TestCa, TlsFiles, Issued]) -> None:
    ca, files, first = pki
    tls = ServerTls(files, poll_interval=3600)
    failed_before = metric("camflow_tls_reloads_total", result="failed")
    files.cert.write_bytes(first.cert.read_bytes()[:100])  # half written
    assert tls.changed()
    assert not tls.reload("test")
    assert tls.current.sha256 == first.sha256
    third = ca.issue("third")
    shutil.copyfile(third.cert, files.cert)  # the certificate renewed, its key not yet
    assert not tls.reload("test")
    assert metric("camflow_tls_reloads_total", result="failed") == failed_before + 2
    server = await echo_server(tls)
    try:
        seen, writer = await served(server.sockets[0].getsockname()[1], ca)
        assert seen == first.sha256
        writer.close()
        shutil.copyfile(third.key, files.key)  # the key follows: the pair loads
        assert tls.changed() and tls.reload("test")
        seen, writer = await served(server.sockets[0].getsockname()[1], ca)
        assert seen == third.sha256
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_sighup_reloads(pki: tuple[TestCa, TlsFiles, Issued]) -> None:
    ca, files, _ = pki
    tls = ServerTls(files, poll_interval=3600)  # no poll: only the signal
    await tls.start()
    try:
        fourth = ca.issue("fourth")
        install(fourth, files)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(50):
            if tls.current.sha256 == fourth.sha256:
                break
            await asyncio.sleep(0.05)
        assert tls.current.sha256 == fourth.sha256
    finally:
        await tls.stop()


async def test_failed_handshakes_are_counted_by_reason(pki: Pki) -> None:
    _, files, _ = pki
    tls = ServerTls(files)
    server = await echo_server(tls)
    before = metric("camflow_tls_handshake_failures_total", reason="HTTP_REQUEST")
    try:
        for _ in range(3):  # plain HTTP on the TLS port
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(100), 5) == b""
            writer.close()
        assert metric("camflow_tls_handshake_failures_total", reason="HTTP_REQUEST") == before + 3
    finally:
        server.close()
        await server.wait_closed()


async def test_handshake_deadline_closes_a_silent_client(pki: tuple[TestCa, TlsFiles, Issued]) -> None:
    _, files, _ = pki
    tls = ServerTls(files)
    server = await echo_server(tls)  # 1 s deadline
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # closed by the server, no handshake
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_client_context(pki: tuple[TestCa, TlsFiles, Issued], tmp_path: Path) -> None:
    ca, _, _ = pki
    strict = client_context(ca.path, insecure=False)
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    loose = client_context(None, insecure=True)
    assert loose.verify_mode == ssl.CERT_NONE
    (tmp_path / "bad-ca.pem").write_text("nope")
    with pytest.raises(ConfigError, match=r"bad-ca\.pem"):
        client_context(tmp_path / "bad-ca.pem", insecure=False)
