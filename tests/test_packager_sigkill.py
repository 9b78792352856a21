"""SIGKILL the packager mid-stream on real Kafka + MinIO, restart it: the live playlist goes on
with contiguous media sequence numbers and no repeated or missing segment.

Every service is its own process (`camflow ingest`, `transcode`, `package`, `edge`), as in a
deployment, with the same --kafka/--kafka-prefix/--s3 and CAMFLOW_SECRET.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import m3u8
import pytest

from camflow.hls.rules import check_media, check_update
from camflow.tokens import Action, TokenSigner
from tests import services
from tests.process import camflow_service, ffmpeg_push, free_port, make_clip

pytestmark = pytest.mark.integration
STREAM = "cam3"


def service(
    tmp: Path, name: str, args: list[str], env: dict[str, str], tag: str = ""
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`camflow NAME ARGS`, its output in NAME+TAG.out/.err (``camflow_service``)."""
    return camflow_service(tmp, f"{name}{tag}", [name, *args], env)


@dataclass(frozen=True)
class Deployment:
    """What every `camflow SERVICE` of one test run shares: the environment (the token secret),
    the common flags (one Kafka prefix, one S3 prefix), and the packager's flags."""

    env: dict[str, str]
    signer: TokenSigner
    common: list[str]
    store: list[str]
    package: list[str]


def deployment(tmp_path: Path, tag: str) -> Deployment:
    kafka, s3 = services.require("kafka"), services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    secret = secrets.token_hex(32)
    common = ["--host", "127.0.0.1", "--kafka", kafka, "--kafka-prefix", f"{tag}{run_id}."]
    common += ["--data-dir", str(tmp_path / "d")]
    store = ["--s3", f"{s3.rstrip('/')}/{run_id}"]
    package = [*common, *store, "--live-window", "600", "--offline-grace", "3", "--drain-seconds", "0"]
    env = {**os.environ, "CAMFLOW_SECRET": secret}
    return Deployment(env, TokenSigner(secret.encode()), common, store, package)


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())
    except (urllib.error.HTTPError, urllib.error.URLError):
        return None


def test_packager_sigkill_and_restart_loses_and_repeats_nothing(tmp_path: Path) -> None:
    d = deployment(tmp_path, "k")
    env, common, store, package = d.env, d.common, d.store, d.package
    rtsp_port, http_port = free_port(), free_port()
    clip = make_clip(tmp_path / "clip30.mp4", 30, size="640x360")
    signer = d.signer
    view = signer.issue(STREAM, Action.VIEW, 600)
    url = f"http://127.0.0.1:{http_port}/live/{STREAM}/source.m3u8?token={view}"
    renders: list[str] = []

    def poll_until(check: object, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = fetch(url)
            if text is not None and (not renders or renders[-1] != text):
                renders.append(text)
            if text is not None and check(text):  # type: ignore[operator]
                return text
            time.sleep(0.25)
        raise AssertionError(f"live playlist never got there; last:\n{renders[-1] if renders else None}")

    with ExitStack() as stack:
        stack.enter_context(
            service(tmp_path, "transcode", [*common, *store, "--ladder", "source", "--processes", "1"], env)
        )
        packager = stack.enter_context(service(tmp_path, "package", package, env))
        stack.enter_context(service(tmp_path, "edge", [*common, *store, "--http-port", str(http_port)], env))
        stack.enter_context(service(tmp_path, "ingest", [*common, "--rtsp-port", str(rtsp_port)], env))
        publish = signer.issue(STREAM, Action.PUBLISH, 600)
        result: dict[str, subprocess.CompletedProcess[str]] = {}
        pusher = threading.Thread(
            target=lambda: result.update(
                p=ffmpeg_push(clip, f"rtsp://127.0.0.1:{rtsp_port}/{STREAM}?token={publish}")
            )
        )
        pusher.start()
        try:
            poll_until(lambda t: t.count("#EXTINF") >= 4, 60)
            packager.kill()  # SIGKILL, by PID: no shutdown, no flush, no commit
            packager.wait(10)
            time.sleep(3)  # segments keep arriving on the bus meanwhile
            stack.enter_context(service(tmp_path, "package", package, env, tag="-2"))
            final = poll_until(lambda t: "#EXT-X-ENDLIST" in t, 120)
        finally:
            pusher.join(90)
        assert result["p"].returncode == 0, result["p"].stderr

    assert (
        "stream restored" in (tmp_path / "package-2.err").read_text()
        or "stream restored" in (tmp_path / "package-2.out").read_text()
    )
    parsed = m3u8.loads(final)
    assert check_media(final) == []
    for before, after in itertools.pairwise(renders):
        assert check_update(before, after) == [], (before, after)
    uris = [s.uri.split("?")[0] for s in parsed.segments]
    assert len(uris) == len(set(uris)), "a segment is repeated"
    assert parsed.media_sequence == 0
    assert not any(s.gap_tag for s in parsed.segments), "a segment went missing"
    epoch = uris[0].split("/")[0]
    assert uris == [f"{epoch}/source/{n:08d}.m4s" for n in range(len(uris))]
    assert len(uris) >= 13  # 30 s of 2 s segments, the last may be short
