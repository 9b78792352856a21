"""TLS on every camflow listener, with the clients people use, against a CA made at test time.

One `camflow run --tls-cert --tls-key` (module fixture) takes:

- ffmpeg pushing ``rtsps://`` (H.264 + AAC, RTP interleaved in the TLS connection); curl
  (``--cacert``) fetches the playlists and a segment over HTTPS with a view token, ffprobe plays
  the HLS over HTTPS (``-tls_verify 1 -ca_file``), headless Chromium plays it with hls.js trusting
  the server certificate by its SPKI hash (``--ignore-certificate-errors-spki-list``);
- GStreamer's ``rtspclientsink`` publishing to ``rtsps://`` with the CA as its TLS database (the
  certificate is verified), and refused with 461 when it asks for RTP over UDP;
- FFmpeg's WHIP muxer publishing to ``https://.../whip/STREAM``;
- a certificate renewed while it runs: new connections get the new one, open ones keep theirs;
  SIGHUP reloads; broken files keep the old certificate.

A second run pulls ``rtsps://`` from gst-rtsp-server serving TLS (its certificate checked against
``--pull-ca``), and fails, clearly, on a server whose certificate another CA signed.

ffmpeg's RTSP client (push, and PyAV's pull) never verifies a certificate: FFmpeg opens the RTSPS
TLS connection with no options (``-tls_verify`` is not accepted there); camflow's pull makes the
TLS connection itself (ingest/sources/pull/tls.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import advanced, chromium, devtools, sample
from tests.process import Camflow, camflow_run, free_port, stop_process
from tests.test_pull_functional import SYSTEM_PYTHON, events, gst_server, wait_until
from tests.test_whip_functional import whip_publish
from tests.tls_certs import Issued, TestCa, served_certificate

pytestmark = pytest.mark.integration
SEGMENT = "????????.m4s"  # a segment's object name (low-latency parts are NNNNNNNN.PPP.m4s)

GST_PUSH = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gio, Gst

Gst.init(None)
url, ca, protocols, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
pipeline = Gst.parse_launch(
    "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=300 ! h264parse ! "
    f"rtspclientsink name=sink protocols={protocols} location={url}"
)
sink = pipeline.get_by_name("sink")
sink.set_property("tls-database", Gio.TlsFileDatabase.new(ca))  # verify against the test CA only
pipeline.set_state(Gst.State.PLAYING)
bus = pipeline.get_bus()
msg = bus.timed_pop_filtered(int(seconds * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.EOS)
if msg is not None and msg.type == Gst.MessageType.ERROR:
    print("error:", msg.parse_error()[0].message, flush=True)
    pipeline.set_state(Gst.State.NULL)
    sys.exit(1)
pipeline.send_event(Gst.Event.new_eos())
bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
pipeline.set_state(Gst.State.NULL)
print("published", flush=True)
"""

