"""What tests/latency_probe.py measures: camflow embedded (`camflow run`), camflow as four services on
Kafka + MinIO, nginx (deploy/cdn/nginx.conf) in front of an edge, and mediamtx (a peer's LL-HLS), each
started on free 127.0.0.1 ports and stopped by PID. Used by tests/test_latency_chromium.py and
bench/bench_latency.py. This module holds no tests.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from edge.policy import TokenCheck
from tests import services
from tests.chaos.backends import Backends
from tests.chaos.deployment import Deployment
from tests.process import Camflow, camflow_run, free_port, stop_process
from tests.test_cdn_nginx import nginx, render_conf

REPO = Path(__file__).resolve().parents[1]
STREAM = "cam1"
PEERS_ENV = "CAMFLOW_PEERS"
# The bench's own Kafka + MinIO when no shared one is given (below the ephemeral port range).
OWN_KAFKA_PORT, OWN_CONTROLLER_PORT, OWN_MINIO_PORT = 39092, 39093, 39000


PREROLL_S = 12.0


def wait_playlist(url: str, timeout: float = 60.0, preroll: float = PREROLL_S) -> None:
    """Until ``url`` answers 200 with a playlist that lists media or variants (bounded), then ``preroll``
    seconds more: the viewer joins a stream that has been live for a while. (One who joins in the first
    seconds starts at the oldest segment, before the target latency, and stays there: a plain HLS
    stream would measure a few seconds closer than it plays for everyone else.)"""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                last = resp.read().decode(errors="replace")
                if resp.status == 200 and ("#EXTINF" in last or "#EXT-X-STREAM-INF" in last):
                    time.sleep(preroll)
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"no playlist at {url} within {timeout:.0f} s; last: {last[:300]}")


@contextmanager
def embedded(work: Path, ladder: str) -> Iterator[Camflow]:
    """`camflow run --ladder LADDER` (in-process bus, files)."""
    work.mkdir(parents=True, exist_ok=True)
    with camflow_run(work, ["--ladder", ladder]) as cf:
        yield cf


def camflow_watch(cf: Camflow, rendition: str = "source") -> str:
    return cf.http_url(
        f"/watch/{STREAM}?token={cf.token('view', STREAM)}&rendition={rendition}&transport=hls"
    )


def camflow_publish(cf: Camflow) -> str:
    return cf.rtsp_url(STREAM, cf.token("publish", STREAM))


def camflow_playlist(cf: Camflow, rendition: str = "source") -> str:
    return cf.http_url(f"/live/{STREAM}/{rendition}.m3u8?token={cf.token('view', STREAM)}")


def shared_backends(run_dir: Path) -> Backends | None:
    """The shared Kafka + MinIO named by CAMFLOW_TEST_KAFKA / CAMFLOW_TEST_S3 (on 127.0.0.1), or None."""
    kafka, s3 = services.kafka_bootstrap(), services.s3_url()
    if kafka is None or s3 is None:
        return None
    broker, store = urlsplit("//" + kafka.split(",")[0]), urlsplit(s3)
    if broker.hostname not in ("127.0.0.1", "localhost") or store.hostname not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"expected Kafka and MinIO on 127.0.0.1, got {kafka!r} and {s3!r}")
    return Backends(
        run_dir,
        kafka_port=broker.port or 9092,
        minio_port=store.port or 80,
        bucket=store.path.strip("/").split("/")[0],
        user=os.environ.get("AWS_ACCESS_KEY_ID", "camflow"),
        password=os.environ.get("AWS_SECRET_ACCESS_KEY", "camflow-secret"),
    )


@contextmanager
def kafka_minio(
    work: Path, ladder: str = "source", start_own: bool = False, metrics: bool = False
) -> Iterator[Deployment]:
    """`camflow ingest`, `transcode`, `package` and `edge` as processes on Kafka + MinIO: the shared
    ones from the environment, else (``start_own``) a Kafka and a MinIO of their own started with
    scripts/kafka.sh and scripts/minio.sh (ports 39092/39093/39000) and stopped after; with
    ``metrics``, each serves /metrics on a port of its own (``Deployment.metrics_ports``)."""
    work.mkdir(parents=True, exist_ok=True)
    backends = shared_backends(work / "backends")
    own = backends is None
    if backends is None:
        if not start_own:
            services.require("kafka")  # fails or skips with the instructions
            services.require("s3")
        backends = Backends(
            work / "backends",
            kafka_port=OWN_KAFKA_PORT,
            controller_port=OWN_CONTROLLER_PORT,
            minio_port=OWN_MINIO_PORT,
            bucket="camflow-bench",
        )
        backends.start()
    deployment = Deployment(backends, work, stream=STREAM, ladder=ladder, metrics=metrics)
    try:
        deployment.start_all()
        yield deployment
    finally:
        try:
            deployment.stop_all()
        finally:
            if own:
                backends.stop()


@contextmanager
def cdn(work: Path, edge_port: int, token_check: TokenCheck = TokenCheck.ALL) -> Iterator[int]:
    """deploy/cdn/nginx.conf in front of the edge on ``edge_port``; yields nginx's port."""
    port = free_port()
    with nginx(work / "cdn", render_conf(edge_port, port, token_check), port):
        yield port


