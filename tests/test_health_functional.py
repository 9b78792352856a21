"""The stream-health feed end to end, read the way an operator reads it: `camflow tail --json`.

A camera (ffmpeg, looping a clip over RTSP) is driven live → stalled (SIGSTOP) → offline
(SIGKILL), and the transitions come out of a `camflow tail` subprocess:

- embedded: `camflow run`, tail following the edge's /api/health (``--edge``);
- distributed: `camflow ingest`, `transcode`, `package` and `edge` as separate processes on the
  real Kafka and MinIO, tail following ``camflow.health`` on Kafka (``--kafka``); meanwhile
  every service's /metrics (``--metrics-port``, the edge's too: on its HTTP port /metrics needs an
  operator token) is scraped during
  the live push and its counters must have moved, and /healthz and /readyz answer 200.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from camflow.bus.kafka import KafkaBus
from camflow.events import TOPIC_STREAMS, StreamState, decode
from tests import services
from tests.process import CAMFLOW, camflow_run, free_port, make_clip, stop_process
from tests.process import camflow_service as service

pytestmark = pytest.mark.integration
SECRET = "0123456789abcdef" * 4
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def publisher(clip: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    """ffmpeg pushing ``clip`` in a loop, in real time, like a camera that never stops by itself."""
    with log.open("wb") as err:
        return subprocess.Popen(
            ["ffmpeg", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
             "-f", "rtsp", "-rtsp_transport", "tcp", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


@contextmanager
def tail(tmp: Path, args: Sequence[str], env: dict[str, str]) -> Iterator[Path]:
    """`camflow tail --json ARGS` writing to a file, stopped by PID after."""
    out, err = tmp / "tail.out", tmp / "tail.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([*CAMFLOW, "tail", "--json", *args], stdout=fo, stderr=fe, env=env)
    try:
        yield out
    finally:
        stop_process(proc)


def ingest_states(out: Path, stream: str) -> list[dict[str, object]]:
    samples = []
    for line in out.read_text(errors="replace").splitlines():
        sample = json.loads(line)  # every line is one JSON object
        if sample["stream"] == stream and sample["service"] == "ingest":
            samples.append(sample)
    return samples


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s\n{log()[-4000:]}")
        time.sleep(0.25)


def wait_state(out: Path, stream: str, state: str, timeout: float, log: Callable[[], str]) -> None:
    wait_for(
        f"{stream} reported {state!r} by `camflow tail`",
        lambda: any(s["state"] == state for s in ingest_states(out, stream)),
        timeout,
        lambda: out.read_text(errors="replace") + log(),
    )


def check_transitions(out: Path, stream: str) -> list[dict[str, object]]:
    """live, then stalled, then offline, in that order, each with a reason; returns the samples."""
    samples = ingest_states(out, stream)
    states = [s["state"] for s in samples]
    first = {state: states.index(state) for state in ("live", "stalled", "offline")}
    assert first["live"] < first["stalled"] < first["offline"], states
    stalled = samples[first["stalled"]]
    assert "no segment for" in str(stalled["reason"])
    live = samples[first["live"]]
    assert isinstance(live["bitrate"], float) and live["bitrate"] > 0 and live["fps"]
    assert states[-1] == "offline" and samples[-1]["reason"]
    return samples


def scrape(url: str) -> Metrics:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def first_sse_data(url: str) -> dict[str, object]:
    """The data of the first event of a Server-Sent Events response."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        for _ in range(50):
            line = resp.readline().decode()
            if line.startswith("data:"):
                return dict(json.loads(line[5:]))
    raise AssertionError(f"no event from {url}")


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_embedded_live_stalled_offline_from_tail_edge(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 6, "320x240", rate=15, gop=15)
    extra = [
        "--ladder",
        "source",
        "--processes",
        "1",
        "--health-interval",
        "1",
        "--rtsp-session-timeout",
        "60",
    ]
    with camflow_run(tmp_path, extra) as cf, ExitStack() as stack:
        admin = cf.token("admin", "*")
        refused = subprocess.run(
            [*CAMFLOW, "tail", "--edge", cf.http_url(""), "--token", cf.token("view", "cam1"), "--json"],
            capture_output=True, text=True, timeout=60, env=cf.env,
        )  # fmt: skip
        assert refused.returncode == 1 and "403" in refused.stderr and refused.stdout == ""
        out = stack.enter_context(
            tail(tmp_path, ["--edge", cf.http_url(""), "--token", admin, "--stream", "cam1"], cf.env)
        )
        camera = publisher(clip, cf.rtsp_url("cam1", cf.token("publish", "cam1")), tmp_path / "ffmpeg.err")
        stack.callback(stop_process, camera)
        wait_state(out, "cam1", "live", 60, lambda: cf.log)
        wait_for(
            "segments through the embedded pipeline",
            lambda: value(scrape(cf.metrics_url()), "camflow_packager_segments_total") >= 2,
            60,
            lambda: cf.log,
        )
        metrics = scrape(cf.metrics_url())
        assert value(metrics, "camflow_ingest_sessions", protocol="rtsp") == 1
        assert value(metrics, "camflow_ingest_frames_total", protocol="rtsp") > 0
        assert value(metrics, "camflow_ingest_media_corrections_total", kind="params_inserted") >= 1
        assert value(metrics, "camflow_stream_state", stream="cam1", state="live") == 1
        assert value(metrics, "camflow_transcode_seconds_count", rung="source") > 0
        assert status(cf.http_url("/healthz")) == 200 and status(cf.http_url("/readyz")) == 200
        table = subprocess.run(
            [*CAMFLOW, "tail", "--edge", cf.http_url(""), "--token", admin, "--table", "--duration", "4",
             "--color", "always"],
            capture_output=True, text=True, timeout=60, env=cf.env,
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        screens = table.stdout.split("\x1b[H\x1b[2J")[1:]  # one ANSI redraw per second
        assert len(screens) >= 2
        rows = [line for line in screens[-1].splitlines() if "cam1" in line]
        assert len(rows) == 1 and "live" in rows[0] and rows[0].startswith("\x1b[32m"), screens[-1]
        assert "STREAM" in screens[-1] and "TRANSCODE" in screens[-1]
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in screens[-1].splitlines()]
        end = plain[1].index("FIXES") + len("FIXES")  # right-aligned numbers end under the title
        assert int(next(ln for ln in plain if "cam1" in ln)[:end].split()[-1]) >= 1, plain
        os.kill(camera.pid, signal.SIGSTOP)  # the camera hangs: its connection stays open, nothing comes
        wait_state(out, "cam1", "stalled", 30, lambda: cf.log)
        stalled = scrape(cf.metrics_url())
        assert value(stalled, "camflow_stream_state", stream="cam1", state="stalled") == 1
        view = cf.token("view", "cam1")
        player_health = first_sse_data(cf.http_url(f"/api/streams/cam1/health?token={view}"))
        assert player_health["state"] == "stalled" and player_health["source"] == "feed"
        os.kill(camera.pid, signal.SIGKILL)  # then dies: the connection closes
        camera.wait(10)
        wait_state(out, "cam1", "offline", 30, lambda: cf.log)
    samples = check_transitions(out, "cam1")
    assert "connection" in str(samples[-1]["reason"]) or "closed" in str(samples[-1]["reason"])
    fixed = samples[-1]["corrections"]
    assert isinstance(fixed, dict) and fixed["params_inserted"] >= 1, samples[-1]  # SPS/PPS it lacked