GST_RTSPS_SERVER = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer


Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
auth = GstRtspServer.RTSPAuth()
auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(sys.argv[2], sys.argv[3]))
token = GstRtspServer.RTSPToken()
token.set_string("media.factory.role", "anonymous")
auth.set_default_token(token)
server.set_auth(auth)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    "( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=300 ! "
    "rtph264pay name=pay0 pt=96 )"
)
factory.set_shared(True)
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
factory.add_role_from_structure(
    Gst.Structure.new_from_string(
        "anonymous, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    )
)
server.get_mount_points().add_factory("/test", factory)
if server.attach(None) == 0:
    sys.exit("could not listen")
print("ready", flush=True)
GLib.MainLoop().run()
"""


@dataclass
class TlsRun:
    cf: Camflow
    ca: TestCa
    served: Issued
    cert: Path  # the files camflow reads (replaced by the reload test)
    key: Path
    rtsps_port: int
    tmp: Path

    def https(self, path: str) -> str:
        return f"https://127.0.0.1:{self.cf.http_port}{path}"

    def metrics(self) -> str:
        """/metrics on the public port, with the operator token it needs there."""
        return self.https(f"/metrics?token={self.cf.token('admin', '*')}")

    def rtsps(self, stream: str, token: str) -> str:
        return f"rtsps://127.0.0.1:{self.rtsps_port}/{stream}?token={token}"


def install(issued: Issued, cert: Path, key: Path) -> None:
    """Replace the served files as a renewal tool does: write beside, rename over."""
    for src, dst in ((issued.cert, cert), (issued.key, key)):
        shutil.copyfile(src, dst.with_suffix(".new"))
        os.replace(dst.with_suffix(".new"), dst)


@pytest.fixture(scope="module")
def tls_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRun]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = TestCa(tmp / "pki")
    served = ca.issue("first")
    cert, key = tmp / "tls.pem", tmp / "tls.key"
    install(served, cert, key)
    rtsps_port = free_port()
    extra = ["--ladder", "source", "--segment-duration", "1", "--webrtc-ports", "42300-42399"]
    extra += ["--rtsps-port", str(rtsps_port), "--offline-grace", "1", "--rtsp-handshake-timeout", "3"]
    env = {"CAMFLOW_TLS_CERT": str(cert), "CAMFLOW_TLS_KEY": str(key)}  # from the environment, as in k8s
    with camflow_run(tmp, extra, env) as cf:
        yield TlsRun(cf, ca, served, cert, key, rtsps_port, tmp)


def curl(url: str, ca: Path | None, *extra: str) -> subprocess.CompletedProcess[bytes]:
    cacert = ["--cacert", str(ca)] if ca is not None else []
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *cacert, *extra, url], capture_output=True, timeout=30
    )


def wait_for_playlist(run: TlsRun, url: str, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = curl(url, run.ca.path, "--fail")
        if out.returncode == 0 and needle in out.stdout.decode():
            return out.stdout.decode()
        time.sleep(0.5)
    raise AssertionError(f"{url}: no {needle!r} within {timeout} s")


def test_ffmpeg_pushes_rtsps_and_viewers_watch_over_https(tls_run: TlsRun) -> None:
    run, cf = tls_run, tls_run.cf
    publish, view = cf.token("publish", "cam1"), cf.token("view", "cam1")
    push = subprocess.Popen(
        [
            "ffmpeg", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", "16", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-f", "rtsp", "-rtsp_transport", "tcp", run.rtsps(cam := "cam1", publish),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        master = run.https(f"/live/{cam}/master.m3u8?token={view}")
        text = wait_for_playlist(run, master, "#EXT-X-STREAM-INF")
        assert 'CODECS="avc1.' in text and "mp4a.40.2" in text, text
        live = curl(run.metrics(), run.ca.path, "--fail").stdout.decode()
        assert 'camflow_ingest_sessions{protocol="rtsps"} 1.0' in live, live[-1500:]
        # The media playlist and a segment, over HTTPS with the view token; without the CA curl refuses.
        media = wait_for_playlist(run, run.https(f"/live/{cam}/source.m3u8?token={view}"), ".m4s")
        segment = next(line for line in media.splitlines() if ".m4s" in line and not line.startswith("#"))
        got = curl(run.https(f"/live/{cam}/{segment}"), run.ca.path, "--fail", "-o", "-")
        assert got.returncode == 0 and len(got.stdout) > 1000, got.stderr
        refused = curl(master, None)
        assert refused.returncode == 60, refused  # "peer certificate cannot be authenticated"
        assert curl(
            run.https(f"/live/{cam}/master.m3u8"), run.ca.path, "-o", "/dev/null", "-w", "%{http_code}"
        )
        assert b"401" in curl(run.https(f"/live/{cam}/master.m3u8"), run.ca.path, "-w", "%{http_code}").stdout
        # ffprobe plays the HLS over HTTPS, checking the certificate against the CA.
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-tls_verify", "1", "-ca_file", str(run.ca.path),
             "-show_entries", "stream=codec_name", "-of", "json", master],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        codecs = sorted(s["codec_name"] for s in json.loads(probe.stdout)["streams"])
        assert codecs == ["aac", "h264"], probe.stdout
        # Chromium (hls.js on the watch page) plays it over HTTPS, trusting the certificate's key.
        samples = asyncio.run(chromium_watch(run, run.https(f"/watch/{cam}?token={view}&transport=hls")))
        played = [s for s in samples if s["t"] > 0]
        assert played and played[-1]["t"] - played[0]["t"] >= 3.0, samples
        assert not [e for e in played[-1]["cf"]["errors"] if e["fatal"]], played[
            -1
        ]  # a seek over a start hole is not
        assert played[-1]["protocol"] == "https:", played[-1]
    finally:
        stop_process(push, timeout=10)
    assert events(cf, "rtsp_session_ended")[0]["transport"] == "tcp"
    # The expiry of the served certificate, for an alert; the RTSPS connection counted.
    metrics = curl(run.metrics(), run.ca.path, "--fail").stdout.decode()
    expiry = re.search(r"^camflow_tls_certificate_expiry_timestamp_seconds (\S+)$", metrics, re.M)
    assert expiry and float(expiry.group(1)) > time.time() + 3600, metrics[-500:]


WATCH_PROBE = """(() => { try { return JSON.stringify({
  t: document.getElementById('video').currentTime, protocol: location.protocol,
  cf: window.camflow ? {errors: window.camflow.errors} : null,
}); } catch (e) { return null; } })()"""


async def chromium_watch(run: TlsRun, page: str) -> list[dict[str, Any]]:
    """Headless Chromium on ``page``, trusting the served certificate by its SPKI hash; samples of
    the video's time once a second until it played 4 s (at most 25 s)."""
    spki = [f"--ignore-certificate-errors-spki-list={run.served.spki}"]
    with chromium(run.tmp / "chromium", page, run.tmp / "chromium.log", spki) as port:
        async with devtools(port) as tools:
            return await sample(tools, WATCH_PROBE, 25, lambda s: advanced(s) >= 4.0)


def gst_push(run: TlsRun, url: str, protocols: str, seconds: float) -> subprocess.CompletedProcess[str]:
    script = run.tmp / "gst_push.py"
    script.write_text(GST_PUSH)
    return subprocess.run(
        [SYSTEM_PYTHON, str(script), url, str(run.ca.path), protocols, str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 40,
    )


def test_gstreamer_publishes_rtsps_and_udp_is_refused(tls_run: TlsRun) -> None:
    run, cf = tls_run, tls_run.cf
    publish = cf.token("publish", "gcam")
    done = gst_push(run, run.rtsps("gcam", publish), "tcp", 4)
    assert done.returncode == 0 and "published" in done.stdout, done.stdout + done.stderr
    segments = cf.data_dir / "store" / "streams" / "gcam"
    wait_until("gcam segments", lambda: len(list(segments.glob(f"*/source/{SEGMENT}"))) >= 2, 30)
    # RTP over UDP would leave the TLS connection: the SETUP is refused with 461, and nothing publishes.
    refused = gst_push(run, run.rtsps("gcam2", cf.token("publish", "gcam2")), "udp", 3)
    assert refused.returncode != 0, refused.stdout
    setups = [e for e in events(cf, "rtsp_refused") if e.get("method") == "SETUP"]
    assert setups and setups[-1]["status"] == 461 and "TLS" in str(setups[-1]["reason"]), setups
    assert not (cf.data_dir / "store" / "streams" / "gcam2").exists()


def test_rtsps_closes_a_client_that_never_starts_its_handshake(tls_run: TlsRun) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", tls_run.rtsps_port), timeout=10) as sock:
        start = time.monotonic()
        assert sock.recv(10) == b""  # closed by the server: --rtsp-handshake-timeout 3
        assert 2.0 < time.monotonic() - start < 8.0


def test_ffmpeg_whip_muxer_publishes_over_https(tls_run: TlsRun) -> None:
    """FFmpeg's WHIP muxer cannot verify the certificate (its HTTP request takes no TLS options:
    "Some options were not used: tls_verify, ca_file"); it publishes over HTTPS, and plain HTTP to
    the same port fails."""
    run, cf = tls_run, tls_run.cf
    publish = cf.token("publish", "wcam")
    plain = whip_publish(f"http://127.0.0.1:{cf.http_port}/whip/wcam", publish, 1)
    assert plain.returncode != 0, "plain HTTP answered on the HTTPS port"
    metrics = curl(run.metrics(), run.ca.path, "--fail").stdout.decode()
    failures = r'^camflow_tls_handshake_failures_total\{reason="HTTP_REQUEST"\} (\S+)$'
    failed = re.search(failures, metrics, re.M)
    assert failed and float(failed.group(1)) >= 1, metrics[-1500:]  # counted, and logged once
    assert events(cf, "tls_handshakes_failed"), cf.log[-2000:]
    done = whip_publish(run.https("/whip/wcam"), publish, 4)
    assert done.returncode == 0, done.stderr[-3000:]
    segments = cf.data_dir / "store" / "streams" / "wcam"
    wait_until("wcam segments", lambda: len(list(segments.glob(f"*/source/{SEGMENT}"))) >= 2, 30)


def fingerprint(conn: http.client.HTTPSConnection) -> str:
    assert conn.sock is not None
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def connect(run: TlsRun) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", run.cf.http_port, context=run.ca.client_context(), timeout=10
    )
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    return conn


def new_fingerprint(run: TlsRun) -> str:
    """The certificate a new HTTPS connection gets (it is closed again)."""
    conn = connect(run)
    try:
        return fingerprint(conn)
    finally:
        conn.close()


def test_certificate_reload_without_restart(tls_run: TlsRun) -> None:
    run, cf = tls_run, tls_run.cf
    old = connect(run)
    assert fingerprint(old) == run.served.sha256
    # Renewed: within the poll interval new connections (HTTPS and RTSPS) get the new certificate.
    second = run.ca.issue("second")
    install(second, run.cert, run.key)
    wait_until(
        "new HTTPS connections get the renewed certificate",
        lambda: new_fingerprint(run) == second.sha256,
        10,
    )
    assert served_certificate("127.0.0.1", run.rtsps_port, run.ca) == second.sha256
    # The connection opened before it still works, with the certificate it started with.
    old.request("GET", "/healthz")
    assert old.getresponse().status == 200 and fingerprint(old) == run.served.sha256
    old.close()
    # SIGHUP reloads at once.
    third = run.ca.issue("third")
    install(third, run.cert, run.key)
    cf.proc.send_signal(signal.SIGHUP)
    wait_until("reloaded on SIGHUP", lambda: new_fingerprint(run) == third.sha256, 5)
    triggers = [e["trigger"] for e in events(cf, "tls_certificate_loaded")]
    assert "sighup" in triggers, triggers
    # Broken files (a key that is not the certificate's) keep the last good certificate.
    fourth = run.ca.issue("fourth")
    shutil.copyfile(fourth.cert, run.cert)
    wait_until("tls_reload_failed logged", lambda: events(cf, "tls_reload_failed"), 10)
    assert new_fingerprint(run) == third.sha256
    metrics = curl(run.metrics(), run.ca.path, "--fail").stdout.decode()
    assert re.search(r'^camflow_tls_reloads_total\{result="failed"\} [1-9]', metrics, re.M), metrics[-800:]
    assert re.search(r'^camflow_tls_reloads_total\{result="ok"\} [2-9]', metrics, re.M)
    install(third, run.cert, run.key)  # left as it was for any later test


@contextmanager
def rtsps_server(tmp: Path, port: int, issued: Issued) -> Iterator[subprocess.Popen[bytes]]:
    """gst-rtsp-server serving TLS on 127.0.0.1:port/test (TCP only), stopped by PID after."""
    args = [str(port), str(issued.cert), str(issued.key)]
    script, log = tmp / "gst_rtsps_server.py", tmp / f"gst-rtsps-{port}.log"
    with gst_server("gst-rtsp-server (TLS)", script, GST_RTSPS_SERVER, args, log) as proc:
        yield proc


def test_pull_from_rtsps_verifies_the_certificate(tmp_path: Path) -> None:
    ours, theirs = TestCa(tmp_path / "ours"), TestCa(tmp_path / "theirs", name="another CA")
    good, bad = free_port(), free_port()
    extra = ["--ladder", "source", "--segment-duration", "1", "--pull-ca", str(ours.path)]
    extra += ["--pull", f"cam7=rtsps://127.0.0.1:{good}/test", "--pull", f"cam8=rtsps://127.0.0.1:{bad}/test"]
    with (
        rtsps_server(tmp_path, good, ours.issue("cam7")),
        rtsps_server(tmp_path, bad, theirs.issue("cam8")),
        camflow_run(tmp_path, extra) as cf,
    ):
        segments = cf.data_dir / "store" / "streams" / "cam7"
        wait_until("cam7 pulled over RTSPS", lambda: len(list(segments.glob(f"*/source/{SEGMENT}"))) >= 3, 60)
        wait_until(
            "cam8 refused", lambda: [e for e in events(cf, "pull_failed") if e.get("stream_id") == "cam8"], 30
        )
    failed = [e for e in events(cf, "pull_failed") if e.get("stream_id") == "cam8"]
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed[0]["error"]), failed[0]
    assert not (cf.data_dir / "store" / "streams" / "cam8").exists()
    assert [e["stream_id"] for e in events(cf, "pull_connected")] == ["cam7"]
