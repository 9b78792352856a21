"""Two regions on real Kafka and MinIO (tests/regions.py: each region its own Kafka and MinIO, the
MinIOs linked by site replication), each with a `camflow run --region`; a camera pushes to region
a, region a goes away, the camera reconnects to region b, region a comes back.

Printed: the replication lag each region measures, the RPO (footage of region a not in region b's
replica: the moment a was lost minus the end of a's recording there) and the RTO (from the camera's
reconnect to b until b's edge serves the stream's new session live; the camera's own time to notice
the loss comes on top, and is the camera's setting).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from camflow.keys import directory_key, media_playlist_key
from camflow.regions import DirectoryEntry
from camflow.signing import KeySet, SigningKey, create_file, new_kid
from tests.process import Camflow, camflow_run, make_clip, stop_process
from tests.regions import Ports, Regions, regions_running
from tests.test_pipeline_functional import ffprobe

STREAM = "cam1"
RENDITION = "source"
# Ports of this test's own (tests/regions.py's TEST_PORTS are its replication test's)
PORTS = {"A": Ports(33092, 33093, 33100), "B": Ports(33192, 33193, 33200)}
T = TypeVar("T")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects: (status, headers, body)."""
    try:
        with OPENER.open(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
    except OSError:
        return 0, {}, b""


def until(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` every 0.1 s until it gives something (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def redirect(url: str) -> str | None:
    """Where a GET of ``url`` is sent by a 307, or None."""
    status, headers, _ = fetch(url)
    return headers.get("Location") if status == 307 else None


def store_object(url: str, key: str, *, replica: bool = False) -> bytes | None:
    """An object of a region's bucket (its S3 URL), read with the minio client, or None; ``replica``:
    only a copy that replication brought (``x-amz-replication-status: REPLICA``). A site-replicated
    MinIO answers a read of an object it lacks from its peer, so a plain read proves nothing about
    what this region's store holds, or wrote itself."""
    from minio import Minio
    from minio.error import S3Error

    endpoint, bucket = url.removeprefix("http://").split("/", 1)
    client = Minio(endpoint, access_key="camflow", secret_key="camflow-secret", secure=False)
    try:
        resp = client.get_object(bucket, key)
    except S3Error:
        return None
    try:
        if replica and resp.headers.get("x-amz-replication-status") != "REPLICA":
            return None
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


@contextmanager
def region_run(tmp: Path, regions: Regions, name: str, env: dict[str, str]) -> Iterator[Camflow]:
    region = regions.region(name.upper())
    tmp.mkdir(parents=True, exist_ok=True)
    extra = ["--kafka", region.kafka, "--s3", region.s3, "--region", name, "--ladder", "source"]
    with camflow_run(tmp, extra, {**regions.client_env, **env}) as cf:
        yield cf


def push(clip: Path, url: str) -> subprocess.Popen[bytes]:
    args = ["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy"]
    return subprocess.Popen(
        [*args, "-f", "rtsp", "-rtsp_transport", "tcp", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def recordings(cf: Camflow, token: str) -> dict[str, Any]:
    status, _, body = fetch(cf.http_url(f"/api/streams/{STREAM}/recordings?token={token}"))
    return json.loads(body) if status == 200 else {}


def epochs_in(playlist: str) -> list[str]:
    return sorted(set(re.findall(r"(\d{8}T\d{9}Z)/", playlist)))


def metric(cf: Camflow, name: str) -> list[tuple[str, float]]:
    _, _, body = fetch(cf.metrics_url())
    pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
    return [(m.group(1) or "", float(m.group(2))) for m in pattern.finditer(body.decode())]


def test_a_region_lost_and_back(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 10, size="640x360", rate=25, gop=25)
    create_file(tmp_path / "keys", KeySet((SigningKey(new_kid(), secrets.token_urlsafe(32).encode()),)))
    keys = {"CAMFLOW_SECRET_FILE": str(tmp_path / "keys")}  # every region: the same token keys
    with (
        regions_running(tmp_path / "backends", PORTS) as regions,
        region_run(tmp_path / "a", regions, "a", keys) as a,
        region_run(tmp_path / "b", regions, "b", keys) as b,
    ):
        view = a.token("view", STREAM)
        camera = push(clip, a.rtsp_url(STREAM, a.token("publish", STREAM)))
        try:
            run_failover(Drill(regions, a, b, view, tmp_path), camera)
        finally:
            stop_process(camera, timeout=10)


@dataclass(frozen=True)
class Drill:
    regions: Regions
    a: Camflow
    b: Camflow
    view: str
    tmp: Path


def run_failover(drill: Drill, camera: subprocess.Popen[bytes]) -> None:
    regions, a, b, view = drill.regions, drill.a, drill.b, drill.view
    live = f"/live/{STREAM}/master.m3u8?token={view}"
    until("region a records 6 s", lambda: recordings(a, view).get("recorded", 0) >= 6.0 or None, 60)
    # Region b: the directory (replicated) sends live viewers to a's edge; recordings from b's replica.
    assert until("b redirects live to a", lambda: redirect(b.http_url(live)), 20) == a.http_url(live)
    # A real client given region b's URL plays the stream from region a's edge.
    through_b = ffprobe(b.http_url(live))["streams"]
    assert isinstance(through_b, list) and through_b[0]["codec_name"] == "h264", through_b
    assert recordings(b, view).get("recorded", 0) >= 4.0
    lags = until(
        "b measures the replication lag", lambda: metric(b, "camflow_region_replication_lag_seconds"), 20
    )
    print(f"\nreplication lag a -> b (b's metric): {lags}")
    assert lags[0][0] == '{peer="a"}' and lags[0][1] < 2.0, lags

    # Region a goes away: its store and its Kafka, then its camflow; the camera's connection drops.
    lost = time.time()
    regions.stop_minio("A")
    regions.stop_kafka("A")
    stop_process(a.proc, timeout=30)
    stop_process(camera, timeout=10)
    # The camera's second ingest URL: region b.
    reconnect = time.monotonic()
    camera_b = push(drill.tmp / "clip.mp4", b.rtsp_url(STREAM, b.token("publish", STREAM)))
    try:
        finish(drill, lost, reconnect, camera_b)
    finally:
        stop_process(camera_b, timeout=10)


def finish(drill: Drill, lost: float, reconnect: float, camera_b: subprocess.Popen[bytes]) -> None:
    regions, a, b, view, tmp = drill.regions, drill.a, drill.b, drill.view, drill.tmp
    media = f"/live/{STREAM}/{RENDITION}.m3u8?token={view}"

    def b_serves_its_session() -> str | None:
        status, _, body = fetch(b.http_url(media))
        text = body.decode(errors="replace")
        return text if status == 200 and len(epochs_in(text)) == 2 else None

    text = until("b serves the stream's new session live", b_serves_its_session, 60)
    rto = time.monotonic() - reconnect
    old, new = epochs_in(text)
    assert "#EXT-X-DISCONTINUITY" in text.split(new, 1)[0], text  # a's session, then b's
    # A real client plays it from b's edge.
    streams = ffprobe(b.http_url(media))["streams"]
    assert isinstance(streams, list) and streams[0]["codec_name"] == "h264", streams
    # RPO: what of a's recording b's replica has, against the moment a was lost.
    ranges = [r for r in recordings(b, view)["ranges"] if r["epoch"] == old]
    assert ranges, "a's recording is not in b's replica"
    from camflow.hls.dates import parse_date_time

    rpo = lost - max(parse_date_time(r["end"]) for r in ranges)
    print(
        f"RPO {rpo:.2f} s (footage of region a lost with it), RTO {rto:.2f} s (camera reconnect -> live at b)"
    )
    assert 0 <= rpo < 10, rpo
    window = f"start={ranges[0]['start']}&end={ranges[-1]['end']}&token={view}"
    vod = ffprobe(b.http_url(f"/vod/{STREAM}.m3u8?{window}"))["format"]
    assert isinstance(vod, dict) and float(vod["duration"]) >= 4.0, vod

    # Region a comes back, as it was: its store catches up with b's writes (site replication), its
    # packager finds b owning the stream and leaves it alone; its edge sends live viewers to b.
    regions.start_minio("A")
    regions.start_kafka("A")
    region = regions.region("A")
    extra = ["--kafka", region.kafka, "--s3", region.s3, "--region", "a", "--ladder", "source"]
    (tmp / "a-again").mkdir()
    with camflow_run(tmp / "a-again", extra, {**regions.client_env, **a.env}) as again:
        live = f"/live/{STREAM}/master.m3u8?token={view}"
        assert until(
            "a, back, redirects live to b", lambda: redirect(again.http_url(live)), 60
        ) == b.http_url(live)
        # The camera stops; b ends the playlist; both stores then hold the same, b's.
        stop_process(camera_b, timeout=10)
        key = media_playlist_key(STREAM, RENDITION)
        ended = until(
            "b ends the playlist",
            lambda: (p := store_object(regions.b.s3, key)) is not None and b"#EXT-X-ENDLIST" in p and p,
            60,
        )
        # a's copy is b's, replicated: a wrote no playlist of its own.
        a_s3 = regions.a.s3
        until("a's store has b's playlist", lambda: store_object(a_s3, key, replica=True) == ended, 30)
        for raw in (
            store_object(a_s3, directory_key(STREAM), replica=True),
            store_object(regions.b.s3, directory_key(STREAM)),
        ):
            assert raw is not None and DirectoryEntry.parse(raw).region == "b", raw
        assert metric(again, "camflow_region_claims_total") in ([], [("", 0.0)])
        both = until(
            "a's edge lists both sessions",
            lambda: len(recordings(again, view).get("ranges", [])) >= 2 or None,
            30,
        )
        assert both
