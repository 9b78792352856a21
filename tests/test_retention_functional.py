"""Retention on MinIO: `camflow run --retain 8s` deletes old segments and their index entries
while a push goes on; no playlist ever names a deleted object (ffprobe plays what is left);
the bucket gets an equivalent lifecycle rule."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import m3u8
import pytest
from minio import Minio
from minio.error import S3Error

from camflow.recordings import IndexChunk
from tests import services
from tests.process import camflow_run, ffmpeg_push, make_clip
from tests.test_pipeline_functional import ffprobe

pytestmark = pytest.mark.integration
STREAM = "cam1"
RETAIN = 8.0
PART_NAME = re.compile(r"/[0-9]{8}\.[0-9]{3}\.m4s$")


def status(url: str) -> int:
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError:
        return None


def test_retention_deletes_old_segments_never_named_ones(tmp_path: Path) -> None:
    s3 = services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    parts = urlsplit(s3)
    bucket = parts.path.strip("/").split("/")[0]
    client = Minio(
        parts.netloc,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        secure=parts.scheme == "https",
    )
    prefix = f"{run_id}/streams/{STREAM}/"
    clip = make_clip(tmp_path / "clip30.mp4", 30, size="640x360")
    extra = ["--s3", f"{s3.rstrip('/')}/{run_id}", "--ladder", "source", "--live-window", "6"]
    extra += [
        "--retain",
        f"{RETAIN:g}s",
        "--retention-interval",
        "1",
        "--offline-grace",
        "0",
        "--dvr-window",
        "0",
    ]
    try:
        with camflow_run(tmp_path, extra) as cf:
            view = cf.token("view", STREAM)
            publish = cf.token("publish", STREAM)
            result: dict[str, object] = {}
            pusher = threading.Thread(
                target=lambda: result.update(p=ffmpeg_push(clip, cf.rtsp_url(STREAM, publish)))
            )
            pusher.start()
            live_url = cf.http_url(f"/live/{STREAM}/source.m3u8?token={view}")
            seen: set[str] = set()
            checked = 0
            deadline = time.monotonic() + 120
            text = None
            while time.monotonic() < deadline:
                text = fetch(live_url)
                if text is not None:
                    for seg in m3u8.loads(text).segments:
                        if seg.uri is None:  # the parts of the segment in progress (low latency)
                            continue
                        seen.add(seg.uri.split("?")[0])
                        # Every object the playlist names is there, however old.
                        assert status(cf.http_url(f"/live/{STREAM}/{seg.uri}")) == 200, seg.uri
                        assert status(cf.http_url(f"/live/{STREAM}/{seg.init_section.uri}")) == 200
                        checked += 1
                    if "#EXT-X-ENDLIST" in text and not pusher.is_alive():
                        break
                time.sleep(0.5)
            pusher.join(90)
            assert text is not None and "#EXT-X-ENDLIST" in text
            time.sleep(RETAIN + 3)  # one more sweep after everything but the window expired
            named = {seg.uri.split("?")[0] for seg in m3u8.loads(text).segments}
            stored = {
                str(o.object_name)[len(prefix) :]
                for o in client.list_objects(bucket, prefix=prefix, recursive=True)
            }
            # Low-latency parts are not recordings: they go 30 s after leaving the live playlist
            # (docs/low-latency.md), whatever the retention.
            segments = {k for k in stored if k.endswith(".m4s") and not PART_NAME.search(k)}
            assert named <= segments, "a segment the live playlist names was deleted"
            assert len(seen) >= 13 and segments == named, (sorted(seen), sorted(segments))
            # The index lost the deleted segments too.
            index_keys = [k for k in stored if k.startswith("recordings/")]
            indexed = set()
            for key in index_keys:
                chunk = IndexChunk.parse(client.get_object(bucket, prefix + key).read())
                indexed |= {f"{chunk.epoch}/source/{s.seq:08d}.m4s" for s in chunk.segments.values()}
            assert indexed == named
            # What is left still plays in a real player.
            probe = ffprobe(cf.http_url(f"/live/{STREAM}/master.m3u8?token={view}"))
            assert float(probe["format"]["duration"]) >= 4.0  # type: ignore[index]
            assert checked > len(seen)
        lifecycle = client.get_bucket_lifecycle(bucket)
        assert lifecycle is not None
        [rule] = [r for r in lifecycle.rules if rule_prefix(r) == f"{run_id}/streams/"]
        assert rule.expiration is not None and rule.expiration.days == 2  # 8 s -> 1 day + 1 day margin
        assert rule.status == "Enabled"
        # Only what carries the expire tag: a recording's media, as written, never an event's lock.
        assert rule.rule_filter.and_operator.tags == {"camflow-retention": "expire"}
    finally:
        drop_lifecycle_rule(client, bucket, f"{run_id}/streams/")


def drop_lifecycle_rule(client: Minio, bucket: str, prefix: str) -> None:
    """Remove the lifecycle rule a test's run installed on the shared bucket (for ``prefix``)."""
    current = None
    with contextlib.suppress(S3Error):
        current = client.get_bucket_lifecycle(bucket)
    if current is not None:
        keep = [r for r in current.rules if rule_prefix(r) != prefix]
        if keep:
            from minio.lifecycleconfig import LifecycleConfig

            client.set_bucket_lifecycle(bucket, LifecycleConfig(keep))
        else:
            client.delete_bucket_lifecycle(bucket)


def rule_prefix(rule: Any) -> str | None:
    """The prefix a lifecycle rule's filter selects (alone, or with tags)."""
    found = rule.rule_filter
    if found is None:
        return None
    return found.prefix if found.and_operator is None else found.and_operator.prefix