def via(url: str, port: int) -> str:
    """``url`` with its port replaced (the same path through nginx)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.hostname}:{port}").geturl()


def mediamtx_path() -> Path | None:
    """The mediamtx binary: $CAMFLOW_PEERS/mediamtx, else ../shared/peers beside the repo (or its
    worktree's parent); None when there is none."""
    env = os.environ.get(PEERS_ENV)
    roots = [Path(env)] if env else [REPO.parent / "shared" / "peers", REPO.parents[1] / "shared" / "peers"]
    return next((root / "mediamtx" for root in roots if (root / "mediamtx").is_file()), None)


MEDIAMTX_CONF = """\
logLevel: warn
api: no
metrics: no
pprof: no
playback: no
rtmp: no
srt: no
webrtc: no
moq: no
rtsp: yes
rtspTransports: [tcp]
rtspAddress: 127.0.0.1:{rtsp}
rtpAddress: 127.0.0.1:{rtp}
rtcpAddress: 127.0.0.1:{rtcp}
hls: yes
hlsAddress: 127.0.0.1:{hls}
# its defaults, written out: LL-HLS, 1 s segments (cut on keyframes: 2 s here), 200 ms parts
hlsVariant: lowLatency
hlsSegmentDuration: 1s
hlsPartDuration: 200ms
hlsAlwaysRemux: yes
paths:
  all_others: {{}}
"""


# Its WebRTC server (WHEP at http://127.0.0.1:PORT/STREAM/whep), on loopback only: one UDP socket
# for every session (webrtcLocalUDPAddress), 127.0.0.1 as its only ICE host candidate.
MEDIAMTX_WEBRTC = """\
webrtc: yes
webrtcAddress: 127.0.0.1:{webrtc}
webrtcLocalUDPAddress: 127.0.0.1:{webrtc_udp}
webrtcLocalTCPAddress: ''
webrtcIPsFromInterfaces: no
webrtcAdditionalHosts: [127.0.0.1]
webrtcAllowOrigins: ['*']
"""


@contextmanager
def mediamtx(work: Path, exe: Path) -> Iterator[tuple[str, str]]:
    """mediamtx on free ports with its default LL-HLS; yields (RTSP publish URL, LL-HLS playlist URL)."""
    with _mediamtx(work, exe, webrtc=False) as (publish, play, _whep):
        yield publish, play


@contextmanager
def mediamtx_whep(work: Path, exe: Path) -> Iterator[tuple[str, str]]:
    """mediamtx with its WebRTC server on loopback too; yields (RTSP publish URL, WHEP URL)."""
    with _mediamtx(work, exe, webrtc=True) as (publish, _play, whep):
        yield publish, whep


@contextmanager
def _mediamtx(work: Path, exe: Path, webrtc: bool) -> Iterator[tuple[str, str, str]]:
    work.mkdir(parents=True, exist_ok=True)
    rtsp, hls, webrtc_port = free_port(), free_port(), free_port()
    conf = work / "mediamtx.yml"
    text = MEDIAMTX_CONF.format(rtsp=rtsp, rtp=free_port(), rtcp=free_port(), hls=hls)
    if webrtc:
        udp = free_port()  # a TCP port free now: its UDP twin is almost surely free too
        text = text.replace("webrtc: no\n", MEDIAMTX_WEBRTC.format(webrtc=webrtc_port, webrtc_udp=udp))
    conf.write_text(text)
    with (work / "mediamtx.log").open("wb") as log:
        proc = subprocess.Popen([str(exe), str(conf)], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{hls}/", timeout=1).close()
            except urllib.error.HTTPError:
                break  # it answers (404 at the root)
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mediamtx did not start: {(work / 'mediamtx.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
            else:
                break
        yield (
            f"rtsp://127.0.0.1:{rtsp}/{STREAM}",
            f"http://127.0.0.1:{hls}/{STREAM}/index.m3u8",
            f"http://127.0.0.1:{webrtc_port}/{STREAM}/whep",
        )
    finally:
        stop_process(proc, timeout=10)
