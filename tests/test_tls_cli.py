"""TLS from the command line: the flags (and their environment), the banner's https:// and
rtsps:// URLs, `camflow ingest`'s own WHIP listener over HTTPS, and a half-given pair refused at
start with exit status 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest

from camflow.bus import LocalBus
from camflow.cli.args import build_parser
from camflow.cli.banner import operator_view
from camflow.tls import ServerTls, TlsFiles
from camflow.tokens import TokenSigner
from ingest.sources.whip.http import WhipService, serve_whip
from ingest.sources.whip.ice import IcePolicy, install
from ingest.sources.whip.session import SessionLimits
from tests import defaults
from tests.process import CAMFLOW, free_port
from tests.tls_certs import TestCa


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["run"])
    assert (args.tls_cert, args.tls_key, args.rtsps_port) == (None, None, 8322)
    assert build_parser().parse_args(["run", "--rtsps-port", "off"]).rtsps_port is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--rtsps-port", "https"])
    monkeypatch.setenv("CAMFLOW_TLS_CERT", "/c.pem")
    monkeypatch.setenv("CAMFLOW_TLS_KEY", "/c.key")
    monkeypatch.setenv("CAMFLOW_PULL_CA", "/ca.pem")
    for command in ("run", "edge"):
        args = build_parser().parse_args([command, "--kafka", "k:9"])
        assert (args.tls_cert, args.tls_key) == ("/c.pem", "/c.key")
    assert build_parser().parse_args(["ingest", "--kafka", "k:9"]).pull_ca == "/ca.pem"


def test_banner_prints_https_and_rtsps_urls() -> None:
    signer = TokenSigner(b"b" * 32)
    plain = operator_view(build_parser().parse_args(["run"]), signer, camflow="camflow")
    assert "http://127.0.0.1:8080/live/cam1/" in plain and "rtsps://" not in plain
    assert "&transport=webrtc (WHEP: POST http://127.0.0.1:8080/whep/cam1)" in plain
    tls = build_parser().parse_args(["run", "--tls-cert", "c.pem", "--tls-key", "c.key"])
    text = operator_view(tls, signer, camflow="camflow")
    assert "https://127.0.0.1:8080/live/cam1/master.m3u8?token=" in text
    assert "rtsps://127.0.0.1:8322/cam1?token=" in text and "http://" not in text
    off = build_parser().parse_args(
        ["run", "--tls-cert", "c.pem", "--tls-key", "c.key", "--rtsps-port", "off"]
    )
    assert "rtsps://" not in operator_view(off, signer, camflow="camflow")
    only = build_parser().parse_args(["run", "--tls-cert", "c", "--tls-key", "k", "--rtsp-port", "off"])
    text = operator_view(only, signer, camflow="camflow")
    assert "push to:  rtsps://127.0.0.1:8322/cam1?token=" in text and "rtsp://" not in text


async def test_rtsps_only_server_answers_over_tls(tmp_path: Path) -> None:
    """--rtsp-port off with a certificate: the RTSP server listens for RTSPS only."""
    import asyncio

    from ingest.service import build_rtsp_server

    ca = TestCa(tmp_path / "pki")
    issued = ca.issue()
    tls = ServerTls(TlsFiles(issued.cert, issued.key))
    bus = LocalBus()
    await bus.start()
    server = build_rtsp_server(
        bus, TokenSigner(b"r" * 32), host="127.0.0.1", port=None, tls_port=0, tls_context=tls.context,
        **defaults.rtsp_server(),
    )  # fmt: skip
    port = await server.start()
    try:
        assert server.port is None and port == server.tls_port
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ca.client_context(), server_hostname="127.0.0.1"
        )
        writer.write(b"OPTIONS rtsps://127.0.0.1/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"RTSP/1.0 200")
        writer.close()
        assert server.stats.tls_connections == 1
    finally:
        await server.stop()
        await bus.close()


def test_a_certificate_without_its_key_stops_start_with_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CAMFLOW, "run", "--data-dir", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--tls-cert without --tls-key" in done.stderr


async def test_ingest_serves_whip_over_https(tmp_path: Path) -> None:
    ca = TestCa(tmp_path / "pki")
    issued = ca.issue()
    tls = ServerTls(TlsFiles(issued.cert, issued.key))
    policy = IcePolicy(("127.0.0.1",), (41100, 41199))
    install(policy)
    bus = LocalBus()
    await bus.start()
    limits = SessionLimits(segment_target=defaults.SEGMENT_TARGET, connect_timeout=2, media_timeout=2)
    service = WhipService(bus, TokenSigner(b"w" * 32), policy=policy, limits=limits)
    port = free_port()
    stop = await serve_whip(service, "127.0.0.1", port, defaults.limits(), tls.context)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"https://127.0.0.1:{port}/whip/cam1"
            async with http.post(url, data="v=0", ssl=ca.client_context()) as resp:
                assert resp.status == 401  # over HTTPS, the WHIP endpoint answers (no token)
            with pytest.raises(aiohttp.ClientError):
                async with http.post(f"http://127.0.0.1:{port}/whip/cam1", data="v=0") as resp:
                    await resp.read()
    finally:
        await stop()
        await service.stop()
        await bus.close()
