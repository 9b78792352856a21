"""A store outage on real MinIO and Kafka: MinIO is stopped for 20 s in the middle of a push (by its
script, by PID), then started again on the same data; the transcoder and the packager wait it out.

Every service is its own process (`camflow ingest`, `transcode`, `package`, `edge`) on the shared
test Kafka (a topic prefix of its own) and a MinIO of the test's own (scripts/minio.sh, a free port,
its run folder under the test's tmp_path); ffmpeg pushes RTSP like a camera. Checked:

- during the outage: the transcoder's /readyz says "store ... unavailable", its /metrics have
  ``camflow_store_up{service="transcode"} 0``, its health samples on camflow.health (read by
  `camflow tail --json`) carry ``store_outage`` > 0, and the edge answers a JSON 503
  ``store_unavailable`` for what its cache does not hold;
- a second transcoder, stopped (SIGTERM) in the middle of the outage, exits at once, its
  uncommitted segments going to the first;
- after it: the recording read from the edge (the live playlist, and the VOD playlist over the push's
  time range) names every segment once, seq 0, 1, 2, ... without a gap; nothing was dead-lettered
  and no transcode attempt failed; the logs say when the outage started and how long it lasted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import m3u8
import pytest

from camflow.hls.rules import check_media
from camflow.tokens import Action, TokenSigner
from tests import services
from tests.chaos.backends import Backends
from tests.process import CAMFLOW, camflow_service, ffmpeg_push, free_port, make_clip, stop_process

pytestmark = pytest.mark.integration
STREAM = "cam5"
CLIP_SECONDS = 44
OUTAGE_SECONDS = 20.0


def http(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        return 0, repr(exc), {}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name{labels}`` in a Prometheus exposition (None when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port_pair() -> int:
    """A port P with P + 1 free too (MinIO's console port), bounded tries."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


def seqs(playlist: str) -> list[int]:
    return [int(s.uri.split("?")[0].rsplit("/", 1)[1].split(".")[0]) for s in m3u8.loads(playlist).segments]


def live_edge(playlist: str) -> float:
    """The wall-clock end of the newest entry (0 when there is none)."""
    segments = [s for s in m3u8.loads(playlist).segments if s.program_date_time is not None]
    if not segments:
        return 0.0
    return float(segments[-1].program_date_time.timestamp()) + float(segments[-1].duration)


def test_minio_stopped_mid_push_the_recording_stays_contiguous(tmp_path: Path) -> None:
    kafka = services.require("kafka")
    minio = Backends(tmp_path / "run", minio_port=free_port_pair(), bucket="camflow-outage")
    run_id = uuid.uuid4().hex[:10]
    secret = secrets.token_hex(32)
    env = {**os.environ, **minio.client_env, "CAMFLOW_SECRET": secret}
    common = ["--host", "127.0.0.1", "--kafka", kafka, "--kafka-prefix", f"o{run_id}."]
    common += ["--data-dir", str(tmp_path / "d"), "--health-interval", "1"]
    store = ["--s3", minio.s3_url]
    rtsp_port, http_port, transcode_port, package_port = (free_port() for _ in range(4))
    signer = TokenSigner(secret.encode())
    view = signer.issue(STREAM, Action.VIEW, 600)
    live = f"http://127.0.0.1:{http_port}/live/{STREAM}/source.m3u8?token={view}"
    clip = make_clip(tmp_path / "clip.mp4", CLIP_SECONDS, size="640x360")

    def until(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return
            time.sleep(0.25)
        raise AssertionError(f"{what}: not within {timeout} s")

    minio.minio("start")
    with ExitStack() as stack:
        stack.callback(minio.minio, "stop")
        transcode = ["transcode", *common, *store, "--ladder", "source", "--processes", "1"]
        metrics = ["--metrics-port", str(transcode_port)]
        stack.enter_context(camflow_service(tmp_path, "transcode", [*transcode, *metrics], env))
        second = stack.enter_context(camflow_service(tmp_path, "transcode-b", transcode, env))
        package = [*common, *store, "--live-window", "600", "--offline-grace", "3", "--drain-seconds", "0"]
        metrics = ["--metrics-port", str(package_port)]
        stack.enter_context(camflow_service(tmp_path, "package", ["package", *package, *metrics], env))
        edge = ["edge", *common, *store, "--http-port", str(http_port)]
        stack.enter_context(camflow_service(tmp_path, "edge", edge, env))
        ingest = ["ingest", *common, "--rtsp-port", str(rtsp_port)]
        stack.enter_context(camflow_service(tmp_path, "ingest", ingest, env))
        tail_out = tmp_path / "tail.jsonl"
        with tail_out.open("wb") as out:
            tail = subprocess.Popen(
                [*CAMFLOW, "tail", "--kafka", kafka, "--kafka-prefix", f"o{run_id}.", "--json"],
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        stack.callback(stop_process, tail)

        publish = signer.issue(STREAM, Action.PUBLISH, 600)
        result: dict[str, subprocess.CompletedProcess[str]] = {}
        pusher = threading.Thread(
            target=lambda: result.update(
                p=ffmpeg_push(clip, f"rtsp://127.0.0.1:{rtsp_port}/{STREAM}?token={publish}")
            )
        )
        pushed_from = time.time()
        pusher.start()
        try:
            until(lambda: http(live)[1].count("#EXTINF") >= 3, 40, "first segments in the live playlist")
            minio.minio("stop")  # the outage: the server process is gone
            down_at = time.monotonic()
            ready: list[tuple[int, str]] = []
            store_up: list[float | None] = []
            edge_answers: list[tuple[int, str, dict[str, str]]] = []
            stopped_in = -1.0
            while time.monotonic() - down_at < OUTAGE_SECONDS:
                if stopped_in < 0 and time.monotonic() - down_at > OUTAGE_SECONDS / 2:
                    started = time.monotonic()  # SIGTERM to the second transcoder, mid-outage
                    assert stop_process(second) == 0
                    stopped_in = time.monotonic() - started
                status, body, _ = http(f"http://127.0.0.1:{transcode_port}/readyz")
                ready.append((status, body))
                store_up.append(
                    metric(
                        http(f"http://127.0.0.1:{transcode_port}/metrics")[1],
                        "camflow_store_up",
                        service="transcode",
                    )
                )
                edge_answers.append(
                    http(f"http://127.0.0.1:{http_port}/live/{STREAM}/master.m3u8?token={view}")
                )
                time.sleep(1.0)
            minio.minio("resume")  # the same data, as after a restart of the server
            up_at, up_wall = time.monotonic(), time.time()
            # Caught up: the live playlist reaches the segment being cut when the store came back.
            until(lambda: live_edge(http(live)[1]) >= up_wall - 2.5, 60, "the live playlist caught up")
            caught_up = time.monotonic() - up_at
        finally:
            pusher.join(CLIP_SECONDS + 60)
        assert result["p"].returncode == 0, result["p"].stderr
        until(lambda: "#EXT-X-ENDLIST" in http(live)[1], 90, "the recording ended")
        final = http(live)[1]
        status, vod, _ = http(
            f"http://127.0.0.1:{http_port}/vod/{STREAM}/source.m3u8"
            f"?start={iso(pushed_from - 5)}&end={iso(time.time() + 5)}&token={view}"
        )
        transcode_metrics = http(f"http://127.0.0.1:{transcode_port}/metrics")[1]
        package_metrics = http(f"http://127.0.0.1:{package_port}/metrics")[1]
        after_ready = http(f"http://127.0.0.1:{transcode_port}/readyz")[0]
        time.sleep(1.5)  # the last health round reaches `camflow tail`

    # The outage was seen and reported while it lasted.
    assert 0.0 in store_up, store_up
    down = [body for status, body in ready if status == 503]
    assert down and all("transcode store: unavailable for" in body for body in down), ready
    assert after_ready == 200
    refused = [(s, b, h) for s, b, h in edge_answers if s == 503]
    assert refused, [(s, b[:100]) for s, b, _ in edge_answers]
    for _, body, headers in refused:
        assert json.loads(body)["error"] == "store_unavailable" and headers["Retry-After"] == "2"
    samples = [json.loads(line) for line in tail_out.read_text().splitlines() if line.strip()]
    outages = [s["store_outage"] for s in samples if s["service"] == "transcode" and s.get("store_outage")]
    assert outages and max(outages) >= 5.0, samples[-5:]
    log = (tmp_path / "transcode.err").read_text()
    assert '"store_unavailable"' in log
    ended = [json.loads(line) for line in log.splitlines() if '"store_available"' in line]
    assert ended and OUTAGE_SECONDS - 8 <= ended[0]["outage_seconds"] <= OUTAGE_SECONDS + 15, ended

    # The transcoder stopped during the outage stopped at once and committed nothing it had not
    # written: what it held went to the other one (the recording below has it).
    assert 0 <= stopped_in < 5.0, stopped_in
    second_log = (tmp_path / "transcode-b.err").read_text()
    assert '"transcoder_stopped"' in second_log and '"dead_lettered": 0' in second_log

    # Nothing was given up on, and the store came back on the metrics.
    assert metric(transcode_metrics, "camflow_transcode_segments_total", result="dead_lettered") == 0
    assert metric(transcode_metrics, "camflow_transcode_segments_total", result="failed_attempt") == 0
    assert metric(transcode_metrics, "camflow_store_up", service="transcode") == 1
    assert (metric(transcode_metrics, "camflow_store_outages_total", service="transcode") or 0) >= 1
    assert metric(package_metrics, "camflow_store_up", service="package") == 1

    # The recording: every segment once, in order, none missing.
    assert check_media(final) == []
    live_seqs = seqs(final)
    assert live_seqs == list(range(len(live_seqs))), live_seqs
    assert len(live_seqs) >= CLIP_SECONDS // 2 - 1
    assert not any(s.gap_tag for s in m3u8.loads(final).segments)
    assert status == 200, vod
    vod_playlist = m3u8.loads(vod)
    assert seqs(vod) == live_seqs
    assert not any(s.gap_tag or s.discontinuity for s in vod_playlist.segments)
    print(
        f"store outage: {OUTAGE_SECONDS:.0f} s, {len(live_seqs)} segments recorded, 0 missing, 0 repeated; "
        f"the live playlist caught up {caught_up:.1f} s after the store was back; a transcoder stopped "
        f"mid-outage in {stopped_in:.1f} s (segment in hand left: {'segment_left_at_stop' in second_log})"
    )