def test_distributed_on_kafka_metrics_and_transitions_from_tail_kafka(tmp_path: Path) -> None:
    kafka, s3 = services.require("kafka"), services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    prefix, s3 = f"h{run_id}.", f"{s3.rstrip('/')}/{run_id}"
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}
    bus = ["--kafka", kafka, "--kafka-prefix", prefix]
    common = ["--host", "127.0.0.1", "--health-interval", "1"]
    rtsp_port, edge_port = free_port(), free_port()
    ports = {name: free_port() for name in ("ingest", "transcode", "package", "edge")}
    clip = make_clip(tmp_path / "clip.mp4", 6, "320x240", rate=15, gop=15)
    logs = lambda: "".join(p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*.err"))  # noqa: E731
    with ExitStack() as stack:
        stack.enter_context(
            service(tmp_path, "ingest", ["ingest", *common, *bus, "--rtsp-port", str(rtsp_port),
                    "--rtsp-udp-ports", "off", "--http-port", str(free_port()),
                    "--metrics-port", str(ports["ingest"])], env)
        )  # fmt: skip
        stack.enter_context(
            service(tmp_path, "transcode", ["transcode", *common, *bus, "--s3", s3, "--processes", "1",
                    "--ladder", "source,180p", "--metrics-port", str(ports["transcode"])], env)
        )  # fmt: skip
        stack.enter_context(
            service(tmp_path, "package", ["package", *common, *bus, "--s3", s3,
                    "--metrics-port", str(ports["package"])], env)
        )  # fmt: skip
        stack.enter_context(
            service(tmp_path, "edge", ["edge", *common, *bus, "--s3", s3, "--http-port", str(edge_port),
                    "--metrics-port", str(ports["edge"])], env)
        )  # fmt: skip
        out = stack.enter_context(tail(tmp_path, [*bus, "--stream", "cam1"], env))
        token = subprocess.run(
            [*CAMFLOW, "token", "publish", "cam1"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        camera = publisher(clip, f"rtsp://127.0.0.1:{rtsp_port}/cam1?token={token}", tmp_path / "ffmpeg.err")
        stack.callback(stop_process, camera)
        wait_state(out, "cam1", "live", 60, logs)

        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        public = f"http://127.0.0.1:{edge_port}"
        wait_for(
            "segments packaged",
            lambda: value(scrape(urls["package"] + "/metrics"), "camflow_packager_segments_total") >= 2,
            90,
            logs,
        )
        view = subprocess.run(
            [*CAMFLOW, "token", "view", "cam1"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
             f"{public}/live/cam1/master.m3u8?token={view}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "h264" in probe.stdout, probe.stderr

        ingest, transcode = scrape(urls["ingest"] + "/metrics"), scrape(urls["transcode"] + "/metrics")
        package, edge = scrape(urls["package"] + "/metrics"), scrape(urls["edge"] + "/metrics")
        assert value(ingest, "camflow_ingest_sessions", protocol="rtsp") == 1
        assert value(ingest, "camflow_ingest_bytes_total", protocol="rtsp") > 10_000
        assert value(ingest, "camflow_ingest_frames_total", protocol="rtsp") > 15
        assert value(ingest, "camflow_ingest_segments_total", result="published") >= 2
        assert value(ingest, "camflow_bus_publish_seconds_count", topic="camflow.segments.raw") >= 2
        assert value(ingest, "camflow_stream_state", stream="cam1", state="live") == 1
        # ffmpeg sends the clip's SPS/PPS in the SDP only: ingest puts them before every IDR, and
        # says so on /metrics and on the stream's health (the feed `camflow tail` reads, below).
        assert value(ingest, "camflow_ingest_media_corrections_total", kind="params_inserted") >= 2
        assert value(transcode, "camflow_transcode_segments_total", result="ok") >= 2
        assert value(transcode, "camflow_transcode_seconds_count", rung="180p") >= 2
        assert value(transcode, "camflow_transcode_seconds_sum", rung="180p") > 0
        assert value(transcode, "camflow_store_operation_seconds_count", op="put") >= 4
        assert ("camflow_consumer_lag_messages", frozenset({("group", "camflow-transcode")})) in transcode
        assert value(package, "camflow_packager_segments_total") >= 2
        # The newest media the packager listed, by the camera's clock: with low-latency parts it is
        # within a part of now, and a camera clock a little ahead of ours reads as 0 (never negative).
        assert 0 <= value(package, "camflow_packager_live_edge_age_seconds", stream="cam1") < 10
        assert ("camflow_packager_playlist_age_seconds", frozenset({("stream", "cam1")})) in package
        ok = sum(v for (name, labels), v in edge.items() if name == "camflow_edge_requests_total"
                 and dict(labels)["status"] in ("200", "206"))  # fmt: skip
        assert ok >= 2, [(k, v) for k, v in edge.items() if "edge" in k[0]]  # master and media playlists
        assert value(edge, "camflow_store_operation_seconds_count", op="get") >= 1
        for name, url in [*urls.items(), ("edge public", public)]:
            assert status(url + "/healthz") == 200, name
            assert status(url + "/readyz") == 200, name
        assert status(public + "/metrics") == 401  # the public port keeps the figures to an operator

        os.kill(camera.pid, signal.SIGSTOP)
        wait_state(out, "cam1", "stalled", 30, logs)
        os.kill(camera.pid, signal.SIGKILL)
        camera.wait(10)
        wait_state(out, "cam1", "offline", 30, logs)
    check_transitions(out, "cam1")
    services_seen = {json.loads(line)["service"] for line in out.read_text().splitlines()}
    assert {"ingest", "transcode", "package"} <= services_seen
    fixed = [json.loads(line).get("corrections") or {} for line in out.read_text().splitlines()]
    assert max(f.get("params_inserted", 0) for f in fixed) >= 2, fixed
    states = asyncio.run(stream_states(kafka, prefix, "cam1"))
    assert states[0] == "live" and "stalled" in states and states[-1] == "offline", states
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, prefix + TOPIC_STREAMS)])
    finally:
        admin.close()
    assert described["topic"][prefix + TOPIC_STREAMS]["cleanup.policy"]["value"] == "compact"


async def stream_states(kafka: str, prefix: str, stream: str) -> list[str]:
    """The states of ``stream`` on the compacted camflow.streams, oldest first."""
    reader = await KafkaBus(kafka, prefix=prefix).follow([TOPIC_STREAMS], since=600.0)
    states: list[str] = []
    try:
        for _ in range(10):
            message = await reader.get(timeout=1.0)
            if message is None and states:
                break
            if message is not None and message.key == stream:
                event = decode(message.value)
                assert isinstance(event, StreamState)
                states.append(event.state.value)
    finally:
        await reader.close()
    return states
