"""Headless Chromium plays the watch page (hls.js) over HTTPS with an identity provider's JWT as its
view token: `camflow run` with TLS (a CA made at test time) and a JWKS server (``tests.jwks``),
ffmpeg pushing ``rtsps://`` in a loop. Chromium trusts the server certificate by its SPKI hash; the
JWT rides in ``?token=`` of the page and hls.js carries it into every playlist and segment request.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import advanced, chromium, devtools, sample
from tests.jwks import AUDIENCE, ISSUER, Issuer, jwks_server
from tests.process import camflow_run, free_port, make_clip, stop_process
from tests.tls_certs import Issued, TestCa

pytestmark = pytest.mark.integration

STREAM = "jcam"
PROBE = """(() => { try { return JSON.stringify({
  t: document.getElementById('video').currentTime, protocol: location.protocol,
  errors: window.camflow ? window.camflow.errors : null,
  fetched: performance.getEntriesByType('resource').map(e => e.name)
    .filter(n => n.includes('.m3u8') || n.includes('.m4s') || n.includes('.mp4')),
}); } catch (e) { return null; } })()"""


def wait_for_master(url: str, ca: Path, timeout: float = 60.0) -> str:
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["curl", "-sS", "--fail", "--max-time", "10", "--cacert", str(ca), url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        text = out.stdout
        if out.returncode == 0 and "#EXT-X-STREAM-INF" in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"no master playlist over HTTPS within {timeout} s: {text[:300]}")


async def play(page: str, served: Issued, tmp: Path, seconds: float = 3.0) -> list[dict[str, Any]]:
    """Chromium on ``page`` trusting ``served`` by its SPKI hash; samples once a second until the
    video played ``seconds`` (at most 30 samples)."""
    spki = [f"--ignore-certificate-errors-spki-list={served.spki}"]
    with chromium(tmp / "chromium", page, tmp / "chromium.log", spki) as port:
        async with devtools(port) as tools:
            return await sample(tools, PROBE, 30, lambda s: advanced(s) >= seconds)


async def test_chromium_plays_over_https_with_a_jwt(tmp_path: Path) -> None:
    ca = TestCa(tmp_path / "pki")
    served = ca.issue("server")
    issuer = Issuer()
    clip = make_clip(tmp_path / "clip4.mp4", 4, size="320x240", rate=25, gop=25)
    rtsps_port = free_port()
    with jwks_server(issuer) as url:
        extra = [
            *("--ladder", "source", "--segment-duration", "1", "--processes", "1", "--rtsp-udp-ports", "off"),
            *("--rtsps-port", str(rtsps_port), "--tls-cert", str(served.cert), "--tls-key", str(served.key)),
            *("--jwks-url", url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE),
        ]
        with camflow_run(tmp_path, extra) as cf:
            publish = cf.token("publish", STREAM)
            push = subprocess.Popen(
                ["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
                 "-f", "rtsp", "-rtsp_transport", "tcp",
                 f"rtsps://127.0.0.1:{rtsps_port}/{STREAM}?token={publish}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                jwt = issuer.token(f"camflow:view:{STREAM}", kid="ed1")
                https = f"https://127.0.0.1:{cf.http_port}"
                wait_for_master(f"{https}/live/{STREAM}/master.m3u8?token={jwt}", ca.path)
                samples = await play(f"{https}/watch/{STREAM}?token={jwt}&transport=hls", served, tmp_path)
            finally:
                stop_process(push, timeout=10)
            log = cf.log
    played = [s for s in samples if s["t"] > 0]
    assert played and played[-1]["t"] - played[0]["t"] >= 3.0, samples
    last = played[-1]
    assert last["protocol"] == "https:" and not [e for e in last["errors"] or [] if e["fatal"]], last
    segments = [name for name in last["fetched"] if ".m4s" in name]
    assert segments and all(f"token={jwt}" in name for name in last["fetched"]), last["fetched"]
    assert '"token_refused"' not in log and jwt not in log and jwt.split(".")[2] not in log
