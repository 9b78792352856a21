"""An event locks footage past the retention, end to end on Kafka and MinIO: an ffmpeg push into
`camflow run`, a motion event posted with the camera's publish token (curl), a retention of 8 s;
the event's segments outlive it (tagged out of the bucket's lifecycle rule, still listed and
exported as a clip), everything else past the retention goes; once an operator deletes the event
(curl), its footage goes too."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from minio import Minio

from camflow.hls.dates import format_date_time, parse_date_time
from tests import services
from tests.process import camflow_run, ffmpeg_push, make_clip
from tests.test_pipeline_functional import fetch
from tests.test_retention_functional import drop_lifecycle_rule

pytestmark = pytest.mark.integration
STREAM = "porch"
RETAIN = 8.0


def curl(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


@pytest.mark.timeout(360)
def test_an_events_footage_outlives_the_retention_until_the_event_is_deleted(tmp_path: Path) -> None:
    kafka, s3 = services.require("kafka"), services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    parts = urlsplit(s3)
    bucket = parts.path.strip("/").split("/")[0]
    client = Minio(parts.netloc, access_key="camflow", secret_key="camflow-secret", secure=False)
    prefix = f"{run_id}/streams/{STREAM}/"
    clip = make_clip(tmp_path / "clip24.mp4", 24, size="640x360")
    extra = ["--kafka", kafka, "--kafka-prefix", f"l{run_id}.", "--s3", f"{s3.rstrip('/')}/{run_id}"]
    extra += ["--ladder", "source", "--live-window", "6", "--dvr-window", "0", "--offline-grace", "0"]
    extra += ["--retain", f"{RETAIN:g}s", "--retention-interval", "1"]

    def stored() -> set[str]:
        names = (str(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True))
        return {
            n[len(prefix) :] for n in names if n.endswith(".m4s") and n.count(".") == 1 and "/source/" in n
        }

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(drop_lifecycle_rule, client, bucket, f"{run_id}/streams/")
        cf = cleanup.enter_context(camflow_run(tmp_path, extra))
        view, publish, admin = cf.token("view", STREAM), cf.token("publish", STREAM), cf.token("admin", "*")
        result: dict[str, object] = {}
        pusher = threading.Thread(
            target=lambda: result.update(p=ffmpeg_push(clip, cf.rtsp_url(STREAM, publish)))
        )
        pusher.start()
        ranges: list[dict[str, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = fetch(cf.http_url(f"/api/streams/{STREAM}/recordings?token={view}"))
            ranges = json.loads(body)["ranges"] if status == 200 else []
            if ranges and int(ranges[0]["segments"]) >= 3:
                break
            time.sleep(0.5)
        assert ranges, "nothing recorded"
        moment = parse_date_time(ranges[0]["start"]) + 3.0
        body = {
            "type": "motion",
            "label": "porch",
            "time": format_date_time(moment),
            "pre_roll": 1,
            "post_roll": 1,
        }
        code, posted = curl(
            "-X", "POST", "-H", f"Authorization: Bearer {publish}", "-H", "Content-Type: application/json",
            "-d", json.dumps(body), cf.http_url(f"/api/streams/{STREAM}/events"),
        )  # fmt: skip
        assert code == 201, posted
        event = json.loads(posted)
        pusher.join(90)
        assert result["p"].returncode == 0  # type: ignore[attr-defined]

        # Past the retention: what the live playlist names and what the event covers stay. What is
        # neither goes at the sweep after its end passes the retention: once the push ended, the set
        # left must hold still for more than the retention and a sweep (it did go on shrinking while
        # the segments after the event's aged out).
        live = cf.http_url(f"/live/{STREAM}/source.m3u8?token={view}")
        deadline = time.monotonic() + 90
        locked: set[str] = set()
        since = time.monotonic()
        while time.monotonic() < deadline:
            status, text = fetch(live)
            named = {line.split("?")[0] for line in text.splitlines() if ".m4s" in line and line[0] != "#"}
            left = stored() - named
            if "#EXT-X-ENDLIST" not in text or left != locked:
                locked, since = left, time.monotonic()
            elif time.monotonic() - since > RETAIN + 2:
                break
            time.sleep(1)
        assert stored() - named == locked and 1 <= len(locked) <= 3, sorted(stored())
        for key in locked:
            tags = client.get_object_tags(bucket, prefix + key)
            assert tags == {"camflow-retention": "locked"}, (key, tags)
        assert "retention_kept_locked" in cf.log
        start, end = event["start"], event["end"]
        status, body = fetch(
            cf.http_url(f"/api/streams/{STREAM}/recordings?start={start}&end={end}&token={view}")
        )
        assert status == 200 and json.loads(body)["ranges"], body
        out = tmp_path / "event.mp4"
        code, _ = curl(
            "-o", str(out), cf.http_url(f"/clip/{STREAM}.mp4?start={start}&end={end}&token={view}")
        )
        assert code == 200
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(out)],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert float(probe.stdout) >= 1.5

        # The operator deletes the event: its footage goes at the next sweeps.
        code, _ = curl(
            "-X", "DELETE", cf.http_url(f"/api/streams/{STREAM}/events/{event['id']}?token={admin}")
        )
        assert code == 204
        deadline = time.monotonic() + 20
        while stored() & locked and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not stored() & locked, sorted(stored())
        assert stored() == named
