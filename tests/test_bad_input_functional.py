"""Bad input against a running `camflow run`: clear refusals, nothing published, everyone else served."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.sources.rtsp.message import Response, ResponseReader
from tests.process import Camflow, camflow_run, ffmpeg_push, make_clip
from tests.vectors.rtsp_publish import FFMPEG_5_1_SDP

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def camflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Camflow]:
    with camflow_run(tmp_path_factory.mktemp("camflow")) as cf:
        yield cf


def rtsp_exchange(port: int, requests: list[bytes], timeout: float = 10.0) -> list[Response]:
    """Send each request on one connection and read its response (stops at a closed connection)."""
    responses: list[Response] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = ResponseReader()
        for request in requests:
            sock.sendall(request)
            while True:
                item = reader.next_item()
                if isinstance(item, Response):
                    responses.append(item)
                    break
                data = sock.recv(65536)
                if not data:
                    return responses
                reader.feed(data)
    return responses


def announce(port: int, path: str, cseq: int = 2) -> bytes:
    body = FFMPEG_5_1_SDP
    return (
        f"ANNOUNCE rtsp://127.0.0.1:{port}/{path} RTSP/1.0\r\nCSeq: {cseq}\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def options(port: int, cseq: int = 1) -> bytes:
    return f"OPTIONS rtsp://127.0.0.1:{port}/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n".encode()


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def stream_objects(cf: Camflow, stream: str) -> list[Path]:
    root = cf.data_dir / "store" / "streams" / stream
    return sorted(root.rglob("*")) if root.exists() else []


def test_options_answers_public_methods(camflow: Camflow) -> None:
    [resp] = rtsp_exchange(camflow.rtsp_port, [options(camflow.rtsp_port)])
    assert resp.status == 200 and resp.header("CSeq") == "1"
    assert "ANNOUNCE" in (resp.header("Public") or "") and "RECORD" in (resp.header("Public") or "")


def test_unknown_path_gets_404(camflow: Camflow) -> None:
    token = camflow.token("publish", "cam1")
    [resp] = rtsp_exchange(camflow.rtsp_port, [announce(camflow.rtsp_port, f"site/cam1/extra?token={token}")])
    assert resp.status == 404 and resp.header("CSeq") == "2"
    describe = f"DESCRIBE rtsp://127.0.0.1:{camflow.rtsp_port}/cam1 RTSP/1.0\r\nCSeq: 3\r\n\r\n".encode()
    [resp] = rtsp_exchange(camflow.rtsp_port, [describe])
    assert resp.status == 404


@pytest.mark.parametrize("case", ["none", "forged", "expired", "other-stream", "view-action"])
def test_publish_without_valid_token_gets_401_and_publishes_nothing(camflow: Camflow, case: str) -> None:
    stream = f"denied{case.replace('-', '')}"
    token = {
        "none": None,
        "forged": "v1.e30.AAAA",
        "expired": camflow.token("publish", stream, ttl=1),
        "other-stream": camflow.token("publish", "someoneelse"),
        "view-action": camflow.token("view", stream),
    }[case]
    if case == "expired":
        time.sleep(2.1)
    path = stream if token is None else f"{stream}?token={token}"
    [resp] = rtsp_exchange(camflow.rtsp_port, [announce(camflow.rtsp_port, path)])
    assert resp.status == 401
    schemes = [value.split()[0] for value in resp.header_values("WWW-Authenticate")]
    assert schemes == ["Digest", "Basic"]
    clip = make_clip(camflow.data_dir.parent / "short.mp4", 3, size="320x240")
    pushed = ffmpeg_push(clip, camflow.rtsp_url(stream, token), timeout=30)
    assert pushed.returncode != 0
    assert "401" in pushed.stderr or "Unauthorized" in pushed.stderr, pushed.stderr
    assert stream_objects(camflow, stream) == []


def test_malformed_request_gets_400_and_other_cameras_keep_publishing(camflow: Camflow) -> None:
    clip = make_clip(camflow.data_dir.parent / "six.mp4", 6, size="320x240", gop=30)
    token = camflow.token("publish", "steady")
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    url = camflow.rtsp_url("steady", token)
    pusher = threading.Thread(target=lambda: result.update(p=ffmpeg_push(clip, url)))
    pusher.start()
    try:
        time.sleep(2.0)
        for garbage in (b"HELLO\r\n\r\n", b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq 1\r\n\r\n", b"\x00" * 20000):
            responses = rtsp_exchange(camflow.rtsp_port, [garbage])
            assert [r.status for r in responses] == [400], garbage[:20]
        [ok] = rtsp_exchange(camflow.rtsp_port, [options(camflow.rtsp_port)])
        assert ok.status == 200
    finally:
        pusher.join(60)
    assert result["p"].returncode == 0, result["p"].stderr
    view = camflow.token("view", "steady")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = http_status(camflow.http_url(f"/live/steady/source.m3u8?token={view}"))
        if status == 200 and "#EXT-X-ENDLIST" in body:
            break
        time.sleep(0.5)
    assert status == 200 and body.count("#EXTINF") >= 2, body


def test_edge_refuses_bad_tokens_and_unknown_streams(camflow: Camflow) -> None:
    url = camflow.http_url("/live/cam1/master.m3u8")
    assert http_status(url)[0] == 401
    for token in (
        "garbage",
        camflow.token("view", "cam2"),
        camflow.token("publish", "cam1"),
    ):
        status, body = http_status(f"{url}?token={token}")
        assert status == 403 and '"error"' in body
    expired = camflow.token("view", "cam1", ttl=1)
    time.sleep(2.1)
    assert http_status(f"{url}?token={expired}")[0] == 403
    nobody = camflow.token("view", "nobody")
    status, body = http_status(camflow.http_url(f"/live/nobody/master.m3u8?token={nobody}"))
    assert status == 404 and '"error"' in body
